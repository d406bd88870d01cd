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
//! 3. `residents` (a refusal chain locks its resident's row), then `enrolments`;
//! 4. an existing appointment row, then `institution_days` (two days in the order of
//!    institution and day), then new appointment rows;
//! 5. `exam_records`, `refusal_records`, `contact_attempts`;
//! 6. `messages`, `tasks` — planned or cancelled last, in the same transaction as the change
//!    that causes them.
//!
//! `audit_log` rows are appended by whichever step records them; they lock nothing another
//! transaction waits on.
//!
//! # Files
//!
//! One file per trigger: `accounts`, `areas`, `registry` (a resident created, changed, moved
//! or imported), `campaigns` (opened, closed), `institutions`, `booking` (booked, moved,
//! cancelled, attended, missed), `exams` (an exam recorded), `refusals` (registered, reviewed),
//! `attempts` (a cadre's contact), `replies` (receipts, replies, the resident's link),
//! `messaging` (waves, tasks, resends), `reports`; `steps` holds what several of them do
//! (an appointment ended, an exam written, a resident's messages cancelled).

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

pub mod accounts;
pub mod areas;
pub mod attempts;
pub mod booking;
pub mod campaigns;
pub mod exams;
pub mod institutions;
pub mod refusals;
pub mod registry;
pub mod replies;
pub mod steps;
