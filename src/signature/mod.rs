//! Residents' signatures on refusal registrations: checking what a phone uploads (a PNG, or
//! signature-pad strokes or SVG rendered here) and keeping the images content-addressed by
//! SHA-256, in the database or in a directory, verified on every read.

pub mod image;
pub mod store;

pub use image::{Limits, SignatureError, SignatureImage, from_png, from_strokes, from_svg};
pub use store::{DbStore, DirStore, SignatureStore, is_sha256_hex};
