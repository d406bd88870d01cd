//! Exam records: one per resident and campaign whoever records it; the checkup system's CSV
//! import with rejected rows; examined elsewhere with evidence.

use base64::Engine;
use chrono::{Datelike, Duration};
use entities::users::Role;
use outreach::registry;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::campaigns::{add_resident, row};
use crate::helpers::{OTHER_VILLAGE, TOWNSHIP, VILLAGE, error_code, resident_id, spawn_app};

#[tokio::test]
async fn the_exam_import_takes_good_rows_and_reports_duplicates_and_bad_rows() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let mut ids = Vec::new();
    let mut residents = Vec::new();
    for n in 0..4 {
        let id = resident_id(n, "19650101");
        residents.push(add_resident(&app, id.clone(), VILLAGE, None, None).await);
        ids.push(id);
    }
    let campaign = app.open_campaign().await;
    app.institution("XYZ-WSY", TOWNSHIP, &[TOWNSHIP], 50).await;
    app.institution("ZKT-WSY", "654025101000", &["654025101000"], 50)
        .await;
    let (_, staff) = app
        .user_at(
            "clinic.e",
            Role::Institution,
            TOWNSHIP,
            Some("XYZ-WSY".into()),
        )
        .await;
    let today = registry::today();
    let yesterday = today - Duration::days(1);
    let unknown = resident_id(500, "19650101");
    let mut bad_check = ids[0].clone();
    bad_check.replace_range(17.., if bad_check.ends_with('1') { "2" } else { "1" });
    // The staff record one exam by hand first.
    let manual = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/exams"),
            &staff,
            json!({"resident_id": residents[3], "examined_on": yesterday}),
        )
        .await;
    assert_eq!(manual.status(), StatusCode::CREATED);

    let csv = format!(
        "身份证号,体检日期,体检机构,备注\n\
         {a},{today},XYZ-WSY,\n\
         {b},{yesterday},xyz-wsy,\n\
         {a},{today},XYZ-WSY,重复一行\n\
         {d},{today},XYZ-WSY,已体检\n\
         {unknown},{today},XYZ-WSY,\n\
         {bad_check},{today},XYZ-WSY,\n\
         {c},2099-01-01,XYZ-WSY,\n\
         {c},{today},NOPE,\n\
         {c},{today},ZKT-WSY,\n",
        a = ids[0],
        b = ids[1],
        c = ids[2],
        d = ids[3],
    );
    let response = app
        .post_csv(
            &format!("/api/v1/campaigns/{campaign}/exams/import"),
            &staff,
            csv.clone(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["summary"]["imported"], 2);
    assert_eq!(report["summary"]["duplicates"], 2);
    assert_eq!(report["summary"]["rejected"], 7);
    assert_eq!(report["unknown_columns"], json!(["备注"]));
    let rows: Vec<(u64, String)> = report["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (4, "duplicate_exam"),
            (5, "duplicate_exam"),
            (6, "unknown_resident"),
            (7, "id_check_digit"),
            (8, "invalid_exam_date"),
            (9, "unknown_institution"),
            (10, "out_of_scope"),
        ]
        .map(|(l, c)| (l, c.to_owned()))
    );
    let duplicate = &report["rejected_rows"][1]["reason"];
    assert!(
        duplicate.as_str().unwrap().contains("不能重复体检"),
        "{duplicate}"
    );
    // The reason names the ID masked only.
    assert!(
        !report["rejected_rows"][2]["reason"]
            .as_str()
            .unwrap()
            .contains(&unknown)
    );

    assert_eq!(
        row(&app, campaign, residents[0]).await.unwrap().stage,
        "examined"
    );
    assert_eq!(
        row(&app, campaign, residents[1]).await.unwrap().stage,
        "examined"
    );
    assert_eq!(
        row(&app, campaign, residents[2]).await.unwrap().stage,
        "target"
    );

    // Importing the same file again records nothing new: every row is now a duplicate or bad.
    let again: Value = app
        .post_csv(
            &format!("/api/v1/campaigns/{campaign}/exams/import"),
            &staff,
            csv,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["summary"]["imported"], 0);
    assert_eq!(again["summary"]["duplicates"], 4);

    // Unusable files.
    for (body, code) in [
        (
            "身份证号,体检日期\n110105194912310021,2026-01-01\n",
            "missing_columns",
        ),
        ("身份证号,体检日期,体检机构\n", "no_rows"),
        ("", "unreadable_file"),
    ] {
        let response = app
            .post_csv(
                &format!("/api/v1/campaigns/{campaign}/exams/import"),
                &staff,
                body,
            )
            .await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            code,
            "{body:?}"
        );
    }
    // Cadres do not import exams.
    let (_, cadre) = app.user("cadre.e", Role::Cadre, VILLAGE).await;
    let response = app
        .post_csv(
            &format!("/api/v1/campaigns/{campaign}/exams/import"),
            &cadre,
            format!("身份证号,体检日期,体检机构\n{},{today},XYZ-WSY\n", ids[2]),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
}

#[tokio::test]
async fn a_migrant_examined_elsewhere_counts_with_evidence_and_only_once() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let migrant = add_resident(
        &app,
        resident_id(1, "19880808"),
        VILLAGE,
        Some(registry::MigrantType::InRegionPermit),
        None,
    )
    .await;
    let neighbour = add_resident(&app, resident_id(2, "19880808"), OTHER_VILLAGE, None, None).await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.m", Role::Cadre, VILLAGE).await;
    let photo = b"\x89PNG\r\n\x1a\n fake exam form";
    let body = json!({
        "examined_on": registry::today(),
        "place": "乌鲁木齐市天山区人民医院",
        "examiner": "天山区人民医院体检科",
        "note": "居住证持有人，在居住地体检",
        "evidence_base64": base64::engine::general_purpose::STANDARD.encode(photo),
        "evidence_name": "体检表.png",
        "evidence_type": "image/png",
    });
    let path = format!("/api/v1/campaigns/{campaign}/residents/{migrant}/examined-elsewhere");
    let response = app.post(&path, &cadre, body.clone()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let exam: Value = response.json().await.unwrap();
    assert_eq!(exam["source"], "elsewhere");
    assert_eq!(exam["place"], "乌鲁木齐市天山区人民医院");
    assert_eq!(exam["has_evidence"], true);
    assert_eq!(exam["institution_id"], Value::Null);
    let enrolled = row(&app, campaign, migrant).await.unwrap();
    assert_eq!(enrolled.stage, "examined");
    assert_eq!(
        enrolled.village_code, VILLAGE,
        "counted for the home village"
    );

    let evidence = app
        .get(&format!("/api/v1/exams/{}/evidence", exam["id"]), &cadre)
        .await;
    assert_eq!(evidence.status(), StatusCode::OK);
    assert_eq!(evidence.headers()["content-type"], "image/png");
    assert_eq!(evidence.bytes().await.unwrap().as_ref(), photo);

    // A second record for the same resident and campaign is refused as a duplicate.
    let again = app.post(&path, &cadre, body.clone()).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["error"]["code"], "duplicate_exam");
    assert_eq!(
        again["error"]["details"]["exam"]["place"],
        "乌鲁木齐市天山区人民医院"
    );

    // Out of scope, bad evidence, a future date.
    let outside = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{neighbour}/examined-elsewhere"),
            &cadre,
            body.clone(),
        )
        .await;
    assert_eq!(
        error_code(outside, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let admin = app.office_token().await;
    let mut bad = body.clone();
    bad["evidence_base64"] = json!("not base64!");
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{neighbour}/examined-elsewhere"),
            &admin,
            bad,
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_evidence"
    );
    let mut future = body.clone();
    future["examined_on"] = json!(registry::today() + Duration::days(3));
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{neighbour}/examined-elsewhere"),
            &admin,
            future,
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_exam_date"
    );
    let mut last_year = body;
    last_year["examined_on"] =
        json!(chrono::NaiveDate::from_ymd_opt(registry::today().year() - 1, 12, 31).unwrap());
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{neighbour}/examined-elsewhere"),
            &admin,
            last_year,
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_exam_date"
    );
}

#[tokio::test]
async fn institution_staff_import_only_residents_they_serve_and_see_ids_masked() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let near = resident_id(1, "19700101");
    let far = resident_id(2, "19700101");
    add_resident(&app, near.clone(), VILLAGE, None, None).await;
    add_resident(&app, far.clone(), OTHER_VILLAGE, None, None).await;
    let campaign = app.open_campaign().await;
    app.institution("XYZ-WSY", TOWNSHIP, &[TOWNSHIP], 50).await;
    let (_, staff) = app
        .user_at(
            "clinic.s",
            Role::Institution,
            TOWNSHIP,
            Some("XYZ-WSY".into()),
        )
        .await;
    let today = registry::today();
    let report: Value = app
        .post_csv(
            &format!("/api/v1/campaigns/{campaign}/exams/import"),
            &staff,
            format!("身份证号,体检日期,体检机构\n{near},{today},XYZ-WSY\n{far},{today},XYZ-WSY\n"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["summary"]["imported"], 1);
    assert_eq!(report["rejected_rows"][0]["code"], "out_of_scope");
    let shown = report["rejected_rows"][0]["values"][0].as_str().unwrap();
    assert_eq!(shown, format!("{}**********{}", &far[..4], &far[14..]));
    assert!(!report.to_string().contains(&far));

    // Evidence of a bad type is refused before anything is stored.
    let (_, cadre) = app.user("cadre.s", Role::Cadre, VILLAGE).await;
    let resident = registry::list(
        &app.db,
        &app.state.privacy,
        &outreach::auth::Actor::cli(),
        registry::ResidentFilter {
            id_number: Some(near.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .residents[0]
        .id;
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{resident}/examined-elsewhere"),
            &cadre,
            json!({"examined_on": today, "place": "伊宁市", "examiner": "医院",
                   "evidence_base64": "aGVsbG8=", "evidence_type": "image/png\u{0}"}),
        )
        .await;
    // A NUL anywhere in a request is refused before the handler.
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_input"
    );
    let response = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/worklists/migrants?page=100000000000"),
            &cadre,
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_page"
    );
}

#[tokio::test]
async fn evidence_is_served_to_the_documented_roles_and_every_download_is_audited() {
    use entities::audit_log;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

    let app = spawn_app().await;
    app.seed_areas().await;
    let migrant = add_resident(
        &app,
        resident_id(1, "19880808"),
        VILLAGE,
        Some(registry::MigrantType::InRegionPermit),
        None,
    )
    .await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.ev", Role::Cadre, VILLAGE).await;
    let body = json!({
        "examined_on": registry::today(),
        "place": "乌鲁木齐市天山区人民医院",
        "examiner": "天山区人民医院体检科",
        "evidence_base64": base64::engine::general_purpose::STANDARD.encode(b"form"),
        "evidence_name": "form.png",
        "evidence_type": "image/png",
    });
    let response = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{migrant}/examined-elsewhere"),
            &cadre,
            body,
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let exam: Value = response.json().await.unwrap();
    let path = format!("/api/v1/exams/{}/evidence", exam["id"]);

    let office = app.office_token().await;
    let (township_user, township) = app.user("township.ev", Role::Township, TOWNSHIP).await;
    for (who, token) in [
        ("office", &office),
        ("township", &township),
        ("cadre", &cadre),
    ] {
        let response = app.get(&path, token).await;
        assert_eq!(response.status(), StatusCode::OK, "{who} downloads");
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"form");
    }
    // Institution staff (even of an institution serving the village) and auditors may not.
    let (_, institution) = app.user("clinic.ev", Role::Institution, TOWNSHIP).await;
    let (_, auditor) = app.user("auditor.ev", Role::Auditor, TOWNSHIP).await;
    for token in [&institution, &auditor] {
        assert_eq!(
            error_code(app.get(&path, token).await, StatusCode::FORBIDDEN).await,
            "forbidden"
        );
    }
    // A cadre of another village does not see the record at all.
    let (_, neighbour) = app.user("cadre.ev2", Role::Cadre, OTHER_VILLAGE).await;
    assert_eq!(
        error_code(app.get(&path, &neighbour).await, StatusCode::NOT_FOUND).await,
        "not_found"
    );

    // One audit row per download, naming who downloaded which record; none for the refusals.
    let rows = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("exam.evidence_download"))
        .order_by_asc(audit_log::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    let roles: Vec<&str> = rows.iter().map(|r| r.actor_role.as_str()).collect();
    assert_eq!(roles, ["office", "township", "cadre"]);
    assert!(
        rows.iter()
            .all(|r| r.entity_id.as_deref() == Some(&exam["id"].to_string()))
    );
    assert!(rows.iter().all(|r| r.area_code.as_deref() == Some(VILLAGE)));
    assert_eq!(rows[1].actor_user_id, Some(township_user));
}
