use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Areas::Table)
                    .if_not_exists()
                    .col(char_len(Areas::Code, 12).primary_key())
                    .col(string_len(Areas::Name, 100))
                    .col(string_len(Areas::Level, 16))
                    .col(char_len_null(Areas::ParentCode, 12))
                    .col(timestamp_with_time_zone(Areas::CreatedAt))
                    .col(timestamp_with_time_zone(Areas::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_areas_parent")
                            .from(Areas::Table, Areas::ParentCode)
                            .to(Areas::Table, Areas::Code)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_areas_parent_code")
                    .table(Areas::Table)
                    .col(Areas::ParentCode)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Areas::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub(crate) enum Areas {
    Table,
    Code,
    Name,
    Level,
    ParentCode,
    CreatedAt,
    UpdatedAt,
}
