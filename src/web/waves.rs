//! Message waves for the office: audience and template, a preview with its SMS segments,
//! schedule, progress, cancel.

use axum::Router;

use super::render::templates;
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates![];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
