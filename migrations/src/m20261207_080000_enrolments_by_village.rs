use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The progress rows of one village of one campaign, together: a cadre's worklists count and
/// list their village's rows of the open campaign through this index instead of looking each
/// of the village's residents up by the (campaign, resident) key (`campaign::worklist`). Only
/// the area columns, which change when a resident moves, not on every change of stage.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_enrolments_campaign_village")
                    .table(Alias::new("enrolments"))
                    .col(Alias::new("campaign_id"))
                    .col(Alias::new("village_code"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_enrolments_campaign_village")
                    .table(Alias::new("enrolments"))
                    .to_owned(),
            )
            .await
    }
}
