use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000001_create_areas::Areas;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(pk_auto(Users::Id))
                    .col(string_len_uniq(Users::Username, 64))
                    .col(string_len_null(Users::DisplayName, 100))
                    .col(string_len(Users::PasswordHash, 255))
                    .col(string_len(Users::Role, 16))
                    .col(char_len_null(Users::AreaCode, 12))
                    .col(boolean(Users::Active).default(true))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone(Users::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_users_area")
                            .from(Users::Table, Users::AreaCode)
                            .to(Areas::Table, Areas::Code)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_users_area_code")
                    .table(Users::Table)
                    .col(Users::AreaCode)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuthTokens::Table)
                    .if_not_exists()
                    .col(pk_auto(AuthTokens::Id))
                    .col(integer(AuthTokens::UserId))
                    .col(char_len_uniq(AuthTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(AuthTokens::CreatedAt))
                    .col(timestamp_with_time_zone(AuthTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(AuthTokens::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_auth_tokens_user")
                            .from(AuthTokens::Table, AuthTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_auth_tokens_user_id")
                    .table(AuthTokens::Table)
                    .col(AuthTokens::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_auth_tokens_expires_at")
                    .table(AuthTokens::Table)
                    .col(AuthTokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuthTokens::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    DisplayName,
    PasswordHash,
    Role,
    AreaCode,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuthTokens {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}
