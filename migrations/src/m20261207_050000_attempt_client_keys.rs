use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Contact attempts carry the key the client that made them chose (the cadre's phone, which
/// may send one entry again after losing the answer, or hold it offline for hours). A unique
/// index makes the attempt itself the record that the key was taken, so a retried upload
/// never writes a second attempt; attempts logged without a key (NULL) are unaffected.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("contact_attempts"))
                    .add_column(
                        ColumnDef::new(Alias::new("client_key"))
                            .string_len(64)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("contact_attempts_client_key")
                    .table(Alias::new("contact_attempts"))
                    .col(Alias::new("client_key"))
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("contact_attempts_client_key")
                    .table(Alias::new("contact_attempts"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("contact_attempts"))
                    .drop_column(Alias::new("client_key"))
                    .to_owned(),
            )
            .await
    }
}
