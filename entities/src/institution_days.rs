use sea_orm::entity::prelude::*;

/// One day of an institution's calendar: its capacity, how many are booked, whether closed.
/// A day without a row has the institution's default capacity and nothing booked.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "institution_days")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub institution_id: i32,
    pub day: Date,
    pub capacity: i32,
    /// Places taken: appointments booked, attended or missed (not cancelled).
    pub booked: i32,
    pub closed: bool,
    pub note: Option<String>,
    /// Set by hand (not the institution's defaults): a change of the defaults leaves it.
    pub overridden: bool,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::institutions::Entity",
        from = "Column::InstitutionId",
        to = "super::institutions::Column::Id"
    )]
    Institution,
}

impl Related<super::institutions::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Institution.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
