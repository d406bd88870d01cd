use sea_orm::entity::prelude::*;

/// A resident booked into an institution's day for a campaign.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "appointments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub institution_id: i32,
    pub day: Date,
    /// booked, attended, no_show or cancelled.
    pub status: String,
    /// Shared by the appointments of one group booking.
    pub booking_ref: String,
    pub booked_by: Option<i32>,
    /// Why it was cancelled or rescheduled.
    pub reason: Option<String>,
    pub attended_at: Option<DateTimeUtc>,
    pub cancelled_at: Option<DateTimeUtc>,
    /// The resident confirmed by replying 1 / 确认.
    pub confirmed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::residents::Entity",
        from = "Column::ResidentId",
        to = "super::residents::Column::Id"
    )]
    Resident,
    #[sea_orm(
        belongs_to = "super::institutions::Entity",
        from = "Column::InstitutionId",
        to = "super::institutions::Column::Id"
    )]
    Institution,
}

impl Related<super::residents::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Resident.def()
    }
}

impl Related<super::institutions::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Institution.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
