use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[sea_orm(unique)]
    pub username: String,
    pub display_name: Option<String>,
    /// Argon2id PHC string; never serialised.
    pub password_hash: String,
    pub role: Role,
    /// The user's scope: this area and everything under it. `None` is the whole tree
    /// (only the bootstrap administrator has it).
    pub area_code: Option<String>,
    pub active: bool,
    /// The institution an `institution` user works for.
    pub institution_id: Option<i32>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// County office (县卫健委 / 领导小组办公室).
    #[sea_orm(string_value = "office")]
    Office,
    /// Township officer (乡镇/场).
    #[sea_orm(string_value = "township")]
    Township,
    /// Village cadre (村/社区干部, 网格员).
    #[sea_orm(string_value = "cadre")]
    Cadre,
    /// Staff of a medical institution (县直医疗机构, 乡镇卫生院).
    #[sea_orm(string_value = "institution")]
    Institution,
    /// Read-only inspector.
    #[sea_orm(string_value = "auditor")]
    Auditor,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::areas::Entity",
        from = "Column::AreaCode",
        to = "super::areas::Column::Code"
    )]
    Area,
    #[sea_orm(has_many = "super::auth_tokens::Entity")]
    AuthTokens,
}

impl Related<super::areas::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Area.def()
    }
}

impl Related<super::auth_tokens::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::AuthTokens.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
