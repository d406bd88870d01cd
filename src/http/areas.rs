//! The area tree, as far as the caller may see it, and its import by upload.

use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path};
use crate::area::{self, AreaCode, AreaNode};
use crate::auth::Scope;
use crate::error::{AppError, AppResult, ErrorEnvelope};
use crate::flows;
use crate::http::guard::{Auth, OfficeOnly};
use crate::import::{ImportSummary, RejectedRow};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_areas))
        .routes(routes!(get_area))
        .routes(routes!(import_areas))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AreaTree {
    /// The topmost areas the caller may see, each with everything under it.
    pub areas: Vec<AreaNode>,
}

/// The caller's part of the area tree.
#[utoipa::path(
    get,
    path = "/areas",
    tag = "areas",
    security(("bearer" = [])),
    responses((status = 200, body = AreaTree), (status = 401, body = ErrorEnvelope))
)]
async fn list_areas(State(state): State<AppState>, actor: Auth) -> AppResult<Json<AreaTree>> {
    let areas = area::tree(&state.db, &actor.scope).await?;
    Ok(Json(AreaTree { areas }))
}

/// One area with everything under it.
#[utoipa::path(
    get,
    path = "/areas/{code}",
    tag = "areas",
    security(("bearer" = [])),
    params(("code" = String, Path, description = "12-digit area code")),
    responses(
        (status = 200, body = AreaNode),
        (status = 403, description = "outside the caller's scope", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, description = "not a valid area code", body = ErrorEnvelope),
    )
)]
async fn get_area(
    State(state): State<AppState>,
    actor: Auth,
    Path(code): Path<String>,
) -> AppResult<Json<AreaNode>> {
    let code = AreaCode::parse(&code)
        .map_err(|e| AppError::validation("invalid_area_code", e.to_string()))?;
    area::get(&state.db, &actor.scope, &code).await?;
    let node = area::tree(&state.db, &Scope::Within(code))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| AppError::NotFound("区划不存在".to_owned()))?;
    Ok(Json(node))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AreaImportReport {
    #[serde(flatten)]
    pub summary: ImportSummary,
    pub rejected_rows: Vec<RejectedRow>,
    /// Header names that were not recognised and were ignored.
    pub unknown_columns: Vec<String>,
}

/// Import or update areas from a CSV file (body: the file, UTF-8 or GB18030) — the same
/// rules as `outreach import areas`. Rows outside the caller's scope are rejected.
#[utoipa::path(
    post,
    path = "/areas/import",
    tag = "areas",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, body = AreaImportReport),
        (status = 403, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, description = "the file itself is unusable", body = ErrorEnvelope),
    )
)]
async fn import_areas(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    body: Bytes,
) -> AppResult<Json<AreaImportReport>> {
    let result = flows::areas::import_areas(&state.db, &actor, &body).await?;
    Ok(Json(AreaImportReport {
        summary: result.summary,
        rejected_rows: result.rejected,
        unknown_columns: result.unknown_columns,
    }))
}
