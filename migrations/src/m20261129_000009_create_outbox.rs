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
                    .table(Waves::Table)
                    .if_not_exists()
                    .col(pk_auto(Waves::Id))
                    .col(integer(Waves::CampaignId))
                    .col(string_len(Waves::Name, 100))
                    .col(string_len(Waves::Kind, 32))
                    .col(text(Waves::Audience))
                    .col(date(Waves::WindowStart))
                    .col(date(Waves::WindowEnd))
                    .col(timestamp_with_time_zone(Waves::SendAt))
                    .col(timestamp_with_time_zone(Waves::ExpiresAt))
                    .col(string_len(Waves::Status, 12))
                    .col(integer(Waves::Planned).default(0))
                    .col(integer_null(Waves::CreatedBy))
                    .col(timestamp_with_time_zone(Waves::CreatedAt))
                    .col(timestamp_with_time_zone_null(Waves::CancelledAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_waves_campaign")
                            .from(Waves::Table, Waves::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(pk_auto(Messages::Id))
                    .col(integer(Messages::CampaignId))
                    .col(integer(Messages::ResidentId))
                    .col(string_len(Messages::Kind, 32))
                    .col(integer_null(Messages::AppointmentId))
                    .col(integer_null(Messages::WaveId))
                    .col(string_len(Messages::IdempotencyKey, 120))
                    .col(string_len(Messages::State, 12))
                    .col(timestamp_with_time_zone(Messages::DueAt))
                    .col(timestamp_with_time_zone(Messages::ExpiresAt))
                    .col(timestamp_with_time_zone(Messages::NextAttemptAt))
                    .col(integer(Messages::Attempts).default(0))
                    .col(integer(Messages::Step).default(0))
                    .col(string_len_null(Messages::Route, 16))
                    .col(string_len_null(Messages::Channel, 16))
                    .col(string_len_null(Messages::Recipient, 64))
                    .col(string_len_null(Messages::Provider, 32))
                    .col(string_len_null(Messages::ProviderMessageId, 100))
                    .col(text_null(Messages::Body))
                    .col(integer_null(Messages::Segments))
                    .col(text_null(Messages::LastError))
                    .col(timestamp_with_time_zone_null(Messages::LeaseUntil))
                    .col(string_len_null(Messages::LeasedBy, 64))
                    .col(timestamp_with_time_zone(Messages::CreatedAt))
                    .col(timestamp_with_time_zone_null(Messages::QueuedAt))
                    .col(timestamp_with_time_zone_null(Messages::SendingAt))
                    .col(timestamp_with_time_zone_null(Messages::SentAt))
                    .col(timestamp_with_time_zone_null(Messages::DeliveredAt))
                    .col(timestamp_with_time_zone_null(Messages::FailedAt))
                    .col(timestamp_with_time_zone_null(Messages::ExpiredAt))
                    .col(timestamp_with_time_zone_null(Messages::CancelledAt))
                    .col(timestamp_with_time_zone_null(Messages::SuppressedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_messages_campaign")
                            .from(Messages::Table, Messages::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_messages_resident")
                            .from(Messages::Table, Messages::ResidentId)
                            .to(Residents::Table, Residents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            "CREATE UNIQUE INDEX uq_messages_idempotency_key ON messages (idempotency_key)",
            // Workers look for due rows of the two waiting states only.
            "CREATE INDEX idx_messages_due ON messages (state, next_attempt_at) \
             WHERE state IN ('scheduled', 'queued', 'sending')",
            "CREATE INDEX idx_messages_resident ON messages (resident_id, created_at)",
            "CREATE INDEX idx_messages_appointment ON messages (appointment_id) \
             WHERE appointment_id IS NOT NULL",
            "CREATE INDEX idx_messages_wave ON messages (wave_id) WHERE wave_id IS NOT NULL",
            "CREATE INDEX idx_messages_provider_id ON messages (provider, provider_message_id) \
             WHERE provider_message_id IS NOT NULL",
        ] {
            db.execute_unprepared(statement).await?;
        }
        // Receipts that arrive before the send they belong to is recorded (a fast gateway),
        // kept until it is.
        manager
            .create_table(
                Table::create()
                    .table(PendingReceipts::Table)
                    .if_not_exists()
                    .col(pk_auto(PendingReceipts::Id))
                    .col(string_len(PendingReceipts::Provider, 32))
                    .col(string_len(PendingReceipts::ProviderMessageId, 100))
                    .col(string_len(PendingReceipts::Status, 12))
                    .col(text_null(PendingReceipts::Reason))
                    .col(timestamp_with_time_zone_null(PendingReceipts::At))
                    .col(timestamp_with_time_zone(PendingReceipts::ReceivedAt))
                    .col(integer(PendingReceipts::Tries).default(0))
                    .col(timestamp_with_time_zone(PendingReceipts::NextTryAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InboundReplies::Table)
                    .if_not_exists()
                    .col(pk_auto(InboundReplies::Id))
                    .col(string_len(InboundReplies::Provider, 32))
                    .col(string_len_null(InboundReplies::ProviderId, 100))
                    .col(blob_null(InboundReplies::FromIndex))
                    .col(string_len(InboundReplies::FromMasked, 64))
                    .col(text(InboundReplies::Text))
                    .col(string_len(InboundReplies::Action, 16))
                    .col(integer_null(InboundReplies::ResidentId))
                    .col(integer_null(InboundReplies::MessageId))
                    .col(char_len_null(InboundReplies::VillageCode, 12))
                    .col(timestamp_with_time_zone(InboundReplies::ReceivedAt))
                    .col(timestamp_with_time_zone_null(InboundReplies::HandledAt))
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_inbound_replies_village ON inbound_replies (village_code, received_at)",
        )
        .await?;
        // A provider that pushes a reply twice: acted on once.
        db.execute_unprepared(
            "CREATE UNIQUE INDEX uq_inbound_replies_provider_id ON inbound_replies \
             (provider, provider_id) WHERE provider_id IS NOT NULL",
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(OutreachTasks::Table)
                    .if_not_exists()
                    .col(pk_auto(OutreachTasks::Id))
                    .col(integer(OutreachTasks::CampaignId))
                    .col(integer(OutreachTasks::ResidentId))
                    .col(char_len(OutreachTasks::VillageCode, 12))
                    .col(string_len(OutreachTasks::Kind, 24))
                    .col(string_len(OutreachTasks::DedupeKey, 120))
                    .col(integer_null(OutreachTasks::MessageId))
                    .col(integer_null(OutreachTasks::ReplyId))
                    .col(text_null(OutreachTasks::Note))
                    .col(timestamp_with_time_zone(OutreachTasks::CreatedAt))
                    .col(timestamp_with_time_zone_null(OutreachTasks::DoneAt))
                    .col(integer_null(OutreachTasks::DoneBy))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_outreach_tasks_campaign")
                            .from(OutreachTasks::Table, OutreachTasks::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_outreach_tasks_resident")
                            .from(OutreachTasks::Table, OutreachTasks::ResidentId)
                            .to(Residents::Table, Residents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for statement in [
            "CREATE UNIQUE INDEX uq_outreach_tasks_key ON outreach_tasks (dedupe_key)",
            "CREATE INDEX idx_outreach_tasks_village ON outreach_tasks (village_code, created_at)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ProviderTokens::Table)
                    .if_not_exists()
                    .col(string_len(ProviderTokens::Account, 100).primary_key())
                    .col(blob(ProviderTokens::TokenCipher))
                    .col(timestamp_with_time_zone(ProviderTokens::ExpiresAt))
                    .col(timestamp_with_time_zone(ProviderTokens::RefreshedAt))
                    .to_owned(),
            )
            .await?;
        // A resident's "1"/确认 reply confirms the appointment.
        manager
            .alter_table(
                Table::alter()
                    .table(Appointments::Table)
                    .add_column(timestamp_with_time_zone_null(Appointments::ConfirmedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Institutions::Table)
                    .add_column(string_len_null(Institutions::Address, 200))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            PendingReceipts::Table.into_iden(),
            ProviderTokens::Table.into_iden(),
            OutreachTasks::Table.into_iden(),
            InboundReplies::Table.into_iden(),
            Messages::Table.into_iden(),
            Waves::Table.into_iden(),
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
    ConfirmedAt,
}

#[derive(DeriveIden)]
enum Institutions {
    Table,
    Address,
}

#[derive(DeriveIden)]
enum Waves {
    Table,
    Id,
    CampaignId,
    Name,
    Kind,
    Audience,
    WindowStart,
    WindowEnd,
    SendAt,
    ExpiresAt,
    Status,
    Planned,
    CreatedBy,
    CreatedAt,
    CancelledAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    CampaignId,
    ResidentId,
    Kind,
    AppointmentId,
    WaveId,
    IdempotencyKey,
    State,
    DueAt,
    ExpiresAt,
    NextAttemptAt,
    Attempts,
    Step,
    Route,
    Channel,
    Recipient,
    Provider,
    ProviderMessageId,
    Body,
    Segments,
    LastError,
    LeaseUntil,
    LeasedBy,
    CreatedAt,
    QueuedAt,
    SendingAt,
    SentAt,
    DeliveredAt,
    FailedAt,
    ExpiredAt,
    CancelledAt,
    SuppressedAt,
}

#[derive(DeriveIden)]
enum PendingReceipts {
    Table,
    Id,
    Provider,
    ProviderMessageId,
    Status,
    Reason,
    At,
    ReceivedAt,
    Tries,
    NextTryAt,
}

#[derive(DeriveIden)]
enum InboundReplies {
    Table,
    Id,
    Provider,
    ProviderId,
    FromIndex,
    FromMasked,
    Text,
    Action,
    ResidentId,
    MessageId,
    VillageCode,
    ReceivedAt,
    HandledAt,
}

#[derive(DeriveIden)]
enum OutreachTasks {
    Table,
    Id,
    CampaignId,
    ResidentId,
    VillageCode,
    Kind,
    DedupeKey,
    MessageId,
    ReplyId,
    Note,
    CreatedAt,
    DoneAt,
    DoneBy,
}

#[derive(DeriveIden)]
enum ProviderTokens {
    Table,
    Account,
    TokenCipher,
    ExpiresAt,
    RefreshedAt,
}
