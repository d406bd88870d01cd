//! The resident registry over HTTP: list and look up residents in scope, register and update
//! them, record deaths, moves out and household moves, upload the population file, and
//! download the migrant book.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use crate::error::{AppResult, ErrorEnvelope};
use crate::flows;
use crate::http::guard::{AnyRole, Auth, FieldAndAudit, FieldWork};
use crate::import::{ImportSummary, RejectedRow};
use crate::registry::{
    self, HouseholdMove, MigrantBook, NewResident, Progress, ResidentChanges, ResidentDetail,
    ResidentFilter, ResidentPage, Special, StatusChange,
};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_residents, create_resident))
        .routes(routes!(get_resident, update_resident))
        .routes(routes!(mark_deceased))
        .routes(routes!(mark_moved_out))
        .routes(routes!(move_household))
        .routes(routes!(import_residents))
        .routes(routes!(import_tags))
        .routes(routes!(migrant_book))
}

/// Residents in the caller's scope, filtered; numbers masked. Institution staff see only the
/// residents booked with their institution or living in the areas it serves, and only what a
/// clinic needs (no migrant type, special situation, address, relative or WeChat/e-mail).
#[utoipa::path(
    get,
    path = "/residents",
    tag = "residents",
    security(("bearer" = [])),
    params(ResidentFilter),
    responses(
        (status = 200, body = ResidentPage),
        (status = 403, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn list_residents(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Query(filter): Query<ResidentFilter>,
) -> AppResult<Json<ResidentPage>> {
    Ok(Json(
        registry::list(&state.db, &state.privacy, &actor, filter).await?,
    ))
}

/// Register one resident.
#[utoipa::path(
    post,
    path = "/residents",
    tag = "residents",
    security(("bearer" = [])),
    request_body = NewResident,
    responses(
        (status = 201, body = ResidentDetail),
        (status = 403, body = ErrorEnvelope),
        (status = 409, description = "the ID number is already registered (the village is named)", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn create_resident(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Json(new): Json<NewResident>,
) -> AppResult<(StatusCode, Json<ResidentDetail>)> {
    let created = flows::registry::create(&state.db, &state.privacy, &actor, new).await?;
    let detail =
        flows::registry::detail(&state.db, &state.privacy, &actor, created.id, false).await?;
    Ok((StatusCode::CREATED, Json(detail)))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevealParams {
    /// Show the full ID and phone numbers (office, township and cadre roles; audited).
    #[serde(default)]
    pub reveal: bool,
}

/// One resident. Numbers are masked unless `reveal=true`.
#[utoipa::path(
    get,
    path = "/residents/{id}",
    tag = "residents",
    security(("bearer" = [])),
    params(("id" = i32, Path), RevealParams),
    responses(
        (status = 200, body = ResidentDetail),
        (status = 403, description = "reveal asked by a role that may not", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
async fn get_resident(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Path(id): Path<i32>,
    Query(params): Query<RevealParams>,
) -> AppResult<Json<ResidentDetail>> {
    Ok(Json(
        flows::registry::detail(&state.db, &state.privacy, &actor, id, params.reveal).await?,
    ))
}

/// Change a resident's record (contacts, opt-outs, migrant type, special situation…).
#[utoipa::path(
    patch,
    path = "/residents/{id}",
    tag = "residents",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = ResidentChanges,
    responses(
        (status = 200, body = ResidentDetail),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn update_resident(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
    Json(changes): Json<ResidentChanges>,
) -> AppResult<Json<ResidentDetail>> {
    flows::registry::update(&state.db, &state.privacy, &actor, id, changes).await?;
    Ok(Json(
        flows::registry::detail(&state.db, &state.privacy, &actor, id, false).await?,
    ))
}

/// Record that a resident has died (they leave every denominator).
#[utoipa::path(
    post,
    path = "/residents/{id}/deceased",
    tag = "residents",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = StatusChange,
    responses((status = 200, body = ResidentDetail), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope))
)]
async fn mark_deceased(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
    Json(change): Json<StatusChange>,
) -> AppResult<Json<ResidentDetail>> {
    flows::registry::mark(&state.db, &actor, id, Special::Deceased, change).await?;
    Ok(Json(
        flows::registry::detail(&state.db, &state.privacy, &actor, id, false).await?,
    ))
}

/// Record that a resident has moved out of the county (they leave every denominator).
#[utoipa::path(
    post,
    path = "/residents/{id}/moved-out",
    tag = "residents",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = StatusChange,
    responses((status = 200, body = ResidentDetail), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope))
)]
async fn mark_moved_out(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
    Json(change): Json<StatusChange>,
) -> AppResult<Json<ResidentDetail>> {
    flows::registry::mark(&state.db, &actor, id, Special::MovedOut, change).await?;
    Ok(Json(
        flows::registry::detail(&state.db, &state.privacy, &actor, id, false).await?,
    ))
}

/// Move a resident's household registration to another village in the caller's scope.
#[utoipa::path(
    post,
    path = "/residents/{id}/move",
    tag = "residents",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = HouseholdMove,
    responses(
        (status = 200, body = ResidentDetail),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn move_household(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
    Json(request): Json<HouseholdMove>,
) -> AppResult<Json<ResidentDetail>> {
    flows::registry::move_household(&state.db, &actor, id, request).await?;
    Ok(Json(
        flows::registry::detail(&state.db, &state.privacy, &actor, id, false).await?,
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ResidentImportReport {
    #[serde(flatten)]
    pub summary: ImportSummary,
    /// The first rejected rows with their reasons (at most 1000), ID and phone numbers
    /// masked, each value cut at 200 characters and a row's values at 2,000.
    pub rejected_rows: Vec<RejectedRow>,
    pub unknown_columns: Vec<String>,
}

/// Upload the population file (body: CSV in UTF-8 or GB18030, or XLSX) — the same import as
/// `outreach import residents`. Only villages in the caller's scope are taken.
#[utoipa::path(
    post,
    path = "/residents/import",
    tag = "residents",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, body = ResidentImportReport),
        (status = 403, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, description = "the file itself is unusable; nothing was written", body = ErrorEnvelope),
    )
)]
async fn import_residents(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    body: Body,
) -> AppResult<Json<ResidentImportReport>> {
    let file = super::extract::receive_file(&state, body).await?;
    let result = flows::registry::import_residents(
        &state.db,
        state.privacy.clone(),
        &actor,
        file.path(),
        None,
        Progress::Silent,
    )
    .await?;
    let rejected_rows = result.rejected_rows_for_response();
    Ok(Json(ResidentImportReport {
        summary: result.summary,
        rejected_rows,
        unknown_columns: result.unknown_columns,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TagImportReport {
    #[serde(flatten)]
    pub summary: crate::campaign::tags::TagImportSummary,
    /// The first rejected rows with their reasons (at most 1000), ID numbers masked, each
    /// value cut at 200 characters.
    pub rejected_rows: Vec<RejectedRow>,
    pub unknown_columns: Vec<String>,
}

/// Upload key-group tags (body: CSV or XLSX with 身份证号/id_number, 标签/tag and optionally
/// 操作/action `add` or `remove`) — the same as `outreach import tags`. A resident outside the
/// caller's scope is a rejected row like one not registered.
#[utoipa::path(
    post,
    path = "/residents/tags/import",
    tag = "residents",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, body = TagImportReport),
        (status = 403, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 422, description = "the file itself is unusable; nothing was written", body = ErrorEnvelope),
    )
)]
async fn import_tags(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    body: Body,
) -> AppResult<Json<TagImportReport>> {
    let file = super::extract::receive_file(&state, body).await?;
    let result =
        flows::registry::import_tags(&state.db, state.privacy.clone(), &actor, file.path()).await?;
    let rejected_rows = result.rejected_rows_for_response();
    Ok(Json(TagImportReport {
        summary: result.summary,
        rejected_rows,
        unknown_columns: result.unknown_columns,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookParams {
    /// Area code (village, township or county); default the caller's whole scope.
    pub area: Option<String>,
    /// `json` (default), `csv` or `xlsx`.
    pub format: Option<String>,
    /// Full ID and phone numbers (office, township and cadre roles; audited).
    #[serde(default)]
    pub reveal: bool,
}

/// The migrant book: residents living away, grouped by migrant type, with their contacts
/// (office, township, cadre and auditors; not institution staff).
#[utoipa::path(
    get,
    path = "/migrant-book",
    tag = "residents",
    security(("bearer" = [])),
    params(BookParams),
    responses(
        (status = 200, body = MigrantBook, description = "JSON, or a CSV / XLSX download"),
        (status = 403, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn migrant_book(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Query(params): Query<BookParams>,
) -> AppResult<Response> {
    let format = super::download_format(params.format.as_deref())?;
    let area = params
        .area
        .as_deref()
        .map(crate::validate::parse_area)
        .transpose()?;
    let book =
        flows::registry::migrant_book(&state.db, &state.privacy, &actor, area, params.reveal)
            .await?;
    Ok(match format {
        "csv" => super::download(
            registry::migrant_book_csv(&book)?,
            super::CSV,
            "migrant-book.csv",
        ),
        "xlsx" => super::download(
            registry::migrant_book_xlsx(&book)?,
            super::XLSX,
            "migrant-book.xlsx",
        ),
        _ => Json(book).into_response(),
    })
}
