//! Opaque bearer tokens: 256 random bits, shown once, stored only as SHA-256.
//! Chosen over signed tokens because logout, deactivation and password resets must take
//! effect at once, and a database row is the simplest thing that can be revoked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use entities::{auth_tokens, users};
use password_hash::rand_core::{OsRng, RngCore};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult};

const PREFIX: &str = "otk_";

/// A new token and the hash to store.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&token);
    (token, hash)
}

/// Hex SHA-256 of a presented token. A fast hash is right here: the token has 256 bits of
/// entropy, so there is nothing to brute-force.
pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The anti-forgery token of a page session: derived from the session's token, so a page can
/// embed it and a forged cross-site request, which cannot read the HttpOnly cookie, cannot.
pub fn csrf(token: &str) -> String {
    let digest = Sha256::digest(format!("csrf\0{token}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The live token row of a presented token and the user who holds it; a token unknown,
/// revoked or expired, or held by a deactivated user, is refused.
pub async fn holder(
    db: &impl ConnectionTrait,
    presented: &str,
) -> AppResult<(auth_tokens::Model, users::Model)> {
    let found = auth_tokens::Entity::find()
        .filter(auth_tokens::Column::TokenHash.eq(hash(presented)))
        .find_also_related(users::Entity)
        .one(db)
        .await?;
    let (token_row, user) = match found {
        Some((token_row, Some(user))) => (token_row, user),
        _ => {
            return Err(AppError::Unauthorized(
                "登录凭证无效，请重新登录".to_owned(),
            ));
        }
    };
    if token_row.revoked_at.is_some() || token_row.expires_at <= Utc::now() || !user.active {
        return Err(AppError::Unauthorized("登录已过期，请重新登录".to_owned()));
    }
    Ok((token_row, user))
}

/// Cheap shape check before touching the database.
pub fn looks_valid(token: &str) -> bool {
    token.len() == PREFIX.len() + 43 && token.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_only_their_hash_is_kept() {
        let (a, hash_a) = generate();
        let (b, _) = generate();
        assert_ne!(a, b);
        assert!(looks_valid(&a));
        assert_eq!(hash_a, hash(&a));
        assert_eq!(hash_a.len(), 64);
        assert!(!hash_a.contains(&a[4..]));
    }
}
