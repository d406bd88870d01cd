//! Appointments and exams over HTTP: group bookings, reschedule, cancel, attendance, exam
//! records (at an institution, elsewhere with evidence, imported) and evidence downloads.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use crate::appointment::{
    self, AppointmentFilter, AppointmentPage, AppointmentView, Attendance, Booking, BookingRequest,
    Cancellation, Reschedule,
};
use crate::error::{AppResult, ErrorEnvelope};
use crate::exam::{self, ElsewhereExam, ExamImport, ExamView, InstitutionExam};
use crate::http::guard::FieldWork;
use crate::http::guard::ManageInstitution;
use crate::http::guard::{AnyRole, Auth};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(book_group))
        .routes(routes!(list_appointments))
        .routes(routes!(get_appointment))
        .routes(routes!(reschedule_appointment))
        .routes(routes!(cancel_appointment))
        .routes(routes!(mark_attendance))
        .routes(routes!(record_exam))
        .routes(routes!(record_elsewhere))
        .routes(routes!(import_exams))
        .routes(routes!(exam_evidence))
}

/// Book a group of residents into an institution's day — all of them or none. A full or
/// closed day is refused with the next days that have room (`details.proposals`); residents
/// who cannot be booked are listed with the reason (`details.residents`).
#[utoipa::path(
    post,
    path = "/campaigns/{id}/bookings",
    tag = "appointments",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = BookingRequest,
    responses(
        (status = 201, body = Booking),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "day full or closed, or residents not bookable", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn book_group(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
    Json(request): Json<BookingRequest>,
) -> AppResult<(StatusCode, Json<Booking>)> {
    let booking = crate::flows::booking::book(
        &state.db,
        &actor,
        id,
        request,
        &state.settings.messaging.outbox.reminders,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(booking)))
}

/// A campaign's appointments: institution staff see their institution's, everyone else those
/// of residents in their scope.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/appointments",
    tag = "appointments",
    security(("bearer" = [])),
    params(("id" = i32, Path), AppointmentFilter),
    responses(
        (status = 200, body = AppointmentPage),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
async fn list_appointments(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Path(id): Path<i32>,
    Query(filter): Query<AppointmentFilter>,
) -> AppResult<Json<AppointmentPage>> {
    Ok(Json(
        appointment::list(&state.db, &actor, id, filter).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/appointments/{id}",
    tag = "appointments",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = AppointmentView), (status = 404, body = ErrorEnvelope))
)]
async fn get_appointment(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Path(id): Path<i32>,
) -> AppResult<Json<AppointmentView>> {
    Ok(Json(appointment::get(&state.db, &actor, id).await?))
}

/// Move an active appointment to another day (or institution); the old place is freed.
#[utoipa::path(
    post,
    path = "/appointments/{id}/reschedule",
    tag = "appointments",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = Reschedule,
    responses(
        (status = 200, body = AppointmentView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn reschedule_appointment(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
    Json(request): Json<Reschedule>,
) -> AppResult<Json<AppointmentView>> {
    Ok(Json(
        crate::flows::booking::reschedule(
            &state.db,
            &actor,
            id,
            request,
            &state.settings.messaging.outbox.reminders,
        )
        .await?,
    ))
}

/// Cancel an active appointment (reason required); its place is freed.
#[utoipa::path(
    post,
    path = "/appointments/{id}/cancel",
    tag = "appointments",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = Cancellation,
    responses(
        (status = 200, body = AppointmentView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
    )
)]
async fn cancel_appointment(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
    Json(request): Json<Cancellation>,
) -> AppResult<Json<AppointmentView>> {
    Ok(Json(
        crate::flows::booking::cancel(&state.db, &actor, id, request).await?,
    ))
}

/// Institution staff mark whether the resident came: `attended: true` writes the exam
/// record, `false` makes it a no-show.
#[utoipa::path(
    post,
    path = "/appointments/{id}/attendance",
    tag = "appointments",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = Attendance,
    responses(
        (status = 200, body = AppointmentView),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "not active, or a duplicate exam", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn mark_attendance(
    State(state): State<AppState>,
    actor: Auth<ManageInstitution>,
    Path(id): Path<i32>,
    Json(request): Json<Attendance>,
) -> AppResult<Json<AppointmentView>> {
    Ok(Json(
        crate::flows::booking::mark_attendance(
            &state.db,
            &actor,
            id,
            request,
            &state.settings.messaging.outbox.reminders,
        )
        .await?,
    ))
}

/// An institution records an exam it did (walk-ins included).
#[utoipa::path(
    post,
    path = "/campaigns/{id}/exams",
    tag = "exams",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = InstitutionExam,
    responses(
        (status = 201, body = ExamView),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "already examined this campaign (duplicate)", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn record_exam(
    State(state): State<AppState>,
    actor: Auth<ManageInstitution>,
    Path(id): Path<i32>,
    Json(request): Json<InstitutionExam>,
) -> AppResult<(StatusCode, Json<ExamView>)> {
    let saved = crate::flows::exams::record_at_institution(&state.db, &actor, id, request).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// Record that a resident was examined elsewhere (migrants), with evidence.
#[utoipa::path(
    post,
    path = "/campaigns/{id}/residents/{resident_id}/examined-elsewhere",
    tag = "exams",
    security(("bearer" = [])),
    params(("id" = i32, Path), ("resident_id" = i32, Path)),
    request_body = ElsewhereExam,
    responses(
        (status = 201, body = ExamView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "already examined this campaign (duplicate)", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn record_elsewhere(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path((id, resident_id)): Path<(i32, i32)>,
    Json(request): Json<ElsewhereExam>,
) -> AppResult<(StatusCode, Json<ExamView>)> {
    let saved =
        crate::flows::exams::record_elsewhere(&state.db, &actor, id, resident_id, request).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// Import the checkup system's exam list (CSV: 身份证号/id_number, 体检日期/exam_date,
/// 体检机构/institution code). Duplicates and bad rows are returned with their reasons.
#[utoipa::path(
    post,
    path = "/campaigns/{id}/exams/import",
    tag = "exams",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, body = ExamImport),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "the campaign is not open", body = ErrorEnvelope),
        (status = 422, description = "the file itself is unusable; nothing was written", body = ErrorEnvelope),
    )
)]
async fn import_exams(
    State(state): State<AppState>,
    actor: Auth<ManageInstitution>,
    Path(id): Path<i32>,
    body: Bytes,
) -> AppResult<Json<ExamImport>> {
    let mut result =
        crate::flows::exams::import(&state.db, &state.privacy, &actor, id, &body).await?;
    if !crate::registry::may_reveal(actor.role) {
        result.mask_ids();
    }
    Ok(Json(result))
}

/// Download the evidence file of an exam record: office, township and cadre users who may
/// see the resident. Every download is audited (`exam.evidence_download`).
#[utoipa::path(
    get,
    path = "/exams/{id}/evidence",
    tag = "exams",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses(
        (status = 200, description = "the file", content_type = "application/octet-stream"),
        (status = 403, description = "institution staff and auditors may not download evidence", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
async fn exam_evidence(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
) -> AppResult<Response> {
    let (name, kind, bytes) = exam::evidence(&state.db, &actor, id).await?;
    // The stored name is the uploader's; keep only characters safe in a header.
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    let safe = if safe.is_empty() {
        "evidence".to_owned()
    } else {
        safe
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        bytes,
    )
        .into_response())
}
