//! Malformed requests of every kind get a 4xx with the JSON envelope, never a 500.

use entities::users::Role;
use reqwest::StatusCode;

use crate::helpers::{COUNTY, error_code, spawn_app_with};

/// (method, path, content-type, body, expected status, expected code)
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);

#[tokio::test]
async fn malformed_requests_get_the_envelope_and_a_4xx() {
    let app = spawn_app_with(|s| s.http.max_body_bytes = 64 * 1024).await;
    app.seed_areas().await;
    let (_, office) = app.user("office.err", Role::Office, COUNTY).await;
    let big = format!("{{\"username\":\"{}\"}}", "x".repeat(200 * 1024));
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            b"{not json".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            b"".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            b"[1,2,3]".to_vec(),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            br#"{"username": 5, "role": "cadre", "area_code": "654025100201"}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            br#"{"role": "cadre"}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            b"\xff\xfe\x00garbage".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            nested.into_bytes(),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("text/plain"),
            br#"{"username":"a"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/v1/users",
            None,
            br#"{"username":"a"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            big.into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/areas/import",
            Some("text/csv"),
            vec![b'a'; 100 * 1024],
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("application/json"),
            br#"{"username":"abc","role":"cadre","area_code":"999999999999"}"#.to_vec(),
            422,
            "unknown_area",
        ),
        (
            "PATCH",
            "/api/v1/users/99999999999999",
            Some("application/json"),
            b"{}".to_vec(),
            400,
            "invalid_path",
        ),
        (
            "PATCH",
            "/api/v1/users/abc",
            Some("application/json"),
            b"{}".to_vec(),
            400,
            "invalid_path",
        ),
        (
            "PATCH",
            "/api/v1/users/424242",
            Some("application/json"),
            b"{}".to_vec(),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/api/v1/users/1",
            Some("application/json"),
            br#"{"active": "yes"}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "PATCH",
            "/api/v1/users/1",
            Some("application/json"),
            br#"{"area_code": null, "display_name": 7}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "GET",
            "/api/v1/users?limit=-1",
            None,
            Vec::new(),
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/v1/users?after=1e99",
            None,
            Vec::new(),
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/v1/users?area=abc",
            None,
            Vec::new(),
            422,
            "invalid_area_code",
        ),
        (
            "GET",
            "/api/v1/audit?before=x",
            None,
            Vec::new(),
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/v1/areas/%FF%FE",
            None,
            Vec::new(),
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/api/v1/areas/abc",
            None,
            Vec::new(),
            422,
            "invalid_area_code",
        ),
        (
            "GET",
            "/api/v1/nothing-here",
            None,
            Vec::new(),
            404,
            "not_found",
        ),
        (
            "DELETE",
            "/api/v1/users",
            None,
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        (
            "PUT",
            "/healthz",
            None,
            Vec::new(),
            405,
            "method_not_allowed",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, content_type, body, status, code) in cases {
        let mut request = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&office)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let got_status = response.status().as_u16();
        let got = response.text().await.unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(&got).unwrap_or_default();
        let got_code = parsed["error"]["code"].as_str().unwrap_or("<no envelope>");
        if got_status != status || got_code != code {
            failures.push(format!(
                "{method} {path}: {got_status} {got_code}, expected {status} {code} — {}",
                &got[..got.len().min(200)]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_login_with_a_wrong_shape_is_a_4xx_not_a_500() {
    let app = spawn_app_with(|_| {}).await;
    for body in [
        r#"{"username": null, "password": "x"}"#,
        r#"{"username": "a"}"#,
        "{}",
        "null",
        r#""admin""#,
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_body",
            "{body}"
        );
    }
}
