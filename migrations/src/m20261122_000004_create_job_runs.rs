use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobRuns::Table)
                    .if_not_exists()
                    .col(pk_auto(JobRuns::Id))
                    .col(string_len(JobRuns::Job, 64))
                    .col(timestamp_with_time_zone(JobRuns::ScheduledFor))
                    .col(timestamp_with_time_zone(JobRuns::StartedAt))
                    .col(timestamp_with_time_zone_null(JobRuns::FinishedAt))
                    .col(string_len(JobRuns::Status, 16))
                    .col(text_null(JobRuns::Detail))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_job_runs_job_scheduled_for")
                    .table(JobRuns::Table)
                    .col(JobRuns::Job)
                    .col(JobRuns::ScheduledFor)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobRuns::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum JobRuns {
    Table,
    Id,
    Job,
    ScheduledFor,
    StartedAt,
    FinishedAt,
    Status,
    Detail,
}
