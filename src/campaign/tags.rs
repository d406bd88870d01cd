//! Key-group tags on residents (重点人群): hypertension, diabetes, severe mental disorder,
//! maternal, tuberculosis. Set by the people who keep the registry; each carries its own
//! target and is a report dimension.

use chrono::Utc;
use entities::resident_tags;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::area::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::error::{AppError, AppResult};
use crate::registry::{self, KeyGroup};

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagSet {
    /// The resident's key groups, replacing the current ones: codes (`hypertension`) or the
    /// Chinese names (`高血压`). An empty list removes them all.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TagView {
    pub code: &'static str,
    pub label: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResidentTags {
    pub resident_id: i32,
    pub tags: Vec<TagView>,
}

fn view(resident_id: i32, groups: &[KeyGroup]) -> ResidentTags {
    ResidentTags {
        resident_id,
        tags: groups
            .iter()
            .map(|g| TagView {
                code: g.code(),
                label: g.label(),
            })
            .collect(),
    }
}

async fn current(db: &impl ConnectionTrait, resident_id: i32) -> AppResult<Vec<KeyGroup>> {
    Ok(resident_tags::Entity::find()
        .filter(resident_tags::Column::ResidentId.eq(resident_id))
        .order_by_asc(resident_tags::Column::Tag)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|t| KeyGroup::parse(&t.tag))
        .collect())
}

/// A resident's key groups, for those who may see the resident (institution staff: the
/// residents their institution examines).
pub async fn get(db: &impl ConnectionTrait, actor: &Actor, id: i32) -> AppResult<ResidentTags> {
    registry::find_visible(db, actor, id).await?;
    Ok(view(id, &current(db, id).await?))
}

/// The key groups a [`TagSet`] asks for, checked, without repeats, in code order: made by
/// [`prepare_set`], written by [`set`].
pub struct TagChoice(Vec<KeyGroup>);

/// Reads the key groups of a [`TagSet`] (codes or Chinese names).
pub fn prepare_set(request: &TagSet) -> AppResult<TagChoice> {
    let mut wanted = Vec::new();
    for raw in &request.tags {
        let group = KeyGroup::parse(raw).ok_or_else(|| {
            AppError::validation(
                "invalid_tag",
                format!("未知的重点人群 {raw}：可选 高血压、糖尿病、严重精神障碍、孕产妇、肺结核"),
            )
        })?;
        if !wanted.contains(&group) {
            wanted.push(group);
        }
    }
    wanted.sort_by_key(|g| g.code());
    Ok(TagChoice(wanted))
}

/// Replaces a resident's key groups with `choice`; the change is audited.
pub async fn set(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    choice: TagChoice,
) -> AppResult<ResidentTags> {
    let TagChoice(wanted) = choice;
    let resident = registry::find(txn, &actor.scope, id).await?;
    let before = current(txn, id).await?;
    if before == wanted {
        return Ok(view(id, &wanted));
    }
    resident_tags::Entity::delete_many()
        .filter(resident_tags::Column::ResidentId.eq(id))
        .exec(txn)
        .await?;
    if !wanted.is_empty() {
        let now = Utc::now();
        resident_tags::Entity::insert_many(wanted.iter().map(|g| resident_tags::ActiveModel {
            resident_id: Set(id),
            tag: Set(g.code().to_owned()),
            created_at: Set(now),
            ..Default::default()
        }))
        .exec_without_returning(txn)
        .await?;
    }
    let codes = |groups: &[KeyGroup]| groups.iter().map(|g| g.code()).collect::<Vec<_>>();
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "resident.set_tags",
            entity: "resident",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&resident.village_code).ok(),
            summary: json!({"from": codes(&before), "to": codes(&wanted)}),
        },
    )
    .await?;
    Ok(view(id, &wanted))
}

/// What a tags file did, as printed by `--json` and returned by the upload endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TagImportSummary {
    /// Tags added to residents.
    pub added: u64,
    /// Tags taken off residents.
    pub removed: u64,
    /// Rows that changed nothing (the tags were already so).
    pub unchanged: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone)]
pub struct TagImport {
    pub summary: TagImportSummary,
    pub unknown_columns: Vec<String>,
    pub headers: Vec<String>,
    /// Every rejected row, with the values as read (the rejected file keeps them whole).
    pub rejected_rows: Vec<crate::import::RejectedRow>,
    /// Position of the ID number among each row's values.
    pub id_column: usize,
}

impl TagImport {
    /// The first rejected rows as an answer shows them: ID numbers masked, values cut.
    pub fn rejected_rows_for_response(&self) -> Vec<crate::import::RejectedRow> {
        self.rejected_rows
            .iter()
            .take(TAG_REJECTS_SHOWN)
            .map(|row| {
                let mut row = row.clone();
                if let Some(value) = row.values.get_mut(self.id_column) {
                    *value = registry::mask_raw_id(value);
                }
                row.shorten();
                row
            })
            .collect()
    }
}

/// Rejected rows an upload's answer lists (all of them go to the CLI's rejected file).
pub const TAG_REJECTS_SHOWN: usize = 1000;

const TAG_ID: &[&str] = &["身份证号", "身份证号码", "公民身份号码", "id_number"];
const TAG_TAG: &[&str] = &["标签", "重点人群", "tag", "tags"];
const TAG_ACTION: &[&str] = &["操作", "action"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum TagAction {
    Add,
    Remove,
}

fn allowed_tags() -> String {
    KeyGroup::ALL
        .iter()
        .map(|g| g.label())
        .collect::<Vec<_>>()
        .join("、")
}

/// A tags file's header row, its columns found and those not known.
struct TagHeader {
    values: Vec<String>,
    columns: [Option<usize>; 3],
    unknown: Vec<String>,
}

/// One row of a tags file, checked: which resident (by blind index) gets or loses which tags.
struct TagRow {
    line: u64,
    values: Vec<String>,
    id_index: Vec<u8>,
    groups: Vec<KeyGroup>,
    action: TagAction,
}

fn parse_tag_row(
    privacy: &crate::privacy::Privacy,
    columns: &[Option<usize>; 3],
    row: crate::import::stream::RawRow,
    today: chrono::NaiveDate,
) -> Result<TagRow, crate::import::RejectedRow> {
    use crate::import::RejectedRow;
    let get = |field: usize| -> &str {
        columns[field]
            .and_then(|i| row.values.get(i))
            .map(String::as_str)
            .unwrap_or("")
    };
    let reject =
        |code: &str, reason: String| RejectedRow::new(row.line, row.values.clone(), code, reason);
    let id =
        registry::ResidentId::parse(get(0), today).map_err(|e| reject(e.code(), e.to_string()))?;
    let action = match get(2).trim().to_lowercase().as_str() {
        "" | "add" | "添加" | "增加" => TagAction::Add,
        "remove" | "删除" | "移除" | "取消" => TagAction::Remove,
        other => {
            let other: String = other.chars().take(40).collect();
            return Err(reject(
                "invalid_action",
                format!("未知的操作：{other}（可选 添加/add、删除/remove，默认添加）"),
            ));
        }
    };
    let mut groups = Vec::new();
    for raw in get(1)
        .split(['、', ',', ';', '，', '；', '/'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let group = KeyGroup::parse(raw).ok_or_else(|| {
            let raw: String = raw.chars().take(40).collect();
            reject(
                "invalid_tag",
                format!("未知的重点人群：{raw}（可选：{}）", allowed_tags()),
            )
        })?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    if groups.is_empty() {
        return Err(reject(
            "missing_tag",
            format!("标签不能为空（可选：{}）", allowed_tags()),
        ));
    }
    Ok(TagRow {
        line: row.line,
        id_index: privacy.blind_index(crate::privacy::Field::ResidentId, id.expose()),
        values: row.values,
        groups,
        action,
    })
}

/// A tags file read and checked row by row (made by [`read_import`]): what [`import`]
/// applies.
pub struct TagFile {
    headers: Vec<String>,
    columns: [Option<usize>; 3],
    unknown_columns: Vec<String>,
    rows: Vec<TagRow>,
    rejected: Vec<crate::import::RejectedRow>,
}

/// Reads a key-group tags file (CSV in UTF-8, GB18030 or UTF-16, or XLSX) on a blocking
/// thread: one resident a row by ID number, one or several tags, and whether to add
/// (default) or remove them. Bad rows are rejected with their reasons; a file without the ID
/// or tag column, or without rows, is refused whole.
#[tracing::instrument(skip_all, err)]
pub async fn read_import(
    privacy: std::sync::Arc<crate::privacy::Privacy>,
    path: &std::path::Path,
) -> AppResult<TagFile> {
    use crate::import::{map_headers, stream};

    let path = path.to_owned();
    let today = crate::time::today();
    let read = tokio::task::spawn_blocking(move || {
        let mut header: Option<TagHeader> = None;
        let mut rows = Vec::new();
        let mut rejected = Vec::new();
        stream::read_rows(&path, &stream::BytesRead::default(), |row| match &header {
            None => {
                let record = csv::StringRecord::from(row.values.clone());
                let (found, unknown) = map_headers(&record, [TAG_ID, TAG_TAG, TAG_ACTION]);
                header = Some(TagHeader {
                    values: row.values,
                    columns: found,
                    unknown,
                });
                found[0].is_some() && found[1].is_some()
            }
            Some(TagHeader { columns, .. }) => {
                match parse_tag_row(&privacy, columns, row, today) {
                    Ok(row) => rows.push(row),
                    Err(bad) => rejected.push(bad),
                }
                true
            }
        })
        .map(|()| (header, rows, rejected))
    })
    .await
    .map_err(|e| anyhow::anyhow!("reading the tags file: {e}"))?;
    let (header, rows, rejected) = read.map_err(|e| match e {
        stream::SourceError::Limit(limit) => {
            AppError::validation("file_limit_exceeded", limit.to_string())
        }
        other => AppError::validation("unreadable_file", other.to_string()),
    })?;
    let Some(TagHeader {
        values: headers,
        columns,
        unknown: unknown_columns,
    }) = header
    else {
        return Err(AppError::validation("no_rows", "文件没有数据行"));
    };
    let missing: Vec<&str> = [(0, "身份证号"), (1, "标签")]
        .into_iter()
        .filter(|(field, _)| columns[*field].is_none())
        .map(|(_, label)| label)
        .collect();
    if !missing.is_empty() {
        return Err(AppError::validation(
            "missing_columns",
            format!("表头缺少必需的列：{}", missing.join("、")),
        ));
    }
    if rows.is_empty() && rejected.is_empty() {
        return Err(AppError::validation("no_rows", "文件没有数据行"));
    }
    Ok(TagFile {
        headers,
        columns,
        unknown_columns,
        rows,
        rejected,
    })
}

/// Applies a tags file read by [`read_import`]: residents not found in the caller's scope
/// (never told apart from unknown ones) are rejected; the rest is applied, each changed
/// resident audited.
#[tracing::instrument(skip_all, err)]
pub async fn import(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    file: TagFile,
) -> AppResult<TagImport> {
    use crate::import::RejectedRow;
    use std::collections::HashMap;

    let TagFile {
        headers,
        columns,
        unknown_columns,
        rows,
        mut rejected,
    } = file;
    let mut summary = TagImportSummary::default();
    let mut residents: HashMap<Vec<u8>, entities::residents::Model> = HashMap::new();
    for chunk in rows.chunks(500) {
        for resident in entities::residents::Entity::find()
            .filter(
                entities::residents::Column::IdIndex
                    .is_in(chunk.iter().map(|r| r.id_index.clone())),
            )
            .filter(actor.scope.filter(entities::residents::Column::VillageCode))
            .all(txn)
            .await?
        {
            residents.insert(resident.id_index.clone(), resident);
        }
    }
    let now = Utc::now();
    for row in rows {
        let Some(resident) = residents.get(&row.id_index) else {
            rejected.push(RejectedRow::new(
                row.line,
                row.values,
                "not_found",
                "未找到该身份证号的居民，或该居民不在您的管辖范围内",
            ));
            continue;
        };
        let before = current(txn, resident.id).await?;
        let (added, removed): (Vec<KeyGroup>, Vec<KeyGroup>) = match row.action {
            TagAction::Add => (
                row.groups
                    .iter()
                    .copied()
                    .filter(|g| !before.contains(g))
                    .collect(),
                Vec::new(),
            ),
            TagAction::Remove => (
                Vec::new(),
                row.groups
                    .iter()
                    .copied()
                    .filter(|g| before.contains(g))
                    .collect(),
            ),
        };
        if added.is_empty() && removed.is_empty() {
            summary.unchanged += 1;
            continue;
        }
        if !added.is_empty() {
            resident_tags::Entity::insert_many(added.iter().map(|g| resident_tags::ActiveModel {
                resident_id: Set(resident.id),
                tag: Set(g.code().to_owned()),
                created_at: Set(now),
                ..Default::default()
            }))
            .exec_without_returning(txn)
            .await?;
        }
        if !removed.is_empty() {
            resident_tags::Entity::delete_many()
                .filter(resident_tags::Column::ResidentId.eq(resident.id))
                .filter(resident_tags::Column::Tag.is_in(removed.iter().map(|g| g.code())))
                .exec(txn)
                .await?;
        }
        let after = current(txn, resident.id).await?;
        let codes = |groups: &[KeyGroup]| groups.iter().map(|g| g.code()).collect::<Vec<_>>();
        audit::record(
            txn,
            actor,
            AuditEvent {
                action: "resident.import_tags",
                entity: "resident",
                entity_id: Some(resident.id.to_string()),
                area_code: AreaCode::parse(&resident.village_code).ok(),
                summary: json!({"from": codes(&before), "to": codes(&after)}),
            },
        )
        .await?;
        summary.added += added.len() as u64;
        summary.removed += removed.len() as u64;
    }
    rejected.sort_by_key(|r| r.line);
    summary.rejected = rejected.len() as u64;
    Ok(TagImport {
        summary,
        unknown_columns,
        headers,
        rejected_rows: rejected,
        id_column: columns[0].unwrap_or(usize::MAX),
    })
}
