//! The resident's own appointment link, `/r/{code}`, as the server answers it (the browser
//! test `tests/browser/link.test.mjs` drives it in chromium): the link in the notices, the
//! page, 确认 / 改约 / 退订 and what each moves, and the codes that open nothing.

use chrono::{Duration, NaiveDate, NaiveTime};
use entities::users::Role;
use outreach::auth::Actor;
use outreach::flows;
use outreach::institution;
use outreach::registry::{self, NewResident};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use crate::campaigns::row;
use crate::helpers::{TOWNSHIP, TestApp, VILLAGE, resident_id, spawn_app_with};
use crate::messaging::open_loud_campaign;

const PUBLIC_URL: &str = "https://tijian.example.gov.cn";
const PHONE: &str = "13800005555";

struct Setup {
    app: TestApp,
    campaign: i32,
    institution: i32,
    cadre: String,
}

/// An open campaign, an institution of 新源镇 with `capacity` places a day, a cadre of the
/// village; notices due at once, delivered by the log channel.
async fn setup(capacity: i32) -> Setup {
    let app = spawn_app_with(|s| {
        s.http.public_url = Some(PUBLIC_URL.to_owned());
        s.messaging.outbox.reminders.notice_at = NaiveTime::MIN;
        s.messaging.outbox.reminders.same_day_at = NaiveTime::MIN;
        s.messaging.outbox.simulate_receipts = true;
        s.messaging.outbox.hotline = "0999-5123456".into();
        s.messaging.sms_signature = "新源县卫健委".into();
    })
    .await;
    app.seed_areas().await;
    let campaign = open_loud_campaign(&app).await;
    let institution = flows::institutions::create(
        &app.db,
        &Actor::cli(),
        institution::NewInstitution {
            code: "XY-WSY".to_owned(),
            name: "新源镇卫生院".to_owned(),
            kind: institution::Kind::TownshipCentre,
            area_code: TOWNSHIP.to_owned(),
            daily_capacity: capacity,
            closed_weekdays: Vec::new(),
            serves: vec![TOWNSHIP.to_owned()],
            address: Some("新源镇团结路18号".to_owned()),
        },
    )
    .await
    .unwrap()
    .id;
    let (_, cadre) = app.user("cadre.link", Role::Cadre, VILLAGE).await;
    Setup {
        app,
        campaign,
        institution,
        cadre,
    }
}

async fn resident(app: &TestApp, n: u32, name: &str) -> i32 {
    flows::registry::create(
        &app.db,
        &app.state.privacy,
        &Actor::cli(),
        NewResident {
            name: name.to_owned(),
            id_number: resident_id(n, "19700101"),
            village_code: VILLAGE.to_owned(),
            phone: Some(PHONE.to_owned()),
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
    .id
}

fn in_days(n: i64) -> NaiveDate {
    registry::today() + Duration::days(n)
}

/// Books `residents` on `day` as the cadre; the appointment ids.
async fn book(s: &Setup, residents: &[i32], day: NaiveDate) -> Vec<i32> {
    let response = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/bookings", s.campaign),
            &s.cadre,
            json!({"institution_id": s.institution, "day": day, "resident_ids": residents}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.unwrap();
    body["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap() as i32)
        .collect()
}

/// The code of a resident's link, as dispatch would write it.
async fn code_of(s: &Setup, resident: i32) -> String {
    let codes = outreach::outreach::links::ensure(
        &s.app.db,
        &s.app.state.privacy,
        &[(s.campaign, resident)],
    )
    .await
    .unwrap();
    codes[&(s.campaign, resident)].clone()
}

/// A browser that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn open(app: &TestApp, path: &str) -> reqwest::Response {
    browser().get(app.url(path)).send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    browser()
        .post(app.url(path))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn query(app: &TestApp, sql: &str) -> Vec<sea_orm::QueryResult> {
    app.db
        .query_all_raw(Statement::from_string(
            app.db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
}

/// (kind, state) of a resident's messages, in order.
async fn messages(app: &TestApp, resident: i32) -> Vec<(String, String)> {
    query(
        app,
        &format!("SELECT kind, state FROM messages WHERE resident_id = {resident} ORDER BY id"),
    )
    .await
    .iter()
    .map(|r| {
        (
            r.try_get("", "kind").unwrap(),
            r.try_get("", "state").unwrap(),
        )
    })
    .collect()
}

async fn audited(app: &TestApp, action: &str) -> Vec<(String, Option<String>)> {
    query(
        app,
        &format!(
            "SELECT actor_name, entity_id FROM audit_log WHERE action = '{action}' ORDER BY id"
        ),
    )
    .await
    .iter()
    .map(|r| {
        (
            r.try_get("", "actor_name").unwrap(),
            r.try_get("", "entity_id").unwrap(),
        )
    })
    .collect()
}

fn pair(kind: &str, state: &str) -> (String, String) {
    (kind.to_owned(), state.to_owned())
}

#[tokio::test]
async fn the_notice_carries_the_link_and_the_page_shows_the_appointment_only() {
    let s = setup(20).await;
    let id_number = resident_id(1, "19700101");
    let a = resident(&s.app, 1, "张伟").await;
    book(&s, &[a], in_days(1)).await;
    s.app.state.dispatcher().drain().await.unwrap();

    let rows = query(
        &s.app,
        &format!(
            "SELECT body, segments FROM messages WHERE resident_id = {a} \
             AND kind = 'appointment_notice'"
        ),
    )
    .await;
    let body: String = rows[0].try_get("", "body").unwrap();
    let segments: i32 = rows[0].try_get("", "segments").unwrap();
    let prefix = format!("{PUBLIC_URL}/r/");
    let at = body
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link in {body}"));
    let code: String = body[at + prefix.len()..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    assert_eq!(code.len(), 12, "{body}");
    assert!(body.ends_with("回TD退订"), "{body}");
    assert_eq!(
        segments as usize,
        outreach::outreach::templates::segments(&body)
    );
    // The same code is kept for the resident's later messages.
    assert_eq!(code_of(&s, a).await, code);
    // The database never holds the code in clear.
    let stored = query(&s.app, "SELECT code_index, code_enc FROM resident_links").await;
    assert_eq!(stored.len(), 1);
    for column in ["code_index", "code_enc"] {
        let bytes: Vec<u8> = stored[0].try_get("", column).unwrap();
        assert!(
            !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
            "{column} holds the code"
        );
    }

    let response = open(&s.app, &format!("/r/{code}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    for shown in [
        "张*",
        "新源镇卫生院",
        "新源镇团结路18号",
        &outreach::outreach::links::day_label(in_days(1)),
        "上午8:00",
        "空腹",
        "身份证",
        "已预约",
        "data-testid=\"link-confirm\"",
        "data-testid=\"link-reschedule\"",
        "data-testid=\"link-optout\"",
    ] {
        assert!(html.contains(shown), "{shown} missing");
    }
    for hidden in ["张伟", id_number.as_str(), PHONE, "138****5555"] {
        assert!(!html.contains(hidden), "{hidden} is on the page");
    }
}

#[tokio::test]
async fn without_a_public_url_messages_carry_no_link() {
    let app = spawn_app_with(|s| {
        s.messaging.outbox.reminders.notice_at = NaiveTime::MIN;
        s.messaging.outbox.simulate_receipts = true;
    })
    .await;
    app.seed_areas().await;
    let campaign = open_loud_campaign(&app).await;
    let institution = app.institution("XY-WSY", TOWNSHIP, &[TOWNSHIP], 20).await;
    let (_, cadre) = app.user("cadre.nolink", Role::Cadre, VILLAGE).await;
    let a = resident(&app, 2, "李娜").await;
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/bookings"),
            &cadre,
            json!({"institution_id": institution, "day": in_days(1), "resident_ids": [a]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    app.state.dispatcher().drain().await.unwrap();
    let rows = query(
        &app,
        &format!(
            "SELECT body FROM messages WHERE resident_id = {a} AND kind = 'appointment_notice'"
        ),
    )
    .await;
    let body: String = rows[0].try_get("", "body").unwrap();
    assert!(body.contains("禁食") && !body.contains("/r/"), "{body}");
    assert!(
        query(&app, "SELECT id FROM resident_links")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn confirming_on_the_link_confirms_reaches_and_is_audited() {
    let s = setup(20).await;
    let a = resident(&s.app, 3, "王芳").await;
    let appointment = book(&s, &[a], in_days(2)).await[0];
    let code = code_of(&s, a).await;
    // A progress row nobody has reached yet (the booking reached it; undone here so that
    // the link's own step shows).
    query(
        &s.app,
        &format!(
            "UPDATE enrolments SET reached_at = NULL, notified_at = NULL WHERE resident_id = {a}"
        ),
    )
    .await;

    let response = post(&s.app, &format!("/r/{code}/confirm"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()[LOCATION],
        format!("/r/{code}?done=confirmed").as_str()
    );
    let confirmed = query(
        &s.app,
        &format!("SELECT confirmed_at FROM appointments WHERE id = {appointment}"),
    )
    .await[0]
        .try_get::<Option<chrono::DateTime<chrono::Utc>>>("", "confirmed_at")
        .unwrap();
    assert!(confirmed.is_some());
    let progress = row(&s.app, s.campaign, a).await.unwrap();
    assert!(progress.reached_at.is_some() && progress.notified_at.is_some());
    assert_eq!(progress.stage, "appointed");
    assert_eq!(
        audited(&s.app, "link.confirm").await,
        [("resident_link".to_owned(), Some(appointment.to_string()))]
    );
    let html = open(&s.app, &format!("/r/{code}?done=confirmed"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("已确认"), "{html}");
    assert!(!html.contains("data-testid=\"link-confirm\""));

    // Confirming again changes nothing.
    let again = post(&s.app, &format!("/r/{code}/confirm"), &[]).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let still = query(
        &s.app,
        &format!("SELECT confirmed_at FROM appointments WHERE id = {appointment}"),
    )
    .await[0]
        .try_get::<Option<chrono::DateTime<chrono::Utc>>>("", "confirmed_at")
        .unwrap();
    assert_eq!(still, confirmed);

    // A form posted from another site is refused.
    let forged = browser()
        .post(s.app.url(&format!("/r/{code}/opt-out")))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(audited(&s.app, "resident.opt_out").await.is_empty());
}

async fn booked_on(app: &TestApp, institution: i32, day: NaiveDate) -> i32 {
    let rows = query(
        app,
        &format!(
            "SELECT booked FROM institution_days WHERE institution_id = {institution} \
             AND day = '{day}'"
        ),
    )
    .await;
    rows.first()
        .map(|r| r.try_get("", "booked").unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn rescheduling_on_the_link_moves_to_a_free_day_and_refuses_a_full_one() {
    let s = setup(1).await;
    let a = resident(&s.app, 4, "马丽").await;
    let b = resident(&s.app, 5, "古丽").await;
    let appointment = book(&s, &[a], in_days(2)).await[0];
    book(&s, &[b], in_days(3)).await;
    let code = code_of(&s, a).await;

    // The page offers the days with room only.
    let html = open(&s.app, &format!("/r/{code}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("value=\"{}\"", in_days(4))),
        "{html}"
    );
    assert!(!html.contains(&format!("value=\"{}\"", in_days(3))));
    assert!(!html.contains(&format!("value=\"{}\"", in_days(2))));

    // A full day (chosen anyway) is refused with the reason, and nothing moves.
    let day = in_days(3).to_string();
    let full = post(&s.app, &format!("/r/{code}/reschedule"), &[("day", &day)]).await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    let html = full.text().await.unwrap();
    assert!(html.contains("已约满"), "{html}");
    assert_eq!(booked_on(&s.app, s.institution, in_days(2)).await, 1);

    let day = in_days(4).to_string();
    let moved = post(&s.app, &format!("/r/{code}/reschedule"), &[("day", &day)]).await;
    assert_eq!(moved.status(), StatusCode::SEE_OTHER);
    let rows = query(
        &s.app,
        &format!("SELECT day, status FROM appointments WHERE id = {appointment}"),
    )
    .await;
    assert_eq!(rows[0].try_get::<NaiveDate>("", "day").unwrap(), in_days(4));
    assert_eq!(rows[0].try_get::<String>("", "status").unwrap(), "booked");
    assert_eq!(booked_on(&s.app, s.institution, in_days(2)).await, 0);
    assert_eq!(booked_on(&s.app, s.institution, in_days(4)).await, 1);
    let sent = messages(&s.app, a).await;
    assert!(
        sent.contains(&pair("reschedule_confirmation", "queued")),
        "{sent:?}"
    );
    assert!(
        sent.contains(&pair("appointment_notice", "cancelled")),
        "{sent:?}"
    );
    assert_eq!(
        audited(&s.app, "appointment.reschedule").await,
        [("resident_link".to_owned(), Some(appointment.to_string()))]
    );
    // The confirmation carries the link again.
    s.app.state.dispatcher().drain().await.unwrap();
    let rows = query(
        &s.app,
        &format!(
            "SELECT body FROM messages WHERE resident_id = {a} \
             AND kind = 'reschedule_confirmation'"
        ),
    )
    .await;
    let body: String = rows[0].try_get("", "body").unwrap();
    assert!(body.contains(&format!("{PUBLIC_URL}/r/{code}")), "{body}");

    // Not a date: the page says what is wrong.
    let bad = post(&s.app, &format!("/r/{code}/reschedule"), &[("day", "明天")]).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("请选择新的体检日期"));
}

#[tokio::test]
async fn opting_out_on_the_link_stops_every_later_message() {
    let s = setup(20).await;
    let a = resident(&s.app, 6, "阿依古丽").await;
    book(&s, &[a], in_days(1)).await;
    let code = code_of(&s, a).await;
    assert_eq!(
        messages(&s.app, a).await,
        [
            pair("appointment_notice", "queued"),
            pair("same_day_reminder", "scheduled")
        ]
    );

    let response = post(&s.app, &format!("/r/{code}/opt-out"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let flags = query(
        &s.app,
        &format!(
            "SELECT phone_opt_out, relative_opt_out, wechat_opt_out, email_opt_out \
             FROM residents WHERE id = {a}"
        ),
    )
    .await;
    for flag in [
        "phone_opt_out",
        "relative_opt_out",
        "wechat_opt_out",
        "email_opt_out",
    ] {
        assert!(flags[0].try_get::<bool>("", flag).unwrap(), "{flag}");
    }
    assert_eq!(
        audited(&s.app, "resident.opt_out").await,
        [("resident_link".to_owned(), Some(a.to_string()))]
    );
    // The notice waiting is not sent; the confirmation of the opt-out is.
    s.app.state.dispatcher().drain().await.unwrap();
    assert_eq!(
        messages(&s.app, a).await,
        [
            pair("appointment_notice", "suppressed"),
            pair("same_day_reminder", "scheduled"),
            pair("opt_out_confirmation", "delivered"),
        ]
    );
    let html = open(&s.app, &format!("/r/{code}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("data-testid=\"link-opted-out\""));
    // A second opt-out queues no second confirmation.
    post(&s.app, &format!("/r/{code}/opt-out"), &[]).await;
    s.app.state.dispatcher().drain().await.unwrap();
    assert_eq!(messages(&s.app, a).await.len(), 3);
}

#[tokio::test]
async fn unknown_codes_get_a_friendly_page_until_an_address_keeps_guessing() {
    let s = setup(20).await;
    let a = resident(&s.app, 7, "李明").await;
    book(&s, &[a], in_days(2)).await;
    let code = code_of(&s, a).await;

    let response = open(&s.app, "/r/AAAAAAAAAAAA").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(response.text().await.unwrap().contains("没有找到您的预约"));
    // Malformed codes and posts count as well.
    assert_eq!(
        open(&s.app, "/r/x'--").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&s.app, "/r/BBBBBBBBBBBB/confirm", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    // The real link still opens meanwhile.
    assert_eq!(
        open(&s.app, &format!("/r/{code}")).await.status(),
        StatusCode::OK
    );
    let mut statuses = Vec::new();
    for n in 0..10 {
        statuses.push(open(&s.app, &format!("/r/CCCCCCCCCC{n:02}")).await.status());
    }
    assert_eq!(statuses[..7], [StatusCode::NOT_FOUND; 7]);
    assert_eq!(statuses[7], StatusCode::TOO_MANY_REQUESTS);
    // Refused from this address now, even a real code (guessing gains nothing).
    let busy = open(&s.app, &format!("/r/{code}")).await;
    assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(busy.headers().contains_key(RETRY_AFTER));
    assert!(busy.text().await.unwrap().contains("请稍后再试"));
}

#[tokio::test]
async fn a_closed_campaign_expires_its_links() {
    let s = setup(20).await;
    let a = resident(&s.app, 8, "赵强").await;
    book(&s, &[a], in_days(2)).await;
    let code = code_of(&s, a).await;
    assert_eq!(
        open(&s.app, &format!("/r/{code}")).await.status(),
        StatusCode::OK
    );
    outreach::flows::campaigns::close(&s.app.db, &Actor::cli(), s.campaign)
        .await
        .unwrap();
    let response = open(&s.app, &format!("/r/{code}")).await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert!(response.text().await.unwrap().contains("链接已失效"));
    let posted = post(&s.app, &format!("/r/{code}/confirm"), &[]).await;
    assert_eq!(posted.status(), StatusCode::GONE);
    assert!(audited(&s.app, "link.confirm").await.is_empty());
}

#[tokio::test]
async fn a_cancelled_appointment_is_shown_and_its_actions_refused_with_the_reason() {
    let s = setup(20).await;
    let a = resident(&s.app, 9, "孙杰").await;
    let appointment = book(&s, &[a], in_days(2)).await[0];
    // Two dispatchers making the same resident's code at once end with one code.
    let (first, second) = tokio::join!(code_of(&s, a), code_of(&s, a));
    assert_eq!(first, second);
    let code = first;
    let response = s
        .app
        .post(
            &format!("/api/v1/appointments/{appointment}/cancel"),
            &s.cadre,
            json!({"reason": "居民外出"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let html = open(&s.app, &format!("/r/{code}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("已取消"), "{html}");
    assert!(!html.contains("data-testid=\"link-confirm\""));
    assert!(!html.contains("data-testid=\"link-reschedule\""));
    let refused = post(&s.app, &format!("/r/{code}/confirm"), &[]).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(refused.text().await.unwrap().contains("没有可以更改的预约"));
    let day = in_days(3).to_string();
    let refused = post(&s.app, &format!("/r/{code}/reschedule"), &[("day", &day)]).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(audited(&s.app, "link.confirm").await.is_empty());
}
