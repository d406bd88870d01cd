//! The outbox: every message is a row before anything is sent, written in the transaction of
//! the change that causes it (a booking plans its notice and reminder, a no-show its
//! follow-up, a wave its calls). A unique idempotency key per (resident, kind, appointment or
//! wave, day) makes planning twice harmless. States only move forward:
//! scheduled → queued → sending → sent → delivered | failed | expired | cancelled | suppressed;
//! a sent message whose receipt does not come in time is `unconfirmed` until one does.

pub use crate::config::messaging::RATE_LIMITED_PROVIDERS;
pub use crate::config::{OutboxSettings, Reminders};
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde::{Deserialize, Serialize};

use super::MessageKind;
use crate::campaign::Campaign;
use crate::db::Sql;
use crate::error::AppResult;
use crate::time::at_local;

/// Where a message is. Only forward moves are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Planned for a later time.
    Scheduled,
    /// Due, waiting for a worker (or for quiet hours, the daily cap, a retry).
    Queued,
    /// Leased by a worker that is talking to the provider.
    Sending,
    /// The provider took it.
    Sent,
    /// The provider took it and its delivery receipt did not come within the provider's
    /// receipt timeout; a late receipt still moves it to delivered or failed.
    Unconfirmed,
    Delivered,
    Failed,
    /// Too late to be useful (a day-before notice on the day after).
    Expired,
    /// Its appointment was cancelled, attended or moved.
    Cancelled,
    /// Every channel the resident has is opted out.
    Suppressed,
}

impl MessageState {
    pub const ALL: [MessageState; 10] = [
        MessageState::Scheduled,
        MessageState::Queued,
        MessageState::Sending,
        MessageState::Sent,
        MessageState::Unconfirmed,
        MessageState::Delivered,
        MessageState::Failed,
        MessageState::Expired,
        MessageState::Cancelled,
        MessageState::Suppressed,
    ];

    pub fn code(self) -> &'static str {
        match self {
            MessageState::Scheduled => "scheduled",
            MessageState::Queued => "queued",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Unconfirmed => "unconfirmed",
            MessageState::Delivered => "delivered",
            MessageState::Failed => "failed",
            MessageState::Expired => "expired",
            MessageState::Cancelled => "cancelled",
            MessageState::Suppressed => "suppressed",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            MessageState::Scheduled => "待发送",
            MessageState::Queued => "排队中",
            MessageState::Sending => "发送中",
            MessageState::Sent => "已发送",
            MessageState::Unconfirmed => "未获回执",
            MessageState::Delivered => "已送达",
            MessageState::Failed => "发送失败",
            MessageState::Expired => "已过期",
            MessageState::Cancelled => "已取消",
            MessageState::Suppressed => "已退订未发",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == raw)
    }
}

/// The states a message can still leave by being sent.
pub(crate) const PENDING: &str = "('scheduled', 'queued')";

/// One message to plan.
#[derive(Debug, Clone)]
pub struct Planned {
    pub campaign_id: i32,
    pub resident_id: i32,
    pub kind: MessageKind,
    pub appointment_id: Option<i32>,
    pub wave_id: Option<i32>,
    pub key: String,
    pub due_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Set when only one route may carry it (an opt-out confirmation goes back the way the
    /// reply came).
    pub route: Option<&'static str>,
    /// Where in the fallback plan to start (after a channel failed to deliver).
    pub step: i32,
}

/// The idempotency key: one message per resident, kind, appointment or wave, and day.
pub fn key(
    kind: MessageKind,
    resident_id: i32,
    subject: &str,
    day: impl std::fmt::Display,
) -> String {
    format!("{}:r{resident_id}:{subject}:{day}", kind.code())
}

/// The day-before notice and the same-day reminder of an appointment; nothing that would
/// already be too late.
pub fn for_appointment(
    campaign: &Campaign,
    reminders: &Reminders,
    appointment_id: i32,
    resident_id: i32,
    day: NaiveDate,
    now: DateTime<Utc>,
) -> Vec<Planned> {
    let tz = campaign.timezone;
    let subject = format!("a{appointment_id}");
    let mut planned = Vec::with_capacity(2);
    let same_day_at = at_local(tz, day, reminders.same_day_at);
    if let Some(before) = day.pred_opt() {
        let due = at_local(tz, before, reminders.notice_at);
        if same_day_at > now {
            planned.push(Planned {
                campaign_id: campaign.id(),
                resident_id,
                kind: MessageKind::AppointmentNotice,
                appointment_id: Some(appointment_id),
                wave_id: None,
                key: key(MessageKind::AppointmentNotice, resident_id, &subject, day),
                due_at: due.max(now),
                expires_at: same_day_at,
                route: None,
                step: 0,
            });
        }
    }
    // The reminder is worth sending until midday of the day itself.
    let noon = at_local(tz, day, NaiveTime::from_hms_opt(12, 0, 0).expect("noon"));
    if noon > now {
        planned.push(Planned {
            campaign_id: campaign.id(),
            resident_id,
            kind: MessageKind::SameDayReminder,
            appointment_id: Some(appointment_id),
            wave_id: None,
            key: key(MessageKind::SameDayReminder, resident_id, &subject, day),
            due_at: same_day_at.max(now),
            expires_at: noon,
            route: None,
            step: 0,
        });
    }
    planned
}

/// The follow-up on the day after a missed appointment, useful for three days.
pub fn missed_followup(
    campaign: &Campaign,
    reminders: &Reminders,
    appointment_id: i32,
    resident_id: i32,
    day: NaiveDate,
    now: DateTime<Utc>,
) -> Option<Planned> {
    let tz = campaign.timezone;
    let next = day.succ_opt()?;
    let expires_at = at_local(tz, next + Duration::days(3), reminders.followup_at);
    (expires_at > now).then(|| Planned {
        campaign_id: campaign.id(),
        resident_id,
        kind: MessageKind::MissedFollowup,
        appointment_id: Some(appointment_id),
        wave_id: None,
        key: key(
            MessageKind::MissedFollowup,
            resident_id,
            &format!("a{appointment_id}"),
            day,
        ),
        due_at: at_local(tz, next, reminders.followup_at).max(now),
        expires_at,
        route: None,
        step: 0,
    })
}

/// A message that goes now and is useless after a day (a confirmation, an answer to a
/// reply).
pub fn immediate(
    campaign_id: i32,
    resident_id: i32,
    kind: MessageKind,
    appointment_id: Option<i32>,
    key: String,
    now: DateTime<Utc>,
) -> Planned {
    Planned {
        campaign_id,
        resident_id,
        kind,
        appointment_id,
        wave_id: None,
        key,
        due_at: now,
        expires_at: now + Duration::days(1),
        route: None,
        step: 0,
    }
}

const COLUMNS: &str = "campaign_id, resident_id, kind, appointment_id, wave_id, idempotency_key, \
     state, due_at, expires_at, next_attempt_at, attempts, step, route, created_at";

/// Writes planned messages; a key planned before is left as it is. Returns how many rows
/// were new.
pub async fn insert(
    db: &impl ConnectionTrait,
    planned: &[Planned],
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut written = 0;
    for chunk in planned.chunks(200) {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("INSERT INTO messages (")
            .push(COLUMNS)
            .push(") VALUES ");
        for (i, p) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            let state = if p.due_at <= now {
                MessageState::Queued
            } else {
                MessageState::Scheduled
            };
            sql.push("(")
                .bind(p.campaign_id)
                .push(", ")
                .bind(p.resident_id)
                .push(", ")
                .bind(p.kind.code())
                .push(", ")
                .bind(p.appointment_id)
                .push(", ")
                .bind(p.wave_id)
                .push(", ")
                .bind(p.key.as_str())
                .push(", ")
                .bind(state.code())
                .push(", ")
                .bind(p.due_at)
                .push(", ")
                .bind(p.expires_at)
                .push(", ")
                .bind(p.due_at)
                .push(", 0, ")
                .bind(p.step)
                .push(", ")
                .bind(p.route)
                .push(", ")
                .bind(now)
                .push(")");
        }
        // A key planned before stays as it is, unless it was cancelled and is planned again
        // (an appointment moved away and back to the same day): then it lives again.
        sql.push(
            " ON CONFLICT (idempotency_key) DO UPDATE SET state = excluded.state, \
             due_at = excluded.due_at, expires_at = excluded.expires_at, \
             next_attempt_at = excluded.next_attempt_at, attempts = 0, step = excluded.step, \
             route = excluded.route, last_error = NULL, cancelled_at = NULL \
             WHERE messages.state = 'cancelled'",
        );
        written += db.execute_raw(sql.build()).await?.rows_affected();
    }
    Ok(written)
}

/// Cancels the messages of appointments that have not gone yet (all kinds, or only
/// `kinds`). Returns how many.
pub async fn cancel_for_appointments(
    db: &impl ConnectionTrait,
    appointment_ids: &[i32],
    kinds: Option<&[MessageKind]>,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut cancelled = 0;
    for chunk in appointment_ids.chunks(500) {
        let mut sql = cancel_statement(db, now);
        sql.push(" AND appointment_id IN ")
            .bind_list(chunk.iter().copied());
        if let Some(kinds) = kinds {
            sql.push(" AND kind IN ")
                .bind_list(kinds.iter().map(|k| k.code()));
        }
        cancelled += db.execute_raw(sql.build()).await?.rows_affected();
    }
    Ok(cancelled)
}

/// Cancels what has not gone yet for a whole campaign (it closed) or a wave.
pub async fn cancel_where(
    db: &impl ConnectionTrait,
    column: CancelBy,
    id: i32,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut sql = cancel_statement(db, now);
    sql.push(match column {
        CancelBy::Campaign => " AND campaign_id = ",
        CancelBy::Wave => " AND wave_id = ",
        CancelBy::Resident => " AND resident_id = ",
    })
    .bind(id);
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

/// Nothing more goes to a resident in a campaign (their refusal was confirmed).
pub async fn cancel_for_resident(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut sql = cancel_statement(db, now);
    sql.push(" AND campaign_id = ")
        .bind(campaign_id)
        .push(" AND resident_id = ")
        .bind(resident_id);
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

/// Nothing more goes to residents who have died or moved out.
pub async fn cancel_for_exempt(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut sql = cancel_statement(db, now);
    sql.push(" AND campaign_id = ").bind(campaign_id).push(
        " AND resident_id IN (SELECT resident_id FROM enrolments \
             WHERE campaign_id = messages.campaign_id AND stage = 'exempt')",
    );
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

#[derive(Debug, Clone, Copy)]
pub enum CancelBy {
    Campaign,
    Wave,
    Resident,
}

fn cancel_statement(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Sql {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE messages SET state = 'cancelled', cancelled_at = ")
        .bind(now)
        .push(" WHERE state IN ")
        .push(PENDING);
    sql
}

/// An appointment [`plan_reminders`] plans for.
#[derive(FromQueryResult)]
struct AppointmentDue {
    id: i32,
    resident_id: i32,
    day: NaiveDate,
    status: String,
}

/// Reminders the booking path may have missed (appointments made by an import, a planner
/// that was down): every booked appointment of an open campaign from today on gets its
/// notice and reminder, every no-show of the last three days its follow-up. Idempotent.
pub async fn plan_reminders(
    db: &impl ConnectionTrait,
    reminders: &Reminders,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut written = 0;
    for campaign in crate::campaign::open_campaigns(db).await? {
        let today = campaign.today();
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("SELECT id, resident_id, day, status FROM appointments WHERE campaign_id = ")
            .bind(campaign.id())
            .push(" AND ((status = 'booked' AND day >= ")
            .bind(today)
            .push(" AND day <= ")
            .bind(today + Duration::days(1))
            .push(") OR (status = 'no_show' AND day >= ")
            .bind(today - Duration::days(3))
            .push("))");
        let mut planned = Vec::new();
        let appointments = AppointmentDue::find_by_statement(sql.build())
            .all(db)
            .await?;
        for a in appointments {
            if a.status == "booked" {
                planned.extend(for_appointment(
                    &campaign,
                    reminders,
                    a.id,
                    a.resident_id,
                    a.day,
                    now,
                ));
            } else {
                planned.extend(missed_followup(
                    &campaign,
                    reminders,
                    a.id,
                    a.resident_id,
                    a.day,
                    now,
                ));
            }
        }
        written += insert(db, &planned, now).await?;
    }
    Ok(written)
}

/// A row of the outbox as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub kind: String,
    pub appointment_id: Option<i32>,
    pub wave_id: Option<i32>,
    pub state: MessageState,
    /// The state in Chinese, for display.
    pub state_label: String,
    pub due_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub attempts: i32,
    /// `wechat`, `phone`, `email` or `relative` once a route was tried.
    pub route: Option<String>,
    pub channel: Option<String>,
    /// Masked.
    pub recipient: Option<String>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    /// The text as it was sent.
    pub body: Option<String>,
    pub segments: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub(crate) const VIEW_COLUMNS: &str = "m.id, m.campaign_id, m.resident_id, m.kind, \
     m.appointment_id, m.wave_id, m.state, m.due_at, m.expires_at, m.attempts, m.route, \
     m.channel, m.recipient, m.provider, m.provider_message_id, m.body, m.segments, \
     m.last_error, m.created_at, m.sent_at, m.delivered_at, m.failed_at, \
     COALESCE(m.expired_at, m.cancelled_at, m.suppressed_at) AS finished_at";

/// A message as [`VIEW_COLUMNS`] reads it.
#[derive(FromQueryResult)]
struct MessageRow {
    id: i32,
    campaign_id: i32,
    resident_id: i32,
    kind: String,
    appointment_id: Option<i32>,
    wave_id: Option<i32>,
    state: String,
    due_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    attempts: i32,
    route: Option<String>,
    channel: Option<String>,
    recipient: Option<String>,
    provider: Option<String>,
    provider_message_id: Option<String>,
    body: Option<String>,
    segments: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<MessageRow> for MessageView {
    fn from(row: MessageRow) -> Self {
        let state = MessageState::parse(&row.state).unwrap_or(MessageState::Failed);
        Self {
            id: row.id,
            campaign_id: row.campaign_id,
            resident_id: row.resident_id,
            kind: row.kind,
            appointment_id: row.appointment_id,
            wave_id: row.wave_id,
            state_label: state.label().to_owned(),
            state,
            due_at: row.due_at,
            expires_at: row.expires_at,
            attempts: row.attempts,
            route: row.route,
            channel: row.channel,
            recipient: row.recipient,
            provider: row.provider,
            provider_message_id: row.provider_message_id,
            body: row.body,
            segments: row.segments,
            last_error: row.last_error,
            created_at: row.created_at,
            sent_at: row.sent_at,
            delivered_at: row.delivered_at,
            failed_at: row.failed_at,
            finished_at: row.finished_at,
        }
    }
}

impl MessageView {
    /// A message from a row selected with [`VIEW_COLUMNS`].
    pub(crate) fn from_row(row: &sea_orm::QueryResult) -> Result<Self, sea_orm::DbErr> {
        MessageRow::from_query_result(row, "").map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn keys_name_resident_kind_subject_and_day() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        assert_eq!(
            key(MessageKind::AppointmentNotice, 7, "a42", day),
            "appointment_notice:r7:a42:2026-12-31"
        );
    }

    #[test]
    fn reminder_times_are_read_as_hours_and_minutes() {
        let parsed: Reminders =
            serde_json::from_str(r#"{"notice_at": "19:30", "same_day_at": "07:45"}"#).unwrap();
        assert_eq!(parsed.notice_at, t(19, 30));
        assert_eq!(parsed.same_day_at, t(7, 45));
        assert_eq!(parsed.followup_at, t(10, 0));
        let err = serde_json::from_str::<Reminders>(r#"{"notice_at": "6pm"}"#).unwrap_err();
        assert!(err.to_string().contains("6pm"), "{err}");
    }
}

/// How the outbox is doing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = OutboxHealth)]
pub struct Health {
    /// Messages per state.
    pub states: BTreeMap<String, i64>,
    /// Queued and due now.
    pub due: i64,
    /// The oldest due message waits since.
    pub oldest_due_at: Option<DateTime<Utc>>,
    pub oldest_due_secs: Option<i64>,
    /// Messages whose worker's lease ran out (reconciled on the next round).
    pub stale_leases: i64,
    /// Messages the provider took whose delivery receipt did not come in time.
    pub unconfirmed: i64,
    /// Per provider over the last hour.
    pub providers: Vec<ProviderHealth>,
    /// Providers with most of their last hour's messages failing.
    pub failing: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderHealth {
    pub provider: String,
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
    /// Messages waiting for a retry after this provider's last error.
    pub retrying: i64,
    /// Messages it took whose delivery receipt did not come in time (all, not only the last
    /// hour's).
    pub unconfirmed: i64,
}

impl ProviderHealth {
    /// A provider with nothing counted yet.
    fn none(provider: String) -> Self {
        Self {
            provider,
            sent: 0,
            delivered: 0,
            failed: 0,
            retrying: 0,
            unconfirmed: 0,
        }
    }
}

/// A row count.
#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

/// How many messages are in one state.
#[derive(FromQueryResult)]
struct StateCount {
    state: String,
    n: i64,
}

/// How many messages are due, and since when the oldest of them.
#[derive(FromQueryResult)]
struct Due {
    n: i64,
    oldest: Option<DateTime<Utc>>,
}

/// One provider's last hour (a sum over no rows is NULL).
#[derive(FromQueryResult)]
struct ProviderSums {
    provider: String,
    sent: Option<i64>,
    delivered: Option<i64>,
    failed: Option<i64>,
}

/// How many messages wait for a retry after a channel failed them.
#[derive(FromQueryResult)]
struct ChannelCount {
    channel: String,
    n: i64,
}

/// The states of a message that has not reached a provider yet: the outbox's depth.
pub const WAITING: [MessageState; 3] = [
    MessageState::Scheduled,
    MessageState::Queued,
    MessageState::Sending,
];

/// How many messages wait in each of the [`WAITING`] states (zero included). Cheap enough for
/// every metrics scrape: it counts over the partial index of those states only.
pub async fn depth(db: &impl ConnectionTrait) -> AppResult<Vec<(MessageState, i64)>> {
    let sql = Sql::new(db.get_database_backend())
        .push(
            "SELECT state, COUNT(*) AS n FROM messages \
             WHERE state IN ('scheduled', 'queued', 'sending') GROUP BY state",
        )
        .build();
    let counted = StateCount::find_by_statement(sql).all(db).await?;
    Ok(WAITING
        .into_iter()
        .map(|state| {
            let n = counted
                .iter()
                .find(|row| row.state == state.code())
                .map_or(0, |row| row.n);
            (state, n)
        })
        .collect())
}

pub async fn health(db: &impl ConnectionTrait, now: DateTime<Utc>) -> AppResult<Health> {
    let backend = db.get_database_backend();
    let mut states = BTreeMap::new();
    let sql = Sql::new(backend)
        .push("SELECT state, COUNT(*) AS n FROM messages GROUP BY state")
        .build();
    for row in StateCount::find_by_statement(sql).all(db).await? {
        states.insert(row.state, row.n);
    }
    let mut sql = Sql::new(backend);
    sql.push("SELECT COUNT(*) AS n, MIN(next_attempt_at) AS oldest FROM messages WHERE state IN ('queued', 'scheduled') AND next_attempt_at <= ")
        .bind(now);
    let (due, oldest_due_at) = match Due::find_by_statement(sql.build()).one(db).await? {
        Some(row) => (row.n, row.oldest),
        None => (0, None),
    };
    let mut sql = Sql::new(backend);
    sql.push("SELECT COUNT(*) AS n FROM messages WHERE state = 'sending' AND lease_until < ")
        .bind(now);
    let stale_leases = match Count::find_by_statement(sql.build()).one(db).await? {
        Some(row) => row.n,
        None => 0,
    };
    let hour_ago = now - Duration::hours(1);
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT provider, \
         SUM(CASE WHEN sent_at >= ",
    )
    .bind(hour_ago)
    .push(" THEN 1 ELSE 0 END) AS sent, SUM(CASE WHEN delivered_at >= ")
    .bind(hour_ago)
    .push(" THEN 1 ELSE 0 END) AS delivered, SUM(CASE WHEN state = 'failed' AND failed_at >= ")
    .bind(hour_ago)
    .push(
        " THEN 1 ELSE 0 END) AS failed FROM messages WHERE provider IS NOT NULL AND \
         (sent_at >= ",
    )
    .bind(hour_ago)
    .push(" OR failed_at >= ")
    .bind(hour_ago)
    .push(") GROUP BY provider");
    let mut by_provider: BTreeMap<String, ProviderHealth> = BTreeMap::new();
    for row in ProviderSums::find_by_statement(sql.build()).all(db).await? {
        by_provider.insert(
            row.provider.clone(),
            ProviderHealth {
                provider: row.provider,
                sent: row.sent.unwrap_or(0),
                delivered: row.delivered.unwrap_or(0),
                failed: row.failed.unwrap_or(0),
                retrying: 0,
                unconfirmed: 0,
            },
        );
    }
    // Waiting retries carry the channel that failed them.
    let sql = Sql::new(backend)
        .push(
            "SELECT channel, COUNT(*) AS n FROM messages WHERE state = 'queued' AND \
             attempts > 0 AND last_error IS NOT NULL AND channel IS NOT NULL GROUP BY channel",
        )
        .build();
    for row in ChannelCount::find_by_statement(sql).all(db).await? {
        let ChannelCount { channel, n } = row;
        by_provider
            .entry(channel.clone())
            .or_insert_with(|| ProviderHealth::none(channel))
            .retrying = n;
    }
    let sql = Sql::new(backend)
        .push(
            "SELECT provider AS channel, COUNT(*) AS n FROM messages \
             WHERE state = 'unconfirmed' AND provider IS NOT NULL GROUP BY provider",
        )
        .build();
    let mut unconfirmed = 0;
    for row in ChannelCount::find_by_statement(sql).all(db).await? {
        let ChannelCount { channel, n } = row;
        unconfirmed += n;
        by_provider
            .entry(channel.clone())
            .or_insert_with(|| ProviderHealth::none(channel))
            .unconfirmed = n;
    }
    let providers: Vec<ProviderHealth> = by_provider.into_values().collect();
    let failing = providers
        .iter()
        .filter(|p| {
            let bad = p.failed + p.retrying;
            bad >= 5 && bad * 2 > bad + p.sent
        })
        .map(|p| p.provider.clone())
        .collect();
    Ok(Health {
        states,
        due,
        oldest_due_secs: oldest_due_at.map(|t| (now - t).num_seconds().max(0)),
        oldest_due_at,
        stale_leases,
        unconfirmed,
        providers,
        failing,
    })
}

/// What [`resend`] reads of the message it sends again.
#[derive(FromQueryResult)]
struct ResendRow {
    campaign_id: i32,
    resident_id: i32,
    kind: String,
    appointment_id: Option<i32>,
    wave_id: Option<i32>,
    idempotency_key: String,
    state: String,
    village_code: String,
}

/// An appointment's status.
#[derive(FromQueryResult)]
struct AppointmentStatus {
    status: String,
}

/// Sends a failed or expired message again, by hand: a new row (the old one keeps its
/// history) due now, audited. An opted-out resident's message is not re-sent.
pub async fn resend(
    txn: &impl ConnectionTrait,
    actor: &crate::auth::Actor,
    id: i32,
) -> AppResult<MessageView> {
    use crate::error::AppError;
    let now = Utc::now();
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("SELECT m.id, m.campaign_id, m.resident_id, m.kind, m.appointment_id, m.wave_id, m.idempotency_key, m.state, r.village_code FROM messages m JOIN residents r ON r.id = m.resident_id WHERE m.id = ")
        .bind(id);
    super::tasks::scope_sql(&mut sql, "r.village_code", &actor.scope);
    let row = ResendRow::find_by_statement(sql.build())
        .one(txn)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("消息 {id} 不存在")))?;
    if !matches!(row.state.as_str(), "failed" | "expired") {
        return Err(AppError::refused(
            "not_resendable",
            "只有发送失败或已过期的消息可以重发",
        ));
    }
    let kind = MessageKind::parse(&row.kind)
        .ok_or_else(|| anyhow::anyhow!("message {id} has an unknown kind"))?;
    let appointment_id = row.appointment_id;
    if let Some(appointment) = appointment_id {
        let mut sql = Sql::new(txn.get_database_backend());
        sql.push("SELECT status FROM appointments WHERE id = ")
            .bind(appointment);
        let status = AppointmentStatus::find_by_statement(sql.build())
            .one(txn)
            .await?
            .map(|row| row.status);
        let still_useful = match kind {
            MessageKind::MissedFollowup => status.as_deref() == Some("no_show"),
            _ => status.as_deref() == Some("booked"),
        };
        if !still_useful {
            return Err(AppError::refused(
                "no_longer_relevant",
                "该预约已变更，原消息不必重发",
            ));
        }
    }
    let original = row.idempotency_key;
    let base = original
        .split("#resend")
        .next()
        .unwrap_or(&original)
        .to_owned();
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("SELECT COUNT(*) AS n FROM messages WHERE idempotency_key LIKE ")
        .bind(format!("{base}#resend%"));
    let earlier = match Count::find_by_statement(sql.build()).one(txn).await? {
        Some(row) => row.n,
        None => 0,
    };
    let mut planned = immediate(
        row.campaign_id,
        row.resident_id,
        kind,
        appointment_id,
        format!("{base}#resend{}", earlier + 1),
        now,
    );
    planned.wave_id = row.wave_id;
    if insert(txn, std::slice::from_ref(&planned), now).await? != 1 {
        return Err(AppError::refused("already_resent", "该消息刚刚已重发"));
    }
    let village = row.village_code;
    crate::audit::record(
        txn,
        actor,
        crate::audit::AuditEvent {
            action: "message.resend",
            entity: "message",
            entity_id: Some(id.to_string()),
            area_code: crate::area::AreaCode::parse(&village).ok(),
            summary: serde_json::json!({"kind": kind.code(), "key": planned.key}),
        },
    )
    .await?;
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("SELECT ")
        .push(VIEW_COLUMNS)
        .push(" FROM messages m WHERE m.idempotency_key = ")
        .bind(planned.key.as_str());
    let view = MessageRow::find_by_statement(sql.build())
        .one(txn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the re-sent message vanished"))?;
    Ok(MessageView::from(view))
}
