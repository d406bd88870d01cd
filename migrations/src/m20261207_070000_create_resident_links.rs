use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The resident's own appointment link (`/r/{code}`): one random code per resident and
/// campaign. The code itself is kept only encrypted (to be written into later messages) and
/// as a blind index (to find its row when the link is opened), so a copy of the database
/// holds no code that opens a page.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ResidentLinks::Table)
                    .if_not_exists()
                    .col(pk_auto(ResidentLinks::Id))
                    .col(integer(ResidentLinks::CampaignId))
                    .col(integer(ResidentLinks::ResidentId))
                    .col(blob(ResidentLinks::CodeIndex))
                    .col(blob(ResidentLinks::CodeEnc))
                    .col(timestamp_with_time_zone(ResidentLinks::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ResidentLinks::Table, ResidentLinks::CampaignId)
                            .to(Alias::new("campaigns"), Alias::new("id"))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ResidentLinks::Table, ResidentLinks::ResidentId)
                            .to(Alias::new("residents"), Alias::new("id"))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("resident_links_campaign_resident")
                    .table(ResidentLinks::Table)
                    .col(ResidentLinks::CampaignId)
                    .col(ResidentLinks::ResidentId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("resident_links_code_index")
                    .table(ResidentLinks::Table)
                    .col(ResidentLinks::CodeIndex)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ResidentLinks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ResidentLinks {
    Table,
    Id,
    CampaignId,
    ResidentId,
    CodeIndex,
    CodeEnc,
    CreatedAt,
}
