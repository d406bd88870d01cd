//! The API browser at `/api/docs` for office users: Swagger UI over the service's own OpenAPI
//! document, its files embedded like every other asset. Requests tried from it go out with
//! the office user's page session, so they are the user's own, scoped and audited alike.
//! `http.api_docs = false` turns it off.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use minijinja::context;

use super::Session;
use super::pages::PageError;
use super::render::{page, templates};
use crate::error::AppError;
use crate::http::guard::OfficeOnly;
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates!["app/apidocs.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/docs", get(docs))
}

/// `GET /api/docs`: Swagger UI reading `/api/openapi.json`.
async fn docs(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
) -> Result<Response, PageError> {
    if !state.settings.http.api_docs {
        return Err(AppError::NotFound("接口文档未开放".to_owned()).into());
    }
    Ok(page(
        StatusCode::OK,
        "app/apidocs.html",
        context! { section => "apidocs", ..session.frame() },
    ))
}
