use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261123_000006_create_campaigns::{Campaigns, Residents};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ContactAttempts::Table)
                    .if_not_exists()
                    .col(pk_auto(ContactAttempts::Id))
                    .col(integer(ContactAttempts::CampaignId))
                    .col(integer(ContactAttempts::ResidentId))
                    .col(char_len(ContactAttempts::VillageCode, 12))
                    .col(timestamp_with_time_zone(ContactAttempts::AttemptedAt))
                    .col(date(ContactAttempts::Day))
                    .col(string_len(ContactAttempts::Channel, 16))
                    .col(string_len(ContactAttempts::Contact, 16))
                    .col(string_len(ContactAttempts::Outcome, 24))
                    .col(boolean(ContactAttempts::Reached))
                    .col(text_null(ContactAttempts::Note))
                    .col(integer_null(ContactAttempts::MessageId))
                    .col(integer_null(ContactAttempts::RecordedBy))
                    .col(timestamp_with_time_zone(ContactAttempts::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_contact_attempts_campaign")
                            .from(ContactAttempts::Table, ContactAttempts::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_contact_attempts_resident")
                            .from(ContactAttempts::Table, ContactAttempts::ResidentId)
                            .to(Residents::Table, Residents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            "CREATE INDEX idx_contact_attempts_resident ON contact_attempts \
             (campaign_id, resident_id, attempted_at)",
            // A delivered message counts once, however often its receipt comes.
            "CREATE UNIQUE INDEX uq_contact_attempts_message ON contact_attempts (message_id) \
             WHERE message_id IS NOT NULL",
        ] {
            db.execute_unprepared(statement).await?;
        }
        // Signature images of refusal registrations, content-addressed.
        manager
            .create_table(
                Table::create()
                    .table(SignatureBlobs::Table)
                    .if_not_exists()
                    .col(string_len(SignatureBlobs::Sha256, 64).primary_key())
                    .col(blob(SignatureBlobs::Content))
                    .col(integer(SignatureBlobs::Width))
                    .col(integer(SignatureBlobs::Height))
                    .col(integer(SignatureBlobs::Size))
                    .col(timestamp_with_time_zone(SignatureBlobs::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            SignatureBlobs::Table.into_iden(),
            ContactAttempts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ContactAttempts {
    Table,
    Id,
    CampaignId,
    ResidentId,
    VillageCode,
    AttemptedAt,
    Day,
    Channel,
    Contact,
    Outcome,
    Reached,
    Note,
    MessageId,
    RecordedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum SignatureBlobs {
    Table,
    Sha256,
    Content,
    Width,
    Height,
    Size,
    CreatedAt,
}
