//! Delivery receipts and residents' replies as the outbox keeps them: a receipt moves its
//! message (or waits for it), a reply is kept with what was made of it. What they change
//! beyond the outbox — contact attempts, appointments, opt-outs — is `flows::replies`.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde::Serialize;

use super::MessageKind;
use super::callbacks::{InboundSms, Receipt, ReceiptStatus};
use super::channel::Route;
use super::outbox::{self, Planned};
use super::tasks::{self, NewTask, TaskKind};
use crate::db::Sql;
use crate::error::AppResult;

impl ReceiptOutcome {
    /// Whether a receipt that did this is the ordinary course of things (nothing for an
    /// operator to look at): it moved its message, or it is a first-stage receipt, which
    /// providers send for every message and which may come before its send is recorded.
    pub fn expected(self, status: &ReceiptStatus) -> bool {
        match self {
            ReceiptOutcome::Moved | ReceiptOutcome::Intermediate => true,
            ReceiptOutcome::Unknown => *status == ReceiptStatus::Accepted,
            ReceiptOutcome::Unchanged => false,
        }
    }
}

/// What a receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// The message moved forward.
    Moved,
    /// A first-stage receipt (the provider or the operator took it) for a known message:
    /// the expected step before the final receipt, which nothing needs to follow.
    Intermediate,
    /// Its message is known and already where the receipt would put it, or further.
    Unchanged,
    /// No message has this provider id (yet): kept, and applied when the send is recorded.
    Unknown,
}

impl ReceiptOutcome {
    /// What the receipt did, as a metric label.
    pub fn code(self) -> &'static str {
        match self {
            ReceiptOutcome::Moved => "moved",
            ReceiptOutcome::Intermediate => "intermediate",
            ReceiptOutcome::Unchanged => "unchanged",
            ReceiptOutcome::Unknown => "unknown",
        }
    }
}

/// A message's idempotency key.
#[derive(FromQueryResult)]
struct MessageKey {
    idempotency_key: String,
}

/// Whether a receipt for `(provider, provider_message_id)` may concern the message with
/// idempotency key `key`: false only when that provider id is recorded for another message.
/// (A receipt before its send is recorded cannot be told apart yet.)
pub async fn receipt_may_concern(
    db: &impl ConnectionTrait,
    provider: &str,
    provider_message_id: &str,
    key: &str,
) -> AppResult<bool> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT idempotency_key FROM messages WHERE provider = ")
        .bind(provider)
        .push(" AND provider_message_id = ")
        .bind(provider_message_id);
    let keys: Vec<String> = MessageKey::find_by_statement(sql.build())
        .all(db)
        .await?
        .into_iter()
        .map(|row| row.idempotency_key)
        .collect();
    Ok(keys.is_empty() || keys.iter().any(|k| k == key))
}

/// A message failed as "outcome unknown" that a receipt showed to have gone out.
#[derive(FromQueryResult)]
pub struct Recovered {
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    step: i32,
    handed_over_at: Option<DateTime<Utc>>,
}

/// A receipt signed for the message with idempotency key `key` (a Jasmin receipt URL) that
/// names a provider id no message has: if that message was failed as "outcome unknown" (its
/// worker died after handing it over, before recording the provider's answer, and the
/// provider could not be asked), the receipt proves it went out — it becomes `sent` with
/// this provider id, so the receipt then settles it, and nobody re-sends it by hand.
pub async fn recover_unknown(
    db: &impl ConnectionTrait,
    receipt: &Receipt,
    key: &str,
) -> AppResult<Option<Recovered>> {
    if receipt.provider_message_id.is_empty() || known(db, receipt).await? {
        return Ok(None);
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT id, campaign_id, resident_id, step, handed_over_at FROM messages \
         WHERE idempotency_key = ",
    )
    .bind(key)
    .push(" AND channel = ")
    .bind(receipt.provider)
    .push(
        " AND state = 'failed' AND provider_message_id IS NULL \
         AND last_error LIKE 'outcome_unknown:%'",
    );
    let Some(found) = Recovered::find_by_statement(sql.build()).one(db).await? else {
        return Ok(None);
    };
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE messages SET state = 'sent', sent_at = ")
        .bind(found.handed_over_at.or(receipt.at).unwrap_or_else(Utc::now))
        .push(", provider = ")
        .bind(receipt.provider)
        .push(", provider_message_id = ")
        .bind(stored_id(receipt))
        .push(", route = ")
        .bind(Route::PLAN[found.step.clamp(0, 3) as usize].code())
        .push(", failed_at = NULL, last_error = NULL WHERE id = ")
        .bind(found.id)
        .push(" AND state = 'failed'");
    let moved = db.execute_raw(sql.build()).await?.rows_affected() == 1;
    Ok(moved.then_some(found))
}

/// A receipt's provider id as the outbox stores it (at most 100 characters).
fn stored_id(receipt: &Receipt) -> String {
    receipt.provider_message_id.chars().take(100).collect()
}

/// Keeps a final receipt whose message is not known yet (its send is not recorded), to be
/// applied when it is ([`pending`]), with the idempotency key its URL was signed for, if it
/// was.
pub async fn keep_pending(
    db: &impl ConnectionTrait,
    receipt: &Receipt,
    key: Option<&str>,
) -> AppResult<()> {
    let (status, reason) = match &receipt.status {
        ReceiptStatus::Failed(reason) => ("failed", Some(reason.clone())),
        _ => ("delivered", None),
    };
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO pending_receipts (provider, provider_message_id, status, reason, at, \
         received_at, tries, next_try_at, message_key) VALUES (",
    )
    .bind(receipt.provider)
    .push(", ")
    .bind(stored_id(receipt))
    .push(", ")
    .bind(status)
    .push(", ")
    .bind(reason)
    .push(", ")
    .bind(receipt.at)
    .push(", ")
    .bind(Utc::now())
    .push(", 0, ")
    .bind(Utc::now())
    .push(", ")
    .bind(key.map(|k| k.chars().take(200).collect::<String>()))
    .push(")");
    db.execute_raw(sql.build()).await?;
    Ok(())
}

/// A receipt kept because it came before its send was recorded.
pub struct PendingReceipt {
    pub id: i32,
    pub receipt: Receipt,
    pub received_at: DateTime<Utc>,
    pub tries: i32,
    /// The idempotency key its URL was signed for.
    pub key: Option<String>,
}

/// A kept receipt as [`pending`] reads it.
#[derive(FromQueryResult)]
struct PendingRow {
    id: i32,
    provider: String,
    provider_message_id: String,
    status: String,
    reason: Option<String>,
    at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
    tries: i32,
    message_key: Option<String>,
}

/// The kept receipts due now (or those of one message, `only`), at most 100.
pub async fn pending(
    db: &impl ConnectionTrait,
    only: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> AppResult<Vec<PendingReceipt>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT id, provider, provider_message_id, status, reason, at, received_at, tries, \
         message_key FROM pending_receipts WHERE ",
    );
    match only {
        Some((provider, id)) => {
            sql.push("provider = ")
                .bind(provider)
                .push(" AND provider_message_id = ")
                .bind(id);
        }
        None => {
            sql.push("next_try_at <= ").bind(now);
        }
    }
    sql.push(" ORDER BY next_try_at LIMIT 100");
    let mut kept = Vec::new();
    for row in PendingRow::find_by_statement(sql.build()).all(db).await? {
        let Some(provider) = provider_name(&row.provider) else {
            continue;
        };
        kept.push(PendingReceipt {
            id: row.id,
            receipt: Receipt {
                provider,
                provider_message_id: row.provider_message_id,
                status: if row.status == "failed" {
                    ReceiptStatus::Failed(row.reason.unwrap_or_default())
                } else {
                    ReceiptStatus::Delivered
                },
                at: row.at,
            },
            received_at: row.received_at,
            tries: row.tries,
            key: row.message_key,
        });
    }
    Ok(kept)
}

/// A kept receipt after a try: dropped once applied (or after two days unknown), otherwise
/// tried again later, less and less often (5 s, 10 s, … up to an hour).
pub async fn pending_tried(
    db: &impl ConnectionTrait,
    kept: &PendingReceipt,
    outcome: ReceiptOutcome,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let stale = now - chrono::Duration::days(2);
    let mut sql = Sql::new(db.get_database_backend());
    if outcome != ReceiptOutcome::Unknown || kept.received_at < stale {
        sql.push("DELETE FROM pending_receipts WHERE id = ")
            .bind(kept.id);
    } else {
        let wait = (5i64 << kept.tries.clamp(0, 10)).min(3600);
        sql.push("UPDATE pending_receipts SET tries = tries + 1, next_try_at = ")
            .bind(now + chrono::Duration::seconds(wait))
            .push(" WHERE id = ")
            .bind(kept.id);
    }
    db.execute_raw(sql.build()).await?;
    Ok(())
}

/// A message a receipt moved to delivered: a contact attempt of its channel.
pub struct Delivered {
    pub message_id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub route: Option<String>,
    pub at: DateTime<Utc>,
}

/// What a receipt did to the outbox, and the messages it delivered.
pub struct Settled {
    pub outcome: ReceiptOutcome,
    pub delivered: Vec<Delivered>,
}

/// A message a receipt moved (`RETURNING`).
#[derive(FromQueryResult)]
struct MovedRow {
    id: i32,
    campaign_id: i32,
    resident_id: i32,
    kind: String,
    appointment_id: Option<i32>,
    wave_id: Option<i32>,
    idempotency_key: String,
    expires_at: DateTime<Utc>,
    step: i32,
    route: Option<String>,
}

/// Moves the message a receipt names forward: delivered or failed, only from `sending`,
/// `sent` or `unconfirmed` (a receipt later than its provider's timeout still counts), so a
/// repeated receipt changes nothing. A failed delivery plans the same
/// message through the next channel of the fallback plan.
pub async fn settle(db: &impl ConnectionTrait, receipt: &Receipt) -> AppResult<Settled> {
    let now = Utc::now();
    let at = receipt.at.unwrap_or(now);
    let mut delivered = Vec::new();
    let mut sql = Sql::new(db.get_database_backend());
    match &receipt.status {
        ReceiptStatus::Accepted => {
            let outcome = if known(db, receipt).await? {
                ReceiptOutcome::Intermediate
            } else {
                ReceiptOutcome::Unknown
            };
            return Ok(Settled { outcome, delivered });
        }
        ReceiptStatus::Delivered => {
            sql.push("UPDATE messages SET state = 'delivered', delivered_at = ")
                .bind(at);
        }
        ReceiptStatus::Failed(reason) => {
            sql.push("UPDATE messages SET state = 'failed', failed_at = ")
                .bind(at)
                .push(", last_error = ")
                .bind(format!(
                    "not delivered: {}",
                    reason.chars().take(200).collect::<String>()
                ));
        }
    }
    sql.push(", lease_until = NULL, leased_by = NULL WHERE provider = ")
        .bind(receipt.provider)
        .push(" AND provider_message_id = ")
        .bind(receipt.provider_message_id.as_str())
        .push(
            " AND state IN ('sending', 'sent', 'unconfirmed') RETURNING id, campaign_id, resident_id, kind, \
             appointment_id, wave_id, idempotency_key, expires_at, step, route",
        );
    // Whether the message is known is read before it is moved: were it read after, a send
    // recorded by a dispatcher between the two statements (PostgreSQL reads each statement
    // at its own snapshot) would leave the receipt neither applied nor kept — found by the
    // cluster drill, messages left `sent` whose receipt had been taken. Known now, the row is
    // committed and the update below sees it; not known, the receipt is kept and applied
    // once the send is recorded.
    let known_before = known(db, receipt).await?;
    let rows = MovedRow::find_by_statement(sql.build()).all(db).await?;
    let moved = !rows.is_empty();
    for row in rows {
        match &receipt.status {
            ReceiptStatus::Delivered => delivered.push(Delivered {
                message_id: row.id,
                campaign_id: row.campaign_id,
                resident_id: row.resident_id,
                route: row.route,
                at,
            }),
            _ => {
                let step = row.step;
                let key = row.idempotency_key;
                let Some(kind) = MessageKind::parse(&row.kind) else {
                    continue;
                };
                let base = key.split("#s").next().unwrap_or(&key).to_owned();
                let next = Planned {
                    campaign_id: row.campaign_id,
                    resident_id: row.resident_id,
                    kind,
                    appointment_id: row.appointment_id,
                    wave_id: row.wave_id,
                    key: format!("{base}#s{}", step + 1),
                    due_at: now,
                    expires_at: row.expires_at,
                    route: None,
                    step: step + 1,
                };
                if next.expires_at > now {
                    outbox::insert(db, &[next], now).await?;
                }
            }
        }
    }
    let outcome = if moved {
        ReceiptOutcome::Moved
    } else if known_before {
        ReceiptOutcome::Unchanged
    } else {
        ReceiptOutcome::Unknown
    };
    Ok(Settled { outcome, delivered })
}

/// The provider names receipts carry.
fn provider_name(stored: &str) -> Option<&'static str> {
    ["aliyun", "tencent", "jasmin", "wechat", "smtp", "log"]
        .into_iter()
        .find(|p| *p == stored)
}

/// Whether a message has this provider id.
async fn known(db: &impl ConnectionTrait, receipt: &Receipt) -> AppResult<bool> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT 1 AS one FROM messages WHERE provider = ")
        .bind(receipt.provider)
        .push(" AND provider_message_id = ")
        .bind(receipt.provider_message_id.as_str());
    Ok(db.query_one_raw(sql.build()).await?.is_some())
}

/// What a reply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplyAction {
    /// 1 / 确认: the appointment is confirmed.
    Confirm,
    /// 2 / 改期: a task for the cadre and a message with the next days with room.
    Reschedule,
    /// TD / T / N / 退订: the number is opted out of SMS.
    OptOut,
    /// Anything else, or from an unknown number: kept for the cadre.
    Unmatched,
}

impl ReplyAction {
    pub fn code(self) -> &'static str {
        match self {
            ReplyAction::Confirm => "confirm",
            ReplyAction::Reschedule => "reschedule",
            ReplyAction::OptOut => "opt_out",
            ReplyAction::Unmatched => "unmatched",
        }
    }

    /// Reads the keyword of a reply: half- or full-width, any case, surrounding spaces and
    /// punctuation ignored.
    pub fn of(text: &str) -> ReplyAction {
        let normal: String = text
            .chars()
            .map(|c| match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                '\u{3000}' => ' ',
                other => other,
            })
            .filter(|c| !c.is_whitespace() && !matches!(c, '.' | '。' | '!' | '！' | ',' | '，'))
            .collect::<String>()
            .to_uppercase();
        match normal.as_str() {
            "1" | "确认" | "确定" | "是" => ReplyAction::Confirm,
            "2" | "改期" | "改约" => ReplyAction::Reschedule,
            "TD" | "T" | "N" | "退订" | "取消订阅" => ReplyAction::OptOut,
            _ => ReplyAction::Unmatched,
        }
    }
}

/// A resident a reply's number belongs to, and whether it is their own number.
pub struct Sender {
    pub resident_id: i32,
    pub village_code: String,
    pub route: Route,
}

/// A reply as it can be kept: a NUL in a resident's text means nothing and PostgreSQL
/// cannot store it, so it is left out and the provider's push is answered rather than retried
/// forever.
pub fn storable(reply: &InboundSms) -> Cow<'_, InboundSms> {
    let nul = |v: &Option<String>| v.as_deref().is_some_and(crate::text::has_nul);
    if reply.text.contains('\0') || nul(&reply.provider_id) || nul(&reply.signature) {
        let strip = |v: &Option<String>| v.as_ref().map(|v| v.replace('\0', ""));
        Cow::Owned(InboundSms {
            text: reply.text.replace('\0', ""),
            provider_id: strip(&reply.provider_id),
            signature: strip(&reply.signature),
            ..reply.clone()
        })
    } else {
        Cow::Borrowed(reply)
    }
}

/// A kept reply's row id (`RETURNING id`).
#[derive(FromQueryResult)]
struct KeptReply {
    id: i32,
}

/// Keeps a reply with what was made of it. Returns its id, or `None` when the provider pushed
/// it before (it was acted on then).
pub async fn keep_reply(
    db: &impl ConnectionTrait,
    reply: &InboundSms,
    index: Option<&[u8]>,
    masked: &str,
    action: ReplyAction,
    sender: Option<&Sender>,
    received_at: DateTime<Utc>,
) -> AppResult<Option<i32>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO inbound_replies (provider, provider_id, from_index, from_masked, text, \
         action, resident_id, message_id, village_code, received_at) VALUES (",
    )
    .bind(reply.provider)
    .push(", ")
    .bind(
        reply
            .provider_id
            .as_ref()
            .map(|id| id.chars().take(100).collect::<String>()),
    )
    .push(", ")
    .bind(index.map(<[u8]>::to_vec))
    .push(", ")
    .bind(masked)
    .push(", ")
    .bind(reply.text.chars().take(500).collect::<String>())
    .push(", ")
    .bind(action.code())
    .push(", ")
    .bind(sender.map(|s| s.resident_id))
    .push(", NULL, ")
    .bind(sender.map(|s| s.village_code.clone()))
    .push(", ")
    .bind(received_at)
    .push(
        ") ON CONFLICT (provider, provider_id) WHERE provider_id IS NOT NULL DO NOTHING \
         RETURNING id",
    );
    let kept = KeptReply::find_by_statement(sql.build()).one(db).await?;
    Ok(kept.map(|kept| kept.id))
}

/// A reply asking for another day: a task for the cadre and a message with the next days
/// with room, back the way the reply came.
pub async fn reschedule_requested(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    sender: &Sender,
    appointment: (i32, NaiveDate),
    reply_id: i32,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let (appointment_id, day) = appointment;
    tasks::create(
        db,
        NewTask {
            campaign_id,
            resident_id: sender.resident_id,
            village_code: sender.village_code.clone(),
            kind: TaskKind::RescheduleRequest,
            dedupe_key: format!("reschedule:a{appointment_id}:{day}"),
            message_id: None,
            reply_id: Some(reply_id),
            note: Some(format!("居民回复改期，原预约 {day}")),
        },
        now,
    )
    .await?;
    let mut options = outbox::immediate(
        campaign_id,
        sender.resident_id,
        MessageKind::RescheduleOptions,
        Some(appointment_id),
        outbox::key(
            MessageKind::RescheduleOptions,
            sender.resident_id,
            &format!("a{appointment_id}"),
            day,
        ),
        now,
    );
    options.route = Some(sender.route.code());
    outbox::insert(db, &[options], now).await?;
    Ok(())
}

/// Any other reply from a resident's number: a task for the cadre to read it.
pub async fn reply_task(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    sender: &Sender,
    reply_id: i32,
    text: &str,
    now: DateTime<Utc>,
) -> AppResult<()> {
    tasks::create(
        db,
        NewTask {
            campaign_id,
            resident_id: sender.resident_id,
            village_code: sender.village_code.clone(),
            kind: TaskKind::Reply,
            dedupe_key: format!("reply:{reply_id}"),
            message_id: None,
            reply_id: Some(reply_id),
            note: Some(format!(
                "居民回复：{}",
                text.chars().take(100).collect::<String>()
            )),
        },
        now,
    )
    .await?;
    Ok(())
}

/// Queues the confirmation of an opt-out, once per `subject` (the number a TD came from, or
/// the resident whose link was used); `route`: back the way the request came, when it came
/// by SMS.
pub async fn confirm_opt_out(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    subject: &str,
    route: Option<Route>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let mut confirmation = outbox::immediate(
        campaign_id,
        resident_id,
        MessageKind::OptOutConfirmation,
        None,
        format!("opt_out_confirmation:{subject}"),
        now,
    );
    confirmation.route = route.map(Route::code);
    outbox::insert(db, &[confirmation], now).await?;
    Ok(())
}

/// A resident a number belongs to, as [`senders`] reads it.
#[derive(FromQueryResult)]
struct SenderRow {
    id: i32,
    village_code: String,
    /// `phone` or `relative`: which of the resident's numbers it is.
    route: String,
    last_sent: Option<DateTime<Utc>>,
}

/// Residents whose own or relative's number has this blind index, the most recently
/// messaged first.
pub async fn senders(db: &impl ConnectionTrait, index: &[u8]) -> AppResult<Vec<Sender>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT r.id, r.village_code, CASE WHEN r.phone_index = ")
        .bind(index.to_vec())
        .push(
            " THEN 'phone' ELSE 'relative' END AS route, \
             (SELECT MAX(m.sent_at) FROM messages m WHERE m.resident_id = r.id) AS last_sent \
             FROM residents r WHERE r.phone_index = ",
        )
        .bind(index.to_vec())
        .push(" OR r.relative_phone_index = ")
        .bind(index.to_vec());
    let mut found: Vec<(Option<DateTime<Utc>>, Sender)> = Vec::new();
    for row in SenderRow::find_by_statement(sql.build()).all(db).await? {
        found.push((
            row.last_sent,
            Sender {
                resident_id: row.id,
                village_code: row.village_code,
                route: Route::parse(&row.route).unwrap_or(Route::Phone),
            },
        ));
    }
    // Own number before a relative's, then the latest messaged.
    found.sort_by(|a, b| {
        (a.1.route != Route::Phone)
            .cmp(&(b.1.route != Route::Phone))
            .then(b.0.cmp(&a.0))
    });
    Ok(found.into_iter().map(|(_, s)| s).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stage_receipts_are_expected_and_repeated_finals_are_not() {
        let accepted = ReceiptStatus::Accepted;
        let delivered = ReceiptStatus::Delivered;
        assert!(ReceiptOutcome::Intermediate.expected(&accepted));
        assert!(ReceiptOutcome::Unknown.expected(&accepted));
        assert!(ReceiptOutcome::Moved.expected(&delivered));
        assert!(!ReceiptOutcome::Unchanged.expected(&delivered));
        assert!(!ReceiptOutcome::Unknown.expected(&delivered));
    }

    #[test]
    fn reply_keywords_are_read_in_any_width_and_case() {
        for text in ["1", " 1 ", "１", "确认", "确认。"] {
            assert_eq!(ReplyAction::of(text), ReplyAction::Confirm, "{text:?}");
        }
        for text in ["2", "２", "改期"] {
            assert_eq!(ReplyAction::of(text), ReplyAction::Reschedule, "{text:?}");
        }
        for text in ["TD", "td", "ＴＤ", "T", "n", "退订"] {
            assert_eq!(ReplyAction::of(text), ReplyAction::OptOut, "{text:?}");
        }
        for text in ["12", "好的谢谢", "", "TDX"] {
            assert_eq!(ReplyAction::of(text), ReplyAction::Unmatched, "{text:?}");
        }
    }
}
