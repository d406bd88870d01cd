//! The audit log for the office and auditors, with filters.

use axum::Router;

use super::render::templates;
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates![];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
