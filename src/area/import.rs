//! `outreach import areas FILE` and the upload endpoint: the area tree from a CSV of
//! 12-digit codes and names. Idempotent; bad rows are reported with reasons; all or nothing.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use entities::areas::{self, AreaLevel};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::json;

use super::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::error::{AppError, AppResult};
use crate::import::{CsvTable, ImportSummary, RejectedRow, map_headers};

const CODE_HEADERS: &[&str] = &["区划代码", "统计用区划代码", "code", "area_code"];
const NAME_HEADERS: &[&str] = &["名称", "区划名称", "name"];
const MAX_NAME_CHARS: usize = 100;
const BATCH: usize = 500;

/// The result of reading one area file.
#[derive(Debug, Clone)]
pub struct AreaImport {
    pub summary: ImportSummary,
    /// The header row as read, for writing the rejected rows back.
    pub headers: Vec<String>,
    pub rejected: Vec<RejectedRow>,
    pub unknown_columns: Vec<String>,
}

struct Candidate {
    line: u64,
    values: Vec<String>,
    code: AreaCode,
    name: String,
}

/// An area file read and checked row by row, before anything is written: what
/// [`import_areas`] takes.
pub struct AreaFile {
    /// Parents before children.
    candidates: Vec<Candidate>,
    rejected: Vec<RejectedRow>,
    headers: Vec<String>,
    unknown_columns: Vec<String>,
}

/// Reads `bytes` (a CSV file) for an import inside `actor`'s scope. The file as a whole is
/// unusable (error) when it is empty, not text, or lacks the code or name column; single bad
/// rows are rejected and the rest are taken.
pub fn read_areas(actor: &Actor, bytes: &[u8]) -> AppResult<AreaFile> {
    let table = CsvTable::read(bytes)?;
    let ([code_col, name_col], unknown_columns) =
        map_headers(&table.headers, [CODE_HEADERS, NAME_HEADERS]);
    let (Some(code_col), Some(name_col)) = (code_col, name_col) else {
        return Err(AppError::validation(
            "missing_columns",
            "表头缺少必需的列：区划代码（code）和名称（name）",
        ));
    };
    table.ensure_rows()?;

    let mut rejected = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (line, record) in &table.rows {
        let line = *line;
        let record = match record {
            Ok(record) => record,
            Err(reason) => {
                rejected.push(RejectedRow::new(
                    line,
                    Vec::new(),
                    "unreadable_row",
                    reason.clone(),
                ));
                continue;
            }
        };
        let values: Vec<String> = record.iter().map(str::to_owned).collect();
        let raw_code = record.get(code_col).unwrap_or_default();
        let name = record.get(name_col).unwrap_or_default().to_owned();
        let code = match AreaCode::parse(raw_code) {
            Ok(code) => code,
            Err(e) => {
                rejected.push(RejectedRow::new(
                    line,
                    values,
                    "invalid_code",
                    e.to_string(),
                ));
                continue;
            }
        };
        if name.is_empty() {
            rejected.push(RejectedRow::new(
                line,
                values,
                "missing_name",
                "名称不能为空".to_owned(),
            ));
            continue;
        }
        if name.chars().count() > MAX_NAME_CHARS {
            rejected.push(RejectedRow::new(
                line,
                values,
                "name_too_long",
                format!("名称超过 {MAX_NAME_CHARS} 个字"),
            ));
            continue;
        }
        if !crate::text::is_clean_name(&name) {
            rejected.push(RejectedRow::new(
                line,
                values,
                "invalid_name",
                crate::text::CONTROL_REASON.to_owned(),
            ));
            continue;
        }
        if !actor.scope.contains(&code) {
            rejected.push(RejectedRow::new(
                line,
                values,
                "out_of_scope",
                format!("区划 {code} 不在您的管辖范围内"),
            ));
            continue;
        }
        if let Some(previous) = seen.get(code.as_str()) {
            let reason = if *previous == name {
                format!("区划 {code} 在文件中重复出现")
            } else {
                format!("区划 {code} 在文件中重复出现且名称不同（{previous} / {name}）")
            };
            rejected.push(RejectedRow::new(line, values, "duplicate_in_file", reason));
            continue;
        }
        seen.insert(code.as_str().to_owned(), name.clone());
        candidates.push(Candidate {
            line,
            values,
            code,
            name,
        });
    }
    // Parents before children, whatever order the file had.
    candidates.sort_by_key(|c| (level_rank(c.code.level()), c.code.clone()));
    Ok(AreaFile {
        candidates,
        rejected,
        headers: table.header_names(),
        unknown_columns,
    })
}

/// Brings the area table in line with a file read by [`read_areas`]: new areas added,
/// renamed ones updated, all or nothing. A row whose parent is in neither the file nor the
/// table is rejected.
pub async fn import_areas(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    file: AreaFile,
) -> AppResult<AreaImport> {
    let AreaFile {
        candidates,
        mut rejected,
        headers,
        unknown_columns,
    } = file;
    let existing = load_existing(txn, &candidates).await?;
    let parents = load_parents(txn, &candidates).await?;
    let mut known: HashSet<String> = parents;
    let now = Utc::now();
    let mut summary = ImportSummary::default();
    let mut inserts = Vec::new();
    let mut renamed = Vec::new();
    for candidate in candidates {
        let parent = candidate.code.parent();
        if let Some(parent) = &parent
            && !known.contains(parent.as_str())
        {
            rejected.push(RejectedRow::new(
                candidate.line,
                candidate.values,
                "unknown_parent",
                format!("上级区划 {parent} 不存在（文件和系统中都没有）"),
            ));
            continue;
        }
        known.insert(candidate.code.as_str().to_owned());
        match existing.get(candidate.code.as_str()) {
            Some(name) if *name == candidate.name => summary.unchanged += 1,
            Some(old) => {
                areas::Entity::update_many()
                    .col_expr(
                        areas::Column::Name,
                        sea_orm::sea_query::Expr::value(candidate.name.clone()),
                    )
                    .col_expr(
                        areas::Column::UpdatedAt,
                        sea_orm::sea_query::Expr::value(now),
                    )
                    .filter(areas::Column::Code.eq(candidate.code.as_str()))
                    .exec(txn)
                    .await?;
                renamed.push(
                    json!({"code": candidate.code.as_str(), "from": old, "to": candidate.name}),
                );
                summary.updated += 1;
            }
            None => {
                inserts.push(areas::ActiveModel {
                    code: Set(candidate.code.as_str().to_owned()),
                    name: Set(candidate.name),
                    level: Set(candidate.code.level()),
                    parent_code: Set(parent.map(String::from)),
                    created_at: Set(now),
                    updated_at: Set(now),
                });
                summary.imported += 1;
            }
        }
    }
    while !inserts.is_empty() {
        let rest = inserts.split_off(inserts.len().min(BATCH));
        areas::Entity::insert_many(std::mem::replace(&mut inserts, rest))
            .exec(txn)
            .await?;
    }
    summary.rejected = rejected.len() as u64;
    if summary.imported + summary.updated > 0 {
        // Renames are listed (they are what an inspector asks about); additions are counted.
        renamed.truncate(200);
        audit::record(
            txn,
            actor,
            AuditEvent {
                action: "area.import",
                entity: "area",
                entity_id: None,
                area_code: actor.scope.area().cloned(),
                summary: json!({
                    "imported": summary.imported,
                    "updated": summary.updated,
                    "unchanged": summary.unchanged,
                    "rejected": summary.rejected,
                    "renamed": renamed,
                }),
            },
        )
        .await?;
    }
    rejected.sort_by_key(|r| r.line);
    Ok(AreaImport {
        summary,
        headers,
        rejected,
        unknown_columns,
    })
}

fn level_rank(level: AreaLevel) -> u8 {
    match level {
        AreaLevel::County => 0,
        AreaLevel::Township => 1,
        AreaLevel::Village => 2,
    }
}

/// Names of the candidates' codes that are already stored.
async fn load_existing(
    db: &impl ConnectionTrait,
    candidates: &[Candidate],
) -> AppResult<HashMap<String, String>> {
    let mut existing = HashMap::new();
    for chunk in candidates.chunks(BATCH) {
        let codes = chunk.iter().map(|c| c.code.as_str().to_owned());
        for row in areas::Entity::find()
            .filter(areas::Column::Code.is_in(codes))
            .all(db)
            .await?
        {
            existing.insert(row.code, row.name);
        }
    }
    Ok(existing)
}

/// Which of the candidates' parents are already stored.
async fn load_parents(
    db: &impl ConnectionTrait,
    candidates: &[Candidate],
) -> AppResult<HashSet<String>> {
    let wanted: Vec<String> = candidates
        .iter()
        .filter_map(|c| c.code.parent().map(String::from))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut found = HashSet::new();
    for chunk in wanted.chunks(BATCH) {
        for row in areas::Entity::find()
            .filter(areas::Column::Code.is_in(chunk.iter().cloned()))
            .all(db)
            .await?
        {
            found.insert(row.code);
        }
    }
    Ok(found)
}
