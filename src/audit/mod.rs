//! The append-only audit log: who changed what, when, from which request. Every change is
//! recorded in the same transaction as the change itself, so neither exists without the other.

use chrono::{DateTime, Utc};
use entities::audit_log;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};

use crate::area::AreaCode;
use crate::auth::{Actor, Scope};
use crate::error::AppResult;
use crate::paging;

/// What happened, as the caller describes it.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Dotted verb, e.g. `user.create`, `area.import`, `resident.view_pii`.
    pub action: &'static str,
    /// The kind of record, e.g. `user`.
    pub entity: &'static str,
    pub entity_id: Option<String>,
    /// The area the record belongs to; decides who may read this entry.
    pub area_code: Option<AreaCode>,
    /// A JSON summary of the change: never secrets, never full ID numbers or phones.
    pub summary: serde_json::Value,
}

/// Appends one record. Call it with the transaction that makes the change.
pub async fn record(
    db: &impl ConnectionTrait,
    actor: &Actor,
    event: AuditEvent,
) -> Result<(), DbErr> {
    audit_log::Entity::insert(audit_log::ActiveModel {
        at: Set(Utc::now()),
        actor_user_id: Set(actor.user_id),
        actor_name: Set(actor.username.clone()),
        actor_role: Set(actor.role_label().to_owned()),
        action: Set(event.action.to_owned()),
        entity: Set(event.entity.to_owned()),
        entity_id: Set(event.entity_id),
        area_code: Set(event.area_code.map(String::from)),
        request_id: Set(actor.request_id.clone()),
        summary: Set(event.summary.to_string()),
        ..Default::default()
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Filters for reading the log; all optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Exact action, e.g. `user.create`.
    pub action: Option<String>,
    /// Kind of record, e.g. `user`.
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    pub actor_user_id: Option<i32>,
    /// Only records at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only records before this instant (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only records under this area (must be inside the caller's scope).
    pub area: Option<String>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<u64>,
    /// Cursor: only records older than this id (the `next_before` of the previous page).
    pub before: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i32,
    pub at: DateTime<Utc>,
    pub actor_user_id: Option<i32>,
    pub actor_name: String,
    pub actor_role: String,
    pub action: String,
    pub entity: String,
    pub entity_id: Option<String>,
    pub area_code: Option<String>,
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<i32>,
}

/// Newest first, inside `scope` (and inside `filter.area` when given), one page at a time.
pub async fn list(
    db: &impl ConnectionTrait,
    scope: &Scope,
    filter: AuditFilter,
    area: Option<AreaCode>,
) -> AppResult<AuditPage> {
    let size = paging::size(filter.limit)?;
    let mut query = audit_log::Entity::find().filter(scope.filter(audit_log::Column::AreaCode));
    if let Some(area) = area {
        query = query.filter(Scope::Within(area).filter(audit_log::Column::AreaCode));
    }
    if let Some(action) = filter.action {
        query = query.filter(audit_log::Column::Action.eq(action));
    }
    if let Some(entity) = filter.entity {
        query = query.filter(audit_log::Column::Entity.eq(entity));
    }
    if let Some(entity_id) = filter.entity_id {
        query = query.filter(audit_log::Column::EntityId.eq(entity_id));
    }
    if let Some(actor) = filter.actor_user_id {
        query = query.filter(audit_log::Column::ActorUserId.eq(actor));
    }
    if let Some(since) = filter.since {
        query = query.filter(audit_log::Column::At.gte(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(audit_log::Column::At.lt(until));
    }
    if let Some(before) = filter.before {
        query = query.filter(audit_log::Column::Id.lt(before));
    }
    let (rows, next_before) =
        paging::fetch(db, query.order_by_desc(audit_log::Column::Id), size, |r| {
            r.id
        })
        .await?;
    let entries = rows
        .into_iter()
        .map(|row| AuditEntry {
            summary: serde_json::from_str(&row.summary).unwrap_or(serde_json::Value::Null),
            id: row.id,
            at: row.at,
            actor_user_id: row.actor_user_id,
            actor_name: row.actor_name,
            actor_role: row.actor_role,
            action: row.action,
            entity: row.entity,
            entity_id: row.entity_id,
            area_code: row.area_code,
            request_id: row.request_id,
        })
        .collect();
    Ok(AuditPage {
        entries,
        next_before,
    })
}
