use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261123_000006_create_campaigns::{Campaigns, Residents};
use crate::m20261123_000007_create_institutions::Institutions;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Appointments::Table)
                    .if_not_exists()
                    .col(pk_auto(Appointments::Id))
                    .col(integer(Appointments::CampaignId))
                    .col(integer(Appointments::ResidentId))
                    .col(integer(Appointments::InstitutionId))
                    .col(date(Appointments::Day))
                    .col(string_len(Appointments::Status, 12))
                    .col(string_len(Appointments::BookingRef, 36))
                    .col(integer_null(Appointments::BookedBy))
                    .col(string_len_null(Appointments::Reason, 200))
                    .col(timestamp_with_time_zone_null(Appointments::AttendedAt))
                    .col(timestamp_with_time_zone_null(Appointments::CancelledAt))
                    .col(timestamp_with_time_zone(Appointments::CreatedAt))
                    .col(timestamp_with_time_zone(Appointments::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_appointments_campaign")
                            .from(Appointments::Table, Appointments::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_appointments_resident")
                            .from(Appointments::Table, Appointments::ResidentId)
                            .to(Residents::Table, Residents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_appointments_institution")
                            .from(Appointments::Table, Appointments::InstitutionId)
                            .to(Institutions::Table, Institutions::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_appointments_day")
                    .table(Appointments::Table)
                    .col(Appointments::InstitutionId)
                    .col(Appointments::Day)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_appointments_campaign_status")
                    .table(Appointments::Table)
                    .col(Appointments::CampaignId)
                    .col(Appointments::Status)
                    .col(Appointments::Day)
                    .to_owned(),
            )
            .await?;
        // One active appointment per resident and campaign, held by the database itself so
        // that two cadres booking the same person at once cannot both succeed.
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE UNIQUE INDEX uq_appointments_active ON appointments (campaign_id, resident_id) \
             WHERE status = 'booked'",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_appointments_resident ON appointments (resident_id)",
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(ExamRecords::Table)
                    .if_not_exists()
                    .col(pk_auto(ExamRecords::Id))
                    .col(integer(ExamRecords::CampaignId))
                    .col(integer(ExamRecords::ResidentId))
                    .col(date(ExamRecords::ExaminedOn))
                    .col(integer_null(ExamRecords::InstitutionId))
                    .col(string_len(ExamRecords::Source, 16))
                    .col(string_len_null(ExamRecords::Place, 200))
                    .col(string_len_null(ExamRecords::Examiner, 100))
                    .col(string_len_null(ExamRecords::Note, 500))
                    .col(string_len_null(ExamRecords::EvidenceName, 200))
                    .col(string_len_null(ExamRecords::EvidenceType, 100))
                    .col(blob_null(ExamRecords::Evidence))
                    .col(integer_null(ExamRecords::AppointmentId))
                    .col(integer_null(ExamRecords::RecordedBy))
                    .col(string_len(ExamRecords::RecordedByName, 64))
                    .col(timestamp_with_time_zone(ExamRecords::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_exam_records_campaign")
                            .from(ExamRecords::Table, ExamRecords::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_exam_records_resident")
                            .from(ExamRecords::Table, ExamRecords::ResidentId)
                            .to(Residents::Table, Residents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_exam_records_institution")
                            .from(ExamRecords::Table, ExamRecords::InstitutionId)
                            .to(Institutions::Table, Institutions::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        // 杜绝重复体检: one exam per resident and campaign, whoever records it.
        manager
            .create_index(
                Index::create()
                    .name("uq_exam_records_campaign_resident")
                    .table(ExamRecords::Table)
                    .col(ExamRecords::CampaignId)
                    .col(ExamRecords::ResidentId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_exam_records_institution")
                    .table(ExamRecords::Table)
                    .col(ExamRecords::CampaignId)
                    .col(ExamRecords::InstitutionId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ExamRecords::Table.into_iden(),
            Appointments::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Appointments {
    Table,
    Id,
    CampaignId,
    ResidentId,
    InstitutionId,
    Day,
    Status,
    BookingRef,
    BookedBy,
    Reason,
    AttendedAt,
    CancelledAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ExamRecords {
    Table,
    Id,
    CampaignId,
    ResidentId,
    ExaminedOn,
    InstitutionId,
    Source,
    Place,
    Examiner,
    Note,
    EvidenceName,
    EvidenceType,
    Evidence,
    AppointmentId,
    RecordedBy,
    RecordedByName,
    CreatedAt,
}
