//! Contact attempts over HTTP: a cadre logs a call or visit; everyone who works with the
//! resident reads the record (with the counts a refusal registration needs).

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path};
use crate::contact::{self, AttemptView, Attempts, NewAttempt};
use crate::error::{AppResult, ErrorEnvelope};
use crate::http::guard::Auth;
use crate::http::guard::FieldAndAudit;
use crate::http::guard::FieldWork;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_attempts, record_attempt))
}

/// Log a contact attempt on a resident in scope (audited): when, how, which contact, what
/// came of it. The progress row moves to notified, or reached when someone was spoken to.
#[utoipa::path(
    post,
    path = "/campaigns/{id}/residents/{resident_id}/attempts",
    tag = "contact",
    security(("bearer" = [])),
    params(("id" = i32, Path), ("resident_id" = i32, Path)),
    request_body = NewAttempt,
    responses(
        (status = 201, body = AttemptView),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "the campaign is not open", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn record_attempt(
    State(state): State<AppState>,
    actor: Auth<FieldWork>,
    Path((id, resident_id)): Path<(i32, i32)>,
    Json(new): Json<NewAttempt>,
) -> AppResult<(StatusCode, Json<AttemptView>)> {
    Ok((
        StatusCode::CREATED,
        Json(crate::flows::attempts::record(&state.db, &actor, id, resident_id, new).await?),
    ))
}

/// A resident's contact attempts in a campaign (logged by cadres, and the messages the
/// service delivered), with how many, on how many days, and whether anyone was reached.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/residents/{resident_id}/attempts",
    tag = "contact",
    security(("bearer" = [])),
    params(("id" = i32, Path), ("resident_id" = i32, Path)),
    responses((status = 200, body = Attempts), (status = 404, body = ErrorEnvelope))
)]
async fn list_attempts(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path((id, resident_id)): Path<(i32, i32)>,
) -> AppResult<Json<Attempts>> {
    Ok(Json(
        contact::list(&state.db, &actor, id, resident_id).await?,
    ))
}
