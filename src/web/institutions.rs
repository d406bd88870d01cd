//! Institutions for the office: the villages each serves and its day calendar with capacity.

use axum::Router;

use super::render::templates;
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates![];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
