use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The keys a cadre's phone chose for the bookings and refusal registrations it queued. A
/// key is claimed in the transaction that writes the record, before anything else, so of two
/// uploads of one entry (a retry after a lost answer, two open tabs) exactly one writes and
/// the other is answered with what the first wrote. `subject` is what the key was used for
/// (the residents booked, the resident registered), so one key cannot stand for two entries.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClientKeys::Table)
                    .col(
                        ColumnDef::new(ClientKeys::ClientKey)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ClientKeys::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(ClientKeys::CampaignId).integer().not_null())
                    .col(ColumnDef::new(ClientKeys::Subject).text().not_null())
                    .col(ColumnDef::new(ClientKeys::Entity).string_len(64).null())
                    .col(ColumnDef::new(ClientKeys::UserId).integer().null())
                    .col(
                        ColumnDef::new(ClientKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ClientKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ClientKeys {
    Table,
    ClientKey,
    Kind,
    CampaignId,
    Subject,
    Entity,
    UserId,
    CreatedAt,
}
