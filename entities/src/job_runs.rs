use sea_orm::entity::prelude::*;

/// One firing of a scheduled job. `(job, scheduled_for)` is unique, so a firing runs once
/// however many instances share the database and however often they restart.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_runs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub job: String,
    pub scheduled_for: DateTimeUtc,
    pub started_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// running, succeeded or failed
    pub status: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
