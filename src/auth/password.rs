//! Password hashing with Argon2id (OWASP parameters: 19 MiB, 2 passes), run off the async
//! threads because it is deliberately slow.

use std::sync::LazyLock;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use password_hash::rand_core::{OsRng, RngCore};

use crate::error::{AppError, AppResult};

pub const MIN_LENGTH: usize = 10;
pub const MAX_LENGTH: usize = 128;

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("static Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A real hash of nothing anyone knows, verified against when a username does not exist.
pub static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_blocking(&generate()).expect("hashing a generated password cannot fail"));

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

/// Checks the password policy (length only: long passphrases beat composition rules).
pub fn check_policy(password: &str) -> AppResult<()> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(AppError::validation(
            "weak_password",
            format!("密码至少需要 {MIN_LENGTH} 个字符"),
        ));
    }
    if length > MAX_LENGTH {
        return Err(AppError::validation(
            "password_too_long",
            format!("密码不能超过 {MAX_LENGTH} 个字符"),
        ));
    }
    Ok(())
}

pub async fn hash(password: String) -> AppResult<String> {
    let hashed = tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .context("password hashing task")??;
    Ok(hashed)
}

pub async fn verify(password: String, hash: String) -> AppResult<bool> {
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                hasher()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .context("password verification task")?;
    Ok(ok)
}

/// A random 16-character password from an alphabet without look-alikes (no 0/O, 1/l/I),
/// easy to read out over the phone to a cadre.
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(16);
    while out.len() < 16 {
        let mut byte = [0u8; 1];
        OsRng.fill_bytes(&mut byte);
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - (256 % ALPHABET.len());
        if (byte[0] as usize) < limit {
            out.push(ALPHABET[byte[0] as usize % ALPHABET.len()] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let hashed = hash("correct horse battery".to_owned()).await.unwrap();
        assert!(hashed.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".to_owned(), hashed.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify("correct horse batterx".to_owned(), hashed)
                .await
                .unwrap()
        );
        assert!(
            !verify("x".to_owned(), "not a hash".to_owned())
                .await
                .unwrap()
        );
    }

    #[test]
    fn generated_passwords_meet_the_policy_and_differ() {
        let a = generate();
        assert_eq!(a.len(), 16);
        assert!(check_policy(&a).is_ok());
        assert_ne!(a, generate());
        assert!(check_policy("short").is_err());
    }
}
