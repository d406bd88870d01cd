//! Dispatch workers: lease due messages in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! the one writer on SQLite), pick each one's channel by the fallback plan (WeChat → own
//! phone → e-mail → a relative's phone → a task for the cadre), send with bounded
//! concurrency under per-provider rate limits, and commit the results as they finish, a
//! transaction for whatever finished since the last one. Quiet hours, the per-resident daily
//! cap and opt-outs hold for every send.
//!
//! Each message is marked handed over (`handed_over_at`, with the step and channel it goes
//! by) by a statement of its own that commits after its turn under the rate limit and just
//! before its provider call, and renews its lease. A worker that dies mid-batch therefore
//! leaves two kinds of leased rows behind, told apart when their lease runs out: those never
//! handed over in this lease, which are queued again and sent once; and those handed over —
//! the calls in flight (at most `concurrency` per worker) and the finished calls whose
//! result was not committed yet — which are sent again where the provider recognises the
//! idempotency key, otherwise looked up with the provider, otherwise failed as "outcome
//! unknown" for a person to re-send. The mark costs one single-row write per message (it
//! replaces the batch-wide claim of routes that marked every leased row as possibly sent);
//! the group renewal ahead of the sends only extends leases and marks nothing.
//!
//! A message the provider took (`sent`) whose delivery receipt does not come within its
//! provider's receipt timeout becomes `unconfirmed`; a receipt that comes later still moves
//! it on. Providers that give no receipts (`log`, `smtp`) are never swept.

pub use crate::outreach::channel::Route;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use entities::residents;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    FromQueryResult, QueryFilter, TransactionTrait,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::campaign::{Campaign, Stage};
use crate::config::MessagingSettings;
use crate::db::{Sql, begin_write};
use crate::error::AppResult;
use crate::outreach::cloud::{StoredToken, TokenLock, TokenStore};
use crate::outreach::links;
use crate::outreach::outbox::{self, MessageState, OutboxSettings};
use crate::outreach::{
    Channel, Locale, LogChannel, MessageContext, MessageKind, Outgoing, Recipient, SendError, Sent,
    Templates,
};
use crate::privacy::{Field, Privacy};
use crate::registry::Language;
use crate::time::{at_local, month_day, quiet_until};

/// The channel of each route, with the rate limit of each provider (keyed by the name the
/// channel goes by, which is its provider's).
pub struct Channels {
    routes: [Option<Arc<dyn Channel>>; 4],
    limiters: HashMap<String, Arc<Limiter>>,
}

struct Limiter {
    rate: u32,
    limiter: DefaultDirectRateLimiter,
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
                let per_second = NonZeroU32::new(*rate)?;
                Some((
                    name.clone(),
                    Arc::new(Limiter {
                        rate: *rate,
                        limiter: RateLimiter::direct(Quota::per_second(per_second)),
                    }),
                ))
            })
            .collect();
        let channels = Self {
            routes: [wechat, sms.clone(), email, sms],
            limiters,
        };
        for route in Route::PLAN {
            if let Some(channel) = channels.of(route) {
                tracing::debug!(
                    route = route.code(),
                    channel = channel.name(),
                    rate_per_second = channels.rate_of(route),
                    "dispatch route"
                );
            }
        }
        channels
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
            Some(smtp) => Some(Arc::new(crate::outreach::EmailChannel::new(smtp)?)),
            None => None,
        };
        let wechat: Option<Arc<dyn Channel>> = match &settings.wechat {
            Some(wechat) => Some(Arc::new(crate::outreach::cloud::WeChatChannel::new(
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
            "jasmin" => Arc::new(
                crate::outreach::JasminChannel::new(settings.jasmin.as_ref().ok_or_else(
                    || {
                        anyhow::anyhow!(
                            "messaging.sms_provider = \"jasmin\" needs [messaging.jasmin]"
                        )
                    },
                )?)?
                .with_receipt_secret(settings.webhooks.secret.clone()),
            ),
            "aliyun" => Arc::new(crate::outreach::cloud::AliyunSmsChannel::new(
                settings.aliyun.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("messaging.sms_provider = \"aliyun\" needs [messaging.aliyun]")
                })?,
            )?),
            "tencent" => Arc::new(crate::outreach::cloud::TencentSmsChannel::new(
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

    /// The rate limit the channel of `route` is held to, if any (messages a second).
    fn rate_of(&self, route: Route) -> Option<u32> {
        let limiter = self.limiters.get(self.of(route)?.name())?;
        Some(limiter.rate)
    }

    async fn wait_turn(&self, provider: &str) {
        if let Some(Limiter { limiter, .. }) = self.limiters.get(provider).map(Arc::as_ref) {
            let waiting = Instant::now();
            limiter.until_ready().await;
            crate::telemetry::metrics::rate_limit_wait(provider, waiting.elapsed());
        }
    }
}

/// The PostgreSQL advisory lock held (per transaction) by whoever refreshes a provider
/// token, so that several instances never fetch one at the same time ("outrtokn").
const TOKEN_LOCK_KEY: i64 = 0x6f75_7472_746f_6b6e;

/// The providers' access tokens (WeChat's), shared by every instance in `provider_tokens`.
/// The refresh lock is a writing transaction: on PostgreSQL it takes an advisory lock; on
/// SQLite `BEGIN IMMEDIATE` takes the write lock (a `serve` and an `outreach dispatch` may
/// share the file).
#[async_trait::async_trait]
impl TokenStore for DatabaseConnection {
    async fn stored(&self, account: &str) -> Result<Option<StoredToken>, sea_orm::DbErr> {
        stored_token(self, account).await
    }

    async fn lock(
        &self,
        account: &str,
    ) -> Result<(Box<dyn TokenLock>, Option<StoredToken>), sea_orm::DbErr> {
        let txn = begin_write(self).await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            let mut lock = Sql::new(DbBackend::Postgres);
            lock.push("SELECT pg_advisory_xact_lock(")
                .bind(TOKEN_LOCK_KEY)
                .push(")");
            txn.query_one_raw(lock.build()).await?;
        }
        let stored = stored_token(&txn, account).await?;
        let held = HeldToken {
            txn,
            account: account.to_owned(),
        };
        Ok((Box::new(held), stored))
    }
}

/// The refresh lock of a provider token: the transaction that holds it.
struct HeldToken {
    txn: DatabaseTransaction,
    account: String,
}

#[async_trait::async_trait]
impl TokenLock for HeldToken {
    async fn store(self: Box<Self>, token: StoredToken) -> Result<(), sea_orm::DbErr> {
        let mut sql = Sql::new(self.txn.get_database_backend());
        sql.push("INSERT INTO provider_tokens (account, token_cipher, expires_at, refreshed_at) VALUES (")
            .bind(self.account.clone())
            .push(", ")
            .bind(token.cipher)
            .push(", ")
            .bind(token.expires_at)
            .push(", ")
            .bind(Utc::now())
            .push(
                ") ON CONFLICT (account) DO UPDATE SET token_cipher = excluded.token_cipher, \
                 expires_at = excluded.expires_at, refreshed_at = excluded.refreshed_at",
            );
        self.txn.execute_raw(sql.build()).await?;
        self.txn.commit().await
    }

    async fn release(self: Box<Self>) -> Result<(), sea_orm::DbErr> {
        self.txn.commit().await
    }
}

/// The `provider_tokens` row of `account`.
async fn stored_token(
    db: &impl ConnectionTrait,
    account: &str,
) -> Result<Option<StoredToken>, sea_orm::DbErr> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT token_cipher, expires_at FROM provider_tokens WHERE account = ")
        .bind(account);
    Ok(ProviderToken::find_by_statement(sql.build())
        .one(db)
        .await?
        .map(|row| StoredToken {
            cipher: row.token_cipher,
            expires_at: row.expires_at,
        }))
}

/// A provider's stored access token.
#[derive(FromQueryResult)]
struct ProviderToken {
    token_cipher: Vec<u8>,
    expires_at: DateTime<Utc>,
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
    /// Sent messages whose delivery receipt did not come in time.
    pub unconfirmed: u64,
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
        self.unconfirmed += other.unconfirmed;
    }
}

pub struct Dispatcher {
    db: DatabaseConnection,
    privacy: Arc<Privacy>,
    templates: Arc<Templates>,
    channels: Arc<Channels>,
    settings: OutboxSettings,
    worker: String,
    /// When this worker last expired stale rows.
    last_expiry: Mutex<Option<Instant>>,
    /// `http.public_url`: where the residents' own links point; without it messages carry
    /// no link.
    public_url: Option<String>,
}

/// How often a worker expires the waiting rows that are too late (a scan of what waits);
/// a leased row is checked on its own before it is sent.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// At most this many results are recorded in one transaction.
const RECORD_GROUP: usize = 256;

/// `AND state IN (…)`, the condition of the partial index over waiting and leased rows: said
/// explicitly so that SQLite uses the index (it cannot infer it from `state = 'queued'`).
const DUE_INDEX: &str = " AND state IN ('scheduled', 'queued', 'sending')";

/// The PostgreSQL advisory lock (per transaction) under which a worker leases messages
/// ("outrleas"; see `Dispatcher::lease`).
pub const LEASE_LOCK_KEY: i64 = 0x6f75_7472_6c65_6173;

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

/// A message as leasing returns it.
#[derive(FromQueryResult)]
struct LeasedRow {
    id: i32,
    campaign_id: i32,
    resident_id: i32,
    kind: String,
    appointment_id: Option<i32>,
    wave_id: Option<i32>,
    idempotency_key: String,
    attempts: i32,
    step: i32,
    route: Option<String>,
    expires_at: DateTime<Utc>,
    last_error: Option<String>,
}

impl LeasedRow {
    fn leased(self) -> Leased {
        Leased {
            id: self.id,
            campaign_id: self.campaign_id,
            resident_id: self.resident_id,
            kind: MessageKind::parse(&self.kind),
            appointment_id: self.appointment_id,
            wave_id: self.wave_id,
            key: self.idempotency_key,
            attempts: self.attempts,
            step: self.step,
            route: self.route,
            expires_at: self.expires_at,
            last_error: self.last_error,
        }
    }
}

/// A message left `sending` by a worker whose lease ran out.
#[derive(FromQueryResult)]
struct Stranded {
    id: i32,
    campaign_id: i32,
    kind: String,
    resident_id: i32,
    step: i32,
    channel: Option<String>,
    idempotency_key: String,
    leased_by: Option<String>,
    /// Set (for this lease) once the worker was about to call the provider.
    handed_over_at: Option<DateTime<Utc>>,
}

/// A message's row id (`RETURNING id`).
#[derive(FromQueryResult)]
struct Id {
    id: i32,
}

/// A resident's stage in a campaign.
#[derive(FromQueryResult)]
struct StageRow {
    campaign_id: i32,
    resident_id: i32,
    stage: String,
}

/// An appointment with its institution.
#[derive(FromQueryResult)]
struct AppointmentRow {
    id: i32,
    #[sea_orm(nested)]
    info: AppointmentInfo,
}

/// A wave's window.
#[derive(FromQueryResult)]
struct WaveRow {
    id: i32,
    #[sea_orm(nested)]
    info: WaveInfo,
}

/// How many messages a resident was sent today.
#[derive(FromQueryResult)]
struct SentToday {
    resident_id: i32,
    n: i64,
}

/// A receipt kept until its send is recorded.
#[derive(FromQueryResult)]
struct EarlyReceipt {
    provider: String,
    provider_message_id: String,
}

/// What the appointment of a message says.
#[derive(Debug, Clone, FromQueryResult)]
struct AppointmentInfo {
    /// booked, attended, no_show or cancelled, as it is now.
    status: String,
    day: NaiveDate,
    institution_id: i32,
    #[sea_orm(from_alias = "name")]
    institution_name: String,
    #[sea_orm(from_alias = "address")]
    institution_address: Option<String>,
}

#[derive(Debug, Clone, FromQueryResult)]
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
    /// The resident's own link, per (campaign, resident) of a message that carries one.
    links: HashMap<(i32, i32), String>,
}

/// One send, decided.
struct Job {
    message: Leased,
    route: Route,
    /// No channel of the plan comes after `route` for this resident.
    last_route: bool,
    channel: Arc<dyn Channel>,
    outgoing: Outgoing,
    recipient: String,
    segments: Option<i32>,
}

/// A provider call done, waiting to be recorded.
struct Finished {
    job: Job,
    result: Result<Sent, SendError>,
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
            last_expiry: Mutex::new(None),
            public_url: None,
        }
    }

    /// Messages about an appointment carry the resident's link under `public_url`.
    pub fn with_public_url(mut self, public_url: Option<String>) -> Self {
        self.public_url = public_url.filter(|u| !u.trim().is_empty());
        self
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
        let (expired, unconfirmed) = self.expire_now_and_then(now).await?;
        let mut round = Round {
            expired,
            unconfirmed,
            ..Round::default()
        };
        self.promote(now).await?;
        round.reconciled = self.reconcile(now).await?;
        crate::flows::replies::apply_pending(&self.db).await?;
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
        round.add(&self.send_all(jobs).await);
        Ok(round)
    }

    /// Sends with bounded concurrency while the results are recorded: the leases of each
    /// group of sends about to start are renewed (and ownership checked) in one statement,
    /// and the results are written in one transaction per group of whatever has finished
    /// since the last write. A result counts once its transaction has committed.
    async fn send_all(&self, jobs: Vec<Job>) -> Round {
        let concurrency = self.settings.concurrency.max(1);
        let (finished, mut results) = tokio::sync::mpsc::unbounded_channel::<Finished>();
        let sending = async move {
            let mut waiting = jobs.into_iter();
            let mut renewing = None;
            let mut renewed: VecDeque<Job> = VecDeque::new();
            let mut in_flight = FuturesUnordered::new();
            loop {
                // The next group's leases are renewed while the sends before it go on.
                if renewing.is_none() && renewed.len() < concurrency && waiting.len() > 0 {
                    let group: Vec<Job> = waiting.by_ref().take(concurrency).collect();
                    renewing = Some(Box::pin(self.renew_all(group)));
                }
                while in_flight.len() < concurrency
                    && let Some(job) = renewed.pop_front()
                {
                    in_flight.push(self.send(job));
                }
                tokio::select! {
                    Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                        if let Some(result) = result {
                            // The receiver lives until every sender is gone.
                            let _ = finished.send(result);
                        }
                    }
                    group = async { renewing.as_mut().expect("a renewal").await },
                        if renewing.is_some() => {
                        renewing = None;
                        renewed.extend(group);
                    }
                    else => break,
                }
            }
        };
        let recording = async {
            let mut round = Round::default();
            let mut group = Vec::with_capacity(RECORD_GROUP);
            while results.recv_many(&mut group, RECORD_GROUP).await > 0 {
                round.add(&self.record_all(std::mem::take(&mut group)).await);
            }
            round
        };
        let ((), round) = tokio::join!(sending, recording);
        round
    }

    /// Expires the waiting rows that are too late and marks the sent ones whose receipt is
    /// overdue, at most every `EXPIRE_EVERY`; returns how many of each.
    async fn expire_now_and_then(&self, now: DateTime<Utc>) -> AppResult<(u64, u64)> {
        {
            let mut last = self.last_expiry.lock().expect("expiry clock");
            if last.is_some_and(|at| at.elapsed() < EXPIRE_EVERY) {
                return Ok((0, 0));
            }
            *last = Some(Instant::now());
        }
        Ok((self.expire(now).await?, self.unconfirm(now).await?))
    }

    /// Sent messages whose provider's receipt timeout passed with no receipt become
    /// `unconfirmed` (one indexed statement per provider that gives receipts).
    async fn unconfirm(&self, now: DateTime<Utc>) -> AppResult<u64> {
        let mut unconfirmed = 0;
        for (provider, secs) in &self.settings.receipt_timeout_secs {
            if *secs == 0 {
                continue;
            }
            let mut sql = Sql::new(self.backend());
            sql.push(
                "UPDATE messages SET state = 'unconfirmed' WHERE state = 'sent' AND provider = ",
            )
            .bind(provider.as_str())
            .push(" AND sent_at < ")
            .bind(now - chrono::Duration::seconds((*secs).min(100 * 365 * 86_400) as i64));
            let n = self.db.execute_raw(sql.build()).await?.rows_affected();
            if n > 0 {
                tracing::warn!(
                    provider = provider.as_str(),
                    messages = n,
                    "no delivery receipt in time"
                );
            }
            unconfirmed += n;
        }
        Ok(unconfirmed)
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
            .push(" WHERE state = 'scheduled'")
            .push(DUE_INDEX)
            .push(" AND next_attempt_at <= ")
            .bind(now);
        Ok(self.db.execute_raw(sql.build()).await?.rows_affected())
    }

    /// Rows whose worker's lease ran out mid-send.
    async fn reconcile(&self, now: DateTime<Utc>) -> AppResult<u64> {
        let mut sql = Sql::new(self.backend());
        sql.push(
            "SELECT id, campaign_id, kind, resident_id, step, channel, idempotency_key, \
             leased_by, handed_over_at FROM messages WHERE state = 'sending'",
        )
        .push(DUE_INDEX)
        .push(" AND lease_until < ")
        .bind(now)
        .push(" ORDER BY lease_until LIMIT ")
        .bind(i64::from(self.settings.batch));
        let rows = Stranded::find_by_statement(sql.build())
            .all(&self.db)
            .await?;
        let mut reconciled = 0;
        for row in rows {
            let id = row.id;
            let channel = row
                .handed_over_at
                .and(row.channel.as_deref())
                .and_then(|c| self.channels.named(c));
            let outcome = match channel {
                // Never handed over to a provider (in this lease): nothing went out.
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
                        .bind(Route::PLAN[row.step.clamp(0, 3) as usize].code())
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
            match &row.leased_by {
                Some(w) => sql.push("= ").bind(w.clone()),
                None => sql.push("IS NULL"),
            };
            if self.db.execute_raw(sql.build()).await?.rows_affected() == 1 {
                reconciled += 1;
                if matches!(outcome, Reconciled::Sent(_)) {
                    crate::campaign::enrol::notice_contact(
                        &self.db,
                        row.campaign_id,
                        row.resident_id,
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
    async fn ask_provider(&self, channel: &Arc<dyn Channel>, row: &Stranded) -> Reconciled {
        let found = async {
            let resident_id = row.resident_id;
            let route = Route::PLAN[row.step.clamp(0, 3) as usize];
            let resident = residents::Entity::find_by_id(resident_id)
                .one(&self.db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("resident {resident_id} is gone"))?;
            let Some((recipient, _)) = self.recipient(&resident, route)? else {
                return Ok::<_, crate::error::AppError>(None);
            };
            let kind = MessageKind::parse(&row.kind)
                .ok_or_else(|| anyhow::anyhow!("unknown message kind {}", row.kind))?;
            let outgoing = Outgoing {
                idempotency_key: row.idempotency_key.clone(),
                kind,
                recipient,
                title: kind.title().to_owned(),
                text: String::new(),
                context: MessageContext::default(),
            };
            Ok(Some(
                channel
                    .lookup(&outgoing, row.handed_over_at.unwrap_or_else(Utc::now))
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
            .push(
                ", handed_over_at = NULL, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM messages WHERE state = 'queued'",
            )
            .push(DUE_INDEX)
            .push(" AND next_attempt_at <= ")
            .bind(now);
        if !quiet.is_empty() {
            sql.push(" AND campaign_id NOT IN ")
                .bind_list(quiet.iter().copied());
        }
        // A resident another worker is sending to waits, so two workers never both count
        // the same day's messages against the daily cap.
        sql.push(
            " AND resident_id NOT IN (SELECT resident_id FROM messages WHERE state = 'sending'",
        )
        .push(DUE_INDEX)
        .push(")");
        sql.push(" ORDER BY next_attempt_at LIMIT ")
            .bind(i64::from(self.settings.batch));
        if backend == DbBackend::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(
            ") RETURNING id, campaign_id, resident_id, kind, appointment_id, wave_id, \
             idempotency_key, attempts, step, route, expires_at, last_error",
        );
        let rows = if backend == DbBackend::Postgres {
            // Under READ COMMITTED this statement's snapshot would not show the rows another
            // worker is leasing at the same moment (`SKIP LOCKED` passes over them), so the
            // guard above would let both workers take messages of one resident and each
            // count none sent today. Leases are taken one at a time: the statement's snapshot
            // is taken once the lock is held, after the previous lease committed — as on
            // SQLite, whose writers are serial. A lease is one short statement.
            let txn = self.db.begin().await?;
            let mut lock = Sql::new(backend);
            lock.push("SELECT pg_advisory_xact_lock(")
                .bind(LEASE_LOCK_KEY)
                .push(")");
            txn.execute_raw(lock.build()).await?;
            let rows = LeasedRow::find_by_statement(sql.build()).all(&txn).await?;
            txn.commit().await?;
            rows
        } else {
            LeasedRow::find_by_statement(sql.build())
                .all(&self.db)
                .await?
        };
        let mut leased: Vec<Leased> = rows.into_iter().map(LeasedRow::leased).collect();
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
        let mut campaign_ids: Vec<i32> = leased.iter().map(|m| m.campaign_id).collect();
        campaign_ids.sort_unstable();
        campaign_ids.dedup();
        for chunk in resident_ids.chunks(500) {
            for resident in residents::Entity::find()
                .filter(residents::Column::Id.is_in(chunk.iter().copied()))
                .all(&self.db)
                .await?
            {
                context.residents.insert(resident.id, resident);
            }
            let mut sql = Sql::new(self.backend());
            // By campaign and resident, the key of the progress rows (by resident alone
            // would read the whole table).
            sql.push(
                "SELECT campaign_id, resident_id, stage FROM enrolments WHERE campaign_id IN ",
            )
            .bind_list(campaign_ids.iter().copied())
            .push(" AND resident_id IN ")
            .bind_list(chunk.iter().copied());
            for row in StageRow::find_by_statement(sql.build())
                .all(&self.db)
                .await?
            {
                context
                    .stages
                    .insert((row.campaign_id, row.resident_id), row.stage);
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
            for row in AppointmentRow::find_by_statement(sql.build())
                .all(&self.db)
                .await?
            {
                context.appointments.insert(row.id, row.info);
            }
        }
        let mut wave_ids: Vec<i32> = leased.iter().filter_map(|m| m.wave_id).collect();
        wave_ids.sort_unstable();
        wave_ids.dedup();
        if !wave_ids.is_empty() {
            let mut sql = Sql::new(self.backend());
            sql.push("SELECT id, window_start, window_end FROM waves WHERE id IN ")
                .bind_list(wave_ids.iter().copied());
            for row in WaveRow::find_by_statement(sql.build())
                .all(&self.db)
                .await?
            {
                context.waves.insert(row.id, row.info);
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
                for row in SentToday::find_by_statement(sql.build())
                    .all(&self.db)
                    .await?
                {
                    context.sent_today.insert(row.resident_id, row.n);
                }
            }
        }
        for message in leased {
            if message.kind == Some(MessageKind::RescheduleOptions) {
                self.load_options(message, campaigns, &mut context).await?;
            }
        }
        if let Some(public_url) = &self.public_url {
            let mut pairs: Vec<(i32, i32)> = leased
                .iter()
                .filter(|m| m.appointment_id.is_some() && m.kind.is_some_and(links::carries_link))
                .map(|m| (m.campaign_id, m.resident_id))
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            // Without its link a notice still says where and when: a failure here is
            // logged and the batch goes out without links rather than not at all.
            match links::ensure(&self.db, &self.privacy, &pairs).await {
                Ok(codes) => {
                    context.links = codes
                        .into_iter()
                        .map(|(pair, code)| (pair, links::url(public_url, &code)))
                        .collect();
                }
                Err(e) => {
                    tracing::error!(error = %e, "residents' links unavailable; sent without");
                }
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
        let mut usable = Vec::new();
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
            usable.push((route, channel.clone(), recipient));
            if usable.len() == 2 {
                break;
            }
        }
        // Whether the plan has a channel after this one: without one, a channel that keeps
        // failing for a while (a provider outage) is tried again until the message expires.
        let last_route = usable.len() < 2;
        let chosen = usable.into_iter().next();
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
            link: if appointment.is_some() && links::carries_link(kind) {
                context
                    .links
                    .get(&(message.campaign_id, message.resident_id))
                    .cloned()
                    .unwrap_or_default()
            } else {
                String::new()
            },
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
            last_route,
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

    /// Extends the leases of the sends about to start, in one statement, and keeps those
    /// still ours. A row no longer ours is not sent.
    async fn renew_all(&self, jobs: Vec<Job>) -> Vec<Job> {
        match self.try_renew_all(&jobs).await {
            Ok(ours) => jobs
                .into_iter()
                .filter(|job| ours.contains(&job.message.id))
                .collect(),
            Err(e) => {
                // The leases run out and the rows are reconciled.
                tracing::error!(messages = jobs.len(), error = %e, "cannot renew leases");
                Vec::new()
            }
        }
    }

    /// The ids whose lease this worker holds for another `lease_secs`; those of them that
    /// have expired meanwhile are recorded so.
    async fn try_renew_all(&self, jobs: &[Job]) -> AppResult<HashSet<i32>> {
        let now = Utc::now();
        let mut sql = self.lease_extension(jobs.iter().map(|job| job.message.id), now);
        sql.push(" AND expires_at > ")
            .bind(now)
            .push(" RETURNING id");
        let ours: HashSet<i32> = Id::find_by_statement(sql.build())
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect();
        let lost: Vec<i32> = jobs
            .iter()
            .map(|job| job.message.id)
            .filter(|id| !ours.contains(id))
            .collect();
        if !lost.is_empty() {
            // Of those, the ones still ours are past their useful time.
            let mut sql = Sql::new(self.backend());
            sql.push("UPDATE messages SET state = 'expired', expired_at = ")
                .bind(now)
                .push(", lease_until = NULL, leased_by = NULL WHERE id IN ")
                .bind_list(lost)
                .push(" AND state = 'sending' AND leased_by = ")
                .bind(self.worker.as_str());
            self.db.execute_raw(sql.build()).await?;
        }
        Ok(ours)
    }

    /// One provider call, once the message is marked handed over; `None` when the message
    /// is no longer ours (or the mark could not be written: then nothing went out).
    async fn send(&self, job: Job) -> Option<Finished> {
        self.channels.wait_turn(job.channel.name()).await;
        match self.hand_over(&job).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::error!(message = job.message.id, error = %e, "cannot mark a hand-over");
                return None;
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
        Some(Finished { job, result })
    }

    /// One provider call, never outliving the lease: no answer in time is an unknown outcome.
    async fn send_now(&self, job: &Job) -> Result<Sent, SendError> {
        let limit = Duration::from_secs((self.settings.lease_secs / 2).max(1));
        let started = Instant::now();
        let result = match tokio::time::timeout(limit, job.channel.send(&job.outgoing)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Unknown("no answer in time".to_owned())),
        };
        let outcome = result.as_ref().err().map_or("sent", SendError::kind);
        crate::telemetry::metrics::provider_send(job.channel.name(), outcome, started.elapsed());
        result
    }

    /// Marks a message handed over to its provider — the step and channel it goes by, and
    /// when — and gives it another lease, in one statement committed before the provider
    /// call. False when it is no longer ours (or it has expired meanwhile, which is then
    /// recorded).
    async fn hand_over(&self, job: &Job) -> AppResult<bool> {
        let now = Utc::now();
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET step = ")
            .bind(job.route.index() as i32)
            .push(", channel = ")
            .bind(job.channel.name())
            .push(", handed_over_at = ")
            .bind(now)
            .push(", lease_until = ")
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

    /// Records finished sends in one transaction; if that fails, each in its own, so that one
    /// row that cannot be written does not hold back the others.
    async fn record_all(&self, finished: Vec<Finished>) -> Round {
        // A result may have waited behind the group before it: its lease is made whole again
        // before anything else, so that it cannot run out (and the message be reconciled by
        // another worker) while this group is written.
        if let Err(e) = self.extend_leases(&finished).await {
            tracing::warn!(error = %e, "cannot extend the leases of finished sends");
        }
        let error = match self.record_group(&finished).await {
            Ok(round) => return round,
            Err(error) => error,
        };
        let mut round = Round::default();
        if finished.len() > 1 {
            tracing::warn!(sends = finished.len(), error = %error, "recording one by one");
            for one in finished.chunks(1) {
                match self.record_group(one).await {
                    Ok(recorded) => round.add(&recorded),
                    // The lease runs out and the row is reconciled.
                    Err(e) => {
                        tracing::error!(message = one[0].job.message.id, error = %e, "cannot record a send");
                    }
                }
            }
        } else if let Some(one) = finished.first() {
            tracing::error!(message = one.job.message.id, error = %error, "cannot record a send");
        }
        round
    }

    /// Extends the leases of `finished` that are still ours, in one statement of its own.
    async fn extend_leases(&self, finished: &[Finished]) -> AppResult<()> {
        let now = Utc::now();
        for chunk in finished.chunks(500) {
            let sql = self.lease_extension(chunk.iter().map(|f| f.job.message.id), now);
            self.db.execute_raw(sql.build()).await?;
        }
        Ok(())
    }

    /// `UPDATE` giving the messages `ids` that this worker is sending another `lease_secs`
    /// from `now`; more conditions may follow.
    fn lease_extension(&self, ids: impl IntoIterator<Item = i32>, now: DateTime<Utc>) -> Sql {
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET lease_until = ")
            .bind(now + chrono::Duration::seconds(self.settings.lease_secs as i64))
            .push(" WHERE id IN ")
            .bind_list(ids)
            .push(" AND state = 'sending' AND leased_by = ")
            .bind(self.worker.as_str());
        sql
    }

    /// The results of provider calls, with the progress of the residents reached, in one
    /// transaction; counted once it has committed.
    async fn record_group(&self, finished: &[Finished]) -> AppResult<Round> {
        let now = Utc::now();
        // E-mail has no delivery receipt: a message the mail server accepted is delivered.
        let accepted: Vec<(&Job, Sent)> = finished
            .iter()
            .filter_map(|f| {
                f.result.as_ref().ok().map(|sent| {
                    let mut sent = sent.clone();
                    sent.delivered |= f.job.route == Route::Email;
                    (&f.job, sent)
                })
            })
            .collect();
        let sent: Vec<(&Job, &Sent)> = accepted.iter().map(|(job, sent)| (*job, sent)).collect();
        let txn = begin_write(&self.db).await?;
        let mut recorded = HashSet::new();
        for chunk in sent.chunks(100) {
            recorded.extend(self.write_sent(&txn, chunk, now).await?);
        }
        let mut reached: BTreeMap<(i32, bool), Vec<i32>> = BTreeMap::new();
        for (job, sent) in &sent {
            if recorded.contains(&job.message.id) {
                reached
                    .entry((job.message.campaign_id, sent.delivered))
                    .or_default()
                    .push(job.message.resident_id);
            }
        }
        for ((campaign_id, delivered), residents) in &reached {
            crate::campaign::enrol::notice_contact_many(
                &txn,
                *campaign_id,
                residents,
                *delivered,
                now,
            )
            .await?;
        }
        for (job, sent) in &sent {
            if sent.delivered && recorded.contains(&job.message.id) {
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
        for f in finished {
            if let Err(error) = &f.result {
                self.write_error(&txn, &f.job, error, now).await?;
            }
        }
        txn.commit().await?;
        let mut round = Round {
            retried: (finished.len() - sent.len()) as u64,
            ..Round::default()
        };
        for (job, sent) in &sent {
            if !recorded.contains(&job.message.id) {
                // Another worker took the row over (its lease had run out): it reconciles it.
                tracing::warn!(
                    message = job.message.id,
                    "a send's result came after its lease"
                );
                continue;
            }
            round.sent += 1;
            if sent.delivered {
                round.delivered += 1;
            }
        }
        if let Err(e) = self.apply_early_receipts(&sent).await {
            tracing::error!(error = %e, "cannot apply receipts kept for recorded sends");
        }
        Ok(round)
    }

    /// Marks sends the provider took, each only while its row is still this worker's;
    /// returns the ids written.
    async fn write_sent(
        &self,
        txn: &DatabaseTransaction,
        sent: &[(&Job, &Sent)],
        now: DateTime<Utc>,
    ) -> AppResult<Vec<i32>> {
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET sent_at = ").bind(now);
        let mut column =
            |name: &'static str, value: fn(&Job, &Sent, DateTime<Utc>) -> sea_orm::Value| {
                sql.push(", ").push(name).push(" = CASE id");
                for (job, sent) in sent {
                    sql.push(" WHEN ")
                        .bind(job.message.id)
                        .push(" THEN ")
                        .bind(value(job, sent, now));
                }
                sql.push(" END");
            };
        column("state", |_, sent, _| {
            let state = if sent.delivered {
                MessageState::Delivered
            } else {
                MessageState::Sent
            };
            state.code().into()
        });
        column("delivered_at", |_, sent, now| {
            sent.delivered.then_some(now).into()
        });
        column("route", |job, _, _| job.route.code().into());
        column("recipient", |job, _, _| job.recipient.as_str().into());
        column("provider", |_, sent, _| sent.provider.into());
        column("provider_message_id", |_, sent, _| {
            sent.provider_message_id.as_str().into()
        });
        column("body", |job, _, _| job.outgoing.text.as_str().into());
        column("segments", |job, _, _| job.segments.into());
        sql.push(", last_error = NULL, lease_until = NULL, leased_by = NULL WHERE id IN ")
            .bind_list(sent.iter().map(|(job, _)| job.message.id))
            .push(" AND state = 'sending' AND leased_by = ")
            .bind(self.worker.as_str())
            .push(" RETURNING id");
        Ok(Id::find_by_statement(sql.build())
            .all(txn)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect())
    }

    /// Receipts that came before their send was recorded (a fast gateway), applied now.
    async fn apply_early_receipts(&self, sent: &[(&Job, &Sent)]) -> AppResult<()> {
        let ids: Vec<&str> = sent
            .iter()
            .map(|(_, sent)| sent.provider_message_id.as_str())
            .filter(|id| !id.is_empty())
            .collect();
        for chunk in ids.chunks(500) {
            let mut sql = Sql::new(self.backend());
            sql.push(
                "SELECT DISTINCT provider, provider_message_id FROM pending_receipts \
                 WHERE provider_message_id IN ",
            )
            .bind_list(chunk.iter().copied());
            for row in EarlyReceipt::find_by_statement(sql.build())
                .all(&self.db)
                .await?
            {
                let EarlyReceipt {
                    provider,
                    provider_message_id: id,
                } = row;
                if sent
                    .iter()
                    .any(|(_, s)| s.provider == provider && s.provider_message_id == id)
                {
                    crate::flows::replies::apply_pending_for(&self.db, &provider, &id).await?;
                }
            }
        }
        Ok(())
    }

    async fn write_error(
        &self,
        txn: &DatabaseTransaction,
        job: &Job,
        error: &SendError,
        now: DateTime<Utc>,
    ) -> AppResult<()> {
        let step = job.route.index() as i32;
        // An earlier attempt may have reached the provider, which cannot say: with no other
        // channel to go on to, the message ends failed as "outcome unknown", as a dead
        // worker's does — for a person to re-send, or for its receipt to show it went out.
        if let SendError::Permanent(reason) = error
            && reason.starts_with("outcome_unknown")
            && job.last_route
        {
            let mut sql = Sql::new(self.backend());
            sql.push("UPDATE messages SET state = 'failed', failed_at = ")
                .bind(now)
                .push(", last_error = ")
                .bind(truncate(reason, 500))
                .push(", lease_until = NULL, leased_by = NULL WHERE id = ")
                .bind(job.message.id)
                .push(" AND state = 'sending' AND leased_by = ")
                .bind(self.worker.as_str());
            txn.execute_raw(sql.build()).await?;
            return Ok(());
        }
        let mut sql = Sql::new(self.backend());
        sql.push("UPDATE messages SET state = 'queued', last_error = ")
            .bind(truncate(&format!("{}: {error}", job.channel.name()), 500))
            .push(", route = ")
            .bind(job.message.route.as_deref())
            .push(", lease_until = NULL, leased_by = NULL, ");
        // An unknown outcome is retried on the same channel, which then first asks the
        // provider whether it has the message (or, if it de-duplicates, just sends again).
        // After `max_attempts` the plan moves on to its next channel; where there is none,
        // the same channel is tried again (its backoff capped) until the message expires
        // rather than the resident being given up on during a provider's outage.
        let retry = matches!(error, SendError::Transient(_) | SendError::Unknown(_))
            && (job.message.attempts < self.settings.max_attempts as i32 || job.last_route);
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
        txn.execute_raw(sql.build()).await?;
        // A WeChat user who blocked the account, a number on the operator's block list: the
        // resident has opted out of that channel.
        if let SendError::Permanent(reason) = error
            && reason.starts_with("opted_out")
        {
            crate::registry::consent::opt_out_route(txn, job.message.resident_id, job.route)
                .await?;
        }
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
            crate::outreach::tasks::create(
                &txn,
                crate::outreach::tasks::NewTask {
                    campaign_id: message.campaign_id,
                    resident_id: resident.id,
                    village_code: resident.village_code.clone(),
                    kind: crate::outreach::tasks::TaskKind::Unreachable,
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

    #[tokio::test]
    async fn every_channel_is_held_to_its_providers_configured_rate() {
        let smtp = crate::outreach::channel::SmtpSettings {
            host: "127.0.0.1".to_owned(),
            port: 25,
            security: crate::outreach::channel::SmtpSecurity::None,
            username: None,
            password: None,
            from: "卫健委 <tijian@example.org>".to_owned(),
            timeout_secs: 1,
        };
        let email: Arc<dyn Channel> = Arc::new(crate::outreach::EmailChannel::new(&smtp).unwrap());
        let log: Arc<dyn Channel> = Arc::new(LogChannel {
            simulate_receipts: false,
        });
        let mut rates = OutboxSettings::default().rate_per_second;
        rates.insert("log".to_owned(), 7);
        let channels = Channels::new(None, Some(log), Some(email), &rates);
        assert_eq!(
            channels.rate_of(Route::Email),
            Some(20),
            "the documented e-mail limit"
        );
        assert_eq!(channels.rate_of(Route::Phone), Some(7));
        assert_eq!(channels.rate_of(Route::WeChat), None);
    }

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
