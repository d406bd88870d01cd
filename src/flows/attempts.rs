//! A cadre logs a call, a visit or a message to a resident: the attempt and the progress row
//! it moves are written together.

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use super::write;
use crate::auth::Actor;
use crate::contact::{self, AttemptView, NewAttempt};
use crate::error::AppResult;

/// Logs an attempt (audited); one sent again under its client key is answered with the
/// attempt logged the first time.
pub async fn record<C>(
    db: &C,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    new: NewAttempt,
) -> AppResult<AttemptView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let recorded = write(db, async |txn| {
        contact::record(txn, actor, campaign_id, resident_id, new).await
    })
    .await?;
    contact::recorded(db, actor, campaign_id, resident_id, recorded).await
}
