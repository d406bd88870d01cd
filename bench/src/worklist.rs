//! The `worklist` scenario: a village cadre's phone pages over a county of a million residents
//! a month into its campaign — the `report` scenario's county, with one village of exactly
//! 3,000 residents (named, some in special situations), no-shows and open tasks, and a cadre
//! of that village signed in. Timed in-process through the service's router (session cookie
//! and all), and the domain calls behind the page one by one (p50 / p95 / p99).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration as Elapsed;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{Duration, Utc};
use entities::users::Role;
use outreach::area::AreaCode;
use outreach::auth::{self, Actor, Scope};
use outreach::campaign::worklist::{self, Worklist, WorklistParams};
use outreach::db::Sql;
use outreach::flows;
use outreach::http::guard::SESSION_COOKIE;
use outreach::registry::{self, ResidentFilter};
use outreach::startup::Application;
use outreach::users;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::report_bench::{
    County, Setup, backend_of, count, execute, generated, set_up, settings, step, timed_after, v,
};
use super::{GIVEN, SURNAMES, bench_database, drop_database, peak_rss_mb, round, village_code};

/// Residents of the cadre's village.
const IN_VILLAGE: i64 = 3_000;
/// The page's p95 target (issue 17), in ms.
const TARGET_MS: f64 = 50.0;
/// The page's list size (`web::pages::PAGE_SIZE`).
const PAGE_SIZE: u64 = 50;
const CADRE: &str = "bench.cadre";
const CADRE_PASSWORD: &str = "bench-cadre-password";
/// The name searched for: a common surname, more matches than one page holds.
const SEARCH: &str = "王";

/// Options of the `worklist` scenario.
pub struct WorklistOptions {
    pub county: County,
    pub runs: usize,
    pub warmup: usize,
}

pub async fn worklist(options: WorklistOptions) -> anyhow::Result<()> {
    anyhow::ensure!(options.runs > 0, "--runs must be at least 1");
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_worklist(&url, &options).await;
    drop_database(cleanup).await?;
    result
}

/// The village's pseudo-random number of a resident id column, apart from the stage's.
fn w(col: &str) -> String {
    format!("({} / 7 % 1000)", v(col))
}

/// Before the campaign opens: the first village cut to exactly 3,000 residents (the rest of
/// its residents moved to the second), its residents given names, and special situations
/// across the county — 2 % mobility-impaired, 0.5 % in hospital, 1 % on remote pastures,
/// 0.2 % detained — which `campaign::open` turns into their routes.
async fn shape_registry(database: &DatabaseConnection) -> anyhow::Result<()> {
    let backend = database.get_database_backend();
    let started = Instant::now();
    let village = village_code(0);
    let mut sql = Sql::new(backend);
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM residents WHERE village_code = ")
        .bind(village.clone());
    let seeded = count(database, &sql).await?;
    anyhow::ensure!(
        seeded >= IN_VILLAGE,
        "the first village has {seeded} residents, fewer than {IN_VILLAGE}: use more --residents"
    );
    let mut sql = Sql::new(backend);
    sql.push("UPDATE residents SET village_code = ")
        .bind(village_code(1))
        .push(" WHERE village_code = ")
        .bind(village.clone())
        .push(" AND id NOT IN (SELECT id FROM residents WHERE village_code = ")
        .bind(village.clone())
        .push(" ORDER BY id LIMIT ")
        .bind(IN_VILLAGE)
        .push(")");
    execute(database, &sql).await?;

    let part = |list: &[&str], col: String| {
        let mut case = format!("CASE {col}");
        for (i, name) in list.iter().enumerate() {
            case.push_str(&format!(" WHEN {i} THEN '{name}'"));
        }
        case.push_str(" END");
        case
    };
    let mut sql = Sql::new(backend);
    sql.push(generated(format!(
        "UPDATE residents SET name = {} || {} WHERE village_code = ",
        part(SURNAMES, format!("{} % {}", v("id"), SURNAMES.len())),
        part(GIVEN, format!("{} / 100 % {}", v("id"), GIVEN.len())),
    )))
    .bind(village.clone());
    let named = execute(database, &sql).await?;
    anyhow::ensure!(
        named == IN_VILLAGE as u64,
        "named {named} residents in the village"
    );

    let h = w("id");
    let mut sql = Sql::new(backend);
    sql.push(generated(format!(
        "UPDATE residents SET special = CASE WHEN {h} < 20 THEN 'mobility' \
         WHEN {h} < 25 THEN 'hospitalized' WHEN {h} < 35 THEN 'remote_pastoral' \
         ELSE 'detained' END WHERE {h} < 37"
    )));
    let special = execute(database, &sql).await?;
    if backend == sea_orm::DbBackend::Postgres {
        // The updates above wrote the village's residents anew at the end of the table; put
        // the table back in id order, so that its rows (and the progress rows enrolled from
        // them) lie spread over the table as the seeding left them, as on SQLite.
        database
            .execute_unprepared("CLUSTER residents USING residents_pkey")
            .await?;
    }
    step(
        &format!(
            "one village of {IN_VILLAGE} residents (named), {special} residents in special situations"
        ),
        started,
    );
    Ok(())
}

/// After the month of history: no-shows (two in five of the reached, who are to be booked
/// again, and one in four of the appointed, booked again since), cadre tasks from the replies
/// (a third of them still open) and unreachable residents (one in fifty of those not yet
/// reached, open), and the village's cadre.
async fn add_field_work(database: &DatabaseConnection, setup: &Setup) -> anyhow::Result<()> {
    let backend = database.get_database_backend();
    let started = Instant::now();
    let h = w("e.resident_id");
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO appointments (campaign_id, resident_id, institution_id, day, status, \
         booking_ref, created_at, updated_at) SELECT e.campaign_id, e.resident_id, ",
    )
    .bind(setup.hospital)
    .push(", ")
    .bind(outreach::time::today() - Duration::days(10))
    .push(
        ", 'no_show', 'bench-missed-' || CAST(e.resident_id AS TEXT), e.reached_at, \
         e.reached_at FROM enrolments e WHERE e.campaign_id = ",
    )
    .bind(setup.campaign_id)
    .push(generated(format!(
        " AND ((e.stage = 'reached' AND {h} % 5 < 2) OR (e.stage = 'appointed' AND {h} % 4 = 0))"
    )));
    let missed = execute(database, &sql).await?;

    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO outreach_tasks (campaign_id, resident_id, village_code, kind, dedupe_key, \
         message_id, reply_id, note, created_at, done_at) SELECT ",
    )
    .bind(setup.campaign_id)
    .push(
        ", r.resident_id, r.village_code, CASE r.action WHEN 'reschedule' THEN \
         'reschedule_request' ELSE 'reply' END, 'bench:reply:' || CAST(r.id AS TEXT), \
         r.message_id, r.id, r.text, r.received_at, CASE WHEN r.id % 3 = 0 THEN NULL \
         ELSE r.received_at END FROM inbound_replies r WHERE r.resident_id IS NOT NULL \
         AND r.action IN ('reschedule', 'unmatched')",
    );
    let mut tasks = execute(database, &sql).await?;
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO outreach_tasks (campaign_id, resident_id, village_code, kind, dedupe_key, \
         created_at) SELECT e.campaign_id, e.resident_id, e.village_code, 'unreachable', \
         'bench:unreachable:' || CAST(e.resident_id AS TEXT), ",
    )
    .bind(Utc::now())
    .push(" FROM enrolments e WHERE e.campaign_id = ")
    .bind(setup.campaign_id)
    .push(generated(format!(
        " AND e.stage IN ('target', 'notified') AND {h} % 50 = 0"
    )));
    tasks += execute(database, &sql).await?;
    for table in ["appointments", "outreach_tasks"] {
        database
            .execute_unprepared(&format!("ANALYZE {table}"))
            .await?;
    }
    step(
        &format!("{missed} no-shows, {tasks} cadre tasks; ANALYZE"),
        started,
    );

    let started = Instant::now();
    flows::accounts::create(
        database,
        &Actor::cli(),
        users::NewUser {
            username: CADRE.to_owned(),
            display_name: None,
            role: Role::Cadre,
            area_code: village_code(0),
            password: Some(CADRE_PASSWORD.to_owned()),
            institution: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cadre: {e}"))?;
    step("the village's cadre", started);
    Ok(())
}

/// p50, p95 and p99 (the sorted durations at rank round((n − 1) · p)) and the maximum, in ms.
pub(crate) fn percentiles(durations: &[Elapsed]) -> [f64; 4] {
    let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| round(ms[((ms.len() - 1) as f64 * p).round() as usize]);
    [at(0.50), at(0.95), at(0.99), round(ms[ms.len() - 1])]
}

/// One JSON line for something timed `durations.len()` times, against the target if given;
/// a missed target is added to `misses`.
pub(crate) fn print_timed(
    bench: &str,
    backend: &str,
    durations: &[Elapsed],
    target_ms: Option<f64>,
    extra: Value,
    misses: &mut Vec<String>,
) {
    let [p50, p95, p99, max] = percentiles(durations);
    let seconds: f64 = durations.iter().map(Elapsed::as_secs_f64).sum();
    let mut line = json!({
        "bench": bench,
        "backend": backend,
        "items": durations.len(),
        "seconds": round(seconds),
        "per_sec": round(durations.len() as f64 / seconds),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": max,
        "peak_rss_mb": round(peak_rss_mb()),
    });
    if let Some(line) = line.as_object_mut() {
        if let Some(target) = target_ms {
            line.insert("target_p95_ms".to_owned(), json!(target));
            line.insert("met".to_owned(), json!(p95 <= target));
            if p95 > target {
                misses.push(bench.to_owned());
            }
        }
        if let Value::Object(extra) = extra {
            line.extend(extra);
        }
    }
    println!("{line}");
}

/// `GET path` through the router with a session cookie: the page's HTML.
pub(crate) async fn get_page(
    router: &axum::Router,
    cookie: &str,
    path: &str,
) -> anyhow::Result<String> {
    let mut request = Request::get(path)
        .header(header::HOST, "127.0.0.1")
        .header(header::COOKIE, cookie)
        .body(Body::empty())?;
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            40_000,
        ))));
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let html = String::from_utf8(body.to_vec())?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{path}: {status}: {}",
        html.chars().take(300).collect::<String>()
    );
    Ok(html)
}

/// The count a tab of the worklist page shows.
fn tab_count(html: &str, code: &str) -> Option<u64> {
    let marker = format!("data-testid=\"worklist-tab-{code}\"");
    let after = &html[html.find(&marker)? + marker.len()..];
    let start = after.find("<b>")? + 3;
    let end = after[start..].find("</b>")? + start;
    after[start..end].trim().parse().ok()
}

fn rows_in(html: &str) -> usize {
    html.matches("data-testid=\"worklist-item\"").count()
}

async fn run_worklist(url: &str, options: &WorklistOptions) -> anyhow::Result<()> {
    let mut settings = settings(url);
    settings.bind = "127.0.0.1:0".parse()?;
    let database = outreach::db::connect_and_migrate(&settings).await?;
    let backend = backend_of(&database);
    let all = Instant::now();
    let setup = set_up(&database, &options.county, async |db| {
        shape_registry(db).await
    })
    .await?;
    add_field_work(&database, &setup).await?;
    eprintln!("set-up: all in {:.1} s", all.elapsed().as_secs_f64());
    let campaign_id = setup.campaign_id;
    let village = village_code(0);

    // What the village's lists hold, straight from the tables.
    let db_backend = database.get_database_backend();
    let in_village = |condition: &str| {
        let mut sql = Sql::new(db_backend);
        sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM enrolments e WHERE e.campaign_id = ")
            .bind(campaign_id)
            .push(" AND e.village_code = ")
            .bind(village.clone())
            .push(generated(format!(" AND {condition}")));
        sql
    };
    let open = "e.stage IN ('target', 'notified', 'reached')";
    let due = "e.stage NOT IN ('examined', 'refused', 'exempt')";
    let expected: Vec<(&str, i64)> = vec![
        (
            "not_appointed",
            count(
                &database,
                &in_village(&format!(
                    "{open} AND e.route = 'clinic' AND e.migrant_type = 'local'"
                )),
            )
            .await?,
        ),
        (
            "no_shows",
            count(
                &database,
                &in_village(&format!(
                    "{open} AND EXISTS (SELECT 1 FROM appointments a WHERE \
                     a.campaign_id = e.campaign_id AND a.resident_id = e.resident_id AND \
                     a.status = 'no_show')"
                )),
            )
            .await?,
        ),
        (
            "migrants",
            count(
                &database,
                &in_village(&format!("{open} AND e.migrant_type <> 'local'")),
            )
            .await?,
        ),
        (
            "home_visits",
            count(
                &database,
                &in_village(&format!("{due} AND e.route = 'home_visit'")),
            )
            .await?,
        ),
        (
            "hospital_records",
            count(
                &database,
                &in_village(&format!("{due} AND e.route = 'records'")),
            )
            .await?,
        ),
        (
            "seasonal",
            count(
                &database,
                &in_village(&format!("{due} AND e.route = 'seasonal'")),
            )
            .await?,
        ),
    ];
    let population = count(&database, &in_village("1 = 1")).await?;
    anyhow::ensure!(
        population == IN_VILLAGE,
        "the village has {population} progress rows, not {IN_VILLAGE}"
    );
    eprintln!("village {village}: {population} residents, lists {expected:?}");

    let app = Application::build_with_db(settings, database.clone()).await?;
    let state = app.state().clone();
    let issued = auth::login(
        &state.db,
        &state.settings.auth,
        &state.throttle,
        CADRE,
        CADRE_PASSWORD,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .await
    .map_err(|e| anyhow::anyhow!("login: {e}"))?;
    let cookie = format!("{SESSION_COOKIE}={}", issued.token);
    let router = outreach::http::router(state.clone(), outreach::web::router());
    let cadre = Actor {
        user_id: None,
        username: CADRE.to_owned(),
        role: Role::Cadre,
        scope: Scope::Within(AreaCode::parse(&village)?),
        request_id: None,
        token_id: None,
        institution_id: None,
    };
    let (runs, warmup) = (options.runs, options.warmup);
    let mut misses = Vec::new();
    let (router, cookie, db, cadre) = (&router, cookie.as_str(), &database, &cadre);

    // 1. The page: six counts, the first list's first page of 50, village names, the
    // template — through the router with the session cookie.
    let (durations, html) = timed_after(warmup, runs, move || async move {
        get_page(router, cookie, "/m/").await
    })
    .await?;
    for (code, n) in &expected {
        anyhow::ensure!(
            tab_count(&html, code) == Some(*n as u64),
            "the page's {code} tab shows {:?}, the tables hold {n}",
            tab_count(&html, code)
        );
    }
    let first = expected[0].1 as u64;
    anyhow::ensure!(
        rows_in(&html) as u64 == first.min(PAGE_SIZE),
        "the page lists {} rows of {first}",
        rows_in(&html)
    );
    print_timed(
        "worklist_page",
        backend,
        &durations,
        Some(TARGET_MS),
        json!({"path": "/m/", "rows": rows_in(&html), "bytes": html.len(),
               "lists": expected.iter().map(|(c, n)| ((*c).to_owned(), json!(n))).collect::<serde_json::Map<_, _>>()}),
        &mut misses,
    );

    // 2. Another list's page, and a name search, through the router.
    let (durations, html) = timed_after(warmup, runs, move || async move {
        get_page(router, cookie, "/m/?list=no_shows").await
    })
    .await?;
    let missed = expected[1].1 as u64;
    anyhow::ensure!(
        rows_in(&html) as u64 == missed.min(PAGE_SIZE),
        "the no-shows page lists {} rows of {missed}",
        rows_in(&html)
    );
    print_timed(
        "worklist_page_no_shows",
        backend,
        &durations,
        Some(TARGET_MS),
        json!({"path": "/m/?list=no_shows", "rows": rows_in(&html), "bytes": html.len()}),
        &mut misses,
    );
    let search_path = format!(
        "/m/?q={}",
        form_urlencoded::byte_serialize(SEARCH.as_bytes()).collect::<String>()
    );
    let path = search_path.as_str();
    let (durations, html) = timed_after(warmup, runs, move || async move {
        get_page(router, cookie, path).await
    })
    .await?;
    let mut sql = Sql::new(db_backend);
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM residents WHERE village_code = ")
        .bind(village.clone())
        .push(" AND name LIKE ")
        .bind(format!("%{SEARCH}%"));
    let named = count(&database, &sql).await? as u64;
    anyhow::ensure!(
        named > 0 && rows_in(&html) as u64 == named.min(PAGE_SIZE),
        "the search lists {} rows of {named}",
        rows_in(&html)
    );
    print_timed(
        "worklist_page_search",
        backend,
        &durations,
        Some(TARGET_MS),
        json!({"path": path, "rows": rows_in(&html), "matches": named}),
        &mut misses,
    );

    // 3. The resident page, over the village's residents in turn.
    let mut sql = Sql::new(db_backend);
    sql.push("SELECT CAST(id AS BIGINT) AS n FROM residents WHERE village_code = ")
        .bind(village.clone())
        .push(" ORDER BY id");
    let ids: Vec<i64> = database
        .query_all_raw(sql.build())
        .await?
        .iter()
        .map(|row| row.try_get::<i64>("", "n"))
        .collect::<Result<_, _>>()?;
    let ids = &ids;
    let next = &std::sync::atomic::AtomicUsize::new(0);
    let (durations, html) = timed_after(warmup, runs, move || async move {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = ids[(i * 37) % ids.len()];
        get_page(router, cookie, &format!("/m/residents/{id}")).await
    })
    .await?;
    print_timed(
        "resident_page",
        backend,
        &durations,
        None,
        json!({"path": "/m/residents/{id}", "residents": ids.len(), "bytes": html.len()}),
        &mut misses,
    );

    // 4. The domain calls behind the page, each on its own.
    let (durations, counted) = timed_after(warmup, runs, move || async move {
        worklist::counts(db, cadre, campaign_id)
            .await
            .map_err(|e| anyhow::anyhow!("worklist counts: {e}"))
    })
    .await?;
    for ((list, n), (code, expected)) in counted.iter().zip(&expected) {
        anyhow::ensure!(
            list.code() == *code && *n == *expected as u64,
            "worklist::counts gives {n} for {}, the tables hold {expected} on {code}",
            list.code()
        );
    }
    print_timed(
        "worklist_counts",
        backend,
        &durations,
        None,
        json!({"lists": counted.len()}),
        &mut misses,
    );
    for list in Worklist::ALL {
        let code = list.code();
        let (durations, page) = timed_after(warmup, runs, move || async move {
            worklist::list(
                db,
                cadre,
                campaign_id,
                list,
                WorklistParams {
                    limit: Some(PAGE_SIZE),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("worklist {code}: {e}"))
        })
        .await?;
        print_timed(
            &format!("worklist_list_{code}"),
            backend,
            &durations,
            None,
            json!({"total": page.total, "rows": page.items.len()}),
            &mut misses,
        );
    }
    let privacy = &state.privacy;
    let (durations, found) = timed_after(warmup, runs, move || async move {
        registry::list(
            db,
            privacy,
            cadre,
            ResidentFilter {
                q: Some(SEARCH.to_owned()),
                limit: Some(PAGE_SIZE),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("search: {e}"))
    })
    .await?;
    print_timed(
        "resident_search",
        backend,
        &durations,
        None,
        json!({"rows": found.residents.len()}),
        &mut misses,
    );
    let (durations, names) = timed_after(warmup, runs, move || async move {
        registry::village_names(db)
            .await
            .map_err(|e| anyhow::anyhow!("village names: {e}"))
    })
    .await?;
    print_timed(
        "village_names",
        backend,
        &durations,
        None,
        json!({"villages": names.len()}),
        &mut misses,
    );
    if !misses.is_empty() {
        eprintln!("target missed (p95): {}", misses.join(", "));
    }
    Ok(())
}
