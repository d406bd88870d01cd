use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The e-mail channel takes its provider's name, `smtp`, like every other channel: messages
/// recorded as sent through it said `smtp` while those that failed before a send said
/// `email`, so reports grouped by provider showed e-mail twice and the configured rate limit
/// (keyed `smtp`) was never found. Rows written before are renamed so a message still being
/// sent finds its channel when its lease runs out.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("UPDATE messages SET channel = 'smtp' WHERE channel = 'email'")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("UPDATE messages SET channel = 'email' WHERE channel = 'smtp'")
            .await?;
        Ok(())
    }
}
