//! Contact attempts: every time a cadre calls, visits or writes to a resident (or a relative),
//! and every message the outreach engine delivered. They are the documented contact a refusal
//! registration rests on ("经多次联系"), and they move the resident's progress row to notified
//! or reached.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::area::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::campaign::{self, Campaign};
use crate::db::Sql;
use crate::error::{AppError, AppResult};
use crate::vocabulary::vocabulary;

vocabulary!(
    /// How the resident was contacted.
    ContactChannel {
        PhoneCall => "phone_call", "电话";
        HomeVisit => "home_visit", "入户";
        Sms => "sms", "短信";
        WeChat => "wechat", "微信";
        Email => "email", "电子邮件";
        Letter => "letter", "书面通知";
        Relative => "relative", "通过亲属";
    }
);

vocabulary!(
    /// Which of the resident's contacts was used.
    ContactUsed {
        OwnPhone => "own_phone", "本人电话";
        RelativePhone => "relative_phone", "亲属电话";
        WeChat => "wechat", "微信";
        Email => "email", "电子邮箱";
        InPerson => "in_person", "当面";
        Other => "other", "其他";
    }
);

vocabulary!(
    /// What came of it.
    Outcome {
        ReachedAgreed => "reached_agreed", "已联系，同意体检";
        ReachedRefused => "reached_refused", "已联系，拒绝体检";
        ExaminedElsewhere => "examined_elsewhere", "已在外地体检";
        NoAnswer => "no_answer", "无人接听";
        WrongNumber => "wrong_number", "号码错误";
        Unreachable => "unreachable", "无法联系";
        LeftMessage => "left_message", "已留言";
        Delivered => "delivered", "消息已送达";
    }
);

impl Outcome {
    /// The person (or a relative) was spoken to.
    pub fn reached(self) -> bool {
        matches!(
            self,
            Outcome::ReachedAgreed | Outcome::ReachedRefused | Outcome::ExaminedElsewhere
        )
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAttempt {
    /// When (default: now); not in the future.
    pub attempted_at: Option<DateTime<Utc>>,
    pub channel: ContactChannel,
    pub contact: ContactUsed,
    pub outcome: Outcome,
    pub note: Option<String>,
    /// A key the client chose for this attempt (8–64 letters, digits, `-` or `_`): sent again,
    /// the same attempt is answered and no second one is written. The cadre's phone pages
    /// send one with every attempt they queue.
    #[serde(default)]
    pub client_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub attempted_at: DateTime<Utc>,
    /// The local day it counts for.
    pub day: NaiveDate,
    pub channel: ContactChannel,
    pub channel_label: String,
    pub contact: ContactUsed,
    pub outcome: Outcome,
    pub outcome_label: String,
    /// The person or a relative was spoken to.
    pub reached: bool,
    pub note: Option<String>,
    /// Set when the attempt is a message the service delivered.
    pub message_id: Option<i32>,
    pub recorded_by: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempts {
    pub items: Vec<AttemptView>,
    /// Attempts, the different days they were on, and whether any reached the person.
    pub count: usize,
    pub days: usize,
    pub reached: bool,
}

/// A resident of the campaign the caller may act on, and their village.
async fn resident_in_scope(
    db: &impl ConnectionTrait,
    actor: &Actor,
    resident_id: i32,
) -> AppResult<String> {
    let resident = crate::registry::find(db, &actor.scope, resident_id).await?;
    Ok(resident.village_code)
}

/// What logging an attempt did: the attempt written now, or the one written earlier under
/// the same client key (id, campaign, resident).
pub enum Recorded {
    Now(i32),
    Earlier((i32, i32, i32)),
}

/// A cadre logs an attempt (audited); the progress row moves to notified or reached.
pub async fn record(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    new: NewAttempt,
) -> AppResult<Recorded> {
    let now = Utc::now();
    let attempted_at = new.attempted_at.unwrap_or(now);
    if attempted_at > now + Duration::minutes(5) {
        return Err(AppError::validation(
            "attempt_in_future",
            "联系时间不能晚于现在",
        ));
    }
    let note = crate::validate::optional_name(new.note.as_deref(), "备注", 500)?;
    let client_key = new
        .client_key
        .as_deref()
        .map(crate::client_key::check)
        .transpose()?;
    if let Some(key) = client_key
        && let Some(done) = by_client_key(txn, key).await?
    {
        return Ok(Recorded::Earlier(done));
    }
    let campaign = campaign::get_open(txn, campaign_id).await?;
    if attempted_at.with_timezone(&campaign.timezone).date_naive() < campaign.model.reference_date {
        return Err(AppError::validation(
            "attempt_before_campaign",
            "联系时间早于本次体检工作",
        ));
    }
    let village = resident_in_scope(txn, actor, resident_id).await?;
    let id = insert(
        txn,
        &campaign,
        resident_id,
        &village,
        attempted_at,
        new.channel,
        new.contact,
        new.outcome,
        note.clone(),
        None,
        Recorder {
            user_id: actor.user_id,
            area: actor.scope.area().map(|a| a.as_str().to_owned()),
            client_key: client_key.map(str::to_owned),
        },
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("the attempt was not written"))?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "contact.attempt",
            entity: "contact_attempt",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&village).ok(),
            summary: json!({
                "campaign_id": campaign_id,
                "resident_id": resident_id,
                "channel": new.channel.code(),
                "outcome": new.outcome.code(),
            }),
        },
    )
    .await?;
    Ok(Recorded::Now(id))
}

/// The attempt a cadre logged, as the list shows it (read after its transaction ends).
pub async fn recorded(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    recorded: Recorded,
) -> AppResult<AttemptView> {
    let id = match recorded {
        Recorded::Earlier(done) => {
            return repeated(db, actor, campaign_id, resident_id, done).await;
        }
        Recorded::Now(id) => id,
    };
    let attempts = list(db, actor, campaign_id, resident_id).await?;
    attempts
        .items
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| anyhow::anyhow!("attempt {id} vanished").into())
}

/// A `contact_attempts` row as the list reads it.
#[derive(FromQueryResult)]
struct AttemptRow {
    id: i32,
    campaign_id: i32,
    resident_id: i32,
    attempted_at: DateTime<Utc>,
    day: NaiveDate,
    channel: String,
    contact: String,
    outcome: String,
    reached: bool,
    note: Option<String>,
    message_id: Option<i32>,
    recorded_by: Option<i32>,
}

/// The id a statement returns.
#[derive(FromQueryResult)]
struct Id {
    id: i32,
}

/// Who logged an attempt, and the area they were responsible for then (none for the county
/// office with the whole tree and for delivered messages).
#[derive(Default)]
struct Recorder {
    user_id: Option<i32>,
    area: Option<String>,
    /// The key the client chose, when it sent one.
    client_key: Option<String>,
}

/// The attempt already written under `key`: its id, campaign and resident.
async fn by_client_key(db: &impl ConnectionTrait, key: &str) -> AppResult<Option<(i32, i32, i32)>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT id, campaign_id, resident_id FROM contact_attempts WHERE client_key = ")
        .bind(key);
    #[derive(FromQueryResult)]
    struct Written {
        id: i32,
        campaign_id: i32,
        resident_id: i32,
    }
    Ok(Written::find_by_statement(sql.build())
        .one(db)
        .await?
        .map(|w| (w.id, w.campaign_id, w.resident_id)))
}

/// The answer to an attempt sent again with its key: the attempt written the first time,
/// if the key was used for the same resident and campaign and the caller may see it.
async fn repeated(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    (id, campaign, resident): (i32, i32, i32),
) -> AppResult<AttemptView> {
    if (campaign, resident) != (campaign_id, resident_id) {
        return Err(AppError::Conflict(
            "该 client_key 已用于另一条联系记录".to_owned(),
        ));
    }
    list(db, actor, campaign_id, resident_id)
        .await?
        .items
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| AppError::NotFound("联系记录不存在".to_owned()))
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    resident_id: i32,
    village: &str,
    attempted_at: DateTime<Utc>,
    channel: ContactChannel,
    contact: ContactUsed,
    outcome: Outcome,
    note: Option<String>,
    message_id: Option<i32>,
    recorder: Recorder,
) -> AppResult<Option<i32>> {
    let day = attempted_at.with_timezone(&campaign.timezone).date_naive();
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO contact_attempts (campaign_id, resident_id, village_code, attempted_at, \
         day, channel, contact, outcome, reached, note, message_id, recorded_by, \
         recorded_area, client_key, created_at) VALUES (",
    )
    .bind(campaign.id())
    .push(", ")
    .bind(resident_id)
    .push(", ")
    .bind(village)
    .push(", ")
    .bind(attempted_at)
    .push(", ")
    .bind(day)
    .push(", ")
    .bind(channel.code())
    .push(", ")
    .bind(contact.code())
    .push(", ")
    .bind(outcome.code())
    .push(", ")
    .bind(outcome.reached())
    .push(", ")
    .bind(note)
    .push(", ")
    .bind(message_id)
    .push(", ")
    .bind(recorder.user_id)
    .push(", ")
    .bind(recorder.area)
    .push(", ")
    .bind(recorder.client_key)
    .push(", ")
    .bind(Utc::now())
    .push(") ON CONFLICT (message_id) WHERE message_id IS NOT NULL DO NOTHING RETURNING id");
    let id = Id::find_by_statement(sql.build())
        .one(db)
        .await?
        .map(|row| row.id);
    if id.is_some() {
        // Spoken to, or a message delivered: reached; otherwise at least notified.
        let reached = outcome.reached() || outcome == Outcome::Delivered;
        crate::campaign::enrol::notice_contact(
            db,
            campaign.id(),
            resident_id,
            reached,
            attempted_at,
        )
        .await?;
    }
    Ok(id)
}

/// A delivered message counts as an attempt of its channel, once. `route` is the
/// fallback-plan route it took (`wechat`, `phone`, `email`, `relative`).
pub async fn from_delivered_message(
    db: &impl ConnectionTrait,
    message_id: i32,
    campaign_id: i32,
    resident_id: i32,
    route: Option<&str>,
    at: DateTime<Utc>,
) -> AppResult<()> {
    let campaign = campaign::get(db, campaign_id).await?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT village_code FROM residents WHERE id = ")
        .bind(resident_id);
    #[derive(FromQueryResult)]
    struct Village {
        village_code: String,
    }
    let Some(Village {
        village_code: village,
    }) = Village::find_by_statement(sql.build()).one(db).await?
    else {
        return Ok(());
    };
    let (channel, contact) = match route {
        Some("wechat") => (ContactChannel::WeChat, ContactUsed::WeChat),
        Some("email") => (ContactChannel::Email, ContactUsed::Email),
        Some("relative") => (ContactChannel::Sms, ContactUsed::RelativePhone),
        _ => (ContactChannel::Sms, ContactUsed::OwnPhone),
    };
    insert(
        db,
        &campaign,
        resident_id,
        &village,
        at,
        channel,
        contact,
        Outcome::Delivered,
        None,
        Some(message_id),
        Recorder::default(),
    )
    .await?;
    Ok(())
}

/// A resident's attempts in a campaign, oldest first, with the counts the refusal rule uses.
pub async fn list(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<Attempts> {
    campaign::get(db, campaign_id).await?;
    resident_in_scope(db, actor, resident_id).await?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT id, campaign_id, resident_id, attempted_at, day, channel, contact, outcome, \
         reached, note, message_id, recorded_by FROM contact_attempts WHERE campaign_id = ",
    )
    .bind(campaign_id)
    .push(" AND resident_id = ")
    .bind(resident_id)
    .push(" ORDER BY attempted_at, id");
    let mut items = Vec::new();
    for row in AttemptRow::find_by_statement(sql.build()).all(db).await? {
        let channel = ContactChannel::parse(&row.channel).unwrap_or(ContactChannel::PhoneCall);
        let outcome = Outcome::parse(&row.outcome).unwrap_or(Outcome::Unreachable);
        items.push(AttemptView {
            id: row.id,
            campaign_id: row.campaign_id,
            resident_id: row.resident_id,
            attempted_at: row.attempted_at,
            day: row.day,
            channel_label: channel.label().to_owned(),
            channel,
            contact: ContactUsed::parse(&row.contact).unwrap_or(ContactUsed::Other),
            outcome_label: outcome.label().to_owned(),
            outcome,
            reached: row.reached,
            note: row.note,
            message_id: row.message_id,
            recorded_by: row.recorded_by,
        });
    }
    let mut days: Vec<NaiveDate> = items.iter().map(|a| a.day).collect();
    days.sort_unstable();
    days.dedup();
    Ok(Attempts {
        count: items.len(),
        days: days.len(),
        reached: items.iter().any(|a| a.reached),
        items,
    })
}
