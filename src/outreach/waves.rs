//! Waves: an office-defined call to a group of residents — typically migrant residents, to
//! come home for the exam during a holiday window (春节, 古尔邦节). A wave is an audience
//! filter, a template and a window; creating it plans one message per resident in the same
//! transaction, and the `plan_waves` job tops it up with residents who joined the audience
//! later. Planning is idempotent (one key per resident, wave and day). The transactions are
//! opened by `flows::messaging`.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::MessageKind;
use super::outbox::{self, MessageState, MessageView};
use super::tasks::scope_sql;
use crate::area::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::{Actor, Scope};
use crate::campaign::{self, Campaign, Stage};
use crate::db::Sql;
use crate::error::{AppError, AppResult};
use crate::registry::MigrantType;
use crate::time::at_local;

/// Who a wave goes to. Every part narrows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// A township or village (default: the whole county).
    pub area: Option<String>,
    /// Default: every migrant type except `local`.
    #[serde(default)]
    pub migrant_types: Vec<MigrantType>,
    /// Default: residents not yet appointed (`target`, `notified`, `reached`).
    #[serde(default)]
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWave {
    pub name: String,
    #[serde(default)]
    pub audience: Audience,
    /// The holiday window residents are asked to come in.
    pub window_from: NaiveDate,
    pub window_to: NaiveDate,
    /// When the messages go (default: now); quiet hours still hold.
    pub send_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WaveView {
    pub id: i32,
    pub campaign_id: i32,
    pub name: String,
    pub kind: String,
    pub audience: Audience,
    pub window_from: NaiveDate,
    pub window_to: NaiveDate,
    pub send_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Where the wave is, from its messages (all of them, whoever asks): `planned` (none
    /// has gone yet), `sending` (some have gone or finished, some wait), `done` (none waits:
    /// each was sent, delivered, failed, expired, cancelled or suppressed) — or `cancelled`
    /// by the office. Residents who join the audience later get their message and take a
    /// `done` wave back to `sending` until it has gone.
    pub status: String,
    /// Messages planned for residents in the caller's scope (like `states`).
    pub planned: i32,
    /// Messages per state, of residents in the caller's scope.
    pub states: std::collections::BTreeMap<String, i64>,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

const MAX_WINDOW_DAYS: i64 = 92;

fn check(
    actor: &Actor,
    campaign: &Campaign,
    new: &NewWave,
    now: DateTime<Utc>,
) -> AppResult<Audience> {
    if new.window_to < new.window_from {
        return Err(AppError::validation(
            "invalid_window",
            "回乡体检时段的结束日期早于开始日期",
        ));
    }
    if (new.window_to - new.window_from).num_days() >= MAX_WINDOW_DAYS {
        return Err(AppError::validation(
            "invalid_window",
            format!("回乡体检时段最长 {MAX_WINDOW_DAYS} 天"),
        ));
    }
    if new.window_to < campaign.today() {
        return Err(AppError::validation(
            "invalid_window",
            "回乡体检时段已经过去",
        ));
    }
    if new
        .send_at
        .is_some_and(|at| at < now - Duration::minutes(5))
    {
        return Err(AppError::validation("invalid_send_at", "发送时间已经过去"));
    }
    let mut audience = new.audience.clone();
    // The audience lies inside the caller's scope: by default all of it.
    match &new.audience.area {
        Some(area) => {
            let code = AreaCode::parse(area)
                .map_err(|e| AppError::validation("invalid_area", format!("地区代码无效：{e}")))?;
            if !actor.scope.contains(&code) {
                return Err(AppError::Forbidden("该地区不在您的管辖范围内".to_owned()));
            }
        }
        None => audience.area = actor.scope.area().map(|a| a.as_str().to_owned()),
    }
    if audience.migrant_types.is_empty() {
        audience.migrant_types = MigrantType::ALL
            .iter()
            .copied()
            .filter(|t| t.code() != "local")
            .collect();
    }
    if audience.stages.is_empty() {
        audience.stages = vec![Stage::Target, Stage::Notified, Stage::Reached];
    }
    if audience
        .stages
        .iter()
        .any(|s| matches!(s, Stage::Examined | Stage::Refused | Stage::Exempt))
    {
        return Err(AppError::validation(
            "invalid_stage",
            "不能向已体检、已拒检或不计入的居民发送回乡体检通知",
        ));
    }
    Ok(audience)
}

/// A wave just written.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    pub id: i32,
    /// Its messages planned.
    pub planned: u64,
}

/// Creates a wave and plans its messages (office only), in the caller's transaction.
pub async fn create(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    new: NewWave,
    now: DateTime<Utc>,
) -> AppResult<Created> {
    let name = crate::validate::check_name(&new.name, "名称", 100)?;
    let campaign = campaign::get_open_locked(db, campaign_id).await?;
    let audience = check(actor, &campaign, &new, now)?;
    let send_at = new.send_at.unwrap_or(now).max(now);
    let expires_at = at_local(
        campaign.timezone,
        new.window_to.succ_opt().unwrap_or(new.window_to),
        NaiveTime::MIN,
    );
    let audience_json = serde_json::to_string(&audience).map_err(anyhow::Error::from)?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO waves (campaign_id, name, kind, audience, window_start, window_end, \
         send_at, expires_at, status, planned, created_by, created_at) VALUES (",
    )
    .bind(campaign_id)
    .push(", ")
    .bind(name.clone())
    .push(", ")
    .bind(MessageKind::MigrantWave.code())
    .push(", ")
    .bind(audience_json)
    .push(", ")
    .bind(new.window_from)
    .push(", ")
    .bind(new.window_to)
    .push(", ")
    .bind(send_at)
    .push(", ")
    .bind(expires_at)
    .push(", 'planned', 0, ")
    .bind(actor.user_id)
    .push(", ")
    .bind(now)
    .push(") RETURNING id");
    let id = Id::find_by_statement(sql.build())
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the wave was not written"))?
        .id;
    let wave = Wave {
        id,
        campaign_id,
        audience,
        send_at,
        expires_at,
    };
    let planned = plan_rows(db, &campaign, &wave, now, Planning::New).await?;
    audit::record(
        db,
        actor,
        AuditEvent {
            action: "wave.create",
            entity: "wave",
            entity_id: Some(id.to_string()),
            area_code: wave
                .audience
                .area
                .as_deref()
                .and_then(|a| AreaCode::parse(a).ok()),
            summary: json!({
                "campaign_id": campaign_id,
                "name": name,
                "window": [new.window_from, new.window_to],
                "planned": planned,
            }),
        },
    )
    .await?;
    Ok(Created { id, planned })
}

/// What planning needs of a wave.
pub struct Wave {
    pub id: i32,
    pub campaign_id: i32,
    pub audience: Audience,
    pub send_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Plans the wave's message for every resident of the audience who has none: one
/// `INSERT … SELECT` over the progress rows. Returns how many were new.
pub async fn plan(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    wave: &Wave,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    plan_rows(db, campaign, wave, now, Planning::TopUp).await
}

/// Whether the wave may already have messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Planning {
    /// Written in this transaction: its keys, which carry its id, cannot exist yet, so the
    /// rows go in as a plain insert (PostgreSQL then skips the speculative insertion of each
    /// row); a key that existed anyway would fail the wave, not pass unnoticed.
    New,
    /// Planned before: keys that exist are left as they are.
    TopUp,
}

async fn plan_rows(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    wave: &Wave,
    now: DateTime<Utc>,
    planning: Planning,
) -> AppResult<u64> {
    if wave.expires_at <= now {
        return Ok(0);
    }
    let due = wave.send_at.max(now);
    let state = if due <= now {
        MessageState::Queued
    } else {
        MessageState::Scheduled
    };
    // The day of the wave's own send time: topping up later never makes a second key.
    let day = wave.send_at.with_timezone(&campaign.timezone).date_naive();
    let kind = MessageKind::MigrantWave.code();
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO messages (campaign_id, resident_id, kind, appointment_id, wave_id, \
         idempotency_key, state, due_at, expires_at, next_attempt_at, attempts, step, route, \
         created_at) SELECT e.campaign_id, e.resident_id, ",
    )
    .bind(kind)
    .push(", NULL, ")
    .bind(wave.id)
    .push(", ")
    .bind(format!("{kind}:r"))
    .push(" || CAST(e.resident_id AS TEXT) || ")
    .bind(format!(":w{}:{day}", wave.id))
    .push(", ")
    .bind(state.code())
    .push(", ")
    .bind(due)
    .push(", ")
    .bind(wave.expires_at)
    .push(", ")
    .bind(due)
    .push(", 0, 0, NULL, ")
    .bind(now)
    .push(" FROM enrolments e WHERE e.campaign_id = ")
    .bind(campaign.id())
    .push(" AND e.stage IN ")
    .bind_list(wave.audience.stages.iter().map(|s| s.code()))
    .push(" AND e.migrant_type IN ")
    .bind_list(wave.audience.migrant_types.iter().map(|t| t.code()));
    if let Some(area) = &wave.audience.area {
        let code = AreaCode::parse(area).map_err(|e| anyhow::anyhow!("stored wave area: {e}"))?;
        scope_sql(&mut sql, "e.village_code", &Scope::Within(code));
    }
    if planning == Planning::TopUp {
        sql.push(" ON CONFLICT (idempotency_key) DO NOTHING");
    }
    let planned = db.execute_raw(sql.build()).await?.rows_affected();
    if planned > 0 {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("UPDATE waves SET planned = planned + ")
            .bind(planned as i64)
            .push(" WHERE id = ")
            .bind(wave.id);
        db.execute_raw(sql.build()).await?;
    }
    Ok(planned)
}

/// The planned waves of `campaign` whose window is still ahead at `now`: those the
/// `plan_waves` job tops up.
pub async fn open_waves(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    now: DateTime<Utc>,
) -> AppResult<Vec<Wave>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT id, audience, send_at, expires_at FROM waves WHERE campaign_id = ")
        .bind(campaign.id())
        .push(" AND status = 'planned' AND expires_at > ")
        .bind(now);
    PlanRow::find_by_statement(sql.build())
        .all(db)
        .await?
        .into_iter()
        .map(|row| {
            Ok(Wave {
                id: row.id,
                campaign_id: campaign.id(),
                audience: serde_json::from_str(&row.audience).map_err(anyhow::Error::from)?,
                send_at: row.send_at,
                expires_at: row.expires_at,
            })
        })
        .collect()
}

/// A row's id, as `RETURNING id` gives it.
#[derive(FromQueryResult)]
struct Id {
    id: i32,
}

/// What topping up needs of a stored wave.
#[derive(FromQueryResult)]
struct PlanRow {
    id: i32,
    audience: String,
    send_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A `waves` row: the [`WAVE_COLUMNS`].
#[derive(FromQueryResult)]
struct WaveRow {
    id: i32,
    campaign_id: i32,
    name: String,
    kind: String,
    audience: String,
    window_start: NaiveDate,
    window_end: NaiveDate,
    send_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    status: String,
    planned: i32,
    created_at: DateTime<Utc>,
    cancelled_at: Option<DateTime<Utc>>,
}

impl WaveRow {
    fn view(self) -> AppResult<WaveView> {
        Ok(WaveView {
            id: self.id,
            campaign_id: self.campaign_id,
            name: self.name,
            kind: self.kind,
            audience: serde_json::from_str(&self.audience).map_err(anyhow::Error::from)?,
            window_from: self.window_start,
            window_to: self.window_end,
            send_at: self.send_at,
            expires_at: self.expires_at,
            status: self.status,
            planned: self.planned,
            states: Default::default(),
            created_at: self.created_at,
            cancelled_at: self.cancelled_at,
        })
    }
}

const WAVE_COLUMNS: &str = "id, campaign_id, name, kind, audience, window_start, window_end, \
     send_at, expires_at, status, planned, created_at, cancelled_at";

/// Whether a wave concerns the caller: its audience overlaps the caller's scope.
fn visible(actor: &Actor, wave: &WaveView) -> bool {
    let Some(mine) = actor.scope.area() else {
        return true;
    };
    match wave.audience.area.as_deref().map(AreaCode::parse) {
        None => true,
        Some(Ok(area)) => area.contains(mine) || mine.contains(&area),
        Some(Err(_)) => false,
    }
}

/// States of a message that has not gone yet: a wave with one of these is not done.
const WAITING: [MessageState; 3] = [
    MessageState::Scheduled,
    MessageState::Queued,
    MessageState::Sending,
];

/// The shown status of a wave whose stored status is `stored`, from its messages per state
/// (the whole wave's).
fn status_of(stored: &str, states: &std::collections::BTreeMap<String, i64>) -> &'static str {
    if stored == "cancelled" {
        return "cancelled";
    }
    let total: i64 = states.values().sum();
    let waiting: i64 = WAITING.iter().filter_map(|s| states.get(s.code())).sum();
    match (total, waiting) {
        (0, _) => "planned",
        (t, w) if w == t => "planned",
        (_, 0) => "done",
        _ => "sending",
    }
}

/// How many messages of a wave are in a state.
#[derive(FromQueryResult)]
struct StateCount {
    wave_id: i32,
    state: String,
    n: i64,
}

/// Fills in the figures of `waves`: messages per state of residents in the caller's scope
/// (and `planned` from them), and the status from all of each wave's messages.
async fn fill(db: &impl ConnectionTrait, actor: &Actor, waves: &mut [WaveView]) -> AppResult<()> {
    use std::collections::{BTreeMap, HashMap};
    if waves.is_empty() {
        return Ok(());
    }
    let ids: Vec<i32> = waves.iter().map(|w| w.id).collect();
    let counts = async |scope: Option<&Scope>| -> AppResult<HashMap<i32, BTreeMap<String, i64>>> {
        let mut sql = Sql::new(db.get_database_backend());
        match scope {
            Some(scope) => {
                sql.push(
                    "SELECT m.wave_id, m.state, COUNT(*) AS n FROM messages m \
                     JOIN residents r ON r.id = m.resident_id WHERE m.wave_id IN ",
                )
                .bind_list(ids.iter().copied());
                scope_sql(&mut sql, "r.village_code", scope);
            }
            None => {
                sql.push(
                    "SELECT m.wave_id, m.state, COUNT(*) AS n FROM messages m WHERE m.wave_id IN ",
                )
                .bind_list(ids.iter().copied());
            }
        }
        sql.push(" GROUP BY m.wave_id, m.state");
        let mut out: HashMap<i32, BTreeMap<String, i64>> = HashMap::new();
        for row in StateCount::find_by_statement(sql.build()).all(db).await? {
            out.entry(row.wave_id).or_default().insert(row.state, row.n);
        }
        Ok(out)
    };
    let mut scoped = counts(Some(&actor.scope)).await?;
    let whole = match actor.scope {
        Scope::Within(_) => counts(None).await?,
        _ => scoped.clone(),
    };
    for wave in waves {
        let states = scoped.remove(&wave.id).unwrap_or_default();
        wave.planned = i32::try_from(states.values().sum::<i64>()).unwrap_or(i32::MAX);
        wave.states = states;
        let all = whole.get(&wave.id).cloned().unwrap_or_default();
        wave.status = status_of(&wave.status, &all).to_owned();
    }
    Ok(())
}

/// One wave with its messages counted by state (those of residents in the caller's scope).
pub async fn get(db: &impl ConnectionTrait, actor: &Actor, id: i32) -> AppResult<WaveView> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT ")
        .push(WAVE_COLUMNS)
        .push(" FROM waves WHERE id = ")
        .bind(id);
    let wave = WaveRow::find_by_statement(sql.build())
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("通知批次 {id} 不存在")))?
        .view()?;
    if !visible(actor, &wave) {
        return Err(AppError::NotFound(format!("通知批次 {id} 不存在")));
    }
    let mut waves = [wave];
    fill(db, actor, &mut waves).await?;
    let [wave] = waves;
    Ok(wave)
}

/// The waves of a campaign that concern the caller, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
) -> AppResult<Vec<WaveView>> {
    campaign::get(db, campaign_id).await?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT ")
        .push(WAVE_COLUMNS)
        .push(" FROM waves WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" ORDER BY id DESC");
    let mut waves = Vec::new();
    for row in WaveRow::find_by_statement(sql.build()).all(db).await? {
        let wave = row.view()?;
        if visible(actor, &wave) {
            waves.push(wave);
        }
    }
    fill(db, actor, &mut waves).await?;
    Ok(waves)
}

/// Cancels a wave: its messages not yet sent are cancelled (office only, audited), in the
/// caller's transaction.
pub async fn cancel(
    db: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    now: DateTime<Utc>,
) -> AppResult<()> {
    // Only a wave whose whole audience is the caller's.
    let wave = get(db, actor, id).await?;
    let covered = match wave.audience.area.as_deref().map(AreaCode::parse) {
        Some(Ok(area)) => actor.scope.contains(&area),
        Some(Err(_)) => false,
        None => actor.scope.area().is_none(),
    };
    if !covered {
        return Err(AppError::NotFound(format!("通知批次 {id} 不存在")));
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE waves SET status = 'cancelled', cancelled_at = ")
        .bind(now)
        .push(" WHERE id = ")
        .bind(id)
        .push(" AND status = 'planned' RETURNING id");
    if Id::find_by_statement(sql.build()).one(db).await?.is_none() {
        return Err(AppError::refused("wave_cancelled", "该通知批次已取消"));
    }
    let cancelled = outbox::cancel_where(db, outbox::CancelBy::Wave, id, now).await?;
    audit::record(
        db,
        actor,
        AuditEvent {
            action: "wave.cancel",
            entity: "wave",
            entity_id: Some(id.to_string()),
            area_code: wave
                .audience
                .area
                .as_deref()
                .and_then(|a| AreaCode::parse(a).ok()),
            summary: json!({"messages_cancelled": cancelled}),
        },
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct MessageFilter {
    pub state: Option<String>,
    pub limit: Option<u64>,
    /// Messages with an id above this one (the `next` of the previous page).
    pub after: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageView>,
    pub next: Option<i32>,
}

/// Which messages to list.
pub enum MessagesOf {
    Resident(i32),
    Appointment(i32),
    Wave(i32),
}

/// Messages of a resident, an appointment or a wave — only those of residents in scope.
pub async fn messages(
    db: &impl ConnectionTrait,
    scope: &Scope,
    of: MessagesOf,
    filter: &MessageFilter,
) -> AppResult<MessagePage> {
    let limit = crate::paging::size(filter.limit)?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT ")
        .push(outbox::VIEW_COLUMNS)
        .push(" FROM messages m JOIN residents r ON r.id = m.resident_id WHERE ");
    match of {
        MessagesOf::Resident(id) => sql.push("m.resident_id = ").bind(id),
        MessagesOf::Appointment(id) => sql.push("m.appointment_id = ").bind(id),
        MessagesOf::Wave(id) => sql.push("m.wave_id = ").bind(id),
    };
    scope_sql(&mut sql, "r.village_code", scope);
    if let Some(state) = &filter.state {
        let state = MessageState::parse(state).ok_or_else(|| {
            AppError::validation("invalid_state", format!("未知的消息状态 {state:?}"))
        })?;
        sql.push(" AND m.state = ").bind(state.code());
    }
    if let Some(after) = filter.after {
        sql.push(" AND m.id > ").bind(after);
    }
    sql.push(" ORDER BY m.id LIMIT ").bind((limit + 1) as i64);
    let mut items = db
        .query_all_raw(sql.build())
        .await?
        .iter()
        .map(MessageView::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() as u64 > limit {
        items.truncate(limit as usize);
        items.last().map(|m| m.id)
    } else {
        None
    };
    Ok(MessagePage { items, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waves_status_follows_its_messages() {
        let states = |pairs: &[(&str, i64)]| {
            pairs
                .iter()
                .map(|(s, n)| ((*s).to_owned(), *n))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(status_of("planned", &states(&[])), "planned");
        assert_eq!(status_of("planned", &states(&[("queued", 3)])), "planned");
        assert_eq!(
            status_of("planned", &states(&[("scheduled", 1), ("queued", 2)])),
            "planned"
        );
        assert_eq!(
            status_of("planned", &states(&[("sending", 1), ("delivered", 2)])),
            "sending"
        );
        assert_eq!(
            status_of("planned", &states(&[("queued", 1), ("failed", 1)])),
            "sending"
        );
        assert_eq!(
            status_of(
                "planned",
                &states(&[
                    ("sent", 1),
                    ("delivered", 2),
                    ("expired", 1),
                    ("suppressed", 1)
                ])
            ),
            "done"
        );
        assert_eq!(
            status_of("cancelled", &states(&[("queued", 1)])),
            "cancelled"
        );
    }
}
