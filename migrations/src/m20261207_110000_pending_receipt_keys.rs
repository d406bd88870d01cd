use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `pending_receipts.message_key`: the idempotency key a kept receipt's URL was signed for
/// (Jasmin), so that a receipt that came while its message was still `sending` can show,
/// once the message's worker is found dead and the message failed as "outcome unknown",
/// that it went out (see `outreach::inbound::recover_unknown`).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("pending_receipts"))
                    .add_column(string_len_null(Alias::new("message_key"), 200))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("pending_receipts"))
                    .drop_column(Alias::new("message_key"))
                    .to_owned(),
            )
            .await
    }
}
