//! Institutions over HTTP: register them and the areas they serve (office), read and change
//! their capacity calendar (office and the institution's own staff), upload a calendar CSV.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use crate::error::{AppError, AppResult, ErrorEnvelope};
use crate::flows;
use crate::http::guard::{AnyRole, Auth, ManageInstitution, OfficeOnly};
use crate::institution::{
    self, CalendarImport, DayChange, DayView, InstitutionChanges, InstitutionView, NewInstitution,
};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_institutions, create_institution))
        .routes(routes!(get_institution, update_institution))
        .routes(routes!(get_calendar))
        .routes(routes!(set_day))
        .routes(routes!(import_calendar))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InstitutionList {
    pub institutions: Vec<InstitutionView>,
}

#[utoipa::path(
    get,
    path = "/institutions",
    tag = "institutions",
    security(("bearer" = [])),
    responses((status = 200, body = InstitutionList), (status = 401, body = ErrorEnvelope))
)]
async fn list_institutions(
    State(state): State<AppState>,
    _actor: Auth<AnyRole>,
) -> AppResult<Json<InstitutionList>> {
    Ok(Json(InstitutionList {
        institutions: institution::list(&state.db).await?,
    }))
}

/// Register an institution and the areas it serves (office).
#[utoipa::path(
    post,
    path = "/institutions",
    tag = "institutions",
    security(("bearer" = [])),
    request_body = NewInstitution,
    responses(
        (status = 201, body = InstitutionView),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn create_institution(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Json(new): Json<NewInstitution>,
) -> AppResult<(StatusCode, Json<InstitutionView>)> {
    let created = flows::institutions::create(&state.db, &actor, new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/institutions/{id}",
    tag = "institutions",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = InstitutionView), (status = 404, body = ErrorEnvelope))
)]
async fn get_institution(
    State(state): State<AppState>,
    _actor: Auth<AnyRole>,
    Path(id): Path<i32>,
) -> AppResult<Json<InstitutionView>> {
    Ok(Json(institution::get(&state.db, id).await?))
}

/// Change an institution: its staff may change the name, daily capacity and closed
/// weekdays; the areas served and `active` are the office's.
#[utoipa::path(
    patch,
    path = "/institutions/{id}",
    tag = "institutions",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = InstitutionChanges,
    responses(
        (status = 200, body = InstitutionView),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn update_institution(
    State(state): State<AppState>,
    actor: Auth<ManageInstitution>,
    Path(id): Path<i32>,
    Json(changes): Json<InstitutionChanges>,
) -> AppResult<Json<InstitutionView>> {
    Ok(Json(
        flows::institutions::update(&state.db, &actor, id, changes).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CalendarParams {
    /// First day (default today).
    pub from: Option<NaiveDate>,
    /// Last day (default 30 days after `from`; at most 366 days in all).
    pub to: Option<NaiveDate>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Calendar {
    pub institution_id: i32,
    pub days: Vec<DayView>,
}

/// The capacity calendar: capacity, booked and remaining places per day.
#[utoipa::path(
    get,
    path = "/institutions/{id}/calendar",
    tag = "institutions",
    security(("bearer" = [])),
    params(("id" = i32, Path), CalendarParams),
    responses(
        (status = 200, body = Calendar),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn get_calendar(
    State(state): State<AppState>,
    _actor: Auth<AnyRole>,
    Path(id): Path<i32>,
    Query(params): Query<CalendarParams>,
) -> AppResult<Json<Calendar>> {
    let institution = institution::find(&state.db, id).await?;
    let from = params.from.unwrap_or_else(crate::time::today);
    let to = match params.to {
        Some(to) => to,
        None => from
            .checked_add_days(chrono::Days::new(30))
            .ok_or_else(|| AppError::validation("invalid_range", "日期超出范围"))?,
    };
    Ok(Json(Calendar {
        institution_id: id,
        days: institution::calendar(&state.db, &institution, from, to).await?,
    }))
}

/// Change one day: capacity (not below what is booked), closed, note.
#[utoipa::path(
    put,
    path = "/institutions/{id}/calendar/{day}",
    tag = "institutions",
    security(("bearer" = [])),
    params(("id" = i32, Path), ("day" = String, Path, description = "YYYY-MM-DD")),
    request_body = DayChange,
    responses(
        (status = 200, body = DayView),
        (status = 403, body = ErrorEnvelope),
        (status = 409, description = "capacity below the bookings", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn set_day(
    State(state): State<AppState>,
    actor: Auth<ManageInstitution>,
    Path((id, day)): Path<(i32, NaiveDate)>,
    Json(change): Json<DayChange>,
) -> AppResult<Json<DayView>> {
    Ok(Json(
        flows::institutions::set_day(&state.db, &actor, id, day, change).await?,
    ))
}

/// Upload a calendar CSV (机构代码/institution_code, 日期/date, 容量/capacity, 休息/closed,
/// 备注/note). Good rows are applied, the others returned with their reasons.
#[utoipa::path(
    post,
    path = "/institutions/calendar/import",
    tag = "institutions",
    security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, body = CalendarImport),
        (status = 403, body = ErrorEnvelope),
        (status = 422, description = "the file itself is unusable; nothing was written", body = ErrorEnvelope),
    )
)]
async fn import_calendar(
    State(state): State<AppState>,
    actor: Auth<ManageInstitution>,
    body: Bytes,
) -> AppResult<Json<CalendarImport>> {
    Ok(Json(
        flows::institutions::import_calendar(&state.db, &actor, &body).await?,
    ))
}
