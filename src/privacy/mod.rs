//! Protection of personal data at rest: resident ID numbers and phone numbers are encrypted
//! with AES-256-GCM (a fresh random nonce per value, the field name as associated data), and
//! found again through a keyed blind index (HMAC-SHA256 of the normalised value), so exact
//! lookup and uniqueness never need the clear text in the database.
//!
//! One 256-bit master key (configuration, or a key file generated beside the embedded SQLite
//! database on first start) yields both working keys through HKDF-SHA256.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use password_hash::rand_core::{OsRng, RngCore};
use sha2::Sha256;

use crate::config::Settings;

const NONCE_LEN: usize = 12;
/// Bytes of a blind index.
pub const INDEX_LEN: usize = 16;

/// Which kind of value is protected; part of the associated data and of the index input, so a
/// ciphertext or an index of one kind is useless as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    ResidentId,
    /// Any phone number (own or a relative's): one index, so a number is found wherever it is.
    Phone,
    /// A provider's access token cached in `provider_tokens` (WeChat): encrypted only, never
    /// indexed.
    ProviderToken,
    /// The code of a resident's own appointment link (`/r/{code}`).
    LinkCode,
}

impl Field {
    fn label(self) -> &'static [u8] {
        match self {
            Field::ResidentId => b"resident.id_number",
            Field::Phone => b"resident.phone",
            Field::ProviderToken => b"provider_tokens.token",
            Field::LinkCode => b"resident_links.code",
        }
    }
}

#[derive(Clone)]
pub struct Privacy {
    cipher: Aes256Gcm,
    index: Hmac<Sha256>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Privacy(<keys>)")
    }
}

impl Privacy {
    pub fn from_master_key(master: &[u8; 32]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(b"outreach"), master);
        let mut encryption = [0u8; 32];
        let mut index = [0u8; 32];
        hkdf.expand(b"aes-256-gcm v1", &mut encryption)
            .expect("32 bytes is a valid HKDF output length");
        hkdf.expand(b"blind-index v1", &mut index)
            .expect("32 bytes is a valid HKDF output length");
        Self {
            cipher: Aes256Gcm::new(&encryption.into()),
            index: <Hmac<Sha256> as Mac>::new_from_slice(&index)
                .expect("HMAC takes any key length"),
        }
    }

    /// The key from `privacy.key`, else from the key file; for the embedded SQLite default a
    /// key file is generated next to the database on first start. The key itself is never
    /// logged, only where it was read from.
    pub fn load(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(key) = &settings.privacy.key {
            return Ok(Self::from_master_key(
                &decode_key(key.expose()).context("privacy.key")?,
            ));
        }
        let path = match key_place(settings) {
            KeyPlace::File(path) => path,
            KeyPlace::Setting | KeyPlace::Unset => bail!(
                "privacy.key or privacy.key_file must be set for a PostgreSQL database \
                 (every instance sharing the database needs the same key)"
            ),
        };
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the data key file {}", path.display()))?;
            let key = decode_key(text.trim())
                .with_context(|| format!("data key file {}", path.display()))?;
            return Ok(Self::from_master_key(&key));
        }
        if settings.privacy.key_file.is_some() || !settings.database_url.is_sqlite() {
            bail!("the data key file {} does not exist", path.display());
        }
        let key = generate_key_file(&path)?;
        tracing::warn!(path = %path.display(), "generated a new data encryption key; back it up with the database");
        Ok(Self::from_master_key(&key))
    }

    /// `nonce ‖ ciphertext ‖ tag`, under a fresh random nonce.
    ///
    /// The nonce comes from the thread's userspace CSPRNG (`rand`'s `ThreadRng`: ChaCha12,
    /// seeded and reseeded from the operating system) rather than a `getrandom` system call
    /// per value, which was a sixth of the reading thread's time in a large import. 96 random
    /// bits a value keep the chance of a repeated nonce negligible for any registry.
    pub fn encrypt(&self, field: Field, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        self.seal(field, &nonce, plaintext)
    }

    /// Encrypts into one buffer (nonce, then the text encrypted in place, then the tag).
    fn seal(&self, field: Field, nonce: &[u8; NONCE_LEN], plaintext: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(nonce);
        out.extend_from_slice(plaintext.as_bytes());
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(nonce),
                field.label(),
                &mut out[NONCE_LEN..],
            )
            .expect("AES-GCM encryption of a short value cannot fail");
        out.extend_from_slice(&tag);
        out
    }

    pub fn decrypt(&self, field: Field, blob: &[u8]) -> anyhow::Result<String> {
        if blob.len() < NONCE_LEN + 16 {
            bail!("ciphertext too short");
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: field.label(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt a stored {:?} (wrong key or altered data)",
                    field
                )
            })?;
        String::from_utf8(plain).context("decrypted value is not UTF-8")
    }

    /// HMAC-SHA256 of the field label and the normalised value, truncated to 128 bits: equal
    /// values give equal indexes, and without the key an index says nothing about the value.
    /// 128 bits keep collisions out of reach (about 2^-88 for ten million residents) while
    /// halving the index B-tree and leaking less than a full digest would.
    pub fn blind_index(&self, field: Field, normalised: &str) -> Vec<u8> {
        let mut mac = self.index.clone();
        mac.update(field.label());
        mac.update(&[0]);
        mac.update(normalised.as_bytes());
        mac.finalize().into_bytes()[..INDEX_LEN].to_vec()
    }
}

fn decode_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = STANDARD
        .decode(text.trim())
        .context("the key must be base64")?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("the key must be 32 bytes, got {}", b.len()))
}

/// A new random key, base64, for `privacy.key`.
pub fn new_key_base64() -> String {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    STANDARD.encode(key)
}

fn generate_key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = new_key_base64();
    let key = decode_key(&text)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating the data key file {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{text}\n").as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

/// The directory of the SQLite database file, when the database is one.
fn sqlite_directory(settings: &Settings) -> Option<PathBuf> {
    let path = settings.database_url.sqlite_path()?;
    Some(path.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Where the data key of these settings is kept, as [`Privacy::load`] looks for it; what an
/// operator must keep beside every backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPlace {
    /// `privacy.key`: the configuration file or `OUTREACH_PRIVACY__KEY`.
    Setting,
    /// A key file (`privacy.key_file`, or `outreach.key` beside the SQLite database).
    File(PathBuf),
    /// Nowhere yet: PostgreSQL without `privacy.key` or `privacy.key_file`.
    Unset,
}

pub fn key_place(settings: &Settings) -> KeyPlace {
    if settings.privacy.key.is_some() {
        return KeyPlace::Setting;
    }
    match (&settings.privacy.key_file, sqlite_directory(settings)) {
        (Some(path), _) => KeyPlace::File(path.clone()),
        (None, Some(dir)) => KeyPlace::File(dir.join("outreach.key")),
        (None, None) => KeyPlace::Unset,
    }
}

/// Masks every run of seven or more digits (a phone number, wherever a provider echoes it)
/// down to its first three and last four, and caps the length, so a provider's message can
/// go into an error or a log.
pub fn redact(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    let mut out = String::with_capacity(text.len().min(MAX_CHARS * 4));
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 7 {
            out.push_str(&run[..3]);
            out.push_str("****");
            out.push_str(&run[run.len() - 4..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    if out.chars().count() > MAX_CHARS {
        out = out.chars().take(MAX_CHARS).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_each_encryption_differs() {
        let privacy = Privacy::from_master_key(&[7; 32]);
        let a = privacy.encrypt(Field::ResidentId, "11010519491231002X");
        let b = privacy.encrypt(Field::ResidentId, "11010519491231002X");
        assert_ne!(a, b, "fresh nonce each time");
        assert!(!a.windows(8).any(|w| w == b"11010519"));
        assert_eq!(
            privacy.decrypt(Field::ResidentId, &a).unwrap(),
            "11010519491231002X"
        );
        assert!(
            privacy.decrypt(Field::Phone, &a).is_err(),
            "bound to its field"
        );
        let other = Privacy::from_master_key(&[8; 32]);
        assert!(
            other.decrypt(Field::ResidentId, &a).is_err(),
            "bound to its key"
        );
        let mut altered = a.clone();
        altered[20] ^= 1;
        assert!(privacy.decrypt(Field::ResidentId, &altered).is_err());
    }

    #[test]
    fn the_stored_format_is_the_nonce_then_the_standard_aead_output() {
        let privacy = Privacy::from_master_key(&[7; 32]);
        let nonce = [3u8; NONCE_LEN];
        let sealed = privacy.seal(Field::Phone, &nonce, "13812345678");
        let standard = privacy
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: b"13812345678",
                    aad: Field::Phone.label(),
                },
            )
            .unwrap();
        assert_eq!(sealed[..NONCE_LEN], nonce);
        assert_eq!(sealed[NONCE_LEN..], standard[..]);
    }

    #[test]
    fn nonces_do_not_repeat() {
        let privacy = Privacy::from_master_key(&[7; 32]);
        let nonces: std::collections::HashSet<Vec<u8>> = (0..20_000)
            .map(|_| privacy.encrypt(Field::Phone, "13812345678")[..NONCE_LEN].to_vec())
            .collect();
        assert_eq!(nonces.len(), 20_000);
    }

    #[test]
    fn blind_indexes_are_stable_per_key_and_field() {
        let privacy = Privacy::from_master_key(&[7; 32]);
        let i1 = privacy.blind_index(Field::Phone, "13812345678");
        assert_eq!(i1, privacy.blind_index(Field::Phone, "13812345678"));
        assert_eq!(i1.len(), 16);
        assert_ne!(i1, privacy.blind_index(Field::ResidentId, "13812345678"));
        assert_ne!(
            i1,
            Privacy::from_master_key(&[8; 32]).blind_index(Field::Phone, "13812345678")
        );
    }
}
