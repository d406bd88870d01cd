//! Dispatch workers: lease due messages in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! the one writer on SQLite), pick each one's channel by the fallback plan (WeChat → own
//! phone → e-mail → a relative's phone → a task for the cadre), send with bounded
//! concurrency under per-provider rate limits, and commit each result on its own. Quiet
//! hours, the per-resident daily cap and opt-outs hold for every send. A worker that dies
//! mid-send leaves leased rows behind; when the lease runs out they are reconciled: sent
//! again where the provider recognises the idempotency key, otherwise looked up with the
//! provider, otherwise failed as "outcome unknown" for a person to re-send.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use entities::residents;
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::outbox::{self, MessageState, OutboxSettings, at_local, quiet_until};
use super::{
    Channel, Locale, LogChannel, MessageContext, MessageKind, Outgoing, Recipient, SendError, Sent,
    Templates,
};
use crate::campaign::{Campaign, Stage};
use crate::config::MessagingSettings;
use crate::db::{Sql, begin_write};
use crate::error::AppResult;
use crate::privacy::{Field, Privacy};
use crate::registry::Language;

/// The fallback plan, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    WeChat,
    Phone,
    Email,
    /// A relative's phone; the text asks them to pass it on.
    Relative,
}

impl Route {
    pub const PLAN: [Route; 4] = [Route::WeChat, Route::Phone, Route::Email, Route::Relative];

    pub fn code(self) -> &'static str {
        match self {
            Route::WeChat => "wechat",
            Route::Phone => "phone",
            Route::Email => "email",
            Route::Relative => "relative",
        }
    }

    pub fn parse(raw: &str) -> Option<Route> {
        Self::PLAN.into_iter().find(|r| r.code() == raw)
    }

    fn index(self) -> usize {
        Self::PLAN.iter().position(|r| *r == self).unwrap_or(0)
    }

    fn is_sms(self) -> bool {
        matches!(self, Route::Phone | Route::Relative)
    }
}

/// The channel of each route, with the rate limit of each provider.
pub struct Channels {
    routes: [Option<Arc<dyn Channel>>; 4],
    limiters: HashMap<String, Arc<DefaultDirectRateLimiter>>,
}

impl Channels {
    /// `sms` carries both phone routes.
    pub fn new(
        wechat: Option<Arc<dyn Channel>>,
        sms: Option<Arc<dyn Channel>>,
        email: Option<Arc<dyn Channel>>,
        rates: &BTreeMap<String, u32>,
    ) -> Self {
        let limiters = rates
            .iter()
            .filter_map(|(name, rate)| {
                let rate = NonZeroU32::new(*rate)?;
                Some((
                    name.clone(),
                    Arc::new(RateLimiter::direct(Quota::per_second(rate))),
                ))
            })
            .collect();
        Self {
            routes: [wechat, sms.clone(), email, sms],
            limiters,
        }
    }

    /// The channels the configuration names. With the `log` SMS provider (the embedded
    /// default) every route goes to the log.
    pub fn from_settings(
        settings: &MessagingSettings,
        db: &DatabaseConnection,
        privacy: &Arc<Privacy>,
    ) -> anyhow::Result<Self> {
        let rates = &settings.outbox.rate_per_second;
        let email: Option<Arc<dyn Channel>> = match &settings.smtp {
            Some(smtp) => Some(Arc::new(super::EmailChannel::new(smtp)?)),
            None => None,
        };
        let wechat: Option<Arc<dyn Channel>> = match &settings.wechat {
            Some(wechat) => Some(Arc::new(super::cloud::WeChatChannel::new(
                wechat,
                db.clone(),
                privacy.clone(),
            )?)),
            None => None,
        };
        let sms: Arc<dyn Channel> = match settings.sms_provider.as_str() {
            "log" => {
                let log: Arc<dyn Channel> = Arc::new(LogChannel {
                    simulate_receipts: settings.outbox.simulate_receipts,
                });
                return Ok(Self::new(
                    Some(wechat.unwrap_or_else(|| log.clone())),
                    Some(log.clone()),
                    Some(email.unwrap_or(log)),
                    rates,
                ));
            }
            "jasmin" => Arc::new(super::JasminChannel::new(
                settings.jasmin.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("messaging.sms_provider = \"jasmin\" needs [messaging.jasmin]")
                })?,
            )?),
            "aliyun" => Arc::new(super::cloud::AliyunSmsChannel::new(
                settings.aliyun.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("messaging.sms_provider = \"aliyun\" needs [messaging.aliyun]")
                })?,
            )?),
            "tencent" => Arc::new(super::cloud::TencentSmsChannel::new(
                settings.tencent.as_ref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "messaging.sms_provider = \"tencent\" needs [messaging.tencent]"
                    )
                })?,
            )?),
            other => anyhow::bail!(
                "messaging.sms_provider {other:?}: expected log, aliyun, tencent or jasmin"
            ),
        };
        Ok(Self::new(wechat, Some(sms), email, rates))
    }

    fn of(&self, route: Route) -> Option<&Arc<dyn Channel>> {
        self.routes[route.index()].as_ref()
    }

    fn named(&self, name: &str) -> Option<&Arc<dyn Channel>> {
        self.routes.iter().flatten().find(|c| c.name() == name)
    }

    async fn wait_turn(&self, provider: &str) {
        if let Some(limiter) = self.limiters.get(provider) {
            limiter.until_ready().await;
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Round {
    pub leased: u64,
    pub sent: u64,
    pub delivered: u64,
    /// Sent again later (transient errors) or moved on to the next channel.
    pub retried: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub cancelled: u64,
    /// Held back by the daily cap.
    pub held: u64,
    pub expired: u64,
    pub reconciled: u64,
}

impl Round {
    fn add(&mut self, other: &Round) {
        self.leased += other.leased;
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.retried += other.retried;
        self.failed += other.failed;
        self.suppressed += other.suppressed;
        self.cancelled += other.cancelled;
        self.held += other.held;
        self.expired += other.expired;
        self.reconciled += other.reconciled;
    }
}

pub struct Dispatcher {
    db: DatabaseConnection,
    privacy: Arc<Privacy>,
    templates: Arc<Templates>,
    channels: Arc<Channels>,
    settings: OutboxSettings,
    worker: String,
}

/// A leased row.
#[derive(Debug, Clone)]
struct Leased {
    id: i32,
    campaign_id: i32,
    resident_id: i32,
    kind: Option<MessageKind>,
    appointment_id: Option<i32>,
    wave_id: Option<i32>,
    key: String,
    attempts: i32,
    step: i32,
    route: Option<String>,
    expires_at: DateTime<Utc>,
    /// The last attempt's error; `…unknown: …` when its outcome is not known.
    last_error: Option<String>,
}

/// What the appointment of a message says.
#[derive(Debug, Clone)]
struct AppointmentInfo {
    /// booked, attended, no_show or cancelled, as it is now.
    status: String,
    day: NaiveDate,
    institution_id: i32,
    institution_name: String,
    institution_address: Option<String>,
}

#[derive(Debug, Clone)]
struct WaveInfo {
    window_start: NaiveDate,
    window_end: NaiveDate,
}

/// Everything a batch needs, read in a few queries.
#[derive(Default)]
struct BatchContext {
    residents: HashMap<i32, residents::Model>,
    stages: HashMap<(i32, i32), String>,
    appointments: HashMap<i32, AppointmentInfo>,
    waves: HashMap<i32, WaveInfo>,
    sent_today: HashMap<i32, i64>,
    /// Days offered, per reschedule-options message.
    options: HashMap<i32, String>,
}

/// One send, decided.
struct Job {
    message: Leased,
    route: Route,
    channel: Arc<dyn Channel>,
    outgoing: Outgoing,
    recipient: String,
    segments: Option<i32>,
}

enum Decision {
    Send(Box<Job>),
    /// Ends without sending: expired, cancelled, suppressed, failed.
    Finish {
        state: MessageState,
        error: Option<String>,
        task: bool,
    },
    /// Back to the queue until `until` (the daily cap).
    Hold {
        until: DateTime<Utc>,
    },
}

/// Kinds that answer something the resident just did: not held by the daily cap.
fn answers_resident(kind: MessageKind) -> bool {
    matches!(
        kind,
        MessageKind::OptOutConfirmation | MessageKind::RescheduleOptions
    )
}

impl Dispatcher {
    pub fn new(
        db: DatabaseConnection,
        privacy: Arc<Privacy>,
        templates: Arc<Templates>,
        channels: Arc<Channels>,
        settings: OutboxSettings,
    ) -> Self {
        Self {
            db,
            privacy,
            templates,
            channels,
            settings,
            worker: format!("w-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Rounds until `shutdown`; an idle worker waits `poll_ms` between rounds. The round in
    /// progress finishes (its sends are recorded) before it returns.
    pub async fn run(&self, shutdown: CancellationToken) {
        let idle = Duration::from_millis(self.settings.poll_ms.max(50));
        loop {
            let full = match self.round().await {
                Ok(round) => round.leased >= u64::from(self.settings.batch),
                Err(e) => {
                    tracing::error!(error = %e, "dispatch round failed");
                    false
                }
            };
            if shutdown.is_cancelled() {
                return;
            }
            if !full {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(idle) => {}
                }
            }
        }
    }

    /// Rounds until nothing is due now; returns the totals.
    pub async fn drain(&self) -> AppResult<Round> {
        let mut total = Round::default();
        loop {
            let round = self.round().await?;
            total.add(&round);
            if round.leased == 0 {
                return Ok(total);
            }
        }
    }

    /// Housekeeping (expire, promote, reconcile), then one batch.
    pub async fn round(&self) -> AppResult<Round> {
        let now = Utc::now();
        let mut round = Round {
            expired: self.expire(now).await?,
            ..Round::default()
        };
        self.promote(now).await?;
        round.reconciled = self.reconcile(now).await?;
        super::inbound::apply_pending(&self.db).await?;
        let campaigns: HashMap<i32, Campaign> = crate::campaign::open_campaigns(&self.db)
            .await?
            .into_iter()
            .map(|c| (c.id(), c))
            .collect();
        let quiet: Vec<i32> = campaigns
            .values()
            .filter(|c| quiet_until(c.timezone, c.quiet_start, c.quiet_end, now).is_some())
            .map(Campaign::id)
            .collect();
        let leased = self.lease(now, &quiet).await?;
        round.leased = leased.len() as u64;
        if leased.is_empty() {
            return Ok(round);
        }
        let context = self.load(&leased, &campaigns, now).await?;
        let mut counted: HashMap<i32, i64> = HashMap::new();
        let mut jobs = Vec::new();
        for message in leased {
            let decision = self.decide(&message, &context, &campaigns, &mut counted, now);
            match decision {
                Decision::Send(job) => jobs.push(*job),
                Decision::Finish { state, error, task } => {
                    self.finish(&message, state, error.as_deref(), task, &context, now)
                        .await?;
                    match state {
                        MessageState::Expired => round.expired += 1,
                        MessageState::Cancelled => round.cancelled += 1,
                        MessageState::Suppressed => round.suppressed += 1,
                        _ => round.failed += 1,
                    }
                }
                Decision::Hold { until } => {
                    self.hold(&message, until).await?;
                    round.held += 1;
                }
            }
        }
        self.claim_routes(&jobs).await?;
        let concurrency = self.settings.concurrency.max(1);
        let results: Vec<Round> = futures_util::stream::iter(jobs)
            .map(|job| async move { self.send_and_record(job).await })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for result in &results {
            round.add(result);
        }
        Ok(round)
    }

    async fn expire(&self, now: DateTime<Utc>) -> AppResult<u64> {
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET state = 'expired', expired_at = ")
            .bind(now)
            .push(" WHERE state IN ")
            .push(outbox::PENDING)
            .push(" AND expires_at <= ")
            .bind(now);
        Ok(self.db.execute_raw(sql.build()).await?.rows_affected())
    }

    async fn promote(&self, now: DateTime<Utc>) -> AppResult<u64> {
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET state = 'queued', queued_at = ")
            .bind(now)
            .push(" WHERE state = 'scheduled' AND next_attempt_at <= ")
            .bind(now);
        Ok(self.db.execute_raw(sql.build()).await?.rows_affected())
    }

    /// Rows whose worker's lease ran out mid-send.
    async fn reconcile(&self, now: DateTime<Utc>) -> AppResult<u64> {
        let mut sql = Sql::new(self.backend());
        sql.push(
            "SELECT id, campaign_id, kind, resident_id, step, channel, idempotency_key, \
             leased_by, sending_at FROM messages WHERE state = 'sending' AND lease_until < ",
        )
        .bind(now)
        .push(" ORDER BY lease_until LIMIT ")
        .bind(i64::from(self.settings.batch));
        let rows = self.db.query_all_raw(sql.build()).await?;
        let mut reconciled = 0;
        for row in rows {
            let id: i32 = row.try_get("", "id")?;
            let channel: Option<String> = row.try_get("", "channel")?;
            let leased_by: Option<String> = row.try_get("", "leased_by")?;
            let channel = channel.as_deref().and_then(|c| self.channels.named(c));
            let outcome = match channel {
                // Never got as far as choosing a channel: nothing went out.
                None => Reconciled::NotSent,
                Some(c) if c.deduplicates() => Reconciled::NotSent,
                Some(c) => self.ask_provider(c, &row).await,
            };
            let mut sql = Sql::new(self.backend());
            match &outcome {
                Reconciled::NotSent => {
                    sql.push("UPDATE messages SET state = 'queued', next_attempt_at = ")
                        .bind(now)
                        .push(", lease_until = NULL, leased_by = NULL");
                }
                Reconciled::Sent(sent) => {
                    sql.push("UPDATE messages SET state = 'sent', sent_at = ")
                        .bind(now)
                        .push(", provider = ")
                        .bind(sent.provider)
                        .push(", provider_message_id = ")
                        .bind(Some(sent.provider_message_id.as_str()).filter(|id| !id.is_empty()))
                        .push(", route = ")
                        .bind(
                            Route::PLAN[row.try_get::<i32>("", "step")?.clamp(0, 3) as usize]
                                .code(),
                        )
                        .push(", lease_until = NULL, leased_by = NULL");
                }
                Reconciled::Unknown => {
                    sql.push("UPDATE messages SET state = 'failed', failed_at = ")
                        .bind(now)
                        .push(
                            ", last_error = 'outcome_unknown: the worker stopped mid-send and \
                             the provider cannot say whether it took the message', \
                             lease_until = NULL, leased_by = NULL",
                        );
                }
            }
            // Only if nobody reconciled it meanwhile.
            sql.push(" WHERE id = ")
                .bind(id)
                .push(" AND state = 'sending' AND leased_by ");
            match leased_by {
                Some(w) => sql.push("= ").bind(w),
                None => sql.push("IS NULL"),
            };
            if self.db.execute_raw(sql.build()).await?.rows_affected() == 1 {
                reconciled += 1;
                if matches!(outcome, Reconciled::Sent(_)) {
                    outbox::progress(
                        &self.db,
                        row.try_get("", "campaign_id")?,
                        row.try_get("", "resident_id")?,
                        false,
                        now,
                    )
                    .await?;
                }
                tracing::warn!(message = id, outcome = ?outcome.label(), "lease ran out mid-send");
            }
        }
        Ok(reconciled)
    }

    /// Whether the provider has the message of a reconciled row.
    async fn ask_provider(
        &self,
        channel: &Arc<dyn Channel>,
        row: &sea_orm::QueryResult,
    ) -> Reconciled {
        let found = async {
            let resident_id: i32 = row.try_get("", "resident_id")?;
            let step: i32 = row.try_get("", "step")?;
            let kind: String = row.try_get("", "kind")?;
            let since: Option<DateTime<Utc>> = row.try_get("", "sending_at")?;
            let route = Route::PLAN[step.clamp(0, 3) as usize];
            let resident = residents::Entity::find_by_id(resident_id)
                .one(&self.db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("resident {resident_id} is gone"))?;
            let Some((recipient, _)) = self.recipient(&resident, route)? else {
                return Ok::<_, crate::error::AppError>(None);
            };
            let kind = MessageKind::parse(&kind)
                .ok_or_else(|| anyhow::anyhow!("unknown message kind {kind}"))?;
            let outgoing = Outgoing {
                idempotency_key: row.try_get("", "idempotency_key")?,
                kind,
                recipient,
                title: kind.title().to_owned(),
                text: String::new(),
                context: MessageContext::default(),
            };
            Ok(Some(
                channel
                    .lookup(&outgoing, since.unwrap_or_else(Utc::now))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ))
        };
        match found.await {
            Ok(Some(Some(sent))) => Reconciled::Sent(sent),
            // No address any more: nothing can have gone to it.
            Ok(None) | Ok(Some(None)) => Reconciled::NotSent,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the provider about a message");
                Reconciled::Unknown
            }
        }
    }

    async fn lease(&self, now: DateTime<Utc>, quiet: &[i32]) -> AppResult<Vec<Leased>> {
        let backend = self.backend();
        let mut sql = Sql::new(backend);
        let lease_until = now + chrono::Duration::seconds(self.settings.lease_secs as i64);
        sql.push("UPDATE messages SET state = 'sending', sending_at = ")
            .bind(now)
            .push(", lease_until = ")
            .bind(lease_until)
            .push(", leased_by = ")
            .bind(self.worker.as_str())
            .push(", attempts = attempts + 1 WHERE id IN (SELECT id FROM messages WHERE state = 'queued' AND next_attempt_at <= ")
            .bind(now);
        if !quiet.is_empty() {
            sql.push(" AND campaign_id NOT IN ")
                .bind_list(quiet.iter().copied());
        }
        // A resident another worker is sending to waits, so two workers never both count
        // the same day's messages against the daily cap.
        sql.push(
            " AND resident_id NOT IN (SELECT resident_id FROM messages WHERE state = 'sending')",
        );
        sql.push(" ORDER BY next_attempt_at LIMIT ")
            .bind(i64::from(self.settings.batch));
        if backend == DbBackend::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(
            ") RETURNING id, campaign_id, resident_id, kind, appointment_id, wave_id, \
             idempotency_key, attempts, step, route, expires_at, last_error",
        );
        let rows = self.db.query_all_raw(sql.build()).await?;
        let mut leased = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get("", "kind")?;
            leased.push(Leased {
                id: row.try_get("", "id")?,
                campaign_id: row.try_get("", "campaign_id")?,
                resident_id: row.try_get("", "resident_id")?,
                kind: MessageKind::parse(&kind),
                appointment_id: row.try_get("", "appointment_id")?,
                wave_id: row.try_get("", "wave_id")?,
                key: row.try_get("", "idempotency_key")?,
                attempts: row.try_get("", "attempts")?,
                step: row.try_get("", "step")?,
                route: row.try_get("", "route")?,
                expires_at: row.try_get("", "expires_at")?,
                last_error: row.try_get("", "last_error")?,
            });
        }
        leased.sort_by_key(|m| m.id);
        Ok(leased)
    }

    async fn load(
        &self,
        leased: &[Leased],
        campaigns: &HashMap<i32, Campaign>,
        now: DateTime<Utc>,
    ) -> AppResult<BatchContext> {
        let mut context = BatchContext::default();
        let mut resident_ids: Vec<i32> = leased.iter().map(|m| m.resident_id).collect();
        resident_ids.sort_unstable();
        resident_ids.dedup();
        for chunk in resident_ids.chunks(500) {
            for resident in residents::Entity::find()
                .filter(residents::Column::Id.is_in(chunk.iter().copied()))
                .all(&self.db)
                .await?
            {
                context.residents.insert(resident.id, resident);
            }
            let mut sql = Sql::new(self.backend());
            sql.push(
                "SELECT campaign_id, resident_id, stage FROM enrolments WHERE resident_id IN ",
            )
            .bind_list(chunk.iter().copied());
            for row in self.db.query_all_raw(sql.build()).await? {
                context.stages.insert(
                    (
                        row.try_get("", "campaign_id")?,
                        row.try_get("", "resident_id")?,
                    ),
                    row.try_get("", "stage")?,
                );
            }
        }
        let mut appointment_ids: Vec<i32> =
            leased.iter().filter_map(|m| m.appointment_id).collect();
        appointment_ids.sort_unstable();
        appointment_ids.dedup();
        for chunk in appointment_ids.chunks(500) {
            let mut sql = Sql::new(self.backend());
            sql.push(
                "SELECT a.id, a.status, a.day, a.institution_id, i.name, i.address \
                 FROM appointments a \
                 JOIN institutions i ON i.id = a.institution_id WHERE a.id IN ",
            )
            .bind_list(chunk.iter().copied());
            for row in self.db.query_all_raw(sql.build()).await? {
                context.appointments.insert(
                    row.try_get("", "id")?,
                    AppointmentInfo {
                        status: row.try_get("", "status")?,
                        day: row.try_get("", "day")?,
                        institution_id: row.try_get("", "institution_id")?,
                        institution_name: row.try_get("", "name")?,
                        institution_address: row.try_get("", "address")?,
                    },
                );
            }
        }
        let mut wave_ids: Vec<i32> = leased.iter().filter_map(|m| m.wave_id).collect();
        wave_ids.sort_unstable();
        wave_ids.dedup();
        if !wave_ids.is_empty() {
            let mut sql = Sql::new(self.backend());
            sql.push("SELECT id, window_start, window_end FROM waves WHERE id IN ")
                .bind_list(wave_ids.iter().copied());
            for row in self.db.query_all_raw(sql.build()).await? {
                context.waves.insert(
                    row.try_get("", "id")?,
                    WaveInfo {
                        window_start: row.try_get("", "window_start")?,
                        window_end: row.try_get("", "window_end")?,
                    },
                );
            }
        }
        // Messages already sent today (local midnight of the first campaign in the batch;
        // a deployment serves one county, so one time zone).
        let tz = leased
            .iter()
            .find_map(|m| campaigns.get(&m.campaign_id))
            .map(|c| c.timezone);
        if let Some(tz) = tz {
            let midnight = at_local(
                tz,
                now.with_timezone(&tz).date_naive(),
                chrono::NaiveTime::MIN,
            );
            for chunk in resident_ids.chunks(500) {
                let mut sql = Sql::new(self.backend());
                sql.push("SELECT resident_id, COUNT(*) AS n FROM messages WHERE resident_id IN ")
                    .bind_list(chunk.iter().copied())
                    .push(" AND sent_at >= ")
                    .bind(midnight)
                    .push(" GROUP BY resident_id");
                for row in self.db.query_all_raw(sql.build()).await? {
                    context
                        .sent_today
                        .insert(row.try_get("", "resident_id")?, row.try_get("", "n")?);
                }
            }
        }
        for message in leased {
            if message.kind == Some(MessageKind::RescheduleOptions) {
                self.load_options(message, campaigns, &mut context).await?;
            }
        }
        Ok(context)
    }

    /// The days with room offered in answer to a reschedule request.
    async fn load_options(
        &self,
        message: &Leased,
        campaigns: &HashMap<i32, Campaign>,
        context: &mut BatchContext,
    ) -> AppResult<()> {
        let (Some(campaign), Some(appointment)) = (
            campaigns.get(&message.campaign_id),
            message
                .appointment_id
                .and_then(|id| context.appointments.get(&id)),
        ) else {
            return Ok(());
        };
        let institution = crate::institution::find(&self.db, appointment.institution_id).await?;
        let from = campaign.today().max(appointment.day);
        let days = crate::appointment::proposals(&self.db, campaign, &institution, from, 1).await?;
        context.options.insert(
            message.id,
            days.iter()
                .map(|d| month_day(d.day))
                .collect::<Vec<_>>()
                .join("、"),
        );
        Ok(())
    }

    fn decide(
        &self,
        message: &Leased,
        context: &BatchContext,
        campaigns: &HashMap<i32, Campaign>,
        counted: &mut HashMap<i32, i64>,
        now: DateTime<Utc>,
    ) -> Decision {
        let finish = |state, error: &str| Decision::Finish {
            state,
            error: Some(error.to_owned()),
            task: false,
        };
        if message.expires_at <= now {
            return finish(MessageState::Expired, "too late to be useful");
        }
        let Some(kind) = message.kind else {
            return finish(MessageState::Failed, "unknown message kind");
        };
        let Some(campaign) = campaigns.get(&message.campaign_id) else {
            return finish(MessageState::Cancelled, "the campaign is not open");
        };
        let Some(resident) = context.residents.get(&message.resident_id) else {
            return finish(MessageState::Cancelled, "the resident is gone");
        };
        let stage = context
            .stages
            .get(&(message.campaign_id, message.resident_id))
            .and_then(|s| Stage::parse(s));
        let done = match stage {
            Some(Stage::Exempt) | None => true,
            Some(Stage::Examined | Stage::Refused) => {
                matches!(kind, MessageKind::MigrantWave | MessageKind::MissedFollowup)
            }
            // Booked again since missing the last one.
            Some(Stage::Appointed) => kind == MessageKind::MissedFollowup,
            _ => false,
        };
        if done {
            return finish(
                MessageState::Cancelled,
                "nothing left to ask of this resident",
            );
        }
        // The appointment a message speaks of must still be as it says (cancelled, moved or
        // attended while this message waited or was being handed over).
        let appointment = message
            .appointment_id
            .and_then(|id| context.appointments.get(&id));
        if let Some(a) = appointment {
            let expected = match kind {
                MessageKind::MissedFollowup => "no_show",
                _ => "booked",
            };
            if a.status != expected {
                return finish(MessageState::Cancelled, "the appointment changed");
            }
        } else if message.appointment_id.is_some() {
            return finish(MessageState::Cancelled, "the appointment is gone");
        }
        if !answers_resident(kind) {
            let sent = context.sent_today.get(&resident.id).copied().unwrap_or(0)
                + counted.get(&resident.id).copied().unwrap_or(0);
            if sent >= i64::from(self.settings.daily_cap) {
                let tz = campaign.timezone;
                let tomorrow = now.with_timezone(&tz).date_naive().succ_opt();
                let until = tomorrow
                    .map(|d| at_local(tz, d, campaign.quiet_end))
                    .unwrap_or(now + chrono::Duration::days(1));
                return Decision::Hold { until };
            }
        }
        // The fallback plan from where this message is.
        let forced = message.route.as_deref().and_then(Route::parse);
        let mut opted_out = false;
        let mut chosen = None;
        for route in Route::PLAN.into_iter().skip(message.step.max(0) as usize) {
            if forced.is_some_and(|f| f != route) {
                continue;
            }
            let Some(channel) = self.channels.of(route) else {
                continue;
            };
            let (recipient, opt_out) = match self.recipient(resident, route) {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(resident = resident.id, error = %e, "cannot read a contact");
                    continue;
                }
            };
            // An opt-out confirmation goes back the way the reply came, opted out or not;
            // nothing else does.
            if opt_out && kind != MessageKind::OptOutConfirmation {
                opted_out = true;
                continue;
            }
            if !channel.reaches(&recipient) {
                continue;
            }
            chosen = Some((route, channel.clone(), recipient));
            break;
        }
        let Some((route, channel, recipient)) = chosen else {
            return if opted_out {
                Decision::Finish {
                    state: MessageState::Suppressed,
                    error: Some("opted out of every channel left".to_owned()),
                    task: true,
                }
            } else {
                Decision::Finish {
                    state: MessageState::Failed,
                    error: Some("no_channel: no contact left to try".to_owned()),
                    task: true,
                }
            };
        };
        let wave = message.wave_id.and_then(|id| context.waves.get(&id));
        let values = MessageContext {
            resident_name: resident.name.clone(),
            relay: route == Route::Relative,
            campaign_name: campaign.model.name.clone(),
            institution_name: appointment
                .map(|a| a.institution_name.clone())
                .unwrap_or_default(),
            institution_address: appointment
                .and_then(|a| a.institution_address.clone())
                .unwrap_or_default(),
            day: appointment.map(|a| month_day(a.day)).unwrap_or_default(),
            time: self.settings.exam_time.clone(),
            cadre_phone: self.settings.hotline.clone(),
            window_from: wave.map(|w| month_day(w.window_start)).unwrap_or_default(),
            window_to: wave.map(|w| month_day(w.window_end)).unwrap_or_default(),
            options: context
                .options
                .get(&message.id)
                .cloned()
                .unwrap_or_default(),
        };
        let locale = Locale::of(Language::parse(&resident.language).unwrap_or(Language::Zh));
        let rendered = if route.is_sms() {
            self.templates
                .render_sms(kind, locale, &values)
                .map(|sms| (sms.text, Some(sms.segments as i32)))
        } else {
            self.templates
                .render(kind, locale, &values)
                .map(|text| (text, None))
        };
        let (text, segments) = match rendered {
            Ok(rendered) => rendered,
            Err(e) => return finish(MessageState::Failed, &format!("template: {e}")),
        };
        *counted.entry(resident.id).or_default() += 1;
        Decision::Send(Box::new(Job {
            recipient: recipient.masked(),
            outgoing: Outgoing {
                idempotency_key: message.key.clone(),
                kind,
                recipient,
                title: kind.title().to_owned(),
                text,
                context: values,
            },
            message: message.clone(),
            route,
            channel,
            segments,
        }))
    }

    /// The address of a route, and whether the resident opted out of it.
    fn recipient(
        &self,
        resident: &residents::Model,
        route: Route,
    ) -> anyhow::Result<Option<(Recipient, bool)>> {
        Ok(match route {
            Route::WeChat => resident
                .wechat_openid
                .clone()
                .filter(|id| !id.is_empty())
                .map(|id| (Recipient::WeChat(id), resident.wechat_opt_out)),
            Route::Email => resident
                .email
                .clone()
                .filter(|e| !e.is_empty())
                .map(|e| (Recipient::Email(e), resident.email_opt_out)),
            Route::Phone => match &resident.phone_cipher {
                Some(cipher) => Some((
                    Recipient::Phone(self.privacy.decrypt(Field::Phone, cipher)?),
                    resident.phone_opt_out,
                )),
                None => None,
            },
            // A resident who opted their own number out is not texted through a relative
            // either: the cadre calls instead.
            Route::Relative => match &resident.relative_phone_cipher {
                Some(cipher) => Some((
                    Recipient::Phone(self.privacy.decrypt(Field::Phone, cipher)?),
                    resident.relative_opt_out || resident.phone_opt_out,
                )),
                None => None,
            },
        })
    }

    /// Records the route and channel of each send before it starts, so that a worker dying
    /// mid-send leaves behind which provider may have the message.
    async fn claim_routes(&self, jobs: &[Job]) -> AppResult<()> {
        for chunk in jobs.chunks(200) {
            let mut sql = Sql::new(self.backend());
            sql.push("UPDATE messages SET step = CASE id");
            for job in chunk {
                sql.push(" WHEN ")
                    .bind(job.message.id)
                    .push(" THEN ")
                    .bind(job.route.index() as i32);
            }
            sql.push(" END, channel = CASE id");
            for job in chunk {
                sql.push(" WHEN ")
                    .bind(job.message.id)
                    .push(" THEN ")
                    .bind(job.channel.name());
            }
            sql.push(" END WHERE leased_by = ")
                .bind(self.worker.as_str())
                .push(" AND id IN ")
                .bind_list(chunk.iter().map(|j| j.message.id));
            self.db.execute_raw(sql.build()).await?;
        }
        Ok(())
    }

    async fn send_and_record(&self, job: Job) -> Round {
        self.channels.wait_turn(job.channel.name()).await;
        let mut round = Round::default();
        // Right before the provider call: renew the lease and make sure the message is still
        // ours (a slow batch may have outlived its lease and been reconciled elsewhere).
        match self.renew(&job).await {
            Ok(true) => {}
            Ok(false) => return round,
            Err(e) => {
                tracing::error!(message = job.message.id, error = %e, "cannot renew a lease");
                return round;
            }
        }
        // The last attempt may have reached the provider: ask before sending again.
        let uncertain = job
            .message
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(&format!("{}: unknown:", job.channel.name())));
        let result = if uncertain && !job.channel.deduplicates() {
            match job
                .channel
                .lookup(&job.outgoing, Utc::now() - chrono::Duration::days(1))
                .await
            {
                Ok(Some(sent)) => Ok(sent),
                Ok(None) => self.send_now(&job).await,
                Err(e) => Err(SendError::Permanent(format!(
                    "outcome_unknown: an earlier attempt may have reached the provider, which \
                     cannot say ({e})"
                ))),
            }
        } else {
            self.send_now(&job).await
        };
        let recorded = match result {
            Ok(sent) => {
                round.sent += 1;
                if sent.delivered {
                    round.delivered += 1;
                }
                self.record_sent(&job, &sent).await
            }
            Err(error) => {
                round.retried += 1;
                self.record_error(&job, &error).await
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the row is reconciled.
            tracing::error!(message = job.message.id, error = %e, "cannot record a send");
        }
        round
    }

    /// One provider call, never outliving the lease: no answer in time is an unknown outcome.
    async fn send_now(&self, job: &Job) -> Result<Sent, SendError> {
        let limit = Duration::from_secs((self.settings.lease_secs / 2).max(1));
        match tokio::time::timeout(limit, job.channel.send(&job.outgoing)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Unknown("no answer in time".to_owned())),
        }
    }

    /// Extends the lease of a message about to be sent; false when it is no longer ours (or
    /// it has expired meanwhile, which is then recorded).
    async fn renew(&self, job: &Job) -> AppResult<bool> {
        let now = Utc::now();
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET lease_until = ")
            .bind(now + chrono::Duration::seconds(self.settings.lease_secs as i64))
            .push(" WHERE id = ")
            .bind(job.message.id)
            .push(" AND state = 'sending' AND leased_by = ")
            .bind(self.worker.as_str())
            .push(" AND expires_at > ")
            .bind(now);
        if self.db.execute_raw(sql.build()).await?.rows_affected() == 1 {
            return Ok(true);
        }
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET state = 'expired', expired_at = ")
            .bind(now)
            .push(", lease_until = NULL, leased_by = NULL WHERE id = ")
            .bind(job.message.id)
            .push(" AND state = 'sending' AND leased_by = ")
            .bind(self.worker.as_str());
        self.db.execute_raw(sql.build()).await?;
        Ok(false)
    }

    async fn record_sent(&self, job: &Job, sent: &Sent) -> AppResult<()> {
        let now = Utc::now();
        let state = if sent.delivered {
            MessageState::Delivered
        } else {
            MessageState::Sent
        };
        let txn = begin_write(&self.db).await?;
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET state = ")
            .bind(state.code())
            .push(", sent_at = ")
            .bind(now)
            .push(", delivered_at = ")
            .bind(sent.delivered.then_some(now))
            .push(", route = ")
            .bind(job.route.code())
            .push(", recipient = ")
            .bind(job.recipient.as_str())
            .push(", provider = ")
            .bind(sent.provider)
            .push(", provider_message_id = ")
            .bind(sent.provider_message_id.as_str())
            .push(", body = ")
            .bind(job.outgoing.text.as_str())
            .push(", segments = ")
            .bind(job.segments)
            .push(", last_error = NULL, lease_until = NULL, leased_by = NULL WHERE id = ")
            .bind(job.message.id)
            .push(" AND state = 'sending' AND leased_by = ")
            .bind(self.worker.as_str());
        if txn.execute_raw(sql.build()).await?.rows_affected() == 1 {
            outbox::progress(
                &txn,
                job.message.campaign_id,
                job.message.resident_id,
                sent.delivered,
                now,
            )
            .await?;
            if sent.delivered {
                crate::contact::from_delivered_message(
                    &txn,
                    job.message.id,
                    job.message.campaign_id,
                    job.message.resident_id,
                    Some(job.route.code()),
                    now,
                )
                .await?;
            }
        }
        txn.commit().await?;
        // A receipt may have come before this was recorded (a fast gateway).
        if !sent.provider_message_id.is_empty() {
            super::inbound::apply_pending_for(&self.db, sent.provider, &sent.provider_message_id)
                .await?;
        }
        Ok(())
    }

    async fn record_error(&self, job: &Job, error: &SendError) -> AppResult<()> {
        let now = Utc::now();
        let step = job.route.index() as i32;
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET state = 'queued', last_error = ")
            .bind(truncate(&format!("{}: {error}", job.channel.name()), 500))
            .push(", route = ")
            .bind(job.message.route.as_deref())
            .push(", lease_until = NULL, leased_by = NULL, ");
        // An unknown outcome is retried on the same channel, which then first asks the
        // provider whether it has the message (or, if it de-duplicates, just sends again).
        let retry = matches!(error, SendError::Transient(_) | SendError::Unknown(_))
            && job.message.attempts < self.settings.max_attempts as i32;
        if retry {
            sql.push("step = ")
                .bind(step)
                .push(", next_attempt_at = ")
                .bind(now + self.backoff(job.message.attempts));
        } else {
            // The next channel of the plan, now.
            sql.push("step = ")
                .bind(step + 1)
                .push(", attempts = 0, next_attempt_at = ")
                .bind(now);
        }
        sql.push(" WHERE id = ")
            .bind(job.message.id)
            .push(" AND state = 'sending' AND leased_by = ")
            .bind(self.worker.as_str());
        let txn = begin_write(&self.db).await?;
        txn.execute_raw(sql.build()).await?;
        // A WeChat user who blocked the account, a number on the operator's block list: the
        // resident has opted out of that channel.
        let opt_out = match job.route {
            Route::WeChat => Some(residents::Column::WechatOptOut),
            Route::Phone => Some(residents::Column::PhoneOptOut),
            Route::Relative => Some(residents::Column::RelativeOptOut),
            Route::Email => None,
        };
        if let (Some(column), SendError::Permanent(reason)) = (opt_out, error)
            && reason.starts_with("opted_out")
        {
            residents::Entity::update_many()
                .col_expr(column, sea_orm::sea_query::Expr::value(true))
                .filter(residents::Column::Id.eq(job.message.resident_id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Exponential backoff from `retry_base_secs`, capped, with ±25 % jitter so that a
    /// provider outage does not end in a stampede.
    fn backoff(&self, attempts: i32) -> chrono::Duration {
        let base = self.settings.retry_base_secs.max(1) as f64;
        let exp = base * 2f64.powi((attempts - 1).clamp(0, 20));
        let capped = exp.min(self.settings.retry_max_secs.max(1) as f64);
        let jitter = 0.75 + 0.5 * random_unit();
        chrono::Duration::milliseconds((capped * jitter * 1000.0) as i64)
    }

    async fn hold(&self, message: &Leased, until: DateTime<Utc>) -> AppResult<()> {
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET state = 'queued', attempts = attempts - 1, next_attempt_at = ")
            .bind(until)
            .push(", last_error = 'held: daily cap reached', lease_until = NULL, leased_by = NULL WHERE id = ")
            .bind(message.id)
            .push(" AND state = 'sending' AND leased_by = ")
            .bind(self.worker.as_str());
        self.db.execute_raw(sql.build()).await?;
        Ok(())
    }

    async fn finish(
        &self,
        message: &Leased,
        state: MessageState,
        error: Option<&str>,
        task: bool,
        context: &BatchContext,
        now: DateTime<Utc>,
    ) -> AppResult<()> {
        let column = match state {
            MessageState::Expired => "expired_at",
            MessageState::Cancelled => "cancelled_at",
            MessageState::Suppressed => "suppressed_at",
            _ => "failed_at",
        };
        let txn = begin_write(&self.db).await?;
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET state = ")
            .bind(state.code())
            .push(", ")
            .push(column)
            .push(" = ")
            .bind(now)
            .push(", last_error = ")
            .bind(error)
            .push(", lease_until = NULL, leased_by = NULL WHERE id = ")
            .bind(message.id)
            .push(" AND state = 'sending' AND leased_by = ")
            .bind(self.worker.as_str());
        let changed = txn.execute_raw(sql.build()).await?.rows_affected();
        if changed == 1
            && task
            && let Some(resident) = context.residents.get(&message.resident_id)
        {
            let note = match state {
                MessageState::Suppressed => "居民已退订全部可用渠道，请电话或上门联系",
                _ => "短信、微信等渠道都无法送达，请电话或上门联系",
            };
            super::tasks::create(
                &txn,
                super::tasks::NewTask {
                    campaign_id: message.campaign_id,
                    resident_id: resident.id,
                    village_code: resident.village_code.clone(),
                    kind: super::tasks::TaskKind::Unreachable,
                    dedupe_key: format!("unreachable:r{}:{}", resident.id, now.format("%Y-%m-%d")),
                    message_id: Some(message.id),
                    reply_id: None,
                    note: Some(note.to_owned()),
                },
                now,
            )
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }
}

#[derive(Debug)]
enum Reconciled {
    Sent(Sent),
    NotSent,
    Unknown,
}

impl Reconciled {
    fn label(&self) -> &'static str {
        match self {
            Reconciled::Sent(_) => "the provider had it: sent",
            Reconciled::NotSent => "sent again",
            Reconciled::Unknown => "outcome unknown: failed for a person to re-send",
        }
    }
}

/// `12月31日`
pub fn month_day(day: NaiveDate) -> String {
    format!("{}月{}日", day.month(), day.day())
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A number in [0, 1) from the operating system's randomness (through a v4 UUID).
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_wechat_phone_email_relative() {
        let codes: Vec<_> = Route::PLAN.iter().map(|r| r.code()).collect();
        assert_eq!(codes, ["wechat", "phone", "email", "relative"]);
        assert_eq!(Route::parse("relative"), Some(Route::Relative));
        assert!(Route::Relative.is_sms() && !Route::WeChat.is_sms());
    }

    #[test]
    fn random_units_stay_in_range() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
        assert_eq!(
            month_day(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap()),
            "3月5日"
        );
    }
}
