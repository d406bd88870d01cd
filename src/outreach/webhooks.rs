//! What providers push back to us: delivery receipts move a message forward (never back),
//! replies confirm, ask to reschedule or opt out. The HTTP side (authentication, each
//! provider's format) is in `crate::http::webhooks`; this holds its settings and the record
//! of signed callbacks already seen, which refuses a replay.

pub use crate::config::WebhookSettings;
use chrono::{DateTime, Duration, Utc};
use sea_orm::ConnectionTrait;

use crate::db::Sql;
use crate::error::AppResult;

/// Why a signed callback's timestamp and nonce are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The timestamp is missing or not a number of seconds.
    NoTimestamp,
    /// Further from our clock than the allowed skew.
    Stale,
    /// No nonce, or one longer than any provider sends.
    NoNonce,
    /// This nonce was seen within the window: a replay.
    Replayed,
}

/// The longest nonce kept (WeChat's are ten-odd digits).
const MAX_NONCE_LEN: usize = 64;

/// Checks a signed callback's timestamp against `now` (at most `max_skew_secs` apart).
pub fn timestamp_fresh(
    timestamp: Option<&str>,
    now: DateTime<Utc>,
    max_skew_secs: u32,
) -> Result<(), Freshness> {
    let seconds: i64 = timestamp
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 12)
        .and_then(|t| t.parse().ok())
        .ok_or(Freshness::NoTimestamp)?;
    if (now.timestamp() - seconds).abs() > i64::from(max_skew_secs) {
        return Err(Freshness::Stale);
    }
    Ok(())
}

/// Records a signed callback's nonce; refuses one already seen within the window. Expired
/// nonces are cleared on the way, so the table holds only the last few minutes' calls.
pub async fn claim_nonce(
    db: &impl ConnectionTrait,
    provider: &'static str,
    nonce: Option<&str>,
    now: DateTime<Utc>,
    max_skew_secs: u32,
) -> AppResult<Result<(), Freshness>> {
    let Some(nonce) = nonce
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= MAX_NONCE_LEN)
    else {
        return Ok(Err(Freshness::NoNonce));
    };
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("DELETE FROM webhook_nonces WHERE expires_at < ")
        .bind(now);
    db.execute_raw(sql.build()).await?;
    let mut sql = Sql::new(backend);
    sql.push("INSERT INTO webhook_nonces (provider, nonce, expires_at) VALUES (")
        .bind(provider)
        .push(", ")
        .bind(nonce)
        .push(", ")
        .bind(now + Duration::seconds(2 * i64::from(max_skew_secs)))
        .push(") ON CONFLICT (provider, nonce) DO NOTHING");
    let inserted = db.execute_raw(sql.build()).await?.rows_affected();
    Ok(if inserted == 1 {
        Ok(())
    } else {
        Err(Freshness::Replayed)
    })
}

/// Forgets a nonce whose callback could not be processed, so the provider's retry of the
/// same call is accepted.
pub async fn release_nonce(
    db: &impl ConnectionTrait,
    provider: &'static str,
    nonce: &str,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("DELETE FROM webhook_nonces WHERE provider = ")
        .bind(provider)
        .push(" AND nonce = ")
        .bind(nonce.trim());
    db.execute_raw(sql.build()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_within_the_skew_pass_and_others_do_not() {
        let now = DateTime::from_timestamp(1_796_601_600, 0).unwrap();
        let at = |secs: i64| (now.timestamp() + secs).to_string();
        assert_eq!(timestamp_fresh(Some(&at(0)), now, 300), Ok(()));
        assert_eq!(timestamp_fresh(Some(&at(-300)), now, 300), Ok(()));
        assert_eq!(timestamp_fresh(Some(&at(299)), now, 300), Ok(()));
        assert_eq!(
            timestamp_fresh(Some(&at(-301)), now, 300),
            Err(Freshness::Stale)
        );
        assert_eq!(
            timestamp_fresh(Some(&at(3600)), now, 300),
            Err(Freshness::Stale)
        );
        // 2001-09-09.
        assert_eq!(
            timestamp_fresh(Some("1000000000"), now, 300),
            Err(Freshness::Stale)
        );
        for bad in [None, Some(""), Some("abc"), Some("99999999999999999999")] {
            assert_eq!(
                timestamp_fresh(bad, now, 300),
                Err(Freshness::NoTimestamp),
                "{bad:?}"
            );
        }
    }
}
