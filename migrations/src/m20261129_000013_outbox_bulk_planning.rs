use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// PostgreSQL only: the outbox without its foreign keys to campaigns and residents, and the
/// idempotency key compared byte by byte.
///
/// Planning a wave writes hundreds of thousands of messages in one `INSERT … SELECT`; on
/// PostgreSQL each row fired two foreign-key triggers, each locking the referenced campaign
/// or resident row — more than half of the statement's time (400,000 messages: 10.4 s with
/// them, 4.8 s without; see BENCHMARKS.md, `plan`). Every message is written from an
/// enrolment, an appointment or a resident's own reply, or copied from an existing message
/// (the next step after a failed receipt, a re-send by hand), so its campaign and resident
/// exist; and neither campaigns nor residents are ever deleted (they close, move out, die:
/// states, not deletions), so the cascade the keys carried had nothing to do. The key is
/// only compared for equality (and one prefix `LIKE`), so the "C" collation spares the
/// locale's comparison (a further 0.8 s) without changing any answer.
///
/// SQLite keeps both: dropping a constraint there means rebuilding the table, and its
/// foreign-key checks cost little (about 114,000 messages planned a second with them). Were
/// residents or campaigns ever deleted, SQLite would cascade to their messages and
/// PostgreSQL would keep them.
///
/// Upgrading: the statement rebuilds the key's unique index and holds exclusive locks on
/// `messages` (and, to drop the keys' triggers, on `campaigns` and `residents`) until it
/// commits — a few seconds for a few million messages; run it outside sending hours.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE messages DROP CONSTRAINT IF EXISTS fk_messages_campaign, \
                 DROP CONSTRAINT IF EXISTS fk_messages_resident, \
                 ALTER COLUMN idempotency_key TYPE varchar(120) COLLATE \"C\"",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE messages \
                 ALTER COLUMN idempotency_key TYPE varchar(120) COLLATE \"default\", \
                 ADD CONSTRAINT fk_messages_campaign FOREIGN KEY (campaign_id) \
                 REFERENCES campaigns (id) ON DELETE CASCADE, \
                 ADD CONSTRAINT fk_messages_resident FOREIGN KEY (resident_id) \
                 REFERENCES residents (id) ON DELETE CASCADE",
            )
            .await?;
        Ok(())
    }
}
