//! Where a change begins and ends: every transaction that writes is opened here, and the
//! cascades that reach from one domain module into another are written here, one file per
//! trigger. Domain modules take the transaction they are given and never open one.
//!
//! # Lock order
//!
//! A transaction that touches several tables takes its row locks in this order, so two flows
//! can never wait for each other (on SQLite the write lock is taken whole at `BEGIN`):
//!
//! 1. the campaign row (`campaign::get_open_locked`), when the change depends on the campaign
//!    being open;
//! 2. `client_keys` — an offline entry claims its key before it writes anything else;
//! 3. `residents`, then `enrolments`;
//! 4. `institution_days`, then `appointments`;
//! 5. `exam_records`, `refusals`, `contact_attempts`;
//! 6. `messages` (planned or cancelled last, in the same transaction as the change that
//!    causes them), then `audit_log`.

pub mod messaging;
pub mod reports;

use sea_orm::{DatabaseTransaction, TransactionTrait};

use crate::db::begin_write;
use crate::error::AppResult;

/// Runs `work` in one writing transaction and commits it when `work` succeeds; an error rolls
/// everything back. For a change that stays inside one domain module; a change that reaches
/// further has a flow of its own in this folder.
pub async fn write<C, T>(
    db: &C,
    work: impl AsyncFnOnce(&DatabaseTransaction) -> AppResult<T>,
) -> AppResult<T>
where
    C: TransactionTrait<Transaction = DatabaseTransaction>,
{
    let txn = begin_write(db).await?;
    let done = work(&txn).await?;
    txn.commit().await?;
    Ok(done)
}
