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
                    .table(Institutions::Table)
                    .if_not_exists()
                    .col(pk_auto(Institutions::Id))
                    .col(string_len(Institutions::Code, 32).unique_key())
                    .col(string_len(Institutions::Name, 100))
                    .col(string_len(Institutions::Kind, 24))
                    .col(char_len(Institutions::AreaCode, 12))
                    .col(integer(Institutions::DailyCapacity))
                    .col(string_len(Institutions::ClosedWeekdays, 16))
                    .col(boolean(Institutions::Active).default(true))
                    .col(timestamp_with_time_zone(Institutions::CreatedAt))
                    .col(timestamp_with_time_zone(Institutions::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_institutions_area")
                            .from(Institutions::Table, Institutions::AreaCode)
                            .to(Areas::Table, Areas::Code)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(InstitutionAreas::Table)
                    .if_not_exists()
                    .col(pk_auto(InstitutionAreas::Id))
                    .col(integer(InstitutionAreas::InstitutionId))
                    .col(char_len(InstitutionAreas::AreaCode, 12))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_institution_areas_institution")
                            .from(InstitutionAreas::Table, InstitutionAreas::InstitutionId)
                            .to(Institutions::Table, Institutions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_institution_areas_area")
                            .from(InstitutionAreas::Table, InstitutionAreas::AreaCode)
                            .to(Areas::Table, Areas::Code)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_institution_areas")
                    .table(InstitutionAreas::Table)
                    .col(InstitutionAreas::InstitutionId)
                    .col(InstitutionAreas::AreaCode)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // One row per institution and day that has been booked or edited; `booked` is only
        // ever changed by a conditional update that keeps it within `capacity`.
        manager
            .create_table(
                Table::create()
                    .table(InstitutionDays::Table)
                    .if_not_exists()
                    .col(pk_auto(InstitutionDays::Id))
                    .col(integer(InstitutionDays::InstitutionId))
                    .col(date(InstitutionDays::Day))
                    .col(integer(InstitutionDays::Capacity))
                    .col(integer(InstitutionDays::Booked).default(0))
                    .col(boolean(InstitutionDays::Closed).default(false))
                    .col(string_len_null(InstitutionDays::Note, 100))
                    .col(boolean(InstitutionDays::Overridden).default(false))
                    .col(timestamp_with_time_zone(InstitutionDays::UpdatedAt))
                    .check(Expr::col(InstitutionDays::Booked).gte(0))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_institution_days_institution")
                            .from(InstitutionDays::Table, InstitutionDays::InstitutionId)
                            .to(Institutions::Table, Institutions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_institution_days")
                    .table(InstitutionDays::Table)
                    .col(InstitutionDays::InstitutionId)
                    .col(InstitutionDays::Day)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // Institution staff act for one institution. The same statement works on both
        // databases (SQLite allows a REFERENCES clause on an added nullable column).
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE users ADD COLUMN institution_id INTEGER REFERENCES institutions (id)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::InstitutionId)
                    .to_owned(),
            )
            .await?;
        for table in [
            InstitutionDays::Table.into_iden(),
            InstitutionAreas::Table.into_iden(),
            Institutions::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
pub enum Institutions {
    Table,
    Id,
    Code,
    Name,
    Kind,
    AreaCode,
    DailyCapacity,
    ClosedWeekdays,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum InstitutionAreas {
    Table,
    Id,
    InstitutionId,
    AreaCode,
}

#[derive(DeriveIden)]
enum InstitutionDays {
    Table,
    Id,
    InstitutionId,
    Day,
    Capacity,
    Booked,
    Closed,
    Note,
    Overridden,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    InstitutionId,
}
