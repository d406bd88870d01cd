//! Campaigns over HTTP: set up the year's campaign (office), open it (enrolment), read a
//! resident's progress, the cadres' worklists, and residents' key-group tags.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use crate::campaign::tags::{self, ResidentTags, TagSet};
use crate::campaign::worklist::{self, Worklist, WorklistPage, WorklistParams};
use crate::campaign::{self, CampaignChanges, CampaignView, NewCampaign, Opened};
use crate::error::{AppResult, ErrorEnvelope};
use crate::flows;
use crate::http::guard::FieldWork;
use crate::http::guard::{AnyRole, Auth, OfficeOnly};
use crate::report::progress::Progress;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(get_campaign, update_campaign))
        .routes(routes!(open_campaign))
        .routes(routes!(close_campaign))
        .routes(routes!(resident_progress))
        .routes(routes!(get_worklist))
        .routes(routes!(get_tags, set_tags))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignView>,
}

/// Every campaign, newest year first.
#[utoipa::path(
    get,
    path = "/campaigns",
    tag = "campaigns",
    security(("bearer" = [])),
    responses((status = 200, body = CampaignList), (status = 401, body = ErrorEnvelope))
)]
async fn list_campaigns(
    State(state): State<AppState>,
    _actor: Auth<AnyRole>,
) -> AppResult<Json<CampaignList>> {
    let campaigns = campaign::list(&state.db).await?;
    Ok(Json(CampaignList {
        campaigns: campaigns.iter().map(|c| c.view()).collect(),
    }))
}

/// Set up a year's campaign (office). It starts as a draft and enrols nobody until opened.
#[utoipa::path(
    post,
    path = "/campaigns",
    tag = "campaigns",
    security(("bearer" = [])),
    request_body = NewCampaign,
    responses(
        (status = 201, body = CampaignView),
        (status = 403, body = ErrorEnvelope),
        (status = 409, description = "that year already has a campaign", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn create_campaign(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Json(new): Json<NewCampaign>,
) -> AppResult<(StatusCode, Json<CampaignView>)> {
    let created = flows::campaigns::create(&state.db, &actor, new).await?;
    Ok((StatusCode::CREATED, Json(created.view())))
}

#[utoipa::path(
    get,
    path = "/campaigns/{id}",
    tag = "campaigns",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorEnvelope))
)]
async fn get_campaign(
    State(state): State<AppState>,
    _actor: Auth<AnyRole>,
    Path(id): Path<i32>,
) -> AppResult<Json<CampaignView>> {
    Ok(Json(campaign::get(&state.db, id).await?.view()))
}

/// Change a campaign (office): name, phases, targets, time zone, quiet hours; reference date
/// and cohorts only while it is a draft.
#[utoipa::path(
    patch,
    path = "/campaigns/{id}",
    tag = "campaigns",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = CampaignChanges,
    responses(
        (status = 200, body = CampaignView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn update_campaign(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
    Json(changes): Json<CampaignChanges>,
) -> AppResult<Json<CampaignView>> {
    Ok(Json(
        flows::campaigns::update(&state.db, &actor, id, changes)
            .await?
            .view(),
    ))
}

/// Open a draft campaign (office): every resident of its cohorts is enrolled.
#[utoipa::path(
    post,
    path = "/campaigns/{id}/open",
    tag = "campaigns",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses(
        (status = 200, body = Opened),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
    )
)]
async fn open_campaign(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
) -> AppResult<Json<Opened>> {
    Ok(Json(flows::campaigns::open(&state.db, &actor, id).await?))
}

/// Close an open campaign (office): no more bookings or exam records.
#[utoipa::path(
    post,
    path = "/campaigns/{id}/close",
    tag = "campaigns",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses(
        (status = 200, body = CampaignView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
    )
)]
async fn close_campaign(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
) -> AppResult<Json<CampaignView>> {
    Ok(Json(
        flows::campaigns::close(&state.db, &actor, id).await?.view(),
    ))
}

/// One resident's progress in a campaign: stage and its times, appointments, exam.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/residents/{resident_id}",
    tag = "campaigns",
    security(("bearer" = [])),
    params(("id" = i32, Path), ("resident_id" = i32, Path)),
    responses((status = 200, body = Progress), (status = 404, body = ErrorEnvelope))
)]
async fn resident_progress(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Path((id, resident_id)): Path<(i32, i32)>,
) -> AppResult<Json<Progress>> {
    Ok(Json(
        crate::report::progress::progress(&state.db, &actor, id, resident_id).await?,
    ))
}

/// A cadre's worklist: `not_appointed`, `no_shows`, `migrants`, `home_visits`,
/// `hospital_records` or `seasonal`.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/worklists/{kind}",
    tag = "campaigns",
    security(("bearer" = [])),
    params(("id" = i32, Path), ("kind" = String, Path), WorklistParams),
    responses(
        (status = 200, body = WorklistPage),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn get_worklist(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path((id, kind)): Path<(i32, String)>,
    Query(params): Query<WorklistParams>,
) -> AppResult<Json<WorklistPage>> {
    let kind = Worklist::parse(&kind)?;
    Ok(Json(
        worklist::list(&state.db, &actor, id, kind, params).await?,
    ))
}

/// A resident's key groups (重点人群).
#[utoipa::path(
    get,
    path = "/residents/{id}/tags",
    tag = "residents",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = ResidentTags), (status = 404, body = ErrorEnvelope))
)]
async fn get_tags(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Path(id): Path<i32>,
) -> AppResult<Json<ResidentTags>> {
    Ok(Json(tags::get(&state.db, &actor, id).await?))
}

/// Replace a resident's key groups (audited).
#[utoipa::path(
    put,
    path = "/residents/{id}/tags",
    tag = "residents",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = TagSet,
    responses(
        (status = 200, body = ResidentTags),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn set_tags(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
    Json(request): Json<TagSet>,
) -> AppResult<Json<ResidentTags>> {
    Ok(Json(
        flows::registry::set_tags(&state.db, &actor, id, request).await?,
    ))
}
