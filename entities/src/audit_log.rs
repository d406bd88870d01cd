use sea_orm::entity::prelude::*;

/// One append-only audit record, written in the same transaction as the change it describes.
/// The database refuses UPDATE and DELETE on this table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub at: DateTimeUtc,
    pub actor_user_id: Option<i32>,
    pub actor_name: String,
    pub actor_role: String,
    pub action: String,
    pub entity: String,
    pub entity_id: Option<String>,
    /// The area the changed record belongs to, so that audit reading can be scoped.
    pub area_code: Option<String>,
    pub request_id: Option<String>,
    /// JSON object summarising the change (never secrets, never full ID numbers or phones).
    #[sea_orm(column_type = "Text")]
    pub summary: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
