//! Provider callbacks: receipts move a message forward only (late and repeated ones change
//! nothing), a failed delivery falls back to the next channel, replies confirm / ask to
//! reschedule / opt out, unknown numbers are kept for the office, and unauthenticated calls
//! are refused.

use chrono::Duration;
use entities::users::Role;
use outreach::auth::Actor;
use outreach::flows;
use outreach::registry::{self, NewResident};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::helpers::{TOWNSHIP, TestApp, VILLAGE, error_code, resident_id, spawn_app_with};
use crate::sms_gateway::{Gateway, start_gateway};

const SECRET: &str = "hook-secret-2026";
const WECHAT_TOKEN: &str = "wx-server-token";

struct Setup {
    app: TestApp,
    gateway: Gateway,
    campaign: i32,
    resident: i32,
    appointment: i32,
    cadre: String,
}

/// A resident with an own and a relative's phone, booked for tomorrow; the notice sent
/// through the (stand-in) Jasmin gateway.
async fn setup() -> Setup {
    let (url, gateway) = start_gateway().await;
    let app = spawn_app_with(move |s| {
        s.messaging.sms_provider = "jasmin".into();
        s.messaging.jasmin = Some(crate::sms_gateway::settings(&url, "s3cret"));
        s.messaging.webhooks.secret = Some(outreach::config::Secret::new(SECRET));
        s.messaging.webhooks.wechat_token = Some(outreach::config::Secret::new(WECHAT_TOKEN));
        s.messaging.outbox.reminders.notice_at = chrono::NaiveTime::MIN;
        s.messaging.outbox.reminders.same_day_at = chrono::NaiveTime::MIN;
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
            relative_name: Some("买买提".into()),
            relative_relation: Some("子女".into()),
            relative_phone: Some("13900002222".into()),
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
    let (_, cadre) = app.user("cadre.w", Role::Cadre, VILLAGE).await;
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/bookings"),
            &cadre,
            json!({"institution_id": institution, "day": registry::today() + Duration::days(1),
                   "resident_ids": [resident]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let appointment = body["appointments"][0]["id"].as_i64().unwrap() as i32;
    let round = app.state.dispatcher().drain().await.unwrap();
    assert_eq!(round.sent, 1);
    Setup {
        app,
        gateway,
        campaign,
        resident,
        appointment,
        cadre,
    }
}

async fn form(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .form(fields)
        .send()
        .await
        .unwrap()
}

async fn value(app: &TestApp, sql: &str) -> Option<String> {
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()?;
    row.try_get::<Option<String>>("", "v").unwrap()
}

async fn notice_state(s: &Setup) -> String {
    value(
        &s.app,
        &format!(
            "SELECT state AS v FROM messages WHERE resident_id = {} AND kind = 'appointment_notice'",
            s.resident
        ),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn receipts_move_a_message_forward_only_and_repeats_change_nothing() {
    let s = setup().await;
    let dlr = |status: &'static str, level: &'static str| {
        vec![("id", "gw-1"), ("message_status", status), ("level", level)]
    };
    let path = format!("/webhooks/jasmin/dlr?token={SECRET}");
    // Accepted by the operator: still just sent.
    let response = form(&s.app, &path, &dlr("ESME_ROK", "1")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ACK/Jasmin");
    assert_eq!(notice_state(&s).await, "sent");
    let before = crate::campaigns::row(&s.app, s.campaign, s.resident)
        .await
        .unwrap();
    // Booked, so already reached (the funnel); the receipt must not move anything back.
    assert!(before.notified_at.is_some() && before.reached_at.is_some());
    // Delivered.
    assert_eq!(
        form(&s.app, &path, &dlr("DELIVRD", "2")).await.status(),
        StatusCode::OK
    );
    assert_eq!(notice_state(&s).await, "delivered");
    let after = crate::campaigns::row(&s.app, s.campaign, s.resident)
        .await
        .unwrap();
    assert!(after.reached_at.is_some());
    // Repeated, late or contradicting receipts change nothing.
    for (status, level) in [("DELIVRD", "2"), ("ESME_ROK", "1"), ("UNDELIV", "2")] {
        let response = form(&s.app, &path, &dlr(status, level)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(notice_state(&s).await, "delivered");
    }
    // The delivered message is one contact attempt, however many receipts came.
    let attempts = value(
        &s.app,
        &format!(
            "SELECT CAST(COUNT(*) AS TEXT) AS v FROM contact_attempts WHERE resident_id = {} \
             AND outcome = 'delivered'",
            s.resident
        ),
    )
    .await;
    assert_eq!(attempts.as_deref(), Some("1"));
    // Unknown ids are answered (the gateway must not retry forever) and change nothing.
    let unknown = form(
        &s.app,
        &path,
        &[
            ("id", "gw-999"),
            ("message_status", "DELIVRD"),
            ("level", "2"),
        ],
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::OK);
    // Malformed: a clear 400.
    let junk = form(&s.app, &path, &[("id", "gw-1")]).await;
    assert_eq!(
        error_code(junk, StatusCode::BAD_REQUEST).await,
        "invalid_callback"
    );
}

#[tokio::test]
async fn an_undelivered_message_falls_back_to_the_relatives_phone() {
    let s = setup().await;
    let path = format!("/webhooks/jasmin/dlr?token={SECRET}");
    let response = form(
        &s.app,
        &path,
        &[
            ("id", "gw-1"),
            ("message_status", "UNDELIV"),
            ("level", "2"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let rows = s
        .app
        .db
        .query_all_raw(Statement::from_string(
            s.app.db.get_database_backend(),
            format!(
                "SELECT state, step FROM messages WHERE resident_id = {} \
                 AND kind = 'appointment_notice' ORDER BY id",
                s.resident
            ),
        ))
        .await
        .unwrap();
    let states: Vec<(String, i32)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "state").unwrap(),
                r.try_get("", "step").unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("failed".into(), 1), ("queued".into(), 2)]);
    let round = s.app.state.dispatcher().drain().await.unwrap();
    assert_eq!(round.sent, 1);
    let received = s.gateway.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1]["to"], "8613900002222");
    assert!(
        received[1]["text"].contains("请转告阿依古丽"),
        "{:?}",
        received[1]
    );
}

#[tokio::test]
async fn unauthenticated_callbacks_are_refused_and_change_nothing() {
    let s = setup().await;
    let fields = [
        ("id", "gw-1"),
        ("message_status", "DELIVRD"),
        ("level", "2"),
    ];
    for path in [
        "/webhooks/jasmin/dlr".to_owned(),
        "/webhooks/jasmin/dlr?token=wrong".to_owned(),
        format!("/webhooks/jasmin/dlr?token={SECRET}x"),
    ] {
        let response = form(&s.app, &path, &fields).await;
        assert_eq!(
            error_code(response, StatusCode::UNAUTHORIZED).await,
            "unauthorized"
        );
    }
    for path in ["/webhooks/aliyun/report", "/webhooks/tencent/status"] {
        let response = s
            .app
            .client
            .post(s.app.url(&format!("{path}?token=nope")))
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(notice_state(&s).await, "sent");
    // WeChat: the server check echoes only when signed with the account's token.
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let (timestamp, nonce) = (timestamp.as_str(), "8812");
    let signature = wechat_signature(timestamp, nonce);
    let good = s
        .app
        .client
        .get(s.app.url(&format!(
            "/webhooks/wechat?signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr=hello"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), StatusCode::OK);
    assert_eq!(good.text().await.unwrap(), "hello");
    let bad = s
        .app
        .client
        .post(s.app.url(&format!(
            "/webhooks/wechat?signature=0{}&timestamp={timestamp}&nonce={nonce}",
            &signature[1..]
        )))
        .body("<xml><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event></xml>")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    // A source outside the allowed networks is refused even with the token.
    let (url, _gateway) = start_gateway().await;
    let guarded = spawn_app_with(move |c| {
        c.messaging.sms_provider = "jasmin".into();
        c.messaging.jasmin = Some(crate::sms_gateway::settings(&url, "s3cret"));
        c.messaging.webhooks.secret = Some(outreach::config::Secret::new(SECRET));
        c.messaging.webhooks.allowed_sources = vec!["10.0.0.0/8".into()];
    })
    .await;
    let response = form(
        &guarded,
        &format!("/webhooks/jasmin/dlr?token={SECRET}"),
        &fields,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

fn wechat_signature(timestamp: &str, nonce: &str) -> String {
    let mut parts = [WECHAT_TOKEN, timestamp, nonce];
    parts.sort_unstable();
    Sha1::digest(parts.concat().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A signed WeChat call is refused when its timestamp is minutes away from now (one from
/// 2001 included) or its nonce was used before; a fresh one passes once.
#[tokio::test]
async fn wechat_callbacks_with_stale_timestamps_or_repeated_nonces_are_refused() {
    let s = setup().await;
    let verify = |timestamp: String, nonce: &'static str| {
        let app = &s.app;
        let signature = wechat_signature(&timestamp, nonce);
        async move {
            app.client
                .get(app.url(&format!(
                    "/webhooks/wechat?signature={signature}&timestamp={timestamp}\
                     &nonce={nonce}&echostr=hello"
                )))
                .send()
                .await
                .unwrap()
        }
    };
    let now = chrono::Utc::now().timestamp();
    let stale = verify("1000000000".into(), "1001").await;
    assert_eq!(
        error_code(stale, StatusCode::UNAUTHORIZED).await,
        "unauthorized"
    );
    let late = verify((now - 600).to_string(), "1002").await;
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);
    let ahead = verify((now + 600).to_string(), "1003").await;
    assert_eq!(ahead.status(), StatusCode::UNAUTHORIZED);
    let first = verify(now.to_string(), "1004").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.text().await.unwrap(), "hello");
    let replay = verify(now.to_string(), "1004").await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED, "a replay");
    // The same nonce on an event push is a replay too; a new one is not.
    let event = "<xml><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event></xml>";
    for (nonce, expected) in [("1004", StatusCode::UNAUTHORIZED), ("1005", StatusCode::OK)] {
        let timestamp = now.to_string();
        let response = s
            .app
            .client
            .post(s.app.url(&format!(
                "/webhooks/wechat?signature={}&timestamp={timestamp}&nonce={nonce}",
                wechat_signature(&timestamp, nonce)
            )))
            .body(event)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "nonce {nonce}");
    }
    let kept = value(
        &s.app,
        "SELECT CAST(COUNT(*) AS TEXT) AS v FROM webhook_nonces WHERE provider = 'wechat'",
    )
    .await;
    assert_eq!(
        kept.as_deref(),
        Some("2"),
        "refused calls leave no nonce behind"
    );
}

/// The shared secret in a header is accepted (`X-Outreach-Token` or a bearer token), and
/// with `url_token = false` the URL's `?token=` no longer is.
#[tokio::test]
async fn the_secret_may_come_in_a_header_and_the_url_token_can_be_turned_off() {
    let s = setup().await;
    let delivered = [
        ("id", "gw-1"),
        ("message_status", "DELIVRD"),
        ("level", "2"),
    ];
    let post = |header: (&'static str, String)| {
        s.app
            .client
            .post(s.app.url("/webhooks/tencent/status"))
            .header(header.0, header.1)
            .body("[]")
            .send()
    };
    for header in [
        ("x-outreach-token", SECRET.to_owned()),
        ("authorization", format!("Bearer {SECRET}")),
    ] {
        assert_eq!(post(header).await.unwrap().status(), StatusCode::OK);
    }
    for header in [
        ("x-outreach-token", format!("{SECRET}x")),
        ("authorization", format!("Basic {SECRET}")),
    ] {
        assert_eq!(
            post(header).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let response = s
        .app
        .client
        .post(s.app.url("/webhooks/jasmin/dlr"))
        .header("x-outreach-token", SECRET)
        .form(&delivered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(notice_state(&s).await, "delivered");

    let (url, _gateway) = start_gateway().await;
    let strict = spawn_app_with(move |c| {
        c.messaging.sms_provider = "jasmin".into();
        c.messaging.jasmin = Some(crate::sms_gateway::settings(&url, "s3cret"));
        c.messaging.webhooks.secret = Some(outreach::config::Secret::new(SECRET));
        c.messaging.webhooks.url_token = false;
    })
    .await;
    let in_url = form(
        &strict,
        &format!("/webhooks/jasmin/mo?token={SECRET}"),
        &[("from", "8613800001111"), ("coding", "0"), ("content", "1")],
    )
    .await;
    assert_eq!(in_url.status(), StatusCode::UNAUTHORIZED);
}

/// Jasmin logs each message's receipt URL: it carries a signature for that message instead
/// of the secret, which vouches for that message's receipts and no other's.
#[tokio::test]
async fn jasmin_receipt_urls_carry_a_per_message_signature_not_the_secret() {
    let s = setup().await;
    let sent = s.gateway.received.lock().unwrap()[0].clone();
    let dlr_url = url::Url::parse(&sent["dlr-url"]).unwrap();
    assert!(!dlr_url.as_str().contains(SECRET), "{dlr_url}");
    let pairs: std::collections::HashMap<String, String> =
        dlr_url.query_pairs().into_owned().collect();
    let key = value(
        &s.app,
        &format!(
            "SELECT idempotency_key AS v FROM messages WHERE resident_id = {} \
             AND kind = 'appointment_notice'",
            s.resident
        ),
    )
    .await
    .unwrap();
    assert_eq!(pairs["ref"], key);
    assert!(!pairs.contains_key("token"));
    let path = format!("{}?{}", dlr_url.path(), dlr_url.query().unwrap());
    let dlr = |id: &'static str| [("id", id), ("message_status", "DELIVRD"), ("level", "2")];
    // Another message's id under this message's signature: refused.
    reply(&s, "13800001111", "2").await;
    s.app.state.dispatcher().drain().await.unwrap();
    let other = form(&s.app, &path, &dlr("gw-2")).await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    // A forged signature: refused.
    let forged = form(
        &s.app,
        &format!(
            "/webhooks/jasmin/dlr?ref={}&sig={}",
            pairs["ref"],
            "0".repeat(64)
        ),
        &dlr("gw-1"),
    )
    .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(notice_state(&s).await, "sent");
    // Its own receipt, as the gateway sends it: applied.
    let own = form(&s.app, &path, &dlr("gw-1")).await;
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(notice_state(&s).await, "delivered");
}

/// Found by the failure drill: a worker killed after the gateway took a message but before
/// its answer was recorded leaves the message failed as "outcome unknown" (Jasmin cannot be
/// asked). Its receipt, signed for that message, shows it went out: it is delivered, not
/// left for a person to re-send.
#[tokio::test]
async fn a_signed_receipt_recovers_a_message_failed_as_outcome_unknown() {
    let s = setup().await;
    let sent = s.gateway.received.lock().unwrap()[0].clone();
    let dlr_url = url::Url::parse(&sent["dlr-url"]).unwrap();
    let signed = format!("{}?{}", dlr_url.path(), dlr_url.query().unwrap());
    // As the dispatcher's reconcile leaves it.
    crate::messaging::run_sql(
        &s.app,
        &format!(
            "UPDATE messages SET state = 'failed', provider = NULL, provider_message_id = NULL, \
             sent_at = NULL, failed_at = created_at, handed_over_at = created_at, \
             last_error = 'outcome_unknown: the worker stopped mid-send and the provider \
             cannot say whether it took the message' \
             WHERE resident_id = {} AND kind = 'appointment_notice'",
            s.resident
        ),
    )
    .await;
    let dlr = [
        ("id", "gw-1"),
        ("message_status", "DELIVRD"),
        ("level", "2"),
    ];
    // A receipt under the shared secret names no message: it cannot vouch for this one.
    let unsigned = form(
        &s.app,
        &format!("/webhooks/jasmin/dlr?token={SECRET}"),
        &dlr,
    )
    .await;
    assert_eq!(unsigned.status(), StatusCode::OK);
    assert_eq!(notice_state(&s).await, "failed");
    let response = form(&s.app, &signed, &dlr).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(notice_state(&s).await, "delivered");
    let row = |column: &str| {
        format!(
            "SELECT {column} AS v FROM messages WHERE resident_id = {} \
             AND kind = 'appointment_notice'",
            s.resident
        )
    };
    assert_eq!(
        value(&s.app, &row("provider_message_id")).await.as_deref(),
        Some("gw-1")
    );
    assert_eq!(value(&s.app, &row("last_error")).await, None);
    // The same receipt again changes nothing; the gateway got the notice once.
    let again = form(&s.app, &signed, &dlr).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(notice_state(&s).await, "delivered");
    assert_eq!(s.gateway.received.lock().unwrap().len(), 1);
    let office = s.app.office_token().await;
    let report = contacts(&s.app, &office, s.campaign).await;
    assert_eq!(report["messages"]["delivered"], 1, "{report}");
    assert_eq!(report["messages"]["failed"], 0, "{report}");
}

/// The usual order: the receipt comes within seconds, while its message is still `sending`
/// under the dead worker's lease; the message is failed as "outcome unknown" only when that
/// lease runs out. The receipt, kept with the key it was signed for, then recovers it.
#[tokio::test]
async fn a_signed_receipt_kept_while_sending_recovers_the_message_once_it_is_failed() {
    let s = setup().await;
    let sent = s.gateway.received.lock().unwrap()[0].clone();
    let dlr_url = url::Url::parse(&sent["dlr-url"]).unwrap();
    let signed = format!("{}?{}", dlr_url.path(), dlr_url.query().unwrap());
    let notice = format!(
        "WHERE resident_id = {} AND kind = 'appointment_notice'",
        s.resident
    );
    // The worker died after the gateway took the notice, before recording its answer.
    crate::messaging::run_sql(
        &s.app,
        &format!(
            "UPDATE messages SET state = 'sending', provider = NULL, provider_message_id = NULL, \
             sent_at = NULL, handed_over_at = created_at, leased_by = 'w-dead', \
             lease_until = created_at {notice}"
        ),
    )
    .await;
    let dlr = [
        ("id", "gw-1"),
        ("message_status", "DELIVRD"),
        ("level", "2"),
    ];
    let response = form(&s.app, &signed, &dlr).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(notice_state(&s).await, "sending");
    // The lease ran out; Jasmin cannot be asked.
    crate::messaging::run_sql(
        &s.app,
        &format!(
            "UPDATE messages SET state = 'failed', failed_at = created_at, leased_by = NULL, \
             lease_until = NULL, last_error = 'outcome_unknown: the worker stopped mid-send' \
             {notice}"
        ),
    )
    .await;
    s.app.state.dispatcher().round().await.unwrap();
    assert_eq!(notice_state(&s).await, "delivered");
    assert_eq!(
        value(
            &s.app,
            &format!("SELECT provider_message_id AS v FROM messages {notice}")
        )
        .await
        .as_deref(),
        Some("gw-1")
    );
    assert_eq!(s.gateway.received.lock().unwrap().len(), 1);
}

async fn reply(s: &Setup, from: &str, text: &str) {
    // Each push carries the gateway's own id.
    let id = uuid::Uuid::new_v4().to_string();
    let response = form(
        &s.app,
        &format!("/webhooks/jasmin/mo?token={SECRET}"),
        &[
            ("id", id.as_str()),
            ("from", from),
            ("to", "106900001"),
            ("content", text),
            ("coding", "0"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
}

#[tokio::test]
async fn replies_confirm_ask_to_reschedule_and_opt_out_once() {
    let s = setup().await;
    // 1: the appointment is confirmed.
    reply(&s, "8613800001111", "1").await;
    let confirmed = value(
        &s.app,
        &format!(
            "SELECT CAST(confirmed_at AS TEXT) AS v FROM appointments WHERE id = {}",
            s.appointment
        ),
    )
    .await;
    assert!(confirmed.is_some(), "the appointment is confirmed");
    // 2: a task for the cadre and an answer with the days that have room.
    reply(&s, "13800001111", "改期").await;
    let tasks: Value = s
        .app
        .get("/api/v1/tasks", &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tasks["items"][0]["kind"], "reschedule_request");
    assert_eq!(tasks["items"][0]["resident_id"], s.resident);
    let round = s.app.state.dispatcher().drain().await.unwrap();
    assert_eq!(round.sent, 1);
    let received = s.gateway.received.lock().unwrap().clone();
    let offer = &received.last().unwrap()["text"];
    assert!(offer.contains("近期还有名额的日期"), "{offer}");
    assert!(offer.contains('月') && offer.contains('日'), "{offer}");
    // TD: the number leaves SMS; the confirmation goes once, even though it is opted out.
    reply(&s, "13800001111", "TD").await;
    reply(&s, "13800001111", "退订").await;
    let opted: Value = s
        .app
        .get(&format!("/api/v1/residents/{}", s.resident), &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(opted["phone_opt_out"], true);
    assert_eq!(opted["relative_opt_out"], false);
    let round = s.app.state.dispatcher().drain().await.unwrap();
    assert_eq!(round.sent, 1, "one confirmation for two opt-outs");
    let received = s.gateway.received.lock().unwrap().clone();
    let confirmation = received.last().unwrap();
    assert_eq!(confirmation["to"], "8613800001111");
    assert!(
        confirmation["text"].contains("您已退订"),
        "{confirmation:?}"
    );
    assert!(!confirmation["text"].contains("回TD退订"));
    // Replies are listed for the cadre with what each did.
    let replies: Value = s
        .app
        .get("/api/v1/replies", &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = replies["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["opt_out", "opt_out", "reschedule", "confirm"]);
    assert_eq!(replies["items"][0]["from"], "138****1111");
}

#[tokio::test]
async fn a_reply_from_an_unknown_number_is_kept_for_the_office() {
    let s = setup().await;
    reply(&s, "13700003333", "1").await;
    reply(&s, "13800001111", "明天下雨还去吗").await;
    let office = s.app.office_token().await;
    let replies: Value = s
        .app
        .get("/api/v1/replies", &office)
        .await
        .json()
        .await
        .unwrap();
    let items = replies["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["action"], "unmatched");
    assert_eq!(items[1]["resident_id"], Value::Null);
    assert_eq!(items[1]["from"], "137****3333");
    // The cadre sees their resident's question (as a task too), not the stranger's.
    let cadre: Value = s
        .app
        .get("/api/v1/replies", &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cadre["items"].as_array().unwrap().len(), 1);
    assert_eq!(cadre["items"][0]["text"], "明天下雨还去吗");
    let tasks: Value = s
        .app
        .get("/api/v1/tasks", &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tasks["items"][0]["kind"], "reply");
}

#[tokio::test]
async fn a_receipt_that_comes_before_its_send_is_recorded_is_kept_and_applied() {
    let s = setup().await;
    // The gateway's next id is gw-2; its receipt comes first.
    let early = form(
        &s.app,
        &format!("/webhooks/jasmin/dlr?token={SECRET}"),
        &[
            ("id", "gw-2"),
            ("message_status", "DELIVRD"),
            ("level", "2"),
        ],
    )
    .await;
    assert_eq!(early.status(), StatusCode::OK);
    reply(&s, "13800001111", "2").await;
    s.app.state.dispatcher().drain().await.unwrap();
    let state = value(
        &s.app,
        &format!(
            "SELECT state AS v FROM messages WHERE resident_id = {} AND kind = 'reschedule_options'",
            s.resident
        ),
    )
    .await;
    assert_eq!(state.as_deref(), Some("delivered"));
    let left = value(
        &s.app,
        "SELECT CAST(COUNT(*) AS TEXT) AS v FROM pending_receipts",
    )
    .await;
    assert_eq!(left.as_deref(), Some("0"));
}

/// A resident's text holding a NUL (U+0000), which PostgreSQL cannot store, is kept without
/// it and acted on: the gateway gets its 200 instead of retrying a 500 forever.
#[tokio::test]
async fn a_reply_holding_a_nul_is_kept_without_it_and_acted_on() {
    let s = setup().await;
    reply(&s, "8613800001111", "1\0").await;
    let confirmed = value(
        &s.app,
        &format!(
            "SELECT CAST(confirmed_at AS TEXT) AS v FROM appointments WHERE id = {}",
            s.appointment
        ),
    )
    .await;
    assert!(confirmed.is_some(), "the appointment is confirmed");
    reply(&s, "8613800009999", "你好\0世界").await;
    let kept = value(
        &s.app,
        "SELECT text AS v FROM inbound_replies WHERE text LIKE '你好%'",
    )
    .await;
    assert_eq!(kept.as_deref(), Some("你好世界"));
}

/// The gateway took the notice and its receipt never came: two days later (the default
/// receipt timeout of SMS) the next dispatch round marks it unconfirmed, which the outbox
/// health and the contacts report show per provider; the receipt that finally comes still
/// delivers it.
#[tokio::test]
async fn a_notice_without_a_receipt_becomes_unconfirmed_and_a_late_receipt_delivers_it() {
    let s = setup().await;
    let office = s.app.office_token().await;
    let backend = s.app.db.get_database_backend();
    let backdate = if backend == sea_orm::DbBackend::Postgres {
        "UPDATE messages SET sent_at = $1 WHERE state = 'sent'"
    } else {
        "UPDATE messages SET sent_at = ? WHERE state = 'sent'"
    };
    // A day on, a receipt may still come: nothing changes.
    s.app
        .db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            backdate,
            [(chrono::Utc::now() - Duration::hours(47)).into()],
        ))
        .await
        .unwrap();
    let round = s.app.state.dispatcher().round().await.unwrap();
    assert_eq!(round.unconfirmed, 0);
    assert_eq!(notice_state(&s).await, "sent");
    s.app
        .db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            backdate,
            [(chrono::Utc::now() - Duration::hours(49)).into()],
        ))
        .await
        .unwrap();
    let round = s.app.state.dispatcher().round().await.unwrap();
    assert_eq!(round.unconfirmed, 1);
    assert_eq!(notice_state(&s).await, "unconfirmed");

    let body = health(&s.app, &office).await;
    assert_eq!(body["unconfirmed"], 1, "{body}");
    assert_eq!(body["states"]["unconfirmed"], 1, "{body}");
    let jasmin = body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "jasmin")
        .unwrap_or_else(|| panic!("no jasmin in {body}"));
    assert_eq!(jasmin["unconfirmed"], 1, "{body}");

    let report = contacts(&s.app, &office, s.campaign).await;
    let sms = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "phone" && c["provider"] == "jasmin")
        .unwrap_or_else(|| panic!("no SMS line in {report}"));
    assert_eq!(
        (
            sms["sent"].as_i64(),
            sms["delivered"].as_i64(),
            sms["failed"].as_i64(),
            sms["unconfirmed"].as_i64()
        ),
        (Some(1), Some(0), Some(0), Some(1)),
        "{report}"
    );
    assert_eq!(report["messages"]["unconfirmed"], 1, "{report}");

    // The receipt comes after all.
    let path = format!("/webhooks/jasmin/dlr?token={SECRET}");
    let response = form(
        &s.app,
        &path,
        &[
            ("id", "gw-1"),
            ("message_status", "DELIVRD"),
            ("level", "2"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(notice_state(&s).await, "delivered");
    let body = health(&s.app, &office).await;
    assert_eq!(body["unconfirmed"], 0, "{body}");
    let report = contacts(&s.app, &office, s.campaign).await;
    assert_eq!(report["messages"]["delivered"], 1, "{report}");
    assert_eq!(report["messages"]["unconfirmed"], 0, "{report}");
}

/// `GET /api/v1/outbox/health`.
async fn health(app: &TestApp, token: &str) -> Value {
    let response = app.get("/api/v1/outbox/health", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The contacts report, refreshed first.
async fn contacts(app: &TestApp, token: &str, campaign: i32) -> Value {
    let refreshed = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/reports/refresh"),
            token,
            json!({}),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let response = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/reports/contacts"),
            token,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}
