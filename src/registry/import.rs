//! `outreach import residents FILE` and the upload endpoint: the household population from a
//! CSV (UTF-8 or GB18030) or XLSX file, streamed. A blocking thread reads, validates and
//! encrypts rows; the async side writes them in batches inside one transaction (the caller's,
//! see `flows::registry::import_residents`), so a file that turns out unusable half-way leaves
//! nothing behind. Re-importing changes nothing; changed
//! rows are updated field by field and audited; an ID already registered in another village is
//! rejected with that village named (moving household is an explicit action).

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{NaiveDate, Utc};
use entities::residents;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QuerySelect,
};
use serde_json::json;

use super::fields::{Language, MigrantType, MobilePhone, Special, mask_raw_phone};
use super::resident_id::{ResidentId, Sex, mask_raw_id};
use crate::area::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::error::{AppError, AppResult};
use crate::import::stream::{BytesRead, RawRow, SourceError, read_rows};
use crate::import::{ImportSummary, RejectedFile, RejectedRow, map_headers};
use crate::privacy::{Field, Privacy};
use crate::validate::parse_date;

const BATCH: usize = 1000;
/// Rows an import into an empty registry writes through the indexes before it drops them and
/// loads the rest in bulk: below this, rebuilding the indexes is not worth the DDL.
const BULK_AFTER: u64 = 10_000;
/// Rejected rows returned in an upload's answer (all of them go to the rejected file).
const REJECTS_KEPT: usize = 1000;

const NAME: &[&str] = &["姓名", "name"];
const ID_NUMBER: &[&str] = &["身份证号", "身份证号码", "公民身份号码", "id_number"];
const VILLAGE: &[&str] = &["户籍地区划代码", "village_code"];
const PHONE: &[&str] = &["联系电话", "手机号", "phone"];
const RELATIVE_NAME: &[&str] = &["亲属姓名", "relative_name"];
const RELATIVE_PHONE: &[&str] = &["亲属电话", "relative_phone"];
const RELATIVE_RELATION: &[&str] = &["亲属关系", "relative_relation"];
const MIGRANT_TYPE: &[&str] = &["流动类型", "migrant_type"];
const CURRENT_ADDRESS: &[&str] = &["现居住地", "current_address"];
const PERMIT_SINCE: &[&str] = &["居住证起始日期", "permit_since"];
const SPECIAL: &[&str] = &["特殊情况", "special"];
const WECHAT: &[&str] = &["微信", "wechat_openid"];
const EMAIL: &[&str] = &["电子邮箱", "email"];
const LANGUAGE: &[&str] = &["语言", "language"];
const SEX: &[&str] = &["性别", "sex", "gender"];
const BIRTH_DATE: &[&str] = &["出生日期", "birth_date"];
/// Characters of a value repeated in a reason.
const REASON_VALUE_CHARS: usize = 40;

/// How the reading thread reports progress.
#[derive(Clone)]
pub enum Progress {
    Silent,
    /// A progress bar on a terminal, plain lines otherwise.
    Auto,
    /// Told to the function (on the reading thread) after each batch of rows and once when
    /// the file has been read — what a page shows while its upload is imported.
    Report(Arc<dyn Fn(ReadProgress) + Send + Sync>),
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Progress::Silent => "Silent",
            Progress::Auto => "Auto",
            Progress::Report(_) => "Report",
        })
    }
}

/// How far the reading thread has come through a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadProgress {
    /// Data rows read (the header not counted).
    pub rows: u64,
    /// Bytes of the file read so far, and its size.
    pub bytes: u64,
    pub total_bytes: u64,
    /// Every row has been read; what is left is writing them.
    pub finished: bool,
}

#[derive(Debug, Clone)]
pub struct ResidentImport {
    pub summary: ImportSummary,
    pub unknown_columns: Vec<String>,
    /// The file's header row, naming the values of each rejected row.
    pub header: Vec<String>,
    /// The first rejected rows (all of them are in `rejected_file` when one was asked for).
    pub rejected_rows: Vec<RejectedRow>,
    pub rejected_file: Option<PathBuf>,
    /// Positions of the ID and phone columns among each row's values.
    sensitive_columns: Vec<usize>,
}

impl ResidentImport {
    /// The rejected rows as an upload answers them: ID and phone numbers masked as everywhere
    /// else, long values cut (the rejected file keeps them whole).
    pub fn rejected_rows_for_response(&self) -> Vec<RejectedRow> {
        self.rejected_rows
            .iter()
            .map(|row| {
                let mut row = row.clone();
                for (position, value) in row.values.iter_mut().enumerate() {
                    if let Some(kind) = self.sensitive_columns.iter().position(|c| *c == position) {
                        *value = if kind == 0 {
                            mask_raw_id(value)
                        } else {
                            mask_raw_phone(value)
                        };
                    }
                }
                row.shorten();
                row
            })
            .collect()
    }
}

/// A phone number ready to store.
#[derive(Clone)]
pub struct ProtectedPhone {
    pub cipher: Vec<u8>,
    pub index: Vec<u8>,
    pub masked: String,
}

impl ProtectedPhone {
    pub fn new(privacy: &Privacy, phone: &MobilePhone) -> Self {
        Self {
            cipher: privacy.encrypt(Field::Phone, phone.expose()),
            index: privacy.blind_index(Field::Phone, phone.expose()),
            masked: phone.masked(),
        }
    }

    /// The three stored columns (cipher, index, masked) of a phone that may be absent.
    fn split(phone: Option<Self>) -> (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>) {
        match phone {
            Some(p) => (Some(p.cipher), Some(p.index), Some(p.masked)),
            None => (None, None, None),
        }
    }
}

/// One valid row, encrypted. `None` fields were blank or absent and leave stored values alone.
#[derive(Clone)]
struct Prepared {
    line: u64,
    values: Vec<String>,
    id_index: Vec<u8>,
    id_cipher: Vec<u8>,
    id_masked: String,
    name: String,
    sex: &'static str,
    birth_date: NaiveDate,
    village_code: String,
    language: Option<Language>,
    migrant_type: Option<MigrantType>,
    permit_since: Option<NaiveDate>,
    special: Option<Special>,
    current_address: Option<String>,
    phone: Option<ProtectedPhone>,
    relative_name: Option<String>,
    relative_relation: Option<String>,
    relative_phone: Option<ProtectedPhone>,
    wechat_openid: Option<String>,
    email: Option<String>,
}

enum Message {
    Header {
        header: Vec<String>,
        unknown: Vec<String>,
        /// The ID column first, then the phone columns.
        sensitive: Vec<usize>,
    },
    Batch {
        /// The valid rows, kept for comparing with the registry; empty once the import loads
        /// in bulk (nothing is compared then, and the insert takes their values without a copy).
        rows: Vec<Prepared>,
        /// How many valid rows the insert holds.
        count: u64,
        /// The insert of the valid rows, built on the reading thread so the writer only
        /// executes it.
        insert: Option<sea_orm::Statement>,
        rejected: Vec<RejectedRow>,
    },
}

#[derive(Debug)]
enum ReadFailure {
    Source(SourceError),
    MissingColumns(Vec<&'static str>),
    Empty,
}

/// Column positions of the fields in this file's header.
#[derive(Clone, Copy)]
struct Columns([Option<usize>; 16]);

impl Columns {
    fn get<'a>(&self, row: &'a RawRow, field: usize) -> &'a str {
        self.0[field]
            .and_then(|i| row.values.get(i))
            .map(String::as_str)
            .unwrap_or("")
    }
}

const F_NAME: usize = 0;
const F_ID: usize = 1;
const F_VILLAGE: usize = 2;
const F_PHONE: usize = 3;
const F_RELATIVE_NAME: usize = 4;
const F_RELATIVE_PHONE: usize = 5;
const F_RELATIVE_RELATION: usize = 6;
const F_MIGRANT: usize = 7;
const F_ADDRESS: usize = 8;
const F_PERMIT: usize = 9;
const F_SPECIAL: usize = 10;
const F_WECHAT: usize = 11;
const F_EMAIL: usize = 12;
const F_LANGUAGE: usize = 13;
const F_SEX: usize = 14;
const F_BIRTH: usize = 15;

/// Validates and protects rows on the reading thread.
struct Validator {
    privacy: Arc<Privacy>,
    actor_scope: crate::auth::Scope,
    villages: Arc<HashMap<String, String>>,
    today: NaiveDate,
    columns: Columns,
    seen: HashSet<u64>,
}

/// A value as repeated in a reason: cut, since the row's values follow anyway.
fn shown(raw: &str) -> String {
    if raw.chars().count() > REASON_VALUE_CHARS {
        let mut cut: String = raw.chars().take(REASON_VALUE_CHARS).collect();
        cut.push('…');
        cut
    } else {
        raw.to_owned()
    }
}

fn allowed<T: Copy>(all: &[T], label: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|v| label(*v)).collect::<Vec<_>>().join("、")
}

/// 性别 as registers write it.
fn parse_sex(raw: &str) -> Option<Sex> {
    match raw.trim().to_lowercase().as_str() {
        "男" | "m" | "male" | "1" => Some(Sex::Male),
        "女" | "f" | "female" | "2" => Some(Sex::Female),
        _ => None,
    }
}

fn reject(row: &RawRow, code: &str, reason: impl Into<String>) -> RejectedRow {
    RejectedRow {
        line: row.line,
        values: row.values.clone(),
        code: code.to_owned(),
        reason: reason.into(),
    }
}

fn optional_text(value: &str, max: usize) -> Result<Option<String>, ()> {
    if value.is_empty() {
        Ok(None)
    } else if value.chars().count() > max || value.chars().any(char::is_control) {
        Err(())
    } else {
        Ok(Some(value.to_owned()))
    }
}

impl Validator {
    /// Takes the row so a valid one keeps its values (for a refusal found later, when the
    /// registry is compared) without copying them.
    fn prepare(&mut self, raw: RawRow) -> Result<Prepared, RejectedRow> {
        let row = &raw;
        // PostgreSQL cannot store U+0000 (an XLSX cell can carry one as `_x0000_`).
        if let Some(reason) = raw.values.iter().find_map(|v| crate::text::nul_in_cell(v)) {
            return Err(reject(row, "invalid_text", reason));
        }
        let c = self.columns;
        let name = c.get(row, F_NAME);
        if name.is_empty() {
            return Err(reject(row, "missing_name", "姓名不能为空"));
        }
        let Ok(Some(name)) = optional_text(name, 50) else {
            return Err(reject(row, "invalid_name", "姓名过长或含有非法字符"));
        };
        let name = super::fields::canonical_name(&name);
        if c.0[F_ID]
            .and_then(|i| row.numeric.get(i).copied())
            .unwrap_or(false)
        {
            return Err(reject(
                row,
                "id_as_number",
                "身份证号被 Excel 存成了数字（末几位已丢失），请把该列设为文本后重新录入",
            ));
        }
        let id = ResidentId::parse(c.get(row, F_ID), self.today)
            .map_err(|e| reject(row, e.code(), e.to_string()))?;
        match c.get(row, F_SEX) {
            "" => {}
            raw => match parse_sex(raw) {
                None => {
                    return Err(reject(
                        row,
                        "invalid_sex",
                        format!("无法识别的性别：{}（可填 男、女）", shown(raw)),
                    ));
                }
                Some(sex) if sex != id.sex() => {
                    return Err(reject(
                        row,
                        "sex_mismatch",
                        "性别与身份证号不符（身份证号第 17 位奇数为男、偶数为女）",
                    ));
                }
                Some(_) => {}
            },
        }
        match c.get(row, F_BIRTH) {
            "" => {}
            raw => match parse_date(raw) {
                None => {
                    return Err(reject(
                        row,
                        "invalid_birth_date",
                        format!(
                            "无法识别的出生日期：{}（可填 YYYY-MM-DD、YYYY/MM/DD 或 YYYYMMDD）",
                            shown(raw)
                        ),
                    ));
                }
                Some(date) if date != id.birth_date() => {
                    return Err(reject(
                        row,
                        "birth_date_mismatch",
                        format!(
                            "出生日期 {date} 与身份证号中的出生日期 {} 不符",
                            id.birth_date()
                        ),
                    ));
                }
                Some(_) => {}
            },
        }

        let raw_village = c.get(row, F_VILLAGE);
        let village = AreaCode::parse(raw_village)
            .map_err(|e| reject(row, "invalid_village_code", e.to_string()))?;
        if !self.villages.contains_key(village.as_str()) {
            return Err(reject(
                row,
                "unknown_village",
                format!("户籍地区划代码 {village} 不是已登记的村（社区），请先导入区划"),
            ));
        }
        if !self.actor_scope.contains(&village) {
            return Err(reject(
                row,
                "out_of_scope",
                format!("村（社区）{village} 不在您的管辖范围内"),
            ));
        }

        let phone = match c.get(row, F_PHONE) {
            "" => None,
            raw => Some(
                MobilePhone::parse(raw)
                    .ok_or_else(|| reject(row, "invalid_phone", "联系电话应为 11 位手机号"))?,
            ),
        };
        let relative_phone = match c.get(row, F_RELATIVE_PHONE) {
            "" => None,
            raw => Some(MobilePhone::parse(raw).ok_or_else(|| {
                reject(row, "invalid_relative_phone", "亲属电话应为 11 位手机号")
            })?),
        };
        let relative_name = optional_text(c.get(row, F_RELATIVE_NAME), 50)
            .map_err(|_| reject(row, "invalid_relative_name", "亲属姓名过长或含有非法字符"))?;
        let relative_relation =
            optional_text(c.get(row, F_RELATIVE_RELATION), 20).map_err(|_| {
                reject(
                    row,
                    "invalid_relative_relation",
                    "亲属关系过长或含有非法字符",
                )
            })?;
        let migrant_type = match c.get(row, F_MIGRANT) {
            "" => None,
            raw => Some(MigrantType::parse(raw).ok_or_else(|| {
                reject(
                    row,
                    "invalid_migrant_type",
                    format!(
                        "未知的流动类型：{}（可选：{}）",
                        shown(raw),
                        allowed(MigrantType::ALL, MigrantType::label)
                    ),
                )
            })?),
        };
        let permit_since = match c.get(row, F_PERMIT) {
            "" => None,
            raw => Some(
                parse_date(raw)
                    .filter(|d| *d <= self.today)
                    .ok_or_else(|| {
                        reject(
                            row,
                            "invalid_permit_since",
                            "居住证起始日期应为不晚于今天的 YYYY-MM-DD",
                        )
                    })?,
            ),
        };
        let special = match c.get(row, F_SPECIAL) {
            "" => None,
            raw => Some(Special::parse(raw).ok_or_else(|| {
                reject(
                    row,
                    "invalid_special",
                    format!(
                        "未知的特殊情况：{}（可选：{}）",
                        shown(raw),
                        allowed(Special::ALL, Special::label)
                    ),
                )
            })?),
        };
        let language = match c.get(row, F_LANGUAGE) {
            "" => None,
            raw => Some(Language::parse(raw).ok_or_else(|| {
                reject(
                    row,
                    "invalid_language",
                    format!("未知的语言：{}（可选 zh、ug、kk）", shown(raw)),
                )
            })?),
        };
        let current_address = optional_text(c.get(row, F_ADDRESS), 200)
            .map_err(|_| reject(row, "invalid_address", "现居住地过长或含有非法字符"))?;
        let wechat_openid = match c.get(row, F_WECHAT) {
            "" => None,
            raw if valid_openid(raw) => Some(raw.to_owned()),
            _ => {
                return Err(reject(
                    row,
                    "invalid_wechat_openid",
                    "微信 openid 格式不正确",
                ));
            }
        };
        let email = match c.get(row, F_EMAIL) {
            "" => None,
            raw if valid_email(raw) => Some(raw.to_lowercase()),
            _ => return Err(reject(row, "invalid_email", "电子邮箱格式不正确")),
        };

        let id_index = self.privacy.blind_index(Field::ResidentId, id.expose());
        let short = u64::from_le_bytes(id_index[..8].try_into().expect("16-byte index"));
        if !self.seen.insert(short) {
            return Err(reject(
                row,
                "duplicate_in_file",
                "该身份证号在文件中重复出现",
            ));
        }
        Ok(Prepared {
            line: raw.line,
            values: raw.values,
            id_cipher: self.privacy.encrypt(Field::ResidentId, id.expose()),
            id_masked: id.masked(),
            id_index,
            name,
            sex: id.sex().code(),
            birth_date: id.birth_date(),
            village_code: village.as_str().to_owned(),
            language,
            migrant_type,
            permit_since,
            special,
            current_address,
            phone: phone.map(|p| ProtectedPhone::new(&self.privacy, &p)),
            relative_name,
            relative_relation,
            relative_phone: relative_phone.map(|p| ProtectedPhone::new(&self.privacy, &p)),
            wechat_openid,
            email,
        })
    }
}

pub fn valid_openid(raw: &str) -> bool {
    (6..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn valid_email(raw: &str) -> bool {
    let Some((local, domain)) = raw.split_once('@') else {
        return false;
    };
    raw.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

/// Where rejected rows go: the first ones into memory, all of them into the rejected file
/// when one was asked for (opened at the first rejected row).
struct RejectSink {
    kept: Vec<RejectedRow>,
    total: u64,
    target: Option<PathBuf>,
    file: Option<RejectedFile>,
    header: Vec<String>,
    sensitive: Vec<usize>,
}

impl RejectSink {
    fn push(&mut self, row: RejectedRow) -> AppResult<()> {
        let io =
            |e: std::io::Error| AppError::from(anyhow::anyhow!("writing the rejected rows: {e}"));
        self.total += 1;
        if let Some(target) = &self.target {
            if self.file.is_none() {
                self.file = Some(RejectedFile::create(target, &self.header).map_err(io)?);
            }
            self.file
                .as_mut()
                .expect("opened above")
                .push(&row)
                .map_err(io)?;
        }
        if self.kept.len() < REJECTS_KEPT {
            self.kept.push(row);
        }
        Ok(())
    }

    /// Publishes the rejected file, or removes a stale one from an earlier run.
    fn commit(&mut self) -> std::io::Result<Option<PathBuf>> {
        match (self.file.take(), &self.target) {
            (Some(file), _) => file.finish().map(Some),
            (None, Some(target)) => {
                let _ = std::fs::remove_file(target);
                Ok(None)
            }
            (None, None) => Ok(None),
        }
    }

    fn abandon(&mut self) {
        if let Some(file) = self.file.take() {
            file.abandon();
        }
    }
}

/// An import under way: a blocking thread reads, checks and encrypts the file's rows and
/// hands them over in batches; [`ImportRun::write`] writes them into the transaction the
/// caller gives. [`ImportRun::start`] begins it; [`ImportRun::finish`] ends it, whether the
/// write succeeded or not.
pub struct ImportRun {
    reader: tokio::task::JoinHandle<()>,
    receiver: tokio::sync::mpsc::Receiver<Result<Message, ReadFailure>>,
    sink: RejectSink,
    villages: Arc<HashMap<String, String>>,
    now: chrono::DateTime<Utc>,
    /// Set once the writer loads in bulk; the reading thread then keeps no rows.
    bulk: Arc<AtomicBool>,
    summary: ImportSummary,
    unknown_columns: Vec<String>,
}

impl ImportRun {
    /// Starts reading `path` for `actor` on a blocking thread. With `rejected_file`, every
    /// rejected row is written there.
    pub async fn start(
        db: &impl sea_orm::ConnectionTrait,
        privacy: Arc<Privacy>,
        actor: &Actor,
        path: &Path,
        rejected_file: Option<PathBuf>,
        progress: Progress,
    ) -> AppResult<Self> {
        let villages = Arc::new(super::village_names(db).await?);
        // Microseconds: what PostgreSQL keeps, so the stamp compares equal after a round trip.
        let now = Utc::now();
        let now =
            now - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1000));
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Message, ReadFailure>>(4);
        let bulk = Arc::new(AtomicBool::new(false));
        let job = Reading {
            path: path.to_owned(),
            privacy,
            scope: actor.scope.clone(),
            villages: villages.clone(),
            today: crate::time::today(),
            progress,
            backend: db.get_database_backend(),
            now,
            bulk: bulk.clone(),
        };
        let reader = tokio::task::spawn_blocking(move || read_and_prepare(job, sender));
        Ok(Self {
            reader,
            receiver,
            sink: RejectSink {
                kept: Vec::new(),
                total: 0,
                target: rejected_file,
                file: None,
                header: Vec::new(),
                sensitive: Vec::new(),
            },
            villages,
            now,
            bulk,
            summary: ImportSummary::default(),
            unknown_columns: Vec::new(),
        })
    }

    /// Writes every batch the reading thread hands over into `txn`: new residents inserted
    /// (in bulk, without the indexes, into an empty registry), changed ones updated and
    /// audited, rows registered in another village rejected. A file that turns out unusable
    /// is an error; the caller rolls back. Returns the rows written (inserted or updated).
    pub async fn write(
        &mut self,
        txn: &impl sea_orm::ConnectionTrait,
        actor: &Actor,
    ) -> AppResult<u64> {
        let mut indexes = Indexes::at_start(txn).await?;
        while let Some(message) = self.receiver.recv().await {
            match message.map_err(failure_error)? {
                Message::Header {
                    header,
                    unknown,
                    sensitive,
                } => {
                    self.sink.header = header;
                    self.unknown_columns = unknown;
                    self.sink.sensitive = sensitive;
                }
                Message::Batch {
                    rows,
                    count,
                    insert,
                    rejected,
                } => {
                    for row in rejected {
                        self.sink
                            .push(row)
                            .map_err(|e| anyhow::anyhow!("writing the rejected rows: {e}"))?;
                    }
                    if matches!(indexes, Indexes::EmptyAtStart)
                        && self.summary.imported >= BULK_AFTER
                    {
                        indexes = Indexes::drop_for_bulk(txn, self.summary.imported).await?;
                        self.bulk
                            .store(matches!(indexes, Indexes::Dropped(_)), Ordering::Release);
                    }
                    let bad = match &indexes {
                        Indexes::Dropped(_) => {
                            write_bulk(txn, count, insert, &mut self.summary).await?;
                            Vec::new()
                        }
                        _ => {
                            write_batch(
                                txn,
                                actor,
                                &self.villages,
                                rows,
                                insert,
                                self.now,
                                &mut self.summary,
                            )
                            .await?
                        }
                    };
                    for row in bad {
                        self.sink
                            .push(row)
                            .map_err(|e| anyhow::anyhow!("writing the rejected rows: {e}"))?;
                    }
                }
            }
        }
        indexes.restore(txn).await?;
        Ok(self.summary.imported + self.summary.updated)
    }

    /// Audits a written import (in its transaction, when it wrote anything).
    pub async fn record(
        &self,
        txn: &impl sea_orm::ConnectionTrait,
        actor: &Actor,
    ) -> AppResult<()> {
        audit::record(
            txn,
            actor,
            AuditEvent {
                action: "resident.import",
                entity: "resident",
                entity_id: None,
                area_code: actor.scope.area().cloned(),
                summary: json!({
                    "imported": self.summary.imported,
                    "updated": self.summary.updated,
                    "unchanged": self.summary.unchanged,
                    "rejected": self.sink.total,
                }),
            },
        )
        .await?;
        Ok(())
    }

    /// What has been written so far (all of it once [`ImportRun::write`] returned).
    pub fn summary(&self) -> &ImportSummary {
        &self.summary
    }

    /// Ends the import after `written` (the outcome of writing and committing): stops and
    /// waits for the reading thread, then publishes the rejected file — or, on an error,
    /// drops it and returns the error.
    pub async fn finish(mut self, written: AppResult<()>) -> AppResult<ResidentImport> {
        drop(self.receiver);
        let _ = self.reader.await;
        match written {
            Ok(()) => {
                let mut summary = self.summary;
                summary.rejected = self.sink.total;
                let rejected_file = self
                    .sink
                    .commit()
                    .map_err(|e| anyhow::anyhow!("writing the rejected rows: {e}"))?;
                Ok(ResidentImport {
                    summary,
                    unknown_columns: self.unknown_columns,
                    header: std::mem::take(&mut self.sink.header),
                    rejected_rows: std::mem::take(&mut self.sink.kept),
                    rejected_file,
                    sensitive_columns: std::mem::take(&mut self.sink.sensitive),
                })
            }
            Err(e) => {
                self.sink.abandon();
                Err(e)
            }
        }
    }
}

/// What the reading thread needs.
struct Reading {
    path: PathBuf,
    privacy: Arc<Privacy>,
    scope: crate::auth::Scope,
    villages: Arc<HashMap<String, String>>,
    today: NaiveDate,
    progress: Progress,
    backend: sea_orm::DbBackend,
    now: chrono::DateTime<Utc>,
    /// Set by the writer once it loads in bulk (see [`Indexes::drop_for_bulk`]).
    bulk: Arc<AtomicBool>,
}

fn read_and_prepare(job: Reading, sender: tokio::sync::mpsc::Sender<Result<Message, ReadFailure>>) {
    let Reading {
        path,
        privacy,
        scope,
        villages,
        today,
        progress,
        backend,
        now,
        bulk,
    } = job;
    let batch = |rows: Vec<Prepared>, rejected: Vec<RejectedRow>| {
        let count = rows.len() as u64;
        if count == 0 {
            return Message::Batch {
                rows,
                count,
                insert: None,
                rejected,
            };
        }
        let (rows, insert) = if bulk.load(Ordering::Acquire) {
            (Vec::new(), insert_statement(backend, rows, now))
        } else {
            (rows.clone(), insert_statement(backend, rows, now))
        };
        Message::Batch {
            rows,
            count,
            insert: Some(insert),
            rejected,
        }
    };
    let path = path.as_path();
    let counter = BytesRead::default();
    let total_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let auto = matches!(progress, Progress::Auto);
    let report = match &progress {
        Progress::Report(report) => Some(report.clone()),
        _ => None,
    };
    let tell = |rows: u64, finished: bool| {
        if let Some(report) = &report {
            report(ReadProgress {
                rows,
                bytes: if finished {
                    total_bytes
                } else {
                    counter.get().min(total_bytes)
                },
                total_bytes,
                finished,
            });
        }
    };
    let bar = (auto && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(total_bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .expect("static template"),
        );
        bar
    });
    let lines = auto && bar.is_none();

    let mut validator: Option<Validator> = None;
    let mut rows = Vec::with_capacity(BATCH);
    let mut rejected = Vec::new();
    let mut count = 0u64;
    let mut stopped = false;
    let mut failure: Option<ReadFailure> = None;
    let outcome = read_rows(path, &counter, |row| {
        let Some(validator) = validator.as_mut() else {
            let header = csv::StringRecord::from(row.values.clone());
            let (found, unknown) = map_headers(
                &header,
                [
                    NAME,
                    ID_NUMBER,
                    VILLAGE,
                    PHONE,
                    RELATIVE_NAME,
                    RELATIVE_PHONE,
                    RELATIVE_RELATION,
                    MIGRANT_TYPE,
                    CURRENT_ADDRESS,
                    PERMIT_SINCE,
                    SPECIAL,
                    WECHAT,
                    EMAIL,
                    LANGUAGE,
                    SEX,
                    BIRTH_DATE,
                ],
            );
            let missing: Vec<&'static str> = [
                (F_NAME, "姓名"),
                (F_ID, "身份证号"),
                (F_VILLAGE, "户籍地区划代码"),
            ]
            .into_iter()
            .filter(|(field, _)| found[*field].is_none())
            .map(|(_, label)| label)
            .collect();
            if !missing.is_empty() {
                failure = Some(ReadFailure::MissingColumns(missing));
                return false;
            }
            if sender
                .blocking_send(Ok(Message::Header {
                    header: row.values,
                    unknown,
                    sensitive: [F_ID, F_PHONE, F_RELATIVE_PHONE]
                        .iter()
                        .map(|f| found[*f].unwrap_or(usize::MAX))
                        .collect(),
                }))
                .is_err()
            {
                stopped = true;
                return false;
            }
            validator = Some(Validator {
                privacy: privacy.clone(),
                actor_scope: scope.clone(),
                villages: villages.clone(),
                today,
                columns: Columns(found),
                seen: HashSet::new(),
            });
            return true;
        };
        count += 1;
        match validator.prepare(row) {
            Ok(prepared) => rows.push(prepared),
            Err(bad) => rejected.push(bad),
        }
        if rows.len() + rejected.len() >= BATCH {
            let mut rows = std::mem::replace(&mut rows, Vec::with_capacity(BATCH));
            // In village order the village index is written page by page, not at random.
            rows.sort_unstable_by(|a, b| a.village_code.cmp(&b.village_code));
            let batch = batch(rows, std::mem::take(&mut rejected));
            if sender.blocking_send(Ok(batch)).is_err() {
                stopped = true;
                return false;
            }
            tell(count, false);
        }
        if count.is_multiple_of(10_000) {
            if let Some(bar) = &bar {
                bar.set_position(counter.get());
                bar.set_message(format!("{count} 行"));
            } else if lines && count.is_multiple_of(100_000) {
                let percent = counter.get() as f64 * 100.0 / total_bytes.max(1) as f64;
                eprintln!("已读取 {count} 行 read {count} rows ({percent:.0}%)");
            }
        }
        true
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if stopped {
        return;
    }
    let message = match (outcome, failure) {
        (Err(e), _) => Err(ReadFailure::Source(e)),
        (Ok(()), Some(f)) => Err(f),
        (Ok(()), None) if validator.is_none() || count == 0 => Err(ReadFailure::Empty),
        (Ok(()), None) => Ok(batch(rows, rejected)),
    };
    if lines && count >= 100_000 {
        eprintln!("已读取 {count} 行 read {count} rows (100%)");
    }
    if message.is_ok() {
        tell(count, true);
    }
    let _ = sender.blocking_send(message);
}

fn failure_error(failure: ReadFailure) -> AppError {
    match failure {
        ReadFailure::Source(SourceError::Limit(e))
            if !matches!(e, crate::import::workbook::LimitError::Corrupt(_)) =>
        {
            AppError::validation("file_limit_exceeded", e.to_string())
        }
        ReadFailure::Source(e) => AppError::validation("unreadable_file", e.to_string()),
        ReadFailure::MissingColumns(missing) => AppError::validation(
            "missing_columns",
            format!("表头缺少必需的列：{}", missing.join("、")),
        ),
        ReadFailure::Empty => AppError::validation("no_rows", "文件没有数据行"),
    }
}

/// The registry's secondary indexes during an import. Inserting a million rows into four
/// B-trees keyed on random values (the ID's blind index, the village, two phone indexes) is
/// what bounds a large first import; building them once at the end sorts instead.
enum Indexes {
    /// The registry held residents when the import began: every row goes through the indexes.
    Kept,
    /// The registry was empty when the import began; a large import drops the indexes.
    EmptyAtStart,
    /// Dropped inside the import's transaction (with PostgreSQL's foreign keys); these
    /// statements build them again before it commits (DDL is transactional on SQLite and
    /// PostgreSQL, so a failure restores them).
    Dropped(Vec<String>),
}

impl Indexes {
    async fn at_start(txn: &impl sea_orm::ConnectionTrait) -> AppResult<Self> {
        let any = residents::Entity::find()
            .select_only()
            .column(residents::Column::Id)
            .limit(1)
            .into_tuple::<i32>()
            .one(txn)
            .await?;
        Ok(if any.is_none() {
            Self::EmptyAtStart
        } else {
            Self::Kept
        })
    }

    /// Drops the indexes once `written` rows of this import are in, provided they are still
    /// the only rows: then every row of the file is new (the reading thread already refuses
    /// IDs repeated in the file), so nothing needs the unique index to be told apart, and the
    /// unique index built at the end still guards it.
    ///
    /// On PostgreSQL the registry's foreign keys go too (the household village's: a lookup
    /// in `areas` a row, two-fifths of the insert's time — 17.3 → 10.5 s for a million rows)
    /// and are added back at the end, checked in one pass; the reading thread already refuses
    /// villages that are not registered. SQLite cannot drop a foreign key without rebuilding
    /// the table and keeps checking it row by row.
    ///
    /// On PostgreSQL this holds exclusive locks on `residents` and — dropping the foreign key —
    /// on `areas` until the import commits (about 13 s for a million rows on the machine of
    /// BENCHMARKS.md). The registry is empty, so nobody is kept from residents they could have
    /// seen, but every request that reads either table waits for the commit: resident pages
    /// and reports, and through the area tree the signed-in user's own details (`/me` of an
    /// area-bound user), user and institution management, the area list. Each waiting request
    /// holds a pool connection. A county's first import is a setting-up step; run it before
    /// the cadres start work.
    async fn drop_for_bulk(txn: &impl sea_orm::ConnectionTrait, written: u64) -> AppResult<Self> {
        use sea_orm::{DbBackend, Statement};
        let backend = txn.get_database_backend();
        if backend == DbBackend::Postgres {
            txn.execute_unprepared("LOCK TABLE residents IN ACCESS EXCLUSIVE MODE")
                .await?;
        }
        if residents::Entity::find().count(txn).await? != written {
            // Someone else registered residents meanwhile (PostgreSQL): keep the indexes.
            return Ok(Self::Kept);
        }
        let definitions = match backend {
            DbBackend::Postgres => {
                "SELECT c.relname AS name, pg_get_indexdef(c.oid) AS definition \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE i.indrelid = 'residents'::regclass AND NOT i.indisprimary \
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)"
            }
            _ => {
                "SELECT name, sql AS definition FROM sqlite_master \
                 WHERE type = 'index' AND tbl_name = 'residents' AND sql IS NOT NULL"
            }
        };
        let mut create = Vec::new();
        for Definition { name, definition } in
            Definition::find_by_statement(Statement::from_string(backend, definitions))
                .all(txn)
                .await?
        {
            create.push(definition);
            txn.execute_unprepared(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))
                .await?;
        }
        let indexes = create.len();
        if backend == DbBackend::Postgres {
            let foreign_keys = "SELECT conname AS name, pg_get_constraintdef(oid) AS definition \
                 FROM pg_constraint WHERE conrelid = 'residents'::regclass AND contype = 'f'";
            for Definition { name, definition } in
                Definition::find_by_statement(Statement::from_string(backend, foreign_keys))
                    .all(txn)
                    .await?
            {
                let name = format!("\"{}\"", name.replace('"', "\"\""));
                txn.execute_unprepared(&format!("ALTER TABLE residents DROP CONSTRAINT {name}"))
                    .await?;
                create.push(format!(
                    "ALTER TABLE residents ADD CONSTRAINT {name} {definition}"
                ));
            }
        }
        tracing::info!(
            indexes,
            foreign_keys = create.len() - indexes,
            written,
            "loading the registry in bulk"
        );
        Ok(Self::Dropped(create))
    }

    async fn restore(self, txn: &impl sea_orm::ConnectionTrait) -> AppResult<()> {
        if let Self::Dropped(create) = self {
            for sql in create {
                txn.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }
}

/// A batch of an import loaded in bulk: every row is new (see [`Indexes::drop_for_bulk`]).
async fn write_bulk(
    txn: &impl sea_orm::ConnectionTrait,
    count: u64,
    insert: Option<sea_orm::Statement>,
    summary: &mut ImportSummary,
) -> AppResult<()> {
    let Some(insert) = insert else {
        return Ok(());
    };
    let inserted = txn.execute_raw(insert).await?.rows_affected();
    if inserted != count {
        return Err(
            anyhow::anyhow!("{inserted} of {count} residents inserted in a bulk batch").into(),
        );
    }
    summary.imported += inserted;
    Ok(())
}

/// Inserts new residents, updates changed ones, counts unchanged ones; returns rows that turn
/// out to be registered in another village.
async fn write_batch(
    txn: &impl sea_orm::ConnectionTrait,
    actor: &Actor,
    villages: &HashMap<String, String>,
    rows: Vec<Prepared>,
    insert: Option<sea_orm::Statement>,
    now: chrono::DateTime<Utc>,
    summary: &mut ImportSummary,
) -> AppResult<Vec<RejectedRow>> {
    let Some(mut insert) = insert else {
        return Ok(Vec::new());
    };
    debug_assert!(
        !rows.is_empty(),
        "rows are kept until the import loads in bulk"
    );
    insert.sql.push_str(" ON CONFLICT (id_index) DO NOTHING");
    // Insert what is new in one statement. Only when some rows were already registered are
    // the batch's rows looked up: those stamped with this run's time are the ones just
    // inserted, the others are compared (none of this happens on a first import).
    let batch_len = rows.len() as u64;
    let inserted = txn.execute_raw(insert).await?.rows_affected();
    summary.imported += inserted;
    if inserted == batch_len {
        return Ok(Vec::new());
    }
    let existing: HashMap<Vec<u8>, residents::Model> = residents::Entity::find()
        .filter(residents::Column::IdIndex.is_in(rows.iter().map(|r| r.id_index.clone())))
        .all(txn)
        .await?
        .into_iter()
        .map(|m| (m.id_index.clone(), m))
        .collect();
    let rows: Vec<Prepared> = rows
        .into_iter()
        .filter(|r| {
            existing
                .get(&r.id_index)
                .is_none_or(|m| m.created_at != now)
        })
        .collect();
    let mut rejected = Vec::new();
    for row in rows {
        let Some(current) = existing.get(&row.id_index) else {
            // Neither inserted nor found: the database refused the row for another reason.
            return Err(anyhow::anyhow!(
                "resident on line {} was neither inserted nor found",
                row.line
            )
            .into());
        };
        if current.village_code != row.village_code {
            let other = villages
                .get(&current.village_code)
                .map_or(current.village_code.clone(), |name| {
                    format!("{name}（{}）", current.village_code)
                });
            rejected.push(RejectedRow {
                line: row.line,
                values: row.values,
                code: "registered_elsewhere".to_owned(),
                reason: format!("该居民已在{other}登记，迁户请使用“迁移户籍”操作"),
            });
            continue;
        }
        let (changes, model) = diff(current, &row);
        if changes.is_empty() {
            summary.unchanged += 1;
            continue;
        }
        let mut model = model;
        model.updated_at = Set(now);
        residents::Entity::update(model).exec(txn).await?;
        audit::record(
            txn,
            actor,
            AuditEvent {
                action: "resident.import_update",
                entity: "resident",
                entity_id: Some(current.id.to_string()),
                area_code: AreaCode::parse(&current.village_code).ok(),
                summary: serde_json::Value::Object(changes),
            },
        )
        .await?;
        summary.updated += 1;
    }
    Ok(rejected)
}

const INSERT_COLUMNS: [&str; 24] = [
    "id_index",
    "id_cipher",
    "id_masked",
    "name",
    "sex",
    "birth_date",
    "village_code",
    "language",
    "migrant_type",
    "permit_since",
    "special",
    "current_address",
    "phone_cipher",
    "phone_index",
    "phone_masked",
    "relative_name",
    "relative_relation",
    "relative_phone_cipher",
    "relative_phone_index",
    "relative_phone_masked",
    "wechat_openid",
    "email",
    "created_at",
    "updated_at",
];

/// One insert for a batch (the writer adds the clause that skips IDs already registered
/// unless the import loads in bulk).
/// Built by hand on this hot path: the values go straight into the statement instead of
/// through an ActiveModel each, which was most of the cost of a large import (see
/// BENCHMARKS.md). The opt-out flags take their column defaults.
fn insert_statement(
    backend: sea_orm::DbBackend,
    rows: Vec<Prepared>,
    now: chrono::DateTime<Utc>,
) -> sea_orm::Statement {
    match backend {
        sea_orm::DbBackend::Postgres => insert_unnest(rows, now),
        _ => insert_values(backend, rows, now),
    }
}

/// SQLite: a multi-row `VALUES` list, 22 values bound a row, moved out of the rows. The two
/// timestamps (the import's time, the same for every row) are written into the statement as
/// the text sqlx would bind, instead of formatting and binding two values a row. Numbered
/// parameters cannot share them: SQLite looks those up linearly. Dates are bound as the text
/// sqlx would write (`YYYY-MM-DD`), formatted here rather than on the writer.
fn insert_values(
    backend: sea_orm::DbBackend,
    rows: Vec<Prepared>,
    now: chrono::DateTime<Utc>,
) -> sea_orm::Statement {
    use sea_orm::Value;
    let bound = INSERT_COLUMNS.len() - 2;
    let now = format!(
        "'{}'",
        now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
    );
    let mut placeholders = vec!["?"; bound];
    placeholders.extend([now.as_str(), now.as_str()]);
    let tuple = format!("({})", placeholders.join(", "));
    let mut sql = String::with_capacity(64 + rows.len() * (tuple.len() + 2));
    sql.push_str("INSERT INTO residents (");
    sql.push_str(&INSERT_COLUMNS.join(", "));
    sql.push_str(") VALUES ");
    let mut values: Vec<Value> = Vec::with_capacity(rows.len() * bound);
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&tuple);
        let (phone_cipher, phone_index, phone_masked) = ProtectedPhone::split(row.phone);
        let (relative_cipher, relative_index, relative_masked) =
            ProtectedPhone::split(row.relative_phone);
        values.extend([
            Value::from(row.id_index),
            Value::from(row.id_cipher),
            Value::from(row.id_masked),
            Value::from(row.name),
            Value::from(row.sex),
            Value::from(row.birth_date.to_string()),
            Value::from(row.village_code),
            Value::from(row.language.unwrap_or(Language::Zh).code()),
            Value::from(row.migrant_type.unwrap_or(MigrantType::Local).code()),
            Value::from(row.permit_since.map(|d| d.to_string())),
            Value::from(row.special.map(Special::code)),
            Value::from(row.current_address),
            Value::from(phone_cipher),
            Value::from(phone_index),
            Value::from(phone_masked),
            Value::from(row.relative_name),
            Value::from(row.relative_relation),
            Value::from(relative_cipher),
            Value::from(relative_index),
            Value::from(relative_masked),
            Value::from(row.wechat_openid),
            Value::from(row.email),
        ]);
    }
    sea_orm::Statement::from_sql_and_values(backend, sql, values)
}

/// PostgreSQL: one array a column, unpacked by `unnest`. 23 parameters a batch instead of
/// 24 a row, and one statement text for every batch: the server no longer builds and
/// evaluates a thousand-row `VALUES` list (a million rows: 52,000 → 58,000 rows/s, see
/// BENCHMARKS.md). The arrays cannot carry NULL (sea-query binds them as vectors of plain
/// values), so an absent value travels as an empty text or blob and `NULLIF` restores it —
/// no validated value is ever empty (blank fields are absent, ciphers and indexes never
/// empty).
const PG_INSERT: &str = "INSERT INTO residents (id_index, id_cipher, id_masked, name, sex, \
     birth_date, village_code, language, migrant_type, permit_since, special, current_address, \
     phone_cipher, phone_index, phone_masked, relative_name, relative_relation, \
     relative_phone_cipher, relative_phone_index, relative_phone_masked, wechat_openid, email, \
     created_at, updated_at) \
     SELECT id_index, id_cipher, id_masked, name, sex, birth_date, village_code, language, \
     migrant_type, NULLIF(permit_since, '')::date, NULLIF(special, ''), \
     NULLIF(current_address, ''), NULLIF(phone_cipher, ''::bytea), \
     NULLIF(phone_index, ''::bytea), NULLIF(phone_masked, ''), NULLIF(relative_name, ''), \
     NULLIF(relative_relation, ''), NULLIF(relative_phone_cipher, ''::bytea), \
     NULLIF(relative_phone_index, ''::bytea), NULLIF(relative_phone_masked, ''), \
     NULLIF(wechat_openid, ''), NULLIF(email, ''), $23::timestamptz, $23::timestamptz \
     FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::date[], \
     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], \
     $14::bytea[], $15::text[], $16::text[], $17::text[], $18::bytea[], $19::bytea[], \
     $20::text[], $21::text[], $22::text[]) \
     AS r(id_index, id_cipher, id_masked, name, sex, birth_date, village_code, language, \
     migrant_type, permit_since, special, current_address, phone_cipher, phone_index, \
     phone_masked, relative_name, relative_relation, relative_phone_cipher, \
     relative_phone_index, relative_phone_masked, wechat_openid, email)";

fn insert_unnest(rows: Vec<Prepared>, now: chrono::DateTime<Utc>) -> sea_orm::Statement {
    use sea_orm::Value;
    /// The columns as arrays; absent values as empty texts and blobs (see [`PG_INSERT`]).
    #[derive(Default)]
    struct Arrays {
        id_index: Vec<Vec<u8>>,
        id_cipher: Vec<Vec<u8>>,
        id_masked: Vec<String>,
        name: Vec<String>,
        sex: Vec<String>,
        birth_date: Vec<NaiveDate>,
        village_code: Vec<String>,
        language: Vec<String>,
        migrant_type: Vec<String>,
        permit_since: Vec<String>,
        special: Vec<String>,
        current_address: Vec<String>,
        phone_cipher: Vec<Vec<u8>>,
        phone_index: Vec<Vec<u8>>,
        phone_masked: Vec<String>,
        relative_name: Vec<String>,
        relative_relation: Vec<String>,
        relative_phone_cipher: Vec<Vec<u8>>,
        relative_phone_index: Vec<Vec<u8>>,
        relative_phone_masked: Vec<String>,
        wechat_openid: Vec<String>,
        email: Vec<String>,
    }
    let mut a = Arrays::default();
    for row in rows {
        let (phone_cipher, phone_index, phone_masked) = ProtectedPhone::split(row.phone);
        let (relative_cipher, relative_index, relative_masked) =
            ProtectedPhone::split(row.relative_phone);
        a.id_index.push(row.id_index);
        a.id_cipher.push(row.id_cipher);
        a.id_masked.push(row.id_masked);
        a.name.push(row.name);
        a.sex.push(row.sex.to_owned());
        a.birth_date.push(row.birth_date);
        a.village_code.push(row.village_code);
        a.language
            .push(row.language.unwrap_or(Language::Zh).code().to_owned());
        a.migrant_type.push(
            row.migrant_type
                .unwrap_or(MigrantType::Local)
                .code()
                .to_owned(),
        );
        a.permit_since
            .push(row.permit_since.map(|d| d.to_string()).unwrap_or_default());
        a.special.push(
            row.special
                .map(Special::code)
                .unwrap_or_default()
                .to_owned(),
        );
        a.current_address
            .push(row.current_address.unwrap_or_default());
        a.phone_cipher.push(phone_cipher.unwrap_or_default());
        a.phone_index.push(phone_index.unwrap_or_default());
        a.phone_masked.push(phone_masked.unwrap_or_default());
        a.relative_name.push(row.relative_name.unwrap_or_default());
        a.relative_relation
            .push(row.relative_relation.unwrap_or_default());
        a.relative_phone_cipher
            .push(relative_cipher.unwrap_or_default());
        a.relative_phone_index
            .push(relative_index.unwrap_or_default());
        a.relative_phone_masked
            .push(relative_masked.unwrap_or_default());
        a.wechat_openid.push(row.wechat_openid.unwrap_or_default());
        a.email.push(row.email.unwrap_or_default());
    }
    let values = vec![
        Value::from(a.id_index),
        Value::from(a.id_cipher),
        Value::from(a.id_masked),
        Value::from(a.name),
        Value::from(a.sex),
        Value::from(a.birth_date),
        Value::from(a.village_code),
        Value::from(a.language),
        Value::from(a.migrant_type),
        Value::from(a.permit_since),
        Value::from(a.special),
        Value::from(a.current_address),
        Value::from(a.phone_cipher),
        Value::from(a.phone_index),
        Value::from(a.phone_masked),
        Value::from(a.relative_name),
        Value::from(a.relative_relation),
        Value::from(a.relative_phone_cipher),
        Value::from(a.relative_phone_index),
        Value::from(a.relative_phone_masked),
        Value::from(a.wechat_openid),
        Value::from(a.email),
        Value::from(now),
    ];
    sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, PG_INSERT, values)
}

/// The fields of `row` that differ from `current`, as an audit summary (phones by their
/// masked form only) and as an update touching just those columns.
fn diff(
    current: &residents::Model,
    row: &Prepared,
) -> (
    serde_json::Map<String, serde_json::Value>,
    residents::ActiveModel,
) {
    let mut changes = serde_json::Map::new();
    let mut model = residents::ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(current.id),
        ..Default::default()
    };
    let mut text = |name: &str, old: Option<&str>, new: Option<&str>| -> bool {
        match new {
            Some(new) if old != Some(new) => {
                changes.insert(name.to_owned(), json!({"from": old, "to": new}));
                true
            }
            _ => false,
        }
    };
    if text("name", Some(&current.name), Some(&row.name)) {
        model.name = Set(row.name.clone());
    }
    if text(
        "language",
        Some(&current.language),
        row.language.map(Language::code),
    ) {
        model.language = Set(row.language.expect("changed").code().to_owned());
    }
    if text(
        "migrant_type",
        Some(&current.migrant_type),
        row.migrant_type.map(MigrantType::code),
    ) {
        model.migrant_type = Set(row.migrant_type.expect("changed").code().to_owned());
    }
    let permit = row.permit_since.map(|d| d.to_string());
    if text(
        "permit_since",
        current.permit_since.map(|d| d.to_string()).as_deref(),
        permit.as_deref(),
    ) {
        model.permit_since = Set(row.permit_since);
    }
    if text(
        "special",
        current.special.as_deref(),
        row.special.map(Special::code),
    ) {
        model.special = Set(row.special.map(|s| s.code().to_owned()));
    }
    if text(
        "current_address",
        current.current_address.as_deref(),
        row.current_address.as_deref(),
    ) {
        model.current_address = Set(row.current_address.clone());
    }
    if text(
        "relative_name",
        current.relative_name.as_deref(),
        row.relative_name.as_deref(),
    ) {
        model.relative_name = Set(row.relative_name.clone());
    }
    if text(
        "relative_relation",
        current.relative_relation.as_deref(),
        row.relative_relation.as_deref(),
    ) {
        model.relative_relation = Set(row.relative_relation.clone());
    }
    if text(
        "wechat_openid",
        current.wechat_openid.as_deref(),
        row.wechat_openid.as_deref(),
    ) {
        model.wechat_openid = Set(row.wechat_openid.clone());
    }
    if text("email", current.email.as_deref(), row.email.as_deref()) {
        model.email = Set(row.email.clone());
    }
    if let Some(phone) = &row.phone
        && current.phone_index.as_deref() != Some(phone.index.as_slice())
    {
        changes.insert(
            "phone".into(),
            json!({"from": current.phone_masked, "to": phone.masked}),
        );
        model.phone_cipher = Set(Some(phone.cipher.clone()));
        model.phone_index = Set(Some(phone.index.clone()));
        model.phone_masked = Set(Some(phone.masked.clone()));
    }
    if let Some(phone) = &row.relative_phone
        && current.relative_phone_index.as_deref() != Some(phone.index.as_slice())
    {
        changes.insert(
            "relative_phone".into(),
            json!({"from": current.relative_phone_masked, "to": phone.masked}),
        );
        model.relative_phone_cipher = Set(Some(phone.cipher.clone()));
        model.relative_phone_index = Set(Some(phone.index.clone()));
        model.relative_phone_masked = Set(Some(phone.masked.clone()));
    }
    (changes, model)
}

/// An index or constraint of `residents` as the catalog states it, to drop and remake.
#[derive(FromQueryResult)]
struct Definition {
    name: String,
    definition: String,
}

#[cfg(test)]
mod tests {
    use super::{INSERT_COLUMNS, PG_INSERT};

    #[test]
    fn the_postgresql_insert_names_the_columns_in_the_order_of_the_sqlite_one() {
        let head = format!(
            "INSERT INTO residents ({}) SELECT ",
            INSERT_COLUMNS.join(", ")
        );
        assert!(PG_INSERT.starts_with(&head), "{PG_INSERT}");
        let alias = format!("AS r({})", INSERT_COLUMNS[..22].join(", "));
        assert!(PG_INSERT.ends_with(&alias), "{PG_INSERT}");
    }
}
