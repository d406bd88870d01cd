//! The `report` scenario: the office's reports over a county a month into its campaign — the
//! live cube rebuilt from the progress rows and the reach figures, the closed days computed,
//! then the county progress by township, one village, the 30-day series and the XLSX
//! download, each asked for many times (p50 / p95).

use std::time::{Duration as Elapsed, Instant};

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};
use entities::users::Role;
use outreach::area::AreaCode;
use outreach::auth::{Actor, Scope};
use outreach::campaign::{self, Campaign};
use outreach::config::{DatabaseUrl, Secret, Settings};
use outreach::db::Sql;
use outreach::report::{self, SeriesQuery, SliceQuery, cube, export};
use outreach::{db, flows, institution};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use serde_json::{Value, json};

use super::campaign_bench::{Population, seed_residents};
use super::{areas_csv, bench_database, drop_database, peak_rss_mb, round, village_code};

const VILLAGES: u32 = 240;
const COUNTY: &str = "654025000000";
/// The townships with a health centre of their own (the rest are examined at the county
/// hospital).
const CENTRES: u32 = 4;
/// Hours of synthetic history, from the whole hour 30 days ago.
const HOURS: i64 = 30 * 24;

const MIGRANT_TYPES: [&str; 4] = [
    "in_region_permit",
    "in_region_no_permit",
    "out_of_region",
    "student_away",
];

/// Options of the `report` scenario.
pub struct ReportOptions {
    pub county: County,
    pub runs: usize,
}

/// The county a month into its campaign that the `report` and `worklist` scenarios set up.
pub struct County {
    pub residents: u64,
    pub messages: u64,
    /// Appointments of the appointed and examined residents, in resident order.
    pub appointments: u64,
}

pub async fn report(options: ReportOptions) -> anyhow::Result<()> {
    anyhow::ensure!(options.runs > 0, "--runs must be at least 1");
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_report(&url, &options).await;
    drop_database(cleanup).await?;
    result
}

pub(super) fn backend_of(database: &DatabaseConnection) -> &'static str {
    match database.get_database_backend() {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

fn township_code(index: u32) -> String {
    format!("654025{:03}000", 100 + index)
}

/// Prints how long a set-up step took (stderr: stdout carries only the measurements).
pub(super) fn step(name: &str, started: Instant) {
    eprintln!("set-up: {name} in {:.1} s", started.elapsed().as_secs_f64());
}

pub(super) async fn count(database: &DatabaseConnection, sql: &Sql) -> anyhow::Result<i64> {
    Ok(database
        .query_one_raw(sql.build())
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

pub(super) async fn execute(database: &DatabaseConnection, sql: &Sql) -> anyhow::Result<u64> {
    Ok(database.execute_raw(sql.build()).await?.rows_affected())
}

/// A county office user's view: the county and everything under it.
fn county_office() -> anyhow::Result<Actor> {
    Ok(Actor {
        user_id: None,
        username: "bench.office".to_owned(),
        role: Role::Office,
        scope: Scope::Within(AreaCode::parse(COUNTY)?),
        request_id: None,
        token_id: None,
        institution_id: None,
    })
}

/// A piece of the bench's generated SQL as the `&'static str` that [`Sql::push`] takes. The
/// service pushes only text written into the program; the bench generates its synthetic
/// history from formulas over constants and column names (never from input), so it keeps
/// the few pieces it generates, once per run, for the life of its one-shot process.
pub(super) fn generated(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

// ---------------------------------------------------------------------------------------
// The synthetic history, in SQL that reads the same on SQLite and PostgreSQL. Every
// resident's fate follows from pseudo-random numbers derived from their id (two Lehmer
// generators), so a run is reproducible and the statements stay set-based.

/// The first pseudo-random number of a resident id column.
pub(super) fn u(col: &str) -> String {
    format!("(CAST({col} AS BIGINT) * 48271 % 2147483647)")
}

/// The second.
pub(super) fn v(col: &str) -> String {
    format!("(CAST({col} AS BIGINT) * 69621 % 2147483647)")
}

/// Per mille bucket deciding the resident's stage.
fn bucket(col: &str) -> String {
    format!("({} % 1000)", u(col))
}

/// Hours (from the start of the history) of each step: notified within the first 300 hours,
/// reached up to 59 hours later, appointed up to 95 hours after that, examined (or refused)
/// up to 239 hours after that — 692 hours at most, inside the 720 of the history.
fn notified_hour(col: &str) -> String {
    format!("(({} / 1000) % 300)", u(col))
}

fn reached_hour(col: &str) -> String {
    format!("({} + ({} / 300000) % 60)", notified_hour(col), u(col))
}

fn appointed_hour(col: &str) -> String {
    format!("({} + {} % 96)", reached_hour(col), v(col))
}

fn examined_hour(col: &str) -> String {
    format!("({} + ({} / 96) % 240)", appointed_hour(col), v(col))
}

/// Where the examined went: 0–5 their township's centre (when it has one), up to 8 the
/// county hospital, 9 elsewhere with evidence.
fn place(col: &str) -> String {
    format!("(({} / 23040) % 10)", v(col))
}

fn at_hour(hour: &str) -> String {
    format!("(SELECT at FROM bench_hours WHERE n = {hour})")
}

/// The stage buckets (per mille): exempt 10, refused 20, examined 600 (450 of them
/// appointed first), appointed 40, reached 90, notified 90, the rest not yet notified.
fn history_sql(backend: DbBackend, campaign_id: i32, created: DateTime<Utc>) -> Sql {
    let c = "resident_id";
    let p = bucket(c);
    let mut sql = Sql::new(backend);
    sql.push(generated(format!(
        "UPDATE enrolments SET stage = CASE WHEN {p} < 10 THEN 'exempt' \
         WHEN {p} < 30 THEN 'refused' WHEN {p} < 630 THEN 'examined' \
         WHEN {p} < 670 THEN 'appointed' WHEN {p} < 760 THEN 'reached' \
         WHEN {p} < 850 THEN 'notified' ELSE 'target' END, \
         notified_at = CASE WHEN {p} >= 10 AND {p} < 850 THEN {n} END, \
         reached_at = CASE WHEN {p} >= 10 AND {p} < 760 THEN {r} END, \
         appointed_at = CASE WHEN ({p} >= 30 AND {p} < 480) OR ({p} >= 630 AND {p} < 670) \
         THEN {a} END, \
         examined_at = CASE WHEN {p} >= 30 AND {p} < 630 THEN {x} END, \
         refused_at = CASE WHEN {p} >= 10 AND {p} < 30 THEN {x} END, \
         exempt_at = CASE WHEN {p} < 10 THEN {n} END, created_at = ",
        n = at_hour(&notified_hour(c)),
        r = at_hour(&reached_hour(c)),
        a = at_hour(&appointed_hour(c)),
        x = at_hour(&examined_hour(c)),
    )));
    sql.bind(created)
        .push(", updated_at = ")
        .bind(Utc::now())
        .push(" WHERE campaign_id = ")
        .bind(campaign_id);
    sql
}

/// `CASE` choosing the institution of an examined resident (`NULL`: elsewhere).
fn institution_case(sql: &mut Sql, col: &str, centres: &[(String, i32)], hospital: i32) {
    let w = place(col);
    sql.push(generated(format!("CASE WHEN {w} = 9 THEN NULL")));
    for (township, id) in centres {
        sql.push(generated(format!(" WHEN {w} < 6 AND e.township_code = ")))
            .bind(township.clone())
            .push(" THEN ")
            .bind(*id);
    }
    sql.push(" ELSE ").bind(hospital).push(" END");
}

/// What the set-up left, for the sanity checks.
pub(super) struct Truth {
    enrolments: i64,
    examined: i64,
    exempt: i64,
    refused: i64,
    messages: i64,
    /// Exams recorded at the township centres.
    examined_at_centres: i64,
}

pub(super) struct Setup {
    pub campaign_id: i32,
    /// The county hospital's institution id.
    pub hospital: i32,
    pub truth: Truth,
}

/// The service's settings for a run against `url`: a fresh data key, no scheduler.
pub(super) fn settings(url: &str) -> Settings {
    let mut settings = Settings {
        database_url: DatabaseUrl::new(url),
        ..Settings::default()
    };
    settings.privacy.key = Some(Secret::new(outreach::privacy::new_key_base64()));
    settings.scheduler.enabled = false;
    settings
}

async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    db::connect_and_migrate(&settings(url)).await
}

/// Sets up the county: areas, residents and key groups, then `before_open` (the registry as
/// a scenario wants it beyond that), then the campaign opened and a month of its history.
pub(super) async fn set_up(
    database: &DatabaseConnection,
    options: &County,
    before_open: impl AsyncFnOnce(&DatabaseConnection) -> anyhow::Result<()>,
) -> anyhow::Result<Setup> {
    let backend = database.get_database_backend();
    let all = Instant::now();

    let started = Instant::now();
    flows::areas::import_areas(database, &Actor::cli(), areas_csv(VILLAGES).as_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("areas: {e}"))?;
    step("areas (1 county, 12 townships, 240 villages)", started);

    let started = Instant::now();
    seed_residents(
        database,
        &Population {
            residents: options.residents,
            migrant_percent: 10,
            migrant_types: &MIGRANT_TYPES,
            phones: None,
        },
    )
    .await?;
    step(&format!("{} residents", options.residents), started);

    // Key groups: about 15 % with hypertension, 8 % with diabetes.
    let started = Instant::now();
    for (tag, percent, salt) in [("hypertension", 15, 1), ("diabetes", 8, 7)] {
        let mut sql = Sql::new(backend);
        sql.push("INSERT INTO resident_tags (resident_id, tag, created_at) SELECT id, ")
            .bind(tag)
            .push(", ")
            .bind(Utc::now())
            .push(generated(format!(
                " FROM residents WHERE ({} / {salt}) % 100 < {percent}",
                u("id")
            )));
        execute(database, &sql).await?;
    }
    step("key groups", started);

    before_open(database).await?;

    let started = Instant::now();
    let today = outreach::time::today();
    let campaign_id = flows::campaigns::create(
        database,
        &Actor::cli(),
        super::campaign_bench::new_campaign(today),
    )
    .await
    .map_err(|e| anyhow::anyhow!("campaign: {e}"))?
    .id();
    let opened = flows::campaigns::open(database, &Actor::cli(), campaign_id)
        .await
        .map_err(|e| anyhow::anyhow!("open: {e}"))?;
    step(
        &format!("campaign opened ({} enrolled)", opened.enrolled),
        started,
    );

    // A county hospital and a health centre in each of the first townships.
    let started = Instant::now();
    let new_institution =
        |code: String, name: String, kind, area: String| institution::NewInstitution {
            code,
            name,
            kind,
            area_code: area.clone(),
            daily_capacity: 300,
            closed_weekdays: Vec::new(),
            serves: vec![area],
            address: None,
        };
    let hospital = flows::institutions::create(
        database,
        &Actor::cli(),
        new_institution(
            "BENCH-CH".to_owned(),
            "县人民医院".to_owned(),
            institution::Kind::CountyHospital,
            COUNTY.to_owned(),
        ),
    )
    .await
    .map_err(|e| anyhow::anyhow!("institution: {e}"))?
    .id;
    let mut centres = Vec::new();
    for t in 0..CENTRES {
        let id = flows::institutions::create(
            database,
            &Actor::cli(),
            new_institution(
                format!("BENCH-T{}", t + 1),
                format!("第{}镇卫生院", t + 1),
                institution::Kind::TownshipCentre,
                township_code(t),
            ),
        )
        .await
        .map_err(|e| anyhow::anyhow!("institution: {e}"))?
        .id;
        centres.push((township_code(t), id));
    }
    step("institutions", started);

    // One row per hour of the history, so timestamps are written as the application
    // writes them (bound values) on either database.
    let started = Instant::now();
    let now = Utc::now();
    let opened_at = now - Duration::days(31);
    let start = (now - Duration::days(30)).duration_trunc(Duration::hours(1))?;
    let campaign = campaign::get(database, campaign_id)
        .await
        .map_err(|e| anyhow::anyhow!("campaign: {e}"))?;
    database
        .execute_unprepared(match backend {
            DbBackend::Postgres => {
                "CREATE TABLE bench_hours (n integer PRIMARY KEY, at timestamptz NOT NULL, \
                 day date NOT NULL)"
            }
            _ => "CREATE TABLE bench_hours (n INTEGER PRIMARY KEY, at TEXT NOT NULL, day TEXT NOT NULL)",
        })
        .await?;
    for chunk in (0..HOURS).collect::<Vec<_>>().chunks(240) {
        let mut sql = Sql::new(backend);
        sql.push("INSERT INTO bench_hours (n, at, day) VALUES ");
        for (i, n) in chunk.iter().enumerate() {
            let at = start + Duration::hours(*n);
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .bind(*n as i32)
                .push(", ")
                .bind(at)
                .push(", ")
                .bind(cube::local_day(&campaign, at))
                .push(")");
        }
        execute(database, &sql).await?;
    }

    // Opened 31 days ago; every progress row moved along over the last 30 days.
    let mut sql = Sql::new(backend);
    sql.push("UPDATE campaigns SET opened_at = ")
        .bind(opened_at)
        .push(", created_at = ")
        .bind(opened_at)
        .push(" WHERE id = ")
        .bind(campaign_id);
    execute(database, &sql).await?;
    execute(database, &history_sql(backend, campaign_id, opened_at)).await?;
    step(
        "history of the progress rows (stages and their times)",
        started,
    );

    // Exam records: every examined resident, at their township's centre, the county
    // hospital, or elsewhere with evidence.
    let started = Instant::now();
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO exam_records (campaign_id, resident_id, examined_on, institution_id, \
         source, place, recorded_by_name, created_at) SELECT e.campaign_id, e.resident_id, \
         h.day, ",
    );
    institution_case(&mut sql, "e.resident_id", &centres, hospital);
    sql.push(generated(format!(
        ", CASE WHEN {w} = 9 THEN 'elsewhere' ELSE 'institution' END, \
         CASE WHEN {w} = 9 THEN '乌鲁木齐市' END, 'bench', e.examined_at \
         FROM enrolments e JOIN bench_hours h ON h.n = {x} \
         WHERE e.stage = 'examined' AND e.campaign_id = ",
        w = place("e.resident_id"),
        x = examined_hour("e.resident_id"),
    )));
    sql.bind(campaign_id);
    let exams = execute(database, &sql).await?;
    step(&format!("{exams} exam records"), started);

    // Appointments of appointed and examined residents (attended), at the same places.
    let started = Instant::now();
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO appointments (campaign_id, resident_id, institution_id, day, status, \
         booking_ref, attended_at, created_at, updated_at) SELECT e.campaign_id, \
         e.resident_id, ",
    );
    sql.push("COALESCE(");
    institution_case(&mut sql, "e.resident_id", &centres, hospital);
    sql.push(", ").bind(hospital).push(generated(format!(
        "), h.day, CASE WHEN e.stage = 'examined' THEN 'attended' ELSE 'booked' END, \
         'bench-' || CAST(e.resident_id AS TEXT), e.examined_at, e.appointed_at, \
         e.appointed_at FROM enrolments e JOIN bench_hours h ON h.n = {a} \
         WHERE e.appointed_at IS NOT NULL AND e.campaign_id = ",
        a = appointed_hour("e.resident_id"),
    )));
    sql.bind(campaign_id)
        .push(" ORDER BY e.resident_id LIMIT ")
        .bind(options.appointments as i64);
    let appointments = execute(database, &sql).await?;
    step(&format!("{appointments} appointments"), started);

    // Messages: `--messages` rows, layer by layer over the progress rows (3 a resident by
    // default), mostly delivered, some sent, failed or still queued; routes and providers
    // spread over WeChat, SMS (Aliyun, Tencent) to the resident or a relative, and e-mail.
    let started = Instant::now();
    let mut sql = Sql::new(backend);
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM enrolments WHERE campaign_id = ")
        .bind(campaign_id);
    let enrolled = count(database, &sql).await?;
    let mut sql = Sql::new(backend);
    sql.push("SELECT CAST(MIN(id) AS BIGINT) AS n FROM enrolments WHERE campaign_id = ")
        .bind(campaign_id);
    let first_id = count(database, &sql).await?;
    let layers = options.messages.div_ceil(enrolled.max(1) as u64).max(1) as i64;
    let m = "((CAST(e.resident_id AS BIGINT) * 16 + k.n) * 48271 % 2147483647)";
    let state = format!(
        "CASE WHEN {m} % 100 < 85 THEN 'delivered' WHEN {m} % 100 < 92 THEN 'sent' \
         WHEN {m} % 100 < 96 THEN 'failed' ELSE 'queued' END"
    );
    let route = format!(
        "CASE WHEN {m} % 100 >= 96 THEN NULL WHEN ({m} / 100) % 10 < 4 THEN 'wechat' \
         WHEN ({m} / 100) % 10 < 8 THEN 'phone' WHEN ({m} / 100) % 10 = 8 THEN 'relative' \
         ELSE 'email' END"
    );
    let provider = format!(
        "CASE WHEN {m} % 100 >= 96 THEN NULL WHEN ({m} / 100) % 10 < 4 THEN 'wechat' \
         WHEN ({m} / 100) % 10 = 9 THEN 'email' WHEN ({m} / 1000) % 2 = 0 THEN 'aliyun' \
         ELSE 'tencent' END"
    );
    let postgres = backend == DbBackend::Postgres;
    let mut sql = Sql::new(backend);
    if !postgres {
        sql.push("WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n + 1 < ")
            .bind(layers)
            .push(") ");
    }
    sql.push(generated(format!(
        "INSERT INTO messages (campaign_id, resident_id, kind, idempotency_key, state, due_at, \
         expires_at, next_attempt_at, attempts, step, route, channel, provider, segments, \
         last_error, created_at, queued_at, sent_at, delivered_at, failed_at) SELECT \
         e.campaign_id, e.resident_id, CASE k.n % 3 WHEN 0 THEN 'migrant_wave' WHEN 1 THEN \
         'appointment_notice' ELSE 'same_day_reminder' END, 'bench:r' || \
         CAST(e.resident_id AS TEXT) || ':' || CAST(k.n AS TEXT), {state}, h.at, "
    )));
    sql.bind(now + Duration::days(7)).push(generated(format!(
        ", h.at, CASE WHEN {m} % 100 < 96 THEN 1 ELSE 0 END, 0, {route}, {provider}, \
         {provider}, 1, CASE WHEN {m} % 100 >= 92 AND {m} % 100 < 96 THEN \
         'rejected by the provider' END, h.at, h.at, \
         CASE WHEN {m} % 100 < 92 THEN h.at END, CASE WHEN {m} % 100 < 85 THEN h.at END, \
         CASE WHEN {m} % 100 >= 92 AND {m} % 100 < 96 THEN h.at END FROM enrolments e "
    )));
    if postgres {
        sql.push("CROSS JOIN generate_series(0, ")
            .bind(layers - 1)
            .push(") AS k(n)");
    } else {
        sql.push("CROSS JOIN k");
    }
    sql.push(generated(format!(
        " JOIN bench_hours h ON h.n = ({m} / 2000) % {HOURS} WHERE e.campaign_id = "
    )))
    .bind(campaign_id)
    .push(" AND k.n * ")
    .bind(enrolled)
    .push(" + (e.id - ")
    .bind(first_id)
    .push(") < ")
    .bind(options.messages as i64);
    let messages = execute(database, &sql).await?;
    step(&format!("{messages} messages"), started);

    // The cadres' own attempts (about 8 % of the residents once), and replies: to one
    // delivered message in 50, plus some from numbers no message went to.
    let started = Instant::now();
    let c = "e.resident_id";
    let a = format!("(({} / 7) % 40)", v(c));
    let mut sql = Sql::new(backend);
    sql.push(generated(format!(
        "INSERT INTO contact_attempts (campaign_id, resident_id, village_code, attempted_at, \
         day, channel, contact, outcome, reached, created_at) SELECT e.campaign_id, \
         e.resident_id, e.village_code, h.at, h.day, CASE {a} % 4 WHEN 0 THEN 'phone_call' \
         WHEN 1 THEN 'home_visit' WHEN 2 THEN 'wechat' ELSE 'relative' END, CASE {a} % 4 \
         WHEN 0 THEN 'own_phone' WHEN 1 THEN 'in_person' WHEN 2 THEN 'wechat' \
         ELSE 'relative_phone' END, CASE {a} % 5 WHEN 0 THEN 'reached_agreed' WHEN 1 THEN \
         'no_answer' WHEN 2 THEN 'left_message' WHEN 3 THEN 'reached_refused' \
         ELSE 'unreachable' END, ({a} % 5 IN (0, 3)), h.at FROM enrolments e \
         JOIN bench_hours h ON h.n = {n} WHERE {a} < 4 AND {p} >= 10 AND {p} < 850 \
         AND e.campaign_id = ",
        n = notified_hour(c),
        p = bucket(c),
    )));
    sql.bind(campaign_id);
    let attempts = execute(database, &sql).await?;
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO inbound_replies (provider, from_masked, text, action, resident_id, \
         message_id, village_code, received_at, handled_at) SELECT m.provider, \
         '139****0000', CASE (m.id / 50) % 4 WHEN 0 THEN '1' WHEN 1 THEN '2' WHEN 2 THEN 'TD' \
         ELSE '好的' END, CASE (m.id / 50) % 4 WHEN 0 THEN 'confirm' WHEN 1 THEN 'reschedule' \
         WHEN 2 THEN 'opt_out' ELSE 'unmatched' END, m.resident_id, m.id, e.village_code, \
         m.delivered_at, m.delivered_at FROM messages m JOIN enrolments e \
         ON e.campaign_id = m.campaign_id AND e.resident_id = m.resident_id \
         WHERE m.state = 'delivered' AND m.id % 50 = 0 AND m.campaign_id = ",
    )
    .bind(campaign_id);
    let mut replies = execute(database, &sql).await?;
    let sql = {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO inbound_replies (provider, from_masked, text, action, received_at) \
             SELECT 'aliyun', '138****0000', '你好', 'unmatched', at FROM bench_hours \
             WHERE n % 2 = 0",
        );
        sql
    };
    replies += execute(database, &sql).await?;
    step(
        &format!("{attempts} contact attempts, {replies} replies"),
        started,
    );

    let started = Instant::now();
    database
        .execute_unprepared("DROP TABLE bench_hours")
        .await?;
    match backend {
        // One pass over the tables the history rewrote, and fresh statistics.
        DbBackend::Postgres => database.execute_unprepared("VACUUM (ANALYZE)").await?,
        _ => database.execute_unprepared("ANALYZE").await?,
    };
    step("ANALYZE", started);

    let stage_count = |stage: &str| {
        let mut sql = Sql::new(backend);
        sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM enrolments WHERE campaign_id = ")
            .bind(campaign_id)
            .push(" AND stage = ")
            .bind(stage.to_owned());
        sql
    };
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM exam_records x JOIN institutions i \
         ON i.id = x.institution_id WHERE i.kind = 'township_centre' AND x.campaign_id = ",
    )
    .bind(campaign_id);
    let truth = Truth {
        enrolments: enrolled,
        examined: count(database, &stage_count("examined")).await?,
        exempt: count(database, &stage_count("exempt")).await?,
        refused: count(database, &stage_count("refused")).await?,
        messages: messages as i64,
        examined_at_centres: count(database, &sql).await?,
    };
    eprintln!(
        "set-up: done in {:.1} s ({} enrolments, {} examined, {} messages)",
        all.elapsed().as_secs_f64(),
        truth.enrolments,
        truth.examined,
        truth.messages
    );
    Ok(Setup {
        campaign_id,
        hospital,
        truth,
    })
}

// ---------------------------------------------------------------------------------------
// Measurements

/// p50 and p95 (the sorted durations at rank round((n − 1) · p)) and the maximum, in ms.
fn percentiles(durations: &[Elapsed]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (round(at(0.50)), round(at(0.95)), round(ms[ms.len() - 1]))
}

/// One JSON line for a report asked for `durations.len()` times, against its p95 target if it
/// has one; a missed target is added to `misses`.
fn print_timed(
    bench: &'static str,
    backend: &str,
    durations: &[Elapsed],
    target_ms: Option<f64>,
    extra: Value,
    misses: &mut Vec<&'static str>,
) {
    let seconds: f64 = durations.iter().map(Elapsed::as_secs_f64).sum();
    let (p50, p95, max) = percentiles(durations);
    let mut line = json!({
        "bench": bench,
        "backend": backend,
        "items": durations.len(),
        "seconds": round(seconds),
        "per_sec": round(durations.len() as f64 / seconds),
        "p50_ms": p50,
        "p95_ms": p95,
        "max_ms": max,
        "peak_rss_mb": round(peak_rss_mb()),
    });
    if let Some(line) = line.as_object_mut() {
        if let Some(target) = target_ms {
            line.insert("target_p95_ms".to_owned(), json!(target));
            line.insert("met".to_owned(), json!(p95 < target));
            if p95 >= target {
                misses.push(bench);
            }
        }
        if let Value::Object(extra) = extra {
            line.extend(extra);
        }
    }
    println!("{line}");
}

/// Runs `f` once untimed (first-use costs), then `runs` times timed.
async fn timed<T, F, Fut>(runs: usize, f: F) -> anyhow::Result<(Vec<Elapsed>, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    timed_after(1, runs, f).await
}

/// Runs `f` `warmup` times (at least once) untimed, then `runs` times timed.
pub(super) async fn timed_after<T, F, Fut>(
    warmup: usize,
    runs: usize,
    mut f: F,
) -> anyhow::Result<(Vec<Elapsed>, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut last = f().await?;
    for _ in 1..warmup {
        last = f().await?;
    }
    let mut durations = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        last = f().await?;
        durations.push(started.elapsed());
    }
    Ok((durations, last))
}

async fn examined_before(
    database: &DatabaseConnection,
    campaign_id: i32,
    until: DateTime<Utc>,
) -> anyhow::Result<i64> {
    let mut sql = Sql::new(database.get_database_backend());
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM enrolments WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND examined_at < ")
        .bind(until);
    count(database, &sql).await
}

async fn run_report(url: &str, options: &ReportOptions) -> anyhow::Result<()> {
    let database = connect(url).await?;
    let backend = backend_of(&database);
    let Setup {
        campaign_id, truth, ..
    } = set_up(&database, &options.county, async |_| Ok(())).await?;
    let office = county_office()?;
    let (db, office) = (&database, &office);
    let err =
        |what: &'static str| move |e: outreach::error::AppError| anyhow::anyhow!("{what}: {e}");

    // 1. The live cube, then every closed day since the campaign opened.
    let started = Instant::now();
    let refreshed = outreach::flows::reports::refresh_now(&database, campaign_id, 0)
        .await
        .map_err(err("refresh"))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "report_refresh",
            "backend": backend,
            "items": truth.enrolments,
            "seconds": round(seconds),
            "per_sec": (truth.enrolments as f64 / seconds).round(),
            "cells": refreshed.cells,
            "messages": truth.messages,
            "peak_rss_mb": round(peak_rss_mb()),
        })
    );

    let campaign: Campaign = campaign::get(&database, campaign_id)
        .await
        .map_err(err("campaign"))?;
    let today = cube::local_day(&campaign, Utc::now());
    let first = cube::first_day(&campaign);
    let mut days = Vec::new();
    let mut day_cells = 0;
    let mut day = first;
    while day < today {
        let started = Instant::now();
        day_cells += outreach::flows::reports::compute_day(&database, &campaign, day)
            .await
            .map_err(err("closed day"))?;
        days.push(started.elapsed());
        day += Duration::days(1);
    }
    anyhow::ensure!(!days.is_empty(), "the campaign has no closed day");
    let seconds: f64 = days.iter().map(Elapsed::as_secs_f64).sum();
    let (p50, _, max) = percentiles(&days);
    println!(
        "{}",
        json!({
            "bench": "report_backfill",
            "backend": backend,
            "items": days.len(),
            "seconds": round(seconds),
            "per_sec": round(days.len() as f64 / seconds),
            "ms_per_day": round(seconds * 1000.0 / days.len() as f64),
            "p50_ms": p50,
            "max_ms": max,
            "cells": day_cells,
            "peak_rss_mb": round(peak_rss_mb()),
        })
    );

    // What the refresh job does after computing closed days (PostgreSQL): the set-up's
    // ANALYZE saw the cube empty.
    let started = Instant::now();
    outreach::db::analyze_after_bulk_write(&database, "report_cells").await;
    outreach::db::analyze_after_bulk_write(&database, "report_days").await;
    step(
        "ANALYZE report_cells, report_days after the backfill",
        started,
    );

    // 2. The county by township.
    let county = SliceQuery {
        area: Some(COUNTY.to_owned()),
        by: Some("township".to_owned()),
        ..SliceQuery::default()
    };
    let query = &county;
    let (durations, p) = timed(options.runs, move || async move {
        report::progress(db, office, campaign_id, query)
            .await
            .map_err(err("progress"))
    })
    .await?;
    let townships = VILLAGES.div_ceil(20) as usize;
    let rows_population: i64 = p.rows.iter().map(|r| r.figures.population).sum();
    let here: i64 = p.rows.iter().filter_map(|r| r.figures.examined_here).sum();
    anyhow::ensure!(
        p.rows.len() == townships
            && p.total.population == truth.enrolments
            && rows_population == truth.enrolments
            && p.total.examined == truth.examined
            && p.total.exempt == truth.exempt
            && p.total.refused == truth.refused
            && here == truth.examined_at_centres,
        "county report: {} rows, population {} (rows {rows_population}) of {} enrolments, \
         examined {} of {}, exempt {} of {}, refused {} of {}, examined at the centres {here} \
         of {}",
        p.rows.len(),
        p.total.population,
        truth.enrolments,
        p.total.examined,
        truth.examined,
        p.total.exempt,
        truth.exempt,
        p.total.refused,
        truth.refused,
        truth.examined_at_centres
    );
    let cells = {
        let mut sql = Sql::new(database.get_database_backend());
        sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM report_cells WHERE campaign_id = ")
            .bind(campaign_id)
            .push(" AND day IS NULL");
        count(&database, &sql).await?
    };
    let mut misses = Vec::new();
    print_timed(
        "report_county",
        backend,
        &durations,
        Some(100.0),
        json!({"rows": p.rows.len(), "live_cells": cells, "population": p.total.population}),
        &mut misses,
    );

    // 3. One village.
    let village = village_code(0);
    let one = SliceQuery {
        area: Some(village.clone()),
        ..SliceQuery::default()
    };
    let query = &one;
    let (durations, p) = timed(options.runs, move || async move {
        report::progress(db, office, campaign_id, query)
            .await
            .map_err(err("progress"))
    })
    .await?;
    let mut sql = Sql::new(database.get_database_backend());
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM enrolments WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND village_code = ")
        .bind(village.clone());
    let in_village = count(&database, &sql).await?;
    anyhow::ensure!(
        p.rows.len() == 1 && p.rows[0].key == village && p.total.population == in_village,
        "village report: {} rows, population {} of {in_village}",
        p.rows.len(),
        p.total.population
    );
    print_timed(
        "report_village",
        backend,
        &durations,
        None,
        json!({"population": p.total.population}),
        &mut misses,
    );

    // 4. The 30-day series of the county by township; checked against the progress rows
    // on a second series of the county as one line over 31 days (30 closed days and today).
    let by_township = SeriesQuery {
        area: Some(COUNTY.to_owned()),
        by: Some("township".to_owned()),
        days: Some(30),
        ..SeriesQuery::default()
    };
    let query = &by_township;
    let (durations, s) = timed(options.runs, move || async move {
        report::series(db, office, campaign_id, query)
            .await
            .map_err(err("series"))
    })
    .await?;
    anyhow::ensure!(
        s.points.len() == 30 * townships && s.pending_days.is_empty(),
        "series by township: {} points, {} days pending",
        s.points.len(),
        s.pending_days.len()
    );
    let whole = report::series(
        db,
        office,
        campaign_id,
        &SeriesQuery {
            area: Some(COUNTY.to_owned()),
            days: Some(31),
            ..SeriesQuery::default()
        },
    )
    .await
    .map_err(err("series"))?;
    let middle = today - Duration::days(15);
    let yesterday = today - Duration::days(1);
    let point = |day: NaiveDate| whole.points.iter().find(|p| p.day == day);
    let expected_middle =
        examined_before(&database, campaign_id, cube::end_of_day(&campaign, middle)).await?;
    let expected_yesterday = examined_before(
        &database,
        campaign_id,
        cube::end_of_day(&campaign, yesterday),
    )
    .await?;
    anyhow::ensure!(
        whole.points.len() == 31
            && whole.pending_days.is_empty()
            && point(middle).map(|p| p.figures.examined) == Some(expected_middle)
            && point(yesterday).map(|p| p.figures.examined) == Some(expected_yesterday)
            && point(today).map(|p| p.figures.examined) == Some(truth.examined)
            && expected_middle > 0
            && expected_middle < expected_yesterday,
        "series: {} points, {} pending; examined at the end of {middle} {:?} (expected \
         {expected_middle}), of {yesterday} {:?} (expected {expected_yesterday}), today {:?} \
         (expected {})",
        whole.points.len(),
        whole.pending_days.len(),
        point(middle).map(|p| p.figures.examined),
        point(yesterday).map(|p| p.figures.examined),
        point(today).map(|p| p.figures.examined),
        truth.examined
    );
    print_timed(
        "report_series",
        backend,
        &durations,
        Some(300.0),
        json!({"points": s.points.len(), "days": 30}),
        &mut misses,
    );

    // 5. The county by township as an XLSX download.
    let query = &county;
    let (durations, bytes) = timed(options.runs, move || async move {
        let p = report::progress(db, office, campaign_id, query)
            .await
            .map_err(err("progress"))?;
        export::workbook(&export::about_progress(&p), &export::progress_tables(&p))
            .map_err(err("workbook"))
    })
    .await?;
    anyhow::ensure!(bytes.starts_with(b"PK"), "the workbook is not an XLSX file");
    print_timed(
        "report_xlsx",
        backend,
        &durations,
        Some(1000.0),
        json!({"bytes": bytes.len()}),
        &mut misses,
    );
    if !misses.is_empty() {
        eprintln!("target missed (p95): {}", misses.join(", "));
    }
    Ok(())
}
