//! `GET /metrics`: requests counted by route template and status with their latency, the
//! outbox depth, provider sends and receipts, scheduled runs, import rows and the pool, as a
//! Prometheus server scrapes them; refused without the token, not served unless configured.
//!
//! The recorder is one per process and the tests run side by side, so counters are compared
//! before and after (at least the difference this test made); the outbox depth and the pool
//! are read from the scraping application's own database and are exact.

use chrono::{Duration, NaiveTime, Utc};
use entities::users::Role;
use outreach::auth::Actor;
use outreach::config::Secret;
use outreach::flows;
use outreach::registry::{self, NewResident};
use outreach::scheduler::{Job, Outcome, try_execute_once};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TOWNSHIP, TestApp, VILLAGE, error_code, resident_id, spawn_app, spawn_app_with,
};
use crate::sms_gateway::start_gateway;

const TOKEN: &str = "scrape-token-2026-metrics";
const HOOK_SECRET: &str = "hook-secret-2026";

fn with_token(settings: &mut outreach::config::Settings) {
    settings.metrics.token = Some(Secret::new(TOKEN));
}

async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The labels of a series, `{a="x",b="y"}` without the braces, as pairs.
fn labels(inner: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = inner;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        pairs.push((
            key.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[end + 1..];
    }
    pairs
}

/// The value of the sample `name` whose labels include every one of `want`, as a scraper
/// reads the text format.
fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, inner) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let have = labels(inner);
            let all = want
                .iter()
                .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v));
            all.then(|| value.parse().ok()).flatten()
        })
}

fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    sample(text, name, want).unwrap_or(0.0)
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status_with_their_latency() {
    let app = spawn_app_with(with_token).await;
    app.seed_areas().await;
    let office = app.office_token().await;
    let one_resident = [
        ("method", "GET"),
        ("route", "/api/v1/residents/{id}"),
        ("status", "404"),
    ];
    let before = scrape(&app).await;
    for _ in 0..3 {
        let response = app.get("/api/v1/residents/987654", &office).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let response = app.get("/api/v1/areas", &office).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.get("/no-such-place/13800001111", &office).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let text = scrape(&app).await;

    let counted = |text: &str, name: &str, want: &[(&str, &str)]| value(text, name, want);
    assert!(
        counted(&text, "outreach_http_requests_total", &one_resident)
            - counted(&before, "outreach_http_requests_total", &one_resident)
            >= 3.0,
        "{text}"
    );
    assert!(
        counted(
            &text,
            "outreach_http_requests_total",
            &[("route", "/api/v1/areas"), ("status", "200")]
        ) >= 1.0
    );
    assert!(
        counted(
            &text,
            "outreach_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0
    );
    // A latency histogram per series: buckets, a count and a sum.
    assert!(text.contains("# TYPE outreach_http_request_duration_seconds histogram"));
    let in_buckets = [one_resident.as_slice(), &[("le", "+Inf")]].concat();
    assert!(
        counted(
            &text,
            "outreach_http_request_duration_seconds_bucket",
            &in_buckets
        ) >= 3.0
    );
    assert!(
        counted(
            &text,
            "outreach_http_request_duration_seconds_count",
            &one_resident
        ) >= 3.0
    );
    assert!(
        sample(
            &text,
            "outreach_http_request_duration_seconds_sum",
            &one_resident
        )
        .is_some()
    );
    // Only templates: no raw path, id or phone ends up in a label; nor the scrape token.
    for leaked in ["987654", "13800001111", "no-such-place", TOKEN] {
        assert!(!text.contains(leaked), "{leaked} in the scrape");
    }
    // The pool of this application (five connections in tests).
    assert_eq!(
        sample(&text, "outreach_db_pool_max_connections", &[]),
        Some(5.0)
    );
    let in_use = sample(
        &text,
        "outreach_db_pool_connections",
        &[("state", "in_use")],
    );
    let idle = sample(&text, "outreach_db_pool_connections", &[("state", "idle")]);
    assert!(in_use.is_some() && idle.is_some(), "{text}");
    assert!(in_use.unwrap() + idle.unwrap() <= 5.0);
}

#[tokio::test]
async fn a_scheduled_run_is_counted_by_job_and_outcome() {
    let app = spawn_app_with(with_token).await;
    let runs = [("job", "purge_expired_tokens"), ("outcome", "succeeded")];
    let before = value(&scrape(&app).await, "outreach_scheduler_runs_total", &runs);
    let at = Utc::now();
    let outcome = try_execute_once(&app.state, Job::PurgeExpiredTokens, at).await;
    assert!(matches!(outcome, Outcome::Ran { .. }), "{outcome:?}");
    // The same firing again is claimed already.
    let again = try_execute_once(&app.state, Job::PurgeExpiredTokens, at).await;
    assert_eq!(again, Outcome::AlreadyClaimed);
    let text = scrape(&app).await;
    assert!(value(&text, "outreach_scheduler_runs_total", &runs) - before >= 1.0);
    assert!(
        value(
            &text,
            "outreach_scheduler_runs_total",
            &[
                ("job", "purge_expired_tokens"),
                ("outcome", "claimed_elsewhere")
            ]
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            "outreach_scheduler_run_duration_seconds_count",
            &runs
        ) >= 1.0
    );
}

#[tokio::test]
async fn without_the_token_the_scrape_is_refused_and_unconfigured_it_is_not_served() {
    let app = spawn_app_with(with_token).await;
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_eq!(
        error_code(anonymous, StatusCode::UNAUTHORIZED).await,
        "unauthorized"
    );
    // A wrong token, and a user's own API token, are not the scrape token.
    app.seed_areas().await;
    let office = app.office_token().await;
    for presented in [format!("{TOKEN}x"), office] {
        let response = app
            .client
            .get(app.url("/metrics"))
            .bearer_auth(presented)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response, StatusCode::UNAUTHORIZED).await,
            "unauthorized"
        );
    }
    // Without a token in the settings, the public listener does not serve it at all.
    let plain = spawn_app().await;
    let response = plain
        .client
        .get(plain.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
}

#[tokio::test]
async fn a_listener_of_its_own_serves_the_scrape_off_the_public_port() {
    let app = spawn_app_with(|s| s.metrics.bind = Some("127.0.0.1:0".parse().unwrap())).await;
    let apart = app.metrics_address.clone().expect("metrics listener");
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let response = app
        .client
        .get(format!("{apart}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        value(
            &text,
            "outreach_http_requests_total",
            &[("route", "/healthz"), ("status", "200")]
        ) >= 1.0,
        "{text}"
    );
    // Nothing else there, and nothing on the public listener without a token.
    let other = app
        .client
        .get(format!("{apart}/api/v1/areas"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(other, StatusCode::NOT_FOUND).await, "not_found");
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(error_code(public, StatusCode::NOT_FOUND).await, "not_found");
    // With a token set, the listener of its own asks for it too.
    let guarded = spawn_app_with(|s| {
        with_token(s);
        s.metrics.bind = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let apart = guarded.metrics_address.clone().expect("metrics listener");
    let response = guarded
        .client
        .get(format!("{apart}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(response, StatusCode::UNAUTHORIZED).await,
        "unauthorized"
    );
}

#[tokio::test]
async fn the_outbox_depth_and_a_send_through_the_provider_show_in_the_scrape() {
    let (url, gateway) = start_gateway().await;
    let app = spawn_app_with(move |s| {
        with_token(s);
        s.messaging.sms_provider = "jasmin".into();
        s.messaging.jasmin = Some(crate::sms_gateway::settings(&url, "s3cret"));
        s.messaging.webhooks.secret = Some(Secret::new(HOOK_SECRET));
        s.messaging.outbox.reminders.notice_at = NaiveTime::MIN;
        s.messaging.outbox.reminders.same_day_at = NaiveTime::MIN;
    })
    .await;
    app.seed_areas().await;
    let resident = flows::registry::create(
        &app.db,
        &app.state.privacy,
        &Actor::cli(),
        NewResident {
            name: "阿依古丽".into(),
            id_number: resident_id(1, "19700101"),
            village_code: VILLAGE.to_owned(),
            phone: Some("13800001111".into()),
            relative_name: None,
            relative_relation: None,
            relative_phone: None,
            migrant_type: None,
            permit_since: None,
            special: None,
            current_address: None,
            wechat_openid: None,
            email: None,
            language: None,
        },
    )
    .await
    .unwrap()
    .id;
    let campaign = crate::messaging::open_loud_campaign(&app).await;
    let institution = app.institution("XYZ-WSY", TOWNSHIP, &[TOWNSHIP], 20).await;
    let (_, cadre) = app.user("cadre.metrics", Role::Cadre, VILLAGE).await;
    let sends = [("provider", "jasmin"), ("outcome", "sent")];
    let before = scrape(&app).await;
    assert_eq!(
        sample(&before, "outreach_outbox_messages", &[("state", "queued")]),
        Some(0.0)
    );

    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/bookings"),
            &cadre,
            json!({"institution_id": institution, "day": registry::today() + Duration::days(1),
                   "resident_ids": [resident]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    // The notice waits to be sent; the same-day reminder waits for its day.
    let planned = scrape(&app).await;
    assert_eq!(
        sample(&planned, "outreach_outbox_messages", &[("state", "queued")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &planned,
            "outreach_outbox_messages",
            &[("state", "scheduled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &planned,
            "outreach_outbox_messages",
            &[("state", "sending")]
        ),
        Some(0.0)
    );

    let round = app.state.dispatcher().drain().await.unwrap();
    assert_eq!(round.sent, 1);
    assert_eq!(gateway.received.lock().unwrap().len(), 1);
    let sent = scrape(&app).await;
    assert_eq!(
        sample(&sent, "outreach_outbox_messages", &[("state", "queued")]),
        Some(0.0)
    );
    assert!(
        value(&sent, "outreach_dispatch_sends_total", &sends)
            - value(&before, "outreach_dispatch_sends_total", &sends)
            >= 1.0
    );
    assert!(
        value(
            &sent,
            "outreach_dispatch_send_duration_seconds_count",
            &sends
        ) - value(
            &before,
            "outreach_dispatch_send_duration_seconds_count",
            &sends
        ) >= 1.0
    );
    // Jasmin is held to its rate limit: the wait before the call is measured.
    assert!(
        value(
            &sent,
            "outreach_dispatch_rate_limit_wait_seconds_count",
            &[("provider", "jasmin")]
        ) >= 1.0,
        "{sent}"
    );

    // The gateway's delivery receipt.
    let receipts = [
        ("provider", "jasmin"),
        ("status", "delivered"),
        ("outcome", "moved"),
    ];
    let response = app
        .client
        .post(app.url(&format!("/webhooks/jasmin/dlr?token={HOOK_SECRET}")))
        .form(&[
            ("id", "gw-1"),
            ("message_status", "DELIVRD"),
            ("level", "2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = scrape(&app).await;
    assert!(
        value(&received, "outreach_receipts_total", &receipts)
            - value(&sent, "outreach_receipts_total", &receipts)
            >= 1.0,
        "{received}"
    );
    // The callback's route is its template: the secret in its query is no label.
    assert!(!received.contains(HOOK_SECRET));
}

#[tokio::test]
async fn an_import_counts_its_rows_by_result() {
    let app = spawn_app_with(with_token).await;
    let areas = [("kind", "areas"), ("result", "imported")];
    let before = scrape(&app).await;
    app.seed_areas().await;
    let seeded = scrape(&app).await;
    // Nine areas (other tests of this process may import theirs meanwhile).
    assert!(
        value(&seeded, "outreach_import_rows_total", &areas)
            - value(&before, "outreach_import_rows_total", &areas)
            >= 9.0,
        "{seeded}"
    );
    let office = app.office_token().await;
    let rows = |result: &'static str| [("kind", "residents"), ("result", result)];
    let csv = format!(
        "姓名,身份证号,户籍地区划代码\n张三,{},{VILLAGE}\n李四,{},{VILLAGE}\n王五,12345,{VILLAGE}\n",
        resident_id(1, "19800101"),
        resident_id(2, "19800101"),
    );
    let before = scrape(&app).await;
    let report: Value = app
        .upload_residents(&office, csv.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (report["imported"].as_u64(), report["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    let first = scrape(&app).await;
    let grew = |after: &str, before: &str, result| {
        value(after, "outreach_import_rows_total", &rows(result))
            - value(before, "outreach_import_rows_total", &rows(result))
    };
    assert!(grew(&first, &before, "imported") >= 2.0, "{first}");
    assert!(grew(&first, &before, "rejected") >= 1.0, "{first}");
    // The same file again: nothing new.
    let again: Value = app
        .upload_residents(&office, csv)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["unchanged"].as_u64(), Some(2));
    let second = scrape(&app).await;
    assert!(grew(&second, &first, "unchanged") >= 2.0, "{second}");
    // No ID number reaches the scrape.
    assert!(!second.contains(&resident_id(1, "19800101")));
}
