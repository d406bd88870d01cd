//! A cadre books, moves or cancels an appointment; a clinic marks who came; the day passes
//! without the resident. The appointment and its messages change in one transaction: a
//! notice is planned with its booking and cancelled with its appointment.

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use serde_json::json;

use super::{steps, write};
use crate::appointment::{
    self, AppointmentView, Attendance, Booked, Booking, BookingRequest, Cancellation, Reschedule,
};
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::campaign;
use crate::db::begin_write;
use crate::error::AppResult;
use crate::exam::NewRecord;
use crate::outreach::MessageKind;
use crate::outreach::outbox::{self, Reminders};

/// Books a group into a day, with each appointment's notice and reminder: all or nothing.
/// A booking sent again under its client key is answered with the booking made the first time.
pub async fn book<C>(
    db: &C,
    actor: &Actor,
    campaign_id: i32,
    request: BookingRequest,
    reminders: &Reminders,
) -> AppResult<Booking>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let txn = begin_write(db).await?;
    match appointment::book(&txn, actor, campaign_id, request).await? {
        Booked::Earlier { booking_ref } => {
            txn.rollback().await?;
            appointment::booking_made(db, actor, &booking_ref).await
        }
        Booked::Made { booking, campaign } => {
            let now = Utc::now();
            let planned: Vec<_> = booking
                .appointments
                .iter()
                .flat_map(|a| {
                    outbox::for_appointment(&campaign, reminders, a.id, a.resident_id, a.day, now)
                })
                .collect();
            outbox::insert(&txn, &planned, now).await?;
            txn.commit().await?;
            Ok(booking)
        }
    }
}

/// Moves an appointment: the old day's notices go, the new day's are planned, with a
/// confirmation sent now.
pub async fn reschedule<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    request: Reschedule,
    reminders: &Reminders,
) -> AppResult<AppointmentView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| {
        let moved = appointment::reschedule(txn, actor, id, request).await?;
        let (saved, campaign) = (&moved.saved, &moved.campaign);
        let now = Utc::now();
        steps::ended(txn, &[id], now).await?;
        let mut planned =
            outbox::for_appointment(campaign, reminders, id, saved.resident_id, saved.day, now);
        planned.push(outbox::immediate(
            campaign.id(),
            saved.resident_id,
            MessageKind::RescheduleConfirmation,
            Some(id),
            outbox::key(
                MessageKind::RescheduleConfirmation,
                saved.resident_id,
                &format!("a{id}"),
                saved.day,
            ),
            now,
        ));
        outbox::insert(txn, &planned, now).await?;
        Ok(moved.view)
    })
    .await
}

/// Cancels an appointment, its place given back and its notices with it.
pub async fn cancel<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    request: Cancellation,
) -> AppResult<AppointmentView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| {
        let view = appointment::cancel(txn, actor, id, request).await?;
        steps::ended(txn, &[id], Utc::now()).await?;
        Ok(view)
    })
    .await
}

/// A clinic marks whether a booked resident came: coming writes the exam record (and revokes
/// any refusal); not coming plans the missed-appointment follow-up.
pub async fn mark_attendance<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    request: Attendance,
    reminders: &Reminders,
) -> AppResult<AppointmentView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| {
        let marked = appointment::mark_attendance(txn, actor, id, &request).await?;
        let (before, campaign) = (&marked.before, &marked.campaign);
        let now = Utc::now();
        steps::ended(txn, &[id], now).await?;
        if request.attended {
            steps::examined(
                txn,
                actor,
                NewRecord {
                    campaign_id: before.campaign_id,
                    resident_id: before.resident_id,
                    examined_on: before.day,
                    institution_id: Some(before.institution_id),
                    source: "attendance",
                    appointment_id: Some(before.id),
                    ..Default::default()
                },
            )
            .await?;
        } else {
            let followup = outbox::missed_followup(
                campaign,
                reminders,
                id,
                before.resident_id,
                before.day,
                now,
            );
            outbox::insert(txn, followup.as_slice(), now).await?;
        }
        Ok(marked.view)
    })
    .await
}

/// Turns every booked appointment whose day has ended (in the campaign's time zone) into a
/// no-show, with its follow-up message, one campaign per transaction. Safe to run any number
/// of times, and beside cadres rescheduling: the update itself selects the rows, so an
/// appointment moved meanwhile is left alone. Returns how many changed.
pub async fn mark_no_shows<C>(db: &C, reminders: &Reminders) -> AppResult<u64>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let mut changed = 0;
    for campaign in campaign::open_campaigns(db).await? {
        changed += write(db, async |txn| {
            let missed = appointment::no_shows_before(txn, campaign.id(), campaign.today()).await?;
            let now = Utc::now();
            let ids: Vec<i32> = missed.iter().map(|m| m.0).collect();
            steps::ended(txn, &ids, now).await?;
            let followups: Vec<_> = missed
                .iter()
                .filter_map(|&(id, resident, day)| {
                    outbox::missed_followup(&campaign, reminders, id, resident, day, now)
                })
                .collect();
            outbox::insert(txn, &followups, now).await?;
            let marked = missed.len() as u64;
            if marked > 0 {
                audit::record(
                    txn,
                    &Actor::system(),
                    AuditEvent {
                        action: "appointment.no_show",
                        entity: "appointment",
                        entity_id: None,
                        area_code: None,
                        summary: json!({"campaign_id": campaign.id(), "count": marked}),
                    },
                )
                .await?;
            }
            Ok(marked)
        })
        .await?;
    }
    Ok(changed)
}
