use sea_orm::entity::prelude::*;

/// One resident in one campaign: the current stage, when each stage was first reached, and
/// the dimensions reports slice by. The single source of every campaign figure.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "enrolments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    /// target, notified, reached, appointed, examined, refused or exempt.
    pub stage: String,
    pub village_code: String,
    pub township_code: String,
    /// Age group on the campaign's reference date.
    pub cohort: String,
    pub migrant_type: String,
    pub special: Option<String>,
    /// clinic, home_visit, records, seasonal or facility (from the special situation).
    pub route: String,
    pub notified_at: Option<DateTimeUtc>,
    pub reached_at: Option<DateTimeUtc>,
    pub appointed_at: Option<DateTimeUtc>,
    pub examined_at: Option<DateTimeUtc>,
    pub refused_at: Option<DateTimeUtc>,
    pub exempt_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::campaigns::Entity",
        from = "Column::CampaignId",
        to = "super::campaigns::Column::Id"
    )]
    Campaign,
    #[sea_orm(
        belongs_to = "super::residents::Entity",
        from = "Column::ResidentId",
        to = "super::residents::Column::Id"
    )]
    Resident,
}

impl Related<super::campaigns::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Campaign.def()
    }
}

impl Related<super::residents::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Resident.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
