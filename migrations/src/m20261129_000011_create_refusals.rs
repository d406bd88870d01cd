use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

use crate::m20261123_000006_create_campaigns::Residents;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The refusal rule of each campaign: this many documented attempts on this many
        // different days before a refusal may be registered.
        for (column, default) in [
            (Campaigns::RefusalMinAttempts, 3),
            (Campaigns::RefusalMinDays, 2),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Campaigns::Table)
                        .add_column(integer(column).default(default))
                        .to_owned(),
                )
                .await?;
        }
        // The area a contact attempt's recorder was responsible for when they logged it: a
        // refusal rests only on attempts made by those responsible for the resident's village.
        manager
            .alter_table(
                Table::alter()
                    .table(ContactAttempts::Table)
                    .add_column(char_len_null(ContactAttempts::RecordedArea, 12))
                    .to_owned(),
            )
            .await?;
        // The refusal register: registrations and everything that happens to them (confirmed,
        // returned, revoked) as records that are only ever appended, chained per resident by
        // the hash of the previous record.
        manager
            .create_table(
                Table::create()
                    .table(RefusalRecords::Table)
                    .if_not_exists()
                    .col(pk_auto(RefusalRecords::Id))
                    .col(integer(RefusalRecords::CampaignId))
                    .col(integer(RefusalRecords::ResidentId))
                    .col(char_len(RefusalRecords::VillageCode, 12))
                    .col(integer(RefusalRecords::Seq))
                    .col(string_len(RefusalRecords::Kind, 16))
                    .col(integer_null(RefusalRecords::RegistrationId))
                    .col(integer_null(RefusalRecords::Supersedes))
                    .col(string_len_null(RefusalRecords::ReasonCode, 24))
                    .col(text_null(RefusalRecords::ReasonText))
                    .col(string_len_null(RefusalRecords::SignerName, 64))
                    .col(string_len_null(RefusalRecords::SignerRelation, 16))
                    .col(char_len_null(RefusalRecords::SignatureSha256, 64))
                    .col(integer_null(RefusalRecords::WitnessUserId))
                    .col(string_len_null(RefusalRecords::WitnessName, 100))
                    .col(text_null(RefusalRecords::AttemptIds))
                    .col(text_null(RefusalRecords::Location))
                    .col(integer_null(RefusalRecords::ExamRecordId))
                    .col(text_null(RefusalRecords::Note))
                    .col(integer_null(RefusalRecords::RecordedBy))
                    .col(string_len(RefusalRecords::RecordedByName, 100))
                    .col(timestamp_with_time_zone(RefusalRecords::RecordedAt))
                    .col(char_len(RefusalRecords::PrevHash, 64))
                    .col(char_len(RefusalRecords::Hash, 64))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refusal_records_campaign")
                            .from(RefusalRecords::Table, RefusalRecords::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refusal_records_resident")
                            .from(RefusalRecords::Table, RefusalRecords::ResidentId)
                            .to(Residents::Table, Residents::Id),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            // One successor per record: two writers cannot fork a resident's chain.
            "CREATE UNIQUE INDEX uq_refusal_records_chain ON refusal_records \
             (resident_id, prev_hash)",
            "CREATE UNIQUE INDEX uq_refusal_records_seq ON refusal_records (resident_id, seq)",
            "CREATE INDEX idx_refusal_records_register ON refusal_records \
             (campaign_id, village_code, kind)",
            "CREATE INDEX idx_refusal_records_registration ON refusal_records (registration_id)",
            "CREATE INDEX idx_refusal_records_supersedes ON refusal_records (supersedes)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        // Never updated, never deleted — the records and the signature images they name:
        // enforced by the database, not only by the code.
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE OR REPLACE FUNCTION refusal_records_append_only() RETURNS trigger AS $$
                     BEGIN RAISE EXCEPTION 'refusal_records is append-only'; END;
                     $$ LANGUAGE plpgsql;
                     CREATE TRIGGER refusal_records_no_update BEFORE UPDATE OR DELETE
                     ON refusal_records
                     FOR EACH ROW EXECUTE FUNCTION refusal_records_append_only();
                     CREATE TRIGGER refusal_records_no_truncate BEFORE TRUNCATE ON refusal_records
                     FOR EACH STATEMENT EXECUTE FUNCTION refusal_records_append_only();
                     CREATE TRIGGER signature_blobs_no_update BEFORE UPDATE OR DELETE
                     ON signature_blobs
                     FOR EACH ROW EXECUTE FUNCTION refusal_records_append_only();",
                )
                .await?;
            }
            _ => {
                for (table, event) in [
                    ("refusal_records", "UPDATE"),
                    ("refusal_records", "DELETE"),
                    ("signature_blobs", "UPDATE"),
                    ("signature_blobs", "DELETE"),
                ] {
                    let name = format!("{table}_no_{}", event.to_lowercase());
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER {name} BEFORE {event} ON {table}
                         BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RefusalRecords::Table).to_owned())
            .await?;
        let db = manager.get_connection();
        for trigger in ["signature_blobs_no_update", "signature_blobs_no_delete"] {
            if manager.get_database_backend() == DbBackend::Postgres {
                db.execute_unprepared(&format!(
                    "DROP TRIGGER IF EXISTS {trigger} ON signature_blobs"
                ))
                .await?;
            } else {
                db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {trigger}"))
                    .await?;
            }
        }
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("DROP FUNCTION IF EXISTS refusal_records_append_only()")
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(ContactAttempts::Table)
                    .drop_column(ContactAttempts::RecordedArea)
                    .to_owned(),
            )
            .await?;
        for column in [Campaigns::RefusalMinAttempts, Campaigns::RefusalMinDays] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Campaigns::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum RefusalRecords {
    Table,
    Id,
    CampaignId,
    ResidentId,
    VillageCode,
    Seq,
    Kind,
    RegistrationId,
    Supersedes,
    ReasonCode,
    ReasonText,
    SignerName,
    SignerRelation,
    SignatureSha256,
    WitnessUserId,
    WitnessName,
    AttemptIds,
    Location,
    ExamRecordId,
    Note,
    RecordedBy,
    RecordedByName,
    RecordedAt,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    Id,
    RefusalMinAttempts,
    RefusalMinDays,
}

#[derive(DeriveIden)]
enum ContactAttempts {
    Table,
    RecordedArea,
}
