//! The area tree from a file: read and checked first, then written in one transaction, all
//! or nothing.

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use super::write;
use crate::area::{self, AreaImport};
use crate::auth::Actor;
use crate::error::AppResult;

/// Reads `bytes` (a CSV file) and brings the area table in line with it, inside `actor`'s
/// scope (`outreach import areas FILE` and the upload endpoint).
pub async fn import_areas<C>(db: &C, actor: &Actor, bytes: &[u8]) -> AppResult<AreaImport>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let file = area::read_areas(actor, bytes)?;
    let imported = write(db, async |txn| area::import_areas(txn, actor, file).await).await?;
    crate::telemetry::metrics::import_rows("areas", &imported.summary);
    Ok(imported)
}
