use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261123_000006_create_campaigns::Campaigns;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The report cube: the progress rows of a campaign counted per village, cohort,
        // migrant type, special situation, route and examining place — the live figures
        // (`day` NULL) and each closed day's figures as they stood at its end. Every report
        // reads this table; a refresh rebuilds the live rows from `enrolments`.
        manager
            .create_table(
                Table::create()
                    .table(ReportCells::Table)
                    .if_not_exists()
                    .col(pk_auto(ReportCells::Id))
                    .col(integer(ReportCells::CampaignId))
                    .col(date_null(ReportCells::Day))
                    .col(string_len(ReportCells::VillageCode, 12))
                    .col(string_len(ReportCells::TownshipCode, 12))
                    .col(string_len(ReportCells::Cohort, 8))
                    .col(string_len(ReportCells::MigrantType, 24))
                    .col(string_len(ReportCells::Special, 24))
                    .col(string_len(ReportCells::Route, 16))
                    .col(string_len(ReportCells::ExamArea, 12))
                    .col(integer(ReportCells::Population))
                    .col(integer(ReportCells::Exempt))
                    .col(integer(ReportCells::Notified))
                    .col(integer(ReportCells::Reached))
                    .col(integer(ReportCells::Appointed))
                    .col(integer(ReportCells::Examined))
                    .col(integer(ReportCells::Refused))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_report_cells_campaign")
                            .from(ReportCells::Table, ReportCells::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Each closed day's figures per village: what the daily series reads (a county's
        // thirty days are a few thousand rows here, against hundreds of thousands of cells).
        manager
            .create_table(
                Table::create()
                    .table(ReportDays::Table)
                    .if_not_exists()
                    .col(pk_auto(ReportDays::Id))
                    .col(integer(ReportDays::CampaignId))
                    .col(date(ReportDays::Day))
                    .col(string_len(ReportDays::VillageCode, 12))
                    .col(string_len(ReportDays::TownshipCode, 12))
                    .col(integer(ReportDays::Population))
                    .col(integer(ReportDays::Exempt))
                    .col(integer(ReportDays::Notified))
                    .col(integer(ReportDays::Reached))
                    .col(integer(ReportDays::Appointed))
                    .col(integer(ReportDays::Examined))
                    .col(integer(ReportDays::Refused))
                    .col(integer(ReportDays::Elsewhere))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_report_days_campaign")
                            .from(ReportDays::Table, ReportDays::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Key groups (resident tags such as hypertension) per village, live only: the
        // targets section of a report.
        manager
            .create_table(
                Table::create()
                    .table(ReportKeyGroups::Table)
                    .if_not_exists()
                    .col(pk_auto(ReportKeyGroups::Id))
                    .col(integer(ReportKeyGroups::CampaignId))
                    .col(string_len(ReportKeyGroups::VillageCode, 12))
                    .col(string_len(ReportKeyGroups::Tag, 32))
                    .col(integer(ReportKeyGroups::Target))
                    .col(integer(ReportKeyGroups::Examined))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_report_key_groups_campaign")
                            .from(ReportKeyGroups::Table, ReportKeyGroups::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Reach figures per village: messages per channel and provider (sent, delivered,
        // failed), the cadres' own contact attempts per channel (made, reached), replies per
        // keyword. Live only.
        manager
            .create_table(
                Table::create()
                    .table(ReportContacts::Table)
                    .if_not_exists()
                    .col(pk_auto(ReportContacts::Id))
                    .col(integer(ReportContacts::CampaignId))
                    .col(string_len(ReportContacts::VillageCode, 12))
                    .col(string_len(ReportContacts::Source, 8))
                    .col(string_len(ReportContacts::Channel, 16))
                    .col(string_len(ReportContacts::Provider, 32))
                    .col(integer(ReportContacts::Total))
                    .col(integer(ReportContacts::Succeeded))
                    .col(integer(ReportContacts::Failed))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_report_contacts_campaign")
                            .from(ReportContacts::Table, ReportContacts::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // When each campaign's live figures were last rebuilt, and the last closed day whose
        // figures are kept.
        manager
            .create_table(
                Table::create()
                    .table(ReportRefreshes::Table)
                    .if_not_exists()
                    .col(integer(ReportRefreshes::CampaignId).primary_key())
                    .col(timestamp_with_time_zone(ReportRefreshes::RefreshedAt))
                    .col(integer(ReportRefreshes::TookMs))
                    .col(date_null(ReportRefreshes::DaysThrough))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_report_refreshes_campaign")
                            .from(ReportRefreshes::Table, ReportRefreshes::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Daily, weekly and monthly bulletins: one row per (campaign, kind, period), claimed
        // before the e-mail goes out, so a period is never sent twice.
        manager
            .create_table(
                Table::create()
                    .table(Bulletins::Table)
                    .if_not_exists()
                    .col(pk_auto(Bulletins::Id))
                    .col(integer(Bulletins::CampaignId))
                    .col(string_len(Bulletins::Kind, 8))
                    .col(string_len(Bulletins::Period, 16))
                    .col(date(Bulletins::PeriodEnd))
                    .col(string_len(Bulletins::Status, 12))
                    .col(text(Bulletins::Recipients))
                    .col(integer(Bulletins::Attempts).default(0))
                    .col(string_len_null(Bulletins::MessageId, 200))
                    .col(text_null(Bulletins::Error))
                    .col(string_len(Bulletins::RequestedBy, 100))
                    .col(timestamp_with_time_zone(Bulletins::CreatedAt))
                    .col(timestamp_with_time_zone(Bulletins::StartedAt))
                    .col(timestamp_with_time_zone_null(Bulletins::FinishedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_bulletins_campaign")
                            .from(Bulletins::Table, Bulletins::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            "CREATE INDEX idx_report_cells_campaign_day ON report_cells \
             (campaign_id, day, village_code)",
            "CREATE UNIQUE INDEX uq_report_days ON report_days (campaign_id, day, village_code)",
            "CREATE INDEX idx_report_key_groups_campaign ON report_key_groups \
             (campaign_id, village_code)",
            "CREATE INDEX idx_report_contacts_campaign ON report_contacts \
             (campaign_id, village_code)",
            "CREATE UNIQUE INDEX uq_bulletins_period ON bulletins (campaign_id, kind, period)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Bulletins::Table.into_iden(),
            ReportRefreshes::Table.into_iden(),
            ReportContacts::Table.into_iden(),
            ReportKeyGroups::Table.into_iden(),
            ReportDays::Table.into_iden(),
            ReportCells::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ReportCells {
    Table,
    Id,
    CampaignId,
    Day,
    VillageCode,
    TownshipCode,
    Cohort,
    MigrantType,
    Special,
    Route,
    ExamArea,
    Population,
    Exempt,
    Notified,
    Reached,
    Appointed,
    Examined,
    Refused,
}

#[derive(DeriveIden)]
enum ReportDays {
    Table,
    Id,
    CampaignId,
    Day,
    VillageCode,
    TownshipCode,
    Population,
    Exempt,
    Notified,
    Reached,
    Appointed,
    Examined,
    Refused,
    Elsewhere,
}

#[derive(DeriveIden)]
enum ReportKeyGroups {
    Table,
    Id,
    CampaignId,
    VillageCode,
    Tag,
    Target,
    Examined,
}

#[derive(DeriveIden)]
enum ReportContacts {
    Table,
    Id,
    CampaignId,
    VillageCode,
    Source,
    Channel,
    Provider,
    Total,
    Succeeded,
    Failed,
}

#[derive(DeriveIden)]
enum ReportRefreshes {
    Table,
    CampaignId,
    RefreshedAt,
    TookMs,
    DaysThrough,
}

#[derive(DeriveIden)]
enum Bulletins {
    Table,
    Id,
    CampaignId,
    Kind,
    Period,
    PeriodEnd,
    Status,
    Recipients,
    Attempts,
    MessageId,
    Error,
    RequestedBy,
    CreatedAt,
    StartedAt,
    FinishedAt,
}
