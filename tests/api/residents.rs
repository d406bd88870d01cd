//! The resident registry: import edges, privacy, scope, filters and record changes.

use entities::{audit_log, residents, users::Role};
use outreach::privacy::Field;
use reqwest::StatusCode;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Statement,
};
use serde_json::{Value, json};

use crate::helpers::{
    COUNTY, OTHER_VILLAGE, TOWNSHIP, VILLAGE, error_code, resident_id, spawn_app, spawn_app_with,
};

const HEADER: &str =
    "姓名,身份证号,户籍地区划代码,联系电话,亲属姓名,亲属电话,流动类型,特殊情况,语言\n";

fn row(name: &str, id: &str, village: &str, phone: &str, migrant: &str) -> String {
    format!("{name},{id},{village},{phone},,,{migrant},,\n")
}

/// The registry's indexes as the database itself describes them.
async fn resident_indexes(db: &DatabaseConnection) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT indexdef AS definition FROM pg_indexes \
             WHERE tablename = 'residents' ORDER BY indexname"
        }
        _ => {
            "SELECT sql AS definition FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = 'residents' AND sql IS NOT NULL ORDER BY name"
        }
    };
    db.query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("", "definition").unwrap())
        .collect()
}

async fn json_body(response: reqwest::Response) -> Value {
    let status = response.status();
    let body = response.text().await.unwrap();
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status}: {body}"))
}

#[tokio::test]
async fn an_upload_keeps_good_rows_rejects_bad_ones_and_a_reimport_changes_nothing() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let zhang = resident_id(1, "19800101");
    let mut csv = String::from(HEADER);
    csv.push_str(&row("张三", &zhang, VILLAGE, "13812345678", "疆外"));
    csv.push_str(&row("李四", &resident_id(2, "19550615"), VILLAGE, "", ""));
    csv.push_str(&row(
        "王五",
        &resident_id(3, "20200229"),
        OTHER_VILLAGE,
        "+86 139 0000 1111",
        "本地",
    ));
    csv.push_str(&row("", &resident_id(4, "19800101"), VILLAGE, "", ""));
    csv.push_str(&row("赵六", "654025198001010011", VILLAGE, "", ""));
    csv.push_str(&row(
        "钱七",
        &resident_id(6, "19800101"),
        "654025100299",
        "",
        "",
    ));
    csv.push_str(&row(
        "孙八",
        &resident_id(7, "19800101"),
        VILLAGE,
        "1381234",
        "",
    ));
    csv.push_str(&row(
        "周九",
        &resident_id(8, "19800101"),
        VILLAGE,
        "",
        "去外地",
    ));
    csv.push_str(&row("吴十", &zhang, VILLAGE, "", ""));
    let report = json_body(app.upload_residents(&office, csv.clone()).await).await;
    assert_eq!(
        (report["imported"].clone(), report["rejected"].clone()),
        (3.into(), 6.into()),
        "{report}"
    );
    let codes: Vec<&str> = report["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec![
            "missing_name",
            "id_check_digit",
            "unknown_village",
            "invalid_phone",
            "invalid_migrant_type",
            "duplicate_in_file"
        ]
    );
    assert_eq!(report["rejected_rows"][0]["line"], 5);

    let stored = residents::Entity::find()
        .order_by_asc(residents::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    let first = &stored[0];
    assert_eq!(first.name, "张三");
    assert_eq!(
        first.id_masked,
        format!("{}**********{}", &zhang[..4], &zhang[14..])
    );
    assert_eq!(first.phone_masked.as_deref(), Some("138****5678"));
    assert_eq!(first.migrant_type, "out_of_region");
    assert_eq!(first.sex, "M");
    assert_eq!(first.birth_date.to_string(), "1980-01-01");
    // Encrypted at rest: no clear ID or phone anywhere in the row.
    let raw = format!(
        "{:?}{:?}{:?}",
        first.id_cipher, first.phone_cipher, first.id_index
    );
    let bytes: Vec<u8> = first
        .id_cipher
        .iter()
        .chain(first.phone_cipher.as_ref().unwrap())
        .copied()
        .collect();
    assert!(
        !bytes.windows(8).any(|w| w == &zhang.as_bytes()[..8]),
        "{raw}"
    );
    assert!(!bytes.windows(8).any(|w| w == b"13812345"));
    assert_eq!(stored[2].phone_masked.as_deref(), Some("139****1111"));

    let again = json_body(app.upload_residents(&office, csv).await).await;
    assert_eq!(
        (
            again["imported"].clone(),
            again["updated"].clone(),
            again["unchanged"].clone()
        ),
        (0.into(), 0.into(), 3.into())
    );
    assert_eq!(residents::Entity::find().count(&app.db).await.unwrap(), 3);
}

#[tokio::test]
async fn changed_fields_are_updated_and_audited_without_clear_numbers() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let id = resident_id(1, "19800101");
    let first = format!("{HEADER}{}", row("张三", &id, VILLAGE, "13812345678", ""));
    app.upload_residents(&office, first).await;
    let changed = format!(
        "{HEADER}{}",
        row("张三", &id, VILLAGE, "13987654321", "疆内有居住证")
    );
    let report = json_body(app.upload_residents(&office, changed).await).await;
    assert_eq!(report["updated"], 1, "{report}");
    let entry = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("resident.import_update"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let summary: Value = serde_json::from_str(&entry.summary).unwrap();
    assert_eq!(
        summary["phone"],
        json!({"from": "138****5678", "to": "139****4321"})
    );
    assert_eq!(
        summary["migrant_type"],
        json!({"from": "local", "to": "in_region_permit"})
    );
    assert!(!entry.summary.contains("13987654321") && !entry.summary.contains(&id));
    // A batch mixing a known resident (changed) with new ones: both kinds are told apart.
    let mixed = format!(
        "{HEADER}{}{}{}",
        row("张三丰", &id, VILLAGE, "", ""),
        row("新人甲", &resident_id(2, "19900101"), VILLAGE, "", ""),
        row("新人乙", &resident_id(3, "19900101"), VILLAGE, "", "")
    );
    let report = json_body(app.upload_residents(&office, mixed).await).await;
    assert_eq!(
        (
            report["imported"].clone(),
            report["updated"].clone(),
            report["unchanged"].clone()
        ),
        (2.into(), 1.into(), 0.into()),
        "{report}"
    );
    let renamed = json_body(
        app.upload_residents(
            &office,
            format!("{HEADER}{}", row("张三", &id, VILLAGE, "", "")),
        )
        .await,
    )
    .await;
    assert_eq!(renamed["updated"], 1);
    // A blank cell does not erase what is stored.
    let blank = format!("{HEADER}{}", row("张三", &id, VILLAGE, "", ""));
    let report = json_body(app.upload_residents(&office, blank).await).await;
    assert_eq!(report["unchanged"], 1);
}

#[tokio::test]
async fn an_id_registered_in_another_village_is_refused_with_that_village_named() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let id = resident_id(1, "19800101");
    app.upload_residents(
        &office,
        format!("{HEADER}{}", row("张三", &id, VILLAGE, "", "")),
    )
    .await;
    let report = json_body(
        app.upload_residents(
            &office,
            format!("{HEADER}{}", row("张三", &id, OTHER_VILLAGE, "", "")),
        )
        .await,
    )
    .await;
    assert_eq!(report["rejected_rows"][0]["code"], "registered_elsewhere");
    let reason = report["rejected_rows"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("阿勒玛勒村") && reason.contains(VILLAGE),
        "{reason}"
    );
    let response = app
        .post(
            "/api/v1/residents",
            &office,
            json!({"name": "张三", "id_number": id.to_lowercase(), "village_code": OTHER_VILLAGE}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("阿勒玛勒村")
    );
}

#[tokio::test]
async fn gbk_and_xlsx_files_import_like_utf8() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let text = format!(
        "{HEADER}{}{}",
        row(
            "张三",
            &resident_id(1, "19800101"),
            VILLAGE,
            "13812345678",
            "疆外"
        ),
        row("李四", &resident_id(2, "19900101"), VILLAGE, "", "外出上学")
    );
    let (gbk, _, _) = encoding_rs::GBK.encode(&text);
    let report = json_body(app.upload_residents(&office, gbk.into_owned()).await).await;
    assert_eq!(report["imported"], 2, "{report}");
    let stored = residents::Entity::find()
        .order_by_asc(residents::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(stored[0].name, "张三");
    assert_eq!(stored[1].migrant_type, "student_away");

    // XLSX, with the English headers in another order, an ID typed as text and one stored as a
    // number by Excel (its last digits are gone, so it must not be guessed at).
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    for (col, header) in ["village_code", "name", "id_number", "phone", "permit_since"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, col as u16, *header).unwrap();
    }
    sheet.write_string(1, 0, VILLAGE).unwrap();
    sheet.write_string(1, 1, "王五").unwrap();
    sheet
        .write_string(1, 2, resident_id(3, "19700101"))
        .unwrap();
    sheet.write_number(1, 3, 13700001111.0).unwrap();
    let date = rust_xlsxwriter::ExcelDateTime::from_ymd(2024, 3, 1).unwrap();
    sheet
        .write_datetime_with_format(
            1,
            4,
            &date,
            &rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd"),
        )
        .unwrap();
    sheet.write_string(2, 0, VILLAGE).unwrap();
    sheet.write_string(2, 1, "赵六").unwrap();
    sheet.write_number(2, 2, 654025197001010000.0).unwrap();
    let bytes = workbook.save_to_buffer().unwrap();
    let report = json_body(app.upload_residents(&office, bytes).await).await;
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["rejected_rows"][0]["code"], "id_as_number");
    assert_eq!(report["rejected_rows"][0]["line"], 3);
    let wang = residents::Entity::find()
        .filter(residents::Column::Name.eq("王五"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wang.phone_masked.as_deref(), Some("137****1111"));
    assert_eq!(wang.permit_since.unwrap().to_string(), "2024-03-01");
}

#[tokio::test]
async fn unusable_files_are_refused_whole_and_nothing_is_written() {
    let app = spawn_app_with(|s| s.import.max_upload_bytes = 4 * 1024 * 1024).await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    // Valid UTF-8 for more than the first megabyte, then a GBK-encoded row: the file is not
    // consistently encoded, and the thousands of good rows before it must not stay behind.
    let mut mixed = String::from(HEADER);
    for n in 0..25_000u32 {
        let birth = format!("19{:02}0101", 30 + n / 1000);
        mixed.push_str(&row("某某", &resident_id(n, &birth), VILLAGE, "", ""));
    }
    let mut mixed = mixed.into_bytes();
    assert!(mixed.len() > 1024 * 1024);
    mixed.extend_from_slice(
        &encoding_rs::GBK
            .encode(&row("张三", &resident_id(1, "20010101"), VILLAGE, "", ""))
            .0,
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unreadable_file", Vec::new()),
        ("no_rows", HEADER.as_bytes().to_vec()),
        (
            "missing_columns",
            "姓名,电话\n张三,13812345678\n".as_bytes().to_vec(),
        ),
        (
            "unreadable_file",
            b"\x00\x01\x02\x03binary\x00junk".to_vec(),
        ),
        (
            "unreadable_file",
            b"PK\x03\x04not really a workbook".to_vec(),
        ),
        ("unreadable_file", b"\x81\x30\xff\xfe\xfd\xfc".to_vec()),
        ("unreadable_file", mixed),
    ];
    for (code, body) in cases {
        let response = app.upload_residents(&office, body).await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            code
        );
    }
    assert_eq!(residents::Entity::find().count(&app.db).await.unwrap(), 0);
    // The mixed file got far enough to load in bulk: its rollback brings the indexes back.
    assert!(resident_indexes(&app.db).await.len() >= 4);
    let too_big = app
        .upload_residents(&office, vec![b'a'; 5 * 1024 * 1024])
        .await;
    assert_eq!(
        error_code(too_big, StatusCode::PAYLOAD_TOO_LARGE).await,
        "payload_too_large"
    );
}

#[tokio::test]
async fn a_cadre_imports_and_sees_only_their_own_village() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let (_, cadre) = app.user("cadre.a", Role::Cadre, VILLAGE).await;
    app.upload_residents(
        &office,
        format!(
            "{HEADER}{}",
            row("外村人", &resident_id(9, "19800101"), OTHER_VILLAGE, "", "")
        ),
    )
    .await;
    let csv = format!(
        "{HEADER}{}{}",
        row("本村人", &resident_id(1, "19800101"), VILLAGE, "", ""),
        row("他村人", &resident_id(2, "19800101"), OTHER_VILLAGE, "", "")
    );
    let report = json_body(app.upload_residents(&cadre, csv).await).await;
    assert_eq!(report["imported"], 1);
    assert_eq!(report["rejected_rows"][0]["code"], "out_of_scope");
    let page = json_body(app.get("/api/v1/residents", &cadre).await).await;
    let names: Vec<&str> = page["residents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["本村人"]);
    let other = residents::Entity::find()
        .filter(residents::Column::Name.eq("外村人"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let response = app
        .get(&format!("/api/v1/residents/{}", other.id), &cadre)
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app
        .get(&format!("/api/v1/residents?area={OTHER_VILLAGE}"), &cadre)
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "out_of_scope"
    );
}

#[tokio::test]
async fn full_numbers_only_for_roles_that_contact_residents_and_every_view_is_audited() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let (_, cadre) = app.user("cadre.a", Role::Cadre, VILLAGE).await;
    let (_, auditor) = app.user("auditor.a", Role::Auditor, COUNTY).await;
    let (_, clinic) = app.user("clinic.a", Role::Institution, TOWNSHIP).await;
    let id = resident_id(1, "19800101");
    let csv = format!("{HEADER}张三,{id},{VILLAGE},13812345678,张父,13900001111,,,\n");
    app.upload_residents(&office, csv).await;
    let resident = residents::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let path = format!("/api/v1/residents/{}", resident.id);

    for token in [&cadre, &auditor, &clinic] {
        let masked = json_body(app.get(&path, token).await).await;
        assert_eq!(masked["id_number"], resident.id_masked);
        assert_eq!(masked["phone"], "138****5678");
        if token == &clinic {
            // A clinic is not given the relative's contact at all.
            assert!(masked.get("relative_phone").is_none());
        } else {
            assert_eq!(masked["relative_phone"], "139****1111");
        }
        assert_eq!(masked["revealed"], false);
    }
    let views = || async {
        audit_log::Entity::find()
            .filter(audit_log::Column::Action.eq("resident.view_pii"))
            .all(&app.db)
            .await
            .unwrap()
    };
    assert!(views().await.is_empty(), "masked views are not PII views");

    let full = json_body(app.get(&format!("{path}?reveal=true"), &cadre).await).await;
    assert_eq!(full["id_number"], id);
    assert_eq!(full["phone"], "13812345678");
    assert_eq!(full["relative_phone"], "13900001111");
    assert_eq!(full["revealed"], true);
    let logged = views().await;
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].actor_name, "cadre.a");
    assert_eq!(
        logged[0].entity_id.as_deref(),
        Some(resident.id.to_string().as_str())
    );
    assert_eq!(logged[0].area_code.as_deref(), Some(VILLAGE));
    assert!(!logged[0].summary.contains(&id));

    for token in [&auditor, &clinic] {
        let response = app.get(&format!("{path}?reveal=true"), token).await;
        assert_eq!(
            error_code(response, StatusCode::FORBIDDEN).await,
            "forbidden"
        );
    }
    let list = json_body(app.get("/api/v1/residents", &clinic).await).await;
    assert_eq!(list["residents"][0]["id_number"], resident.id_masked);
    assert_eq!(views().await.len(), 1);
}

#[tokio::test]
async fn residents_are_filtered_by_cohort_type_situation_phone_name_and_exact_id() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let csv = [
        format!("幼儿,{},{VILLAGE},,,,,,\n", resident_id(1, "20200101")),
        format!(
            "学生,{},{VILLAGE},13800000002,,,外出上学,,\n",
            resident_id(2, "20120101")
        ),
        format!(
            "成人,{},{OTHER_VILLAGE},13800000003,,,疆外,,\n",
            resident_id(3, "19800101")
        ),
        format!(
            "老人,{},{VILLAGE},,,,,行动不便,\n",
            resident_id(4, "19510102")
        ),
        format!("高龄,{},{VILLAGE},,,,,,\n", resident_id(5, "19400101")),
    ]
    .iter()
    .fold(HEADER.to_owned(), |acc, line| acc + line);
    let report = json_body(app.upload_residents(&office, csv).await).await;
    assert_eq!(report["imported"], 5, "{report}");
    let names = |page: &Value| -> Vec<String> {
        page["residents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = |query: &'static str| {
        let app = &app;
        let office = office.clone();
        async move {
            json_body(
                app.get(&format!("/api/v1/residents?{query}"), &office)
                    .await,
            )
            .await
        }
    };
    assert_eq!(names(&get("cohort=0-6&on=2026-01-01").await), vec!["幼儿"]);
    assert_eq!(names(&get("cohort=7-14&on=2026-01-01").await), vec!["学生"]);
    // Born 1951-01-02: 74 on 2026-01-01, 75 a day later — 65-79 either way; 80+ is 高龄.
    assert_eq!(
        names(&get("cohort=65-79&on=2026-01-01").await),
        vec!["老人"]
    );
    assert_eq!(
        names(&get("cohort=80%2B&on=2026-01-01").await),
        vec!["高龄"]
    );
    assert_eq!(
        names(&get("migrant_type=out_of_region").await),
        vec!["成人"]
    );
    assert_eq!(names(&get("migrant_type=外出上学").await), vec!["学生"]);
    assert_eq!(names(&get("special=mobility").await), vec!["老人"]);
    assert_eq!(names(&get("has_phone=true").await), vec!["学生", "成人"]);
    assert_eq!(names(&get("q=老").await), vec!["老人"]);
    assert_eq!(names(&get("area=654025101000").await), vec!["成人"]);
    let lookup = resident_id(3, "19800101").replace('X', "x");
    let found = json_body(
        app.get(&format!("/api/v1/residents?id_number={lookup}"), &office)
            .await,
    )
    .await;
    assert_eq!(names(&found), vec!["成人"]);
    let first = get("limit=2").await;
    assert_eq!(names(&first).len(), 2);
    let after = first["next_after"].as_i64().unwrap();
    let rest = json_body(
        app.get(
            &format!("/api/v1/residents?limit=10&after={after}"),
            &office,
        )
        .await,
    )
    .await;
    assert_eq!(names(&rest).len(), 3);
    for (query, code) in [
        ("cohort=5-9", "invalid_cohort"),
        ("id_number=123", "invalid_id_number"),
        ("migrant_type=x", "invalid_value"),
    ] {
        let response = app
            .get(&format!("/api/v1/residents?{query}"), &office)
            .await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            code,
            "{query}"
        );
    }
}

#[tokio::test]
async fn residents_are_registered_changed_and_moved_with_reasons_on_record() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, township) = app.user("township.r", Role::Township, TOWNSHIP).await;
    let id = resident_id(1, "19800101");
    for (body, code) in [
        (
            json!({"name": "张三", "id_number": "654025198001010011", "village_code": VILLAGE}),
            "invalid_id_number",
        ),
        (
            json!({"name": "张三", "id_number": resident_id(2, "20991231"), "village_code": VILLAGE}),
            "invalid_id_number",
        ),
        (
            json!({"name": "张三", "id_number": id, "village_code": TOWNSHIP}),
            "not_a_village",
        ),
        (
            json!({"name": "张三", "id_number": id, "village_code": VILLAGE, "phone": "12345"}),
            "invalid_phone",
        ),
        (
            json!({"name": " ", "id_number": id, "village_code": VILLAGE}),
            "invalid_value",
        ),
        (
            json!({"name": "张三", "id_number": id, "village_code": VILLAGE, "special": "deceased"}),
            "invalid_special",
        ),
    ] {
        let response = app.post("/api/v1/residents", &township, body.clone()).await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            code,
            "{body}"
        );
    }
    let response = app
        .post(
            "/api/v1/residents",
            &township,
            json!({"name": "张三", "id_number": id, "village_code": VILLAGE, "phone": "13812345678", "language": "ug"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["phone"], "138****5678");
    assert_eq!(created["language"], "ug");
    let path = format!("/api/v1/residents/{}", created["id"]);

    let patched = json_body(
        app.patch(
            &path,
            &township,
            json!({"phone": null, "relative_phone": "13900001111", "phone_opt_out": true}),
        )
        .await,
    )
    .await;
    assert!(patched["phone"].is_null());
    assert_eq!(patched["relative_phone"], "139****1111");
    assert_eq!(patched["phone_opt_out"], true);
    let response = app
        .patch(&path, &township, json!({"special": "moved_out"}))
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_special"
    );

    let moved = json_body(
        app.post(
            &format!("{path}/move"),
            &township,
            json!({"village_code": "654025100202", "reason": "婚嫁迁入"}),
        )
        .await,
    )
    .await;
    assert_eq!(moved["village_code"], "654025100202");
    let response = app
        .post(
            &format!("{path}/move"),
            &township,
            json!({"village_code": OTHER_VILLAGE, "reason": "x"}),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "out_of_scope"
    );

    let dead = json_body(
        app.post(
            &format!("{path}/deceased"),
            &township,
            json!({"reason": "病故", "date": "2026-03-01"}),
        )
        .await,
    )
    .await;
    assert_eq!(dead["special"], "deceased");
    let again = app
        .post(
            &format!("{path}/deceased"),
            &township,
            json!({"reason": "病故"}),
        )
        .await;
    assert_eq!(error_code(again, StatusCode::CONFLICT).await, "conflict");

    let actions: Vec<(String, Value)> = audit_log::Entity::find()
        .filter(audit_log::Column::Entity.eq("resident"))
        .order_by_asc(audit_log::Column::Id)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, serde_json::from_str(&e.summary).unwrap()))
        .collect();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "resident.create",
            "resident.update",
            "resident.move_household",
            "resident.move_household",
            "resident.mark_deceased"
        ]
    );
    assert_eq!(
        actions[1].1["phone"],
        json!({"from": "138****5678", "to": null})
    );
    assert_eq!(actions[2].1["reason"], "婚嫁迁入");
    assert_eq!(actions[4].1["reason"], "病故");
    assert_eq!(actions[4].1["date"], "2026-03-01");
}

#[tokio::test]
async fn the_migrant_book_groups_by_type_and_downloads_as_csv_and_xlsx() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let (_, cadre) = app.user("cadre.a", Role::Cadre, VILLAGE).await;
    let (_, auditor) = app.user("auditor.a", Role::Auditor, COUNTY).await;
    let csv = format!(
        "{HEADER}{}{}{}{}",
        row("本地人", &resident_id(1, "19800101"), VILLAGE, "", ""),
        row(
            "外出甲",
            &resident_id(2, "19800101"),
            VILLAGE,
            "13800000002",
            "疆外"
        ),
        row("外出乙", &resident_id(3, "19800101"), VILLAGE, "", "疆外"),
        row(
            "上学丙",
            &resident_id(4, "20050101"),
            OTHER_VILLAGE,
            "",
            "外出上学"
        ),
    );
    app.upload_residents(&office, csv).await;
    let book = json_body(app.get("/api/v1/migrant-book", &office).await).await;
    let groups = book["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 5, "one group per migrant type");
    let out = groups
        .iter()
        .find(|g| g["migrant_type"] == "out_of_region")
        .unwrap();
    assert_eq!(out["label"], "疆外");
    assert_eq!(out["count"], 2);
    let jia = out["residents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "外出甲")
        .unwrap();
    assert_eq!(jia["phone"], "138****0002");
    let cadre_book = json_body(app.get("/api/v1/migrant-book", &cadre).await).await;
    let total: u64 = cadre_book["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2, "the student lives in another village");

    let response = app
        .get(
            &format!("/api/v1/migrant-book?format=csv&area={VILLAGE}"),
            &office,
        )
        .await;
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"));
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("流动类型,户籍村（社区）代码,姓名"));
    assert_eq!(lines.len(), 3);
    assert!(
        lines[1].starts_with(&format!("疆外,{VILLAGE},外出乙"))
            || lines[1].starts_with(&format!("疆外,{VILLAGE},外出甲"))
    );

    let response = app
        .get("/api/v1/migrant-book?format=xlsx&reveal=true", &cadre)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap().to_vec();
    use calamine::Reader;
    let mut workbook = calamine::Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(workbook.sheet_names()[2], "疆外");
    let sheet = workbook.worksheet_range("疆外").unwrap();
    assert_eq!(sheet.get_value((0, 1)).unwrap().to_string(), "姓名");
    let phones: Vec<String> = (1..sheet.height())
        .map(|r| sheet.get_value((r as u32, 5)).unwrap().to_string())
        .collect();
    assert!(phones.contains(&"13800000002".to_owned()), "{phones:?}");
    let exports = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq("resident.export_pii"))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].actor_name, "cadre.a");

    let response = app.get("/api/v1/migrant-book?reveal=true", &auditor).await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let response = app.get("/api/v1/migrant-book?format=pdf", &office).await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_format"
    );
}

#[tokio::test]
async fn a_large_gbk_file_decodes_across_every_read_boundary() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    // Two-byte characters everywhere, so reads of any size split some of them.
    let names = ["阿依古丽", "热合曼", "张伟", "叶尔江", "玛依拉"];
    let mut text = String::from(HEADER);
    for n in 0..30_000u32 {
        let birth = format!("19{:02}0101", 30 + n / 1000);
        let name = names[n as usize % names.len()];
        text.push_str(&format!(
            "{name},{},{VILLAGE},,,,疆外,,\n",
            resident_id(n, &birth)
        ));
    }
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable && gbk.len() > 1024 * 1024);
    let report = json_body(app.upload_residents(&office, gbk.into_owned()).await).await;
    assert_eq!(
        (report["imported"].clone(), report["rejected"].clone()),
        (30_000.into(), 0.into()),
        "{}",
        report["rejected_rows"][0]
    );
    let last = residents::Entity::find()
        .order_by_desc(residents::Column::Id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.name, names[29_999 % names.len()]);
    assert_eq!(last.migrant_type, "out_of_region");
}

#[tokio::test]
async fn a_large_first_import_loads_in_bulk_and_keeps_every_rule() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.r", Role::Office, COUNTY).await;
    let indexes = resident_indexes(&app.db).await;
    assert!(indexes.len() >= 4, "{indexes:?}");
    // Enough rows for an import into an empty registry to drop its indexes and load in bulk,
    // with rows refused both before and after that point.
    let id = |n: u32| resident_id(n, &format!("19{:02}0101", 30 + n / 1000));
    let file = |changed: bool| {
        let mut csv = String::from(HEADER);
        for n in 0..15_000u32 {
            let name = if changed && n == 12_001 {
                "改名"
            } else {
                "某某"
            };
            let village = if changed && n == 12_002 {
                OTHER_VILLAGE
            } else {
                VILLAGE
            };
            let phone = if n % 2 == 0 {
                format!("138{n:08}")
            } else {
                String::new()
            };
            csv.push_str(&row(name, &id(n), village, &phone, ""));
            if n == 3_000 || n == 13_000 {
                csv.push_str(&row("重复", &id(n - 2_000), VILLAGE, "", ""));
            }
        }
        csv.push_str(&row("赵六", "654025198001010011", VILLAGE, "", ""));
        csv.push_str(&row("钱七", &id(20_000), "654025100299", "", ""));
        csv
    };
    let report = json_body(app.upload_residents(&office, file(false)).await).await;
    assert_eq!(
        (report["imported"].clone(), report["rejected"].clone()),
        (15_000.into(), 4.into()),
        "{report}"
    );
    let codes: Vec<&str> = report["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec![
            "duplicate_in_file",
            "duplicate_in_file",
            "id_check_digit",
            "unknown_village"
        ]
    );
    assert_eq!(report["rejected_rows"][1]["line"], 13_004);
    assert_eq!(resident_indexes(&app.db).await, indexes);
    assert_eq!(
        residents::Entity::find().count(&app.db).await.unwrap(),
        15_000
    );
    let last = residents::Entity::find()
        .order_by_desc(residents::Column::Id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last.id_masked,
        format!("{}**********{}", &id(14_999)[..4], &id(14_999)[14..])
    );
    assert_eq!(last.phone_masked, None);
    let phones = residents::Entity::find()
        .filter(residents::Column::PhoneIndex.is_not_null())
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(phones, 7_500);
    // The household village's foreign key holds again (PostgreSQL drops it while loading).
    let orphan = app
        .db
        .execute_unprepared(
            "UPDATE residents SET village_code = '659999999999' \
             WHERE id = (SELECT MIN(id) FROM residents)",
        )
        .await
        .expect_err("a village that is not registered is refused");
    assert!(
        orphan.to_string().to_lowercase().contains("foreign key"),
        "{orphan}"
    );

    // Loaded in bulk or not, the registry answers a re-import row by row.
    let again = json_body(app.upload_residents(&office, file(true)).await).await;
    assert_eq!(
        (
            again["imported"].clone(),
            again["updated"].clone(),
            again["unchanged"].clone(),
            again["rejected"].clone()
        ),
        (0.into(), 1.into(), 14_998.into(), 5.into()),
        "{again}"
    );
    let elsewhere = again["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "registered_elsewhere")
        .expect("the resident registered in another village is refused");
    assert_eq!(elsewhere["line"], 12_005);
    let renamed = residents::Entity::find()
        .filter(residents::Column::Name.eq("改名"))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(renamed, 1);
    assert_eq!(resident_indexes(&app.db).await, indexes);
}

#[tokio::test]
async fn every_column_is_stored_as_given_and_blank_ones_stay_empty() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.f", Role::Office, COUNTY).await;
    let full = resident_id(1, "19800229");
    let blank = resident_id(2, "19900101");
    let csv = format!(
        "name,id_number,village_code,phone,relative_name,relative_phone,relative_relation,\
         migrant_type,current_address,permit_since,special,wechat_openid,email,language\n\
         阿依古丽,{full},{VILLAGE},13812345678,买买提,13900001111,儿子,in_region_permit,\
         乌鲁木齐市天山区,2023-05-06,remote_pastoral,oABC_123-x,Ayi@Example.cn,ug\n\
         李四,{blank},{VILLAGE},,,,,,,,,,,\n\
         王五,{},{VILLAGE},,,,,,,0000-01-01,,,,\n",
        resident_id(3, "19900101")
    );
    let report = json_body(app.upload_residents(&office, csv).await).await;
    assert_eq!(
        (&report["imported"], &report["rejected"]),
        (&json!(2), &json!(1)),
        "{report}"
    );
    assert_eq!(report["rejected_rows"][0]["code"], "invalid_permit_since");

    let stored = |masked: String| {
        let db = app.db.clone();
        async move {
            residents::Entity::find()
                .filter(residents::Column::IdMasked.eq(masked))
                .one(&db)
                .await
                .unwrap()
                .expect("imported")
        }
    };
    let masked = |id: &str| format!("{}**********{}", &id[..4], &id[14..]);
    let a = stored(masked(&full)).await;
    assert_eq!(
        (
            a.name.as_str(),
            a.sex.as_str(),
            a.birth_date.to_string(),
            a.village_code.as_str(),
            a.language.as_str(),
            a.migrant_type.as_str(),
        ),
        (
            "阿依古丽",
            "M",
            "1980-02-29".to_owned(),
            VILLAGE,
            "ug",
            "in_region_permit"
        )
    );
    assert_eq!(
        a.permit_since.map(|d| d.to_string()).as_deref(),
        Some("2023-05-06")
    );
    assert_eq!(a.special.as_deref(), Some("remote_pastoral"));
    assert_eq!(a.current_address.as_deref(), Some("乌鲁木齐市天山区"));
    assert_eq!(a.phone_masked.as_deref(), Some("138****5678"));
    assert_eq!(a.relative_name.as_deref(), Some("买买提"));
    assert_eq!(a.relative_relation.as_deref(), Some("儿子"));
    assert_eq!(a.relative_phone_masked.as_deref(), Some("139****1111"));
    assert_eq!(a.wechat_openid.as_deref(), Some("oABC_123-x"));
    assert_eq!(a.email.as_deref(), Some("ayi@example.cn"));
    let privacy = &app.state.privacy;
    assert_eq!(a.id_index, privacy.blind_index(Field::ResidentId, &full));
    assert_eq!(
        (a.phone_index, a.relative_phone_index),
        (
            Some(privacy.blind_index(Field::Phone, "13812345678")),
            Some(privacy.blind_index(Field::Phone, "13900001111"))
        )
    );
    assert_eq!(
        (
            privacy.decrypt(Field::ResidentId, &a.id_cipher).unwrap(),
            privacy
                .decrypt(Field::Phone, &a.phone_cipher.unwrap())
                .unwrap(),
            privacy
                .decrypt(Field::Phone, &a.relative_phone_cipher.unwrap())
                .unwrap()
        ),
        (full.clone(), "13812345678".into(), "13900001111".into())
    );
    assert!(!a.phone_opt_out && !a.relative_opt_out && !a.wechat_opt_out && !a.email_opt_out);
    assert_eq!(a.created_at, a.updated_at);

    let b = stored(masked(&blank)).await;
    assert_eq!(
        (b.language.as_str(), b.migrant_type.as_str()),
        ("zh", "local")
    );
    assert_eq!(
        (
            b.permit_since,
            b.special,
            b.current_address,
            b.phone_cipher,
            b.phone_index,
            b.phone_masked,
        ),
        (None, None, None, None, None, None)
    );
    assert_eq!(
        (
            b.relative_name,
            b.relative_relation,
            b.relative_phone_cipher,
            b.relative_phone_index,
            b.relative_phone_masked,
            b.wechat_openid,
            b.email,
        ),
        (None, None, None, None, None, None, None)
    );

    // The full numbers decrypt back to what the file said, for a role allowed to see them.
    let (_, cadre) = app.user("cadre.f", Role::Cadre, VILLAGE).await;
    let path = format!("/api/v1/residents/{}?reveal=true", a.id);
    let detail = json_body(app.get(&path, &cadre).await).await;
    assert_eq!(
        (
            &detail["id_number"],
            &detail["phone"],
            &detail["relative_phone"]
        ),
        (&json!(full), &json!("13812345678"), &json!("13900001111")),
        "{detail}"
    );
}

#[tokio::test]
async fn rejected_rows_in_an_upload_are_masked_cut_and_say_what_is_allowed() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.m", Role::Office, COUNTY).await;
    let id = resident_id(1, "19800101");
    let long_address = "长".repeat(5000);
    let csv = format!(
        "姓名,身份证号,户籍地区划代码,联系电话,流动类型,特殊情况,现居住地\n\
         张三,{id},{VILLAGE},13812345678,去外地,,\n\
         李四,{id2},{VILLAGE},13900001111,,卧床,\n\
         王五,{id3},{VILLAGE},,,,{long_address}\n",
        id2 = resident_id(2, "19800101"),
        id3 = resident_id(3, "19800101"),
    );
    let report = json_body(app.upload_residents(&office, csv).await).await;
    assert_eq!(report["rejected"], 3, "{report}");
    let rows = report["rejected_rows"].as_array().unwrap();
    let body = report.to_string();
    assert!(!body.contains(&id), "a full ID in the answer: {body}");
    assert!(!body.contains("13812345678") && !body.contains("13900001111"));
    assert_eq!(
        rows[0]["values"][1],
        format!("{}**********{}", &id[..4], &id[14..])
    );
    assert_eq!(rows[0]["values"][3], "138****5678");
    assert_eq!(rows[0]["code"], "invalid_migrant_type");
    let reason = rows[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("去外地") && reason.contains("疆内有居住证") && reason.contains("外出上学"),
        "{reason}"
    );
    assert_eq!(rows[1]["code"], "invalid_special");
    let reason = rows[1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("行动不便") && reason.contains("偏远牧区"),
        "{reason}"
    );
    // The address is too long for the registry; the answer repeats only its beginning.
    assert_eq!(rows[2]["code"], "invalid_address");
    let shown = rows[2]["values"][6].as_str().unwrap();
    assert_eq!(shown.chars().count(), 201, "{shown}");
    assert!(shown.ends_with('…'));
}

#[tokio::test]
async fn sex_and_birth_date_columns_are_checked_against_the_id() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.s", Role::Office, COUNTY).await;
    // `resident_id` numbers the sequence by `n`: odd is male.
    let male = resident_id(1, "19800101");
    let female = resident_id(2, "19900315");
    let mut csv = String::from("姓名,身份证号,户籍地区划代码,性别,出生日期\n");
    csv.push_str(&format!("甲,{male},{VILLAGE},男,1980-01-01\n"));
    csv.push_str(&format!("乙,{female},{VILLAGE},F,1990/03/15\n"));
    csv.push_str(&format!(
        "丙,{},{VILLAGE},1,19800101\n",
        resident_id(3, "19800101")
    ));
    csv.push_str(&format!(
        "丁,{},{VILLAGE},女,\n",
        resident_id(5, "19800101")
    ));
    csv.push_str(&format!(
        "戊,{},{VILLAGE},,1980-01-02\n",
        resident_id(7, "19800101")
    ));
    csv.push_str(&format!(
        "己,{},{VILLAGE},未知,\n",
        resident_id(9, "19800101")
    ));
    csv.push_str(&format!(
        "庚,{},{VILLAGE},,去年\n",
        resident_id(11, "19800101")
    ));
    let report = json_body(app.upload_residents(&office, csv).await).await;
    assert_eq!(report["imported"], 3, "{report}");
    let codes: Vec<&str> = report["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "sex_mismatch",
            "birth_date_mismatch",
            "invalid_sex",
            "invalid_birth_date"
        ]
    );
    let reason = report["rejected_rows"][1]["reason"].as_str().unwrap();
    assert!(reason.contains("1980-01-01"), "{reason}");

    // An XLSX date cell is read as the date it shows.
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    for (col, header) in ["姓名", "身份证号", "户籍地区划代码", "出生日期"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, col as u16, *header).unwrap();
    }
    let date_format = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd");
    for (row, (n, birth, shown)) in [
        (13, "19800101", (1980, 1, 1)),
        (15, "19800101", (1980, 1, 3)),
    ]
    .into_iter()
    .enumerate()
    {
        let row = row as u32 + 1;
        sheet.write_string(row, 0, "辛").unwrap();
        sheet.write_string(row, 1, resident_id(n, birth)).unwrap();
        sheet.write_string(row, 2, VILLAGE).unwrap();
        let date = rust_xlsxwriter::ExcelDateTime::from_ymd(shown.0, shown.1, shown.2).unwrap();
        sheet
            .write_datetime_with_format(row, 3, &date, &date_format)
            .unwrap();
    }
    let report = json_body(
        app.upload_residents(&office, workbook.save_to_buffer().unwrap())
            .await,
    )
    .await;
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["rejected_rows"][0]["code"], "birth_date_mismatch");
}

#[tokio::test]
async fn a_unicode_text_file_from_excel_imports() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.u", Role::Office, COUNTY).await;
    // Excel's "Unicode 文本": UTF-16LE with a byte-order mark, tab-separated, CRLF.
    let text = format!(
        "姓名\t身份证号\t户籍地区划代码\t语言\r\n玛依拉·胡安\t{}\t{VILLAGE}\t哈萨克语\r\n",
        resident_id(1, "19800101")
    );
    let mut bytes = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    let report = json_body(app.upload_residents(&office, bytes).await).await;
    assert_eq!(report["imported"], 1, "{report}");
    let stored = residents::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.name, "玛依拉·胡安");
    assert_eq!(stored.language, "kk");
    // An old .xls workbook is told apart from junk, with what to do.
    let mut xls = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1".to_vec();
    xls.resize(4096, 0);
    let response = app.upload_residents(&office, xls).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains(".xlsx"),
        "{body}"
    );
}

#[tokio::test]
async fn name_search_ignores_the_marks_between_name_parts_and_treats_wildcards_literally() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.n", Role::Office, COUNTY).await;
    let csv = format!(
        "姓名,身份证号,户籍地区划代码\n玛依拉•胡安,{},{VILLAGE}\n张三,{},{VILLAGE}\n百分%号,{},{VILLAGE}\n",
        resident_id(1, "19800101"),
        resident_id(2, "19800101"),
        resident_id(3, "19800101"),
    );
    let report = json_body(app.upload_residents(&office, csv).await).await;
    assert_eq!(report["imported"], 3, "{report}");
    // Stored with the middle dot, whatever the file used.
    assert!(
        residents::Entity::find()
            .filter(residents::Column::Name.eq("玛依拉·胡安"))
            .one(&app.db)
            .await
            .unwrap()
            .is_some()
    );
    let names = |q: &'static str| {
        let app = &app;
        let office = office.clone();
        async move {
            let query = serde_urlencoded_q(q);
            let page = json_body(
                app.get(&format!("/api/v1/residents?q={query}"), &office)
                    .await,
            )
            .await;
            page["residents"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"))
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    for q in [
        "玛依拉胡安",
        "玛依拉•胡安",
        "玛依拉.胡安",
        "玛依拉·胡安",
        "玛依拉 胡安",
        "拉胡",
    ] {
        assert_eq!(names(q).await, ["玛依拉·胡安"], "{q}");
    }
    assert_eq!(names("%").await, ["百分%号"]);
    assert!(names("_").await.is_empty());
    assert!(names("张_").await.is_empty());
    assert_eq!(names("张").await, ["张三"]);
}

/// Percent-encodes a query value.
fn serde_urlencoded_q(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn key_group_tags_load_in_bulk_with_a_reason_for_each_bad_row() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.t", Role::Office, COUNTY).await;
    let (_, cadre) = app.user("cadre.t", Role::Cadre, VILLAGE).await;
    let here = [resident_id(1, "19500101"), resident_id(2, "19600101")];
    let there = resident_id(3, "19500101");
    let csv = format!(
        "姓名,身份证号,户籍地区划代码\n甲,{},{VILLAGE}\n乙,{},{VILLAGE}\n丙,{there},{OTHER_VILLAGE}\n",
        here[0], here[1]
    );
    assert_eq!(
        json_body(app.upload_residents(&office, csv).await).await["imported"],
        3
    );

    let upload = |token: String, body: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .post(app.url("/api/v1/residents/tags/import"))
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap();
            json_body(response).await
        }
    };
    let file = format!(
        "身份证号,标签,操作\n{a},高血压、糖尿病,\n{b},diabetes; 高血压,add\n{there},高血压,\n\
         {a},感冒,\n{missing},高血压,\n{b},糖尿病,删除\n{a},高血压,跳过\n",
        a = here[0],
        b = here[1],
        missing = resident_id(9, "19800101"),
    );
    let report = upload(cadre.clone(), file).await;
    assert_eq!(
        (
            &report["added"],
            &report["removed"],
            &report["unchanged"],
            &report["rejected"]
        ),
        (&json!(4), &json!(1), &json!(0), &json!(4)),
        "{report}"
    );
    let codes: Vec<&str> = report["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    // The resident of another village is told apart from nobody.
    assert_eq!(
        codes,
        ["not_found", "invalid_tag", "not_found", "invalid_action"]
    );
    assert_eq!(
        report["rejected_rows"][0]["reason"],
        report["rejected_rows"][2]["reason"]
    );
    assert!(
        report["rejected_rows"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("肺结核")
    );
    assert!(!report.to_string().contains(&here[0]), "{report}");
    let tags = |id: &str| {
        let app = &app;
        let id = id.to_owned();
        async move {
            let resident = residents::Entity::find()
                .filter(residents::Column::IdMasked.eq(format!(
                    "{}**********{}",
                    &id[..4],
                    &id[14..]
                )))
                .one(&app.db)
                .await
                .unwrap()
                .unwrap();
            let mut tags: Vec<String> = entities::resident_tags::Entity::find()
                .filter(entities::resident_tags::Column::ResidentId.eq(resident.id))
                .all(&app.db)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.tag)
                .collect();
            tags.sort();
            tags
        }
    };
    assert_eq!(tags(&here[0]).await, ["diabetes", "hypertension"]);
    assert_eq!(tags(&here[1]).await, ["hypertension"]);
    assert!(tags(&there).await.is_empty());
    // Loading the same again changes nothing.
    let again = upload(
        office.clone(),
        format!("身份证号,标签\n{},高血压\n", here[0]),
    )
    .await;
    assert_eq!(
        (&again["added"], &again["unchanged"]),
        (&json!(0), &json!(1)),
        "{again}"
    );
    let audited = entities::audit_log::Entity::find()
        .filter(entities::audit_log::Column::Action.eq("resident.import_tags"))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(audited, 3);
}
