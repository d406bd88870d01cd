//! A campaign's life: created as a draft, changed, opened (the registry enrolled in the same
//! transaction), closed (its bookings settled in the same transaction).

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use super::write;
use crate::auth::Actor;
use crate::campaign::{self, Campaign, CampaignChanges, NewCampaign, Opened};
use crate::error::AppResult;

/// Creates a campaign in `draft`; it enrols nobody until opened.
pub async fn create<C>(db: &C, actor: &Actor, new: NewCampaign) -> AppResult<Campaign>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let draft = campaign::prepare_create(new)?;
    write(db, async |txn| campaign::create(txn, actor, draft).await).await
}

/// Changes a campaign. The reference date and cohorts decide who is enrolled, so they are
/// fixed once the campaign is open.
pub async fn update<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    changes: CampaignChanges,
) -> AppResult<Campaign>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| {
        campaign::update(txn, actor, id, changes).await
    })
    .await
}

/// Opens a draft campaign and enrols every resident of its cohorts, in one transaction; a
/// large enrolment has the database's statistics brought up to date afterwards.
pub async fn open<C>(db: &C, actor: &Actor, id: i32) -> AppResult<Opened>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let opened = write(db, async |txn| campaign::open(txn, actor, id).await).await?;
    crate::db::analyze_if_bulk(db, "enrolments", opened.enrolled).await;
    Ok(opened)
}

/// Closes an open campaign: no more bookings or exam records; its figures stay. In the same
/// transaction, bookings of past days become no-shows and later ones are cancelled.
pub async fn close<C>(db: &C, actor: &Actor, id: i32) -> AppResult<Campaign>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| {
        let campaign = campaign::close(txn, id).await?;
        super::steps::settle_for_close(txn, id, campaign.today()).await?;
        campaign::record_close(txn, actor, id).await
    })
    .await
}
