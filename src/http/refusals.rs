//! Refusal registration over HTTP: a cadre registers a refusal with the resident's
//! signature; the office confirms or returns it; the register per village or township as
//! JSON, CSV or XLSX; signature images for those allowed (audited); chain verification.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use crate::error::{AppError, AppResult, ErrorEnvelope};
use crate::http::guard::FieldAndAudit;
use crate::http::guard::FieldWork;
use crate::http::guard::{AnyRole, Auth, OfficeOnly, ReadAudit};
use crate::refusal::{self, ChainReport, NewRegistration, Register, Registration, Review, Status};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_refusal, resident_refusals))
        .routes(routes!(refusal_register))
        .routes(routes!(verify_chains))
        .routes(routes!(get_refusal))
        .routes(routes!(confirm_refusal))
        .routes(routes!(return_refusal))
        .routes(routes!(refusal_signature))
}

/// Register a refusal (audited): reason, signer, the signature (PNG base64, SVG or pad
/// strokes), witness, the contact attempts it rests on, optional location. Needs the
/// campaign's documented contact (default 3 attempts on 2 days, one reaching the person);
/// otherwise 422 says how many more.
#[utoipa::path(
    post,
    path = "/campaigns/{id}/residents/{resident_id}/refusals",
    tag = "refusals",
    security(("bearer" = [])),
    params(("id" = i32, Path), ("resident_id" = i32, Path)),
    request_body = NewRegistration,
    responses(
        (status = 201, body = Registration),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "examined, exempt, or an open registration"),
        (status = 413, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn register_refusal(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path((id, resident_id)): Path<(i32, i32)>,
    Json(new): Json<NewRegistration>,
) -> AppResult<(StatusCode, Json<Registration>)> {
    let registration = crate::flows::refusals::register(
        &state.db,
        &state.settings.signatures,
        &actor,
        id,
        resident_id,
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(registration)))
}

/// A resident's refusal registrations in a campaign, newest first, each with its history.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/residents/{resident_id}/refusals",
    tag = "refusals",
    security(("bearer" = [])),
    params(("id" = i32, Path), ("resident_id" = i32, Path)),
    responses((status = 200, body = Vec<Registration>), (status = 404, body = ErrorEnvelope))
)]
async fn resident_refusals(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path((id, resident_id)): Path<(i32, i32)>,
) -> AppResult<Json<Vec<Registration>>> {
    Ok(Json(
        refusal::of_resident(&state.db, &actor, id, resident_id).await?,
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegisterParams {
    /// Village or township code; default the caller's whole scope.
    pub area: Option<String>,
    /// `pending`, `confirmed`, `returned`, `superseded` or `revoked`.
    pub status: Option<String>,
    /// `json` (default), `csv` or `xlsx`.
    pub format: Option<String>,
    /// Full ID numbers (office, township and cadre roles; audited).
    #[serde(default)]
    pub reveal: bool,
}

/// The refusal register (登记备案) of a campaign, by village, with status filter; as JSON or a
/// CSV / XLSX download. ID numbers are masked unless `reveal` is asked by a role that may.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/refusals",
    tag = "refusals",
    security(("bearer" = [])),
    params(("id" = i32, Path), RegisterParams),
    responses(
        (status = 200, body = Register, description = "JSON, or a CSV / XLSX download"),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn refusal_register(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
    Query(params): Query<RegisterParams>,
) -> AppResult<Response> {
    let format = super::download_format(params.format.as_deref())?;
    let status = params
        .status
        .as_deref()
        .map(|raw| {
            Status::parse(raw).ok_or_else(|| {
                AppError::validation(
                    "invalid_status",
                    "status 可选 pending、confirmed、returned、superseded、revoked",
                )
            })
        })
        .transpose()?;
    let area = params
        .area
        .as_deref()
        .map(crate::validate::parse_area)
        .transpose()?;
    let register = refusal::register_of(
        &state.db,
        &state.privacy,
        &actor,
        id,
        area,
        status,
        params.reveal,
    )
    .await?;
    // Times in the campaign's zone, as in every other export.
    let zone = match format {
        "csv" | "xlsx" => crate::campaign::get(&state.db, id).await?.timezone,
        _ => crate::time::DEFAULT_ZONE,
    };
    Ok(match format {
        "csv" => super::download(
            refusal::register_csv(&register, zone)?,
            super::CSV,
            "refusal-register.csv",
        ),
        "xlsx" => super::download(
            refusal::register_xlsx(&register, zone)?,
            super::XLSX,
            "refusal-register.xlsx",
        ),
        _ => Json(register).into_response(),
    })
}

/// One refusal registration with its history (confirmed, returned, superseded, revoked).
#[utoipa::path(
    get,
    path = "/refusals/{id}",
    tag = "refusals",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = Registration), (status = 404, body = ErrorEnvelope))
)]
async fn get_refusal(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
) -> AppResult<Json<Registration>> {
    Ok(Json(refusal::get(&state.db, &actor, id).await?))
}

/// Confirm a pending registration (county office, audited): the resident counts as refused.
#[utoipa::path(
    post,
    path = "/refusals/{id}/confirm",
    tag = "refusals",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = Review,
    responses(
        (status = 200, body = Registration),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "not pending"),
    )
)]
async fn confirm_refusal(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
    Json(review): Json<Review>,
) -> AppResult<Json<Registration>> {
    Ok(Json(
        crate::flows::refusals::confirm(&state.db, &actor, id, review).await?,
    ))
}

/// Return a pending registration for correction, with the reason (county office, audited);
/// the cadre's next registration of the resident supersedes it.
#[utoipa::path(
    post,
    path = "/refusals/{id}/return",
    tag = "refusals",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = Review,
    responses(
        (status = 200, body = Registration),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "not pending"),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn return_refusal(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
    Json(review): Json<Review>,
) -> AppResult<Json<Registration>> {
    Ok(Json(
        crate::flows::refusals::return_for_correction(&state.db, &actor, id, review).await?,
    ))
}

/// The signature image (PNG) of a registration: office, township and auditor roles in scope,
/// and the cadre who registered it. Every view is audited.
#[utoipa::path(
    get,
    path = "/refusals/{id}/signature",
    tag = "refusals",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses(
        (status = 200, description = "the signature", content_type = "image/png"),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
async fn refusal_signature(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Path(id): Path<i32>,
) -> AppResult<Response> {
    let store = refusal::signature_store(&state.settings.signatures, &state.db);
    let png = refusal::signature_image(&state.db, store.as_ref(), &actor, id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        png,
    )
        .into_response())
}

/// Check the hash chains of the refusal records in the caller's scope: any record altered,
/// removed or added behind the service's back is reported (office and auditors). Each check
/// is recorded in the audit log (`refusal.verify`) with its outcome, as the review page shows.
#[utoipa::path(
    get,
    path = "/refusals/verify",
    tag = "refusals",
    security(("bearer" = [])),
    responses((status = 200, body = ChainReport), (status = 403, body = ErrorEnvelope))
)]
async fn verify_chains(
    State(state): State<AppState>,
    actor: Auth<ReadAudit>,
) -> AppResult<Json<ChainReport>> {
    Ok(Json(
        crate::flows::refusals::verify_and_record(&state.db, &actor).await?,
    ))
}
