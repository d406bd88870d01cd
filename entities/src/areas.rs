use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A node of the statistical area tree: county, township (乡/镇/场) or village/community (村/社区).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "areas")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub code: String,
    pub name: String,
    pub level: AreaLevel,
    pub parent_code: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum AreaLevel {
    #[sea_orm(string_value = "county")]
    County,
    #[sea_orm(string_value = "township")]
    Township,
    #[sea_orm(string_value = "village")]
    Village,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "Entity",
        from = "Column::ParentCode",
        to = "Column::Code"
    )]
    Parent,
}

impl ActiveModelBehavior for ActiveModel {}
