//! Campaigns: set-up rules, enrolment into progress rows (cohorts on the reference date,
//! exemptions, later registry changes), key-group tags and worklists.

use chrono::{Datelike, NaiveDate};
use entities::enrolments;
use entities::users::Role;
use outreach::auth::Actor;
use outreach::flows;
use outreach::registry::{self, MigrantType, NewResident, Special};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::{
    OTHER_VILLAGE, TOWNSHIP, TestApp, VILLAGE, error_code, resident_id, spawn_app,
};

/// Registers a resident through the service and returns the id.
pub async fn add_resident(
    app: &TestApp,
    id_number: String,
    village: &str,
    migrant: Option<MigrantType>,
    special: Option<Special>,
) -> i32 {
    flows::registry::create(
        &app.db,
        &app.state.privacy,
        &Actor::cli(),
        NewResident {
            name: format!("居民{}", &id_number[14..17]),
            id_number,
            village_code: village.to_owned(),
            phone: Some("13800001111".to_owned()),
            relative_name: None,
            relative_relation: None,
            relative_phone: None,
            migrant_type: migrant,
            permit_since: None,
            special,
            current_address: None,
            wechat_openid: None,
            email: None,
            language: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("create resident: {e}"))
    .id
}

pub async fn row(app: &TestApp, campaign: i32, resident: i32) -> Option<enrolments::Model> {
    enrolments::Entity::find()
        .filter(enrolments::Column::CampaignId.eq(campaign))
        .filter(enrolments::Column::ResidentId.eq(resident))
        .one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_campaign_gets_the_plans_calendar_and_targets() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let response = app
        .post("/api/v1/campaigns", &admin, json!({"year": 2027}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], "2027年全民健康体检");
    assert_eq!(body["status"], "draft");
    assert_eq!(body["reference_date"], "2027-01-01");
    assert_eq!(body["timezone"], "Asia/Shanghai");
    assert_eq!(
        body["quiet_hours"],
        json!({"start": "21:00", "end": "08:00"})
    );
    assert_eq!(
        body["cohorts"],
        json!(["0-6", "7-14", "15-64", "65-79", "80+"])
    );
    let phases: Vec<(String, String, String)> = body["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().unwrap().to_owned(),
                p["from"].as_str().unwrap().to_owned(),
                p["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("survey", "2027-01-01", "2027-01-31"),
            ("kickoff", "2027-02-01", "2027-02-28"),
            ("exams", "2027-01-01", "2027-09-30"),
            ("catch_up", "2027-10-01", "2027-10-31"),
            ("acceptance", "2027-11-01", "2027-11-30"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    assert_eq!(body["phases"][3]["label"], "查漏补检");
    assert_eq!(
        body["targets"],
        json!([
            {"group": "65+", "percent": 95.0},
            {"group": "hypertension", "percent": 95.0},
            {"group": "diabetes", "percent": 95.0},
        ])
    );

    let again = app
        .post("/api/v1/campaigns", &admin, json!({"year": 2027}))
        .await;
    assert_eq!(error_code(again, StatusCode::CONFLICT).await, "conflict");

    for (body, code) in [
        (
            json!({"year": 2028, "timezone": "Europe/Paris"}),
            "invalid_timezone",
        ),
        (
            json!({"year": 2028, "quiet_hours": {"start": "25:00", "end": "08:00"}}),
            "invalid_quiet_hours",
        ),
        (
            json!({"year": 2028, "phases": {"catch_up": {"from": "2028-09-01", "to": "2028-10-31"}}}),
            "invalid_phase",
        ),
        (
            json!({"year": 2028, "phases": {"exams": {"from": "2028-09-30", "to": "2028-01-01"}}}),
            "invalid_phase",
        ),
        (
            json!({"year": 2028, "targets": [{"group": "胖人", "percent": 90}]}),
            "invalid_target",
        ),
        (json!({"year": 2028, "cohorts": []}), "invalid_cohorts"),
        (
            json!({"year": 2028, "reference_date": "2027-12-31"}),
            "invalid_reference_date",
        ),
    ] {
        let response = app.post("/api/v1/campaigns", &admin, body.clone()).await;
        assert_eq!(
            error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            code,
            "{body}"
        );
    }

    // Xinjiang time and a key-group target in Chinese.
    let response = app
        .post(
            "/api/v1/campaigns",
            &admin,
            json!({"year": 2028, "timezone": "Asia/Urumqi", "targets": [{"group": "高血压", "percent": 90}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["timezone"], "Asia/Urumqi");
    assert_eq!(
        body["targets"],
        json!([{"group": "hypertension", "percent": 90.0}])
    );
    assert_eq!(body["phases"][1]["to"], "2028-02-29", "leap year");
}

#[tokio::test]
async fn opening_enrols_residents_by_cohort_on_the_reference_date() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let admin = app.office_token().await;
    // The campaign of the latest year whose 1 March is past (so everyone below is born by
    // today), its exam window running into the next year so that it can still be opened.
    let today = registry::today();
    let year = if today >= NaiveDate::from_ymd_opt(today.year(), 3, 2).unwrap() {
        today.year()
    } else {
        today.year() - 1
    };
    let reference = NaiveDate::from_ymd_opt(year, 2, 28).unwrap();
    let born = |years_before: i32, month_day: &str| format!("{}{month_day}", year - years_before);
    // Ages on the reference date (28 February): 7 on the birthday itself, 6 the day before
    // it; born on a 29 February is a year short of the years since (the birthday is not yet
    // past on the 28th); 15, 65 and 80 on the day.
    let leap_year = (year - 15..=year - 12)
        .rev()
        .find(|y| NaiveDate::from_ymd_opt(*y, 2, 29).is_some())
        .unwrap();
    let on_birthday =
        add_resident(&app, resident_id(1, &born(7, "0228")), VILLAGE, None, None).await;
    let day_after_ref =
        add_resident(&app, resident_id(2, &born(7, "0301")), VILLAGE, None, None).await;
    let leap = add_resident(
        &app,
        resident_id(3, &format!("{leap_year}0229")),
        VILLAGE,
        None,
        None,
    )
    .await;
    let fifteen = add_resident(
        &app,
        resident_id(10, &born(15, "0228")),
        VILLAGE,
        None,
        None,
    )
    .await;
    let sixty_five =
        add_resident(&app, resident_id(4, &born(65, "0228")), VILLAGE, None, None).await;
    let almost_80 =
        add_resident(&app, resident_id(5, &born(80, "0301")), VILLAGE, None, None).await;
    let eighty = add_resident(&app, resident_id(6, &born(80, "0228")), VILLAGE, None, None).await;
    let after_reference =
        add_resident(&app, resident_id(7, &born(0, "0301")), VILLAGE, None, None).await;
    let dead = add_resident(&app, resident_id(8, "19800101"), VILLAGE, None, None).await;
    flows::registry::mark(
        &app.db,
        &Actor::cli(),
        dead,
        Special::Deceased,
        registry::StatusChange {
            reason: "病故".into(),
            date: None,
        },
    )
    .await
    .unwrap();
    let bedridden = add_resident(
        &app,
        resident_id(9, "19500101"),
        OTHER_VILLAGE,
        Some(MigrantType::Local),
        Some(Special::Mobility),
    )
    .await;

    let created: Value = app
        .post(
            "/api/v1/campaigns",
            &admin,
            json!({"year": year, "reference_date": reference,
                   "cohorts": ["0-6", "7-14", "15-64", "65-79", "80+"],
                   "phases": {
                       "exams": {"from": format!("{year}-01-01"), "to": format!("{}-12-29", year + 1)},
                       "catch_up": {"from": format!("{}-12-30", year + 1), "to": format!("{}-12-30", year + 1)},
                       "acceptance": {"from": format!("{}-12-31", year + 1), "to": format!("{}-12-31", year + 1)},
                   }}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap() as i32;
    let opened = app
        .post(&format!("/api/v1/campaigns/{id}/open"), &admin, json!({}))
        .await;
    assert_eq!(opened.status(), StatusCode::OK);
    let opened: Value = opened.json().await.unwrap();
    assert_eq!(opened["enrolled"], 9, "everyone born by the reference date");
    assert_eq!(opened["campaign"]["status"], "open");

    let cohort = |r: Option<enrolments::Model>| r.map(|r| r.cohort);
    assert_eq!(
        cohort(row(&app, id, on_birthday).await).as_deref(),
        Some("7-14")
    );
    assert_eq!(
        cohort(row(&app, id, day_after_ref).await).as_deref(),
        Some("0-6")
    );
    assert_eq!(cohort(row(&app, id, leap).await).as_deref(), Some("7-14"));
    assert_eq!(
        cohort(row(&app, id, fifteen).await).as_deref(),
        Some("15-64")
    );
    assert_eq!(
        cohort(row(&app, id, sixty_five).await).as_deref(),
        Some("65-79")
    );
    assert_eq!(
        cohort(row(&app, id, almost_80).await).as_deref(),
        Some("65-79")
    );
    assert_eq!(cohort(row(&app, id, eighty).await).as_deref(), Some("80+"));
    assert!(row(&app, id, after_reference).await.is_none());
    let dead_row = row(&app, id, dead).await.unwrap();
    assert_eq!(dead_row.stage, "exempt");
    assert!(dead_row.exempt_at.is_some());
    let home = row(&app, id, bedridden).await.unwrap();
    assert_eq!(home.route, "home_visit");
    assert_eq!(home.township_code, "654025101000");
    assert_eq!(home.stage, "target");

    // Opening twice, or changing who is enrolled afterwards, is refused.
    let again = app
        .post(&format!("/api/v1/campaigns/{id}/open"), &admin, json!({}))
        .await;
    assert_eq!(error_code(again, StatusCode::CONFLICT).await, "conflict");
    let change = app
        .patch(
            &format!("/api/v1/campaigns/{id}"),
            &admin,
            json!({"reference_date": format!("{year}-06-01")}),
        )
        .await;
    assert_eq!(error_code(change, StatusCode::CONFLICT).await, "conflict");
    let rename = app
        .patch(
            &format!("/api/v1/campaigns/{id}"),
            &admin,
            json!({"name": format!("{year}年新源县全民健康体检"), "quiet_hours": {"start": "22:00", "end": "09:00"}}),
        )
        .await;
    assert_eq!(rename.status(), StatusCode::OK);
    let rename: Value = rename.json().await.unwrap();
    assert_eq!(rename["name"], format!("{year}年新源县全民健康体检"));
    assert_eq!(rename["quiet_hours"]["start"], "22:00");
}

#[tokio::test]
async fn registry_changes_after_opening_update_the_progress_rows() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.a", Role::Cadre, VILLAGE).await;
    let (_, township) = app.user("town.a", Role::Township, TOWNSHIP).await;

    // Registered after opening: enrolled at once.
    let response = app
        .post(
            "/api/v1/residents",
            &cadre,
            json!({"name": "新来的", "id_number": resident_id(11, "19800505"), "village_code": VILLAGE}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let resident = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap() as i32;
    let enrolled = row(&app, campaign, resident).await.expect("enrolled");
    assert_eq!(enrolled.stage, "target");
    assert_eq!(enrolled.cohort, "15-64");
    assert_eq!(enrolled.village_code, VILLAGE);

    // Moved household: the dimensions follow.
    let moved = app
        .post(
            &format!("/api/v1/residents/{resident}/move"),
            &township,
            json!({"village_code": "654025100202", "reason": "分户"}),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    assert_eq!(
        row(&app, campaign, resident).await.unwrap().village_code,
        "654025100202"
    );

    // Migrant type changed: the dimension follows.
    let patched = app
        .patch(
            &format!("/api/v1/residents/{resident}"),
            &township,
            json!({"migrant_type": "out_of_region"}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(
        row(&app, campaign, resident).await.unwrap().migrant_type,
        "out_of_region"
    );

    // Moved out of the county: the row leaves the denominator.
    let out = app
        .post(
            &format!("/api/v1/residents/{resident}/moved-out"),
            &township,
            json!({"reason": "迁往外县"}),
        )
        .await;
    assert_eq!(out.status(), StatusCode::OK);
    let exempt = row(&app, campaign, resident).await.unwrap();
    assert_eq!(exempt.stage, "exempt");
    assert_eq!(exempt.special.as_deref(), Some("moved_out"));

    // Corrected (the move out was a mistake): back in the denominator.
    let corrected = app
        .patch(
            &format!("/api/v1/residents/{resident}"),
            &township,
            json!({"special": null}),
        )
        .await;
    assert_eq!(
        corrected.status(),
        StatusCode::OK,
        "{}",
        corrected.text().await.unwrap()
    );
    assert_eq!(row(&app, campaign, resident).await.unwrap().stage, "target");

    // An import after opening enrols the new residents too.
    let csv = format!(
        "姓名,身份证号,户籍地区划代码\n导入者,{},{VILLAGE}\n",
        resident_id(12, "19900101")
    );
    let imported = app.upload_residents(&cadre, csv).await;
    assert_eq!(imported.status(), StatusCode::OK);
    let found = registry::list(
        &app.db,
        &app.state.privacy,
        &outreach::auth::Actor::cli(),
        registry::ResidentFilter {
            q: Some("导入者".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let imported_id = found.residents[0].id;
    assert_eq!(
        row(&app, campaign, imported_id).await.unwrap().stage,
        "target"
    );
}

#[tokio::test]
async fn key_group_tags_are_set_audited_and_scoped() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let resident = add_resident(&app, resident_id(21, "19550101"), VILLAGE, None, None).await;
    let other = add_resident(&app, resident_id(22, "19550101"), OTHER_VILLAGE, None, None).await;
    let (_, cadre) = app.user("cadre.t", Role::Cadre, VILLAGE).await;
    let path = format!("/api/v1/residents/{resident}/tags");
    let response = app
        .request(
            reqwest::Method::PUT,
            &path,
            Some(&cadre),
            Some(json!({"tags": ["高血压", "diabetes", "高血压"]})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["tags"],
        json!([{"code": "diabetes", "label": "糖尿病"}, {"code": "hypertension", "label": "高血压"}])
    );
    let read: Value = app.get(&path, &cadre).await.json().await.unwrap();
    assert_eq!(read["tags"].as_array().unwrap().len(), 2);

    let bad = app
        .request(
            reqwest::Method::PUT,
            &path,
            Some(&cadre),
            Some(json!({"tags": ["胖"]})),
        )
        .await;
    assert_eq!(
        error_code(bad, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_tag"
    );
    let elsewhere = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/residents/{other}/tags"),
            Some(&cadre),
            Some(json!({"tags": ["高血压"]})),
        )
        .await;
    assert_eq!(
        error_code(elsewhere, StatusCode::NOT_FOUND).await,
        "not_found"
    );

    let admin = app.office_token().await;
    let audit: Value = app
        .get("/api/v1/audit?action=resident.set_tags", &admin)
        .await
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["summary"]["to"],
        json!(["diabetes", "hypertension"])
    );
}

#[tokio::test]
async fn worklists_list_what_a_cadre_has_left_to_do() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let at_home = add_resident(&app, resident_id(31, "19600101"), VILLAGE, None, None).await;
    let younger = add_resident(&app, resident_id(32, "19900101"), VILLAGE, None, None).await;
    let migrant = add_resident(
        &app,
        resident_id(33, "19850101"),
        VILLAGE,
        Some(MigrantType::OutOfRegion),
        None,
    )
    .await;
    let bedridden = add_resident(
        &app,
        resident_id(34, "19400101"),
        VILLAGE,
        None,
        Some(Special::Mobility),
    )
    .await;
    let elsewhere =
        add_resident(&app, resident_id(35, "19600101"), OTHER_VILLAGE, None, None).await;
    let herder = add_resident(
        &app,
        resident_id(36, "19700101"),
        VILLAGE,
        None,
        Some(Special::RemotePastoral),
    )
    .await;
    let in_hospital = add_resident(
        &app,
        resident_id(37, "19700101"),
        VILLAGE,
        None,
        Some(Special::Hospitalized),
    )
    .await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.w", Role::Cadre, VILLAGE).await;
    let list =
        |kind: &str, query: &str| format!("/api/v1/campaigns/{campaign}/worklists/{kind}{query}");
    let ids = |body: &Value| -> Vec<i64> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["resident_id"].as_i64().unwrap())
            .collect()
    };

    let body: Value = app
        .get(&list("not_appointed", "?sort=age"), &cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), [at_home as i64, younger as i64], "oldest first");
    assert_eq!(body["total"], 2);
    assert_eq!(body["items"][0]["phone"], "138****1111");
    // Age on the reference date (1 January of this year): born 1 January 1960.
    assert_eq!(
        body["items"][0]["age"],
        i64::from(registry::today().year() - 1960)
    );

    let page: Value = app
        .get(&list("not_appointed", "?sort=name&limit=1&page=2"), &cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["pages"], 2);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    let body: Value = app
        .get(&list("migrants", ""), &cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), [migrant as i64]);
    assert_eq!(body["items"][0]["migrant_type_label"], "疆外");
    let body: Value = app
        .get(&list("home_visits", ""), &cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), [bedridden as i64]);
    let body: Value = app
        .get(&list("seasonal", ""), &cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), [herder as i64]);
    let body: Value = app
        .get(&list("hospital_records", ""), &cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), [in_hospital as i64]);
    let body: Value = app
        .get(&list("no_shows", ""), &cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body), Vec::<i64>::new());
    // The worklist page's tabs count what the lists hold.
    assert_eq!(
        app.worklist_tabs(&cadre).await,
        [
            ("not_appointed", 2),
            ("no_shows", 0),
            ("migrants", 1),
            ("home_visits", 1),
            ("hospital_records", 1),
            ("seasonal", 1),
            ("tasks", 0),
        ]
        .map(|(code, n)| (code.to_owned(), n))
    );

    // The other village's resident is nobody's business here.
    let body: Value = app
        .get(&list("not_appointed", ""), &app.office_token().await)
        .await
        .json()
        .await
        .unwrap();
    assert!(ids(&body).contains(&(elsewhere as i64)));
    let outside = app
        .get(
            &list("not_appointed", &format!("?area={OTHER_VILLAGE}")),
            &cadre,
        )
        .await;
    assert_eq!(
        error_code(outside, StatusCode::FORBIDDEN).await,
        "out_of_scope"
    );
    let unknown = app.get(&list("everything", ""), &cadre).await;
    assert_eq!(
        error_code(unknown, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let bad_sort = app.get(&list("migrants", "?sort=height"), &cadre).await;
    assert_eq!(
        error_code(bad_sort, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_sort"
    );
}

#[tokio::test]
async fn a_campaign_whose_exam_window_is_over_says_so_when_it_is_opened() {
    let app = spawn_app().await;
    app.seed_areas().await;
    add_resident(&app, resident_id(1, "19700101"), VILLAGE, None, None).await;
    let admin = app.office_token().await;
    let year = registry::today().year();

    // Last year's campaign with the plan's calendar: its catch-up ended on 31 October.
    let created = app
        .post("/api/v1/campaigns", &admin, json!({"year": year - 1}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_i64().unwrap() as i32;
    let opened = app
        .post(&format!("/api/v1/campaigns/{id}/open"), &admin, json!({}))
        .await;
    assert_eq!(opened.status(), StatusCode::CONFLICT);
    let opened: Value = opened.json().await.unwrap();
    assert_eq!(opened["error"]["code"], "exam_window_over");
    let message = opened["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("已经结束") && message.contains(&format!("{}-10-31", year - 1)),
        "{message}"
    );
    assert_eq!(
        opened["error"]["details"]["bookable_until"],
        format!("{}-10-31", year - 1)
    );
    let still: Value = app
        .get(&format!("/api/v1/campaigns/{id}"), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["status"], "draft");
    let enrolled = enrolments::Entity::find()
        .filter(enrolments::Column::CampaignId.eq(id))
        .all(&app.db)
        .await
        .unwrap();
    assert!(enrolled.is_empty(), "nobody enrolled");

    // Next year's campaign with the same defaults opens: its window is ahead.
    let next: Value = app
        .post("/api/v1/campaigns", &admin, json!({"year": year + 1}))
        .await
        .json()
        .await
        .unwrap();
    let opened = app
        .post(
            &format!("/api/v1/campaigns/{}/open", next["id"]),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(opened.status(), StatusCode::OK);
    let opened: Value = opened.json().await.unwrap();
    assert_eq!(opened["enrolled"], 1);
}
