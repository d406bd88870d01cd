//! `GET /healthz`: 200 when the database answers, 503 otherwise.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::Json;
use crate::db::backend_name;
use crate::error::{ErrorEnvelope, envelope};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` on a 200.
    pub status: &'static str,
    /// `sqlite` or `postgresql`.
    pub database: &'static str,
}

/// Liveness and database check.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "the database does not answer", body = ErrorEnvelope),
    )
)]
async fn healthz(State(state): State<AppState>) -> Response {
    let backend = state.db.get_database_backend();
    match crate::db::ping(&state.db).await {
        Ok(_) => Json(Health {
            status: "ok",
            database: backend_name(backend),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            envelope(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "数据库无法连接",
            )
        }
    }
}
