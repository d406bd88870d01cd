//! User accounts for the office: add, deactivate, reset a password, change role or area.

use axum::Router;

use super::render::templates;
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates![];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
