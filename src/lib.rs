//! `outreach`: the service behind a county's yearly population health-checkup campaign
//! (全民健康体检). This crate holds everything; `main.rs` only parses the command line.

pub mod appointment;
pub mod area;
pub mod audit;
pub mod auth;
pub mod campaign;
pub mod cli;
pub mod client_key;
pub mod config;
pub mod contact;
pub mod db;
pub mod demo;
pub mod error;
pub mod exam;
pub mod export;
pub mod flows;
pub mod http;
pub mod import;
pub mod institution;
pub mod outreach;
pub mod paging;
pub mod privacy;
pub mod refusal;
pub mod registry;
pub mod report;
pub mod scheduler;
pub mod signature;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod users;
pub mod validate;
pub mod vocabulary;
pub mod web;
pub mod workers;

/// mimalloc for every allocation of the process — Rust's and, through the `override`
/// feature, SQLite's own (each bound value is copied by SQLite with `malloc`). A
/// 1,000,000-row registry import spent about a fifth of its CPU in glibc's `malloc` and
/// `free` and the copies around them, much of it freeing on one thread what another had
/// allocated: 61,230 → 87,793–93,637 rows/s with mimalloc (see BENCHMARKS.md, `import`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
