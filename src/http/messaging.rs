//! Messaging over HTTP: messages of a resident, an appointment or a wave; waves (create,
//! list, cancel); the outbox's health; re-sending a failed message by hand; the cadre's
//! tasks and the residents' replies.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use crate::auth::Scope;
use crate::error::{AppResult, ErrorEnvelope};
use crate::flows;
use crate::http::guard::FieldWork;
use crate::http::guard::{AnyRole, Auth, FieldAndAudit, OfficeOnly, ReadAudit};
use crate::outreach::outbox::{self, Health, MessageView};
use crate::outreach::tasks::{self, ReplyFilter, ReplyPage, TaskFilter, TaskPage};
use crate::outreach::waves::{self, MessageFilter, MessagePage, MessagesOf, NewWave, WaveView};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resident_messages))
        .routes(routes!(appointment_messages))
        .routes(routes!(list_waves, create_wave))
        .routes(routes!(get_wave))
        .routes(routes!(wave_messages))
        .routes(routes!(cancel_wave))
        .routes(routes!(outbox_health))
        .routes(routes!(resend_message))
        .routes(routes!(list_tasks))
        .routes(routes!(finish_task))
        .routes(routes!(list_replies))
}

/// The messages to one resident, oldest first, with their states.
#[utoipa::path(
    get,
    path = "/residents/{id}/messages",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path), MessageFilter),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorEnvelope))
)]
async fn resident_messages(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Path(id): Path<i32>,
    Query(filter): Query<MessageFilter>,
) -> AppResult<Json<MessagePage>> {
    crate::registry::find_visible(&state.db, &actor, id).await?;
    Ok(Json(
        waves::messages(&state.db, &actor.scope, MessagesOf::Resident(id), &filter).await?,
    ))
}

/// The notices and reminders of one appointment.
#[utoipa::path(
    get,
    path = "/appointments/{id}/messages",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path), MessageFilter),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorEnvelope))
)]
async fn appointment_messages(
    State(state): State<AppState>,
    actor: Auth<AnyRole>,
    Path(id): Path<i32>,
    Query(filter): Query<MessageFilter>,
) -> AppResult<Json<MessagePage>> {
    // Whoever may see the appointment (its institution's staff too) sees its messages.
    crate::appointment::get(&state.db, &actor, id).await?;
    Ok(Json(
        waves::messages(&state.db, &Scope::All, MessagesOf::Appointment(id), &filter).await?,
    ))
}

/// A campaign's waves, newest first.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/waves",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = Vec<WaveView>), (status = 404, body = ErrorEnvelope))
)]
async fn list_waves(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
) -> AppResult<Json<Vec<WaveView>>> {
    Ok(Json(waves::list(&state.db, &actor, id).await?))
}

/// Create a wave (county office): an audience, a holiday window and when to send. Its
/// messages are planned at once, one per resident of the audience.
#[utoipa::path(
    post,
    path = "/campaigns/{id}/waves",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = NewWave,
    responses(
        (status = 201, body = WaveView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn create_wave(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
    Json(new): Json<NewWave>,
) -> AppResult<(StatusCode, Json<WaveView>)> {
    Ok((
        StatusCode::CREATED,
        Json(flows::messaging::waves::create(&state.db, &actor, id, new).await?),
    ))
}

/// One wave, with its messages counted by state (residents in the caller's scope).
#[utoipa::path(
    get,
    path = "/waves/{id}",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = WaveView), (status = 404, body = ErrorEnvelope))
)]
async fn get_wave(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
) -> AppResult<Json<WaveView>> {
    Ok(Json(waves::get(&state.db, &actor, id).await?))
}

/// The messages of a wave to residents in the caller's scope.
#[utoipa::path(
    get,
    path = "/waves/{id}/messages",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path), MessageFilter),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorEnvelope))
)]
async fn wave_messages(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
    Query(filter): Query<MessageFilter>,
) -> AppResult<Json<MessagePage>> {
    waves::get(&state.db, &actor, id).await?;
    Ok(Json(
        waves::messages(&state.db, &actor.scope, MessagesOf::Wave(id), &filter).await?,
    ))
}

/// Cancel a wave (county office): its messages not yet sent are cancelled.
#[utoipa::path(
    post,
    path = "/waves/{id}/cancel",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses(
        (status = 200, body = WaveView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
    )
)]
async fn cancel_wave(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
) -> AppResult<Json<WaveView>> {
    Ok(Json(
        flows::messaging::waves::cancel(&state.db, &actor, id).await?,
    ))
}

/// The outbox at a glance: messages per state, how long the oldest due one waits, leases
/// that ran out, and each provider's last hour (failing providers named).
#[utoipa::path(
    get,
    path = "/outbox/health",
    tag = "messaging",
    security(("bearer" = [])),
    responses((status = 200, body = Health), (status = 403, body = ErrorEnvelope))
)]
async fn outbox_health(
    State(state): State<AppState>,
    _actor: Auth<ReadAudit>,
) -> AppResult<Json<Health>> {
    Ok(Json(outbox::health(&state.db, Utc::now()).await?))
}

/// Send a failed or expired message again (audited). Answers the new message.
#[utoipa::path(
    post,
    path = "/messages/{id}/resend",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses(
        (status = 201, body = MessageView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
    )
)]
async fn resend_message(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
) -> AppResult<(StatusCode, Json<MessageView>)> {
    Ok((
        StatusCode::CREATED,
        Json(crate::flows::messaging::outbox::resend(&state.db, &actor, id).await?),
    ))
}

/// The cadre's tasks from messaging: residents no channel reaches, reschedule requests,
/// replies to read. Open ones by default, newest first.
#[utoipa::path(
    get,
    path = "/tasks",
    tag = "messaging",
    security(("bearer" = [])),
    params(TaskFilter),
    responses((status = 200, body = TaskPage), (status = 403, body = ErrorEnvelope))
)]
async fn list_tasks(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Query(filter): Query<TaskFilter>,
) -> AppResult<Json<TaskPage>> {
    Ok(Json(tasks::list(&state.db, &actor, &filter).await?))
}

/// Mark a task done (audited).
#[utoipa::path(
    post,
    path = "/tasks/{id}/done",
    tag = "messaging",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses(
        (status = 204),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
    )
)]
async fn finish_task(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path(id): Path<i32>,
) -> AppResult<StatusCode> {
    flows::messaging::tasks::done(&state.db, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Residents' SMS replies, newest first, with what each did.
#[utoipa::path(
    get,
    path = "/replies",
    tag = "messaging",
    security(("bearer" = [])),
    params(ReplyFilter),
    responses((status = 200, body = ReplyPage), (status = 403, body = ErrorEnvelope))
)]
async fn list_replies(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Query(filter): Query<ReplyFilter>,
) -> AppResult<Json<ReplyPage>> {
    Ok(Json(tasks::replies(&state.db, &actor, &filter).await?))
}
