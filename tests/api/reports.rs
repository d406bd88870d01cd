//! Reports: every figure on a small fixture counted by hand; exempt residents leaving the
//! denominator; the migrant book apart; rankings with ties; scope; history (closed days,
//! date ranges, changes since the previous period); the XLSX read back cell by cell; the
//! bulletin e-mailed to a real SMTP server once per period, across a restart.

use std::io::Cursor;

use calamine::{Data, Reader};
use chrono::{Duration, Utc};
use entities::users::Role;
use outreach::auth::Actor;
use outreach::contact::Outcome;
use outreach::registry::{MigrantType, Special};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::campaigns::add_resident;
use crate::email::{self, start_smtp};
use crate::helpers::{
    COUNTY, OTHER_VILLAGE, TOWNSHIP, TestApp, VILLAGE, error_code, resident_id, spawn_app_with,
};
use crate::refusals::{attempt, enough_contact, strokes};

const VILLAGE_B: &str = "654025100202";
const OTHER_TOWNSHIP: &str = "654025101000";

/// The fixture's residents by name.
struct Fixture {
    app: TestApp,
    campaign: i32,
    office: String,
    a1: i32,
    a4: i32,
}

async fn sql(app: &TestApp, statement: String) {
    app.db
        .execute_raw(Statement::from_string(
            app.db.get_database_backend(),
            statement,
        ))
        .await
        .unwrap();
}

/// A timestamp literal both databases compare correctly with stored ones.
fn stamp(app: &TestApp, at: chrono::DateTime<Utc>) -> String {
    match app.db.get_database_backend() {
        sea_orm::DbBackend::Postgres => format!("'{}'::timestamptz", at.to_rfc3339()),
        // As sqlx writes it: SQLite compares these as text, and a space where the app's own
        // values have a `T` sorts a time before midnight UTC ahead of that day's boundaries.
        _ => format!(
            "'{}'",
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
        ),
    }
}

/// 新源镇 (阿勒玛勒村 A, 托格拉克村 B) and 则克台镇 (克孜勒塔斯村 C), one institution in 新源镇:
///
/// | who | village | what happened |
/// |---|---|---|
/// | a1 | A | called and reached today; examined at the institution (two days ago) |
/// | a2 | A | reached |
/// | a3 | A | called, no answer (notified) |
/// | a4 | A | booked |
/// | a5 | A | three attempts, refused, confirmed |
/// | a6 | A | deceased (exempt) |
/// | a7 | A | migrant out of region, examined elsewhere |
/// | a8 | A | migrant out of region, nothing |
/// | b1 | B | examined at the institution |
/// | b2 | B | nothing |
/// | c1 | C | examined at the institution in 新源镇 |
/// | c2, c3 | C | reached |
/// | c4 | C | moved out (exempt) |
///
/// The campaign opened three days ago (every row created then); a1's exam was two days ago.
async fn fixture(configure: impl FnOnce(&mut outreach::config::Settings)) -> Fixture {
    let app = spawn_app_with(configure).await;
    app.seed_areas().await;
    let campaign = app.open_campaign().await;
    let office = app.office_token().await;
    let institution = app.institution("XY-HC", TOWNSHIP, &[COUNTY], 50).await;
    let (_, cadre) = app.user("cadre.reports", Role::Cadre, VILLAGE).await;
    let cli = Actor::cli();
    let mut n = 0;
    let mut resident = |village: &'static str, migrant: Option<MigrantType>, special| {
        n += 1;
        let app = &app;
        async move { add_resident(app, resident_id(n, "19800101"), village, migrant, special).await }
    };
    let a1 = resident(VILLAGE, None, None).await;
    let a2 = resident(VILLAGE, None, None).await;
    let a3 = resident(VILLAGE, None, None).await;
    let a4 = resident(VILLAGE, None, None).await;
    let a5 = resident(VILLAGE, None, None).await;
    let a6 = resident(VILLAGE, None, None).await;
    let a7 = resident(VILLAGE, Some(MigrantType::OutOfRegion), None).await;
    let _a8 = resident(VILLAGE, Some(MigrantType::OutOfRegion), None).await;
    let b1 = resident(VILLAGE_B, None, None).await;
    let _b2 = resident(VILLAGE_B, None, None).await;
    let c1 = resident(OTHER_VILLAGE, None, None).await;
    let c2 = resident(OTHER_VILLAGE, None, None).await;
    let c3 = resident(OTHER_VILLAGE, None, None).await;
    let c4 = resident(OTHER_VILLAGE, None, None).await;
    for (who, special, reason) in [
        (a6, Special::Deceased, "病故"),
        (c4, Special::MovedOut, "迁往外县"),
    ] {
        outreach::flows::registry::mark(
            &app.db,
            &cli,
            who,
            special,
            outreach::registry::StatusChange {
                reason: reason.into(),
                date: None,
            },
        )
        .await
        .unwrap();
    }

    for who in [a1, a2] {
        outreach::flows::registry::set_tags(
            &app.db,
            &cli,
            who,
            outreach::campaign::tags::TagSet {
                tags: vec!["高血压".into()],
            },
        )
        .await
        .unwrap();
    }
    attempt(&app, &cli, campaign, a1, 0, Outcome::ReachedAgreed).await;
    attempt(&app, &cli, campaign, a2, 0, Outcome::ReachedAgreed).await;
    attempt(&app, &cli, campaign, a3, 0, Outcome::NoAnswer).await;
    attempt(&app, &cli, campaign, c2, 0, Outcome::ReachedAgreed).await;
    attempt(&app, &cli, campaign, c3, 0, Outcome::ReachedAgreed).await;

    let today = outreach::registry::today();
    let day = today + Duration::days(1);
    outreach::flows::booking::book(
        &app.db,
        &cli,
        campaign,
        outreach::appointment::BookingRequest {
            institution_id: institution,
            day,
            resident_ids: vec![a4],
            client_key: None,
        },
        &app.state.settings.messaging.outbox.reminders,
    )
    .await
    .unwrap();

    enough_contact(&app, campaign, a5).await;
    let registered = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{a5}/refusals"),
            &cadre,
            json!({"reason": "unwilling", "signer_name": "王某某", "signer_relation": "self",
                   "signature_strokes": strokes()}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let registered: Value = registered.json().await.unwrap();
    let confirmed = app
        .post(
            &format!("/api/v1/refusals/{}/confirm", registered["id"]),
            &office,
            json!({}),
        )
        .await;
    assert_eq!(confirmed.status(), StatusCode::OK);

    for who in [a1, b1, c1] {
        outreach::flows::exams::record_at_institution(
            &app.db,
            &cli,
            campaign,
            outreach::exam::InstitutionExam {
                resident_id: who,
                examined_on: today,
                institution_id: Some(institution),
            },
        )
        .await
        .unwrap();
    }
    outreach::flows::exams::record_elsewhere(
        &app.db,
        &cli,
        campaign,
        a7,
        outreach::exam::ElsewhereExam {
            examined_on: today,
            place: "乌鲁木齐市第一人民医院".into(),
            examiner: "体检科".into(),
            note: None,
            evidence_base64: None,
            evidence_name: None,
            evidence_type: None,
        },
    )
    .await
    .unwrap();

    // History: the campaign opened three days ago, a1 was examined two days ago.
    let three_days_ago = stamp(&app, Utc::now() - Duration::days(3));
    let two_days_ago = stamp(&app, Utc::now() - Duration::days(2));
    sql(
        &app,
        format!("UPDATE campaigns SET opened_at = {three_days_ago} WHERE id = {campaign}"),
    )
    .await;
    sql(
        &app,
        format!(
            "UPDATE enrolments SET created_at = {three_days_ago}, \
             exempt_at = CASE WHEN stage = 'exempt' THEN {three_days_ago} END \
             WHERE campaign_id = {campaign}"
        ),
    )
    .await;
    sql(
        &app,
        format!(
            "UPDATE enrolments SET examined_at = {two_days_ago} \
             WHERE campaign_id = {campaign} AND resident_id = {a1}"
        ),
    )
    .await;
    let refreshed = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            &office,
            json!({}),
        )
        .await;
    let status = refreshed.status();
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(
        refreshed["days_computed"].as_array().unwrap().len(),
        3,
        "{refreshed}"
    );
    Fixture {
        app,
        campaign,
        office,
        a1,
        a4,
    }
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.get(path, token).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

fn row<'a>(rows: &'a Value, key: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key} in {rows}"))
}

/// Checks the counts of a report row (population, exempt, target, notified, reached,
/// appointed, examined, elsewhere, refused) and its rates against the same counts.
fn assert_counts(row: &Value, counts: [i64; 9]) {
    let names = [
        "population",
        "exempt",
        "target",
        "notified",
        "reached",
        "appointed",
        "examined",
        "examined_elsewhere",
        "refused",
    ];
    for (name, expected) in names.iter().zip(counts) {
        assert_eq!(row[name], expected, "{name} in {row}");
    }
    let target = counts[2] as f64;
    let close = |name: &str, part: i64| {
        let got = row[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} in {row}"));
        assert!(
            (got - part as f64 / target).abs() < 1e-9,
            "{name} {got} in {row}"
        );
    };
    close("reach_rate", counts[4]);
    close("exam_rate", counts[6]);
    close("refusal_rate", counts[8]);
}

#[tokio::test]
async fn every_figure_matches_the_hand_count() {
    let f = fixture(|_| {}).await;
    let (app, campaign) = (&f.app, f.campaign);
    let base = format!("/api/v1/campaigns/{campaign}/reports/progress");

    // County by township (the default for the office).
    let county = get_json(app, &base, &f.office).await;
    assert_eq!(county["by"], "township");
    assert_eq!(county["as_of"]["kind"], "live");
    //                          pop ex tgt not rch app exm else ref
    assert_counts(&county["total"], [14, 2, 12, 10, 9, 5, 4, 1, 1]);
    let xinyuan = row(&county["rows"], TOWNSHIP);
    assert_eq!(xinyuan["name"], "新源镇");
    assert_counts(xinyuan, [10, 1, 9, 7, 6, 4, 3, 1, 1]);
    // By examining place: a1, b1 and c1 (a resident of 则克台镇) at 新源镇's institution.
    assert_eq!(xinyuan["examined_here"], 3);
    let zeketai = row(&county["rows"], OTHER_TOWNSHIP);
    assert_counts(zeketai, [4, 1, 3, 3, 3, 1, 1, 0, 0]);
    assert_eq!(zeketai["examined_here"], 0);

    // The migrant book apart: a7 and a8, out of region; a7 examined elsewhere.
    let migrants = &county["migrants"];
    assert_eq!(migrants.as_array().unwrap().len(), 1, "{migrants}");
    let out_of_region = row(migrants, "out_of_region");
    assert_eq!(out_of_region["name"], "疆外");
    assert_counts(out_of_region, [2, 0, 2, 1, 1, 1, 1, 1, 0]);
    assert_counts(&county["migrants_total"], [2, 0, 2, 1, 1, 1, 1, 1, 0]);

    // Villages of 新源镇.
    let villages = get_json(app, &format!("{base}?area={TOWNSHIP}"), &f.office).await;
    assert_eq!(villages["by"], "village");
    assert_eq!(villages["rows"].as_array().unwrap().len(), 2);
    assert_counts(row(&villages["rows"], VILLAGE), [8, 1, 7, 6, 5, 3, 2, 1, 1]);
    assert_counts(
        row(&villages["rows"], VILLAGE_B),
        [2, 0, 2, 1, 1, 1, 1, 0, 0],
    );

    // A slice: migrants only, by village; local residents only.
    let sliced = get_json(
        app,
        &format!("{base}?area={TOWNSHIP}&by=village&migrant_type=out_of_region"),
        &f.office,
    )
    .await;
    assert_counts(&sliced["total"], [2, 0, 2, 1, 1, 1, 1, 1, 0]);
    assert_eq!(row(&sliced["rows"], VILLAGE_B)["population"], 0);
    assert!(row(&sliced["rows"], VILLAGE_B)["exam_rate"].is_null());
    let local = get_json(
        app,
        &format!("{base}?by=none&migrant_type=local"),
        &f.office,
    )
    .await;
    assert_counts(&local["total"], [12, 2, 10, 9, 8, 4, 3, 0, 1]);
    assert!(local["migrants"].as_array().unwrap().is_empty());

    // By special situation: the exempt residents are counted apart and outside the target.
    let special = get_json(app, &format!("{base}?by=special"), &f.office).await;
    let deceased = row(&special["rows"], "deceased");
    assert_eq!(deceased["name"], "死亡");
    assert_eq!(deceased["population"], 1);
    assert_eq!(deceased["target"], 0);
    assert!(deceased["exam_rate"].is_null());

    // Targets: 65+ has nobody; everyone is in 15-64.
    // Targets (the plan's: 65 and over, hypertension, diabetes at 95 %): nobody here is 65,
    // so no rate and not met; a1 (examined) and a2 have hypertension: 1 of 2.
    let targets = county["targets"].as_array().unwrap();
    let target = |group: &str| targets.iter().find(|t| t["group"] == group).unwrap();
    assert_eq!(target("65+")["goal_percent"], 95.0);
    assert_eq!(target("65+")["target"], 0);
    assert_eq!(target("65+")["met"], false);
    assert_eq!(target("65+")["status"], "no_data");
    assert_eq!(target("hypertension")["name"], "高血压");
    assert_eq!(target("hypertension")["target"], 2);
    assert_eq!(target("hypertension")["examined"], 1);
    assert_eq!(target("hypertension")["exam_rate"], 0.5);
    assert_eq!(target("hypertension")["status"], "missed");
    assert_eq!(target("hypertension")["status_label"], "未达标");
    // Nobody tagged diabetic: no data, not missed.
    assert_eq!(target("diabetes")["target"], 0);
    assert!(target("diabetes")["exam_rate"].is_null());
    assert_eq!(target("diabetes")["status"], "no_data");
    assert_eq!(target("diabetes")["status_label"], "无数据");

    // Bad slices: 422, not 500.
    for query in [
        "by=colour",
        "cohort=12-13",
        "special=flying",
        "route=air",
        "migrant_type=astronaut",
        "area=12",
        "from=2026-05-02&to=2026-05-01",
        "from=2999-01-01",
        "to=0001-01-01",
        "format=pdf",
    ] {
        let response = app.get(&format!("{base}?{query}"), &f.office).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
    }
    let malformed = app.get(&format!("{base}?to=2026-13-01"), &f.office).await;
    assert!(malformed.status().is_client_error());
    let _ = f.a1;
}

#[tokio::test]
async fn scope_limits_every_report() {
    let f = fixture(|_| {}).await;
    let (app, campaign) = (&f.app, f.campaign);
    let (_, township) = app.user("township.reports", Role::Township, TOWNSHIP).await;
    let (_, cadre_c) = app.user("cadre.c", Role::Cadre, OTHER_VILLAGE).await;
    let (_, institution) = app.user("inst.reports", Role::Institution, TOWNSHIP).await;
    let base = format!("/api/v1/campaigns/{campaign}/reports/progress");

    // The township officer sees their two villages and nothing of 则克台镇.
    let own = get_json(app, &base, &township).await;
    assert_eq!(own["area_code"], TOWNSHIP);
    assert_eq!(own["by"], "village");
    assert_eq!(own["rows"].as_array().unwrap().len(), 2);
    assert_counts(&own["total"], [10, 1, 9, 7, 6, 4, 3, 1, 1]);
    let other = app
        .get(&format!("{base}?area={OTHER_TOWNSHIP}"), &township)
        .await;
    error_code(other, StatusCode::FORBIDDEN).await;
    let ranked = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/rankings"),
        &township,
    )
    .await;
    assert_eq!(ranked["level"], "village");
    assert_eq!(ranked["areas"].as_array().unwrap().len(), 2);

    // A cadre: their village only.
    let village = get_json(app, &base, &cadre_c).await;
    assert_counts(&village["total"], [4, 1, 3, 3, 3, 1, 1, 0, 0]);
    let contacts = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/contacts"),
        &cadre_c,
    )
    .await;
    let calls = &contacts["attempts"][0];
    assert_eq!(calls["channel"], "phone_call");
    assert_eq!(calls["attempts"], 2);
    assert_eq!(calls["reached"], 2);
    let other = app.get(&format!("{base}?area={VILLAGE}"), &cadre_c).await;
    error_code(other, StatusCode::FORBIDDEN).await;

    // Institution staff have no reports; only the office refreshes.
    let denied = app.get(&base, &institution).await;
    error_code(denied, StatusCode::FORBIDDEN).await;
    let refresh = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            &township,
            json!({}),
        )
        .await;
    error_code(refresh, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn closed_days_ranges_series_and_rankings() {
    let f = fixture(|_| {}).await;
    let (app, campaign) = (&f.app, f.campaign);
    let today = outreach::registry::today();
    let day = |n: i64| today - Duration::days(n);

    // Yesterday's end: only a1 examined (two days ago, so reached and notified then); a5,
    // whose first two attempts were yesterday, notified.
    let yesterday = get_json(
        app,
        &format!(
            "/api/v1/campaigns/{campaign}/reports/progress?by=none&to={}",
            day(1)
        ),
        &f.office,
    )
    .await;
    assert_eq!(yesterday["as_of"]["kind"], "day");
    assert_counts(&yesterday["total"], [14, 2, 12, 2, 1, 1, 1, 0, 0]);

    // From two days ago to yesterday: a1's exam (and so reach) and a5's notice.
    let range = get_json(
        app,
        &format!(
            "/api/v1/campaigns/{campaign}/reports/progress?by=none&from={}&to={}",
            day(2),
            day(1)
        ),
        &f.office,
    )
    .await;
    assert_counts(&range["total"], [14, 2, 12, 2, 1, 1, 1, 0, 0]);
    let one_day = get_json(
        app,
        &format!(
            "/api/v1/campaigns/{campaign}/reports/progress?by=none&from={}&to={}",
            day(1),
            day(1)
        ),
        &f.office,
    )
    .await;
    assert_counts(&one_day["total"], [14, 2, 12, 1, 0, 0, 0, 0, 0]);

    // The series: three closed days and today, cumulative.
    let series = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/series?days=10"),
        &f.office,
    )
    .await;
    let points = series["points"].as_array().unwrap();
    let examined: Vec<(String, i64)> = points
        .iter()
        .map(|p| {
            (
                p["day"].as_str().unwrap().to_owned(),
                p["examined"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        examined,
        vec![
            (day(3).to_string(), 0),
            (day(2).to_string(), 1),
            (day(1).to_string(), 1),
            (today.to_string(), 4),
        ]
    );
    assert!(series["pending_days"].as_array().unwrap().is_empty());
    let by_township = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/series?days=2&by=township"),
        &f.office,
    )
    .await;
    assert_eq!(by_township["points"].as_array().unwrap().len(), 4);

    // Rankings: both townships examined a third of their target (a tie, rank 1 each); by
    // reach 则克台镇 (3/3) leads 新源镇 (6/9). Against yesterday:
    // 新源镇 went from 1/9 to 3/9, 则克台镇 from 0 to 1/3.
    let ranked = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/rankings?period=day"),
        &f.office,
    )
    .await;
    assert_eq!(ranked["previous_day"], day(1).to_string());
    let areas = ranked["areas"].as_array().unwrap();
    assert_eq!(areas.len(), 2);
    let find = |code: &str| areas.iter().find(|a| a["code"] == code).unwrap();
    let (xinyuan, zeketai) = (find(TOWNSHIP), find(OTHER_TOWNSHIP));
    assert_eq!(xinyuan["exam"]["rank"], 1);
    assert_eq!(zeketai["exam"]["rank"], 1);
    // Tied at the top: nobody is ahead, nobody is called out.
    assert_eq!(xinyuan["exam"]["bottom_three"], false);
    assert_eq!(zeketai["exam"]["bottom_three"], false);
    assert_eq!(zeketai["reach"]["rank"], 1);
    assert_eq!(xinyuan["reach"]["rank"], 2);
    assert_eq!(xinyuan["reach"]["bottom_three"], true);
    assert_eq!(zeketai["reach"]["bottom_three"], false);
    let change = |a: &Value| a["exam"]["rate_change"].as_f64().unwrap();
    assert!(
        (change(xinyuan) - (3.0 / 9.0 - 1.0 / 9.0)).abs() < 1e-9,
        "{xinyuan}"
    );
    assert!((change(zeketai) - 1.0 / 3.0).abs() < 1e-9, "{zeketai}");
    // Yesterday 新源镇 led alone (1/9 against 0): it kept rank 1; 则克台镇 moved up one.
    assert_eq!(xinyuan["exam"]["rank_change"], 0);
    assert_eq!(zeketai["exam"]["rank_change"], 1);

    // a4's booking is cancelled: no longer appointed once the figures are rebuilt; a
    // refresh keeps the closed days as they were.
    let appointment = outreach::appointment::active_of(&app.db, campaign, f.a4)
        .await
        .unwrap()
        .unwrap();
    outreach::flows::booking::cancel(
        &app.db,
        &Actor::cli(),
        appointment.id,
        outreach::appointment::Cancellation {
            reason: "家中有事".into(),
        },
    )
    .await
    .unwrap();
    let again = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            &f.office,
            json!({}),
        )
        .await;
    let again: Value = again.json().await.unwrap();
    assert!(
        again["days_computed"].as_array().unwrap().is_empty(),
        "{again}"
    );
    let now = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/progress?by=none"),
        &f.office,
    )
    .await;
    // a4 stays reached: a booking was made with them.
    assert_counts(&now["total"], [14, 2, 12, 10, 9, 4, 4, 1, 1]);
    let later = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/series?days=10"),
        &f.office,
    )
    .await;
    let closed = |s: &Value| {
        s["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["day"] != today.to_string())
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(closed(&later), closed(&series));
    assert_eq!(closed(&later).len(), 3);
}

#[tokio::test]
async fn message_figures_count_sent_delivered_failed_and_replies() {
    let f = fixture(|_| {}).await;
    let (app, campaign) = (&f.app, f.campaign);
    // Three SMS to own phones through aliyun (two delivered, one failed), one WeChat
    // delivered, one still queued (not sent).
    let now = stamp(app, Utc::now());
    for (i, (route, provider, state, sent, delivered)) in [
        ("phone", "aliyun", "delivered", true, true),
        ("phone", "aliyun", "delivered", true, true),
        ("phone", "aliyun", "failed", true, false),
        ("wechat", "wechat", "delivered", true, true),
        ("phone", "aliyun", "queued", false, false),
    ]
    .into_iter()
    .enumerate()
    {
        let sent_at = if sent { now.clone() } else { "NULL".into() };
        let delivered_at = if delivered {
            now.clone()
        } else {
            "NULL".into()
        };
        sql(
            app,
            format!(
                "INSERT INTO messages (campaign_id, resident_id, kind, idempotency_key, state, \
                 due_at, expires_at, next_attempt_at, attempts, step, route, channel, provider, \
                 created_at, sent_at, delivered_at) VALUES ({campaign}, {}, 'wave_call', \
                 'test.{i}', '{state}', {now}, {now}, {now}, 1, 0, '{route}', '{provider}', \
                 '{provider}', {now}, {sent_at}, {delivered_at})",
                f.a1
            ),
        )
        .await;
    }
    // An e-mail the mail server accepted (e-mail has no receipt: delivered); a message that
    // failed for lack of any channel (no route, channel or provider); a reply-routed message
    // suppressed by an opt-out before it went (a route, but no channel or provider).
    for (i, route, state, sent_at) in [
        (5, "'email'", "sent", now.clone()),
        (6, "NULL", "failed", "NULL".to_owned()),
        (7, "'phone'", "suppressed", "NULL".to_owned()),
    ] {
        let (channel, provider) = match route {
            "'email'" => ("'email'", "'smtp'"),
            _ => ("NULL", "NULL"),
        };
        sql(
            app,
            format!(
                "INSERT INTO messages (campaign_id, resident_id, kind, idempotency_key, state, \
                 due_at, expires_at, next_attempt_at, attempts, step, route, channel, provider, \
                 created_at, sent_at) VALUES ({campaign}, {}, 'wave_call', 'test.{i}', \
                 '{state}', {now}, {now}, {now}, 1, 0, {route}, {channel}, {provider}, {now}, \
                 {sent_at})",
                f.a1
            ),
        )
        .await;
    }
    sql(
        app,
        format!(
            "INSERT INTO inbound_replies (provider, from_masked, text, action, village_code, \
             received_at) VALUES ('aliyun', '138****0000', 'TD', 'opt_out', '{VILLAGE}', {now}), \
             ('aliyun', '138****0001', '你好', 'unmatched', NULL, {now})"
        ),
    )
    .await;
    let refreshed = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            &f.office,
            json!({}),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let contacts = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/contacts"),
        &f.office,
    )
    .await;
    let channels = contacts["channels"].as_array().unwrap();
    let sms = channels.iter().find(|c| c["channel"] == "phone").unwrap();
    assert_eq!(sms["provider"], "aliyun");
    assert_eq!(
        (
            sms["sent"].as_i64(),
            sms["delivered"].as_i64(),
            sms["failed"].as_i64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert!((sms["delivery_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    let line = |channel: &str| {
        channels
            .iter()
            .find(|c| c["channel"] == channel)
            .unwrap_or_else(|| panic!("no {channel} in {contacts}"))
    };
    let email = line("email");
    assert_eq!(
        (email["sent"].as_i64(), email["delivered"].as_i64()),
        (Some(1), Some(1))
    );
    let none = line("none");
    assert_eq!(none["channel_name"], "无可用渠道");
    assert_eq!(
        (
            none["sent"].as_i64(),
            none["delivered"].as_i64(),
            none["failed"].as_i64()
        ),
        (Some(0), Some(0), Some(1))
    );
    // The suppressed message never went: no line of its own, nothing counted.
    assert_eq!(channels.len(), 4, "{contacts}");
    assert_eq!(contacts["messages"]["sent"], 5);
    assert_eq!(contacts["messages"]["delivered"], 4);
    assert_eq!(contacts["messages"]["failed"], 2);
    assert!((contacts["messages"]["delivery_rate"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    let note = contacts["note"].as_str().unwrap();
    assert!(
        note.contains("电子邮件") && note.contains("无可用渠道"),
        "{note}"
    );
    // Calls: a1, a2, a3, c2, c3 and a5's three.
    let calls = &contacts["attempts"][0];
    assert_eq!(calls["attempts"], 8);
    assert_eq!(calls["reached"], 5);
    let replies = contacts["replies"].as_array().unwrap();
    let count = |action: &str| {
        replies
            .iter()
            .find(|r| r["action"] == action)
            .map(|r| r["replies"].as_i64().unwrap())
    };
    assert_eq!(count("opt_out"), Some(1), "{contacts}");
    assert_eq!(count("unmatched"), Some(1));
}

/// The sheet names, cells and formats of an XLSX download.
fn sheet(bytes: &[u8], name: &str) -> calamine::Range<Data> {
    let mut workbook = calamine::Xlsx::new(Cursor::new(bytes.to_vec())).unwrap();
    workbook.worksheet_range(name).unwrap()
}

/// A file of the XLSX package, as text.
fn xlsx_part(bytes: &[u8], part: &str) -> String {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut file = archive.by_name(part).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).unwrap();
    text
}

#[tokio::test]
async fn exports_open_back_cell_by_cell() {
    let f = fixture(|_| {}).await;
    let (app, campaign) = (&f.app, f.campaign);
    let base = format!("/api/v1/campaigns/{campaign}/reports/progress");
    let response = app.get(&format!("{base}?format=xlsx"), &f.office).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("spreadsheetml")
    );
    let bytes = response.bytes().await.unwrap();
    let table = sheet(&bytes, "体检进度");
    let header: Vec<String> = (0..15)
        .map(|c| table.get_value((0, c)).unwrap().to_string())
        .collect();
    assert_eq!(
        header,
        [
            "代码",
            "乡镇（场）",
            "户籍人口",
            "豁免（死亡、迁出）",
            "应检人数",
            "已通知",
            "已触达",
            "触达率",
            "已预约",
            "已体检",
            "体检率",
            "其中外地体检",
            "本地机构体检（按体检地）",
            "拒检",
            "拒检率"
        ]
    );
    // Row 1: 新源镇 (codes sort 100000 before 101000); numbers as numbers, rates as
    // fractions with a percent format.
    let cell = |r: u32, c: u32| table.get_value((r, c)).cloned().unwrap_or(Data::Empty);
    assert_eq!(cell(1, 0), Data::String(TOWNSHIP.into()));
    assert_eq!(cell(1, 1), Data::String("新源镇".into()));
    let numbers: Vec<Data> = (2..15).map(|c| cell(1, c)).collect();
    assert_eq!(
        numbers,
        [
            Data::Float(10.0),
            Data::Float(1.0),
            Data::Float(9.0),
            Data::Float(7.0),
            Data::Float(6.0),
            Data::Float(6.0 / 9.0),
            Data::Float(4.0),
            Data::Float(3.0),
            Data::Float(3.0 / 9.0),
            Data::Float(1.0),
            Data::Float(3.0),
            Data::Float(1.0),
            Data::Float(1.0 / 9.0),
        ]
    );
    // The last row is the total.
    assert_eq!(cell(3, 1), Data::String("合计".into()));
    assert_eq!(cell(3, 4), Data::Float(12.0));
    assert_eq!(cell(3, 9), Data::Float(4.0));
    // The migrant book and the targets come as sheets of their own; 说明 says as of when.
    assert_eq!(
        sheet(&bytes, "流动人口").get_value((1, 1)),
        Some(&Data::String("疆外".into()))
    );
    let about = sheet(&bytes, "说明");
    assert_eq!(
        about.get_value((3, 0)),
        Some(&Data::String("数据截至".into()))
    );
    // Key groups nobody is in say so (无数据), the others whether they met the goal.
    let targets = sheet(&bytes, "重点人群目标");
    let status_of = |name: &str| {
        (1..targets.height() as u32)
            .find(|r| targets.get_value((*r, 0)) == Some(&Data::String(name.into())))
            .and_then(|r| targets.get_value((r, 5)).cloned())
    };
    assert_eq!(status_of("糖尿病"), Some(Data::String("无数据".into())));
    assert_eq!(status_of("高血压"), Some(Data::String("未达标".into())));
    // The percent format and the frozen header row, in the package itself.
    assert!(xlsx_part(&bytes, "xl/styles.xml").contains("formatCode=\"0.00%\""));
    let sheet1 = xlsx_part(&bytes, "xl/worksheets/sheet1.xml");
    assert!(
        sheet1.contains("ySplit=\"1\"") && sheet1.contains("state=\"frozen\""),
        "{sheet1}"
    );

    // CSV: a BOM, the same headers, rates as percentages.
    let csv = app.get(&format!("{base}?format=csv"), &f.office).await;
    assert_eq!(csv.status(), StatusCode::OK);
    let csv = csv.bytes().await.unwrap();
    assert!(csv.starts_with(b"\xEF\xBB\xBF"));
    let text = String::from_utf8(csv[3..].to_vec()).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("代码,乡镇（场）,户籍人口")
    );
    assert_eq!(
        lines.next().unwrap(),
        format!("{TOWNSHIP},新源镇,10,1,9,7,6,66.67%,4,3,33.33%,1,3,1,11.11%")
    );

    // Rankings and the message figures download too.
    for path in ["rankings", "contacts", "series"] {
        let response = app
            .get(
                &format!("/api/v1/campaigns/{campaign}/reports/{path}?format=xlsx"),
                &f.office,
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = response.bytes().await.unwrap();
        assert!(calamine::Xlsx::new(Cursor::new(bytes.to_vec())).is_ok());
    }
}

/// Subject, recipients, Message-ID, the text and the attachment of a received mail.
fn read_mail(raw: &[u8]) -> (String, String, String, String, Vec<u8>) {
    let message = email::parse(raw);
    let attachment = message
        .attachments()
        .next()
        .expect("an attachment")
        .contents()
        .to_vec();
    (
        message.subject().unwrap_or_default().to_owned(),
        email::to_header(&message),
        format!("<{}>", message.message_id().unwrap_or_default()),
        message.body_text(0).unwrap_or_default().into_owned(),
        attachment,
    )
}

#[tokio::test]
async fn a_bulletin_goes_out_once_per_period_across_a_restart() {
    let smtp = start_smtp();
    let port = smtp.port;
    let f = fixture(move |settings| {
        settings.messaging.smtp = Some(email::settings(port));
        settings.reports.bulletins.recipients = vec![
            "office@xinyuan.example".into(),
            "leader@xinyuan.example".into(),
        ];
        settings.reports.bulletins.weekly = None;
        settings.reports.bulletins.monthly = None;
    })
    .await;
    let (app, campaign) = (&f.app, f.campaign);
    // 10:00 today in the campaign's time zone: the 08:00 firing reports yesterday.
    let tz = outreach::campaign::get(&app.db, campaign)
        .await
        .unwrap()
        .timezone;
    let today = outreach::registry::today();
    let now = outreach::time::at_local(
        tz,
        today,
        chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
    );
    let detail = outreach::report::bulletin::send_due(&app.state.db, &app.state.settings, now)
        .await
        .unwrap();
    assert!(detail.contains("sent"), "{detail}");
    let files = smtp.wait_for(1);
    assert_eq!(files.len(), 1);
    let (subject, to, id, body, attachment) = read_mail(&files[0]);

    // The period is the day that ended before today's 08:00 firing (Asia/Shanghai).
    let history = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/bulletins"),
        &f.office,
    )
    .await;
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "sent");
    assert_eq!(runs[0]["kind"], "daily");
    let period = runs[0]["period"].as_str().unwrap().to_owned();
    assert_eq!(period, (today - Duration::days(1)).to_string());
    assert!(
        subject.contains("每日数据") && subject.contains(&period),
        "{subject}"
    );
    assert!(to.contains("office@xinyuan.example") && to.contains("leader@xinyuan.example"));
    assert_eq!(
        id,
        format!("<bulletin.{campaign}.daily.{period}@xinyuan.example>")
    );
    assert_eq!(runs[0]["message_id"], id);
    assert!(body.contains("应检 12 人"), "{body}");
    // Targets: hypertension (1 of 2) is missed; nobody is 65 or tagged diabetic: no data,
    // not missed.
    assert!(
        body.contains("高血压体检率 50.0%，未达到 95% 的目标"),
        "{body}"
    );
    assert!(body.contains("65岁及以上、糖尿病：暂无数据"), "{body}");
    assert!(!body.contains("糖尿病体检率"), "{body}");
    // The workbook attached is the report as yesterday ended (only a1 examined then): the
    // township table with its total, then the rankings.
    let table = sheet(&attachment, "体检进度");
    assert_eq!(table.get_value((3, 1)), Some(&Data::String("合计".into())));
    assert_eq!(table.get_value((3, 4)), Some(&Data::Float(12.0)));
    assert_eq!(table.get_value((3, 9)), Some(&Data::Float(1.0)));
    assert!(sheet(&attachment, "排名").get_value((1, 0)).is_some());

    // The job runs again, and again after a restart: nothing more goes out.
    outreach::report::bulletin::send_due(&app.state.db, &app.state.settings, now)
        .await
        .unwrap();
    let restarted = outreach::startup::Application::build((*app.state.settings).clone())
        .await
        .unwrap();
    let detail = outreach::report::bulletin::send_due(
        &restarted.state().db,
        &restarted.state().settings,
        now,
    )
    .await
    .unwrap();
    assert_eq!(detail, "nothing due");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(smtp.mails().len(), 1);

    // The office may send it again on purpose; that is a second e-mail and one run row.
    let again = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/bulletins"),
            &f.office,
            json!({"kind": "daily"}),
        )
        .await;
    error_code(again, StatusCode::CONFLICT).await;
    let again = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/bulletins"),
            &f.office,
            json!({"kind": "daily", "resend": true}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["status"], "sent");
    assert_eq!(again["attempts"], 2);
    // Its own Message-ID, so the first one's receivers do not drop it as a repeat.
    assert_eq!(
        again["message_id"],
        format!("<bulletin.{campaign}.daily.{period}.2@xinyuan.example>")
    );
    smtp.wait_for(2);
}

#[tokio::test]
async fn a_failed_bulletin_is_recorded_and_tried_again() {
    // No server listens on this port.
    let port = email::free_port();
    let f = fixture(move |settings| {
        settings.messaging.smtp = Some(outreach::outreach::channel::SmtpSettings {
            timeout_secs: 2,
            ..email::settings(port)
        });
        settings.reports.bulletins.recipients = vec!["office@xinyuan.example".into()];
        settings.reports.bulletins.weekly = None;
        settings.reports.bulletins.monthly = None;
        settings.reports.bulletins.max_attempts = 2;
    })
    .await;
    let (app, campaign) = (&f.app, f.campaign);
    for _ in 0..3 {
        outreach::report::bulletin::send_due(&app.state.db, &app.state.settings, Utc::now())
            .await
            .unwrap();
    }
    let history = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/bulletins"),
        &f.office,
    )
    .await;
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "failed");
    // Tried twice (the limit), not three times.
    assert_eq!(runs[0]["attempts"], 2);
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("无法连接邮件服务器"),
        "{}",
        runs[0]
    );
}

#[tokio::test]
async fn a_bulletin_cut_off_while_building_goes_out_but_one_cut_off_while_sending_does_not() {
    let smtp = start_smtp();
    let port = smtp.port;
    let f = fixture(move |settings| {
        settings.messaging.smtp = Some(email::settings(port));
        settings.reports.bulletins.recipients = vec!["office@xinyuan.example".into()];
        settings.reports.bulletins.monthly = None;
    })
    .await;
    let (app, campaign) = (&f.app, f.campaign);
    let tz = outreach::campaign::get(&app.db, campaign)
        .await
        .unwrap()
        .timezone;
    let today = outreach::registry::today();
    let now = outreach::time::at_local(
        tz,
        today,
        chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
    );
    let yesterday = today - Duration::days(1);
    // Opened ten days ago: last week is due too.
    let ten_days_ago = stamp(app, Utc::now() - Duration::days(10));
    sql(
        app,
        format!("UPDATE campaigns SET opened_at = {ten_days_ago} WHERE id = {campaign}"),
    )
    .await;
    // A run that died while building yesterday's daily bulletin (20 minutes ago), and one
    // that died while the mail server had this week's.
    let stale = stamp(app, Utc::now() - Duration::minutes(20));
    sql(
        app,
        format!(
            "INSERT INTO bulletins (campaign_id, kind, period, period_end, status, recipients, \
             attempts, requested_by, created_at, started_at) VALUES \
             ({campaign}, 'daily', '{yesterday}', '{yesterday}', 'building', 'office@xinyuan.example', 1, 'scheduler', {stale}, {stale})"
        ),
    )
    .await;
    let week =
        outreach::report::bulletin::Period::before(outreach::report::bulletin::Kind::Weekly, today);
    let stale_send = stamp(app, Utc::now() - Duration::minutes(45));
    sql(
        app,
        format!(
            "INSERT INTO bulletins (campaign_id, kind, period, period_end, status, recipients, \
             attempts, requested_by, created_at, started_at) VALUES \
             ({campaign}, 'weekly', '{}', '{}', 'sending', 'office@xinyuan.example', 1, 'scheduler', {stale_send}, {stale_send})",
            week.key, week.end
        ),
    )
    .await;
    outreach::report::bulletin::send_due(&app.state.db, &app.state.settings, now)
        .await
        .unwrap();
    smtp.wait_for(1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let files = smtp.mails();
    assert_eq!(files.len(), 1, "only the daily bulletin goes out");
    let (subject, ..) = read_mail(&files[0]);
    assert!(subject.contains("每日数据"), "{subject}");
    let history = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/bulletins"),
        &f.office,
    )
    .await;
    let run = |kind: &str| {
        history
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["kind"] == kind)
            .unwrap()
            .clone()
    };
    assert_eq!(run("daily")["status"], "sent");
    assert_eq!(run("daily")["attempts"], 2);
    assert_eq!(run("weekly")["status"], "sending");
    assert_eq!(run("weekly")["interrupted"], true);
}

/// The figures of one report row as (notified, reached, appointed, examined).
fn funnel(row: &Value) -> [i64; 4] {
    ["notified", "reached", "appointed", "examined"].map(|k| row[k].as_i64().unwrap())
}

/// notified ≥ reached ≥ appointed ≥ examined in every row and the total of a report.
fn assert_monotone(report: &Value) {
    for row in report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&report["total"]])
    {
        let [notified, reached, appointed, examined] = funnel(row);
        assert!(
            notified >= reached && reached >= appointed && appointed >= examined,
            "not a funnel: {row}"
        );
    }
}

#[tokio::test]
async fn the_funnel_holds_in_every_slice_and_old_rows_are_repaired() {
    let f = fixture(|_| {}).await;
    let (app, campaign) = (&f.app, f.campaign);
    // Progress rows as an older version left them: booked and examined residents (a1, a4,
    // a7, b1, c1) with no time of notice or reach — 则克台镇 then showed its exam and nobody
    // reached.
    sql(
        app,
        format!(
            "UPDATE enrolments SET notified_at = NULL, reached_at = NULL \
             WHERE campaign_id = {campaign} AND stage IN ('appointed', 'examined')"
        ),
    )
    .await;
    let refreshed = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            &f.office,
            json!({}),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let base = format!("/api/v1/campaigns/{campaign}/reports/progress");
    let county = get_json(app, &base, &f.office).await;
    assert_counts(&county["total"], [14, 2, 12, 10, 9, 5, 4, 1, 1]);
    assert_counts(
        row(&county["rows"], OTHER_TOWNSHIP),
        [4, 1, 3, 3, 3, 1, 1, 0, 0],
    );
    // The rows themselves are repaired: reached (and notified) when booked or examined at
    // the latest; a1 from the day of the exam, two days ago.
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!(
                "SELECT resident_id FROM enrolments WHERE campaign_id = {campaign} \
                 AND stage IN ('appointed', 'examined') AND (reached_at IS NULL \
                 OR notified_at IS NULL OR reached_at > COALESCE(examined_at, appointed_at))"
            ),
        ))
        .await
        .unwrap();
    assert!(rows.is_empty(), "{} rows not repaired", rows.len());
    let a1 = crate::campaigns::row(app, campaign, f.a1).await.unwrap();
    assert_eq!(a1.reached_at, a1.examined_at);
    assert!(a1.notified_at <= a1.reached_at);

    // Every slice, live and at the end of each closed day: a funnel.
    let today = outreach::registry::today();
    for query in ["", "&to=DAY1", "&to=DAY2", "&to=DAY3"] {
        let query = query
            .replace("DAY1", &(today - Duration::days(1)).to_string())
            .replace("DAY2", &(today - Duration::days(2)).to_string())
            .replace("DAY3", &(today - Duration::days(3)).to_string());
        for by in [
            "township",
            "village",
            "cohort",
            "migrant_type",
            "special",
            "route",
        ] {
            let area = if by == "village" {
                format!("&area={TOWNSHIP}")
            } else {
                String::new()
            };
            let report = get_json(app, &format!("{base}?by={by}{area}{query}"), &f.office).await;
            assert_monotone(&report);
        }
    }
    // 则克台镇 (one exam, no call answered but c2's and c3's) is not behind on reach.
    let ranked = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/reports/rankings"),
        &f.office,
    )
    .await;
    let zeketai = ranked["areas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["code"] == OTHER_TOWNSHIP)
        .unwrap();
    assert_eq!(zeketai["reach"]["rate"], 1.0);
    assert_eq!(zeketai["reach"]["bottom_three"], false);
    // A second refresh changes nothing.
    let again = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            &f.office,
            json!({}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        get_json(app, &base, &f.office).await["total"],
        county["total"]
    );
}

#[tokio::test]
async fn a_township_examined_without_calls_is_reached() {
    // Three exams and no call logged: reached, 100 % reach, not bottom-three on reach.
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    let campaign = app.open_campaign().await;
    let office = app.office_token().await;
    let institution = app.institution("ZKT-HC", TOWNSHIP, &[COUNTY], 50).await;
    let cli = Actor::cli();
    for n in 1..=3 {
        let who = add_resident(&app, resident_id(n, "19800101"), OTHER_VILLAGE, None, None).await;
        outreach::flows::exams::record_at_institution(
            &app.db,
            &cli,
            campaign,
            outreach::exam::InstitutionExam {
                resident_id: who,
                examined_on: outreach::registry::today(),
                institution_id: Some(institution),
            },
        )
        .await
        .unwrap();
    }
    for n in 4..=6 {
        let who = add_resident(&app, resident_id(n, "19800101"), VILLAGE, None, None).await;
        attempt(&app, &cli, campaign, who, 0, Outcome::ReachedAgreed).await;
    }
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            &office,
            json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let county = get_json(
        &app,
        &format!("/api/v1/campaigns/{campaign}/reports/progress"),
        &office,
    )
    .await;
    assert_counts(
        row(&county["rows"], OTHER_TOWNSHIP),
        [3, 0, 3, 3, 3, 3, 3, 0, 0],
    );
    assert_counts(row(&county["rows"], TOWNSHIP), [3, 0, 3, 3, 3, 0, 0, 0, 0]);
    let ranked = get_json(
        &app,
        &format!("/api/v1/campaigns/{campaign}/reports/rankings"),
        &office,
    )
    .await;
    for area in ranked["areas"].as_array().unwrap() {
        assert_eq!(area["reach"]["rate"], 1.0, "{area}");
        assert_eq!(area["reach"]["bottom_three"], false, "{area}");
    }
}

#[tokio::test]
async fn cohorts_come_in_order_of_age() {
    let f = fixture(|_| {}).await;
    let (app, campaign) = (&f.app, f.campaign);
    // One resident in each other age group (the fixture's are all 15-64).
    for (n, born) in [
        (21, "20220301"),
        (22, "20150301"),
        (23, "19550301"),
        (24, "19400301"),
    ] {
        add_resident(app, resident_id(n, born), VILLAGE, None, None).await;
    }
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            &f.office,
            json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let base = format!("/api/v1/campaigns/{campaign}/reports/progress?by=cohort");
    let report = get_json(app, &base, &f.office).await;
    let keys: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["0-6", "7-14", "15-64", "65-79", "80+"]);
    assert_eq!(report["rows"][0]["name"], "0-6岁");
    // The download in the same order.
    let csv = app.get(&format!("{base}&format=csv"), &f.office).await;
    let csv = csv.text().await.unwrap();
    let order: Vec<&str> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(order, ["0-6", "7-14", "15-64", "65-79", "80+"]);
}

#[tokio::test]
async fn the_refusal_register_gives_times_in_the_campaigns_zone_named() {
    let f = fixture(|_| {}).await;
    let (app, campaign) = (&f.app, f.campaign);
    sql(
        app,
        format!("UPDATE campaigns SET timezone = 'Asia/Urumqi' WHERE id = {campaign}"),
    )
    .await;
    let register = get_json(
        app,
        &format!("/api/v1/campaigns/{campaign}/refusals"),
        &f.office,
    )
    .await;
    let item = &register["items"][0];
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(item[field].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono_tz::Asia::Urumqi)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let (registered, reviewed) = (at("registered_at"), at("reviewed_at"));
    let csv = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/refusals?format=csv"),
            &f.office,
        )
        .await;
    assert_eq!(csv.status(), StatusCode::OK);
    let csv = csv.text().await.unwrap();
    let mut lines = csv.trim_start_matches('\u{feff}').lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"))
    };
    let (registered_col, reviewed_col) = (
        column("登记时间（新疆时间）"),
        column("审核时间（新疆时间）"),
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row[registered_col], registered);
    assert_eq!(row[reviewed_col], reviewed);
    // The workbook says the same.
    let xlsx = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/refusals?format=xlsx"),
            &f.office,
        )
        .await
        .bytes()
        .await
        .unwrap();
    let table = sheet(&xlsx, "拒检登记");
    assert_eq!(
        table.get_value((0, registered_col as u32)),
        Some(&Data::String("登记时间（新疆时间）".into()))
    );
    assert_eq!(
        table.get_value((1, registered_col as u32)),
        Some(&Data::String(registered))
    );
}
