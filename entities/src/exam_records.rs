use sea_orm::entity::prelude::*;

/// The one exam of a resident in a campaign: at an institution of the county, or elsewhere
/// with evidence (migrants examined where they live).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "exam_records")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub examined_on: Date,
    /// The examining institution of the county; `None` when examined elsewhere.
    pub institution_id: Option<i32>,
    /// attendance, institution, import or elsewhere.
    pub source: String,
    /// Where, when examined elsewhere.
    pub place: Option<String>,
    /// Who examined or attests it (doctor, unit).
    pub examiner: Option<String>,
    pub note: Option<String>,
    pub evidence_name: Option<String>,
    pub evidence_type: Option<String>,
    #[sea_orm(column_type = "Blob", nullable)]
    pub evidence: Option<Vec<u8>>,
    pub appointment_id: Option<i32>,
    pub recorded_by: Option<i32>,
    pub recorded_by_name: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::residents::Entity",
        from = "Column::ResidentId",
        to = "super::residents::Column::Id"
    )]
    Resident,
}

impl Related<super::residents::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Resident.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
