//! Who is calling and what they may touch: passwords, bearer tokens, login throttling,
//! who is acting (`Actor`) and the area `Scope` every query is filtered by. The extractor that
//! finds the user of an HTTP request is `crate::http::guard`.

mod actor;
mod link_throttle;
pub mod password;
mod scope;
mod throttle;
pub mod token;

pub use actor::{Actor, role_name};
pub use link_throttle::LinkThrottle;
pub use scope::Scope;
pub use throttle::LoginThrottle;

use std::net::IpAddr;

use chrono::{Duration, Utc};
use entities::{auth_tokens, users};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr,
};

use crate::config::AuthSettings;
use crate::error::{AppError, AppResult};

/// A token handed out at login; the only time its clear text exists on the server.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: chrono::DateTime<Utc>,
}

/// Checks a username and password and issues a bearer token. Failed attempts are counted per
/// username at a client address, and per address for unknown or many different usernames;
/// past an allowance the caller gets `TooManyRequests`.
pub async fn login(
    db: &impl ConnectionTrait,
    settings: &AuthSettings,
    throttle: &LoginThrottle,
    username: &str,
    password: &str,
    client: IpAddr,
) -> AppResult<IssuedToken> {
    let username = username.trim().to_lowercase();
    throttle.check(&username, client)?;
    let user = users::Entity::find()
        .filter(users::Column::Username.eq(&username))
        .one(db)
        .await?;
    // Verify against a dummy hash when the user is unknown, so timing does not tell
    // which usernames exist.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| password::DUMMY_HASH.clone());
    let ok = password::verify(password.to_owned(), hash).await?;
    let user = match user {
        Some(user) if ok && user.active => user,
        _ => {
            throttle.record_failure(&username, user.is_some(), client)?;
            tracing::info!(%client, "failed login");
            return Err(AppError::Unauthorized("用户名或密码错误".to_owned()));
        }
    };
    let (token, token_hash) = token::generate();
    let expires_at = Utc::now() + Duration::hours(i64::from(settings.token_ttl_hours));
    auth_tokens::Entity::insert(auth_tokens::ActiveModel {
        user_id: Set(user.id),
        token_hash: Set(token_hash),
        created_at: Set(Utc::now()),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        ..Default::default()
    })
    .exec_without_returning(db)
    .await?;
    tracing::info!(user_id = user.id, "login");
    Ok(IssuedToken { token, expires_at })
}

/// Revokes the token the request was made with.
pub async fn logout(db: &impl ConnectionTrait, actor: &Actor) -> AppResult<()> {
    if let Some(token_id) = actor.token_id {
        auth_tokens::Entity::update_many()
            .col_expr(auth_tokens::Column::RevokedAt, Expr::value(Utc::now()))
            .filter(auth_tokens::Column::Id.eq(token_id))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Revokes every live token of a user (password reset, deactivation, role or scope change).
pub async fn revoke_all(db: &impl ConnectionTrait, user_id: i32) -> AppResult<u64> {
    let result = auth_tokens::Entity::update_many()
        .col_expr(auth_tokens::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(auth_tokens::Column::UserId.eq(user_id))
        .filter(auth_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Deletes tokens that expired or were revoked more than a day ago.
pub async fn purge_expired_tokens(db: &impl ConnectionTrait) -> AppResult<u64> {
    let cutoff = Utc::now() - Duration::days(1);
    let result = auth_tokens::Entity::delete_many()
        .filter(
            sea_orm::Condition::any()
                .add(auth_tokens::Column::ExpiresAt.lt(cutoff))
                .add(auth_tokens::Column::RevokedAt.lt(cutoff)),
        )
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}
