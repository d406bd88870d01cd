//! What a delivery receipt or a resident's reply does to the outbox, the appointment and
//! the resident's opt-outs.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionSession, TransactionTrait};
use serde::Serialize;
use serde_json::json;

use super::MessageKind;
use super::callbacks::{InboundSms, Receipt, ReceiptStatus};
use super::channel::Route;
use super::outbox::{self, Planned};
use super::tasks::{self, NewTask, TaskKind};
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::db::{Sql, begin_write};
use crate::error::AppResult;
use crate::privacy::{Field, Privacy};
use crate::registry::MobilePhone;

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

/// Moves the message a receipt names forward: delivered or failed, only from `sending` or
/// `sent`, so a late or repeated receipt changes nothing. A failed delivery plans the same
/// message through the next channel of the fallback plan. A receipt for a message whose send
/// is not recorded yet is kept in `pending_receipts` (see [`apply_pending`]).
pub async fn apply_receipt<C>(db: &C, receipt: &Receipt) -> AppResult<ReceiptOutcome>
where
    C: ConnectionTrait + TransactionTrait,
{
    let txn = begin_write(db).await?;
    let outcome = apply_in(&txn, receipt).await?;
    if outcome == ReceiptOutcome::Unknown && receipt.status != ReceiptStatus::Accepted {
        let (status, reason) = match &receipt.status {
            ReceiptStatus::Failed(reason) => ("failed", Some(reason.clone())),
            _ => ("delivered", None),
        };
        let mut sql = Sql::new(txn.get_database_backend());
        sql.push(
            "INSERT INTO pending_receipts (provider, provider_message_id, status, reason, at, \
             received_at, tries, next_try_at) VALUES (",
        )
        .bind(receipt.provider)
        .push(", ")
        .bind(
            receipt
                .provider_message_id
                .chars()
                .take(100)
                .collect::<String>(),
        )
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
        .push(")");
        txn.execute_raw(sql.build()).await?;
    }
    txn.commit().await?;
    Ok(outcome)
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
    let rows = db.query_all_raw(sql.build()).await?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        keys.push(row.try_get::<String>("", "idempotency_key")?);
    }
    Ok(keys.is_empty() || keys.iter().any(|k| k == key))
}

/// Receipts kept because they came before their send was recorded: applied now if their
/// message is known, dropped after two days if it never is. Returns how many were applied.
pub async fn apply_pending<C>(db: &C) -> AppResult<u64>
where
    C: ConnectionTrait + TransactionTrait,
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
    C: ConnectionTrait + TransactionTrait,
{
    apply_pending_where(db, Some((provider, provider_message_id))).await
}

async fn apply_pending_where<C>(db: &C, only: Option<(&str, &str)>) -> AppResult<u64>
where
    C: ConnectionTrait + TransactionTrait,
{
    let mut sql = Sql::new(db.get_database_backend());
    let now = Utc::now();
    sql.push(
        "SELECT id, provider, provider_message_id, status, reason, at, received_at, tries \
         FROM pending_receipts WHERE ",
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
    let rows = db.query_all_raw(sql.build()).await?;
    let mut applied = 0;
    let stale = Utc::now() - chrono::Duration::days(2);
    for row in rows {
        let id: i32 = row.try_get("", "id")?;
        let provider: String = row.try_get("", "provider")?;
        let status: String = row.try_get("", "status")?;
        let received_at: DateTime<Utc> = row.try_get("", "received_at")?;
        let Some(provider) = provider_name(&provider) else {
            continue;
        };
        let receipt = Receipt {
            provider,
            provider_message_id: row.try_get("", "provider_message_id")?,
            status: if status == "failed" {
                ReceiptStatus::Failed(
                    row.try_get::<Option<String>>("", "reason")?
                        .unwrap_or_default(),
                )
            } else {
                ReceiptStatus::Delivered
            },
            at: row.try_get("", "at")?,
        };
        let txn = begin_write(db).await?;
        let outcome = apply_in(&txn, &receipt).await?;
        let mut sql = Sql::new(txn.get_database_backend());
        if outcome != ReceiptOutcome::Unknown || received_at < stale {
            sql.push("DELETE FROM pending_receipts WHERE id = ")
                .bind(id);
        } else {
            // Not yet: try again later, less and less often (5 s, 10 s, … up to an hour).
            let tries: i32 = row.try_get("", "tries")?;
            let wait = (5i64 << tries.clamp(0, 10)).min(3600);
            sql.push("UPDATE pending_receipts SET tries = tries + 1, next_try_at = ")
                .bind(now + chrono::Duration::seconds(wait))
                .push(" WHERE id = ")
                .bind(id);
        }
        txn.execute_raw(sql.build()).await?;
        txn.commit().await?;
        if outcome == ReceiptOutcome::Moved {
            applied += 1;
        }
    }
    Ok(applied)
}

async fn apply_in(txn: &impl ConnectionTrait, receipt: &Receipt) -> AppResult<ReceiptOutcome> {
    let now = Utc::now();
    let at = receipt.at.unwrap_or(now);
    let mut sql = Sql::new(txn.get_database_backend());
    match &receipt.status {
        ReceiptStatus::Accepted => {
            return Ok(if known(txn, receipt).await? {
                ReceiptOutcome::Intermediate
            } else {
                ReceiptOutcome::Unknown
            });
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
            " AND state IN ('sending', 'sent') RETURNING id, campaign_id, resident_id, kind, \
             appointment_id, wave_id, idempotency_key, expires_at, step, route",
        );
    let rows = txn.query_all_raw(sql.build()).await?;
    let moved = !rows.is_empty();
    for row in rows {
        let campaign_id: i32 = row.try_get("", "campaign_id")?;
        let resident_id: i32 = row.try_get("", "resident_id")?;
        match &receipt.status {
            ReceiptStatus::Delivered => {
                // A delivered message is a contact attempt of its channel.
                let route: Option<String> = row.try_get("", "route")?;
                crate::contact::from_delivered_message(
                    txn,
                    row.try_get("", "id")?,
                    campaign_id,
                    resident_id,
                    route.as_deref(),
                    at,
                )
                .await?;
            }
            _ => {
                let step: i32 = row.try_get("", "step")?;
                let key: String = row.try_get("", "idempotency_key")?;
                let kind: String = row.try_get("", "kind")?;
                let Some(kind) = MessageKind::parse(&kind) else {
                    continue;
                };
                let base = key.split("#s").next().unwrap_or(&key).to_owned();
                let next = Planned {
                    campaign_id,
                    resident_id,
                    kind,
                    appointment_id: row.try_get("", "appointment_id")?,
                    wave_id: row.try_get("", "wave_id")?,
                    key: format!("{base}#s{}", step + 1),
                    due_at: now,
                    expires_at: row.try_get("", "expires_at")?,
                    route: None,
                    step: step + 1,
                };
                if next.expires_at > now {
                    outbox::insert(txn, &[next], now).await?;
                }
            }
        }
    }
    if moved {
        Ok(ReceiptOutcome::Moved)
    } else if known(txn, receipt).await? {
        Ok(ReceiptOutcome::Unchanged)
    } else {
        Ok(ReceiptOutcome::Unknown)
    }
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
struct Sender {
    resident_id: i32,
    village_code: String,
    route: Route,
}

/// Acts on a reply and keeps it. The number is matched through the phone blind index (own
/// or a relative's); a number shared by several residents is taken as the one most recently
/// messaged.
pub async fn apply_reply<C>(db: &C, privacy: &Privacy, reply: &InboundSms) -> AppResult<ReplyAction>
where
    C: ConnectionTrait + TransactionTrait,
{
    // A NUL in a resident's text means nothing and PostgreSQL cannot store it: left out, so
    // the provider's push is answered rather than retried forever.
    let cleaned;
    let nul = |v: &Option<String>| v.as_deref().is_some_and(crate::text::has_nul);
    let reply = if reply.text.contains('\0') || nul(&reply.provider_id) || nul(&reply.signature) {
        let strip = |v: &Option<String>| v.as_ref().map(|v| v.replace('\0', ""));
        cleaned = InboundSms {
            text: reply.text.replace('\0', ""),
            provider_id: strip(&reply.provider_id),
            signature: strip(&reply.signature),
            ..reply.clone()
        };
        &cleaned
    } else {
        reply
    };
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
    let txn = begin_write(db).await?;
    let senders = match &index {
        Some(index) => senders(&txn, index).await?,
        None => Vec::new(),
    };
    let campaign = crate::campaign::open_campaigns(&txn)
        .await?
        .into_iter()
        .next();
    let sender = senders.first();
    if sender.is_none() {
        action = ReplyAction::Unmatched;
    }
    // The active appointment, for confirm and reschedule.
    let appointment = match (sender, &campaign) {
        (Some(s), Some(c)) => crate::appointment::active_of(&txn, c.id(), s.resident_id).await?,
        _ => None,
    };
    if matches!(action, ReplyAction::Confirm | ReplyAction::Reschedule) && appointment.is_none() {
        action = ReplyAction::Unmatched;
    }
    let mut sql = Sql::new(txn.get_database_backend());
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
    .bind(index.clone())
    .push(", ")
    .bind(masked.as_str())
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
    let Some(kept) = txn.query_one_raw(sql.build()).await? else {
        // The provider pushed this reply before: it was acted on then.
        txn.commit().await?;
        tracing::info!(provider = reply.provider, "a reply pushed again: ignored");
        return Ok(action);
    };
    let reply_id: i32 = kept.try_get("", "id")?;
    // A reply from a resident's number: they were reached.
    if let (Some(s), Some(c)) = (sender, &campaign) {
        outbox::progress(&txn, c.id(), s.resident_id, true, received_at).await?;
    }
    match (action, sender) {
        (ReplyAction::Confirm, Some(_)) => {
            if let Some(a) = &appointment {
                confirm(&txn, a.id, now).await?;
            }
        }
        (ReplyAction::Reschedule, Some(s)) => {
            if let (Some(a), Some(c)) = (&appointment, &campaign) {
                tasks::create(
                    &txn,
                    NewTask {
                        campaign_id: c.id(),
                        resident_id: s.resident_id,
                        village_code: s.village_code.clone(),
                        kind: TaskKind::RescheduleRequest,
                        dedupe_key: format!("reschedule:a{}:{}", a.id, a.day),
                        message_id: None,
                        reply_id: Some(reply_id),
                        note: Some(format!("居民回复改期，原预约 {}", a.day)),
                    },
                    now,
                )
                .await?;
                let mut options = outbox::immediate(
                    c.id(),
                    s.resident_id,
                    MessageKind::RescheduleOptions,
                    Some(a.id),
                    outbox::key(
                        MessageKind::RescheduleOptions,
                        s.resident_id,
                        &format!("a{}", a.id),
                        a.day,
                    ),
                    now,
                );
                options.route = Some(s.route.code());
                outbox::insert(&txn, &[options], now).await?;
            }
        }
        (ReplyAction::OptOut, Some(first)) => {
            // The number leaves SMS wherever it is: own phone or a relative's.
            let index = index.clone().unwrap_or_default();
            for (set_flag, where_column) in [
                (
                    "UPDATE residents SET phone_opt_out = ",
                    " WHERE phone_index = ",
                ),
                (
                    "UPDATE residents SET relative_opt_out = ",
                    " WHERE relative_phone_index = ",
                ),
            ] {
                let mut sql = Sql::new(txn.get_database_backend());
                sql.push(set_flag)
                    .bind(true)
                    .push(", updated_at = ")
                    .bind(now)
                    .push(where_column)
                    .bind(index.clone());
                txn.execute_raw(sql.build()).await?;
            }
            audit::record(
                &txn,
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
                confirm_opt_out(
                    &txn,
                    c.id(),
                    first.resident_id,
                    &subject,
                    Some(first.route),
                    now,
                )
                .await?;
            }
        }
        (_, Some(s)) => {
            if let Some(c) = &campaign {
                tasks::create(
                    &txn,
                    NewTask {
                        campaign_id: c.id(),
                        resident_id: s.resident_id,
                        village_code: s.village_code.clone(),
                        kind: TaskKind::Reply,
                        dedupe_key: format!("reply:{reply_id}"),
                        message_id: None,
                        reply_id: Some(reply_id),
                        note: Some(format!(
                            "居民回复：{}",
                            reply.text.chars().take(100).collect::<String>()
                        )),
                    },
                    now,
                )
                .await?;
            }
        }
        (_, None) => {}
    }
    txn.commit().await?;
    Ok(action)
}

/// The resident confirms their active appointment (reply 1, or 确认 on their link); a second
/// confirmation keeps the first time.
pub(crate) async fn confirm(
    db: &impl ConnectionTrait,
    appointment_id: i32,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE appointments SET confirmed_at = ")
        .bind(now)
        .push(" WHERE id = ")
        .bind(appointment_id)
        .push(" AND confirmed_at IS NULL");
    db.execute_raw(sql.build()).await?;
    Ok(())
}

/// Takes a resident out of every channel at once (退订 on their own link): own phone, a
/// relative's phone, WeChat and e-mail. Returns whether anything changed.
pub(crate) async fn opt_out_resident(
    db: &impl ConnectionTrait,
    resident_id: i32,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE residents SET phone_opt_out = ")
        .bind(true)
        .push(", relative_opt_out = ")
        .bind(true)
        .push(", wechat_opt_out = ")
        .bind(true)
        .push(", email_opt_out = ")
        .bind(true)
        .push(", updated_at = ")
        .bind(now)
        .push(" WHERE id = ")
        .bind(resident_id)
        .push(" AND NOT (phone_opt_out AND relative_opt_out AND wechat_opt_out AND email_opt_out)");
    Ok(db.execute_raw(sql.build()).await?.rows_affected() > 0)
}

/// Queues the confirmation of an opt-out, once per `subject` (the number a TD came from, or
/// the resident whose link was used); `route`: back the way the request came, when it came
/// by SMS.
pub(crate) async fn confirm_opt_out(
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

/// Residents whose own or relative's number has this blind index, the most recently
/// messaged first.
async fn senders(db: &impl ConnectionTrait, index: &[u8]) -> AppResult<Vec<Sender>> {
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
    for row in db.query_all_raw(sql.build()).await? {
        let route: String = row.try_get("", "route")?;
        found.push((
            row.try_get("", "last_sent")?,
            Sender {
                resident_id: row.try_get("", "id")?,
                village_code: row.try_get("", "village_code")?,
                route: Route::parse(&route).unwrap_or(Route::Phone),
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
