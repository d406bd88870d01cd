//! The keys a client chooses for a record it may send more than once: the cadre's phone
//! queues bookings and refusal registrations made without a network and sends each again
//! until it has an answer. A key is claimed in the transaction that writes its record, first
//! thing, so a second upload of the same entry finds the key taken and is answered with the
//! record the first one wrote, never a second record.

use chrono::Utc;
use sea_orm::{ConnectionTrait, FromQueryResult};

use crate::db::Sql;
use crate::error::{AppError, AppResult};

/// What a key was used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Booking,
    Refusal,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Booking => "booking",
            Kind::Refusal => "refusal",
        }
    }
}

/// A client's key, checked: 8–64 of `A-Z a-z 0-9 - _`.
pub fn check(raw: &str) -> AppResult<&str> {
    let ok = (8..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(raw)
    } else {
        Err(AppError::validation(
            "invalid_client_key",
            "client_key 应为 8 到 64 位字母、数字、- 或 _",
        ))
    }
}

/// What a key already stands for: the record written under it (a `client_keys` row).
#[derive(Debug, Clone, FromQueryResult)]
pub struct Taken {
    kind: String,
    campaign_id: i32,
    subject: String,
    entity: Option<String>,
}

impl Taken {
    /// The record written under the key, when it was used for the same kind of entry, in
    /// the same campaign, about the same residents; otherwise the key is being reused for
    /// another entry, which is refused.
    pub fn record(&self, kind: Kind, campaign_id: i32, subject: &str) -> AppResult<&str> {
        let same =
            self.kind == kind.code() && self.campaign_id == campaign_id && self.subject == subject;
        match (&self.entity, same) {
            (Some(entity), true) => Ok(entity),
            _ => Err(AppError::Conflict(
                "该 client_key 已用于另一条记录".to_owned(),
            )),
        }
    }
}

/// Claims `key` for an entry about `subject`, in the caller's transaction. `None`: the key is
/// now this transaction's, and [`settle`] names the record before commit. `Some`: an earlier
/// upload took it. When another transaction holds the key uncommitted, PostgreSQL waits for
/// it here; SQLite writers are serial anyway.
pub async fn claim(
    db: &impl ConnectionTrait,
    key: &str,
    kind: Kind,
    campaign_id: i32,
    subject: &str,
    user_id: Option<i32>,
) -> AppResult<Option<Taken>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("INSERT INTO client_keys (client_key, kind, campaign_id, subject, entity, user_id, created_at) VALUES (")
        .bind(key)
        .push(", ")
        .bind(kind.code())
        .push(", ")
        .bind(campaign_id)
        .push(", ")
        .bind(subject)
        .push(", NULL, ")
        .bind(user_id)
        .push(", ")
        .bind(Utc::now())
        .push(") ON CONFLICT (client_key) DO NOTHING");
    if db.execute_raw(sql.build()).await?.rows_affected() == 1 {
        return Ok(None);
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT kind, campaign_id, subject, entity FROM client_keys WHERE client_key = ")
        .bind(key);
    let taken = Taken::find_by_statement(sql.build())
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a client key neither inserted nor found"))?;
    Ok(Some(taken))
}

/// Names the record written under a key claimed by this transaction.
pub async fn settle(db: &impl ConnectionTrait, key: &str, entity: &str) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE client_keys SET entity = ")
        .bind(entity)
        .push(" WHERE client_key = ")
        .bind(key);
    db.execute_raw(sql.build()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_safe_tokens() {
        assert!(check("0123456789abcdef0123456789abcdef").is_ok());
        assert!(check("a-b_c-d_").is_ok());
        for bad in [
            "short",
            "has space in it",
            "引号引号引号引号",
            &"x".repeat(65),
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_answers_only_for_the_entry_it_was_taken_for() {
        let taken = Taken {
            kind: "booking".to_owned(),
            campaign_id: 1,
            subject: "3,4".to_owned(),
            entity: Some("ref".to_owned()),
        };
        assert_eq!(taken.record(Kind::Booking, 1, "3,4").unwrap(), "ref");
        assert!(taken.record(Kind::Booking, 1, "3").is_err());
        assert!(taken.record(Kind::Refusal, 1, "3,4").is_err());
        assert!(taken.record(Kind::Booking, 2, "3,4").is_err());
    }
}
