use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Messages whose delivery receipt never came (`unconfirmed`): the `sent` rows by provider
/// and time, for the sweep that finds those past their provider's receipt timeout, and
/// `report_contacts.unconfirmed`, their number per channel and provider in the contacts
/// report.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("report_contacts"))
                    .add_column(integer(Alias::new("unconfirmed")).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_messages_awaiting_receipt ON messages (provider, sent_at) \
                 WHERE state = 'sent'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX idx_messages_awaiting_receipt")
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("report_contacts"))
                    .drop_column(Alias::new("unconfirmed"))
                    .to_owned(),
            )
            .await
    }
}
