//! The clinic's pages (institution role): today's and tomorrow's appointments by village
//! group, attendance, exams for walk-ins, an exam CSV upload.

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;

use super::Session;
use super::render::{page, templates};
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates!["app/clinic.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}

/// `/app/` for clinic staff: the institution's appointments.
pub(super) async fn home(_state: AppState, session: Session) -> Response {
    page(
        StatusCode::OK,
        "app/clinic.html",
        context! { section => "clinic", ..session.frame() },
    )
}
