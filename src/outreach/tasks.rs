//! Tasks on the village cadre's list that messaging cannot do itself: a resident no channel
//! reaches (call or visit), a reschedule request, a reply nobody could match. Marking one
//! done is a transaction of `flows::messaging`.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::area::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::{Actor, Scope};
use crate::db::Sql;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// No channel is left: call or visit.
    Unreachable,
    /// The resident replied 2 / 改期.
    RescheduleRequest,
    /// The resident replied something the service does not understand.
    Reply,
}

impl TaskKind {
    pub const ALL: [TaskKind; 3] = [
        TaskKind::Unreachable,
        TaskKind::RescheduleRequest,
        TaskKind::Reply,
    ];

    pub fn code(self) -> &'static str {
        match self {
            TaskKind::Unreachable => "unreachable",
            TaskKind::RescheduleRequest => "reschedule_request",
            TaskKind::Reply => "reply",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TaskKind::Unreachable => "无法送达，需电话或上门联系",
            TaskKind::RescheduleRequest => "居民申请改期",
            TaskKind::Reply => "居民回复待处理",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == raw)
    }
}

pub struct NewTask {
    pub campaign_id: i32,
    pub resident_id: i32,
    pub village_code: String,
    pub kind: TaskKind,
    /// One task per key: the same cause never makes two.
    pub dedupe_key: String,
    pub message_id: Option<i32>,
    pub reply_id: Option<i32>,
    pub note: Option<String>,
}

/// Adds a task unless its key exists. Returns whether it was new.
pub async fn create(
    db: &impl ConnectionTrait,
    task: NewTask,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO outreach_tasks (campaign_id, resident_id, village_code, kind, dedupe_key, \
         message_id, reply_id, note, created_at) VALUES (",
    )
    .bind(task.campaign_id)
    .push(", ")
    .bind(task.resident_id)
    .push(", ")
    .bind(task.village_code)
    .push(", ")
    .bind(task.kind.code())
    .push(", ")
    .bind(task.dedupe_key)
    .push(", ")
    .bind(task.message_id)
    .push(", ")
    .bind(task.reply_id)
    .push(", ")
    .bind(task.note)
    .push(", ")
    .bind(now)
    .push(") ON CONFLICT (dedupe_key) DO NOTHING");
    Ok(db.execute_raw(sql.build()).await?.rows_affected() == 1)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub resident_name: String,
    /// Masked.
    pub phone: Option<String>,
    pub village_code: String,
    pub kind: TaskKind,
    pub kind_label: String,
    pub message_id: Option<i32>,
    pub reply_id: Option<i32>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
}

/// A task as [`list`] reads it, with its resident's name and masked phone.
#[derive(FromQueryResult)]
struct TaskRow {
    id: i32,
    campaign_id: i32,
    resident_id: i32,
    name: String,
    phone_masked: Option<String>,
    village_code: String,
    kind: String,
    message_id: Option<i32>,
    reply_id: Option<i32>,
    note: Option<String>,
    created_at: DateTime<Utc>,
    done_at: Option<DateTime<Utc>>,
}

impl TaskRow {
    fn view(self) -> TaskView {
        let kind = TaskKind::parse(&self.kind).unwrap_or(TaskKind::Reply);
        TaskView {
            id: self.id,
            campaign_id: self.campaign_id,
            resident_id: self.resident_id,
            resident_name: self.name,
            phone: self.phone_masked,
            village_code: self.village_code,
            kind,
            kind_label: kind.label().to_owned(),
            message_id: self.message_id,
            reply_id: self.reply_id,
            note: self.note,
            created_at: self.created_at,
            done_at: self.done_at,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct TaskFilter {
    /// Open tasks only (default true).
    pub open: Option<bool>,
    pub kind: Option<String>,
    /// A township or village inside the caller's scope.
    pub area: Option<String>,
    pub limit: Option<u64>,
    /// Tasks with an id below this one (the `next` of the previous page).
    pub before: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskPage {
    pub items: Vec<TaskView>,
    pub next: Option<i32>,
}

/// Appends `AND <column> BETWEEN low AND high` for a scope (nothing for the whole tree).
pub(crate) fn scope_sql(sql: &mut Sql, column: &'static str, scope: &Scope) {
    if let Scope::Within(area) = scope {
        let (low, high) = area.code_range();
        sql.push(" AND ")
            .push(column)
            .push(" BETWEEN ")
            .bind(low)
            .push(" AND ")
            .bind(high);
    }
}

/// The scope narrowed to `area` when given (which must lie inside it).
pub(crate) fn narrowed(actor: &Actor, area: Option<&str>) -> AppResult<Scope> {
    let Some(raw) = area else {
        return Ok(actor.scope.clone());
    };
    let code = AreaCode::parse(raw)
        .map_err(|e| AppError::validation("invalid_area", format!("地区代码无效：{e}")))?;
    if !actor.scope.contains(&code) {
        return Err(AppError::Forbidden("该地区不在您的管辖范围内".to_owned()));
    }
    Ok(Scope::Within(code))
}

pub async fn list(
    db: &impl ConnectionTrait,
    actor: &Actor,
    filter: &TaskFilter,
) -> AppResult<TaskPage> {
    let scope = narrowed(actor, filter.area.as_deref())?;
    let limit = crate::paging::size(filter.limit)?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT t.id, t.campaign_id, t.resident_id, r.name, r.phone_masked, t.village_code, \
         t.kind, t.message_id, t.reply_id, t.note, t.created_at, t.done_at \
         FROM outreach_tasks t JOIN residents r ON r.id = t.resident_id WHERE 1 = 1",
    );
    scope_sql(&mut sql, "t.village_code", &scope);
    if filter.open.unwrap_or(true) {
        sql.push(" AND t.done_at IS NULL");
    }
    if let Some(kind) = &filter.kind {
        let kind = TaskKind::parse(kind).ok_or_else(|| {
            AppError::validation(
                "invalid_kind",
                "任务类型应为 unreachable、reschedule_request 或 reply",
            )
        })?;
        sql.push(" AND t.kind = ").bind(kind.code());
    }
    if let Some(before) = filter.before {
        sql.push(" AND t.id < ").bind(before);
    }
    sql.push(" ORDER BY t.id DESC LIMIT ")
        .bind((limit + 1) as i64);
    let mut items: Vec<TaskView> = TaskRow::find_by_statement(sql.build())
        .all(db)
        .await?
        .into_iter()
        .map(TaskRow::view)
        .collect();
    let next = if items.len() as u64 > limit {
        items.truncate(limit as usize);
        items.last().map(|t| t.id)
    } else {
        None
    };
    Ok(TaskPage { items, next })
}

/// How many tasks of the caller's scope are open.
pub async fn open_count(db: &impl ConnectionTrait, actor: &Actor) -> AppResult<u64> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT COUNT(*) AS n FROM outreach_tasks t WHERE t.done_at IS NULL");
    scope_sql(&mut sql, "t.village_code", &actor.scope);
    let n = Count::find_by_statement(sql.build())
        .one(db)
        .await?
        .map_or(0, |c| c.n);
    Ok(u64::try_from(n).unwrap_or_default())
}

/// A row count.
#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

/// What [`done`] checks of a task before marking it.
#[derive(FromQueryResult)]
struct TaskState {
    village_code: String,
    done_at: Option<DateTime<Utc>>,
}

/// A cadre marks a task done (audited), in the caller's transaction.
pub async fn done(db: &impl ConnectionTrait, actor: &Actor, id: i32) -> AppResult<()> {
    if !matches!(
        actor.role,
        entities::users::Role::Office
            | entities::users::Role::Township
            | entities::users::Role::Cadre
    ) {
        return Err(AppError::Forbidden(
            "只有村干部、乡镇和县卫健委可以处理任务".to_owned(),
        ));
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT village_code, done_at FROM outreach_tasks WHERE id = ")
        .bind(id);
    let task = TaskState::find_by_statement(sql.build()).one(db).await?;
    let Some(task) =
        task.filter(|t| AreaCode::parse(&t.village_code).is_ok_and(|v| actor.scope.contains(&v)))
    else {
        return Err(AppError::NotFound(format!("任务 {id} 不存在")));
    };
    if task.done_at.is_some() {
        return Err(AppError::refused("already_done", "该任务已处理"));
    }
    let now = Utc::now();
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE outreach_tasks SET done_at = ")
        .bind(now)
        .push(", done_by = ")
        .bind(actor.user_id)
        .push(" WHERE id = ")
        .bind(id)
        .push(" AND done_at IS NULL");
    db.execute_raw(sql.build()).await?;
    audit::record(
        db,
        actor,
        AuditEvent {
            action: "task.done",
            entity: "outreach_task",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&task.village_code).ok(),
            summary: json!({}),
        },
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplyView {
    pub id: i32,
    pub provider: String,
    /// Masked.
    pub from: String,
    pub text: String,
    /// confirm, reschedule, opt_out or unmatched.
    pub action: String,
    pub resident_id: Option<i32>,
    pub village_code: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// An inbound reply as [`replies`] reads it.
#[derive(FromQueryResult)]
struct ReplyRow {
    id: i32,
    provider: String,
    from_masked: String,
    text: String,
    action: String,
    resident_id: Option<i32>,
    village_code: Option<String>,
    received_at: DateTime<Utc>,
}

impl ReplyRow {
    fn view(self) -> ReplyView {
        ReplyView {
            id: self.id,
            provider: self.provider,
            from: self.from_masked,
            text: self.text,
            action: self.action,
            resident_id: self.resident_id,
            village_code: self.village_code,
            received_at: self.received_at,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct ReplyFilter {
    /// Only replies the service could not act on.
    pub unmatched: Option<bool>,
    /// Only replies from this resident's numbers.
    pub resident_id: Option<i32>,
    pub limit: Option<u64>,
    /// Replies with an id below this one (the `next` of the previous page).
    pub before: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplyPage {
    pub items: Vec<ReplyView>,
    pub next: Option<i32>,
}

/// Replies from residents in scope, newest first. Replies from numbers nobody has are seen
/// by the county office.
pub async fn replies(
    db: &impl ConnectionTrait,
    actor: &Actor,
    filter: &ReplyFilter,
) -> AppResult<ReplyPage> {
    let limit = crate::paging::size(filter.limit)?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT id, provider, from_masked, text, action, resident_id, village_code, received_at \
         FROM inbound_replies WHERE ",
    );
    if actor.role == entities::users::Role::Office {
        sql.push("(village_code IS NULL OR (1 = 1");
        scope_sql(&mut sql, "village_code", &actor.scope);
        sql.push("))");
    } else {
        sql.push("village_code IS NOT NULL");
        scope_sql(&mut sql, "village_code", &actor.scope);
    }
    if filter.unmatched.unwrap_or(false) {
        sql.push(" AND action = 'unmatched'");
    }
    if let Some(resident) = filter.resident_id {
        sql.push(" AND resident_id = ").bind(resident);
    }
    if let Some(before) = filter.before {
        sql.push(" AND id < ").bind(before);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .bind((limit + 1) as i64);
    let mut items: Vec<ReplyView> = ReplyRow::find_by_statement(sql.build())
        .all(db)
        .await?
        .into_iter()
        .map(ReplyRow::view)
        .collect();
    let next = if items.len() as u64 > limit {
        items.truncate(limit as usize);
        items.last().map(|r| r.id)
    } else {
        None
    };
    Ok(ReplyPage { items, next })
}
