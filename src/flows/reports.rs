//! Keeping the report cube: a closed day's figures computed, a campaign's live figures
//! rebuilt (by the office, the refresh job, or the first report that needs them). Each
//! reads first and writes in one short transaction, so a long backfill never holds the
//! writer; reports read the cube and ask for what is missing through [`KeepFigures`].

use std::time::Instant;

use chrono::NaiveDate;
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};

use super::write;
use crate::campaign::{self, Campaign};
use crate::error::AppResult;
use crate::report::cube::{self, LiveWritten};
use crate::report::{KeepFigures, Refreshed};

/// Computes and keeps the figures of closed day `day` (as they stood at its end): the
/// cells, and their sums per village for the daily series. Returns how many cells it has.
pub async fn compute_day<C>(db: &C, campaign: &Campaign, day: NaiveDate) -> AppResult<usize>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let figures = cube::read_day(db, campaign, day).await?;
    write(db, async |txn| {
        cube::write_day(txn, campaign, &figures).await
    })
    .await
}

/// Rebuilds the live figures, the key groups and the reach figures of `campaign`, and
/// computes up to `backfill_days` closed days not kept yet (oldest first, from the day the
/// campaign opened to yesterday), each day in a transaction of its own.
pub async fn refresh<C>(db: &C, campaign: &Campaign, backfill_days: u32) -> AppResult<Refreshed>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let started = Instant::now();
    let now = Utc::now();
    let id = campaign.id();
    // Rows written before the funnel was kept at every step are put right first; the writer
    // is taken only when a row needs it.
    let repaired = if campaign::enrol::needs_repair(db, campaign).await? {
        write(db, async |txn| {
            campaign::enrol::repair_funnel(txn, campaign).await
        })
        .await?
    } else {
        0
    };
    if repaired > 0 {
        tracing::info!(
            campaign = id,
            repaired,
            "progress rows brought in line with the funnel"
        );
    }
    let live = cube::read_live(db, campaign, now).await?;
    let written = write(db, async |txn| {
        cube::write_live(txn, id, &live, started).await
    })
    .await?;
    let mut days_computed = Vec::new();
    if let LiveWritten::Kept { days_through } = written {
        for day in cube::days_to_compute(campaign, days_through, now, backfill_days) {
            compute_day(db, campaign, day).await?;
            write(db, async |txn| cube::mark_kept(txn, id, day).await).await?;
            days_computed.push(day);
        }
    }
    if !days_computed.is_empty() {
        // The cube grew by thousands of rows a day: keep the planner's view of it current.
        crate::db::analyze_after_bulk_write(db, "report_cells").await;
        crate::db::analyze_after_bulk_write(db, "report_days").await;
    }
    Ok(Refreshed {
        campaign_id: id,
        refreshed_at: now,
        took_ms: started.elapsed().as_millis() as i64,
        days_computed,
        cells: live.cells(),
        rows_skipped: live.rows_skipped,
    })
}

/// Rebuilds a campaign's figures now (office), also computing up to `backfill_days` kept
/// days.
pub async fn refresh_now<C>(db: &C, campaign_id: i32, backfill_days: u32) -> AppResult<Refreshed>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let campaign = campaign::get(db, campaign_id).await?;
    refresh(db, &campaign, backfill_days).await
}

/// The refresh job: every open campaign, and a closed one once more after it closed (what
/// closing settled reaches its figures). One campaign failing does not stop the others.
pub async fn refresh_open<C>(db: &C, backfill_days: u32) -> anyhow::Result<Vec<Refreshed>>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for campaign in campaign::list(db).await? {
        match campaign.model.status.as_str() {
            "open" => {}
            "closed" => {
                let refreshed = cube::refreshed_at(db, campaign.id()).await?;
                if refreshed.is_some_and(|at| at >= campaign.model.updated_at) {
                    continue;
                }
            }
            _ => continue,
        }
        match refresh(db, &campaign, backfill_days).await {
            Ok(refreshed) => done.push(refreshed),
            Err(e) => failed.push(format!("campaign {}: {e}", campaign.id())),
        }
    }
    if failed.is_empty() {
        Ok(done)
    } else {
        Err(anyhow::anyhow!(
            "{} refreshed; failed: {}",
            done.len(),
            failed.join("; ")
        ))
    }
}

/// Reports read through the database connection and have it keep what they miss with the
/// flows above.
impl KeepFigures for DatabaseConnection {
    async fn compute_day(&self, campaign: &Campaign, day: NaiveDate) -> AppResult<usize> {
        compute_day(self, campaign, day).await
    }

    async fn refresh(&self, campaign: &Campaign, backfill_days: u32) -> AppResult<Refreshed> {
        refresh(self, campaign, backfill_days).await
    }
}
