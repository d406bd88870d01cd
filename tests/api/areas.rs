use entities::{areas, audit_log, users::Role};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::Value;

use crate::helpers::{
    AREAS_CSV, COUNTY, OTHER_COUNTY_VILLAGE, OTHER_VILLAGE, TOWNSHIP, VILLAGE, error_code,
    spawn_app,
};

fn codes(node: &Value, out: &mut Vec<String>) {
    out.push(node["code"].as_str().unwrap().to_owned());
    for child in node["children"].as_array().unwrap() {
        codes(child, out);
    }
}

fn all_codes(tree: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for root in tree["areas"].as_array().unwrap() {
        codes(root, &mut out);
    }
    out.sort();
    out
}

#[tokio::test]
async fn upload_builds_the_tree_and_a_reimport_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let response = app
        .post_csv("/api/v1/areas/import", &admin, AREAS_CSV)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["imported"], 9);
    assert_eq!(report["rejected"], 0);

    let tree: Value = app.get("/api/v1/areas", &admin).await.json().await.unwrap();
    let roots = tree["areas"].as_array().unwrap();
    assert_eq!(roots.len(), 2, "two counties");
    let xinyuan = roots.iter().find(|r| r["code"] == COUNTY).unwrap();
    assert_eq!(xinyuan["name"], "新源县");
    assert_eq!(xinyuan["level"], "county");
    let townships = xinyuan["children"].as_array().unwrap();
    assert_eq!(townships.len(), 2);
    assert_eq!(townships[0]["code"], TOWNSHIP);
    assert_eq!(townships[0]["level"], "township");
    assert_eq!(townships[0]["children"].as_array().unwrap().len(), 2);
    assert_eq!(townships[0]["children"][0]["level"], "village");
    assert_eq!(townships[0]["children"][0]["parent_code"], TOWNSHIP);

    let again: Value = app
        .post_csv("/api/v1/areas/import", &admin, AREAS_CSV)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["imported"].clone(), again["unchanged"].clone()),
        (0.into(), 9.into())
    );
    let imports = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("area.import"))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(
        imports, 1,
        "an import that changed nothing writes no audit record"
    );
}

#[tokio::test]
async fn rows_in_any_order_with_english_headers_and_a_rename_are_applied() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    // Villages before their township, extra column, English headers in another order.
    let csv =
        "name,note,code\n阿勒玛勒村,x,654025100201\n新源镇,,654025100000\n新源县,,654025000000\n";
    let report: Value = app
        .post_csv("/api/v1/areas/import", &admin, csv)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["imported"], 3);
    assert_eq!(report["unknown_columns"], serde_json::json!(["note"]));
    let renamed = "code,name\n654025100201,阿勒玛勒村委会\n654025100000,新源镇\n";
    let report: Value = app
        .post_csv("/api/v1/areas/import", &admin, renamed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (report["updated"].clone(), report["unchanged"].clone()),
        (1.into(), 1.into())
    );
    let row = areas::Entity::find_by_id(VILLAGE)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.name, "阿勒玛勒村委会");
    let audit = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("area.import"))
        .all(&app.db)
        .await
        .unwrap();
    let last: Value = serde_json::from_str(&audit.last().unwrap().summary).unwrap();
    assert_eq!(last["renamed"][0]["from"], "阿勒玛勒村");
    assert_eq!(last["renamed"][0]["to"], "阿勒玛勒村委会");
}

#[tokio::test]
async fn bad_rows_are_rejected_with_reasons_and_good_rows_kept() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let csv = "区划代码,名称
654025000000,新源县
65402510000,少一位
654025100000,
654000000000,伊犁州
654025102201,没有上级的村
654025100000,新源镇
654025100000,新源镇重复
654025100201,阿勒玛勒村
";
    let report: Value = app
        .post_csv("/api/v1/areas/import", &admin, csv)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["imported"], 3);
    assert_eq!(report["rejected"], 5);
    let rejected: Vec<(u64, String)> = report["rejected_rows"]
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
        rejected,
        vec![
            (3, "invalid_code".into()),
            (4, "missing_name".into()),
            (5, "invalid_code".into()),
            (6, "unknown_parent".into()),
            (8, "duplicate_in_file".into()),
        ]
    );
    let reason = report["rejected_rows"][3]["reason"].as_str().unwrap();
    assert!(reason.contains("654025102000"), "{reason}");
    assert_eq!(areas::Entity::find().count(&app.db).await.unwrap(), 3);
}

#[tokio::test]
async fn a_gb18030_file_from_excel_imports_like_utf8() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (bytes, _, _) = encoding_rs::GB18030.encode(AREAS_CSV);
    let report: Value = app
        .post_csv("/api/v1/areas/import", &admin, bytes.into_owned())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["imported"], 9);
    let row = areas::Entity::find_by_id(TOWNSHIP)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.name, "新源镇");
}

#[tokio::test]
async fn unusable_files_are_refused_whole_and_nothing_is_written() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unreadable_file", Vec::new()),
        ("no_rows", "区划代码,名称\n".into()),
        ("missing_columns", "代码,地名\n654025000000,新源县\n".into()),
        (
            "unreadable_file",
            b"PK\x03\x04\x14\x00\x00\x00binary".to_vec(),
        ),
        ("unreadable_file", b"\x81\x30\xff\xfe\xfd".to_vec()),
    ];
    for (expected, body) in cases {
        let response = app.post_csv("/api/v1/areas/import", &admin, body).await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            expected
        );
    }
    assert_eq!(areas::Entity::find().count(&app.db).await.unwrap(), 0);
}

#[tokio::test]
async fn each_user_sees_only_their_part_of_the_tree() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, cadre) = app.user("cadre.a", Role::Cadre, VILLAGE).await;
    let (_, township) = app.user("township.a", Role::Township, TOWNSHIP).await;
    let (_, office) = app.user("office.a", Role::Office, COUNTY).await;

    let seen: Value = app.get("/api/v1/areas", &cadre).await.json().await.unwrap();
    assert_eq!(all_codes(&seen), vec![VILLAGE.to_owned()]);
    let seen: Value = app
        .get("/api/v1/areas", &township)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        all_codes(&seen),
        vec![
            TOWNSHIP.to_owned(),
            VILLAGE.to_owned(),
            "654025100202".to_owned()
        ]
    );
    let seen: Value = app
        .get("/api/v1/areas", &office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all_codes(&seen).len(), 6);
    assert!(!all_codes(&seen).contains(&OTHER_COUNTY_VILLAGE.to_owned()));

    let response = app
        .get(&format!("/api/v1/areas/{OTHER_VILLAGE}"), &township)
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "out_of_scope"
    );
    let response = app
        .get(&format!("/api/v1/areas/{TOWNSHIP}"), &township)
        .await;
    let node: Value = response.json().await.unwrap();
    assert_eq!(node["children"].as_array().unwrap().len(), 2);
    let response = app.get("/api/v1/areas/654025100299", &township).await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app.get("/api/v1/areas/12345", &township).await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_area_code"
    );
}

#[tokio::test]
async fn an_office_user_cannot_import_areas_outside_their_county() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.b", Role::Office, COUNTY).await;
    let csv = "区划代码,名称\n654025100203,新村\n654021100202,别县的村\n";
    let report: Value = app
        .post_csv("/api/v1/areas/import", &office, csv)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["imported"], 1);
    assert_eq!(report["rejected_rows"][0]["code"], "out_of_scope");
    assert!(
        areas::Entity::find_by_id("654021100202")
            .one(&app.db)
            .await
            .unwrap()
            .is_none()
    );
}
