//! Alibaba Cloud SMS, Tencent Cloud SMS and WeChat template messages, against the local
//! provider stand-in (`testkit::standin`), which checks signatures, credentials
//! and tokens the way the real services do. The WeChat token lives in the test's own
//! database (SQLite, or PostgreSQL with `TEST_DATABASE_URL`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use outreach::config::Secret;
use outreach::db::Sql;
use outreach::outreach::cloud::{
    AliyunSmsChannel, AliyunSmsSettings, TencentSmsChannel, TencentSmsSettings, WeChatChannel,
    WeChatSettings,
};
use outreach::outreach::{
    Channel, MessageContext, MessageKind, Outgoing, Recipient, SendError, Sent,
};
use outreach::privacy::Field;
use sea_orm::ConnectionTrait;
use testkit::standin::{Behaviour, StandIn, StandInKind};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::helpers::{TestApp, spawn_app};

const PHONE: &str = "13812345678";
const OPENID: &str = "oAbCdEfGh1234567890123456789";
const ALIYUN_SECRET: &str = "aliyun-secret-8f3a";
const TENCENT_KEY: &str = "tencent-key-Gu5t9xGARNpq86cd98jo";
const WECHAT_SECRET: &str = "wechat-secret-5d1a6d8b8e10";

fn message(kind: MessageKind, recipient: Recipient, key: &str) -> Outgoing {
    Outgoing {
        idempotency_key: key.to_owned(),
        kind,
        recipient,
        title: kind.title().to_owned(),
        text: "【新源县卫健委】阿依古丽·买买提您好，请于12月31日上午9:30到卫生院体检。回TD退订"
            .to_owned(),
        context: MessageContext::sample(),
    }
}

fn sms(key: &str) -> Outgoing {
    message(
        MessageKind::AppointmentNotice,
        Recipient::Phone(PHONE.into()),
        key,
    )
}

fn wechat(key: &str) -> Outgoing {
    message(
        MessageKind::AppointmentNotice,
        Recipient::WeChat(OPENID.into()),
        key,
    )
}

fn templates(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn transient(result: &Result<Sent, SendError>) -> bool {
    matches!(result, Err(SendError::Transient(_)))
}

fn permanent_with(result: &Result<Sent, SendError>, needle: &str) -> bool {
    matches!(result, Err(SendError::Permanent(reason)) if reason.contains(needle))
}

/// The channel gives up on a provider that does not answer within its timeout (1 s here),
/// and says the outcome is unknown: the request went out.
async fn times_out(channel: &dyn Channel, message: &Outgoing) {
    let started = Instant::now();
    let result = channel.send(message).await;
    assert!(matches!(result, Err(SendError::Unknown(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------
// Alibaba Cloud

async fn aliyun_standin() -> StandIn {
    StandIn::start(StandInKind::Aliyun {
        access_key_id: "LTAI5tCountyOutreach".into(),
        secret: ALIYUN_SECRET.into(),
    })
    .await
    .expect("stand-in")
}

fn aliyun_settings(standin: &StandIn, key_id: &str, secret: &str) -> AliyunSmsSettings {
    AliyunSmsSettings {
        endpoint: standin.url(),
        access_key_id: key_id.into(),
        access_key_secret: Secret::new(secret),
        sign_name: "新源县卫健委".into(),
        templates: templates(&[
            ("appointment_notice", "SMS_465000001"),
            ("same_day_reminder", "SMS_465000002"),
        ]),
        timeout_secs: 1,
    }
}

#[tokio::test]
async fn aliyun_sends_the_template_and_its_values_with_a_valid_signature() {
    let standin = aliyun_standin().await;
    let channel = AliyunSmsChannel::new(&aliyun_settings(
        &standin,
        "LTAI5tCountyOutreach",
        ALIYUN_SECRET,
    ))
    .unwrap();
    assert_eq!(channel.name(), "aliyun");
    assert!(channel.reaches(&Recipient::Phone(PHONE.into())));
    assert!(!channel.reaches(&Recipient::WeChat(OPENID.into())));
    assert!(!channel.deduplicates(), "SendSms is not idempotent");

    let sent = channel
        .send(&sms("appointment_notice.a7.2026-12-31"))
        .await
        .expect("accepted");
    assert_eq!(sent.provider, "aliyun");
    assert!(!sent.delivered);
    let accepted = standin.accepted();
    assert_eq!(accepted.len(), 1);
    let first = &accepted[0];
    assert_eq!(sent.provider_message_id, first.provider_id);
    assert_eq!(first.to, PHONE);
    assert_eq!(first.template, "SMS_465000001");
    assert_eq!(first.sign_name.as_deref(), Some("新源县卫健委"));
    assert_eq!(first.idempotency_key, "appointment_notice.a7.2026-12-31");
    let sample = MessageContext::sample();
    assert_eq!(first.params["resident_name"], sample.resident_name.as_str());
    assert_eq!(
        first.params["institution_name"],
        sample.institution_name.as_str()
    );
    assert_eq!(first.params["day"], sample.day.as_str());
    assert_eq!(first.params["time"], sample.time.as_str());
    assert!(first.params.get("relay").is_none());

    // The same key again: a new nonce (a reused one is refused), and the provider sends it
    // a second time — which is why the channel does not claim to de-duplicate.
    channel
        .send(&sms("appointment_notice.a7.2026-12-31"))
        .await
        .expect("accepted again");
    assert_eq!(standin.duplicates(), 1);
    assert_eq!(standin.accepted().len(), 2);
    assert_eq!(standin.refused(), 0);

    // An idempotency key too long for OutId is shortened, recognisably.
    let long_key = format!("migrant_wave.{}", "w".repeat(200));
    channel.send(&sms(&long_key)).await.expect("accepted");
    let out_id = &standin.accepted()[2].idempotency_key;
    assert!(
        out_id.len() <= 64 && out_id.starts_with("migrant_wave.www"),
        "{out_id}"
    );

    // A kind without a registered template never reaches the provider.
    let result = channel
        .send(&message(
            MessageKind::MissedFollowup,
            Recipient::Phone(PHONE.into()),
            "k",
        ))
        .await;
    assert!(permanent_with(&result, "missed_followup"), "{result:?}");
    assert_eq!(standin.accepted().len(), 3);
}

#[tokio::test]
async fn aliyun_refusals_throttling_outages_and_timeouts_are_told_apart() {
    let standin = aliyun_standin().await;
    let captured = Captured::start();
    let wrong_secret =
        AliyunSmsChannel::new(&aliyun_settings(&standin, "LTAI5tCountyOutreach", "guess")).unwrap();
    let result = wrong_secret.send(&sms("k1")).await;
    assert!(
        permanent_with(&result, "SignatureDoesNotMatch"),
        "{result:?}"
    );
    let wrong_id = AliyunSmsChannel::new(&aliyun_settings(
        &standin,
        "LTAI5tSomeoneElse",
        ALIYUN_SECRET,
    ))
    .unwrap();
    let result = wrong_id.send(&sms("k1")).await;
    assert!(permanent_with(&result, "InvalidAccessKeyId"), "{result:?}");
    assert_eq!(standin.refused(), 2);

    let channel = AliyunSmsChannel::new(&aliyun_settings(
        &standin,
        "LTAI5tCountyOutreach",
        ALIYUN_SECRET,
    ))
    .unwrap();
    standin.set_behaviour(Behaviour::Fail5xx);
    assert!(transient(&channel.send(&sms("k2")).await));
    standin.set_behaviour(Behaviour::Throttle);
    let result = channel.send(&sms("k2")).await;
    assert!(
        matches!(&result, Err(SendError::Transient(r)) if r.contains("isv.BUSINESS_LIMIT_CONTROL")),
        "{result:?}"
    );
    standin.set_behaviour(Behaviour::RejectNumber);
    let result = channel.send(&sms("k2")).await;
    assert!(
        permanent_with(&result, "isv.MOBILE_NUMBER_ILLEGAL"),
        "{result:?}"
    );
    assert!(!format!("{result:?}").contains(PHONE));
    standin.set_behaviour(Behaviour::Timeout);
    times_out(&channel, &sms("k2")).await;

    standin.set_behaviour(Behaviour::Normal);
    let result = channel
        .send(&message(
            MessageKind::AppointmentNotice,
            Recipient::Phone("1381234567".into()),
            "k3",
        ))
        .await;
    assert!(
        permanent_with(&result, "isv.MOBILE_NUMBER_ILLEGAL"),
        "{result:?}"
    );
    standin.set_behaviour(Behaviour::Slow(Duration::from_millis(300)));
    channel.send(&sms("k4")).await.expect("slow but in time");
    assert_eq!(standin.accepted().len(), 1);

    let nowhere = AliyunSmsChannel::new(&AliyunSmsSettings {
        endpoint: "http://127.0.0.1:9/".into(),
        ..aliyun_settings(&standin, "LTAI5tCountyOutreach", ALIYUN_SECRET)
    })
    .unwrap();
    assert!(transient(&nowhere.send(&sms("k5")).await));

    let logs = captured.text();
    assert!(
        logs.contains("138****5678"),
        "refusals are logged, masked:\n{logs}"
    );
    for secret in [PHONE, ALIYUN_SECRET] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------
// Tencent Cloud

async fn tencent_standin() -> StandIn {
    StandIn::start(StandInKind::Tencent {
        secret_id: "AKIDcountyoutreach".into(),
        secret_key: TENCENT_KEY.into(),
    })
    .await
    .expect("stand-in")
}

fn tencent_settings(standin: &StandIn, secret_key: &str) -> TencentSmsSettings {
    TencentSmsSettings {
        endpoint: standin.url(),
        region: "ap-guangzhou".into(),
        secret_id: "AKIDcountyoutreach".into(),
        secret_key: Secret::new(secret_key),
        sdk_app_id: "1400787878".into(),
        sign_name: "新源县卫健委".into(),
        templates: templates(&[("appointment_notice", "1888001")]),
        template_params: [(
            "appointment_notice".to_owned(),
            vec![
                "resident_name".to_owned(),
                "day".to_owned(),
                "time".to_owned(),
                "institution_name".to_owned(),
            ],
        )]
        .into(),
        timeout_secs: 1,
    }
}

#[tokio::test]
async fn tencent_sends_the_template_and_its_ordered_values_with_a_valid_signature() {
    let standin = tencent_standin().await;
    let channel = TencentSmsChannel::new(&tencent_settings(&standin, TENCENT_KEY)).unwrap();
    assert_eq!(channel.name(), "tencent");
    assert!(channel.reaches(&Recipient::Phone(PHONE.into())));
    assert!(!channel.reaches(&Recipient::Email("a@b.cn".into())));
    assert!(!channel.deduplicates());

    let sent = channel
        .send(&sms("appointment_notice.a7.2026-12-31"))
        .await
        .expect("accepted");
    assert_eq!(sent.provider, "tencent");
    let accepted = standin.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(sent.provider_message_id, accepted[0].provider_id);
    assert_eq!(accepted[0].to, format!("+86{PHONE}"));
    assert_eq!(accepted[0].template, "1888001");
    assert_eq!(
        accepted[0].idempotency_key,
        "appointment_notice.a7.2026-12-31"
    );
    let sample = MessageContext::sample();
    assert_eq!(
        accepted[0].params,
        serde_json::json!([
            sample.resident_name,
            sample.day,
            sample.time,
            sample.institution_name
        ])
    );
    channel
        .send(&sms("appointment_notice.a7.2026-12-31"))
        .await
        .expect("accepted again");
    assert_eq!(standin.duplicates(), 1, "SessionContext is only echoed");
    assert_eq!(standin.refused(), 0);

    let result = channel
        .send(&message(
            MessageKind::SameDayReminder,
            Recipient::Phone(PHONE.into()),
            "k",
        ))
        .await;
    assert!(permanent_with(&result, "same_day_reminder"), "{result:?}");
}

#[tokio::test]
async fn tencent_refusals_throttling_outages_and_timeouts_are_told_apart() {
    let standin = tencent_standin().await;
    let wrong = TencentSmsChannel::new(&tencent_settings(&standin, "guess")).unwrap();
    let result = wrong.send(&sms("k1")).await;
    assert!(
        permanent_with(&result, "AuthFailure.SignatureFailure"),
        "{result:?}"
    );
    assert_eq!(standin.refused(), 1);

    let channel = TencentSmsChannel::new(&tencent_settings(&standin, TENCENT_KEY)).unwrap();
    standin.set_behaviour(Behaviour::Fail5xx);
    assert!(transient(&channel.send(&sms("k2")).await));
    standin.set_behaviour(Behaviour::Throttle);
    let result = channel.send(&sms("k2")).await;
    assert!(
        matches!(&result, Err(SendError::Transient(r)) if r.contains("LimitExceeded.PhoneNumberDailyLimit")),
        "{result:?}"
    );
    standin.set_behaviour(Behaviour::RejectNumber);
    let result = channel.send(&sms("k2")).await;
    assert!(
        permanent_with(&result, "InvalidParameterValue.IncorrectPhoneNumber"),
        "{result:?}"
    );
    standin.set_behaviour(Behaviour::Timeout);
    times_out(&channel, &sms("k2")).await;

    standin.set_behaviour(Behaviour::Normal);
    let result = channel
        .send(&message(
            MessageKind::AppointmentNotice,
            Recipient::Phone("2381234567".into()),
            "k3",
        ))
        .await;
    assert!(
        permanent_with(&result, "InvalidParameterValue.IncorrectPhoneNumber"),
        "{result:?}"
    );
    standin.set_behaviour(Behaviour::Slow(Duration::from_millis(300)));
    channel.send(&sms("k4")).await.expect("slow but in time");
    assert_eq!(standin.accepted().len(), 1);
}

// ---------------------------------------------------------------------------------------
// WeChat

async fn wechat_standin() -> StandIn {
    StandIn::start(StandInKind::WeChat {
        app_id: "wx8f3a2b1c4d5e6f70".into(),
        secret: WECHAT_SECRET.into(),
    })
    .await
    .expect("stand-in")
}

fn wechat_settings(standin: &StandIn, secret: &str) -> WeChatSettings {
    WeChatSettings {
        api_base: standin.url(),
        app_id: "wx8f3a2b1c4d5e6f70".into(),
        app_secret: Secret::new(secret),
        templates: templates(&[(
            "appointment_notice",
            "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY",
        )]),
        url: Some("https://tijian.example.org/booking".into()),
        timeout_secs: 1,
    }
}

fn wechat_channel(app: &TestApp, standin: &StandIn, secret: &str) -> WeChatChannel {
    WeChatChannel::new(
        &wechat_settings(standin, secret),
        app.state.db.clone(),
        app.state.privacy.clone(),
    )
    .unwrap()
}

thread_local! {
    static CAPTURE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// Writes to the capture buffer of the current thread, if any.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(buffer) = &*c.borrow() {
                buffer.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged on this thread while it lives (a `#[tokio::test]` runs the channel,
/// the stand-in and the application on its one thread). One process-wide subscriber asks on
/// every event whether the emitting thread captures: a thread-scoped subscriber would miss
/// events whose callsites other test threads registered first.
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn start() -> Self {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(|| ThreadWriter)
                // Dynamic: asked on every event, never cached per callsite.
                .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                    CAPTURE.with(|c| c.borrow().is_some())
                }));
            // Should another test have installed one first, nothing is captured, and the
            // assertion that something was logged says so.
            let _ =
                tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        });
        let buffer = Arc::new(Mutex::new(Vec::new()));
        CAPTURE.with(|c| *c.borrow_mut() = Some(buffer.clone()));
        Self(buffer)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        CAPTURE.with(|c| *c.borrow_mut() = None);
    }
}

async fn stored_token(app: &TestApp) -> (Vec<u8>, chrono::DateTime<chrono::Utc>) {
    let mut sql = Sql::new(app.db.get_database_backend());
    sql.push("SELECT token_cipher, expires_at FROM provider_tokens WHERE account = ")
        .bind("wechat:wx8f3a2b1c4d5e6f70");
    let row = app
        .db
        .query_one_raw(sql.build())
        .await
        .unwrap()
        .expect("token row");
    (
        row.try_get("", "token_cipher").unwrap(),
        row.try_get("", "expires_at").unwrap(),
    )
}

#[tokio::test]
async fn wechat_fetches_one_token_for_many_sends_and_shares_it_through_the_database() {
    let app = spawn_app().await;
    let standin = wechat_standin().await;
    let channel = wechat_channel(&app, &standin, WECHAT_SECRET);
    assert_eq!(channel.name(), "wechat");
    assert!(channel.reaches(&Recipient::WeChat(OPENID.into())));
    assert!(!channel.reaches(&Recipient::Phone(PHONE.into())));
    assert!(
        !channel.deduplicates(),
        "client_msg_id only holds for ten minutes"
    );

    for i in 0..3 {
        let sent = channel
            .send(&wechat(&format!("appointment_notice.a{i}.2026-12-31")))
            .await
            .expect("accepted");
        assert_eq!(sent.provider, "wechat");
        assert_eq!(sent.provider_message_id, standin.accepted()[i].provider_id);
    }
    assert_eq!(standin.token_fetches(), 1);
    let accepted = standin.accepted();
    assert_eq!(accepted.len(), 3);
    assert_eq!(accepted[0].to, OPENID);
    assert_eq!(
        accepted[0].template,
        "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY"
    );
    assert_eq!(
        accepted[0].idempotency_key,
        "appointment_notice.a0.2026-12-31"
    );
    let sample = MessageContext::sample();
    assert_eq!(accepted[0].params["first"]["value"], "体检预约通知");
    assert_eq!(
        accepted[0].params["resident_name"]["value"],
        sample.resident_name.as_str()
    );
    assert_eq!(accepted[0].params["day"]["value"], sample.day.as_str());

    // The token is stored encrypted, and a second instance uses it without fetching.
    let token = standin.current_token().unwrap();
    let (cipher, expires_at) = stored_token(&app).await;
    assert!(!cipher.windows(token.len()).any(|w| w == token.as_bytes()));
    assert_eq!(
        app.state
            .privacy
            .decrypt(Field::ProviderToken, &cipher)
            .unwrap(),
        token
    );
    let remaining = expires_at - chrono::Utc::now();
    assert!(remaining > chrono::TimeDelta::minutes(110), "{remaining}");
    let other_instance = wechat_channel(&app, &standin, WECHAT_SECRET);
    other_instance
        .send(&wechat("k-other"))
        .await
        .expect("accepted");
    assert_eq!(standin.token_fetches(), 1);

    // WeChat sends one message per openid and client_msg_id.
    other_instance
        .send(&wechat("k-other"))
        .await
        .expect("accepted");
    assert_eq!(standin.duplicates(), 1);
    assert_eq!(standin.accepted().len(), 4);
}

#[tokio::test]
async fn wechat_refreshes_a_refused_token_once_and_never_logs_it() {
    let app = spawn_app().await;
    let standin = wechat_standin().await;
    let captured = Captured::start();
    let first = wechat_channel(&app, &standin, WECHAT_SECRET);
    let second = wechat_channel(&app, &standin, WECHAT_SECRET);
    first.send(&wechat("k1")).await.expect("accepted");
    second.send(&wechat("k2")).await.expect("accepted");
    let old_token = standin.current_token().unwrap();
    assert_eq!(standin.token_fetches(), 1);

    // WeChat invalidates the token: the channel refreshes and sends again, once.
    standin.set_behaviour(Behaviour::ExpireTokenOnce);
    first
        .send(&wechat("k3"))
        .await
        .expect("accepted after a refresh");
    assert_eq!(standin.token_fetches(), 2);
    let new_token = standin.current_token().unwrap();
    assert_ne!(new_token, old_token);
    // The other instance still holds the old token in memory: refused with 40001, it finds
    // the new one in the database instead of fetching (which would invalidate it again).
    second.send(&wechat("k4")).await.expect("accepted");
    assert_eq!(standin.token_fetches(), 2);
    assert_eq!(standin.accepted().len(), 4);

    let logs = captured.text();
    assert!(logs.contains("WeChat access token refreshed"), "{logs}");
    for secret in [old_token.as_str(), new_token.as_str(), WECHAT_SECRET] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}

#[tokio::test]
async fn concurrent_senders_on_two_instances_fetch_one_token() {
    let app = spawn_app().await;
    let standin = wechat_standin().await;
    let a = wechat_channel(&app, &standin, WECHAT_SECRET);
    let b = wechat_channel(&app, &standin, WECHAT_SECRET);
    let messages: Vec<Outgoing> = (0..6).map(|i| wechat(&format!("k{i}"))).collect();
    let sends = messages
        .iter()
        .enumerate()
        .map(|(i, m)| if i % 2 == 0 { a.send(m) } else { b.send(m) });
    for result in futures_util::future::join_all(sends).await {
        result.expect("accepted");
    }
    assert_eq!(standin.token_fetches(), 1);
    assert_eq!(standin.accepted().len(), 6);
}

#[tokio::test]
async fn a_token_about_to_expire_is_replaced() {
    let app = spawn_app().await;
    let standin = wechat_standin().await;
    wechat_channel(&app, &standin, WECHAT_SECRET)
        .send(&wechat("k1"))
        .await
        .expect("accepted");
    let mut sql = Sql::new(app.db.get_database_backend());
    sql.push("UPDATE provider_tokens SET expires_at = ")
        .bind(chrono::Utc::now() + chrono::TimeDelta::minutes(4))
        .push(" WHERE account = ")
        .bind("wechat:wx8f3a2b1c4d5e6f70");
    app.db.execute_raw(sql.build()).await.unwrap();
    // A new instance (a restart) reads the row, finds it within five minutes of expiry.
    wechat_channel(&app, &standin, WECHAT_SECRET)
        .send(&wechat("k2"))
        .await
        .expect("accepted");
    assert_eq!(standin.token_fetches(), 2);
    let (_, expires_at) = stored_token(&app).await;
    assert!(expires_at - chrono::Utc::now() > chrono::TimeDelta::minutes(110));
}

#[tokio::test]
async fn wechat_opt_outs_refusals_throttling_outages_and_timeouts_are_told_apart() {
    let app = spawn_app().await;
    let standin = wechat_standin().await;
    let wrong = wechat_channel(&app, &standin, "guess");
    let result = wrong.send(&wechat("k1")).await;
    assert!(
        permanent_with(&result, "access token refused"),
        "{result:?}"
    );
    assert!(!format!("{result:?}").contains("guess"));
    assert_eq!(standin.token_fetches(), 0);

    let channel = wechat_channel(&app, &standin, WECHAT_SECRET);
    standin.set_behaviour(Behaviour::RejectNumber);
    let result = channel.send(&wechat("k2")).await;
    assert!(permanent_with(&result, "opted_out"), "{result:?}");
    standin.set_behaviour(Behaviour::Throttle);
    assert!(transient(&channel.send(&wechat("k2")).await));
    standin.set_behaviour(Behaviour::Fail5xx);
    assert!(transient(&channel.send(&wechat("k2")).await));
    standin.set_behaviour(Behaviour::Timeout);
    times_out(&channel, &wechat("k2")).await;
    standin.set_behaviour(Behaviour::Normal);
    let result = channel
        .send(&message(
            MessageKind::MigrantWave,
            Recipient::WeChat(OPENID.into()),
            "k3",
        ))
        .await;
    assert!(permanent_with(&result, "migrant_wave"), "{result:?}");
    channel.send(&wechat("k4")).await.expect("accepted");
    assert_eq!(standin.token_fetches(), 1);
    assert_eq!(standin.accepted().len(), 1);
}
