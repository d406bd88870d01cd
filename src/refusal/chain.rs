//! The refusal records of each resident form a chain: every record carries the SHA-256 of
//! the one before it (the first, a row of zeros) and its own hash over its content. A record
//! altered, removed or slipped in afterwards breaks the chain, and [`verify`] says where.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::Scope;
use crate::db::Sql;
use crate::error::AppResult;

/// The `prev_hash` of a resident's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record says, everything its hash covers but its place in the chain.
#[derive(Debug, Clone, Default, Serialize, FromQueryResult)]
pub struct Content {
    pub kind: String,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub village_code: String,
    pub registration_id: Option<i32>,
    pub supersedes: Option<i32>,
    pub reason_code: Option<String>,
    pub reason_text: Option<String>,
    pub signer_name: Option<String>,
    pub signer_relation: Option<String>,
    pub signature_sha256: Option<String>,
    pub witness_user_id: Option<i32>,
    pub witness_name: Option<String>,
    /// JSON list of contact attempt ids.
    pub attempt_ids: Option<String>,
    /// JSON object `{latitude, longitude, accuracy_m, address}`.
    pub location: Option<String>,
    pub exam_record_id: Option<i32>,
    pub note: Option<String>,
    pub recorded_by: Option<i32>,
    pub recorded_by_name: String,
    /// Whole microseconds: what both databases store exactly.
    #[serde(serialize_with = "micros")]
    pub recorded_at: DateTime<Utc>,
}

fn micros<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// The hash of a record: SHA-256 over a versioned JSON of its position and content, with
/// the fields in a fixed order.
pub fn hash(seq: i32, prev_hash: &str, content: &Content) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        v: u8,
        seq: i32,
        prev_hash: &'a str,
        #[serde(flatten)]
        content: &'a Content,
    }
    let json = serde_json::to_vec(&Canonical {
        v: 1,
        seq,
        prev_hash,
        content,
    })
    .expect("a record serialises");
    hex(&Sha256::digest(json))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Holds the resident's row until the transaction ends (PostgreSQL; SQLite's writer already
/// holds everything), so that whoever reads a resident's refusal records to decide what to
/// append sees every record appended before.
pub async fn lock_resident(db: &impl ConnectionTrait, resident_id: i32) -> AppResult<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        let mut lock = Sql::new(DbBackend::Postgres);
        lock.push("SELECT id FROM residents WHERE id = ")
            .bind(resident_id)
            .push(" FOR UPDATE");
        db.query_one_raw(lock.build()).await?;
    }
    Ok(())
}

/// A record just appended: its id, place and hash.
#[derive(Debug, Clone)]
pub struct Appended {
    pub id: i32,
    pub seq: i32,
    pub hash: String,
}

/// Appends a record to its resident's chain. Call it inside the writing
/// transaction: on PostgreSQL the resident's row is locked so that two writers line up (the
/// unique `(resident_id, prev_hash)` index refuses a fork either way); SQLite has one writer.
pub async fn append(db: &impl ConnectionTrait, mut content: Content) -> AppResult<Appended> {
    let backend = db.get_database_backend();
    content.recorded_at = content.recorded_at.trunc_subsecs(6);
    lock_resident(db, content.resident_id).await?;
    let mut last = Sql::new(backend);
    last.push("SELECT seq, hash FROM refusal_records WHERE resident_id = ")
        .bind(content.resident_id)
        .push(" ORDER BY seq DESC LIMIT 1");
    let (seq, prev_hash) = match Link::find_by_statement(last.build()).one(db).await? {
        Some(last) => (last.seq + 1, last.hash),
        None => (1, GENESIS.to_owned()),
    };
    let own = hash(seq, &prev_hash, &content);
    let c = content;
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO refusal_records (campaign_id, resident_id, village_code, seq, kind, \
         registration_id, supersedes, reason_code, reason_text, signer_name, signer_relation, \
         signature_sha256, witness_user_id, witness_name, attempt_ids, location, \
         exam_record_id, note, recorded_by, recorded_by_name, recorded_at, prev_hash, hash) \
         VALUES (",
    )
    .bind(c.campaign_id)
    .push(", ")
    .bind(c.resident_id)
    .push(", ")
    .bind(c.village_code)
    .push(", ")
    .bind(seq)
    .push(", ")
    .bind(c.kind)
    .push(", ")
    .bind(c.registration_id)
    .push(", ")
    .bind(c.supersedes)
    .push(", ")
    .bind(c.reason_code)
    .push(", ")
    .bind(c.reason_text)
    .push(", ")
    .bind(c.signer_name)
    .push(", ")
    .bind(c.signer_relation)
    .push(", ")
    .bind(c.signature_sha256)
    .push(", ")
    .bind(c.witness_user_id)
    .push(", ")
    .bind(c.witness_name)
    .push(", ")
    .bind(c.attempt_ids)
    .push(", ")
    .bind(c.location)
    .push(", ")
    .bind(c.exam_record_id)
    .push(", ")
    .bind(c.note)
    .push(", ")
    .bind(c.recorded_by)
    .push(", ")
    .bind(c.recorded_by_name)
    .push(", ")
    .bind(c.recorded_at)
    .push(", ")
    .bind(prev_hash)
    .push(", ")
    .bind(own.clone())
    .push(") RETURNING id");
    let written = Id::find_by_statement(sql.build())
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the refusal record was not written"))?;
    Ok(Appended {
        id: written.id,
        seq,
        hash: own,
    })
}

/// The end of a chain: the last record's place and hash.
#[derive(FromQueryResult)]
struct Link {
    seq: i32,
    hash: String,
}

/// A row's id, as `RETURNING id` gives it.
#[derive(FromQueryResult)]
struct Id {
    id: i32,
}

/// Every column of a record, as stored.
pub const COLUMNS: &str = "id, campaign_id, resident_id, village_code, seq, kind, \
    registration_id, supersedes, reason_code, reason_text, signer_name, signer_relation, \
    signature_sha256, witness_user_id, witness_name, attempt_ids, location, exam_record_id, \
    note, recorded_by, recorded_by_name, recorded_at, prev_hash, hash";

/// The [`COLUMNS`] of `refusal_records r`, for a statement that joins other tables.
pub const R_COLUMNS: &str = "r.id, r.campaign_id, r.resident_id, r.village_code, r.seq, r.kind, \
    r.registration_id, r.supersedes, r.reason_code, r.reason_text, r.signer_name, \
    r.signer_relation, r.signature_sha256, r.witness_user_id, r.witness_name, r.attempt_ids, \
    r.location, r.exam_record_id, r.note, r.recorded_by, r.recorded_by_name, r.recorded_at, \
    r.prev_hash, r.hash";

/// A record as stored (a `refusal_records` row): its place in the chain and its content.
#[derive(Debug, Clone, FromQueryResult)]
pub struct Stored {
    pub id: i32,
    pub seq: i32,
    pub prev_hash: String,
    pub hash: String,
    #[sea_orm(nested)]
    pub content: Content,
}

impl Stored {
    /// Reads a record from a row with the [`COLUMNS`].
    pub fn from_row(row: &sea_orm::QueryResult) -> Result<Self, sea_orm::DbErr> {
        Self::from_query_result(row, "")
    }
}

/// One place where a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainBreak {
    pub resident_id: i32,
    /// The record where the break shows (absent when the record itself is missing).
    pub record_id: Option<i32>,
    pub seq: Option<i32>,
    /// `altered` (content does not match its hash), `broken_link` (the previous hash does not
    /// match), `missing` (a record is gone: a gap in the sequence, or an audited record not
    /// found) or `unaudited` (a record no audited action wrote).
    pub problem: &'static str,
    /// What it means, in Chinese.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    /// Whether every chain checked holds.
    pub ok: bool,
    pub residents: u64,
    pub records: u64,
    pub breaks: Vec<ChainBreak>,
}

/// Checks the chains of every resident with a record in `scope` (whole chains, also the
/// records written while the resident lived elsewhere): each record's hash against its
/// content, each link against the record before, the sequence for gaps, what a confirmation,
/// return or revocation refers to, and the audit log — every record written through the
/// service has an audit entry naming it with its hash, so a record deleted from the end of a
/// chain, rewritten with a recomputed hash, or inserted behind the service's back is found
/// too. Records and audit log are read in the transaction given, which should be one snapshot.
pub async fn verify(txn: &impl ConnectionTrait, scope: &Scope) -> AppResult<ChainReport> {
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("SELECT ")
        .push(COLUMNS)
        .push(" FROM refusal_records");
    if let Scope::Within(area) = scope {
        let (low, high) = area.code_range();
        sql.push(
            " WHERE resident_id IN (SELECT resident_id FROM refusal_records \
             WHERE village_code BETWEEN ",
        )
        .bind(low)
        .push(" AND ")
        .bind(high)
        .push(")");
    }
    sql.push(" ORDER BY resident_id, seq");
    let records = Stored::find_by_statement(sql.build()).all(txn).await?;
    let residents: HashSet<i32> = records.iter().map(|r| r.content.resident_id).collect();
    let mut audited = audited(txn, scope, &residents).await?;

    let mut report = ChainReport {
        ok: true,
        residents: 0,
        records: 0,
        breaks: Vec::new(),
    };
    // Per resident: the last seq and hash, and the registrations seen so far (id → campaign).
    let mut current: Option<(i32, i32, String)> = None;
    let mut registrations: HashMap<i32, i32> = HashMap::new();
    for record in &records {
        let c = &record.content;
        let resident = c.resident_id;
        let (expected_seq, expected_prev) = match &current {
            Some((r, seq, hash)) if *r == resident => (seq + 1, hash.clone()),
            _ => {
                report.residents += 1;
                registrations.clear();
                (1, GENESIS.to_owned())
            }
        };
        report.records += 1;
        let mut problem = |problem: &'static str, message: String| {
            report.breaks.push(ChainBreak {
                resident_id: resident,
                record_id: Some(record.id),
                seq: Some(record.seq),
                problem,
                message,
            });
        };
        if record.seq != expected_seq {
            problem(
                "missing",
                format!(
                    "居民 {resident} 的第 {expected_seq} 至 {} 条拒检记录缺失",
                    record.seq - 1
                ),
            );
        } else if record.prev_hash != expected_prev {
            problem(
                "broken_link",
                format!(
                    "记录 {} 与前一条记录的链接不符，前一条记录可能被改动",
                    record.id
                ),
            );
        }
        if hash(record.seq, &record.prev_hash, c) != record.hash {
            problem(
                "altered",
                format!("记录 {} 的内容与其哈希不符，已被改动", record.id),
            );
        }
        let refers = c.registration_id.or(c.supersedes);
        let refers_ok = match (c.kind.as_str(), refers) {
            ("registered", None) => c.registration_id.is_none(),
            ("registered", Some(_)) => {
                c.registration_id.is_none()
                    && c.supersedes
                        .is_some_and(|id| registrations.get(&id) == Some(&c.campaign_id))
            }
            (_, Some(id)) => {
                c.supersedes.is_none() && registrations.get(&id) == Some(&c.campaign_id)
            }
            (_, None) => false,
        };
        if !refers_ok {
            problem(
                "broken_link",
                format!(
                    "记录 {} 所指的拒检登记不是该居民本次体检工作中更早的登记",
                    record.id
                ),
            );
        }
        match audited.remove(&record.id) {
            None => problem(
                "unaudited",
                format!("记录 {} 没有对应的操作日志，不是经本系统写入的", record.id),
            ),
            Some(entry) => {
                let hash_differs = entry.hash.as_ref().is_some_and(|h| *h != record.hash);
                if hash_differs || entry.resident_id != resident {
                    problem(
                        "altered",
                        format!("记录 {} 与操作日志登记的内容不符，已被改写", record.id),
                    );
                }
            }
        }
        if c.kind == "registered" {
            registrations.insert(record.id, c.campaign_id);
        }
        current = Some((resident, record.seq, record.hash.clone()));
    }
    // Audited records that are no longer there.
    let mut gone: Vec<(i32, AuditedRecord)> = audited.into_iter().collect();
    gone.sort_unstable_by_key(|(id, _)| *id);
    for (id, entry) in gone {
        report.breaks.push(ChainBreak {
            resident_id: entry.resident_id,
            record_id: Some(id),
            seq: entry.seq,
            problem: "missing",
            message: format!("操作日志记载的拒检记录 {id} 已不存在，可能被删除"),
        });
    }
    report.ok = report.breaks.is_empty();
    Ok(report)
}

/// What the audit log says about one refusal record.
struct AuditedRecord {
    resident_id: i32,
    seq: Option<i32>,
    hash: Option<String>,
}

/// An audit log entry about a refusal record.
#[derive(FromQueryResult)]
struct AuditEntry {
    entity_id: Option<String>,
    area_code: Option<String>,
    summary: String,
}

/// The refusal records the audit log says were written, for residents in `residents` or in
/// an area of `scope`.
async fn audited(
    db: &impl ConnectionTrait,
    scope: &Scope,
    residents: &HashSet<i32>,
) -> AppResult<HashMap<i32, AuditedRecord>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT entity_id, area_code, summary FROM audit_log WHERE entity = 'refusal_record'");
    let mut found = HashMap::new();
    for entry in AuditEntry::find_by_statement(sql.build()).all(db).await? {
        let AuditEntry {
            entity_id,
            area_code: area,
            summary,
        } = entry;
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap_or_default();
        let resident_id = summary["resident_id"].as_i64().unwrap_or_default() as i32;
        let in_area = match scope {
            Scope::All => true,
            Scope::Within(scope_area) => area
                .as_deref()
                .and_then(|code| crate::area::AreaCode::parse(code).ok())
                .is_some_and(|code| scope_area.contains(&code)),
        };
        if !in_area && !residents.contains(&resident_id) {
            continue;
        }
        if let Some(id) = entity_id.and_then(|id| id.parse().ok()) {
            found.insert(
                id,
                AuditedRecord {
                    resident_id,
                    seq: summary["seq"].as_i64().map(|s| s as i32),
                    hash: summary["hash"].as_str().map(str::to_owned),
                },
            );
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            kind: "registered".to_owned(),
            campaign_id: 1,
            resident_id: 7,
            village_code: "654025100201".to_owned(),
            reason_code: Some("unwilling".to_owned()),
            signer_name: Some("张三".to_owned()),
            recorded_by_name: "cadre".to_owned(),
            recorded_at: DateTime::from_timestamp(1_790_000_000, 123_456_789).unwrap(),
            ..Content::default()
        }
    }

    #[test]
    fn the_hash_covers_content_position_and_link() {
        let base = hash(1, GENESIS, &content());
        assert_eq!(base.len(), 64);
        assert_eq!(base, hash(1, GENESIS, &content()));
        assert_ne!(base, hash(2, GENESIS, &content()));
        assert_ne!(base, hash(1, &"1".repeat(64), &content()));
        let mut changed = content();
        changed.reason_text = Some("".to_owned());
        assert_ne!(base, hash(1, GENESIS, &changed));
        let mut changed = content();
        changed.signer_name = Some("张四".to_owned());
        assert_ne!(base, hash(1, GENESIS, &changed));
    }

    #[test]
    fn the_columns_of_r_are_the_columns() {
        assert_eq!(R_COLUMNS, format!("r.{}", COLUMNS.replace(", ", ", r.")));
    }

    #[test]
    fn times_are_hashed_to_the_microsecond() {
        let mut a = content();
        a.recorded_at = a.recorded_at.trunc_subsecs(6);
        let mut b = content();
        b.recorded_at = DateTime::from_timestamp(1_790_000_000, 123_456_000).unwrap();
        assert_eq!(hash(1, GENESIS, &a), hash(1, GENESIS, &b));
        b.recorded_at = DateTime::from_timestamp(1_790_000_000, 123_457_000).unwrap();
        assert_ne!(hash(1, GENESIS, &a), hash(1, GENESIS, &b));
    }
}
