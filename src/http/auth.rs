//! Login, logout, and the signed-in user's own account.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{ClientAddr, Json};
use crate::area;
use crate::auth::{self};
use crate::error::{AppResult, ErrorEnvelope};
use crate::flows;
use crate::http::guard::Auth;
use crate::state::AppState;
use crate::users::{self, UserView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Exchange a username and password for a bearer token.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, description = "wrong username or password", body = ErrorEnvelope),
        (status = 429, description = "too many failed attempts; see Retry-After", body = ErrorEnvelope),
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(request): Json<LoginRequest>,
) -> AppResult<Json<LoginResponse>> {
    let issued = auth::login(
        &state.db,
        &state.settings.auth,
        &state.throttle,
        &request.username,
        &request.password,
        client,
    )
    .await?;
    Ok(Json(LoginResponse {
        token: issued.token,
        expires_at: issued.expires_at,
    }))
}

/// Revoke the token this request is made with.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorEnvelope))
)]
async fn logout(State(state): State<AppState>, actor: Auth) -> AppResult<StatusCode> {
    auth::logout(&state.db, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    #[serde(flatten)]
    pub user: UserView,
    /// Name of the scope area; absent for the whole tree.
    pub area_name: Option<String>,
}

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/me",
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorEnvelope))
)]
async fn me(State(state): State<AppState>, actor: Auth) -> AppResult<Json<Me>> {
    let user_id = actor.user_id.unwrap_or_default();
    let user = users::get(&state.db, &auth::Scope::All, user_id).await?;
    let area_name = match actor.scope.area() {
        Some(code) => Some(area::get(&state.db, &actor.scope, code).await?.name),
        None => None,
    };
    Ok(Json(Me {
        user: user.into(),
        area_name,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// Change one's own password; signs out every session of the user.
#[utoipa::path(
    put,
    path = "/me/password",
    tag = "auth",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 204), (status = 422, body = ErrorEnvelope))
)]
async fn change_password(
    State(state): State<AppState>,
    actor: Auth,
    Json(change): Json<PasswordChange>,
) -> AppResult<StatusCode> {
    flows::accounts::change_own_password(
        &state.db,
        &actor,
        change.current_password,
        change.new_password,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
