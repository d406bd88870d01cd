use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `messages.handed_over_at`: when the worker that holds a message's lease was about to
/// hand it to its provider, committed before the call, so that a message a crash left
/// `sending` is queued again when it never went out (see `workers::dispatch`).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("messages"))
                    .add_column(timestamp_with_time_zone_null(Alias::new("handed_over_at")))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("messages"))
                    .drop_column(Alias::new("handed_over_at"))
                    .to_owned(),
            )
            .await
    }
}
