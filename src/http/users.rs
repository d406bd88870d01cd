//! User management for the county office, limited to the office user's scope.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use crate::error::{AppResult, ErrorEnvelope};
use crate::flows;
use crate::http::guard::{Auth, OfficeOnly};
use crate::state::AppState;
use crate::users::{self, NewUser, UserChanges, UserFilter, UserPage, UserView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(reset_password))
}

/// Users whose scope lies in the caller's scope.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    security(("bearer" = [])),
    params(UserFilter),
    responses((status = 200, body = UserPage), (status = 403, body = ErrorEnvelope))
)]
async fn list_users(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Query(filter): Query<UserFilter>,
) -> AppResult<Json<UserPage>> {
    Ok(Json(users::list(&state.db, &actor.scope, filter).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    /// The generated password, shown this once; absent when the request set one.
    pub password: Option<String>,
}

/// Create a user (scope must lie in the caller's scope and fit the role).
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    security(("bearer" = [])),
    request_body = NewUser,
    responses(
        (status = 201, body = CreatedUser),
        (status = 403, body = ErrorEnvelope),
        (status = 409, description = "username taken", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Json(new): Json<NewUser>,
) -> AppResult<(StatusCode, Json<CreatedUser>)> {
    let created = flows::accounts::create(&state.db, &actor, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user: created.user.into(),
            password: created.generated_password,
        }),
    ))
}

/// One user in the caller's scope.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = UserView), (status = 404, body = ErrorEnvelope))
)]
async fn get_user(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
) -> AppResult<Json<UserView>> {
    Ok(Json(users::get(&state.db, &actor.scope, id).await?.into()))
}

/// Change a user's name, role, scope or active flag.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = UserChanges,
    responses(
        (status = 200, body = UserView),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn update_user(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
    Json(changes): Json<UserChanges>,
) -> AppResult<Json<UserView>> {
    Ok(Json(
        flows::accounts::update(&state.db, &actor, id, changes)
            .await?
            .into(),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NewPassword {
    /// Shown this once.
    pub password: String,
}

/// Generate a new password for a user and sign them out everywhere.
#[utoipa::path(
    post,
    path = "/users/{id}/reset-password",
    tag = "users",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = NewPassword), (status = 404, body = ErrorEnvelope))
)]
async fn reset_password(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
) -> AppResult<Json<NewPassword>> {
    let password = flows::accounts::reset_password(&state.db, &actor, id).await?;
    Ok(Json(NewPassword { password }))
}
