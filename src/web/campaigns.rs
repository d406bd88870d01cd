//! Campaign set-up for the office: create and edit a campaign with its phases, cohorts,
//! targets, refusal rule and quiet hours; open and close it.

use axum::Router;

use super::render::templates;
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates![];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
