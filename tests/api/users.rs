use entities::users::{self, Role};
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::helpers::{
    COUNTY, OTHER_COUNTY, OTHER_COUNTY_VILLAGE, OTHER_VILLAGE, PASSWORD, TOWNSHIP, VILLAGE,
    error_code, spawn_app,
};

#[tokio::test]
async fn an_office_user_creates_a_cadre_who_can_log_in_with_the_generated_password() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.xy", Role::Office, COUNTY).await;
    let response = app
        .post(
            "/api/v1/users",
            &office,
            json!({"username": "Cadre.Ma", "display_name": "马文", "role": "cadre", "area_code": VILLAGE}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["username"], "cadre.ma");
    assert_eq!(body["user"]["display_name"], "马文");
    let password = body["password"].as_str().unwrap();
    assert_eq!(password.len(), 16);
    let token = app.token_for("cadre.ma", password).await;
    let me: Value = app.get("/api/v1/me", &token).await.json().await.unwrap();
    assert_eq!(me["area_code"], VILLAGE);
    let stored = users::Entity::find_by_id(body["user"]["id"].as_i64().unwrap() as i32)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.password_hash.starts_with("$argon2id$"));
    assert!(!stored.password_hash.contains(password));
}

#[tokio::test]
async fn user_creation_checks_name_role_area_and_scope() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.xy", Role::Office, COUNTY).await;
    let create = |body: Value| {
        let app = &app;
        let office = office.clone();
        async move { app.post("/api/v1/users", &office, body).await }
    };
    let cases = [
        (
            json!({"username": "office.xy", "role": "cadre", "area_code": VILLAGE}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"username": "x", "role": "cadre", "area_code": VILLAGE}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
        ),
        (
            json!({"username": "张三", "role": "cadre", "area_code": VILLAGE}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
        ),
        (
            json!({"username": "cadre.t", "role": "cadre", "area_code": TOWNSHIP}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "role_area_mismatch",
        ),
        (
            json!({"username": "town.t", "role": "township", "area_code": VILLAGE}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "role_area_mismatch",
        ),
        (
            json!({"username": "cadre.t", "role": "cadre", "area_code": "654025100299"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_area",
        ),
        (
            json!({"username": "cadre.t", "role": "cadre", "area_code": "65402510029"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_area_code",
        ),
        (
            json!({"username": "cadre.t", "role": "cadre", "area_code": OTHER_COUNTY_VILLAGE}),
            StatusCode::FORBIDDEN,
            "out_of_scope",
        ),
        (
            json!({"username": "cadre.t", "role": "cadre", "area_code": VILLAGE, "password": "short"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
        ),
        (
            json!({"username": "cadre.t", "role": "boss", "area_code": VILLAGE}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"username": "cadre.t", "role": "cadre", "area_code": VILLAGE, "is_admin": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let response = create(body.clone()).await;
        assert_eq!(error_code(response, status).await, code, "{body}");
    }
    // Institutions and auditors may have any level of scope; institution staff work for one
    // institution, which must exist, and nobody else has one.
    app.institution("XYZ-WSY", TOWNSHIP, &[TOWNSHIP], 10).await;
    for (body, code) in [
        (
            json!({"username": "clinic.a", "role": "institution", "area_code": TOWNSHIP}),
            "institution_required",
        ),
        (
            json!({"username": "clinic.a", "role": "institution", "area_code": TOWNSHIP, "institution": "NOPE"}),
            "unknown_institution",
        ),
        (
            json!({"username": "cadre.i", "role": "cadre", "area_code": VILLAGE, "institution": "XYZ-WSY"}),
            "institution_not_allowed",
        ),
    ] {
        let response = create(body.clone()).await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            code,
            "{body}"
        );
    }
    let ok = create(json!({"username": "clinic.a", "role": "institution", "area_code": TOWNSHIP, "institution": "xyz-wsy", "password": PASSWORD})).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let ok: Value = ok.json().await.unwrap();
    assert!(ok["password"].is_null(), "a chosen password is not echoed");
    assert!(
        ok["user"]["institution_id"].is_i64() || ok["institution_id"].is_i64(),
        "{ok}"
    );
}

#[tokio::test]
async fn the_user_list_is_limited_to_the_callers_county_and_filterable() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.xy", Role::Office, COUNTY).await;
    app.user("cadre.one", Role::Cadre, VILLAGE).await;
    app.user("cadre.two", Role::Cadre, OTHER_VILLAGE).await;
    app.user("cadre.far", Role::Cadre, OTHER_COUNTY_VILLAGE)
        .await;
    app.user("office.yn", Role::Office, OTHER_COUNTY).await;
    let names = |page: &Value| -> Vec<String> {
        page["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect()
    };
    let page: Value = app
        .get("/api/v1/users", &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&page), vec!["office.xy", "cadre.one", "cadre.two"]);
    let page: Value = app
        .get("/api/v1/users?role=cadre", &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&page), vec!["cadre.one", "cadre.two"]);
    let page: Value = app
        .get(&format!("/api/v1/users?area={TOWNSHIP}"), &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&page), vec!["cadre.one"]);
    let page: Value = app
        .get("/api/v1/users?q=two", &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&page), vec!["cadre.two"]);
    let first: Value = app
        .get("/api/v1/users?limit=2", &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&first).len(), 2);
    let after = first["next_after"].as_i64().unwrap();
    let second: Value = app
        .get(&format!("/api/v1/users?limit=2&after={after}"), &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&second), vec!["cadre.two"]);
    assert!(second["next_after"].is_null());
    let response = app.get("/api/v1/users?role=boss", &office).await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_role"
    );
}

#[tokio::test]
async fn deactivating_or_moving_a_user_signs_them_out_and_is_audited() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.xy", Role::Office, COUNTY).await;
    let (cadre_id, cadre) = app.user("cadre.one", Role::Cadre, VILLAGE).await;

    let moved = app
        .patch(
            &format!("/api/v1/users/{cadre_id}"),
            &office,
            json!({"area_code": OTHER_VILLAGE}),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    let moved: Value = moved.json().await.unwrap();
    assert_eq!(moved["area_code"], OTHER_VILLAGE);
    assert_eq!(
        app.get("/api/v1/me", &cadre).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let cadre = app.token_for("cadre.one", PASSWORD).await;
    let response = app
        .patch(
            &format!("/api/v1/users/{cadre_id}"),
            &office,
            json!({"active": false}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/me", &cadre).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("cadre.one", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let audit: Value = app
        .get(
            &format!("/api/v1/audit?entity=user&entity_id={cadre_id}&action=user.update"),
            &office,
        )
        .await
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0]["summary"]["active"],
        json!({"from": true, "to": false})
    );
    assert_eq!(
        entries[1]["summary"]["area_code"],
        json!({"from": VILLAGE, "to": OTHER_VILLAGE})
    );
    assert_eq!(entries[1]["actor_name"], "office.xy");

    let unchanged = app
        .patch(
            &format!("/api/v1/users/{cadre_id}"),
            &office,
            json!({"active": false}),
        )
        .await;
    assert_eq!(unchanged.status(), StatusCode::OK);
    let audit: Value = app
        .get(
            &format!("/api/v1/audit?entity_id={cadre_id}&action=user.update"),
            &office,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        2,
        "no change, no record"
    );
}

#[tokio::test]
async fn an_office_user_cannot_lock_themselves_out_or_reach_another_county() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (office_id, office) = app.user("office.xy", Role::Office, COUNTY).await;
    let (far_id, _) = app
        .user("cadre.far", Role::Cadre, OTHER_COUNTY_VILLAGE)
        .await;
    let (cadre_id, _) = app.user("cadre.one", Role::Cadre, VILLAGE).await;
    let response = app
        .patch(
            &format!("/api/v1/users/{office_id}"),
            &office,
            json!({"active": false}),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "cannot_change_self"
    );
    let response = app
        .patch(
            &format!("/api/v1/users/{office_id}"),
            &office,
            json!({"role": "auditor"}),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "cannot_change_self"
    );
    let response = app.get(&format!("/api/v1/users/{far_id}"), &office).await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app
        .patch(
            &format!("/api/v1/users/{far_id}"),
            &office,
            json!({"active": false}),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app
        .patch(
            &format!("/api/v1/users/{cadre_id}"),
            &office,
            json!({"area_code": OTHER_COUNTY_VILLAGE}),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "out_of_scope"
    );
    let response = app
        .patch(
            &format!("/api/v1/users/{cadre_id}"),
            &office,
            json!({"role": "township"}),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "role_area_mismatch"
    );
    let response = app
        .patch(
            &format!("/api/v1/users/{cadre_id}"),
            &office,
            json!({"role": "township", "area_code": TOWNSHIP}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_password_reset_replaces_the_password_and_ends_sessions() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.xy", Role::Office, COUNTY).await;
    let (cadre_id, cadre) = app.user("cadre.one", Role::Cadre, VILLAGE).await;
    let response = app
        .post(
            &format!("/api/v1/users/{cadre_id}/reset-password"),
            &office,
            json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let new_password = body["password"].as_str().unwrap();
    assert_eq!(
        app.get("/api/v1/me", &cadre).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("cadre.one", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("cadre.one", new_password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn institution_staff_move_between_institutions_and_lose_theirs_with_the_role() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let admin = app.admin_token().await;
    app.institution("XYZ-WSY", TOWNSHIP, &[TOWNSHIP], 10).await;
    app.institution("ZKT-WSY", "654025101000", &["654025101000"], 10)
        .await;
    let (id, _) = app
        .user_at(
            "clinic.m",
            Role::Institution,
            TOWNSHIP,
            Some("XYZ-WSY".into()),
        )
        .await;
    let path = format!("/api/v1/users/{id}");
    let moved = app
        .patch(&path, &admin, json!({"institution": "zkt-wsy"}))
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    let zkt = outreach::institution::find_by_code(&app.db, "ZKT-WSY")
        .await
        .unwrap()
        .unwrap()
        .id;
    let body: Value = moved.json().await.unwrap();
    assert_eq!(body["institution_id"], zkt);

    // A cadre of a village cannot hold an institution; made a cadre, the user loses it.
    let wrong = app
        .patch(
            &path,
            &admin,
            json!({"role": "cadre", "area_code": VILLAGE, "institution": "ZKT-WSY"}),
        )
        .await;
    assert_eq!(
        error_code(wrong, StatusCode::UNPROCESSABLE_ENTITY).await,
        "institution_not_allowed"
    );
    let cadre = app
        .patch(
            &path,
            &admin,
            json!({"role": "cadre", "area_code": VILLAGE}),
        )
        .await;
    assert_eq!(cadre.status(), StatusCode::OK);
    assert_eq!(
        cadre.json::<Value>().await.unwrap()["institution_id"],
        Value::Null
    );
    // Back to institution staff: which institution must be said.
    let back = app
        .patch(&path, &admin, json!({"role": "institution"}))
        .await;
    assert_eq!(
        error_code(back, StatusCode::UNPROCESSABLE_ENTITY).await,
        "institution_required"
    );
}
