//! What a resident says back — a delivery receipt, an SMS reply, a button on their own link —
//! and everything it changes: the message, a contact attempt and the progress row, the
//! appointment, the resident's opt-outs, a task for the cadre, a message in answer.

use chrono::{NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use serde_json::json;

use super::{booking, write};
use crate::appointment::{self, Reschedule};
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::campaign::{self, enrol};
use crate::contact;
use crate::error::AppResult;
use crate::outreach::callbacks::{InboundSms, Receipt, ReceiptStatus};
use crate::outreach::inbound::{self, ReceiptOutcome, ReplyAction};
use crate::outreach::links::{self, Link};
use crate::outreach::outbox::Reminders;
use crate::privacy::{Field, Privacy};
use crate::registry::{self, MobilePhone};

/// Applies a receipt in the caller's transaction: the message moves, a delivered one is a
/// contact attempt of its channel.
async fn settle(txn: &impl ConnectionTrait, receipt: &Receipt) -> AppResult<ReceiptOutcome> {
    let settled = inbound::settle(txn, receipt).await?;
    for d in settled.delivered {
        contact::from_delivered_message(
            txn,
            d.message_id,
            d.campaign_id,
            d.resident_id,
            d.route.as_deref(),
            d.at,
        )
        .await?;
    }
    Ok(settled.outcome)
}

/// A message of `key` failed as "outcome unknown" that this receipt, signed for it, shows to
/// have gone out: sent with the receipt's provider id, and the resident counted as notified.
async fn recover(txn: &impl ConnectionTrait, receipt: &Receipt, key: &str) -> AppResult<()> {
    if let Some(recovered) = inbound::recover_unknown(txn, receipt, key).await? {
        tracing::info!(
            message = recovered.id,
            "a receipt showed an unknown outcome sent"
        );
        enrol::notice_contact(
            txn,
            recovered.campaign_id,
            recovered.resident_id,
            false,
            Utc::now(),
        )
        .await?;
    }
    Ok(())
}

/// Moves the message a receipt names forward (delivered or failed, never backwards); a failed
/// delivery plans the message through the next channel. A final receipt for a message whose
/// send is not recorded yet is kept (see [`apply_pending`]).
pub async fn apply_receipt<C>(db: &C, receipt: &Receipt) -> AppResult<ReceiptOutcome>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    apply_receipt_signed(db, receipt, None).await
}

/// [`apply_receipt`] for a receipt whose URL was signed for one message (its idempotency
/// key): a message of that key failed as "outcome unknown" is first shown to have gone out
/// ([`inbound::recover_unknown`]) — the resident counts as notified — and then settled.
pub async fn apply_receipt_signed<C>(
    db: &C,
    receipt: &Receipt,
    key: Option<&str>,
) -> AppResult<ReceiptOutcome>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let outcome = write(db, async |txn| {
        if let Some(key) = key {
            recover(txn, receipt, key).await?;
        }
        let outcome = settle(txn, receipt).await?;
        if outcome == ReceiptOutcome::Unknown && receipt.status != ReceiptStatus::Accepted {
            inbound::keep_pending(txn, receipt, key).await?;
        }
        Ok(outcome)
    })
    .await?;
    crate::telemetry::metrics::receipt(receipt.provider, receipt.status.code(), outcome.code());
    Ok(outcome)
}

/// Receipts kept because they came before their send was recorded: applied now if their
/// message is known, dropped after two days if it never is. Returns how many were applied.
pub async fn apply_pending<C>(db: &C) -> AppResult<u64>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    apply_pending_where(db, None).await
}

/// The kept receipts of one message whose send has just been recorded.
pub async fn apply_pending_for<C>(
    db: &C,
    provider: &str,
    provider_message_id: &str,
) -> AppResult<u64>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    apply_pending_where(db, Some((provider, provider_message_id))).await
}

async fn apply_pending_where<C>(db: &C, only: Option<(&str, &str)>) -> AppResult<u64>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let now = Utc::now();
    let mut applied = 0;
    for kept in inbound::pending(db, only, now).await? {
        let outcome = write(db, async |txn| {
            if let Some(key) = &kept.key {
                recover(txn, &kept.receipt, key).await?;
            }
            let outcome = settle(txn, &kept.receipt).await?;
            inbound::pending_tried(txn, &kept, outcome, now).await?;
            Ok(outcome)
        })
        .await?;
        if outcome == ReceiptOutcome::Moved {
            applied += 1;
        }
    }
    Ok(applied)
}

/// Acts on a reply and keeps it. The number is matched through the phone blind index (own
/// or a relative's); a number shared by several residents is taken as the one most recently
/// messaged.
pub async fn apply_reply<C>(db: &C, privacy: &Privacy, reply: &InboundSms) -> AppResult<ReplyAction>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let reply = inbound::storable(reply);
    let reply = reply.as_ref();
    let now = Utc::now();
    let received_at = reply.at.unwrap_or(now);
    let phone = MobilePhone::parse(&reply.from_phone);
    let index = phone
        .as_ref()
        .map(|p| privacy.blind_index(Field::Phone, p.expose()));
    let masked = phone
        .as_ref()
        .map(MobilePhone::masked)
        .unwrap_or_else(|| "***".to_owned());
    let mut action = ReplyAction::of(&reply.text);
    write(db, async |txn| {
        let senders = match &index {
            Some(index) => inbound::senders(txn, index).await?,
            None => Vec::new(),
        };
        let campaign = campaign::open_campaigns(txn).await?.into_iter().next();
        let sender = senders.first();
        if sender.is_none() {
            action = ReplyAction::Unmatched;
        }
        // The active appointment, for confirm and reschedule.
        let appointment = match (sender, &campaign) {
            (Some(s), Some(c)) => appointment::active_of(txn, c.id(), s.resident_id).await?,
            _ => None,
        };
        if matches!(action, ReplyAction::Confirm | ReplyAction::Reschedule)
            && appointment.is_none()
        {
            action = ReplyAction::Unmatched;
        }
        let kept = inbound::keep_reply(
            txn,
            reply,
            index.as_deref(),
            &masked,
            action,
            sender,
            received_at,
        )
        .await?;
        let Some(reply_id) = kept else {
            tracing::info!(provider = reply.provider, "a reply pushed again: ignored");
            return Ok(action);
        };
        // A reply from a resident's number: they were reached.
        if let (Some(s), Some(c)) = (sender, &campaign) {
            enrol::notice_contact(txn, c.id(), s.resident_id, true, received_at).await?;
        }
        match (action, sender, &campaign) {
            (ReplyAction::Confirm, Some(_), _) => {
                if let Some(a) = &appointment {
                    appointment::confirm(txn, a.id, now).await?;
                }
            }
            (ReplyAction::Reschedule, Some(s), Some(c)) => {
                if let Some(a) = &appointment {
                    inbound::reschedule_requested(txn, c.id(), s, (a.id, a.day), reply_id, now)
                        .await?;
                }
            }
            (ReplyAction::Reschedule, _, None) => {}
            (ReplyAction::OptOut, Some(first), _) => {
                // The number leaves SMS wherever it is: own phone or a relative's.
                let index = index.clone().unwrap_or_default();
                registry::consent::opt_out_number(txn, &index, now).await?;
                audit::record(
                    txn,
                    &Actor::system(),
                    AuditEvent {
                        action: "resident.opt_out",
                        entity: "resident",
                        entity_id: Some(first.resident_id.to_string()),
                        area_code: crate::area::AreaCode::parse(&first.village_code).ok(),
                        summary: json!({"channel": "sms", "number": masked, "residents": senders.len()}),
                    },
                )
                .await?;
                if let Some(c) = &campaign {
                    // Confirmed once per number, back the way the reply came.
                    let subject = format!(
                        "n{}",
                        index
                            .iter()
                            .take(8)
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    );
                    inbound::confirm_opt_out(
                        txn,
                        c.id(),
                        first.resident_id,
                        &subject,
                        Some(first.route),
                        now,
                    )
                    .await?;
                }
            }
            (_, Some(s), Some(c)) => {
                inbound::reply_task(txn, c.id(), s, reply_id, &reply.text, now).await?;
            }
            (_, _, _) => {}
        }
        Ok(action)
    })
    .await
}

/// 确认 on the resident's link: as a reply 1 does — the appointment confirmed, the resident
/// reached — and audited.
pub async fn link_confirm<C>(db: &C, link: &Link) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    link.still_open()?;
    let now = Utc::now();
    write(db, async |txn| {
        let Some(active) =
            appointment::active_of(txn, link.campaign.id(), link.resident.id).await?
        else {
            return Err(links::not_active());
        };
        appointment::confirm(txn, active.id, now).await?;
        enrol::notice_contact(txn, link.campaign.id(), link.resident.id, true, now).await?;
        audit::record(
            txn,
            &link.actor()?,
            AuditEvent {
                action: "link.confirm",
                entity: "appointment",
                entity_id: Some(active.id.to_string()),
                area_code: link.area(),
                summary: json!({"resident_id": link.resident.id, "day": active.day}),
            },
        )
        .await?;
        Ok(())
    })
    .await
}

/// 改约 on the resident's link: the active appointment moved to `day` at the same
/// institution, by the rules and the code of a cadre's reschedule (a confirmation queued, the
/// old place given back); the resident reached.
pub async fn link_reschedule<C>(
    db: &C,
    link: &Link,
    day: NaiveDate,
    reminders: &Reminders,
) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    link.still_open()?;
    let Some(active) = appointment::active_of(db, link.campaign.id(), link.resident.id).await?
    else {
        return Err(links::not_active());
    };
    booking::reschedule(
        db,
        &link.actor()?,
        active.id,
        Reschedule {
            day,
            institution_id: None,
            reason: Some("居民通过预约链接改约".to_owned()),
        },
        reminders,
    )
    .await?;
    write(db, async |txn| {
        enrol::notice_contact(txn, link.campaign.id(), link.resident.id, true, Utc::now()).await
    })
    .await?;
    Ok(())
}

/// 退订 on the resident's link: as a reply TD does, but for every channel of the resident —
/// flags set, a confirmation queued, the resident reached — and audited.
pub async fn link_opt_out<C>(db: &C, link: &Link) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    link.still_open()?;
    let now = Utc::now();
    write(db, async |txn| {
        let changed = registry::consent::opt_out_resident(txn, link.resident.id, now).await?;
        enrol::notice_contact(txn, link.campaign.id(), link.resident.id, true, now).await?;
        if changed {
            audit::record(
                txn,
                &link.actor()?,
                AuditEvent {
                    action: "resident.opt_out",
                    entity: "resident",
                    entity_id: Some(link.resident.id.to_string()),
                    area_code: link.area(),
                    summary: json!({"channel": "link", "residents": 1}),
                },
            )
            .await?;
            inbound::confirm_opt_out(
                txn,
                link.campaign.id(),
                link.resident.id,
                &format!("link:r{}", link.resident.id),
                None,
                now,
            )
            .await?;
        }
        Ok(())
    })
    .await
}
