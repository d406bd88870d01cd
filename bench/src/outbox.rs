//! The `plan` and `dispatch` scenarios: planning a migrant wave over a whole registry (one
//! set-based statement), and draining the outbox through the real dispatcher into a local
//! stand-in for the Jasmin SMS gateway's HTTP API — with one dispatcher, and on PostgreSQL
//! also with two dispatcher processes leasing from the same outbox.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Datelike, Duration, NaiveDate, Utc};
use futures_util::StreamExt;
use outreach::auth::Actor;
use outreach::campaign::{self, DateRange, NewCampaign, PhaseDates, QuietHours};
use outreach::config::{DatabaseUrl, Secret, Settings};
use outreach::outreach::channel::{JasminSettings, ucs2_hex};
use outreach::outreach::outbox::OutboxSettings;
use outreach::outreach::waves::{self, Audience, NewWave};
use outreach::outreach::{Channel, JasminChannel};
use outreach::privacy::Privacy;
use outreach::workers::dispatch::{Channels, Dispatcher, Round};
use outreach::{db, flows};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::json;
use testkit::jasmin::{SINK_PASSWORD, SINK_USER, Sink};

use super::campaign_bench::{Population, seed_residents};
use super::{areas_csv, bench_database, drop_database, peak_rss_mb, round};

const VILLAGES: u32 = 240;
/// How the parent hands the data key to its dispatcher processes (never on the command
/// line, where `ps` would show it).
pub const KEY_ENV: &str = "OUTREACH_BENCH_PRIVACY_KEY";

/// `"sqlite"` or `"postgres"`.
fn backend_of(database: &DatabaseConnection) -> &'static str {
    match database.get_database_backend() {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

/// Settings over `url` with the data key `key` (base64).
fn settings_for(url: &str, key: &str) -> Settings {
    let mut settings = Settings {
        database_url: DatabaseUrl::new(url),
        ..Settings::default()
    };
    settings.privacy.key = Some(Secret::new(key));
    settings.scheduler.enabled = false;
    settings
}

async fn connect(url: &str, key: &str) -> anyhow::Result<(Settings, DatabaseConnection)> {
    let settings = settings_for(url, key);
    let database = db::connect_and_migrate(&settings).await?;
    flows::areas::import_areas(&database, &Actor::cli(), areas_csv(VILLAGES).as_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("areas: {e}"))?;
    Ok((settings, database))
}

const MIGRANT_TYPES: [&str; 4] = [
    "in_region_permit",
    "in_region_no_permit",
    "out_of_region",
    "student_away",
];

/// This year's campaign, open, with an exam window from 1 January to four months from today.
async fn open_campaign(
    database: &DatabaseConnection,
    quiet_hours: Option<QuietHours>,
) -> anyhow::Result<i32> {
    let today = outreach::time::today();
    let jan1 = NaiveDate::from_ymd_opt(today.year(), 1, 1).expect("valid date");
    let range = |from, to| Some(DateRange { from, to });
    let day = |n| today + Duration::days(n);
    let new = NewCampaign {
        year: today.year(),
        name: None,
        reference_date: Some(jan1),
        timezone: Some("Asia/Shanghai".to_owned()),
        quiet_hours,
        cohorts: None,
        targets: None,
        phases: PhaseDates {
            survey: range(jan1, jan1),
            kickoff: range(jan1, jan1),
            exams: range(jan1, day(120)),
            catch_up: range(day(121), day(130)),
            acceptance: range(day(131), day(140)),
        },
        refusal_rule: None,
    };
    let id = flows::campaigns::create(database, &Actor::cli(), new)
        .await
        .map_err(|e| anyhow::anyhow!("campaign: {e}"))?
        .id();
    flows::campaigns::open(database, &Actor::cli(), id)
        .await
        .map_err(|e| anyhow::anyhow!("open: {e}"))?;
    Ok(id)
}

/// Creates a wave to every migrant of the county, going now, for a holiday window of a
/// month: what `POST /api/v1/campaigns/{id}/waves` runs.
async fn plan_county_wave(
    database: &DatabaseConnection,
    campaign_id: i32,
) -> anyhow::Result<waves::WaveView> {
    outreach::flows::messaging::waves::create(
        database,
        &Actor::cli(),
        campaign_id,
        county_wave("春节回乡体检"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("wave: {e}"))
}

/// A wave to every migrant of the county, going now, for a holiday window of a month.
fn county_wave(name: &str) -> NewWave {
    let today = outreach::time::today();
    NewWave {
        name: name.to_owned(),
        audience: Audience::default(),
        window_from: today,
        window_to: today + Duration::days(30),
        send_at: None,
    }
}

async fn count(database: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    Ok(database
        .query_one_raw(Statement::from_string(database.get_database_backend(), sql))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// plan

pub async fn plan(residents: u64, migrant_percent: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_plan(&url, residents, migrant_percent).await;
    drop_database(cleanup).await?;
    result
}

async fn run_plan(url: &str, residents: u64, migrant_percent: u64) -> anyhow::Result<()> {
    let (_, database) = connect(url, &outreach::privacy::new_key_base64()).await?;
    let migrants = seed_residents(
        &database,
        &Population {
            residents,
            migrant_percent,
            migrant_types: &MIGRANT_TYPES,
            phones: None,
        },
    )
    .await?;
    let campaign_id = open_campaign(&database, None).await?;

    // Timed: what `POST /api/v1/campaigns/{id}/waves` runs — the wave row, one INSERT … SELECT
    // over the progress rows, the audit record, one transaction; then the wave is read back
    // with its messages counted by state.
    let started = Instant::now();
    let wave = plan_county_wave(&database, campaign_id).await?;
    let seconds = started.elapsed().as_secs_f64();
    let planned = u64::try_from(wave.planned)?;
    anyhow::ensure!(
        planned == migrants,
        "planned {planned} messages for {migrants} migrants"
    );

    // The read-back alone, to tell it apart from planning.
    let started = Instant::now();
    waves::get(&database, &Actor::cli(), wave.id)
        .await
        .map_err(|e| anyhow::anyhow!("wave: {e}"))?;
    let read_back_seconds = started.elapsed().as_secs_f64();

    // Planning the same wave again (what the `plan_waves` job does every hour) adds nothing.
    let campaign = campaign::get(&database, campaign_id)
        .await
        .map_err(|e| anyhow::anyhow!("campaign: {e}"))?;
    let again = waves::Wave {
        id: wave.id,
        campaign_id,
        audience: wave.audience.clone(),
        send_at: wave.send_at,
        expires_at: wave.expires_at,
    };
    let started = Instant::now();
    let replanned = waves::plan(&database, &campaign, &again, Utc::now())
        .await
        .map_err(|e| anyhow::anyhow!("replan: {e}"))?;
    let replan_seconds = started.elapsed().as_secs_f64();
    let rows = count(&database, "SELECT COUNT(*) AS n FROM messages").await?;
    anyhow::ensure!(
        replanned == 0 && rows == planned as i64,
        "planning again wrote {replanned} rows ({rows} in the outbox)"
    );
    println!(
        "{}",
        json!({
            "bench": "plan",
            "backend": backend_of(&database),
            "items": planned,
            "seconds": round(seconds),
            "per_sec": (planned as f64 / seconds).round(),
            "residents": residents,
            "read_back_seconds": round(read_back_seconds),
            "replanned": replanned,
            "replan_seconds": round(replan_seconds),
            "peak_rss_mb": round(peak_rss_mb()),
        })
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// dispatch: the runs

/// What the dispatchers are given.
#[derive(Clone, Copy)]
pub struct DispatchOptions {
    pub messages: u64,
    pub batch: u32,
    pub concurrency: usize,
    /// The dispatcher's own connection pool (the service's default is 10).
    pub connections: u32,
}

fn outbox_settings(options: &DispatchOptions) -> OutboxSettings {
    OutboxSettings {
        batch: options.batch,
        concurrency: options.concurrency,
        // No provider limit: the benchmark measures the outbox, not a quota.
        rate_per_second: BTreeMap::new(),
        ..OutboxSettings::default()
    }
}

fn jasmin_settings(sink_url: &str) -> JasminSettings {
    JasminSettings {
        url: sink_url.to_owned(),
        username: SINK_USER.to_owned(),
        password: Secret::new(SINK_PASSWORD),
        dlr_url: None,
        timeout_secs: 10,
    }
}

/// A dispatcher built the way `outreach dispatch` builds one, with the Jasmin channel on the
/// phone routes only.
fn dispatcher(
    settings: &Settings,
    database: DatabaseConnection,
    sink_url: &str,
    options: &DispatchOptions,
) -> anyhow::Result<Dispatcher> {
    let privacy = Arc::new(Privacy::load(settings)?);
    let templates = Arc::new(outreach::startup::load_templates(&settings.messaging)?);
    let sms: Arc<dyn Channel> = Arc::new(JasminChannel::new(&jasmin_settings(sink_url))?);
    let channels = Channels::new(None, Some(sms), None, &BTreeMap::new());
    Ok(Dispatcher::new(
        database,
        privacy,
        templates,
        Arc::new(channels),
        outbox_settings(options),
    ))
}

/// The dispatcher's own pool over the bench database.
async fn dispatcher_pool(
    settings: &Settings,
    options: &DispatchOptions,
) -> anyhow::Result<DatabaseConnection> {
    let mut settings = settings.clone();
    settings.database.max_connections = options.connections.max(1);
    db::connect(&settings).await
}

/// Quiet hours of one minute, twelve hours from now in Beijing time: never in the way.
fn quiet_hours_far_from_now() -> QuietHours {
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().expect("a known zone");
    let start = (Utc::now().with_timezone(&tz) + Duration::hours(12)).time();
    let end = start + Duration::minutes(1);
    QuietHours {
        start: start.format("%H:%M").to_string(),
        end: end.format("%H:%M").to_string(),
    }
}

/// One measured run on a fresh database.
struct DispatchRun {
    backend: &'static str,
    seconds: f64,
    sent: i64,
    received: u64,
    duplicates: u64,
    rejected: u64,
    round: Round,
    /// One text as it went out, for the baseline's requests.
    body: String,
}

pub async fn dispatch(options: DispatchOptions) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let first = dispatch_on_fresh_database(&sink, &options, 1).await?;
    let baseline_per_sec = baseline(&sink, &options, &first.body).await?;
    print_dispatch(&first, &options, 1, baseline_per_sec);
    if first.backend == "postgres" {
        let second = dispatch_on_fresh_database(&sink, &options, 2).await?;
        print_dispatch(&second, &options, 2, baseline_per_sec);
    }
    Ok(())
}

fn print_dispatch(run: &DispatchRun, options: &DispatchOptions, dispatchers: u32, baseline: f64) {
    let per_sec = run.received as f64 / run.seconds;
    println!(
        "{}",
        json!({
            "bench": "dispatch",
            "backend": run.backend,
            "items": options.messages,
            "seconds": round(run.seconds),
            "per_sec": per_sec.round(),
            "baseline_per_sec": baseline.round(),
            "ratio": round(baseline / per_sec),
            "duplicates": run.duplicates,
            "received": run.received,
            "rejected": run.rejected,
            "sent_in_outbox": run.sent,
            "retried": run.round.retried,
            "failed": run.round.failed,
            "dispatchers": dispatchers,
            "batch": options.batch,
            "concurrency": options.concurrency,
            "connections": options.connections,
            "peak_rss_mb": round(peak_rss_mb()),
        })
    );
}

async fn dispatch_on_fresh_database(
    sink: &Sink,
    options: &DispatchOptions,
    dispatchers: u32,
) -> anyhow::Result<DispatchRun> {
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_dispatch(&url, sink, options, dispatchers).await;
    drop_database(cleanup).await?;
    result
}

async fn run_dispatch(
    url: &str,
    sink: &Sink,
    options: &DispatchOptions,
    dispatchers: u32,
) -> anyhow::Result<DispatchRun> {
    let key = outreach::privacy::new_key_base64();
    let (settings, database) = connect(url, &key).await?;
    let privacy = Arc::new(Privacy::load(&settings)?);
    let migrants = seed_residents(
        &database,
        &Population {
            residents: options.messages,
            migrant_percent: 100,
            migrant_types: &MIGRANT_TYPES,
            phones: Some(privacy),
        },
    )
    .await?;
    let campaign_id = open_campaign(&database, Some(quiet_hours_far_from_now())).await?;
    let wave = plan_county_wave(&database, campaign_id).await?;
    anyhow::ensure!(
        u64::try_from(wave.planned)? == migrants && migrants == options.messages,
        "planned {} messages for {} residents",
        wave.planned,
        options.messages
    );
    sink.reset();

    // Timed: every due message leased, rendered, sent to the gateway and its result
    // committed, until nothing is due.
    let in_process = if dispatchers == 1 {
        let pool = dispatcher_pool(&settings, options).await?;
        Some(dispatcher(&settings, pool, &sink.url(), options)?)
    } else {
        None
    };
    let started = Instant::now();
    let round = if let Some(dispatcher) = &in_process {
        dispatcher
            .drain()
            .await
            .map_err(|e| anyhow::anyhow!("dispatch: {e}"))?
    } else {
        run_worker_processes(url, &key, &sink.url(), options, dispatchers).await?
    };
    let seconds = started.elapsed().as_secs_f64();

    let sent = count(
        &database,
        "SELECT COUNT(*) AS n FROM messages WHERE state = 'sent'",
    )
    .await?;
    let body = database
        .query_one_raw(Statement::from_string(
            database.get_database_backend(),
            "SELECT body FROM messages WHERE state = 'sent' ORDER BY id LIMIT 1",
        ))
        .await?
        .map(|row| row.try_get::<String>("", "body"))
        .transpose()?
        .unwrap_or_default();
    let run = DispatchRun {
        backend: backend_of(&database),
        seconds,
        sent,
        received: sink.received(),
        duplicates: sink.duplicates(),
        rejected: sink.rejected(),
        round,
        body,
    };
    database.close().await?;
    anyhow::ensure!(
        run.sent == options.messages as i64
            && run.received == options.messages
            && run.duplicates == 0
            && run.rejected == 0,
        "{} sent in the outbox, {} received, {} duplicates, {} rejected, for {} messages",
        run.sent,
        run.received,
        run.duplicates,
        run.rejected,
        options.messages
    );
    Ok(run)
}

/// Starts `n` copies of this program as dispatcher processes over the same database, waits
/// for all of them and adds up their rounds.
async fn run_worker_processes(
    url: &str,
    key: &str,
    sink_url: &str,
    options: &DispatchOptions,
    n: u32,
) -> anyhow::Result<Round> {
    let program = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..n {
        children.push(
            std::process::Command::new(&program)
                .arg("dispatch-worker")
                .args(["--database-url", url, "--sink-url", sink_url])
                .args(["--batch", &options.batch.to_string()])
                .args(["--concurrency", &options.concurrency.to_string()])
                .args(["--connections", &options.connections.to_string()])
                .env(KEY_ENV, key)
                .stdout(Stdio::piped())
                .spawn()?,
        );
    }
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(std::process::Child::wait_with_output)
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await??;
    let mut total = Round::default();
    for output in outputs {
        anyhow::ensure!(output.status.success(), "a dispatcher process failed");
        let round: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let field = |name: &str| round[name].as_u64().unwrap_or(0);
        total.leased += field("leased");
        total.sent += field("sent");
        total.retried += field("retried");
        total.failed += field("failed");
    }
    Ok(total)
}

/// One dispatcher process (the hidden `dispatch-worker` scenario): drains the outbox of
/// `database_url` into the sink and prints its totals as JSON.
pub async fn worker(
    database_url: &str,
    key: &str,
    sink_url: &str,
    options: DispatchOptions,
) -> anyhow::Result<()> {
    let settings = settings_for(database_url, key);
    let database = dispatcher_pool(&settings, &options).await?;
    let round = dispatcher(&settings, database, sink_url, &options)?
        .drain()
        .await
        .map_err(|e| anyhow::anyhow!("dispatch: {e}"))?;
    println!("{}", serde_json::to_string(&round)?);
    Ok(())
}

/// The same number of equivalent form requests (same fields, the same text as it went out)
/// from a plain reqwest loop with the same concurrency: what the gateway and the loopback
/// allow without an outbox.
async fn baseline(sink: &Sink, options: &DispatchOptions, body: &str) -> anyhow::Result<f64> {
    sink.reset();
    let client = outreach::outreach::http_client::http_client(std::time::Duration::from_secs(10))?;
    let url = format!("{}/send", sink.url());
    let hex = ucs2_hex(body);
    let started = Instant::now();
    let ok = futures_util::stream::iter(0..options.messages)
        .map(|n| {
            let form = [
                ("username", SINK_USER.to_owned()),
                ("password", SINK_PASSWORD.to_owned()),
                ("to", format!("86139{n:08}")),
                ("coding", "8".to_owned()),
                ("hex-content", hex.clone()),
            ];
            let request = client.post(&url).form(&form);
            async move {
                let response = request.send().await.ok()?;
                let success = response.status().is_success();
                let text = response.text().await.ok()?;
                (success && text.starts_with("Success")).then_some(())
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .filter(|r| std::future::ready(r.is_some()))
        .count()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        ok as u64 == options.messages && sink.duplicates() == 0,
        "baseline: {ok} of {} accepted",
        options.messages
    );
    sink.reset();
    Ok(options.messages as f64 / seconds)
}
