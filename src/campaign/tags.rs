//! Key-group tags on residents (重点人群): hypertension, diabetes, severe mental disorder,
//! maternal, tuberculosis. Set by the people who keep the registry; each carries its own
//! target and is a report dimension.

use chrono::Utc;
use entities::resident_tags;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    TransactionSession, TransactionTrait,
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

/// Replaces a resident's key groups; the change is audited.
pub async fn set<C>(db: &C, actor: &Actor, id: i32, request: TagSet) -> AppResult<ResidentTags>
where
    C: ConnectionTrait + TransactionTrait,
{
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
    let txn = crate::db::begin_write(db).await?;
    let resident = registry::find(&txn, &actor.scope, id).await?;
    let before = current(&txn, id).await?;
    if before == wanted {
        return Ok(view(id, &wanted));
    }
    resident_tags::Entity::delete_many()
        .filter(resident_tags::Column::ResidentId.eq(id))
        .exec(&txn)
        .await?;
    if !wanted.is_empty() {
        let now = Utc::now();
        resident_tags::Entity::insert_many(wanted.iter().map(|g| resident_tags::ActiveModel {
            resident_id: Set(id),
            tag: Set(g.code().to_owned()),
            created_at: Set(now),
            ..Default::default()
        }))
        .exec_without_returning(&txn)
        .await?;
    }
    let codes = |groups: &[KeyGroup]| groups.iter().map(|g| g.code()).collect::<Vec<_>>();
    audit::record(
        &txn,
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
    txn.commit().await?;
    Ok(view(id, &wanted))
}
