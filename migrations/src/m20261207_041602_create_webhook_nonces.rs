use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The nonces of signed callbacks seen recently (WeChat signs timestamp and nonce):
        // a second call with the same nonce inside the accepted clock skew is a replay. Kept
        // in the database so several instances behind one address share them; rows are
        // deleted once their timestamp is too old to be accepted anyway.
        manager
            .create_table(
                Table::create()
                    .table(WebhookNonces::Table)
                    .if_not_exists()
                    .col(string_len(WebhookNonces::Provider, 16))
                    .col(string_len(WebhookNonces::Nonce, 64))
                    .col(timestamp_with_time_zone(WebhookNonces::ExpiresAt))
                    .primary_key(
                        Index::create()
                            .col(WebhookNonces::Provider)
                            .col(WebhookNonces::Nonce),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_nonces_expires_at")
                    .table(WebhookNonces::Table)
                    .col(WebhookNonces::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookNonces::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookNonces {
    Table,
    Provider,
    Nonce,
    ExpiresAt,
}
