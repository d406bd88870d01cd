use sea_orm::entity::prelude::*;

/// One year's 全民健康体检 campaign: its reference date (ages are computed on it), phases,
/// cohorts in scope, per-group targets and the local time for messages.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "campaigns")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[sea_orm(unique)]
    pub year: i32,
    pub name: String,
    pub reference_date: Date,
    /// IANA zone, e.g. `Asia/Shanghai` or `Asia/Urumqi`.
    pub timezone: String,
    /// `HH:MM` local time; no message is sent from `quiet_start` to `quiet_end`.
    pub quiet_start: String,
    pub quiet_end: String,
    /// `draft`, `open` or `closed`.
    pub status: String,
    /// Comma-separated cohort codes in scope, e.g. `0-6,7-14,15-64,65-79,80+`.
    pub cohorts: String,
    /// JSON list of `{"group", "percent"}` exam-rate targets.
    #[sea_orm(column_type = "Text")]
    pub targets: String,
    pub survey_from: Date,
    pub survey_to: Date,
    pub kickoff_from: Date,
    pub kickoff_to: Date,
    pub exams_from: Date,
    pub exams_to: Date,
    pub catch_up_from: Date,
    pub catch_up_to: Date,
    pub acceptance_from: Date,
    pub acceptance_to: Date,
    pub opened_at: Option<DateTimeUtc>,
    /// A refusal may be registered after this many documented contact attempts…
    pub refusal_min_attempts: i32,
    /// …on at least this many different days.
    pub refusal_min_days: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::enrolments::Entity")]
    Enrolments,
}

impl Related<super::enrolments::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Enrolments.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
