use chrono::{Duration, Utc};
use entities::{auth_tokens, users::Role};
use outreach::scheduler::{self, Job, Outcome};
use reqwest::{Method, StatusCode};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{PASSWORD, VILLAGE, error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn login_issues_a_token_that_is_stored_only_as_its_hash() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (id, token) = app.user("cadre.zhang", Role::Cadre, VILLAGE).await;
    let me: Value = app.get("/api/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["id"], id);
    assert_eq!(me["username"], "cadre.zhang");
    assert_eq!(me["role"], "cadre");
    assert_eq!(me["area_code"], VILLAGE);
    assert_eq!(me["area_name"], "阿勒玛勒村");
    assert!(me.get("password_hash").is_none());

    let rows = auth_tokens::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let expected: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(rows[0].token_hash, expected);
    assert!(rows[0].expires_at > Utc::now() + Duration::hours(11));
}

#[tokio::test]
async fn usernames_are_case_insensitive_at_login() {
    let app = spawn_app().await;
    app.seed_areas().await;
    app.user("cadre.li", Role::Cadre, VILLAGE).await;
    assert_eq!(
        app.login("Cadre.LI", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let app = spawn_app().await;
    app.seed_areas().await;
    app.user("cadre.wang", Role::Cadre, VILLAGE).await;
    let wrong = app.login("cadre.wang", "not-the-password").await;
    let wrong_body = wrong.text().await.unwrap();
    let unknown = app.login("nobody", "not-the-password").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.text().await.unwrap(), wrong_body);
    assert!(wrong_body.contains("unauthorized"));
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let app = spawn_app().await;
    let none = app.request(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(
        error_code(none, StatusCode::UNAUTHORIZED).await,
        "unauthorized"
    );
    for header in [
        "Bearer",
        "Bearer otk_short",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer otk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let response = app
            .client
            .get(app.url("/api/v1/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response, StatusCode::UNAUTHORIZED).await,
            "unauthorized",
            "{header}"
        );
    }
}

#[tokio::test]
async fn logout_revokes_only_the_token_used() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, first) = app.user("cadre.zhao", Role::Cadre, VILLAGE).await;
    let second = app.token_for("cadre.zhao", PASSWORD).await;
    let response = app
        .request(Method::POST, "/api/v1/auth/logout", Some(&first), None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/me", &first).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/v1/me", &second).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_expired_token_is_refused_and_purged_by_the_scheduled_job() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, token) = app.user("cadre.sun", Role::Cadre, VILLAGE).await;
    let row = auth_tokens::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut expired: auth_tokens::ActiveModel = row.into();
    expired.expires_at = Set(Utc::now() - Duration::days(2));
    expired.update(&app.db).await.unwrap();
    let response = app.get("/api/v1/me", &token).await;
    assert_eq!(
        error_code(response, StatusCode::UNAUTHORIZED).await,
        "unauthorized"
    );

    let state = app.state.clone();
    let firing = Utc::now();
    let outcome = scheduler::try_execute_once(&state, Job::PurgeExpiredTokens, firing).await;
    assert_eq!(
        outcome,
        Outcome::Ran {
            detail: "purged 1 tokens".into()
        }
    );
    assert_eq!(auth_tokens::Entity::find().count(&app.db).await.unwrap(), 0);
    // The same firing never runs twice, whichever instance or restart tries it.
    let again = scheduler::try_execute_once(&state, Job::PurgeExpiredTokens, firing).await;
    assert_eq!(again, Outcome::AlreadyClaimed);
}

#[tokio::test]
async fn repeated_failures_for_one_username_are_throttled_with_retry_after() {
    let app = spawn_app().await;
    app.seed_areas().await;
    app.user("cadre.zhou", Role::Cadre, VILLAGE).await;
    app.user("cadre.wu", Role::Cadre, VILLAGE).await;
    for _ in 0..5 {
        assert_eq!(
            app.login("cadre.zhou", "guess-guess-guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let throttled = app.login("cadre.zhou", "guess-guess-guess").await;
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (60..=180).contains(&retry_after),
        "retry-after {retry_after}"
    );
    assert_eq!(
        error_code(throttled, StatusCode::TOO_MANY_REQUESTS).await,
        "too_many_requests"
    );
    // While throttled even the right password is not tried.
    assert_eq!(
        app.login("cadre.zhou", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another user from the same address is unaffected.
    assert_eq!(
        app.login("cadre.wu", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled_across_usernames() {
    let app = spawn_app_with(|s| s.auth.max_failures_per_address = 3).await;
    app.seed_areas().await;
    app.user("cadre.qian", Role::Cadre, VILLAGE).await;
    for name in ["a.one", "a.two", "a.three"] {
        assert_eq!(
            app.login(name, "guess-guess-guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.login("a.four", "guess-guess-guess").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.login("cadre.qian", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn changing_ones_password_checks_the_old_one_and_signs_out_everywhere() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, token) = app.user("cadre.feng", Role::Cadre, VILLAGE).await;
    let wrong = app
        .request(
            Method::PUT,
            "/api/v1/me/password",
            Some(&token),
            Some(json!({"current_password": "nope-nope-nope", "new_password": "a-new-long-password"})),
        )
        .await;
    assert_eq!(
        error_code(wrong, StatusCode::UNPROCESSABLE_ENTITY).await,
        "wrong_password"
    );
    let weak = app
        .request(
            Method::PUT,
            "/api/v1/me/password",
            Some(&token),
            Some(json!({"current_password": PASSWORD, "new_password": "short"})),
        )
        .await;
    assert_eq!(
        error_code(weak, StatusCode::UNPROCESSABLE_ENTITY).await,
        "weak_password"
    );
    let ok = app
        .request(
            Method::PUT,
            "/api/v1/me/password",
            Some(&token),
            Some(json!({"current_password": PASSWORD, "new_password": "a-new-long-password"})),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/me", &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("cadre.feng", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("cadre.feng", "a-new-long-password")
            .await
            .status(),
        StatusCode::OK
    );
    let live = auth_tokens::Entity::find()
        .filter(auth_tokens::Column::RevokedAt.is_null())
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(live, 1);
}

#[tokio::test]
async fn the_bootstrap_admin_is_created_once_with_the_whole_tree() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    assert_eq!(
        outreach::flows::accounts::ensure_admin(&app.db)
            .await
            .unwrap(),
        None
    );
    let me: Value = app.get("/api/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "office");
    assert!(me["area_code"].is_null());
}
