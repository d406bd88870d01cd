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

/// Passwords of ten characters or more that lists of leaked passwords show first, one a line
/// (compared ignoring case). Shorter ones fail the length rule anyway.
const COMMON: &str = include_str!("common-passwords.txt");

fn is_common(lowercased: &str) -> bool {
    COMMON.lines().any(|line| line.trim() == lowercased)
}

/// Checks the password policy: 10–128 characters, at least two kinds of character
/// (lower-case, upper-case, digits, others), not a well-known password and not one character
/// or a short block repeated or counted up or down (`aaaaaaaaaa`, `a1a1a1a1a1`, `1234567890`).
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
    if character_kinds(password) < 2 {
        return Err(AppError::validation(
            "weak_password",
            "密码需包含至少两类字符（小写字母、大写字母、数字、符号）",
        ));
    }
    let lower = password.to_lowercase();
    if is_common(&lower) || is_repetitive(&lower) || is_sequence(&lower) {
        return Err(AppError::validation(
            "weak_password",
            "密码过于常见或规律太强（如重复、连续的字符），请换一个",
        ));
    }
    Ok(())
}

fn character_kinds(password: &str) -> usize {
    let mut kinds = [false; 4];
    for c in password.chars() {
        let kind = if c.is_ascii_lowercase() {
            0
        } else if c.is_ascii_uppercase() {
            1
        } else if c.is_ascii_digit() {
            2
        } else {
            3
        };
        kinds[kind] = true;
    }
    kinds.iter().filter(|k| **k).count()
}

/// One block of up to four characters repeated over the whole password.
fn is_repetitive(password: &str) -> bool {
    let chars: Vec<char> = password.chars().collect();
    (1..=4.min(chars.len() / 2)).any(|block| {
        chars
            .iter()
            .enumerate()
            .skip(block)
            .all(|(i, c)| *c == chars[i - block])
    })
}

/// Characters counting up or down by one all the way (`abcdefghij`, `9876543210`), or pairs
/// of characters doing so (`1a2b3c4d5e` is not caught; `13579…` is not either: length and
/// the other rules carry those).
fn is_sequence(password: &str) -> bool {
    let codes: Vec<i64> = password.chars().map(|c| i64::from(u32::from(c))).collect();
    [1, -1]
        .iter()
        .any(|step| codes.windows(2).all(|w| w[1] - w[0] == *step))
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
    loop {
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
        // All of one kind happens about once in a million draws; draw again then.
        if check_policy(&out).is_ok() {
            return out;
        }
    }
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

    #[test]
    fn common_and_one_kind_passwords_are_refused() {
        for weak in [
            "1234567890",
            "9876543210",
            "abcdefghijkl",
            "aaaaaaaaaaaa",
            "qwertyuiopas",
            "Password123",
            "WOAINI1314520",
            "1qaz2wsx3edc",
            "a1a1a1a1a1a1",
            "abcabcabcabc",
            "123123123123",
            "密码密码密码密码密码",
        ] {
            let err = check_policy(weak).unwrap_err();
            assert_eq!(err.code(), "weak_password", "{weak}");
            let message = err.to_string();
            assert!(!message.is_empty() && !message.is_ascii(), "{message}");
        }
        for fine in [
            "correct-horse-battery",
            "a-new-long-password",
            "xinyuan2026tijian",
            "新源县全民体检2026",
            "Tg7pK2mWq9Lz",
        ] {
            assert!(check_policy(fine).is_ok(), "{fine}");
        }
    }
}
