//! The `load` scenario: village cadres working at once against real `outreach serve`
//! processes — one on SQLite, three sharing one PostgreSQL — over the `report` scenario's
//! county (a million residents a month into its campaign). Each session is a signed-in cadre
//! of one village who, after a pause to read (the think time), opens the worklist page,
//! opens a resident's page, logs a contact attempt, books a resident, or — standing in for
//! the residents — a resident's own link is opened. Latency per request kind (p50 / p95 /
//! p99), the answers by status, the instances' CPU and memory, and the places booked beyond
//! capacity afterwards (must be 0).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration as Elapsed, Instant};

use chrono::Duration;
use entities::users::Role;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use outreach::db::Sql;
use outreach::outreach::links;
use outreach::startup::Application;
use sea_orm::{DatabaseConnection, FromQueryResult};
use serde_json::{Value, json};

use super::campaign_bench::places_over_capacity;
use super::dashboard_bench::session;
use super::report_bench::{County, backend_of, set_up, settings, step};
use super::worklist_bench::percentiles;
use super::{Rng, bench_database, drop_database, memory_mb, round, village_code};

/// The p95 target of every request kind (issue 20), in ms.
const TARGET_MS: f64 = 200.0;
/// Open residents of a village the sessions work on (read once, before the run).
const PER_VILLAGE: usize = 400;
/// Residents with a booked appointment whose own link is opened.
const LINKS: u64 = 5_000;
/// Villages of the `report` county.
const VILLAGES: u32 = 240;

/// Options of the `load` scenario.
pub struct LoadOptions {
    pub county: County,
    pub sessions: usize,
    pub seconds: u64,
    /// `serve` processes (default: 1 on SQLite, 3 on PostgreSQL).
    pub instances: Option<usize>,
    /// Mean pause between a session's requests.
    pub think_ms: u64,
}

pub async fn load(options: LoadOptions) -> anyhow::Result<()> {
    anyhow::ensure!(options.sessions > 0, "--sessions must be at least 1");
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_load(&url, &options, dir.path()).await;
    drop_database(cleanup).await?;
    result
}

/// What a request does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Kind {
    Worklist,
    Resident,
    Attempt,
    Booking,
    Link,
}

impl Kind {
    /// The mix, in percent: reading lists and residents most, writing less.
    const MIX: [(Kind, u64); 5] = [
        (Kind::Worklist, 30),
        (Kind::Resident, 25),
        (Kind::Attempt, 20),
        (Kind::Booking, 10),
        (Kind::Link, 15),
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Worklist => "worklist",
            Kind::Resident => "resident",
            Kind::Attempt => "attempt",
            Kind::Booking => "booking",
            Kind::Link => "link",
        }
    }

    fn path(self, campaign: i32) -> String {
        match self {
            Kind::Worklist => "GET /m/".to_owned(),
            Kind::Resident => "GET /m/residents/{id}".to_owned(),
            Kind::Attempt => {
                format!("POST /api/v1/campaigns/{campaign}/residents/{{id}}/attempts")
            }
            Kind::Booking => format!("POST /api/v1/campaigns/{campaign}/bookings"),
            Kind::Link => "GET /r/{code}".to_owned(),
        }
    }

    fn pick(rng: &mut Rng) -> Kind {
        let mut roll = rng.below(100);
        for (kind, share) in Kind::MIX {
            if roll < share {
                return kind;
            }
            roll -= share;
        }
        Kind::Worklist
    }
}

/// One answered (or unanswered: status 0) request.
struct Sample {
    kind: Kind,
    elapsed: Elapsed,
    status: u16,
}

/// A signed-in cadre and the residents of her village she works on.
struct Session {
    index: usize,
    cookie: String,
    token: String,
    base: String,
    village: Vec<i32>,
    /// Residents only this session books (so two sessions never book the same one).
    to_book: Vec<i32>,
}

/// What every session shares.
struct Shared {
    client: reqwest::Client,
    campaign: i32,
    institution: i32,
    today: chrono::NaiveDate,
    codes: Vec<String>,
    think: Elapsed,
    until: Instant,
}

#[derive(FromQueryResult)]
struct Open {
    resident_id: i32,
    village_code: String,
}

#[derive(FromQueryResult)]
struct Pair {
    campaign_id: i32,
    resident_id: i32,
}

/// A `serve` process of the run.
struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on the loopback address.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `outreach serve` (the binary beside this one) on `url` with the data key `key`,
/// and waits until `/healthz` answers.
async fn start_instance(
    url: &str,
    key: &str,
    dir: &Path,
    n: usize,
    client: &reqwest::Client,
) -> anyhow::Result<Instance> {
    let binary = std::env::current_exe()?.with_file_name("outreach");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release --bins`",
        binary.display()
    );
    let port = free_port()?;
    let log = std::fs::File::create(dir.join(format!("serve-{n}.log")))?;
    let child = Command::new(&binary)
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("OUTREACH_BIND", format!("127.0.0.1:{port}"))
        .env("OUTREACH_PRIVACY__KEY", key)
        .env("OUTREACH_SCHEDULER__ENABLED", "false")
        .env("OUTREACH_LOG__FILTER", "warn")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let instance = Instance {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    loop {
        let up = client
            .get(format!("{}/healthz", instance.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            return Ok(instance);
        }
        anyhow::ensure!(
            started.elapsed() < Elapsed::from_secs(120),
            "serve {n} did not answer /healthz within 120 s (see {})",
            dir.join(format!("serve-{n}.log")).display()
        );
        tokio::time::sleep(Elapsed::from_millis(200)).await;
    }
}

/// A process's CPU time so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Elapsed {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The fields after the command name, which is in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
    Elapsed::from_millis(ticks * 10)
}

/// The CPU time so far of every process named `postgres` on this machine (the server and
/// its backends; a backend that exits takes its time with it).
fn postgres_cpu_time() -> Elapsed {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Elapsed::ZERO;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_time)
        .sum()
}

/// The open residents (not appointed, examined, refused or exempt) of each village, at most
/// [`PER_VILLAGE`] each.
async fn open_residents(
    database: &DatabaseConnection,
    campaign: i32,
) -> anyhow::Result<HashMap<String, Vec<i32>>> {
    let mut sql = Sql::new(database.get_database_backend());
    sql.push("SELECT resident_id, village_code FROM enrolments WHERE campaign_id = ")
        .bind(campaign)
        .push(" AND stage IN ('target', 'notified', 'reached') ORDER BY resident_id");
    let mut villages: HashMap<String, Vec<i32>> = HashMap::new();
    for row in Open::find_by_statement(sql.build()).all(database).await? {
        let list = villages.entry(row.village_code).or_default();
        if list.len() < PER_VILLAGE {
            list.push(row.resident_id);
        }
    }
    Ok(villages)
}

/// The link codes of residents with a booked appointment.
async fn link_codes(
    database: &DatabaseConnection,
    privacy: &outreach::privacy::Privacy,
    campaign: i32,
) -> anyhow::Result<Vec<String>> {
    let mut sql = Sql::new(database.get_database_backend());
    sql.push("SELECT campaign_id, resident_id FROM appointments WHERE campaign_id = ")
        .bind(campaign)
        .push(" AND status = 'booked' ORDER BY id LIMIT ")
        .bind(LINKS as i64);
    let pairs: Vec<(i32, i32)> = Pair::find_by_statement(sql.build())
        .all(database)
        .await?
        .into_iter()
        .map(|p| (p.campaign_id, p.resident_id))
        .collect();
    let codes = links::ensure(database, privacy, &pairs)
        .await
        .map_err(|e| anyhow::anyhow!("links: {e}"))?;
    Ok(codes.into_values().collect())
}

/// One request of a session; the status it was answered with (0: no answer).
async fn request(
    shared: &Shared,
    session: &mut Session,
    kind: Kind,
    rng: &mut Rng,
    n: u64,
) -> (Kind, u16) {
    let client = &shared.client;
    let base = &session.base;
    let resident = session.village[rng.below(session.village.len() as u64) as usize];
    let campaign = shared.campaign;
    // Nobody left to book: the cadre opens her worklist instead.
    let kind = if kind == Kind::Booking && session.to_book.is_empty() {
        Kind::Worklist
    } else {
        kind
    };
    let sent = match kind {
        Kind::Worklist => client
            .get(format!("{base}/m/"))
            .header("cookie", &session.cookie)
            .send(),
        Kind::Resident => client
            .get(format!("{base}/m/residents/{resident}"))
            .header("cookie", &session.cookie)
            .send(),
        Kind::Attempt => client
            .post(format!(
                "{base}/api/v1/campaigns/{campaign}/residents/{resident}/attempts"
            ))
            .bearer_auth(&session.token)
            .json(&json!({
                "channel": "phone_call",
                "contact": "own_phone",
                "outcome": "no_answer",
                "client_key": format!("load-{}-{n}", session.index),
            }))
            .send(),
        Kind::Booking => {
            let booked = session.to_book.pop().unwrap_or(resident);
            let day = shared.today + Duration::days(1 + rng.below(28) as i64);
            client
                .post(format!("{base}/api/v1/campaigns/{campaign}/bookings"))
                .bearer_auth(&session.token)
                .json(&json!({
                    "institution_id": shared.institution,
                    "day": day,
                    "resident_ids": [booked],
                    "client_key": format!("load-{}-{n}", session.index),
                }))
                .send()
        }
        Kind::Link => {
            let code = &shared.codes[rng.below(shared.codes.len() as u64) as usize];
            client.get(format!("{base}/r/{code}")).send()
        }
    };
    let status = match sent.await {
        // The whole body read, as a phone would.
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(_) => status,
                Err(_) => 0,
            }
        }
        Err(_) => 0,
    };
    (kind, status)
}

/// A session's requests until the run ends, each after a pause of half to one and a half
/// times the think time.
async fn work(shared: Arc<Shared>, mut session: Session) -> Vec<Sample> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (session.index as u64 + 1));
    let think_ms = shared.think.as_millis().max(1) as u64;
    let mut samples = Vec::new();
    // Sessions start spread over one think time.
    tokio::time::sleep(Elapsed::from_millis(rng.below(think_ms))).await;
    let mut n = 0;
    while Instant::now() < shared.until {
        n += 1;
        let kind = Kind::pick(&mut rng);
        let started = Instant::now();
        let (kind, status) = request(&shared, &mut session, kind, &mut rng, n).await;
        samples.push(Sample {
            kind,
            elapsed: started.elapsed(),
            status,
        });
        let pause = think_ms / 2 + rng.below(think_ms);
        tokio::time::sleep(Elapsed::from_millis(pause)).await;
    }
    samples
}

async fn run_load(url: &str, options: &LoadOptions, dir: &Path) -> anyhow::Result<()> {
    let all = Instant::now();
    let mut settings = settings(url);
    settings.bind = "127.0.0.1:0".parse()?;
    let key = settings
        .privacy
        .key
        .as_ref()
        .map(|k| k.expose().to_owned())
        .ok_or_else(|| anyhow::anyhow!("no data key"))?;
    let database = outreach::db::connect_and_migrate(&settings).await?;
    let backend = backend_of(&database);
    let instances = options
        .instances
        .unwrap_or(if backend == "postgres" { 3 } else { 1 });
    let setup = set_up(&database, &options.county, async |_| Ok(())).await?;
    let campaign = setup.campaign_id;
    let app = Application::build_with_db(settings, database.clone()).await?;
    let state = app.state().clone();

    let started = Instant::now();
    let mut villages = open_residents(&database, campaign).await?;
    let codes = link_codes(&database, &state.privacy, campaign).await?;
    anyhow::ensure!(!codes.is_empty(), "no booked appointment to link to");
    step(
        &format!(
            "work: open residents of {} villages, {} link codes",
            villages.len(),
            codes.len()
        ),
        started,
    );

    let client = outreach::outreach::http_client::builder()
        .pool_max_idle_per_host(options.sessions)
        .timeout(Elapsed::from_secs(30))
        .build()?;
    let started = Instant::now();
    let mut servers = Vec::new();
    for n in 0..instances {
        servers.push(start_instance(url, &key, dir, n, &client).await?);
    }
    step(&format!("{instances} serve instance(s) up"), started);

    // The cadres, signed in (as `POST /` does): a village's sessions share its residents
    // for reading and attempts, and split them for booking.
    let started = Instant::now();
    let per_village = options.sessions.div_ceil(VILLAGES as usize);
    let mut signed_in = futures_util::stream::iter(0..options.sessions)
        .map(|i| {
            let state = state.clone();
            async move {
                let area = village_code((i % VILLAGES as usize) as u32);
                let (cookie, _) =
                    session(&state, &format!("load.cadre.{i}"), Role::Cadre, &area).await?;
                anyhow::Ok((i, area, cookie))
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    signed_in.sort_by_key(|s| s.as_ref().map(|(i, _, _)| *i).unwrap_or(0));
    let mut sessions = Vec::new();
    for signed in signed_in {
        let (i, area, cookie) = signed?;
        let village = villages.entry(area.clone()).or_default();
        anyhow::ensure!(!village.is_empty(), "no open resident in {area}");
        let rank = i / VILLAGES as usize;
        let to_book = village
            .iter()
            .copied()
            .skip(rank)
            .step_by(per_village)
            .take(PER_VILLAGE / 4)
            .collect();
        let token = cookie
            .split_once('=')
            .map(|(_, t)| t.to_owned())
            .unwrap_or_default();
        sessions.push(Session {
            index: i,
            cookie,
            token,
            base: servers[i % servers.len()].base.clone(),
            village: village.clone(),
            to_book,
        });
    }
    step(&format!("{} cadres signed in", sessions.len()), started);
    eprintln!("set-up: all in {:.1} s", all.elapsed().as_secs_f64());

    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let cpu_before: Vec<Elapsed> = pids.iter().map(|&p| cpu_time(p)).collect();
    let own_before = cpu_time(std::process::id());
    let postgres_before = postgres_cpu_time();
    let run = Elapsed::from_secs(options.seconds);
    let shared = Arc::new(Shared {
        client,
        campaign,
        institution: setup.hospital,
        today: outreach::time::today(),
        codes,
        think: Elapsed::from_millis(options.think_ms),
        until: Instant::now() + run,
    });
    let began = Instant::now();
    let mut running: FuturesUnordered<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(work(shared.clone(), s)))
        .collect();
    let mut samples = Vec::new();
    while let Some(done) = running.next().await {
        samples.extend(done?);
    }
    let seconds = began.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(&p, before)| {
            round(cpu_time(p).saturating_sub(*before).as_secs_f64() / seconds * 100.0)
        })
        .collect();
    let postgres_cpu = postgres_cpu_time()
        .saturating_sub(postgres_before)
        .as_secs_f64()
        / seconds
        * 100.0;
    let own_cpu = cpu_time(std::process::id())
        .saturating_sub(own_before)
        .as_secs_f64()
        / seconds
        * 100.0;
    let rss: Vec<Value> = pids
        .iter()
        .zip(&cpu)
        .map(|(&p, cpu)| {
            json!({"cpu_percent": cpu, "rss_mb": round(memory_mb(&p.to_string(), "VmRSS:")),
                   "peak_rss_mb": round(memory_mb(&p.to_string(), "VmHWM:"))})
        })
        .collect();
    drop(servers);

    // One line per kind of request.
    let mut by_kind: HashMap<Kind, Vec<&Sample>> = HashMap::new();
    for s in &samples {
        by_kind.entry(s.kind).or_default().push(s);
    }
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by_key(|(k, _)| *k);
    let mut misses = Vec::new();
    let mut server_errors = 0;
    for (kind, list) in &kinds {
        let durations: Vec<Elapsed> = list.iter().map(|s| s.elapsed).collect();
        let [p50, p95, p99, max] = percentiles(&durations);
        let mut statuses: HashMap<String, usize> = HashMap::new();
        for s in list {
            let label = if s.status == 0 {
                "no_answer".to_owned()
            } else {
                s.status.to_string()
            };
            *statuses.entry(label).or_default() += 1;
        }
        let failed = list
            .iter()
            .filter(|s| s.status == 0 || s.status >= 500)
            .count();
        server_errors += failed;
        if p95 > TARGET_MS {
            misses.push(kind.name());
        }
        println!(
            "{}",
            json!({
                "bench": format!("load_{}", kind.name()),
                "backend": backend,
                "path": kind.path(campaign),
                "items": list.len(),
                "seconds": round(seconds),
                "per_sec": round(list.len() as f64 / seconds),
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "max_ms": max,
                "target_p95_ms": TARGET_MS,
                "met": p95 <= TARGET_MS && failed == 0,
                "statuses": statuses,
            })
        );
    }
    let over = places_over_capacity(&database).await?;
    println!(
        "{}",
        json!({
            "bench": "load",
            "backend": backend,
            "instances": instances,
            "sessions": options.sessions,
            "think_ms": options.think_ms,
            "residents": options.county.residents,
            "items": samples.len(),
            "seconds": round(seconds),
            "per_sec": round(samples.len() as f64 / seconds),
            "errors_5xx_or_no_answer": server_errors,
            "over_capacity": over,
            "serve": rss,
            "client_cpu_percent": round(own_cpu),
            // Of the machine's PostgreSQL processes (0 on SQLite).
            "postgres_cpu_percent": round(postgres_cpu),
        })
    );
    anyhow::ensure!(over == 0, "{over} places booked beyond capacity");
    anyhow::ensure!(
        server_errors == 0,
        "{server_errors} requests answered 5xx or not at all"
    );
    if !misses.is_empty() {
        eprintln!("p95 over {TARGET_MS} ms: {}", misses.join(", "));
    }
    Ok(())
}
