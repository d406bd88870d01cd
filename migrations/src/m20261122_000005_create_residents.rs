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
                    .table(Residents::Table)
                    .if_not_exists()
                    .col(pk_auto(Residents::Id))
                    .col(blob(Residents::IdIndex))
                    .col(blob(Residents::IdCipher))
                    .col(string_len(Residents::IdMasked, 18))
                    .col(string_len(Residents::Name, 100))
                    .col(char_len(Residents::Sex, 1))
                    .col(date(Residents::BirthDate))
                    .col(char_len(Residents::VillageCode, 12))
                    .col(string_len(Residents::Language, 4))
                    .col(string_len(Residents::MigrantType, 24))
                    .col(date_null(Residents::PermitSince))
                    .col(string_len_null(Residents::Special, 24))
                    .col(text_null(Residents::CurrentAddress))
                    .col(blob_null(Residents::PhoneCipher))
                    .col(blob_null(Residents::PhoneIndex))
                    .col(string_len_null(Residents::PhoneMasked, 11))
                    .col(boolean(Residents::PhoneOptOut).default(false))
                    .col(string_len_null(Residents::RelativeName, 100))
                    .col(string_len_null(Residents::RelativeRelation, 20))
                    .col(blob_null(Residents::RelativePhoneCipher))
                    .col(blob_null(Residents::RelativePhoneIndex))
                    .col(string_len_null(Residents::RelativePhoneMasked, 11))
                    .col(boolean(Residents::RelativeOptOut).default(false))
                    .col(string_len_null(Residents::WechatOpenid, 64))
                    .col(boolean(Residents::WechatOptOut).default(false))
                    .col(string_len_null(Residents::Email, 254))
                    .col(boolean(Residents::EmailOptOut).default(false))
                    .col(timestamp_with_time_zone(Residents::CreatedAt))
                    .col(timestamp_with_time_zone(Residents::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_residents_village")
                            .from(Residents::Table, Residents::VillageCode)
                            .to(Areas::Table, Areas::Code)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_residents_id_index")
                    .table(Residents::Table)
                    .col(Residents::IdIndex)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_residents_village_code")
                    .table(Residents::Table)
                    .col(Residents::VillageCode)
                    .to_owned(),
            )
            .await?;
        // Phone lookups (a reply from a number) only ever look for a number that exists, and
        // many residents have none: partial indexes stay small and cheap to maintain.
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX idx_residents_phone_index ON residents (phone_index) \
             WHERE phone_index IS NOT NULL",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_residents_relative_phone_index ON residents (relative_phone_index) \
             WHERE relative_phone_index IS NOT NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Residents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Residents {
    Table,
    Id,
    IdIndex,
    IdCipher,
    IdMasked,
    Name,
    Sex,
    BirthDate,
    VillageCode,
    Language,
    MigrantType,
    PermitSince,
    Special,
    CurrentAddress,
    PhoneCipher,
    PhoneIndex,
    PhoneMasked,
    PhoneOptOut,
    RelativeName,
    RelativeRelation,
    RelativePhoneCipher,
    RelativePhoneIndex,
    RelativePhoneMasked,
    RelativeOptOut,
    WechatOpenid,
    WechatOptOut,
    Email,
    EmailOptOut,
    CreatedAt,
    UpdatedAt,
}
