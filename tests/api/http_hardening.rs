//! Hostile or careless clients: NUL characters, slow connections, forged X-Forwarded-For,
//! absurd request ids, NAT'ed offices mistyping passwords, weak passwords, wrong types and
//! limits — each answered with a clear 4xx, never a 500 or a hung connection.

use std::time::{Duration, Instant};

use entities::audit_log;
use entities::users::Role;
use reqwest::{Method, StatusCode};
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{COUNTY, PASSWORD, VILLAGE, error_code, spawn_app, spawn_app_with};

async fn envelope(response: reqwest::Response, status: StatusCode) -> (String, String) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    (
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_nul_character_anywhere_in_a_request_is_a_422_on_both_databases() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.nul", Role::Office, COUNTY).await;

    // Unauthenticated: the login username.
    let login = app
        .request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "office.nul\u{0}", "password": PASSWORD})),
        )
        .await;
    let (code, message) = envelope(login, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(code, "invalid_input");
    assert!(message.contains("空字符"), "{message}");

    // Search and filter texts in query strings.
    for path in [
        "/api/v1/users?q=a%00b",
        "/api/v1/residents?q=%00",
        "/api/v1/audit?action=user.create%00",
        "/api/v1/audit?entity=%00user",
    ] {
        let response = app.get(path, &office).await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_input",
            "{path}"
        );
    }

    // A path parameter.
    let response = app.get("/api/v1/areas/6540%0025000000", &office).await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_input"
    );

    // A JSON body; a NUL written as an escaped backslash is ordinary text, not a NUL.
    let created = app
        .post(
            "/api/v1/users",
            &office,
            json!({"username": "cadre.nul", "display_name": "张\u{0}三", "role": "cadre", "area_code": VILLAGE}),
        )
        .await;
    assert_eq!(
        error_code(created, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_input"
    );
    let created = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&office)
        .header("content-type", "application/json")
        .body(r#"{"username": "cadre.bs", "display_name": "张\\u0000三", "role": "cadre", "area_code": "654025100201"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    // Other control characters in a name.
    let escape = app
        .post(
            "/api/v1/users",
            &office,
            json!({"username": "cadre.esc", "display_name": "张\u{1b}[31m三", "role": "cadre", "area_code": VILLAGE}),
        )
        .await;
    assert_eq!(
        error_code(escape, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_display_name"
    );
    // Nothing of it was stored.
    let users: Value = app
        .get("/api/v1/users", &office)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert!(
        !names.contains(&"cadre.nul") && !names.contains(&"cadre.esc"),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_nul_in_a_header_is_refused_before_the_application() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\0b\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

/// Connections that never finish their request head, and idle kept-alive ones, are closed.
#[tokio::test]
async fn slow_and_idle_connections_are_closed_after_their_timeouts() {
    let app = spawn_app_with(|s| {
        s.http.header_read_timeout_secs = 1;
        s.http.keep_alive_timeout_secs = 3;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"GET /heal").await.unwrap();
        slow.push(stream);
    }
    // A request that finishes its head in time is answered and then kept alive.
    let mut kept = TcpStream::connect(&address).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    for mut stream in slow {
        let mut rest = Vec::new();
        // Closed by the server: the read ends (at EOF, or with a reset), it does not hang.
        let _ended = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("a connection with a partial request line was left open");
        assert!(
            !String::from_utf8_lossy(&rest).contains("200 OK"),
            "a partial request was answered"
        );
    }
    let slow_closed_after = started.elapsed();
    assert!(
        slow_closed_after < Duration::from_secs(4),
        "{slow_closed_after:?}"
    );

    // The kept-alive connection outlives the head deadline but not the idle one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\"status\"") {
        let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the second answer");
        got.extend_from_slice(&buffer[..n]);
    }
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), kept.read_to_end(&mut rest))
        .await
        .expect("an idle kept-alive connection was left open")
        .ok();
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_secs(2) && idle < Duration::from_secs(6),
        "{idle:?}"
    );
}

/// Behind a trusted proxy the client is the address the proxy appended, not what the
/// client wrote at the left of X-Forwarded-For.
#[tokio::test]
async fn a_forged_forwarded_for_neither_passes_allowed_sources_nor_escapes_throttling() {
    let app = spawn_app_with(|s| {
        s.http.trust_forwarded_for = true;
        s.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        s.auth.max_failures_per_address = 3;
        s.messaging.webhooks.allowed_sources = vec!["10.20.0.0/16".to_owned()];
        s.messaging.webhooks.secret = Some(outreach::config::Secret::new("hook-secret"));
    })
    .await;
    app.seed_areas().await;
    app.user("cadre.xff", Role::Cadre, VILLAGE).await;

    // The client claims an allowed source; the proxy (this test, on 127.0.0.1) appended the
    // real one.
    let callback = app
        .client
        .post(app.url("/webhooks/jasmin/dlr?token=hook-secret"))
        .header("x-forwarded-for", "10.20.0.5, 203.0.113.50")
        .form(&[("id", "x"), ("message_status", "DELIVRD")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(callback, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    // Through the proxy from the allowed network it is let in (and then judged on its body).
    let callback = app
        .client
        .post(app.url("/webhooks/jasmin/dlr?token=hook-secret"))
        .header("x-forwarded-for", "10.20.0.5")
        .form(&[("id", "x"), ("message_status", "DELIVRD")])
        .send()
        .await
        .unwrap();
    assert_ne!(callback.status(), StatusCode::FORBIDDEN);

    // Rotating the left-most entry does not make new addresses for the throttle.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let response = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}, 203.0.113.60"))
            .json(&json!({"username": format!("nobody{i}"), "password": "guess-guess-1"}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // Another client behind the same proxy is a different address.
    let other = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", "203.0.113.61")
        .json(&json!({"username": "cadre.xff", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_absurd_request_id_is_replaced_and_not_stored() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.rid", Role::Office, COUNTY).await;
    let huge = "a".repeat(100_000);
    for given in [huge.as_str(), "has space", "<script>"] {
        let response = app
            .client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&office)
            .header("x-request-id", given)
            .json(&json!({"username": format!("cadre.rid{}", given.len()), "role": "cadre", "area_code": VILLAGE}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(echoed.len(), 36, "a fresh UUID instead of {given:.20}");
        let last = audit_log::Entity::find()
            .order_by_desc(audit_log::Column::Id)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.request_id.as_deref(), Some(echoed.as_str()));
    }
    // A sensible one is kept.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "edge-7f3a:42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "edge-7f3a:42");
}

#[tokio::test]
async fn one_person_mistyping_behind_a_nat_does_not_lock_out_colleagues() {
    let app = spawn_app().await;
    app.seed_areas().await;
    app.user("cadre.typo", Role::Cadre, VILLAGE).await;
    app.user("cadre.colleague", Role::Cadre, VILLAGE).await;
    for _ in 0..25 {
        let status = app.login("cadre.typo", "wrong-password-1").await.status();
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
            "{status}"
        );
    }
    let blocked = app.login("cadre.typo", PASSWORD).await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(blocked.headers().contains_key("retry-after"));
    assert_eq!(
        app.login("cadre.colleague", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn many_unknown_usernames_from_one_address_are_throttled() {
    let app = spawn_app().await;
    app.seed_areas().await;
    app.user("cadre.victim", Role::Cadre, VILLAGE).await;
    let mut throttled_at = None;
    for i in 0..25 {
        let response = app.login(&format!("guess{i}"), "guess-guess-1").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            throttled_at = Some(i);
            break;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        throttled_at,
        Some(20),
        "the 21st unknown username is refused"
    );
    assert_eq!(
        app.login("cadre.victim", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_401_names_the_bearer_scheme() {
    let app = spawn_app().await;
    let response = app.request(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let failed = app.login("nobody", "guess-guess-1").await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    assert!(failed.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn common_and_one_kind_passwords_are_refused_everywhere_they_are_chosen() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.pw", Role::Office, COUNTY).await;
    for weak in ["1234567890", "qwertyuiop", "Password123", "aaaaaaaaaaaa"] {
        let created = app
            .post(
                "/api/v1/users",
                &office,
                json!({"username": "cadre.pw", "role": "cadre", "area_code": VILLAGE, "password": weak}),
            )
            .await;
        let (code, message) = envelope(created, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(code, "weak_password", "{weak}");
        assert!(message.contains("密码"), "{message}");
    }
    let (_, cadre) = app.user("cadre.pw2", Role::Cadre, VILLAGE).await;
    let change = app
        .request(
            Method::PUT,
            "/api/v1/me/password",
            Some(&cadre),
            Some(json!({"current_password": PASSWORD, "new_password": "1234567890"})),
        )
        .await;
    assert_eq!(
        error_code(change, StatusCode::UNPROCESSABLE_ENTITY).await,
        "weak_password"
    );
    assert_eq!(
        app.login("cadre.pw2", PASSWORD).await.status(),
        StatusCode::OK,
        "the old password still holds"
    );
}

#[tokio::test]
async fn wrong_types_are_explained_in_words_without_rust_type_names() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.words", Role::Office, COUNTY).await;
    let cases: Vec<(reqwest::Response, StatusCode, &[&str])> = vec![
        (
            app.patch("/api/v1/users/1", &office, json!({"active": "yes"}))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            &["active", "true 或 false"],
        ),
        (
            app.post(
                "/api/v1/users",
                &office,
                json!({"username": 5, "role": "cadre", "area_code": VILLAGE}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            &["username", "文本"],
        ),
        (
            app.post("/api/v1/users", &office, json!({"role": "cadre"}))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            &["缺少字段"],
        ),
        (
            app.get("/api/v1/users?limit=abc", &office).await,
            StatusCode::BAD_REQUEST,
            &["limit", "整数"],
        ),
        (
            app.get("/api/v1/audit?since=yesterday", &office).await,
            StatusCode::BAD_REQUEST,
            &["since", "日期"],
        ),
        (
            app.get("/api/v1/users/abc", &office).await,
            StatusCode::BAD_REQUEST,
            &["整数"],
        ),
    ];
    for (response, status, words) in cases {
        let (_, message) = envelope(response, status).await;
        for word in words {
            assert!(message.contains(word), "{message} lacks {word}");
        }
        for rust in [
            "i32",
            "u64",
            "i64",
            "u32",
            "bool",
            "String",
            "expected",
            "invalid type",
        ] {
            assert!(!message.contains(rust), "{message} speaks Rust ({rust})");
        }
    }
}

#[tokio::test]
async fn a_limit_above_the_maximum_is_a_422_on_every_list() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.limit", Role::Office, COUNTY).await;
    let (_, cadre) = app.user("cadre.limit", Role::Cadre, VILLAGE).await;
    for (path, token) in [
        ("/api/v1/tasks?limit=501", &cadre),
        ("/api/v1/tasks?limit=0", &cadre),
        ("/api/v1/users?limit=501", &office),
        ("/api/v1/audit?limit=100000", &office),
        ("/api/v1/residents?limit=501", &office),
        ("/api/v1/replies?limit=501", &cadre),
    ] {
        let response = app.get(path, token).await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_limit",
            "{path}"
        );
    }
    let fine = app.get("/api/v1/tasks?limit=500", &cadre).await;
    assert_eq!(fine.status(), StatusCode::OK);
}

#[tokio::test]
async fn impossible_settings_stop_the_start_naming_the_key() {
    let db = crate::helpers::TestDb::new().await;
    let mut settings = outreach::config::Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: outreach::config::DatabaseUrl::new(db.url.clone()),
        ..Default::default()
    };
    settings.auth.token_ttl_hours = 0;
    settings.messaging.outbox.batch = 0;
    let err = outreach::startup::Application::build(settings)
        .await
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(text.contains("auth.token_ttl_hours"), "{text}");
    assert!(text.contains("messaging.outbox.batch"), "{text}");
}

/// Log lines written to a pipe carry no colour codes.
#[tokio::test]
async fn logs_to_a_pipe_have_no_colour_codes() {
    let db = crate::helpers::TestDb::new().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_outreach"))
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .env("OUTREACH_LOG__FILTER", "debug")
        .env(
            "OUTREACH_PRIVACY__KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.stderr.is_empty(), "something was logged");
    assert!(
        !output.stderr.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
