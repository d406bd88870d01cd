use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The closed days kept before the funnel held (a resident booked or examined without a
/// logged notice counted as neither notified nor reached) are dropped, so the refresh job
/// computes them again under the rule that holds now: notified ≥ reached ≥ appointed ≥
/// examined in every slice and on every day. The kept days are figures derived from the
/// progress rows, not records: the backfill rebuilds them, oldest first, a few a run
/// (`reports.backfill_days_per_run`), and a report that asks for a day not rebuilt yet
/// computes it then. A day computed after the fact reads today's dimensions (a household
/// that moved since is counted in its new village).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DELETE FROM report_cells WHERE day IS NOT NULL",
            "DELETE FROM report_days",
            "UPDATE report_refreshes SET days_through = NULL",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Derived figures: nothing to restore.
        Ok(())
    }
}
