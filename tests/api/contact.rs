//! Contact attempts: logged by the cadre in scope, counted by day, moving the progress row;
//! delivered messages count automatically, once.

use chrono::{Duration, Utc};
use entities::users::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::campaigns::{add_resident, row};
use crate::helpers::{OTHER_VILLAGE, VILLAGE, error_code, resident_id, spawn_app_with};

#[tokio::test]
async fn a_cadre_logs_attempts_counted_by_day_and_the_progress_row_follows() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    let resident = add_resident(&app, resident_id(1, "19700101"), VILLAGE, None, None).await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.c", Role::Cadre, VILLAGE).await;
    let (_, other) = app.user("cadre.other", Role::Cadre, OTHER_VILLAGE).await;
    let path = format!("/api/v1/campaigns/{campaign}/residents/{resident}/attempts");
    let yesterday = Utc::now() - Duration::days(1);
    let first = app
        .post(
            &path,
            &cadre,
            json!({"attempted_at": yesterday, "channel": "phone_call", "contact": "own_phone",
                   "outcome": "no_answer"}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["outcome_label"], "无人接听");
    assert_eq!(first["reached"], false);
    assert_eq!(
        row(&app, campaign, resident).await.unwrap().stage,
        "notified"
    );
    let second = app
        .post(
            &path,
            &cadre,
            json!({"channel": "home_visit", "contact": "in_person", "outcome": "reached_refused",
                   "note": "本人表示身体很好，不愿体检"}),
        )
        .await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let progress = row(&app, campaign, resident).await.unwrap();
    assert_eq!(progress.stage, "reached");
    assert!(progress.reached_at.is_some());
    let listed: Value = app.get(&path, &cadre).await.json().await.unwrap();
    assert_eq!(listed["count"], 2);
    assert_eq!(listed["days"], 2);
    assert_eq!(listed["reached"], true);
    assert_eq!(listed["items"][1]["channel_label"], "入户");
    // Audited.
    let office = app.office_token().await;
    let audit: Value = app
        .get("/api/v1/audit?action=contact.attempt", &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
    // Bad input: a time in the future, an unknown outcome, another village's cadre.
    let future = app
        .post(
            &path,
            &cadre,
            json!({"attempted_at": Utc::now() + Duration::hours(2), "channel": "phone_call",
                   "contact": "own_phone", "outcome": "no_answer"}),
        )
        .await;
    assert_eq!(
        error_code(future, StatusCode::UNPROCESSABLE_ENTITY).await,
        "attempt_in_future"
    );
    let unknown = app
        .post(
            &path,
            &cadre,
            json!({"channel": "phone_call", "contact": "own_phone", "outcome": "maybe"}),
        )
        .await;
    assert!(unknown.status().is_client_error());
    let outside = app
        .post(
            &path,
            &other,
            json!({"channel": "phone_call", "contact": "own_phone", "outcome": "no_answer"}),
        )
        .await;
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get(&path, &other).await.status(), StatusCode::NOT_FOUND);
    let listed: Value = app.get(&path, &cadre).await.json().await.unwrap();
    assert_eq!(listed["count"], 2, "nothing stored by the refused requests");
}

#[tokio::test]
async fn wechat_is_spelled_wechat_in_and_out_and_we_chat_is_refused_with_a_hint() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    let resident = add_resident(&app, resident_id(1, "19700101"), VILLAGE, None, None).await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.wx", Role::Cadre, VILLAGE).await;
    let path = format!("/api/v1/campaigns/{campaign}/residents/{resident}/attempts");

    // As the README writes it: accepted, and answered with the same spelling.
    let logged = app
        .post(
            &path,
            &cadre,
            json!({"channel": "wechat", "contact": "wechat", "outcome": "left_message"}),
        )
        .await;
    assert_eq!(logged.status(), StatusCode::CREATED);
    let logged: Value = logged.json().await.unwrap();
    assert_eq!(logged["channel"], "wechat");
    assert_eq!(logged["contact"], "wechat");
    let listed: Value = app.get(&path, &cadre).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["channel"], "wechat");

    // The old spelling, in either field: 422 saying which spelling to use; nothing stored.
    for body in [
        json!({"channel": "we_chat", "contact": "wechat", "outcome": "left_message"}),
        json!({"channel": "wechat", "contact": "we_chat", "outcome": "left_message"}),
    ] {
        let refused = app.post(&path, &cadre, body).await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let refused: Value = refused.json().await.unwrap();
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("请写作 wechat"), "{message}");
    }
    // Another unknown value gets the list of allowed values.
    let refused = app
        .post(
            &path,
            &cadre,
            json!({"channel": "pigeon", "contact": "wechat", "outcome": "left_message"}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused: Value = refused.json().await.unwrap();
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("phone_call") && message.contains("wechat"),
        "{message}"
    );
    let listed: Value = app.get(&path, &cadre).await.json().await.unwrap();
    assert_eq!(listed["count"], 1);
}

#[tokio::test]
async fn an_attempt_sent_again_with_its_client_key_is_the_same_attempt() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    let resident = add_resident(&app, resident_id(1, "19700101"), VILLAGE, None, None).await;
    let neighbour = add_resident(&app, resident_id(2, "19710101"), VILLAGE, None, None).await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.c", Role::Cadre, VILLAGE).await;
    let path = format!("/api/v1/campaigns/{campaign}/residents/{resident}/attempts");
    let attempt = |key: &str| {
        json!({"channel": "phone_call", "contact": "own_phone", "outcome": "no_answer",
               "client_key": key})
    };
    let first = app.post(&path, &cadre, attempt("9f1c2ab4e07d4c55")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    // The phone lost the answer and sends it again.
    let again = app.post(&path, &cadre, attempt("9f1c2ab4e07d4c55")).await;
    assert!(again.status().is_success());
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let listed: Value = app.get(&path, &cadre).await.json().await.unwrap();
    assert_eq!(listed["count"], 1);
    // A different key is a second attempt.
    let second = app.post(&path, &cadre, attempt("0b7d5e2a91f34c68")).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let listed: Value = app.get(&path, &cadre).await.json().await.unwrap();
    assert_eq!(listed["count"], 2);
    // A key is one attempt: used for another resident it is refused, not moved.
    let other = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{neighbour}/attempts"),
            &cadre,
            attempt("9f1c2ab4e07d4c55"),
        )
        .await;
    assert_eq!(error_code(other, StatusCode::CONFLICT).await, "conflict");
    for bad in [
        "short",
        "has spaces in it",
        &"x".repeat(65),
        "引号密钥密钥密钥密钥",
    ] {
        let response = app.post(&path, &cadre, attempt(bad)).await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_client_key",
            "{bad}"
        );
    }
    let listed: Value = app.get(&path, &cadre).await.json().await.unwrap();
    assert_eq!(listed["count"], 2);
}
