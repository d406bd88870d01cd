//! Refusal registration (拒绝体检登记备案): a resident who will not be examined is registered
//! only after repeated documented contact, and signs (or a guardian or relative signs) to
//! confirm. Registrations are never changed: the office confirms or returns them, a returned
//! one is replaced by a new registration that supersedes it, and an exam later revokes the
//! refusal — each of these a new record in the resident's hash chain ([`chain`]).

pub mod chain;
mod export;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use entities::users::{self, Role};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::area::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::{Actor, Scope};
use crate::campaign::{self, Campaign};
use crate::client_key;
use crate::config::SignatureSettings;
use crate::db::Sql;
use crate::error::{AppError, AppResult};
use crate::privacy::{Field, Privacy};
use crate::signature::{self, DirStore, Limits, SignatureError, SignatureImage, SignatureStore};
use crate::vocabulary::vocabulary;

pub use chain::{ChainBreak, ChainReport};
pub use export::{register_csv, register_xlsx};

vocabulary!(
    /// Why the resident will not be examined.
    Reason {
        Unwilling => "unwilling", "不愿意";
        ExaminedElsewhere => "examined_elsewhere", "已在外地体检";
        SeriouslyIll => "seriously_ill", "重病/卧床";
        MentalDisorder => "mental_disorder", "精神障碍";
        Other => "other", "其他";
    }
);

vocabulary!(
    /// Who signed.
    SignerRelation {
        Own => "self", "本人";
        Guardian => "guardian", "监护人";
        Relative => "relative", "亲属";
    }
);

vocabulary!(
    /// Where a registration stands, from the records that follow it.
    Status {
        Pending => "pending", "待审核";
        Confirmed => "confirmed", "已确认";
        Returned => "returned", "已退回";
        Superseded => "superseded", "已重新登记";
        Revoked => "revoked", "已撤销（已体检）";
    }
);

impl Status {
    /// Still in force or waiting for review: a second registration would contradict it.
    fn is_open(self) -> bool {
        matches!(self, Status::Pending | Status::Confirmed)
    }
}

const REGISTERED: &str = "registered";
const CONFIRMED: &str = "confirmed";
const RETURNED: &str = "returned";
const REVOKED: &str = "revoked";

/// Where the registration was signed, as the phone reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    /// Metres.
    pub accuracy_m: Option<f64>,
    /// e.g. 阿尔善村3组12号.
    pub address: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRegistration {
    pub reason: Reason,
    /// Required when the reason is `other`.
    pub reason_text: Option<String>,
    pub signer_name: String,
    pub signer_relation: SignerRelation,
    /// The signature as a PNG, base64 (a `data:image/png;base64,` prefix is accepted).
    /// Exactly one of the three signature fields.
    pub signature_png: Option<String>,
    /// The signature as SVG text (rendered to PNG here).
    pub signature_svg: Option<String>,
    /// Signature-pad strokes: `{"width", "height", "strokes": [[[x, y], …], …]}`.
    #[schema(value_type = Option<Object>)]
    pub signature_strokes: Option<serde_json::Value>,
    /// The witness: a village cadre or township officer whose area covers the village
    /// (default: the user registering, when they are one; office users must name one).
    pub witness_user_id: Option<i32>,
    /// The contact attempts the registration rests on (default: all of the resident's
    /// attempts in the campaign).
    pub attempt_ids: Option<Vec<i32>>,
    pub location: Option<Location>,
    /// A key the client chose for this registration (8–64 of `A-Z a-z 0-9 - _`): the same
    /// registration sent again with its key is answered with the one made the first time.
    #[serde(default)]
    pub client_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// Why it is returned (required to return); a remark when confirming.
    pub note: Option<String>,
}

/// Something that happened to a registration after it was made.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i32,
    /// `confirmed`, `returned` or `revoked`.
    pub kind: String,
    pub note: Option<String>,
    pub exam_record_id: Option<i32>,
    pub recorded_by_name: String,
    pub recorded_at: DateTime<Utc>,
    pub hash: String,
}

/// A registration in the register, with where it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Registration {
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub resident_name: String,
    /// Masked unless the register was asked for in full.
    pub id_number: String,
    pub sex: String,
    pub birth_date: NaiveDate,
    pub village_code: String,
    pub village_name: Option<String>,
    pub township_name: Option<String>,
    pub reason: Reason,
    pub reason_label: String,
    pub reason_text: Option<String>,
    pub signer_name: String,
    pub signer_relation: SignerRelation,
    pub signer_relation_label: String,
    /// The signature image's SHA-256 (the image itself: `GET /refusals/{id}/signature`).
    pub signature_sha256: String,
    pub witness_user_id: Option<i32>,
    pub witness_name: String,
    pub attempt_ids: Vec<i32>,
    pub location: Option<Location>,
    pub registered_by: Option<i32>,
    pub registered_by_name: String,
    pub registered_at: DateTime<Utc>,
    /// The returned registration this one replaces.
    pub supersedes: Option<i32>,
    /// The registration that replaced this one.
    pub superseded_by: Option<i32>,
    pub status: Status,
    pub status_label: String,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub reviewed_by_name: Option<String>,
    pub review_note: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub hash: String,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Register {
    pub campaign_id: i32,
    pub area_code: Option<String>,
    pub status: Option<Status>,
    /// Whether ID numbers are shown in full.
    pub revealed: bool,
    pub count: usize,
    /// Registrations by status (of those listed before the status filter).
    pub by_status: BTreeMap<String, usize>,
    pub items: Vec<Registration>,
}

/// The store the configuration names: a directory, or the database.
pub fn signature_store(
    settings: &SignatureSettings,
    db: &sea_orm::DatabaseConnection,
) -> Box<dyn SignatureStore> {
    match &settings.dir {
        Some(dir) => Box::new(DirStore::new(dir)),
        None => Box::new(signature::DbStore::new(db.clone())),
    }
}

fn signature_error(e: SignatureError) -> AppError {
    match e {
        SignatureError::TooLarge { .. }
        | SignatureError::StrokesTooLarge { .. }
        | SignatureError::SvgTooLarge { .. } => AppError::Request {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            code: "signature_too_large",
            message: e.to_string(),
        },
        _ => AppError::Validation {
            code: "invalid_signature",
            message: e.to_string(),
            details: Some(json!({"problem": e.code()})),
        },
    }
}

/// The one signature a registration carries, checked.
fn signature_of(new: &NewRegistration) -> AppResult<SignatureImage> {
    let limits = Limits::default();
    let given = [
        new.signature_png.is_some(),
        new.signature_svg.is_some(),
        new.signature_strokes.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(AppError::validation(
            "signature_required",
            "请提供且只提供一种签名：signature_png、signature_svg 或 signature_strokes",
        ));
    }
    if let Some(raw) = &new.signature_png {
        let raw = raw.trim();
        let raw = raw.strip_prefix("data:image/png;base64,").unwrap_or(raw);
        // Base64 is 4/3 of the bytes: refuse an oversized upload before decoding it.
        if raw.len() / 4 * 3 > limits.max_bytes + 3 {
            return Err(signature_error(SignatureError::TooLarge {
                max_kb: limits.max_bytes.div_ceil(1024),
            }));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| signature_error(SignatureError::NotAnImage))?;
        return signature::from_png(&bytes, &limits).map_err(signature_error);
    }
    if let Some(svg) = &new.signature_svg {
        return signature::from_svg(svg, &limits).map_err(signature_error);
    }
    let strokes = new
        .signature_strokes
        .as_ref()
        .map(serde_json::Value::to_string)
        .unwrap_or_default();
    signature::from_strokes(&strokes, &limits).map_err(signature_error)
}

fn check_location(location: &Option<Location>) -> AppResult<Option<String>> {
    let Some(l) = location else {
        return Ok(None);
    };
    let finite = l.latitude.is_finite() && l.longitude.is_finite();
    if !finite
        || !(-90.0..=90.0).contains(&l.latitude)
        || !(-180.0..=180.0).contains(&l.longitude)
        || l.accuracy_m.is_some_and(|a| !a.is_finite() || a < 0.0)
    {
        return Err(AppError::validation(
            "invalid_location",
            "位置无效：纬度应在 -90 至 90 之间，经度应在 -180 至 180 之间",
        ));
    }
    let address = crate::validate::optional_name(l.address.as_deref(), "地址", 200)?;
    Ok(Some(
        json!({
            "latitude": l.latitude,
            "longitude": l.longitude,
            "accuracy_m": l.accuracy_m,
            "address": address,
        })
        .to_string(),
    ))
}

/// A contact attempt as the refusal rule sees it.
#[derive(FromQueryResult)]
struct Attempt {
    id: i32,
    day: NaiveDate,
    reached: bool,
    /// The area its recorder was responsible for when they logged it (`None`: the whole
    /// county, or a delivered message).
    recorded_area: Option<String>,
}

impl Attempt {
    /// Logged by someone who was not responsible for `village`.
    fn foreign_to(&self, village: &AreaCode) -> bool {
        self.recorded_area
            .as_deref()
            .and_then(|code| AreaCode::parse(code).ok())
            .is_some_and(|area| !area.contains(village))
    }
}

/// How far a resident's documented contact is from what the campaign's refusal rule asks:
/// shown on the registration form before it can be sent, and checked when it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactProgress {
    pub rule: crate::campaign::RefusalRule,
    /// Attempts that count (those logged by someone responsible for the village).
    pub attempts: u32,
    pub days: u32,
    /// Whether one of them reached the person or a relative.
    pub reached: bool,
    pub more_attempts: u32,
    pub more_days: u32,
    /// The rule is met: a registration may be made.
    pub met: bool,
    /// What is still missing, in words (`再联系 1 次`, …).
    pub needs: Vec<String>,
}

impl ContactProgress {
    fn of(rule: crate::campaign::RefusalRule, attempts: &[Attempt]) -> Self {
        let count = attempts.len() as u32;
        let days = attempts
            .iter()
            .map(|a| a.day)
            .collect::<BTreeSet<_>>()
            .len() as u32;
        let reached = attempts.iter().any(|a| a.reached);
        let more_attempts = rule.min_attempts.saturating_sub(count);
        let more_days = rule.min_days.saturating_sub(days);
        let mut needs = Vec::new();
        if more_attempts > 0 {
            needs.push(format!("再联系 {more_attempts} 次"));
        }
        if more_days > 0 {
            needs.push(format!("在另外 {more_days} 个不同日期联系"));
        }
        if !reached {
            needs.push("至少一次联系到本人或亲属".to_owned());
        }
        Self {
            rule,
            attempts: count,
            days,
            reached,
            more_attempts,
            more_days,
            met: needs.is_empty(),
            needs,
        }
    }
}

/// The documented contact a registration of `resident_id` would rest on now (the resident
/// must be in the caller's scope).
pub async fn contact_progress(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<ContactProgress> {
    let campaign = campaign::get(db, campaign_id).await?;
    let resident = crate::registry::find(db, &actor.scope, resident_id).await?;
    let village = AreaCode::parse(&resident.village_code)
        .map_err(|e| anyhow::anyhow!("resident {resident_id} has an invalid village: {e}"))?;
    let attempts: Vec<Attempt> = attempts_of(db, campaign_id, resident_id)
        .await?
        .into_iter()
        .filter(|a| !a.foreign_to(&village))
        .collect();
    Ok(ContactProgress::of(campaign.refusal_rule(), &attempts))
}

async fn attempts_of(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<Vec<Attempt>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT id, day, reached, recorded_area FROM contact_attempts WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND resident_id = ")
        .bind(resident_id)
        .push(" ORDER BY id");
    Ok(Attempt::find_by_statement(sql.build()).all(db).await?)
}

/// The attempts a registration rests on, checked against the campaign's rule: at least N
/// attempts on at least M days, one of them reaching the person or a relative. Attempts logged
/// by another village's cadre (the resident has moved since) do not count; cited explicitly,
/// they are refused.
fn check_attempts(
    campaign: &Campaign,
    village: &AreaCode,
    all: Vec<Attempt>,
    chosen: Option<&[i32]>,
) -> AppResult<Vec<i32>> {
    let attempts: Vec<Attempt> = match chosen {
        None => all.into_iter().filter(|a| !a.foreign_to(village)).collect(),
        Some(ids) => {
            let wanted: BTreeSet<i32> = ids.iter().copied().collect();
            let unknown: Vec<i32> = wanted
                .iter()
                .copied()
                .filter(|id| !all.iter().any(|a| a.id == *id))
                .collect();
            if !unknown.is_empty() {
                return Err(AppError::Validation {
                    code: "unknown_attempt",
                    message: "所引用的联系记录不属于该居民在本次体检工作中的记录".to_owned(),
                    details: Some(json!({"attempt_ids": unknown})),
                });
            }
            let cited: Vec<Attempt> = all.into_iter().filter(|a| wanted.contains(&a.id)).collect();
            let foreign: Vec<i32> = cited
                .iter()
                .filter(|a| a.foreign_to(village))
                .map(|a| a.id)
                .collect();
            if !foreign.is_empty() {
                return Err(AppError::Validation {
                    code: "attempt_out_of_scope",
                    message:
                        "所引用的联系记录由其他村（社区）的干部登记，不能作为本村居民拒检的依据"
                            .to_owned(),
                    details: Some(json!({"attempt_ids": foreign})),
                });
            }
            cited
        }
    };
    let progress = ContactProgress::of(campaign.refusal_rule(), &attempts);
    if !progress.met {
        return Err(AppError::Validation {
            code: "insufficient_contact",
            message: format!(
                "联系次数不足，暂不能登记拒检：需在至少 {} 个不同日期联系至少 {} 次，且至少一次联系到本人或亲属（现有 {} 次、{} 个日期）。还需{}",
                progress.rule.min_days,
                progress.rule.min_attempts,
                progress.attempts,
                progress.days,
                progress.needs.join("，")
            ),
            details: Some(json!({
                "rule": progress.rule,
                "attempts": progress.attempts,
                "days": progress.days,
                "reached": progress.reached,
                "more_attempts": progress.more_attempts,
                "more_days": progress.more_days,
                "needs_reached": !progress.reached,
            })),
        });
    }
    Ok(attempts.iter().map(|a| a.id).collect())
}

/// The witness: an active village cadre or township officer whose area covers the village
/// (as documented). County office staff, the administrator included, are not witnesses: an
/// office user registering a refusal names the cadre or officer who witnessed it.
async fn witness(
    db: &impl ConnectionTrait,
    actor: &Actor,
    requested: Option<i32>,
    village: &AreaCode,
) -> AppResult<(Option<i32>, String)> {
    let id = match (requested, actor.user_id) {
        (Some(id), _) => id,
        // The command line records as itself.
        (None, None) => return Ok((None, actor.username.clone())),
        (None, Some(_)) if !may_witness(actor.role) => {
            return Err(AppError::validation(
                "witness_required",
                "请在 witness_user_id 中指定见证人：负责该村（社区）的村干部或乡镇干部",
            ));
        }
        (None, Some(id)) => id,
    };
    let user = users::Entity::find_by_id(id).one(db).await?;
    let Some(user) = user.filter(|u| u.active) else {
        return Err(AppError::validation(
            "unknown_witness",
            format!("见证人（用户 {id}）不存在或已停用"),
        ));
    };
    let covers = user
        .area_code
        .as_deref()
        .and_then(|code| AreaCode::parse(code).ok())
        .is_some_and(|area| area.contains(village));
    if !may_witness(user.role) || !covers {
        return Err(AppError::validation(
            "witness_out_of_scope",
            "见证人应为负责该村（社区）的村干部或乡镇干部，县级管理员、医疗机构和审计人员不能作为见证人",
        ));
    }
    Ok((Some(user.id), user.display_name.unwrap_or(user.username)))
}

/// Roles whose users may witness a refusal (when their area covers the village).
fn may_witness(role: Role) -> bool {
    matches!(role, Role::Township | Role::Cadre)
}

/// The resident's stage in the campaign; `Refused` when they cannot be registered.
async fn check_registrable(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT stage FROM enrolments WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND resident_id = ")
        .bind(resident_id);
    #[derive(FromQueryResult)]
    struct Stage {
        stage: String,
    }
    let stage = Stage::find_by_statement(sql.build())
        .one(db)
        .await?
        .map(|row| row.stage);
    match stage.as_deref() {
        None => Err(AppError::refused(
            "not_enrolled",
            "该居民不在本次体检对象范围内",
        )),
        Some("examined") => Err(AppError::refused(
            "already_examined",
            "该居民本年度已体检，不能登记拒检",
        )),
        Some("exempt") => Err(AppError::refused(
            "exempt",
            "该居民已免于体检（死亡或迁出），不能登记拒检",
        )),
        _ if entities::exam_records::Entity::find()
            .filter(entities::exam_records::Column::CampaignId.eq(campaign_id))
            .filter(entities::exam_records::Column::ResidentId.eq(resident_id))
            .count(db)
            .await?
            > 0 =>
        {
            Err(AppError::refused(
                "already_examined",
                "该居民本年度已体检，不能登记拒检",
            ))
        }
        _ => Ok(()),
    }
}

/// A registration as the cadre sent it, checked without the database: its texts, its key and
/// its signature decoded.
pub struct Checked {
    new: NewRegistration,
    reason_text: Option<String>,
    signer_name: String,
    location: Option<String>,
    key: Option<String>,
    image: SignatureImage,
}

/// What a registration did: recorded now, or recorded earlier under the same client key.
pub enum Registered {
    Now(i32),
    Earlier(i32),
}

/// Everything about a registration that needs no database, first: a bad upload costs no lock.
pub async fn check(new: NewRegistration) -> AppResult<Checked> {
    let reason_text = crate::validate::optional_name(new.reason_text.as_deref(), "原因说明", 500)?;
    if new.reason == Reason::Other && reason_text.is_none() {
        return Err(AppError::validation(
            "reason_text_required",
            "拒检原因为“其他”时请填写原因说明",
        ));
    }
    let signer_name = crate::validate::check_name(&new.signer_name, "签字人姓名", 32)?;
    let location = check_location(&new.location)?;
    let key = new
        .client_key
        .as_deref()
        .map(client_key::check)
        .transpose()?
        .map(str::to_owned);
    // Decoding or rendering a signature is CPU work of up to tens of milliseconds: off the
    // request threads.
    let (new, image) = tokio::task::spawn_blocking(move || {
        let image = signature_of(&new);
        (new, image)
    })
    .await
    .map_err(|e| anyhow::anyhow!("checking a signature: {e}"))?;
    Ok(Checked {
        new,
        reason_text,
        signer_name,
        location,
        key,
        image: image?,
    })
}

/// Registers a refusal (audited). The resident must be in the caller's scope, enrolled, not
/// examined, without an open registration, and with enough documented contact; a returned
/// registration of theirs is superseded by this one. The signature image is stored in the same
/// transaction when it lives in the database.
pub async fn register(
    txn: &impl ConnectionTrait,
    signatures: &SignatureSettings,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    checked: Checked,
) -> AppResult<Registered> {
    let Checked {
        new,
        reason_text,
        signer_name,
        location,
        key,
        image,
    } = checked;
    let campaign = campaign::get_open_locked(txn, campaign_id).await?;
    let resident = crate::registry::find(txn, &actor.scope, resident_id).await?;
    let village = AreaCode::parse(&resident.village_code)
        .map_err(|e| anyhow::anyhow!("resident {resident_id} has a bad village: {e}"))?;
    let subject = resident_id.to_string();
    if let Some(key) = &key {
        let claimed = client_key::claim(
            txn,
            key,
            client_key::Kind::Refusal,
            campaign_id,
            &subject,
            actor.user_id,
        )
        .await?;
        if let Some(taken) = claimed {
            let id = taken
                .record(client_key::Kind::Refusal, campaign_id, &subject)?
                .parse::<i32>()
                .map_err(|e| anyhow::anyhow!("a refusal's client key names no record: {e}"))?;
            return Ok(Registered::Earlier(id));
        }
    }
    chain::lock_resident(txn, resident_id).await?;
    check_registrable(txn, campaign_id, resident_id).await?;
    let history = registrations_of(txn, campaign_id, resident_id).await?;
    if let Some(open) = history.iter().find(|r| r.status.is_open()) {
        return Err(AppError::Refused {
            code: "open_registration",
            message: format!(
                "该居民已有一份拒检登记（{}），不能重复登记",
                open.status.label()
            ),
            details: Some(json!({"registration_id": open.id, "status": open.status})),
        });
    }
    let supersedes = history
        .iter()
        .find(|r| r.status == Status::Returned)
        .map(|r| r.id);
    let attempts = attempts_of(txn, campaign_id, resident_id).await?;
    let attempt_ids = check_attempts(&campaign, &village, attempts, new.attempt_ids.as_deref())?;
    let (witness_user_id, witness_name) =
        witness(txn, actor, new.witness_user_id, &village).await?;
    check_not_reused(txn, &image.sha256, resident_id).await?;
    // Every check has passed. In a directory the image is written before the record commits
    // (an image nobody names is harmless, a record naming a missing image is not); in the
    // database it commits with the record.
    match &signatures.dir {
        Some(dir) => DirStore::new(dir).put(&image).await?,
        None => signature::store::put_blob(txn, &image).await?,
    }
    let record = chain::append(
        txn,
        chain::Content {
            kind: REGISTERED.to_owned(),
            campaign_id,
            resident_id,
            village_code: resident.village_code.clone(),
            supersedes,
            reason_code: Some(new.reason.code().to_owned()),
            reason_text,
            signer_name: Some(signer_name),
            signer_relation: Some(new.signer_relation.code().to_owned()),
            signature_sha256: Some(image.sha256.clone()),
            witness_user_id,
            witness_name: Some(witness_name),
            attempt_ids: Some(json!(attempt_ids).to_string()),
            location,
            recorded_by: actor.user_id,
            recorded_by_name: actor.username.clone(),
            recorded_at: Utc::now(),
            ..Default::default()
        },
    )
    .await?;
    let id = record.id;
    if let Some(key) = &key {
        client_key::settle(txn, key, &id.to_string()).await?;
    }
    audit_record(
        txn,
        actor,
        "refusal.register",
        &record,
        &resident.village_code,
        json!({
            "campaign_id": campaign_id,
            "resident_id": resident_id,
            "reason": new.reason.code(),
            "attempts": attempt_ids.len(),
            "supersedes": supersedes,
            "signature_sha256": image.sha256,
        }),
    )
    .await?;
    Ok(Registered::Now(id))
}

/// The very same image on another resident's registration is a copy, not a signature.
async fn check_not_reused(
    db: &impl ConnectionTrait,
    sha256: &str,
    resident_id: i32,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT id FROM refusal_records WHERE signature_sha256 = ")
        .bind(sha256.to_owned())
        .push(" AND resident_id <> ")
        .bind(resident_id)
        .push(" LIMIT 1");
    if db.query_one_raw(sql.build()).await?.is_some() {
        return Err(AppError::Validation {
            code: "invalid_signature",
            message: "该签名图片已用于其他居民的拒检登记，请本人重新签名".to_owned(),
            details: Some(json!({"problem": "reused"})),
        });
    }
    Ok(())
}

/// Audits a record written to a chain; the entry names the record and carries its place and
/// hash, which [`chain::verify`] compares with the record.
async fn audit_record(
    db: &impl ConnectionTrait,
    actor: &Actor,
    action: &'static str,
    record: &chain::Appended,
    village: &str,
    mut summary: serde_json::Value,
) -> AppResult<()> {
    summary["seq"] = json!(record.seq);
    summary["hash"] = json!(record.hash);
    audit::record(
        db,
        actor,
        AuditEvent {
            action,
            entity: "refusal_record",
            entity_id: Some(record.id.to_string()),
            area_code: AreaCode::parse(village).ok(),
            summary,
        },
    )
    .await?;
    Ok(())
}

/// The office's decision on a pending registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The resident counts as refused.
    Confirm,
    /// Returned with the reason; the cadre registers it anew.
    Return,
}

/// The office's note on a decision, checked: a return needs its reason.
pub fn review_note(decision: Decision, review: Review) -> AppResult<Option<String>> {
    match decision {
        Decision::Confirm => {
            crate::validate::optional_name(review.note.as_deref(), "审核意见", 500)
        }
        Decision::Return => Ok(Some(
            crate::validate::optional_name(review.note.as_deref(), "退回原因", 500)?
                .ok_or_else(|| AppError::validation("note_required", "退回时请填写退回原因"))?,
        )),
    }
}

/// Records the office's decision on a pending registration (audited); a confirmation moves
/// the resident's progress row to refused. Returns the registration as it was.
pub async fn review(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    decision: Decision,
    note: Option<String>,
) -> AppResult<Registration> {
    let kind = match decision {
        Decision::Confirm => CONFIRMED,
        Decision::Return => RETURNED,
    };
    let found = get(txn, actor, id).await?;
    // Two reviews of one registration line up behind the resident's lock; the second sees
    // the first's record.
    chain::lock_resident(txn, found.resident_id).await?;
    let registration = get(txn, actor, id).await?;
    if registration.status != Status::Pending {
        return Err(AppError::Refused {
            code: "not_pending",
            message: format!("该拒检登记{}，不能再审核", registration.status.label()),
            details: Some(json!({"status": registration.status})),
        });
    }
    let now = Utc::now();
    let record = chain::append(
        txn,
        chain::Content {
            kind: kind.to_owned(),
            campaign_id: registration.campaign_id,
            resident_id: registration.resident_id,
            village_code: registration.village_code.clone(),
            registration_id: Some(id),
            note: note.clone(),
            recorded_by: actor.user_id,
            recorded_by_name: actor.username.clone(),
            recorded_at: now,
            ..Default::default()
        },
    )
    .await?;
    if decision == Decision::Confirm {
        campaign::enrol::mark_refused(txn, registration.campaign_id, registration.resident_id, now)
            .await?;
    }
    audit_record(
        txn,
        actor,
        if kind == CONFIRMED {
            "refusal.confirm"
        } else {
            "refusal.return"
        },
        &record,
        &registration.village_code,
        json!({
            "campaign_id": registration.campaign_id,
            "resident_id": registration.resident_id,
            "registration_id": id,
            "note": note,
        }),
    )
    .await?;
    Ok(registration)
}

/// An exam was recorded: every registration of the resident still standing is revoked by a
/// new record (the progress row is already at examined). Call it in the exam's transaction.
pub async fn revoke_for_exam(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    exam_record_id: i32,
) -> AppResult<()> {
    // Most residents never refused: one indexed probe, no lock. A registration being written
    // at this moment holds the resident's row (FOR UPDATE), which the exam record's foreign
    // key waits for, so this probe sees it.
    let mut any = Sql::new(db.get_database_backend());
    any.push("SELECT id FROM refusal_records WHERE resident_id = ")
        .bind(resident_id)
        .push(" AND campaign_id = ")
        .bind(campaign_id)
        .push(" LIMIT 1");
    if db.query_one_raw(any.build()).await?.is_none() {
        return Ok(());
    }
    chain::lock_resident(db, resident_id).await?;
    let standing: Vec<Registration> = registrations_of(db, campaign_id, resident_id)
        .await?
        .into_iter()
        .filter(|r| {
            matches!(
                r.status,
                Status::Pending | Status::Confirmed | Status::Returned
            )
        })
        .collect();
    for registration in standing {
        let record = chain::append(
            db,
            chain::Content {
                kind: REVOKED.to_owned(),
                campaign_id,
                resident_id,
                village_code: registration.village_code.clone(),
                registration_id: Some(registration.id),
                exam_record_id: Some(exam_record_id),
                note: Some("居民已体检，拒检登记撤销".to_owned()),
                recorded_by: actor.user_id,
                recorded_by_name: actor.username.clone(),
                recorded_at: Utc::now(),
                ..Default::default()
            },
        )
        .await?;
        audit_record(
            db,
            actor,
            "refusal.revoke",
            &record,
            &registration.village_code,
            json!({
                "campaign_id": campaign_id,
                "resident_id": resident_id,
                "registration_id": registration.id,
                "exam_record_id": exam_record_id,
            }),
        )
        .await?;
    }
    Ok(())
}

/// The registrations matching `filter` (a `WHERE` continuation over `r`, the registration
/// records), with their status worked out from the records that follow them.
async fn load(db: &impl ConnectionTrait, filter: impl FnOnce(&mut Sql)) -> AppResult<Vec<Loaded>> {
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("SELECT ")
        .push(chain::R_COLUMNS)
        .push(
            ", s.name AS resident_name, s.id_masked, s.id_cipher, s.sex, s.birth_date, \
             v.name AS village_name, t.name AS township_name FROM refusal_records r \
             JOIN residents s ON s.id = r.resident_id \
             LEFT JOIN areas v ON v.code = r.village_code \
             LEFT JOIN areas t ON t.code = v.parent_code WHERE r.kind = ",
        )
        .bind(REGISTERED);
    filter(&mut sql);
    sql.push(" ORDER BY r.village_code, r.id");
    let rows = db.query_all_raw(sql.build()).await?;
    let mut loaded = Vec::with_capacity(rows.len());
    for row in &rows {
        let about = About::from_query_result(row, "")?;
        loaded.push(Loaded {
            record: chain::Stored::from_row(row)?,
            resident_name: about.resident_name,
            id_masked: about.id_masked,
            id_cipher: about.id_cipher,
            sex: about.sex,
            birth_date: about.birth_date,
            village_name: about.village_name,
            township_name: about.township_name,
            events: Vec::new(),
            superseded_by: None,
        });
    }
    // What followed them, in chunks that keep the statement small.
    for chunk in loaded.chunks_mut(500) {
        let ids: Vec<i32> = chunk.iter().map(|l| l.record.id).collect();
        let mut sql = Sql::new(backend);
        sql.push("SELECT ")
            .push(chain::COLUMNS)
            .push(" FROM refusal_records WHERE registration_id IN ")
            .bind_list(ids.clone())
            .push(" OR supersedes IN ")
            .bind_list(ids)
            .push(" ORDER BY id");
        for row in db.query_all_raw(sql.build()).await? {
            let record = chain::Stored::from_row(&row)?;
            for l in chunk.iter_mut() {
                if record.content.supersedes == Some(l.record.id) {
                    l.superseded_by = Some(record.id);
                }
                if record.content.registration_id == Some(l.record.id) {
                    l.events.push(record.clone());
                }
            }
        }
    }
    Ok(loaded)
}

/// What a registration's row of the register carries about its resident and places.
#[derive(FromQueryResult)]
struct About {
    resident_name: String,
    id_masked: String,
    id_cipher: Vec<u8>,
    sex: String,
    birth_date: NaiveDate,
    village_name: Option<String>,
    township_name: Option<String>,
}

/// A registration record with what the register shows about it.
struct Loaded {
    record: chain::Stored,
    resident_name: String,
    id_masked: String,
    id_cipher: Vec<u8>,
    sex: String,
    birth_date: NaiveDate,
    village_name: Option<String>,
    township_name: Option<String>,
    events: Vec<chain::Stored>,
    superseded_by: Option<i32>,
}

impl Loaded {
    fn status(&self) -> Status {
        let has = |kind: &str| self.events.iter().any(|e| e.content.kind == kind);
        if has(REVOKED) {
            Status::Revoked
        } else if self.superseded_by.is_some() {
            Status::Superseded
        } else if has(RETURNED) {
            Status::Returned
        } else if has(CONFIRMED) {
            Status::Confirmed
        } else {
            Status::Pending
        }
    }

    fn view(self, privacy: Option<&Privacy>) -> AppResult<Registration> {
        let status = self.status();
        let review = self
            .events
            .iter()
            .find(|e| e.content.kind == CONFIRMED || e.content.kind == RETURNED);
        let revoked_at = self
            .events
            .iter()
            .find(|e| e.content.kind == REVOKED)
            .map(|e| e.content.recorded_at);
        let c = &self.record.content;
        let reason = c
            .reason_code
            .as_deref()
            .and_then(Reason::parse)
            .unwrap_or(Reason::Other);
        let relation = c
            .signer_relation
            .as_deref()
            .and_then(SignerRelation::parse)
            .unwrap_or(SignerRelation::Own);
        let id_number = match privacy {
            Some(privacy) => privacy.decrypt(Field::ResidentId, &self.id_cipher)?,
            None => self.id_masked.clone(),
        };
        Ok(Registration {
            id: self.record.id,
            campaign_id: c.campaign_id,
            resident_id: c.resident_id,
            resident_name: self.resident_name.clone(),
            id_number,
            sex: self.sex.clone(),
            birth_date: self.birth_date,
            village_code: c.village_code.clone(),
            village_name: self.village_name.clone(),
            township_name: self.township_name.clone(),
            reason,
            reason_label: reason.label().to_owned(),
            reason_text: c.reason_text.clone(),
            signer_name: c.signer_name.clone().unwrap_or_default(),
            signer_relation: relation,
            signer_relation_label: relation.label().to_owned(),
            signature_sha256: c.signature_sha256.clone().unwrap_or_default(),
            witness_user_id: c.witness_user_id,
            witness_name: c.witness_name.clone().unwrap_or_default(),
            attempt_ids: c
                .attempt_ids
                .as_deref()
                .and_then(|ids| serde_json::from_str(ids).ok())
                .unwrap_or_default(),
            location: c
                .location
                .as_deref()
                .and_then(|l| serde_json::from_str(l).ok()),
            registered_by: c.recorded_by,
            registered_by_name: c.recorded_by_name.clone(),
            registered_at: c.recorded_at,
            supersedes: c.supersedes,
            superseded_by: self.superseded_by,
            status,
            status_label: status.label().to_owned(),
            reviewed_at: review.map(|e| e.content.recorded_at),
            reviewed_by_name: review.map(|e| e.content.recorded_by_name.clone()),
            review_note: review.and_then(|e| e.content.note.clone()),
            revoked_at,
            hash: self.record.hash.clone(),
            events: self
                .events
                .iter()
                .map(|e| Event {
                    id: e.id,
                    kind: e.content.kind.clone(),
                    note: e.content.note.clone(),
                    exam_record_id: e.content.exam_record_id,
                    recorded_by_name: e.content.recorded_by_name.clone(),
                    recorded_at: e.content.recorded_at,
                    hash: e.hash.clone(),
                })
                .collect(),
        })
    }
}

fn scope_filter(sql: &mut Sql, scope: &Scope) {
    if let Scope::Within(area) = scope {
        let (low, high) = area.code_range();
        sql.push(" AND r.village_code BETWEEN ")
            .bind(low)
            .push(" AND ")
            .bind(high);
    }
}

/// A resident's registrations in a campaign, newest first (no scope check: callers have one).
async fn registrations_of(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<Vec<Registration>> {
    let mut list = load(db, |sql| {
        sql.push(" AND r.campaign_id = ")
            .bind(campaign_id)
            .push(" AND r.resident_id = ")
            .bind(resident_id);
    })
    .await?
    .into_iter()
    .map(|l| l.view(None))
    .collect::<AppResult<Vec<_>>>()?;
    list.sort_by_key(|r| std::cmp::Reverse(r.id));
    Ok(list)
}

/// One registration in the caller's scope, with its history.
pub async fn get(db: &impl ConnectionTrait, actor: &Actor, id: i32) -> AppResult<Registration> {
    load(db, |sql| {
        sql.push(" AND r.id = ").bind(id);
        scope_filter(sql, &actor.scope);
    })
    .await?
    .pop()
    .ok_or_else(|| AppError::NotFound(format!("拒检登记 {id} 不存在")))?
    .view(None)
}

/// A resident's registrations in a campaign (the resident must be in the caller's scope).
pub async fn of_resident(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<Vec<Registration>> {
    campaign::get(db, campaign_id).await?;
    crate::registry::find(db, &actor.scope, resident_id).await?;
    registrations_of(db, campaign_id, resident_id).await
}

/// The refusal register of a campaign for `area` (default the caller's whole scope),
/// optionally of one status. With `reveal`, a role allowed to gets full ID numbers and the
/// view is audited.
pub async fn register_of(
    db: &impl ConnectionTrait,
    privacy: &Privacy,
    actor: &Actor,
    campaign_id: i32,
    area: Option<AreaCode>,
    status: Option<Status>,
    reveal: bool,
) -> AppResult<Register> {
    if reveal && !crate::registry::may_reveal(actor.role) {
        return Err(AppError::Forbidden(
            "您的角色无权查看完整的身份证号".to_owned(),
        ));
    }
    campaign::get(db, campaign_id).await?;
    if let Some(area) = &area
        && !actor.scope.contains(area)
    {
        return Err(AppError::out_of_scope());
    }
    let loaded = load(db, |sql| {
        sql.push(" AND r.campaign_id = ").bind(campaign_id);
        scope_filter(sql, &actor.scope);
        if let Some(area) = &area {
            scope_filter(sql, &Scope::Within(area.clone()));
        }
    })
    .await?;
    let mut by_status = BTreeMap::new();
    let mut items = Vec::new();
    for l in loaded {
        let current = l.status();
        *by_status.entry(current.code().to_owned()).or_insert(0) += 1;
        if status.is_none_or(|s| s == current) {
            items.push(l.view(reveal.then_some(privacy))?);
        }
    }
    if reveal {
        // One statement, its own transaction.
        audit::record(
            db,
            actor,
            AuditEvent {
                action: "refusal.export_pii",
                entity: "refusal_register",
                entity_id: Some(campaign_id.to_string()),
                area_code: area.clone().or_else(|| actor.scope.area().cloned()),
                summary: json!({"campaign_id": campaign_id, "registrations": items.len()}),
            },
        )
        .await?;
    }
    Ok(Register {
        campaign_id,
        area_code: area.map(String::from),
        status,
        revealed: reveal,
        count: items.len(),
        by_status,
        items,
    })
}

/// The signature image of a registration, for the office, township officers and auditors in
/// whose scope it lies and for the cadre who registered it; every view is audited.
pub async fn signature_image(
    db: &impl ConnectionTrait,
    store: &dyn SignatureStore,
    actor: &Actor,
    id: i32,
) -> AppResult<Vec<u8>> {
    let registration = get(db, actor, id).await?;
    let allowed = match actor.role {
        Role::Office | Role::Township | Role::Auditor => true,
        Role::Cadre => actor.user_id.is_some() && registration.registered_by == actor.user_id,
        Role::Institution => false,
    };
    if !allowed {
        return Err(AppError::Forbidden(
            "只有县、乡镇工作人员、审计人员和登记该拒检的干部可以查看签名".to_owned(),
        ));
    }
    let bytes = store
        .get(&registration.signature_sha256)
        .await?
        .ok_or_else(|| anyhow::anyhow!("signature of registration {id} is missing"))?;
    // One statement, its own transaction.
    audit::record(
        db,
        actor,
        AuditEvent {
            action: "refusal.signature_view",
            entity: "refusal_signature",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&registration.village_code).ok(),
            summary: json!({
                "registration_id": id,
                "resident_id": registration.resident_id,
                "signature_sha256": registration.signature_sha256,
            }),
        },
    )
    .await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_what_the_api_reads_and_writes() {
        fn check<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
            all: &[T],
            code: impl Fn(&T) -> &'static str,
        ) {
            for value in all {
                assert_eq!(serde_json::to_value(value).unwrap(), json!(code(value)));
                let back: T = serde_json::from_value(json!(code(value))).unwrap();
                assert_eq!(&back, value);
            }
        }
        check(Reason::ALL, |r| r.code());
        check(SignerRelation::ALL, |r| r.code());
        check(Status::ALL, |s| s.code());
        assert_eq!(SignerRelation::parse("self"), Some(SignerRelation::Own));
    }
}
