//! Institutions and their calendars: registered, changed, a day changed, a calendar file
//! applied. Each change and its audit entry commit together.

use chrono::NaiveDate;
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use super::write;
use crate::auth::Actor;
use crate::error::AppResult;
use crate::institution::{
    self, CalendarImport, DayChange, DayView, InstitutionChanges, InstitutionView, NewInstitution,
};

/// Registers an institution (office).
pub async fn create<C>(db: &C, actor: &Actor, new: NewInstitution) -> AppResult<InstitutionView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let registration = institution::prepare_create(db, actor, new).await?;
    write(db, async |txn| {
        institution::create(txn, actor, registration).await
    })
    .await
}

/// Changes an institution: its staff may change name, capacity and closed weekdays; the
/// areas served and whether it is active are the office's.
pub async fn update<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    changes: InstitutionChanges,
) -> AppResult<InstitutionView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| {
        institution::update(txn, actor, id, changes).await
    })
    .await
}

/// Changes one day of an institution's calendar (office or the institution's staff).
pub async fn set_day<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    day: NaiveDate,
    change: DayChange,
) -> AppResult<DayView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| {
        institution::set_day(txn, actor, id, day, change).await
    })
    .await
}

/// A calendar CSV (institution code, date, capacity, closed, note), read first, then applied
/// in one transaction; rows the caller may not change are rejected with their reasons.
pub async fn import_calendar<C>(db: &C, actor: &Actor, bytes: &[u8]) -> AppResult<CalendarImport>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let file = institution::read_calendar(bytes)?;
    let imported = write(db, async |txn| {
        institution::import_calendar(txn, actor, file).await
    })
    .await?;
    crate::telemetry::metrics::import_rows("calendar", &imported.summary);
    Ok(imported)
}
