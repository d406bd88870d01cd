use entities::users::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{COUNTY, OTHER_COUNTY, OTHER_COUNTY_VILLAGE, VILLAGE, error_code, spawn_app};

#[tokio::test]
async fn each_change_is_recorded_with_actor_request_id_and_area() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (office_id, office) = app.user("office.xy", Role::Office, COUNTY).await;
    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&office)
        .header("x-request-id", "req-create-cadre")
        .json(&json!({"username": "cadre.audit", "role": "cadre", "area_code": VILLAGE}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let page: Value = app
        .get("/api/v1/audit?action=user.create&limit=1", &office)
        .await
        .json()
        .await
        .unwrap();
    let entry = &page["entries"][0];
    assert_eq!(entry["actor_user_id"], office_id);
    assert_eq!(entry["actor_name"], "office.xy");
    assert_eq!(entry["actor_role"], "office");
    assert_eq!(entry["entity"], "user");
    assert_eq!(entry["entity_id"], created["user"]["id"].to_string());
    assert_eq!(entry["area_code"], VILLAGE);
    assert_eq!(entry["request_id"], "req-create-cadre");
    assert_eq!(entry["summary"]["username"], "cadre.audit");
    assert_eq!(entry["summary"]["password"], "generated");
    let text = entry.to_string();
    assert!(
        !text.contains(created["password"].as_str().unwrap()),
        "no password in the log"
    );
}

#[tokio::test]
async fn auditors_read_only_their_area_and_cadres_not_at_all() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, auditor) = app.user("auditor.xy", Role::Auditor, COUNTY).await;
    let (_, cadre) = app.user("cadre.one", Role::Cadre, VILLAGE).await;
    app.user("cadre.far", Role::Cadre, OTHER_COUNTY_VILLAGE)
        .await;
    let page: Value = app
        .get("/api/v1/audit?entity=user", &auditor)
        .await
        .json()
        .await
        .unwrap();
    let areas: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["area_code"].as_str().unwrap())
        .collect();
    assert_eq!(
        areas,
        vec![VILLAGE, COUNTY],
        "the other county's user and the area import are hidden"
    );
    let response = app
        .get(&format!("/api/v1/audit?area={OTHER_COUNTY}"), &auditor)
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "out_of_scope"
    );
    let response = app.get("/api/v1/audit", &cadre).await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
}

#[tokio::test]
async fn the_log_pages_backwards_and_filters_by_time() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.seed_areas().await;
    for i in 0..5 {
        app.user(&format!("cadre.p{i}"), Role::Cadre, VILLAGE).await;
    }
    let first: Value = app
        .get("/api/v1/audit?action=user.create&limit=3", &admin)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let before = first["next_before"].as_i64().unwrap();
    let second: Value = app
        .get(
            &format!("/api/v1/audit?action=user.create&limit=3&before={before}"),
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["entries"].as_array().unwrap().len(), 2);
    assert!(second["next_before"].is_null());
    let future: Value = app
        .get("/api/v1/audit?since=2999-01-01T00:00:00Z", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(future["entries"].as_array().unwrap().is_empty());
    let past: Value = app
        .get("/api/v1/audit?until=2000-01-01T00:00:00Z", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(past["entries"].as_array().unwrap().is_empty());
    let response = app.get("/api/v1/audit?since=yesterday", &admin).await;
    assert_eq!(
        error_code(response, StatusCode::BAD_REQUEST).await,
        "invalid_query"
    );
}
