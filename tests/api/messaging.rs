//! The outbox and dispatch: bookings plan their notices once, dispatch sends them through the
//! fallback plan and records what happened, cancellations cancel, quiet hours / the daily cap /
//! opt-outs / expiry hold, retries back off, waves plan once, and a failed message can be
//! re-sent by hand.

use chrono::{Duration, NaiveTime, Utc};
use entities::users::Role;
use outreach::auth::Actor;
use outreach::campaign;
use outreach::flows;
use outreach::registry::{self, MigrantType, NewResident};
use outreach::workers::dispatch::{LEASE_LOCK_KEY, Round};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

use crate::campaigns::row;
use crate::helpers::{TOWNSHIP, TestApp, VILLAGE, error_code, resident_id, spawn_app_with};
use crate::sms_gateway::{Mode, start_gateway};

/// Reminder times that make a booking for tomorrow deterministic whatever the hour: the
/// notice is due at once, the same-day reminder at midnight.
fn midnight_reminders(settings: &mut outreach::config::Settings) {
    let midnight = NaiveTime::MIN;
    settings.messaging.outbox.reminders.notice_at = midnight;
    settings.messaging.outbox.reminders.same_day_at = midnight;
    settings.messaging.outbox.simulate_receipts = true;
    settings.messaging.outbox.hotline = "0999-5123456".into();
    settings.messaging.sms_signature = "新源县卫健委".into();
}

struct Contacts<'a> {
    phone: Option<&'a str>,
    relative_phone: Option<&'a str>,
    migrant: Option<MigrantType>,
}

const OWN: Contacts<'static> = Contacts {
    phone: Some("13800001111"),
    relative_phone: None,
    migrant: None,
};

async fn resident(app: &TestApp, n: u32, contacts: Contacts<'_>) -> i32 {
    resident_speaking(app, n, contacts, None).await
}

/// Residents `first..first + count`, each with a phone of their own (`1380000` and the
/// resident's place in the run).
async fn residents_with_phones(app: &TestApp, first: u32, count: u32) {
    for n in 0..count {
        let phone = format!("1380000{n:04}");
        resident(
            app,
            first + n,
            Contacts {
                phone: Some(&phone),
                ..OWN
            },
        )
        .await;
    }
}

/// The "回乡体检" wave to the local residents, asked to come in the next ten days.
async fn local_wave(app: &TestApp, campaign: i32) -> outreach::outreach::waves::WaveView {
    let today = registry::today();
    outreach::flows::messaging::waves::create(
        &app.db,
        &Actor::cli(),
        campaign,
        outreach::outreach::waves::NewWave {
            name: "回乡体检".into(),
            audience: outreach::outreach::waves::Audience {
                migrant_types: vec![MigrantType::Local],
                ..Default::default()
            },
            window_from: today,
            window_to: today + Duration::days(10),
            send_at: None,
        },
    )
    .await
    .unwrap()
}

async fn resident_speaking(
    app: &TestApp,
    n: u32,
    contacts: Contacts<'_>,
    language: Option<outreach::registry::Language>,
) -> i32 {
    let id_number = resident_id(n, "19700101");
    flows::registry::create(
        &app.db,
        &app.state.privacy,
        &Actor::cli(),
        NewResident {
            name: format!("居民{n}"),
            id_number,
            village_code: VILLAGE.to_owned(),
            phone: contacts.phone.map(str::to_owned),
            relative_name: contacts.relative_phone.map(|_| "亲属".to_owned()),
            relative_relation: contacts.relative_phone.map(|_| "子女".to_owned()),
            relative_phone: contacts.relative_phone.map(str::to_owned),
            migrant_type: contacts.migrant,
            permit_since: None,
            special: None,
            current_address: None,
            wechat_openid: None,
            email: None,
            language,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("create resident: {e}"))
    .id
}

/// An open campaign whose quiet hours are six hours away.
pub async fn open_loud_campaign(app: &TestApp) -> i32 {
    campaign_with_quiet_hours(app, false).await
}

/// An open campaign whose quiet hours are six hours away (or around now with `quiet`).
async fn campaign_with_quiet_hours(app: &TestApp, quiet_now: bool) -> i32 {
    let today = registry::today();
    let mut new = crate::helpers::test_campaign(today);
    let local = Utc::now().with_timezone(&chrono_tz::Asia::Shanghai).time();
    let (start, end) = if quiet_now {
        (local - Duration::hours(1), local + Duration::hours(1))
    } else {
        (local + Duration::hours(6), local + Duration::hours(7))
    };
    new.quiet_hours = Some(campaign::QuietHours {
        start: start.format("%H:%M").to_string(),
        end: end.format("%H:%M").to_string(),
    });
    let id = flows::campaigns::create(&app.db, &Actor::cli(), new)
        .await
        .unwrap()
        .id();
    flows::campaigns::open(&app.db, &Actor::cli(), id)
        .await
        .unwrap();
    id
}

struct Setup {
    app: TestApp,
    campaign: i32,
    institution: i32,
    cadre: String,
}

async fn setup(configure: impl FnOnce(&mut outreach::config::Settings)) -> Setup {
    setup_quiet(configure, false).await
}

/// [`setup`] sending SMS through a Jasmin gateway stand-in, configured further by `configure`.
async fn setup_jasmin(
    configure: impl FnOnce(&mut outreach::config::Settings),
) -> (Setup, crate::sms_gateway::Gateway) {
    let (url, gateway) = start_gateway().await;
    let s = setup(move |settings| {
        settings.messaging.sms_provider = "jasmin".into();
        settings.messaging.jasmin = Some(crate::sms_gateway::settings(&url, "s3cret"));
        configure(settings);
    })
    .await;
    (s, gateway)
}

async fn setup_quiet(
    configure: impl FnOnce(&mut outreach::config::Settings),
    quiet_now: bool,
) -> Setup {
    let app = spawn_app_with(|s| {
        midnight_reminders(s);
        configure(s);
    })
    .await;
    app.seed_areas().await;
    let campaign = campaign_with_quiet_hours(&app, quiet_now).await;
    let institution = app.institution("XYZ-WSY", TOWNSHIP, &[TOWNSHIP], 20).await;
    let (_, cadre) = app.user("cadre.m", Role::Cadre, VILLAGE).await;
    Setup {
        app,
        campaign,
        institution,
        cadre,
    }
}

fn tomorrow() -> chrono::NaiveDate {
    registry::today() + Duration::days(1)
}

async fn book(s: &Setup, residents: &[i32]) -> Vec<i32> {
    let response = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/bookings", s.campaign),
            &s.cadre,
            json!({"institution_id": s.institution, "day": tomorrow(), "resident_ids": residents}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap() as i32)
        .collect()
}

/// (kind, state) of every message of a resident, in order.
/// The resident's appointment notice due now (its backoff skipped).
async fn notice_due_now(app: &TestApp, resident: i32) {
    run_sql(
        app,
        &format!(
            "UPDATE messages SET next_attempt_at = created_at WHERE resident_id = {resident} \
             AND kind = 'appointment_notice'"
        ),
    )
    .await;
}

async fn states(app: &TestApp, resident: i32) -> Vec<(String, String)> {
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!("SELECT kind, state FROM messages WHERE resident_id = {resident} ORDER BY id"),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get("", "kind").unwrap(),
                r.try_get("", "state").unwrap(),
            )
        })
        .collect()
}

fn pair(kind: &str, state: &str) -> (String, String) {
    (kind.to_owned(), state.to_owned())
}

async fn drain(app: &TestApp) -> Round {
    app.state.dispatcher().drain().await.unwrap()
}

#[tokio::test]
async fn a_booking_plans_its_notice_once_and_dispatch_delivers_it_with_the_preparation() {
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    let b = resident(&s.app, 2, OWN).await;
    book(&s, &[a, b]).await;
    assert_eq!(
        states(&s.app, a).await,
        [
            pair("appointment_notice", "queued"),
            pair("same_day_reminder", "scheduled")
        ]
    );
    // The planner job finds nothing left to plan.
    let planned = outreach::outreach::outbox::plan_reminders(
        &s.app.db,
        &s.app.state.settings.messaging.outbox.reminders,
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(planned, 0);
    let round = drain(&s.app).await;
    assert_eq!((round.sent, round.delivered), (2, 2));
    assert_eq!(
        states(&s.app, a).await,
        [
            pair("appointment_notice", "delivered"),
            pair("same_day_reminder", "scheduled")
        ]
    );
    // The progress row noticed: notified and reached (the stage stays appointed).
    let progress = row(&s.app, s.campaign, a).await.unwrap();
    assert_eq!(progress.stage, "appointed");
    assert!(progress.notified_at.is_some() && progress.reached_at.is_some());
    // What the cadre sees: the text as sent, the masked number, the state in Chinese.
    let response = s
        .app
        .get(&format!("/api/v1/residents/{a}/messages"), &s.cadre)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let notice = &body["items"][0];
    assert_eq!(notice["state"], "delivered");
    assert_eq!(notice["state_label"], "已送达");
    assert_eq!(notice["route"], "phone");
    assert_eq!(notice["recipient"], "138****1111");
    let text = notice["body"].as_str().unwrap();
    assert!(text.starts_with("【新源县卫健委】居民1您好"), "{text}");
    assert!(text.contains("禁食") && text.contains("身份证"), "{text}");
    assert!(text.ends_with("回TD退订"), "{text}");
    assert_eq!(
        notice["segments"],
        outreach::outreach::templates::segments(text) as i64
    );
    // Nothing is sent twice.
    assert_eq!(drain(&s.app).await.sent, 0);
}

#[tokio::test]
async fn cancelling_rescheduling_and_attending_cancel_what_has_not_gone() {
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    let b = resident(&s.app, 2, OWN).await;
    let ids = book(&s, &[a, b]).await;
    let response = s
        .app
        .post(
            &format!("/api/v1/appointments/{}/cancel", ids[0]),
            &s.cadre,
            json!({"reason": "外出务工"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        states(&s.app, a).await,
        [
            pair("appointment_notice", "cancelled"),
            pair("same_day_reminder", "cancelled")
        ]
    );
    let later = registry::today() + Duration::days(3);
    let response = s
        .app
        .post(
            &format!("/api/v1/appointments/{}/reschedule", ids[1]),
            &s.cadre,
            json!({"day": later}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let moved = states(&s.app, b).await;
    assert_eq!(
        moved,
        [
            pair("appointment_notice", "cancelled"),
            pair("same_day_reminder", "cancelled"),
            pair("appointment_notice", "scheduled"),
            pair("same_day_reminder", "scheduled"),
            pair("reschedule_confirmation", "queued"),
        ]
    );
    let round = drain(&s.app).await;
    assert_eq!(round.sent, 1, "only the confirmation is due");
    let response = s
        .app
        .get(
            &format!("/api/v1/appointments/{}/messages", ids[1]),
            &s.cadre,
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let confirmation = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "reschedule_confirmation")
        .unwrap();
    let text = confirmation["body"].as_str().unwrap();
    let expected_day = format!(
        "{}月{}日",
        chrono::Datelike::month(&later),
        chrono::Datelike::day(&later)
    );
    assert!(text.contains(&expected_day), "{text}");
}

#[tokio::test]
async fn the_fallback_plan_ends_with_a_relative_then_a_task_for_the_cadre() {
    let s = setup(|_| {}).await;
    let relative_only = resident(
        &s.app,
        1,
        Contacts {
            phone: None,
            relative_phone: Some("13900002222"),
            migrant: None,
        },
    )
    .await;
    let nobody = resident(
        &s.app,
        2,
        Contacts {
            phone: None,
            relative_phone: None,
            migrant: None,
        },
    )
    .await;
    let opted_out = resident(&s.app, 3, OWN).await;
    s.app
        .patch(
            &format!("/api/v1/residents/{opted_out}"),
            &s.cadre,
            json!({"phone_opt_out": true}),
        )
        .await
        .error_for_status()
        .unwrap();
    book(&s, &[relative_only, nobody, opted_out]).await;
    let round = drain(&s.app).await;
    assert_eq!((round.sent, round.failed, round.suppressed), (1, 1, 1));
    let body: Value = s
        .app
        .get(
            &format!("/api/v1/residents/{relative_only}/messages"),
            &s.cadre,
        )
        .await
        .json()
        .await
        .unwrap();
    let relayed = &body["items"][0];
    assert_eq!(relayed["route"], "relative");
    assert_eq!(relayed["recipient"], "139****2222");
    assert!(
        relayed["body"].as_str().unwrap().contains("请转告居民1："),
        "{relayed}"
    );
    assert_eq!(
        states(&s.app, nobody).await[0],
        pair("appointment_notice", "failed")
    );
    assert_eq!(
        states(&s.app, opted_out).await[0],
        pair("appointment_notice", "suppressed")
    );
    // Both land on the cadre's list, once each.
    let tasks: Value = s
        .app
        .get("/api/v1/tasks", &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    let mut residents: Vec<i64> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["kind"], "unreachable");
            t["resident_id"].as_i64().unwrap()
        })
        .collect();
    residents.sort_unstable();
    let mut expected = vec![nobody as i64, opted_out as i64];
    expected.sort_unstable();
    assert_eq!(residents, expected);
    // Done is done, once.
    let task = tasks["items"][0]["id"].as_i64().unwrap();
    let done = s
        .app
        .post(&format!("/api/v1/tasks/{task}/done"), &s.cadre, json!({}))
        .await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let again = s
        .app
        .post(&format!("/api/v1/tasks/{task}/done"), &s.cadre, json!({}))
        .await;
    assert_eq!(
        error_code(again, StatusCode::CONFLICT).await,
        "already_done"
    );
}

#[tokio::test]
async fn quiet_hours_hold_messages_until_they_end() {
    let s = setup_quiet(|_| {}, true).await;
    let quiet = s.campaign;
    let a = resident(&s.app, 1, OWN).await;
    // A wave in the quiet campaign: due now, but held.
    let office = s.app.office_token().await;
    let today = registry::today();
    let response = s
        .app
        .post(
            &format!("/api/v1/campaigns/{quiet}/waves"),
            &office,
            json!({"name": "测试", "window_from": today, "window_to": today + Duration::days(10),
                   "audience": {"migrant_types": ["local"]}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let round = drain(&s.app).await;
    assert_eq!(round.leased, 0);
    assert!(
        states(&s.app, a)
            .await
            .iter()
            .any(|(_, state)| state == "queued")
    );
}

#[tokio::test]
async fn the_daily_cap_holds_the_rest_until_tomorrow() {
    let s = setup(|settings| settings.messaging.outbox.daily_cap = 1).await;
    let a = resident(&s.app, 1, OWN).await;
    book(&s, &[a]).await;
    // A wave to local residents, due now beside the notice.
    let office = s.app.office_token().await;
    let today = registry::today();
    s.app
        .post(
            &format!("/api/v1/campaigns/{}/waves", s.campaign),
            &office,
            json!({"name": "通知", "window_from": today, "window_to": today + Duration::days(10),
                   "audience": {"migrant_types": ["local"], "stages": ["appointed"]}}),
        )
        .await
        .error_for_status()
        .unwrap();
    let round = drain(&s.app).await;
    assert_eq!((round.sent, round.held), (1, 1));
    let held = s
        .app
        .db
        .query_one_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!(
                "SELECT next_attempt_at, last_error FROM messages WHERE resident_id = {a} \
                 AND state = 'queued'"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    let next: chrono::DateTime<Utc> = held.try_get("", "next_attempt_at").unwrap();
    assert!(next > Utc::now() + Duration::hours(1), "{next}");
    let error: String = held.try_get("", "last_error").unwrap();
    assert!(error.contains("daily cap"), "{error}");
}

#[tokio::test]
async fn a_message_past_its_useful_time_expires_instead_of_arriving_late() {
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    book(&s, &[a]).await;
    s.app
        .db
        .execute_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!("UPDATE messages SET expires_at = due_at WHERE resident_id = {a} AND kind = 'appointment_notice'"),
        ))
        .await
        .unwrap();
    let round = drain(&s.app).await;
    assert_eq!((round.sent, round.expired), (0, 1));
    assert_eq!(
        states(&s.app, a).await[0],
        pair("appointment_notice", "expired")
    );
}

#[tokio::test]
async fn a_busy_gateway_is_retried_later_and_a_refusal_moves_on_to_the_next_channel() {
    let (s, gateway) = setup_jasmin(|settings| {
        settings.messaging.outbox.max_attempts = 2;
    })
    .await;
    let a = resident(
        &s.app,
        1,
        Contacts {
            phone: Some("13800001111"),
            relative_phone: Some("13900002222"),
            migrant: None,
        },
    )
    .await;
    book(&s, &[a]).await;
    *gateway.mode.lock().unwrap() = Mode::Busy;
    let round = drain(&s.app).await;
    assert_eq!((round.sent, round.retried), (0, 1));
    let row = s
        .app
        .db
        .query_one_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!(
                "SELECT state, attempts, step, next_attempt_at, last_error FROM messages \
                 WHERE resident_id = {a} AND kind = 'appointment_notice'"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "state").unwrap(), "queued");
    assert_eq!(row.try_get::<i32>("", "attempts").unwrap(), 1);
    assert_eq!(
        row.try_get::<i32>("", "step").unwrap(),
        1,
        "still the own phone"
    );
    let next: chrono::DateTime<Utc> = row.try_get("", "next_attempt_at").unwrap();
    // 30 s base with ±25 % jitter.
    assert!(next > Utc::now() + Duration::seconds(15), "{next}");
    assert!(
        row.try_get::<String>("", "last_error")
            .unwrap()
            .starts_with("jasmin:")
    );
    // The second (last) attempt fails too: the relative's phone is next, at once.
    notice_due_now(&s.app, a).await;
    let round = drain(&s.app).await;
    assert_eq!(round.sent, 0);
    *gateway.mode.lock().unwrap() = Mode::Accept;
    notice_due_now(&s.app, a).await;
    let round = drain(&s.app).await;
    assert_eq!(round.sent, 1);
    let received = gateway.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["to"], "8613900002222");
    assert!(
        received[0]["text"].contains("请转告"),
        "{:?}",
        received[0]["text"]
    );
}

/// Found by the cluster drill: a provider outage longer than `max_attempts` backoffs failed
/// the notices of residents with one phone as "no contact left", with a task for the cadre.
#[tokio::test]
async fn a_busy_gateway_is_retried_until_it_answers_when_no_other_channel_is_left() {
    let (s, gateway) = setup_jasmin(|settings| {
        settings.messaging.outbox.max_attempts = 2;
    })
    .await;
    let a = resident(
        &s.app,
        1,
        Contacts {
            phone: Some("13800001111"),
            relative_phone: None,
            migrant: None,
        },
    )
    .await;
    book(&s, &[a]).await;
    *gateway.mode.lock().unwrap() = Mode::Busy;
    // Twice the attempts the own phone would have had were a relative's phone next.
    for round in 1..=4 {
        let drained = drain(&s.app).await;
        assert_eq!((drained.sent, drained.retried), (0, 1), "round {round}");
        notice_due_now(&s.app, a).await;
    }
    let row = s
        .app
        .db
        .query_one_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!(
                "SELECT state, attempts, step FROM messages \
                 WHERE resident_id = {a} AND kind = 'appointment_notice'"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "state").unwrap(), "queued");
    assert_eq!(row.try_get::<i32>("", "attempts").unwrap(), 4);
    assert_eq!(
        row.try_get::<i32>("", "step").unwrap(),
        1,
        "still the own phone"
    );
    assert_eq!(
        rv_count(
            &s.app,
            &format!("SELECT COUNT(*) AS n FROM outreach_tasks WHERE resident_id = {a}")
        )
        .await,
        0,
        "no task for the cadre while the gateway is only busy"
    );
    *gateway.mode.lock().unwrap() = Mode::Accept;
    let drained = drain(&s.app).await;
    assert_eq!(drained.sent, 1);
    let received = gateway.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["to"], "8613800001111");
    assert_eq!(
        states(&s.app, a).await[0],
        pair("appointment_notice", "sent")
    );
}

/// A send whose outcome is unknown (no answer in time) is not sent again through a gateway
/// that cannot be asked; with no other channel, the message ends failed as "outcome
/// unknown" for a person to re-send (or for its receipt to recover), not as "no contact left".
#[tokio::test]
async fn an_unknown_outcome_on_the_last_channel_ends_failed_as_unknown_not_sent_again() {
    let (s, gateway) = setup_jasmin(|settings| {
        // A send gets half the lease (1 s); the slow gateway answers after 3 s.
        settings.messaging.outbox.lease_secs = 2;
    })
    .await;
    let a = resident(
        &s.app,
        1,
        Contacts {
            phone: Some("13800001111"),
            relative_phone: None,
            migrant: None,
        },
    )
    .await;
    book(&s, &[a]).await;
    *gateway.mode.lock().unwrap() = Mode::Slow;
    let drained = drain(&s.app).await;
    assert_eq!((drained.sent, drained.retried), (0, 1));
    *gateway.mode.lock().unwrap() = Mode::Accept;
    notice_due_now(&s.app, a).await;
    let drained = drain(&s.app).await;
    assert_eq!(drained.sent, 0, "not sent again blind");
    let row = s
        .app
        .db
        .query_one_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!(
                "SELECT state, last_error FROM messages \
                 WHERE resident_id = {a} AND kind = 'appointment_notice'"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "state").unwrap(), "failed");
    let error: String = row.try_get("", "last_error").unwrap();
    assert!(error.starts_with("outcome_unknown"), "{error}");
    assert!(
        gateway.received.lock().unwrap().len() <= 1,
        "the gateway got the notice at most once"
    );
}

#[tokio::test]
async fn a_wave_plans_one_message_per_migrant_once_and_can_be_cancelled() {
    let s = setup(|_| {}).await;
    let away = resident(
        &s.app,
        1,
        Contacts {
            phone: Some("13800001111"),
            relative_phone: None,
            migrant: Some(MigrantType::OutOfRegion),
        },
    )
    .await;
    let home = resident(&s.app, 2, OWN).await;
    let office = s.app.office_token().await;
    let today = registry::today();
    let send_at = Utc::now() + Duration::hours(2);
    let response = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/waves", s.campaign),
            &office,
            json!({"name": "春节回乡体检", "window_from": today + Duration::days(5),
                   "window_to": today + Duration::days(20), "send_at": send_at}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let wave: Value = response.json().await.unwrap();
    assert_eq!(wave["planned"], 1);
    assert_eq!(wave["states"]["scheduled"], 1);
    assert_eq!(
        states(&s.app, away).await,
        [pair("migrant_wave", "scheduled")]
    );
    assert!(states(&s.app, home).await.is_empty());
    // Topping up plans nothing new.
    assert_eq!(
        outreach::flows::messaging::waves::plan_open(&s.app.db)
            .await
            .unwrap(),
        0
    );
    // A cadre may read it, not create one.
    let id = wave["id"].as_i64().unwrap();
    let listed = s
        .app
        .get(&format!("/api/v1/waves/{id}/messages"), &s.cadre)
        .await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let forbidden = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/waves", s.campaign),
            &s.cadre,
            json!({"name": "x", "window_from": today, "window_to": today}),
        )
        .await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    // A reversed window is refused.
    let bad = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/waves", s.campaign),
            &office,
            json!({"name": "x", "window_from": today + Duration::days(3), "window_to": today}),
        )
        .await;
    assert_eq!(
        error_code(bad, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_window"
    );
    let cancelled = s
        .app
        .post(&format!("/api/v1/waves/{id}/cancel"), &office, json!({}))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        states(&s.app, away).await,
        [pair("migrant_wave", "cancelled")]
    );
}

#[tokio::test]
async fn a_failed_message_is_resent_by_hand_once_and_audited() {
    let s = setup(|_| {}).await;
    let nobody = resident(
        &s.app,
        1,
        Contacts {
            phone: None,
            relative_phone: None,
            migrant: None,
        },
    )
    .await;
    book(&s, &[nobody]).await;
    drain(&s.app).await;
    let body: Value = s
        .app
        .get(
            &format!("/api/v1/residents/{nobody}/messages?state=failed"),
            &s.cadre,
        )
        .await
        .json()
        .await
        .unwrap();
    let failed = body["items"][0]["id"].as_i64().unwrap();
    // Not something that is still on its way.
    let states_now = states(&s.app, nobody).await;
    let body: Value = s
        .app
        .get(
            &format!("/api/v1/residents/{nobody}/messages?state=scheduled"),
            &s.cadre,
        )
        .await
        .json()
        .await
        .unwrap();
    let pending = body["items"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body} {:?}", states_now));
    let refused = s
        .app
        .post(
            &format!("/api/v1/messages/{pending}/resend"),
            &s.cadre,
            json!({}),
        )
        .await;
    assert_eq!(
        error_code(refused, StatusCode::CONFLICT).await,
        "not_resendable"
    );
    let resent = s
        .app
        .post(
            &format!("/api/v1/messages/{failed}/resend"),
            &s.cadre,
            json!({}),
        )
        .await;
    assert_eq!(resent.status(), StatusCode::CREATED);
    let resent: Value = resent.json().await.unwrap();
    assert_eq!(resent["state"], "queued");
    assert_eq!(resent["kind"], "appointment_notice");
    let office = s.app.office_token().await;
    let audit: Value = s
        .app
        .get("/api/v1/audit?action=message.resend", &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
    // The outbox's health shows the failures.
    let health: Value = s
        .app
        .get("/api/v1/outbox/health", &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["states"]["failed"], 1);
    assert_eq!(health["states"]["queued"], 1);
    assert_eq!(health["due"], 1);
    let cadre_health = s.app.get("/api/v1/outbox/health", &s.cadre).await;
    assert_eq!(cadre_health.status(), StatusCode::FORBIDDEN);
}

/// A dispatcher process killed with SIGKILL in the middle of a batch, then started again:
/// every message reaches the provider exactly once. Messages the provider took before the
/// kill are found with its lookup (Alibaba `QuerySendDetails` by `OutId`) instead of being
/// sent again; those it never got are sent after their lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_batch_loses_nothing_and_sends_nothing_twice() {
    use testkit::standin::{Behaviour, StandIn, StandInKind};
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const N: u32 = 40;
    let provider = StandIn::start(StandInKind::Aliyun {
        access_key_id: "LTAI-county".into(),
        secret: "county-secret".into(),
    })
    .await
    .unwrap();
    let app = spawn_app_with(|s| {
        s.privacy.key = Some(outreach::config::Secret::new(KEY));
    })
    .await;
    app.seed_areas().await;
    residents_with_phones(&app, 0, N).await;
    let campaign = open_loud_campaign(&app).await;
    local_wave(&app, campaign).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outreach.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[log]
filter = "warn"
[messaging]
sms_provider = "aliyun"
[messaging.aliyun]
endpoint = "{url}"
access_key_id = "LTAI-county"
access_key_secret = "county-secret"
sign_name = "新源县卫健委"
[messaging.aliyun.templates]
migrant_wave = "SMS_270001"
[messaging.outbox]
batch = 8
concurrency = 4
lease_secs = 2
poll_ms = 50
"#,
            url = provider.url()
        ),
    )
    .unwrap();
    let dispatcher = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_outreach"))
            .env("DATABASE_URL", app.state.settings.database_url.expose())
            .env("OUTREACH_PRIVACY__KEY", KEY)
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&config)
            .arg("dispatch")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The provider takes each message at once and answers slowly: a kill leaves messages
    // it has but the dispatcher never heard about.
    provider.set_behaviour(Behaviour::SlowAnswer(std::time::Duration::from_millis(300)));
    let mut first = dispatcher(&[]);
    let started = std::time::Instant::now();
    while provider.accepted().len() < 10 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the dispatcher sent nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    first.kill().unwrap(); // SIGKILL
    let first = tokio::task::spawn_blocking(move || first.wait().unwrap());
    first.await.unwrap();
    let at_kill = provider.accepted().len();
    assert!(at_kill < N as usize, "killed too late to test anything");
    // Leases run out; a new dispatcher reconciles them and sends the rest.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    provider.set_behaviour(Behaviour::Normal);
    let second = dispatcher(&["--until-idle"]);
    let second = tokio::task::spawn_blocking(move || second.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(second.status.success());

    let accepted = provider.accepted();
    let mut keys: Vec<&str> = accepted
        .iter()
        .map(|a| a.idempotency_key.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        accepted.len(),
        N as usize,
        "every message reached the provider once"
    );
    assert_eq!(keys.len(), N as usize);
    assert_eq!(provider.duplicates(), 0);
    let count = |sql: &str| {
        let sql = sql.to_owned();
        let db = app.db.clone();
        async move {
            db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM messages WHERE state = 'sent'").await,
        N as i64
    );
    // Some were taken by the provider before the kill and recognised by the lookup.
    assert!(
        count("SELECT COUNT(*) AS n FROM messages WHERE provider_message_id IS NULL").await >= 1
    );
}

/// The per-provider token bucket holds for every send: 4 a second with a burst of 4, so 8
/// messages cannot all go within the first second.
#[tokio::test]
async fn the_providers_rate_limit_is_honoured() {
    let s = setup(|settings| {
        settings
            .messaging
            .outbox
            .rate_per_second
            .insert("log".into(), 4);
    })
    .await;
    for n in 0..8 {
        resident(&s.app, n, OWN).await;
    }
    let office = s.app.office_token().await;
    let today = registry::today();
    s.app
        .post(
            &format!("/api/v1/campaigns/{}/waves", s.campaign),
            &office,
            json!({"name": "通知", "window_from": today, "window_to": today + Duration::days(10),
                   "audience": {"migrant_types": ["local"]}}),
        )
        .await
        .error_for_status()
        .unwrap();
    let started = std::time::Instant::now();
    let round = drain(&s.app).await;
    assert_eq!(round.sent, 8);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "8 messages at 4/s went out in {:?}",
        started.elapsed()
    );
}

/// After downtime a job's missed firings are caught up once (the latest), not once per tick;
/// a firing that ran is not missed; a job that never ran waits for its schedule.
#[tokio::test]
async fn missed_scheduler_firings_are_caught_up_once() {
    use outreach::scheduler::{self, Job, Outcome, Scheduler};
    let app = spawn_app_with(|_| {}).await;
    let mut settings = outreach::config::SchedulerSettings::default();
    settings.jobs.clear();
    settings
        .jobs
        .insert("plan_reminders".into(), "0 */10 * * * *".into());
    settings
        .jobs
        .insert("plan_waves".into(), "0 30 * * * *".into());
    let scheduler = Scheduler::from_settings(&settings).unwrap();
    let now = Utc::now();
    assert!(
        scheduler.missed(&app.db, now).await.is_empty(),
        "nothing ran yet"
    );
    // The last run was three hours ago: eighteen ticks missed, one catch-up.
    let three_hours_ago = now - Duration::hours(3);
    let last = three_hours_ago
        - Duration::seconds(i64::from(
            chrono::Timelike::minute(&three_hours_ago) % 10 * 60
                + chrono::Timelike::second(&three_hours_ago),
        ));
    let outcome = scheduler::try_execute_once(&app.state, Job::PlanReminders, last).await;
    assert!(matches!(outcome, Outcome::Ran { .. }), "{outcome:?}");
    let missed = scheduler.missed(&app.db, now).await;
    assert_eq!(missed.len(), 1, "{missed:?}");
    let (job, at) = missed[0];
    assert_eq!(job, Job::PlanReminders);
    assert!(at <= now && now - at < Duration::minutes(10), "{at}");
    // Once caught up, nothing is missed any more.
    scheduler::try_execute_once(&app.state, job, at).await;
    assert!(scheduler.missed(&app.db, now).await.is_empty());
}

// ------------------------------------------------------------------------------------------
// Races and crash windows of the outbox
// ------------------------------------------------------------------------------------------

async fn rv_exec(
    app: &TestApp,
    sql_sqlite: &str,
    sql_pg: &str,
    values: Vec<sea_orm::Value>,
) -> u64 {
    let backend = app.db.get_database_backend();
    let sql = if backend == sea_orm::DbBackend::Postgres {
        sql_pg
    } else {
        sql_sqlite
    };
    app.db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .unwrap()
        .rows_affected()
}

async fn rv_count(app: &TestApp, sql: &str) -> i64 {
    app.db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

/// The plan_waves job running again on a later day plans nobody's wave message twice.
#[tokio::test]
async fn a_wave_is_planned_once_not_every_day() {
    use outreach::outreach::waves;
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    let wave = local_wave(&s.app, s.campaign).await;
    assert_eq!(wave.planned, 1);
    let round = drain(&s.app).await;
    assert_eq!(round.sent, 1);
    let campaign = campaign::open_campaigns(&s.app.db)
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let w = waves::Wave {
        id: wave.id,
        campaign_id: s.campaign,
        audience: wave.audience.clone(),
        send_at: wave.send_at,
        expires_at: wave.expires_at,
    };
    // Same day: nothing new (what the existing test checks).
    assert_eq!(
        waves::plan(&s.app.db, &campaign, &w, Utc::now())
            .await
            .unwrap(),
        0
    );
    // The job's run tomorrow:
    let tomorrow = Utc::now() + Duration::days(1);
    let again = waves::plan(&s.app.db, &campaign, &w, tomorrow)
        .await
        .unwrap();
    let n = rv_count(
        &s.app,
        &format!(
            "SELECT COUNT(*) AS n FROM messages WHERE resident_id = {a} AND kind = 'migrant_wave'"
        ),
    )
    .await;
    assert_eq!(
        again, 0,
        "the wave was planned a second time for the same resident the next day"
    );
    assert_eq!(n, 1);
}

/// Moving an appointment away and back to its first day plans that day's notices again.
#[tokio::test]
async fn moving_back_to_the_first_day_plans_its_notices_again() {
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    let ids = book(&s, &[a]).await;
    let later = registry::today() + Duration::days(3);
    for day in [later, tomorrow()] {
        let response = s
            .app
            .post(
                &format!("/api/v1/appointments/{}/reschedule", ids[0]),
                &s.cadre,
                json!({"day": day}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let st = states(&s.app, a).await;
    assert!(
        st.iter()
            .any(|(k, s)| k == "appointment_notice" && (s == "queued" || s == "scheduled")),
        "no pending notice for the appointment's current day: {st:?}"
    );
}

/// A message already leased (`sending`) when its appointment is cancelled is not sent: the
/// worker sees the appointment changed, even after the lease is reconciled.
#[tokio::test]
async fn a_message_leased_during_cancellation_is_not_sent() {
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    let ids = book(&s, &[a]).await;
    // A worker leased the notice (and died, or is slow): what `lease` writes.
    let past: sea_orm::Value = (Utc::now() - Duration::minutes(5)).into();
    let changed = rv_exec(
        &s.app,
        &format!("UPDATE messages SET state = 'sending', leased_by = 'w-dead', lease_until = ?, attempts = 1 WHERE resident_id = {a} AND kind = 'appointment_notice'"),
        &format!("UPDATE messages SET state = 'sending', leased_by = 'w-dead', lease_until = $1, attempts = 1 WHERE resident_id = {a} AND kind = 'appointment_notice'"),
        vec![past],
    )
    .await;
    assert_eq!(changed, 1);
    let response = s
        .app
        .post(
            &format!("/api/v1/appointments/{}/cancel", ids[0]),
            &s.cadre,
            json!({"reason": "外出务工"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let round = drain(&s.app).await;
    assert_eq!(round.sent, 0);
    let st = states(&s.app, a).await;
    assert!(
        !st.iter()
            .any(|(k, s)| k == "appointment_notice" && (s == "sent" || s == "delivered")),
        "a notice went out for a cancelled appointment: {st:?}"
    );
}

/// A failed receipt for a notice of an appointment cancelled meanwhile sends nothing more
/// through the next channel.
#[tokio::test]
async fn a_failed_receipt_after_cancellation_sends_nothing_more() {
    use outreach::outreach::callbacks::{Receipt, ReceiptStatus};
    let s = setup(|s| {
        s.messaging.outbox.simulate_receipts = false;
    })
    .await;
    let a = resident(
        &s.app,
        1,
        Contacts {
            phone: Some("13800001111"),
            relative_phone: Some("13900002222"),
            migrant: None,
        },
    )
    .await;
    let ids = book(&s, &[a]).await;
    drain(&s.app).await;
    let row = s
        .app
        .db
        .query_one_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!("SELECT provider_message_id FROM messages WHERE resident_id = {a} AND kind = 'appointment_notice'"),
        ))
        .await
        .unwrap()
        .unwrap();
    let pid: String = row.try_get("", "provider_message_id").unwrap();
    let response = s
        .app
        .post(
            &format!("/api/v1/appointments/{}/cancel", ids[0]),
            &s.cadre,
            json!({"reason": "外出务工"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    outreach::flows::replies::apply_receipt(
        &s.app.db,
        &Receipt {
            provider: "log",
            provider_message_id: pid,
            status: ReceiptStatus::Failed("UNDELIV".into()),
            at: None,
        },
    )
    .await
    .unwrap();
    let round = drain(&s.app).await;
    let st = states(&s.app, a).await;
    assert_eq!(
        round.sent, 0,
        "a notice was sent again for a cancelled appointment: {st:?}"
    );
}

/// A first-stage receipt (the operator took the message) for a sent message is the
/// expected step before the final one: reported as such, the message left as it was.
#[tokio::test]
async fn a_first_stage_receipt_is_an_expected_intermediate_step() {
    use outreach::flows::replies::apply_receipt;
    use outreach::outreach::callbacks::{Receipt, ReceiptStatus};
    use outreach::outreach::inbound::ReceiptOutcome;
    let s = setup(|s| {
        s.messaging.outbox.simulate_receipts = false;
    })
    .await;
    let a = resident(&s.app, 1, OWN).await;
    book(&s, &[a]).await;
    drain(&s.app).await;
    let row = s
        .app
        .db
        .query_one_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!("SELECT provider_message_id FROM messages WHERE resident_id = {a} AND kind = 'appointment_notice'"),
        ))
        .await
        .unwrap()
        .unwrap();
    let pid: String = row.try_get("", "provider_message_id").unwrap();
    let receipt = |status| Receipt {
        provider: "log",
        provider_message_id: pid.clone(),
        status,
        at: None,
    };
    let first = apply_receipt(&s.app.db, &receipt(ReceiptStatus::Accepted))
        .await
        .unwrap();
    assert_eq!(first, ReceiptOutcome::Intermediate);
    assert!(first.expected(&ReceiptStatus::Accepted));
    let st = states(&s.app, a).await;
    assert!(
        st.iter()
            .any(|(k, state)| k == "appointment_notice" && state == "sent"),
        "{st:?}"
    );
    let last = apply_receipt(&s.app.db, &receipt(ReceiptStatus::Delivered))
        .await
        .unwrap();
    assert_eq!(last, ReceiptOutcome::Moved);
    let again = apply_receipt(&s.app.db, &receipt(ReceiptStatus::Delivered))
        .await
        .unwrap();
    assert_eq!(again, ReceiptOutcome::Unchanged);
    assert!(
        !again.expected(&ReceiptStatus::Delivered),
        "a repeated final receipt is worth a line"
    );
}

/// A resident asks to reschedule (2) and then opts out (TD) before the answer goes: only the
/// opt-out confirmation reaches the opted-out number, not the answer.
#[tokio::test]
async fn an_opt_out_holds_for_answers_sent_back_the_way_a_reply_came() {
    use outreach::flows::replies::apply_reply;
    use outreach::outreach::callbacks::InboundSms;
    use outreach::outreach::inbound::ReplyAction;
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    book(&s, &[a]).await;
    drain(&s.app).await;
    let sms = |text: &str| InboundSms {
        provider: "aliyun",
        from_phone: "13800001111".into(),
        text: text.into(),
        at: None,
        provider_id: None,
        signature: None,
    };
    assert_eq!(
        apply_reply(&s.app.db, &s.app.state.privacy, &sms("2"))
            .await
            .unwrap(),
        ReplyAction::Reschedule
    );
    assert_eq!(
        apply_reply(&s.app.db, &s.app.state.privacy, &sms("TD"))
            .await
            .unwrap(),
        ReplyAction::OptOut
    );
    let round = drain(&s.app).await;
    assert_eq!(round.sent, 1, "only the opt-out confirmation goes");
    let rows = s
        .app
        .db
        .query_all_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!("SELECT kind, state, route FROM messages WHERE resident_id = {a} ORDER BY id"),
        ))
        .await
        .unwrap();
    let st: Vec<(String, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "kind").unwrap(),
                r.try_get("", "state").unwrap(),
                r.try_get("", "route").unwrap(),
            )
        })
        .collect();
    assert!(
        !st.iter()
            .any(|(k, s, _)| k == "reschedule_options" && (s == "sent" || s == "delivered")),
        "reschedule options texted to a number that had opted out: {st:?}"
    );
}

fn rv_aliyun(s: &mut outreach::config::Settings, url: String, timeout_secs: u64) {
    use std::collections::BTreeMap;
    s.messaging.sms_provider = "aliyun".into();
    s.messaging.aliyun = Some(outreach::outreach::cloud::AliyunSmsSettings {
        endpoint: url,
        access_key_id: "LTAI-county".into(),
        access_key_secret: outreach::config::Secret::new("county-secret"),
        sign_name: "新源县卫健委".into(),
        templates: BTreeMap::from([
            ("appointment_notice".to_owned(), "SMS_1".to_owned()),
            ("same_day_reminder".to_owned(), "SMS_2".to_owned()),
            ("migrant_wave".to_owned(), "SMS_3".to_owned()),
        ]),
        timeout_secs,
    });
}

/// A send the provider took but answered too slowly has an unknown outcome: the next attempt
/// looks it up with the provider and does not send it a second time.
#[tokio::test]
async fn a_timed_out_send_is_looked_up_not_sent_twice() {
    use testkit::standin::{Behaviour, StandIn, StandInKind};
    let provider = StandIn::start(StandInKind::Aliyun {
        access_key_id: "LTAI-county".into(),
        secret: "county-secret".into(),
    })
    .await
    .unwrap();
    let url = provider.url();
    let s = setup(move |s| {
        rv_aliyun(s, url, 1);
        s.messaging.outbox.retry_base_secs = 1;
    })
    .await;
    let a = resident(&s.app, 1, OWN).await;
    book(&s, &[a]).await;
    provider.set_behaviour(Behaviour::SlowAnswer(std::time::Duration::from_millis(
        1500,
    )));
    let first = drain(&s.app).await;
    assert_eq!(
        (first.sent, first.retried),
        (0, 1),
        "no answer: outcome unknown"
    );
    provider.set_behaviour(Behaviour::Normal);
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let second = drain(&s.app).await;
    assert_eq!(second.sent, 1, "found with the provider, recorded as sent");
    assert_eq!(provider.accepted().len(), 1);
    assert_eq!(
        provider.duplicates(),
        0,
        "the provider got the same notice twice"
    );
}

/// Two dispatchers: rows leased by A but still waiting behind A's slow sends outlive their
/// lease and are taken over by B; A renews each lease before sending, so it skips those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_workers_rows_are_not_sent_twice_by_reconcile() {
    use testkit::standin::{Behaviour, StandIn, StandInKind};
    let provider = StandIn::start(StandInKind::Aliyun {
        access_key_id: "LTAI-county".into(),
        secret: "county-secret".into(),
    })
    .await
    .unwrap();
    let url = provider.url();
    let s = setup(move |s| {
        rv_aliyun(s, url, 5);
        s.messaging.outbox.batch = 6;
        s.messaging.outbox.concurrency = 1;
        s.messaging.outbox.lease_secs = 2;
    })
    .await;
    residents_with_phones(&s.app, 10, 6).await;
    local_wave(&s.app, s.campaign).await;
    provider.set_behaviour(Behaviour::SlowAnswer(std::time::Duration::from_millis(600)));
    let a = s.app.state.dispatcher();
    let b = s.app.state.dispatcher();
    let ha = tokio::spawn(async move { a.round().await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let rb = b.round().await.unwrap();
    let ra = ha.await.unwrap();
    assert_eq!(ra.sent + rb.sent, provider.accepted().len() as u64);
    assert_eq!(
        provider.duplicates(),
        0,
        "messages reached the provider twice"
    );
}

/// Two dispatchers working at once still hold one resident to the daily cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_keep_the_daily_cap() {
    let (s, a) = four_messages_capped_at_two().await;
    let d1 = s.app.state.dispatcher();
    let d2 = s.app.state.dispatcher();
    let (r1, r2) = tokio::join!(d1.round(), d2.round());
    r1.unwrap();
    r2.unwrap();
    let sent = sent_to(&s.app, a).await;
    assert!(sent <= 2, "daily cap 2, sent {sent}");
}

/// Another worker in the middle of leasing a resident's messages (its lease not yet
/// committed) keeps this one off that resident's other messages: otherwise each would count
/// none sent today and both would send up to the cap.
#[tokio::test]
async fn a_lease_in_progress_keeps_another_worker_off_the_resident() {
    let (s, a) = four_messages_capped_at_two().await;
    // The other worker, as a lease runs: on PostgreSQL under the lease lock, on SQLite
    // holding the write lock.
    let other = outreach::db::begin_write(&s.app.db).await.unwrap();
    if s.app.db.get_database_backend() == DbBackend::Postgres {
        other
            .execute_unprepared(&format!("SELECT pg_advisory_xact_lock({LEASE_LOCK_KEY})"))
            .await
            .unwrap();
    }
    let marked = other
        .execute_unprepared(&format!(
            "UPDATE messages SET state = 'sending', leased_by = 'other' \
             WHERE id IN (SELECT id FROM messages WHERE resident_id = {a} ORDER BY id LIMIT 2)"
        ))
        .await
        .unwrap();
    assert_eq!(marked.rows_affected(), 2);
    let dispatcher = s.app.state.dispatcher();
    let (round, ()) = tokio::join!(dispatcher.round(), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        other.commit().await.unwrap();
    });
    let round = round.unwrap();
    assert_eq!(round.leased, 0, "{round:?}");
    assert_eq!(sent_to(&s.app, a).await, 0);
}

/// One resident with four messages queued (four waves), a daily cap of 2 and leases of 2.
async fn four_messages_capped_at_two() -> (Setup, i32) {
    use outreach::outreach::waves;
    let s = setup(|s| {
        s.messaging.outbox.daily_cap = 2;
        s.messaging.outbox.batch = 2;
    })
    .await;
    let a = resident(&s.app, 1, OWN).await;
    let today = registry::today();
    for i in 0..4 {
        outreach::flows::messaging::waves::create(
            &s.app.db,
            &Actor::cli(),
            s.campaign,
            waves::NewWave {
                name: format!("批次{i}"),
                audience: waves::Audience {
                    migrant_types: vec![MigrantType::Local],
                    ..Default::default()
                },
                window_from: today,
                window_to: today + Duration::days(10),
                send_at: None,
            },
        )
        .await
        .unwrap();
    }
    (s, a)
}

async fn sent_to(app: &TestApp, resident: i32) -> i64 {
    rv_count(
        app,
        &format!(
            "SELECT COUNT(*) AS n FROM messages WHERE resident_id = {resident} AND sent_at IS NOT NULL"
        ),
    )
    .await
}

/// A provider that pushes the same reply twice (its retry) makes one reply and one task.
#[tokio::test]
async fn a_reply_pushed_twice_is_acted_on_once() {
    use outreach::flows::replies::apply_reply;
    use outreach::outreach::callbacks::InboundSms;
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    let sms = InboundSms {
        provider: "aliyun",
        from_phone: "13800001111".into(),
        text: "医生几点上班？".into(),
        at: None,
        provider_id: Some("seq-42".into()),
        signature: None,
    };
    apply_reply(&s.app.db, &s.app.state.privacy, &sms)
        .await
        .unwrap();
    apply_reply(&s.app.db, &s.app.state.privacy, &sms)
        .await
        .unwrap();
    let replies = rv_count(&s.app, "SELECT COUNT(*) AS n FROM inbound_replies").await;
    let tasks = rv_count(
        &s.app,
        &format!("SELECT COUNT(*) AS n FROM outreach_tasks WHERE resident_id = {a}"),
    )
    .await;
    assert_eq!(replies, 1);
    assert_eq!(tasks, 1, "one push, delivered twice, made {tasks} tasks");
}

pub(crate) async fn run_sql(app: &TestApp, sql: &str) {
    app.db
        .execute_raw(Statement::from_string(
            app.db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap();
}

/// (planned, status, states) of a wave as `token` sees it, on its own and in the list.
async fn wave_seen(s: &Setup, id: i64, token: &str) -> (i64, String, Value) {
    let one: Value = s
        .app
        .get(&format!("/api/v1/waves/{id}"), token)
        .await
        .json()
        .await
        .unwrap();
    let listed: Value = s
        .app
        .get(&format!("/api/v1/campaigns/{}/waves", s.campaign), token)
        .await
        .json()
        .await
        .unwrap();
    let in_list = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .unwrap();
    for field in ["planned", "status", "states"] {
        assert_eq!(one[field], in_list[field], "{field}: {one} / {in_list}");
    }
    (
        one["planned"].as_i64().unwrap(),
        one["status"].as_str().unwrap().to_owned(),
        one["states"].clone(),
    )
}

#[tokio::test]
async fn a_waves_figures_are_scoped_alike_and_its_status_moves_on_as_messages_go() {
    let s = setup(|_| {}).await;
    let migrant = Contacts {
        phone: Some("13800001111"),
        relative_phone: None,
        migrant: Some(MigrantType::OutOfRegion),
    };
    let here = resident(&s.app, 1, migrant).await;
    // Another township's migrant, outside the cadre's village.
    let there = flows::registry::create(
        &s.app.db,
        &s.app.state.privacy,
        &Actor::cli(),
        NewResident {
            name: "居民2".into(),
            id_number: resident_id(2, "19700101"),
            village_code: crate::helpers::OTHER_VILLAGE.to_owned(),
            phone: Some("13800002222".into()),
            relative_name: None,
            relative_relation: None,
            relative_phone: None,
            migrant_type: Some(MigrantType::OutOfRegion),
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
    let office = s.app.office_token().await;
    let today = registry::today();
    let response = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/waves", s.campaign),
            &office,
            json!({"name": "古尔邦节回乡体检", "window_from": today + Duration::days(5),
                   "window_to": today + Duration::days(20)}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let wave: Value = response.json().await.unwrap();
    let id = wave["id"].as_i64().unwrap();
    assert_eq!(wave["status"], "planned");

    // Nothing has gone: planned. The office sees both messages, the cadre her village's one
    // — planned and per state alike.
    let (planned, status, by_state) = wave_seen(&s, id, &office).await;
    assert_eq!((planned, status.as_str()), (2, "planned"));
    assert_eq!(by_state, json!({"queued": 2}));
    let (planned, status, by_state) = wave_seen(&s, id, &s.cadre).await;
    assert_eq!((planned, status.as_str()), (1, "planned"));
    assert_eq!(by_state, json!({"queued": 1}));

    // The other village's message waits an hour: the wave is sending once hers has gone.
    let later = Utc::now() + Duration::hours(1);
    let at = match s.app.db.get_database_backend() {
        DbBackend::Postgres => format!("'{}'::timestamptz", later.to_rfc3339()),
        _ => format!(
            "'{}'",
            later.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
        ),
    };
    run_sql(
        &s.app,
        &format!("UPDATE messages SET next_attempt_at = {at} WHERE resident_id = {there}"),
    )
    .await;
    assert_eq!(drain(&s.app).await.sent, 1);
    let (planned, status, by_state) = wave_seen(&s, id, &office).await;
    assert_eq!((planned, status.as_str()), (2, "sending"));
    assert_eq!(by_state, json!({"delivered": 1, "queued": 1}));
    // Her village's message has gone; the wave as a whole has not.
    let (planned, status, by_state) = wave_seen(&s, id, &s.cadre).await;
    assert_eq!((planned, status.as_str()), (1, "sending"));
    assert_eq!(by_state, json!({"delivered": 1}));

    // Everything delivered: done.
    run_sql(
        &s.app,
        &format!("UPDATE messages SET next_attempt_at = created_at WHERE resident_id = {there}"),
    )
    .await;
    assert_eq!(drain(&s.app).await.sent, 1);
    let (planned, status, by_state) = wave_seen(&s, id, &office).await;
    assert_eq!((planned, status.as_str()), (2, "done"));
    assert_eq!(by_state, json!({"delivered": 2}));
    let (_, status, _) = wave_seen(&s, id, &s.cadre).await;
    assert_eq!(status, "done");
    assert_eq!(
        states(&s.app, here).await,
        [pair("migrant_wave", "delivered")]
    );
    // Cancelling a finished wave cancels nothing: its messages stay delivered.
    let cancelled: Value = s
        .app
        .post(&format!("/api/v1/waves/{id}/cancel"), &office, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["states"], json!({"delivered": 2}));
}

#[tokio::test]
async fn report_figures_keep_coming_after_a_reply_routed_message_is_suppressed() {
    use outreach::flows::replies::apply_reply;
    use outreach::outreach::callbacks::InboundSms;
    let s = setup(|_| {}).await;
    let a = resident(&s.app, 1, OWN).await;
    // A resident with no contact at all: the notice fails for lack of any channel.
    let nobody = resident(
        &s.app,
        2,
        Contacts {
            phone: None,
            relative_phone: None,
            migrant: None,
        },
    )
    .await;
    book(&s, &[a, nobody]).await;
    drain(&s.app).await;
    assert_eq!(
        states(&s.app, nobody).await[0],
        pair("appointment_notice", "failed")
    );
    // Reply 2, then TD before the reschedule options went: they are suppressed, with no
    // channel and no provider.
    let sms = |text: &str| InboundSms {
        provider: "aliyun",
        from_phone: "13800001111".into(),
        text: text.into(),
        at: None,
        provider_id: None,
        signature: None,
    };
    for text in ["2", "TD"] {
        apply_reply(&s.app.db, &s.app.state.privacy, &sms(text))
            .await
            .unwrap();
    }
    drain(&s.app).await;
    let suppressed = rv_count(
        &s.app,
        &format!(
            "SELECT COUNT(*) AS n FROM messages WHERE resident_id = {a} \
             AND kind = 'reschedule_options' AND state = 'suppressed' \
             AND provider IS NULL AND channel IS NULL"
        ),
    )
    .await;
    assert_eq!(suppressed, 1);

    // The refresh goes on, now and every time after.
    let office = s.app.office_token().await;
    for _ in 0..2 {
        let refreshed = s
            .app
            .post(
                &format!("/api/v1/campaigns/{}/reports/refresh", s.campaign),
                &office,
                json!({}),
            )
            .await;
        let status = refreshed.status();
        let body: Value = refreshed.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rows_skipped"], 0);
    }
    assert!(
        outreach::flows::reports::refresh_open(&s.app.db, 0)
            .await
            .is_ok(),
        "the scheduled refresh"
    );
    let contacts: Value = s
        .app
        .get(
            &format!("/api/v1/campaigns/{}/reports/contacts", s.campaign),
            &office,
        )
        .await
        .json()
        .await
        .unwrap();
    let channels = contacts["channels"].as_array().unwrap();
    // Sent: a's notice and the opt-out confirmation; the notice without a channel failed.
    let sms_line = channels
        .iter()
        .find(|c| c["channel"] == "phone")
        .unwrap_or_else(|| panic!("{contacts}"));
    assert_eq!(sms_line["sent"], 2, "{contacts}");
    assert_eq!(sms_line["failed"], 0, "{contacts}");
    let none = channels
        .iter()
        .find(|c| c["channel"] == "none")
        .unwrap_or_else(|| panic!("{contacts}"));
    assert_eq!(none["channel_name"], "无可用渠道");
    assert_eq!(
        (none["sent"].as_i64(), none["failed"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(contacts["messages"]["sent"], 2);
    assert_eq!(contacts["messages"]["failed"], 1);
    let progress: Value = s
        .app
        .get(
            &format!("/api/v1/campaigns/{}/reports/progress?by=none", s.campaign),
            &office,
        )
        .await
        .json()
        .await
        .unwrap();
    // Both booked: both reached (a booking is made with the person), both appointed.
    assert_eq!(progress["total"]["appointed"], 2, "{progress}");
    assert_eq!(progress["total"]["reached"], 2, "{progress}");
}

#[tokio::test]
async fn an_email_the_mail_server_accepted_counts_as_delivered() {
    let smtp = crate::email::start_smtp();
    let port = smtp.port;
    let s = setup(move |settings| {
        settings.messaging.smtp = Some(crate::email::settings(port));
    })
    .await;
    let by_mail = flows::registry::create(
        &s.app.db,
        &s.app.state.privacy,
        &Actor::cli(),
        NewResident {
            name: "居民1".into(),
            id_number: resident_id(1, "19700101"),
            village_code: VILLAGE.to_owned(),
            phone: None,
            relative_name: None,
            relative_relation: None,
            relative_phone: None,
            migrant_type: None,
            permit_since: None,
            special: None,
            current_address: None,
            wechat_openid: None,
            email: Some("zhangsan@example.org".into()),
            language: None,
        },
    )
    .await
    .unwrap()
    .id;
    book(&s, &[by_mail]).await;
    assert_eq!(drain(&s.app).await.delivered, 1);
    assert_eq!(
        states(&s.app, by_mail).await[0],
        pair("appointment_notice", "delivered")
    );
    let office = s.app.office_token().await;
    let refreshed = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/reports/refresh", s.campaign),
            &office,
            json!({}),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let contacts: Value = s
        .app
        .get(
            &format!("/api/v1/campaigns/{}/reports/contacts", s.campaign),
            &office,
        )
        .await
        .json()
        .await
        .unwrap();
    let email = contacts["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "email")
        .unwrap_or_else(|| panic!("{contacts}"));
    assert_eq!(email["provider"], "smtp");
    assert_eq!(
        (email["sent"].as_i64(), email["delivered"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(email["delivery_rate"], 1.0);
    assert!(contacts["note"].as_str().unwrap().contains("电子邮件"));
}

/// The text and segment count recorded for a resident's notice.
async fn notice_row(app: &TestApp, resident: i32) -> (String, i32) {
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!(
                "SELECT body, segments FROM messages WHERE resident_id = {resident} \
                 AND kind = 'appointment_notice'"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    (
        row.try_get("", "body").unwrap(),
        row.try_get("", "segments").unwrap(),
    )
}

fn arabic_script(text: &str) -> bool {
    text.chars().any(|c| ('\u{0600}'..='\u{06FF}').contains(&c))
}

/// Residents marked Uyghur or Kazakh get their notice in their language (Arabic script, sent
/// as UCS-2 and counted 70/67 a segment); a Chinese-speaking neighbour still gets Chinese.
#[tokio::test]
async fn uyghur_and_kazakh_residents_get_their_notice_in_their_language() {
    use outreach::registry::Language;
    let (s, gateway) = setup_jasmin(|_| {}).await;
    let phone = |p| Contacts {
        phone: Some(p),
        relative_phone: None,
        migrant: None,
    };
    let ug = resident_speaking(&s.app, 1, phone("13800001111"), Some(Language::Ug)).await;
    let kk = resident_speaking(&s.app, 2, phone("13800002222"), Some(Language::Kk)).await;
    let zh = resident_speaking(&s.app, 3, phone("13800003333"), None).await;
    book(&s, &[ug, kk, zh]).await;
    drain(&s.app).await;
    let received = gateway.received.lock().unwrap().clone();
    let at_gateway = |to: &str| -> String {
        received
            .iter()
            .find(|f| f["to"] == format!("86{to}"))
            .unwrap_or_else(|| panic!("nothing reached {to}"))["text"]
            .clone()
    };
    let uyghur = at_gateway("13800001111");
    assert!(
        uyghur.starts_with("【新源县卫健委】居民1 ياخشىمۇسىز"),
        "{uyghur}"
    );
    assert!(
        uyghur.contains("كىملىك"),
        "the ID card, in Uyghur: {uyghur}"
    );
    assert!(uyghur.ends_with("回TD退订"), "{uyghur}");
    let kazakh = at_gateway("13800002222");
    assert!(
        kazakh.starts_with("【新源县卫健委】居民2 سالەمەتسىز بە"),
        "{kazakh}"
    );
    assert!(arabic_script(&kazakh) && kazakh != uyghur);
    let chinese = at_gateway("13800003333");
    assert!(
        chinese.contains("居民3您好") && !arabic_script(&chinese),
        "{chinese}"
    );
    for (resident, text) in [(ug, &uyghur), (kk, &kazakh)] {
        let (body, segments) = notice_row(&s.app, resident).await;
        assert_eq!(&body, text);
        let units = text.encode_utf16().count();
        assert!(units > 70, "{units}");
        assert_eq!(
            segments as usize,
            units.div_ceil(67),
            "{units} UCS-2 characters"
        );
    }
}

/// A county's own copy of the templates wins over the built-in Uyghur text.
#[tokio::test]
async fn a_countys_own_uyghur_text_wins_over_the_built_in_one() {
    use outreach::registry::Language;
    let dir = tempfile::tempdir().unwrap();
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("message-templates");
    for kind in outreach::outreach::MessageKind::ALL {
        let target = dir.path().join(kind.code());
        std::fs::create_dir_all(&target).unwrap();
        for locale in ["zh-CN", "ug", "kk"] {
            std::fs::copy(
                from.join(kind.code()).join(format!("{locale}.txt")),
                target.join(format!("{locale}.txt")),
            )
            .unwrap();
        }
    }
    std::fs::write(
        dir.path().join("appointment_notice/ug.txt"),
        "{{ resident_name }} ھۆرمەتلىك ئاھالە، {{ day }} {{ time }} {{ institution_name }} دا تەكشۈرۈش بار.",
    )
    .unwrap();
    let templates = dir.path().to_owned();
    let (s, gateway) = setup_jasmin(move |settings| {
        settings.messaging.templates_dir = Some(templates);
    })
    .await;
    let ug = resident_speaking(&s.app, 1, OWN, Some(Language::Ug)).await;
    book(&s, &[ug]).await;
    drain(&s.app).await;
    let received = gateway.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let text = &received[0]["text"];
    assert!(
        text.starts_with("【新源县卫健委】居民1 ھۆرمەتلىك ئاھالە،"),
        "{text}"
    );
    assert!(
        !text.contains("ياخشىمۇسىز"),
        "the built-in text was used: {text}"
    );
}

// ------------------------------------------------------------------------------------------
// A worker stopped mid-batch
// ------------------------------------------------------------------------------------------

/// What reached the stand-in gateway: each call's idempotency key, number and text.
#[derive(Default)]
struct GateLog {
    calls: Vec<(String, String, String)>,
    lookups: Vec<String>,
}

/// An SMS gateway stand-in that takes the first `open_for` messages, then takes the next
/// one and never answers (the worker is stopped during that call). With `looks_up` it
/// answers lookups by idempotency key, as Alibaba's `QuerySendDetails` does by `OutId`.
struct Gate {
    log: std::sync::Arc<std::sync::Mutex<GateLog>>,
    open_for: usize,
    looks_up: bool,
}

#[async_trait::async_trait]
impl outreach::outreach::Channel for Gate {
    fn name(&self) -> &'static str {
        "jasmin"
    }

    fn reaches(&self, recipient: &outreach::outreach::Recipient) -> bool {
        matches!(recipient, outreach::outreach::Recipient::Phone(_))
    }

    async fn send(
        &self,
        message: &outreach::outreach::Outgoing,
    ) -> Result<outreach::outreach::Sent, outreach::outreach::SendError> {
        let outreach::outreach::Recipient::Phone(phone) = &message.recipient else {
            unreachable!("phones only");
        };
        let n = {
            let mut log = self.log.lock().unwrap();
            log.calls.push((
                message.idempotency_key.clone(),
                phone.clone(),
                message.text.clone(),
            ));
            log.calls.len()
        };
        if n > self.open_for {
            std::future::pending::<()>().await;
        }
        Ok(outreach::outreach::Sent {
            provider: "jasmin",
            provider_message_id: format!("gw-{n}"),
            delivered: false,
        })
    }

    async fn lookup(
        &self,
        message: &outreach::outreach::Outgoing,
        _since: chrono::DateTime<Utc>,
    ) -> Result<Option<outreach::outreach::Sent>, outreach::outreach::SendError> {
        let mut log = self.log.lock().unwrap();
        log.lookups.push(message.idempotency_key.clone());
        if !self.looks_up {
            return Err(outreach::outreach::SendError::Transient(
                "no lookup".to_owned(),
            ));
        }
        let taken = log
            .calls
            .iter()
            .any(|(key, _, _)| *key == message.idempotency_key);
        Ok(taken.then(|| outreach::outreach::Sent {
            provider: "jasmin",
            provider_message_id: String::new(),
            delivered: false,
        }))
    }
}

/// Six wave messages leased in one batch, sent one at a time; the worker is dropped while
/// the third is with the gateway; the leases run out and a new worker takes over. Returns
/// the gateway's log, the key of the message that was in flight, and (key, state,
/// last_error) of every message.
async fn stop_mid_batch(looks_up: bool) -> (GateLog, String, Vec<(String, String, String)>) {
    const N: u32 = 6;
    let s = setup(|_| {}).await;
    residents_with_phones(&s.app, 10, N).await;
    local_wave(&s.app, s.campaign).await;
    let log = std::sync::Arc::new(std::sync::Mutex::new(GateLog::default()));
    let worker = |open_for: usize| {
        let gate: std::sync::Arc<dyn outreach::outreach::Channel> = std::sync::Arc::new(Gate {
            log: log.clone(),
            open_for,
            looks_up,
        });
        let mut settings = s.app.state.settings.messaging.outbox.clone();
        settings.batch = N;
        settings.concurrency = 1;
        settings.rate_per_second.clear();
        outreach::workers::dispatch::Dispatcher::new(
            s.app.db.clone(),
            s.app.state.privacy.clone(),
            s.app.state.templates.clone(),
            std::sync::Arc::new(outreach::workers::dispatch::Channels::new(
                None,
                Some(gate),
                None,
                &settings.rate_per_second,
            )),
            settings,
        )
    };
    let first = worker(2);
    let stopped = tokio::spawn(async move { first.round().await });
    // Two sends recorded and the third with the gateway: the worker stops there.
    let started = std::time::Instant::now();
    while log.lock().unwrap().calls.len() < 3
        || rv_count(
            &s.app,
            "SELECT COUNT(*) AS n FROM messages WHERE state = 'sent'",
        )
        .await
            < 2
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stopped.abort();
    assert!(stopped.await.unwrap_err().is_cancelled());
    let in_flight = log.lock().unwrap().calls[2].0.clone();
    assert_eq!(
        rv_count(
            &s.app,
            "SELECT COUNT(*) AS n FROM messages WHERE state = 'sending'"
        )
        .await,
        4,
        "the one in flight and the three never handed over stay leased"
    );
    assert_eq!(
        rv_count(
            &s.app,
            "SELECT COUNT(*) AS n FROM messages WHERE state = 'sending' \
             AND handed_over_at IS NOT NULL"
        )
        .await,
        1,
        "only the message in flight is marked handed over"
    );
    // The leases run out.
    rv_exec(
        &s.app,
        "UPDATE messages SET lease_until = ? WHERE state = 'sending'",
        "UPDATE messages SET lease_until = $1 WHERE state = 'sending'",
        vec![(Utc::now() - Duration::minutes(1)).into()],
    )
    .await;
    worker(usize::MAX).drain().await.unwrap();
    let rows = s
        .app
        .db
        .query_all_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            "SELECT idempotency_key, state, COALESCE(last_error, '') AS last_error \
             FROM messages ORDER BY id"
                .to_owned(),
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get("", "idempotency_key").unwrap(),
                r.try_get("", "state").unwrap(),
                r.try_get("", "last_error").unwrap(),
            )
        })
        .collect();
    let log = std::mem::take(&mut *log.lock().unwrap());
    // Nothing reached the gateway twice, by key or by (number, text).
    let mut keys: Vec<&str> = log.calls.iter().map(|(k, _, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys.len(),
        log.calls.len(),
        "a key reached the gateway twice"
    );
    let mut texts: Vec<(&str, &str)> = log
        .calls
        .iter()
        .map(|(_, to, text)| (to.as_str(), text.as_str()))
        .collect();
    texts.sort_unstable();
    texts.dedup();
    assert_eq!(
        texts.len(),
        log.calls.len(),
        "a text reached a number twice"
    );
    assert_eq!(
        log.calls.len(),
        N as usize,
        "every message reached the gateway"
    );
    (log, in_flight, rows)
}

/// A gateway that cannot be asked: the messages never handed over are sent once after the
/// restart; only the one in flight is failed as an unknown outcome, for a person to re-send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_batch_resends_only_what_never_left() {
    let (log, in_flight, rows) = stop_mid_batch(false).await;
    assert_eq!(
        log.lookups,
        std::slice::from_ref(&in_flight),
        "only the one in flight is asked about"
    );
    for (key, state, error) in &rows {
        if *key == in_flight {
            assert_eq!(state, "failed");
            assert!(error.starts_with("outcome_unknown"), "{error}");
        } else {
            assert_eq!(state, "sent", "{key}: {error}");
        }
    }
}

/// A gateway that can be asked by idempotency key: the message in flight is found there
/// and counts as sent without going again; the rest are sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_batch_asks_about_the_message_in_flight() {
    let (log, in_flight, rows) = stop_mid_batch(true).await;
    assert_eq!(log.lookups, [in_flight]);
    assert!(rows.iter().all(|(_, state, _)| state == "sent"), "{rows:?}");
}
