//! Opaque bearer tokens: 256 random bits, shown once, stored only as SHA-256.
//! Chosen over signed tokens because logout, deactivation and password resets must take
//! effect at once, and a database row is the simplest thing that can be revoked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

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
