//! Role × scope matrix: every endpoint of the OpenAPI document is called by every role, from
//! inside and outside the scope, and without a token. A new endpoint that is not listed here
//! fails `every_documented_endpoint_is_in_the_matrix`.

use std::collections::BTreeSet;

use entities::users::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{COUNTY, OTHER_COUNTY, TOWNSHIP, VILLAGE, spawn_app};

const USERS: [&str; 6] = [
    "office",
    "office_other",
    "township",
    "cadre",
    "institution",
    "auditor",
];

/// Endpoints reachable without a token.
const PUBLIC: [(&str, &str); 2] = [("get", "/healthz"), ("post", "/api/v1/auth/login")];

struct Case {
    method: Method,
    /// The documented path template.
    template: &'static str,
    path: String,
    body: Option<Value>,
    /// Expected status for each of `USERS`, in order.
    expected: [u16; 6],
}

fn cases(target: i32) -> Vec<Case> {
    let user = format!("/api/v1/users/{target}");
    vec![
        Case {
            method: Method::GET,
            template: "/api/v1/me",
            path: "/api/v1/me".into(),
            body: None,
            expected: [200, 200, 200, 200, 200, 200],
        },
        Case {
            method: Method::GET,
            template: "/api/v1/areas",
            path: "/api/v1/areas".into(),
            body: None,
            expected: [200, 200, 200, 200, 200, 200],
        },
        Case {
            method: Method::GET,
            template: "/api/v1/areas/{code}",
            path: format!("/api/v1/areas/{VILLAGE}"),
            body: None,
            expected: [200, 403, 200, 200, 200, 200],
        },
        Case {
            method: Method::GET,
            template: "/api/v1/areas/{code}",
            path: format!("/api/v1/areas/{TOWNSHIP}"),
            body: None,
            expected: [200, 403, 200, 403, 200, 200],
        },
        Case {
            method: Method::POST,
            template: "/api/v1/areas/import",
            path: "/api/v1/areas/import".into(),
            body: None,
            expected: [200, 200, 403, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            template: "/api/v1/users",
            path: "/api/v1/users".into(),
            body: None,
            expected: [200, 200, 403, 403, 403, 403],
        },
        Case {
            method: Method::POST,
            template: "/api/v1/users",
            path: "/api/v1/users".into(),
            body: Some(json!({"role": "cadre", "area_code": VILLAGE})),
            expected: [201, 403, 403, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            template: "/api/v1/users/{id}",
            path: user.clone(),
            body: None,
            expected: [200, 404, 403, 403, 403, 403],
        },
        Case {
            method: Method::PATCH,
            template: "/api/v1/users/{id}",
            path: user.clone(),
            body: Some(json!({"display_name": "改名"})),
            expected: [200, 404, 403, 403, 403, 403],
        },
        Case {
            method: Method::POST,
            template: "/api/v1/users/{id}/reset-password",
            path: format!("{user}/reset-password"),
            body: None,
            expected: [200, 404, 403, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            template: "/api/v1/audit",
            path: "/api/v1/audit".into(),
            body: None,
            expected: [200, 200, 403, 403, 403, 200],
        },
        // Endpoints that change the caller's own session are checked for "no token" only here
        // (their behaviour is covered in auth.rs).
        Case {
            method: Method::PUT,
            template: "/api/v1/me/password",
            path: "/api/v1/me/password".into(),
            body: Some(json!({"current_password": "x", "new_password": "y"})),
            expected: [0; 6],
        },
        Case {
            method: Method::POST,
            template: "/api/v1/auth/logout",
            path: "/api/v1/auth/logout".into(),
            body: None,
            expected: [0; 6],
        },
    ]
}

#[tokio::test]
async fn every_role_and_scope_gets_exactly_its_rights() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let mut tokens = Vec::new();
    for (name, role, area) in [
        ("office", Role::Office, COUNTY),
        ("office_other", Role::Office, OTHER_COUNTY),
        ("township", Role::Township, TOWNSHIP),
        ("cadre", Role::Cadre, VILLAGE),
        ("institution", Role::Institution, TOWNSHIP),
        ("auditor", Role::Auditor, COUNTY),
    ] {
        tokens.push(app.user(&format!("m.{name}"), role, area).await.1);
    }
    let (target, _) = app.user("m.target", Role::Cadre, VILLAGE).await;

    let mut failures = Vec::new();
    for (n, case) in cases(target).into_iter().enumerate() {
        let anonymous = app
            .request(case.method.clone(), &case.path, None, case.body.clone())
            .await;
        if anonymous.status() != StatusCode::UNAUTHORIZED {
            failures.push(format!(
                "{} {} without token: {}",
                case.method,
                case.path,
                anonymous.status()
            ));
        }
        for (i, token) in tokens.iter().enumerate() {
            if case.expected[i] == 0 {
                continue;
            }
            let response = if case.template == "/api/v1/areas/import" {
                app.post_csv(&case.path, token, "区划代码,名称\n654025100203,新村\n")
                    .await
            } else {
                let body = case.body.clone().map(|mut b| {
                    if case.method == Method::POST && case.template == "/api/v1/users" {
                        b["username"] = json!(format!("new.{n}.{i}"));
                    }
                    b
                });
                app.request(case.method.clone(), &case.path, Some(token), body)
                    .await
            };
            let status = response.status().as_u16();
            if status != case.expected[i] {
                failures.push(format!(
                    "{} {} as {}: {status}, expected {}",
                    case.method, case.path, USERS[i], case.expected[i]
                ));
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status >= 400 && body["error"]["code"].as_str().is_none() {
                failures.push(format!(
                    "{} {} as {}: no error envelope",
                    case.method, case.path, USERS[i]
                ));
            }
            // Lists are not refused outright; what the other county sees must not include ours.
            if USERS[i] == "office_other" && status == 200 {
                let text = body.to_string();
                if text.contains(VILLAGE) || text.contains(&format!("\"id\":{target},")) {
                    failures.push(format!(
                        "{} {} as office_other leaks the other county: {text}",
                        case.method, case.path
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_documented_endpoint_is_in_the_matrix() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let mut covered: BTreeSet<(String, String)> = cases(1)
        .iter()
        .map(|c| (c.method.as_str().to_lowercase(), c.template.to_owned()))
        .collect();
    covered.extend(PUBLIC.iter().map(|(m, p)| (m.to_string(), p.to_string())));
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "endpoints without a row in the role × scope matrix: {missing:?}"
    );
}
