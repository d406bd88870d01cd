use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Campaigns::Table)
                    .if_not_exists()
                    .col(pk_auto(Campaigns::Id))
                    .col(integer(Campaigns::Year).unique_key())
                    .col(string_len(Campaigns::Name, 100))
                    .col(date(Campaigns::ReferenceDate))
                    .col(string_len(Campaigns::Timezone, 32))
                    .col(string_len(Campaigns::QuietStart, 5))
                    .col(string_len(Campaigns::QuietEnd, 5))
                    .col(string_len(Campaigns::Status, 12))
                    .col(string_len(Campaigns::Cohorts, 64))
                    .col(text(Campaigns::Targets))
                    .col(date(Campaigns::SurveyFrom))
                    .col(date(Campaigns::SurveyTo))
                    .col(date(Campaigns::KickoffFrom))
                    .col(date(Campaigns::KickoffTo))
                    .col(date(Campaigns::ExamsFrom))
                    .col(date(Campaigns::ExamsTo))
                    .col(date(Campaigns::CatchUpFrom))
                    .col(date(Campaigns::CatchUpTo))
                    .col(date(Campaigns::AcceptanceFrom))
                    .col(date(Campaigns::AcceptanceTo))
                    .col(timestamp_with_time_zone_null(Campaigns::OpenedAt))
                    .col(timestamp_with_time_zone(Campaigns::CreatedAt))
                    .col(timestamp_with_time_zone(Campaigns::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ResidentTags::Table)
                    .if_not_exists()
                    .col(pk_auto(ResidentTags::Id))
                    .col(integer(ResidentTags::ResidentId))
                    .col(string_len(ResidentTags::Tag, 32))
                    .col(timestamp_with_time_zone(ResidentTags::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_resident_tags_resident")
                            .from(ResidentTags::Table, ResidentTags::ResidentId)
                            .to(Residents::Table, Residents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_resident_tags")
                    .table(ResidentTags::Table)
                    .col(ResidentTags::ResidentId)
                    .col(ResidentTags::Tag)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_resident_tags_tag")
                    .table(ResidentTags::Table)
                    .col(ResidentTags::Tag)
                    .to_owned(),
            )
            .await?;

        // One row per (campaign, resident): the current stage, when each stage was first
        // reached, and the dimensions every report slices by. Reports aggregate this table.
        manager
            .create_table(
                Table::create()
                    .table(Enrolments::Table)
                    .if_not_exists()
                    .col(pk_auto(Enrolments::Id))
                    .col(integer(Enrolments::CampaignId))
                    .col(integer(Enrolments::ResidentId))
                    .col(string_len(Enrolments::Stage, 12))
                    .col(char_len(Enrolments::VillageCode, 12))
                    .col(char_len(Enrolments::TownshipCode, 12))
                    .col(string_len(Enrolments::Cohort, 8))
                    .col(string_len(Enrolments::MigrantType, 24))
                    .col(string_len_null(Enrolments::Special, 24))
                    .col(string_len(Enrolments::Route, 16))
                    .col(timestamp_with_time_zone_null(Enrolments::NotifiedAt))
                    .col(timestamp_with_time_zone_null(Enrolments::ReachedAt))
                    .col(timestamp_with_time_zone_null(Enrolments::AppointedAt))
                    .col(timestamp_with_time_zone_null(Enrolments::ExaminedAt))
                    .col(timestamp_with_time_zone_null(Enrolments::RefusedAt))
                    .col(timestamp_with_time_zone_null(Enrolments::ExemptAt))
                    .col(timestamp_with_time_zone(Enrolments::CreatedAt))
                    .col(timestamp_with_time_zone(Enrolments::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_enrolments_campaign")
                            .from(Enrolments::Table, Enrolments::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_enrolments_resident")
                            .from(Enrolments::Table, Enrolments::ResidentId)
                            .to(Residents::Table, Residents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Only the (campaign, resident) key is indexed: opening a campaign writes a county's
        // rows in one statement, and each further index (or a foreign key to the area, which
        // the resident row already guarantees) costs that statement about a third more.
        // Village-scoped reads go through the residents' village index and this key.
        manager
            .create_index(
                Index::create()
                    .name("uq_enrolments_campaign_resident")
                    .table(Enrolments::Table)
                    .col(Enrolments::CampaignId)
                    .col(Enrolments::ResidentId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Enrolments::Table.into_iden(),
            ResidentTags::Table.into_iden(),
            Campaigns::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
pub enum Campaigns {
    Table,
    Id,
    Year,
    Name,
    ReferenceDate,
    Timezone,
    QuietStart,
    QuietEnd,
    Status,
    Cohorts,
    Targets,
    SurveyFrom,
    SurveyTo,
    KickoffFrom,
    KickoffTo,
    ExamsFrom,
    ExamsTo,
    CatchUpFrom,
    CatchUpTo,
    AcceptanceFrom,
    AcceptanceTo,
    OpenedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
pub enum Residents {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ResidentTags {
    Table,
    Id,
    ResidentId,
    Tag,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Enrolments {
    Table,
    Id,
    CampaignId,
    ResidentId,
    Stage,
    VillageCode,
    TownshipCode,
    Cohort,
    MigrantType,
    Special,
    Route,
    NotifiedAt,
    ReachedAt,
    AppointedAt,
    ExaminedAt,
    RefusedAt,
    ExemptAt,
    CreatedAt,
    UpdatedAt,
}
