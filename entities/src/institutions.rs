use sea_orm::entity::prelude::*;

/// A county hospital or township health centre that examines residents.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "institutions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Short unique code used in uploads and exam imports.
    #[sea_orm(unique)]
    pub code: String,
    pub name: String,
    /// county_hospital, township_centre or other.
    pub kind: String,
    /// Where it is (county or township code).
    pub area_code: String,
    /// People per day unless a day says otherwise.
    pub daily_capacity: i32,
    /// ISO weekdays (1 = Monday) it is closed, comma-separated; empty when open every day.
    pub closed_weekdays: String,
    pub active: bool,
    /// Street address, quoted in appointment notices.
    pub address: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::institution_areas::Entity")]
    Areas,
    #[sea_orm(has_many = "super::institution_days::Entity")]
    Days,
}

impl Related<super::institution_areas::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Areas.def()
    }
}

impl Related<super::institution_days::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Days.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
