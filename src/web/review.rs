//! The office's refusal review queue: pending registrations with the contact history they
//! rest on, the signature, confirm or return; the register by village; the chain check.

use axum::Router;

use super::render::templates;
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates![];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
