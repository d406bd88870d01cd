//! The `dashboard` scenario: the county office's and a township officer's `/app/` over the
//! `report` scenario's county (a million residents a month into the campaign, every closed
//! day's figures kept as the refresh job keeps them). Each page is rendered through the
//! service's router with a session cookie — the four reports behind it, the area tree and
//! the template — `--runs` times after `--warmup` untimed runs (p50 / p95 / p99), then the
//! report calls behind it one by one.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use chrono::{Duration, Utc};
use entities::users::Role;
use outreach::area::AreaCode;
use outreach::auth::{self, Actor, Scope};
use outreach::campaign::{self, Campaign};
use outreach::db::Sql;
use outreach::flows;
use outreach::http::guard::SESSION_COOKIE;
use outreach::report::{self, ContactsQuery, RankingQuery, SeriesQuery, SliceQuery, cube};
use outreach::startup::Application;
use outreach::users;
use sea_orm::DatabaseConnection;
use serde_json::json;

use super::report_bench::{County, backend_of, count, set_up, settings, step, timed_after};
use super::worklist_bench::{get_page, print_timed};
use super::{bench_database, drop_database};

/// The whole page's p95 target, in ms.
const TARGET_MS: f64 = 150.0;
const COUNTY: &str = "654025000000";
/// The township officer's township: the first of the county's twelve.
const TOWNSHIP: &str = "654025100000";
const OFFICE: &str = "bench.office";
const OFFICER: &str = "bench.township";
const PASSWORD: &str = "bench-dashboard-password";

/// Options of the `dashboard` scenario.
pub struct DashboardOptions {
    pub county: County,
    pub runs: usize,
    pub warmup: usize,
}

pub async fn dashboard(options: DashboardOptions) -> anyhow::Result<()> {
    anyhow::ensure!(options.runs > 0, "--runs must be at least 1");
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_dashboard(&url, &options).await;
    drop_database(cleanup).await?;
    result
}

/// The funnel's count of `stage` on the page.
fn funnel_count(html: &str, stage: &str) -> Option<i64> {
    let marker = format!("data-stage=\"{stage}\" data-count=\"");
    let after = &html[html.find(&marker)? + marker.len()..];
    after[..after.find('"')?].parse().ok()
}

fn ranking_rows(html: &str) -> usize {
    html.matches("data-testid=\"ranking-row\"").count()
}

/// Every closed day since the campaign opened, computed as the refresh job's backfill does,
/// then the statistics PostgreSQL plans the reports with.
async fn keep_closed_days(database: &DatabaseConnection, campaign_id: i32) -> anyhow::Result<()> {
    let started = Instant::now();
    let campaign: Campaign = campaign::get(database, campaign_id)
        .await
        .map_err(|e| anyhow::anyhow!("campaign: {e}"))?;
    flows::reports::refresh_now(database, campaign_id, 0)
        .await
        .map_err(|e| anyhow::anyhow!("refresh: {e}"))?;
    let today = cube::local_day(&campaign, Utc::now());
    let mut day = cube::first_day(&campaign);
    let mut days = 0;
    while day < today {
        flows::reports::compute_day(database, &campaign, day)
            .await
            .map_err(|e| anyhow::anyhow!("closed day {day}: {e}"))?;
        day += Duration::days(1);
        days += 1;
    }
    outreach::db::analyze_after_bulk_write(database, "report_cells").await;
    outreach::db::analyze_after_bulk_write(database, "report_days").await;
    step(
        &format!("live figures and {days} closed days; ANALYZE"),
        started,
    );
    Ok(())
}

/// A user of `role` over `area`, signed in: the page session's cookie and the actor.
pub(super) async fn session(
    state: &outreach::state::AppState,
    username: &str,
    role: Role,
    area: &str,
) -> anyhow::Result<(String, Actor)> {
    flows::accounts::create(
        &state.db,
        &Actor::cli(),
        users::NewUser {
            username: username.to_owned(),
            display_name: None,
            role,
            area_code: area.to_owned(),
            password: Some(PASSWORD.to_owned()),
            institution: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{username}: {e}"))?;
    let issued = auth::login(
        &state.db,
        &state.settings.auth,
        &state.throttle,
        username,
        PASSWORD,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .await
    .map_err(|e| anyhow::anyhow!("login {username}: {e}"))?;
    let actor = Actor {
        user_id: None,
        username: username.to_owned(),
        role,
        scope: Scope::Within(AreaCode::parse(area)?),
        request_id: None,
        token_id: None,
        institution_id: None,
    };
    Ok((format!("{SESSION_COOKIE}={}", issued.token), actor))
}

/// The target (应检) of `area` straight from the progress rows.
async fn target_of(
    database: &DatabaseConnection,
    campaign_id: i32,
    area: &str,
) -> anyhow::Result<i64> {
    let (low, high) = AreaCode::parse(area)?.code_range();
    let mut sql = Sql::new(database.get_database_backend());
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM enrolments WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND stage <> 'exempt' AND village_code BETWEEN ")
        .bind(low)
        .push(" AND ")
        .bind(high);
    count(database, &sql).await
}

async fn run_dashboard(url: &str, options: &DashboardOptions) -> anyhow::Result<()> {
    let mut settings = settings(url);
    settings.bind = "127.0.0.1:0".parse()?;
    let database = outreach::db::connect_and_migrate(&settings).await?;
    let backend = backend_of(&database);
    let all = Instant::now();
    let setup = set_up(&database, &options.county, async |_| Ok(())).await?;
    let campaign_id = setup.campaign_id;
    keep_closed_days(&database, campaign_id).await?;

    let app = Application::build_with_db(settings, database.clone()).await?;
    let state = app.state().clone();
    let (office_cookie, office) = session(&state, OFFICE, Role::Office, COUNTY).await?;
    let (officer_cookie, _) = session(&state, OFFICER, Role::Township, TOWNSHIP).await?;
    eprintln!("set-up: all in {:.1} s", all.elapsed().as_secs_f64());
    let router = outreach::http::router(state.clone(), outreach::web::router());
    let (runs, warmup) = (options.runs, options.warmup);
    let mut misses = Vec::new();

    // 1. The pages, through the router with the session cookie: the county by township,
    // and one township by village.
    for (bench, cookie, area, areas) in [
        ("dashboard_office", office_cookie.as_str(), COUNTY, 12),
        ("dashboard_township", officer_cookie.as_str(), TOWNSHIP, 20),
    ] {
        let router = &router;
        let (durations, html) = timed_after(warmup, runs, move || async move {
            get_page(router, cookie, "/app/").await
        })
        .await?;
        let target = target_of(&database, campaign_id, area).await?;
        anyhow::ensure!(
            funnel_count(&html, "target") == Some(target) && ranking_rows(&html) == areas,
            "{bench}: the funnel's target is {:?} (the progress rows: {target}), {} ranking rows \
             (the areas: {areas})",
            funnel_count(&html, "target"),
            ranking_rows(&html)
        );
        print_timed(
            bench,
            backend,
            &durations,
            Some(TARGET_MS),
            json!({"path": "/app/", "area": area, "target": target,
                   "ranking_rows": ranking_rows(&html), "bytes": html.len()}),
            &mut misses,
        );
    }

    // 2. The report calls behind the office's page, each on its own.
    let (db, office) = (&database, &office);
    let err =
        |what: &'static str| move |e: outreach::error::AppError| anyhow::anyhow!("{what}: {e}");
    let slice = SliceQuery::default();
    let (durations, _) = timed_after(warmup, runs, || async {
        report::progress(db, office, campaign_id, &slice)
            .await
            .map_err(err("progress"))
    })
    .await?;
    print_timed(
        "dashboard_progress",
        backend,
        &durations,
        None,
        json!({}),
        &mut misses,
    );
    let ranking = RankingQuery::default();
    let (durations, _) = timed_after(warmup, runs, || async {
        report::rankings(db, office, campaign_id, &ranking)
            .await
            .map_err(err("rankings"))
    })
    .await?;
    print_timed(
        "dashboard_rankings",
        backend,
        &durations,
        None,
        json!({}),
        &mut misses,
    );
    let series = SeriesQuery {
        days: Some(30),
        ..SeriesQuery::default()
    };
    let (durations, s) = timed_after(warmup, runs, || async {
        report::series(db, office, campaign_id, &series)
            .await
            .map_err(err("series"))
    })
    .await?;
    print_timed(
        "dashboard_series",
        backend,
        &durations,
        None,
        json!({"points": s.points.len(), "pending_days": s.pending_days.len()}),
        &mut misses,
    );
    let contacts = ContactsQuery::default();
    let (durations, _) = timed_after(warmup, runs, || async {
        report::contacts(db, office, campaign_id, &contacts)
            .await
            .map_err(err("contacts"))
    })
    .await?;
    print_timed(
        "dashboard_contacts",
        backend,
        &durations,
        None,
        json!({}),
        &mut misses,
    );
    let (durations, _) = timed_after(warmup, runs, || async {
        outreach::area::tree(db, &office.scope)
            .await
            .map_err(err("areas"))
    })
    .await?;
    print_timed(
        "dashboard_area_tree",
        backend,
        &durations,
        None,
        json!({}),
        &mut misses,
    );
    if !misses.is_empty() {
        eprintln!("target missed (p95): {}", misses.join(", "));
    }
    Ok(())
}
