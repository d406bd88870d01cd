//! Steps that more than one flow takes, each inside the transaction it is given: what ends
//! when an appointment ends, an exam is recorded, a refusal is confirmed or a campaign closes.

use chrono::{DateTime, NaiveDate, Utc};
use entities::exam_records;
use sea_orm::ConnectionTrait;

use crate::appointment;
use crate::auth::Actor;
use crate::error::AppResult;
use crate::exam::{self, NewRecord};
use crate::outreach::outbox::{self, CancelBy};
use crate::refusal;

/// Appointments that have ended (cancelled, attended, missed): whatever they ended as, their
/// notices and reminders have nothing left to say.
pub async fn ended(
    txn: &impl ConnectionTrait,
    appointment_ids: &[i32],
    now: DateTime<Utc>,
) -> AppResult<()> {
    outbox::cancel_for_appointments(txn, appointment_ids, None, now).await?;
    Ok(())
}

/// A resident just examined: their active appointment is closed (attended at the same
/// institution, otherwise cancelled) with its notices. Returns the appointment closed.
pub async fn close_for_exam(
    txn: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    institution_id: Option<i32>,
    now: DateTime<Utc>,
) -> AppResult<Option<i32>> {
    let closed =
        appointment::close_for_exam(txn, campaign_id, resident_id, institution_id, now).await?;
    if let Some(id) = closed {
        ended(txn, &[id], now).await?;
    }
    Ok(closed)
}

/// Residents just exempted (deceased, moved out): their appointments are cancelled, and
/// nothing more waiting in the campaign is sent to them.
pub async fn cancel_for_exempt(
    txn: &impl ConnectionTrait,
    campaign_id: i32,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let cancelled = appointment::cancel_for_exempt(txn, campaign_id, now).await?;
    ended(txn, &cancelled, now).await?;
    outbox::cancel_for_exempt(txn, campaign_id, now).await?;
    Ok(())
}

/// A refusal confirmed: the resident's appointment is cancelled, and nothing more waiting
/// in the campaign is sent to them.
pub async fn cancel_for_refusal(
    txn: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let cancelled = appointment::cancel_for_refusal(txn, campaign_id, resident_id, now).await?;
    ended(txn, &cancelled, now).await?;
    outbox::cancel_for_resident(txn, campaign_id, resident_id, now).await?;
    Ok(())
}

/// A campaign closing: its waiting messages are cancelled and its appointments settled.
pub async fn settle_for_close(
    txn: &impl ConnectionTrait,
    campaign_id: i32,
    today: NaiveDate,
) -> AppResult<()> {
    let now = Utc::now();
    outbox::cancel_where(txn, CancelBy::Campaign, campaign_id, now).await?;
    appointment::settle_for_close(txn, campaign_id, today, now).await?;
    Ok(())
}

/// Writes an exam record (refused as a duplicate when the resident has one) and revokes
/// every refusal registration of the resident still standing.
pub async fn examined(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    record: NewRecord,
) -> AppResult<exam_records::Model> {
    let saved = exam::insert(txn, actor, record).await?;
    refusal::revoke_for_exam(txn, actor, saved.campaign_id, saved.resident_id, saved.id).await?;
    Ok(saved)
}
