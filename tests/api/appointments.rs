//! Institutions' calendars and group bookings: capacity never exceeded (also under parallel
//! bookings), full days answered with proposals, one active appointment per resident,
//! examined and refused residents refused, reschedule and cancel freeing places,
//! attendance writing the exam, and no-shows after the day.

use chrono::Duration;
use entities::users::Role;
use entities::{appointments, enrolments};
use outreach::registry;
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

use crate::campaigns::{add_resident, row};
use crate::helpers::{
    OTHER_VILLAGE, TOWNSHIP, TestApp, VILLAGE, error_code, resident_id, spawn_app,
};

struct Setup {
    app: TestApp,
    campaign: i32,
    institution: i32,
    cadre: String,
    staff: String,
    residents: Vec<i32>,
}

/// A campaign, an institution serving the township with `capacity` places a day, its staff,
/// a cadre of the village and `n` residents of the village.
async fn setup(capacity: i32, n: u32) -> Setup {
    let app = spawn_app().await;
    app.seed_areas().await;
    let mut residents = Vec::new();
    for i in 0..n {
        residents.push(add_resident(&app, resident_id(i, "19700101"), VILLAGE, None, None).await);
    }
    let campaign = app.open_campaign().await;
    let institution = app
        .institution("XYZ-WSY", TOWNSHIP, &[TOWNSHIP], capacity)
        .await;
    let (_, cadre) = app.user("cadre.b", Role::Cadre, VILLAGE).await;
    let (_, staff) = app
        .user_at(
            "clinic.b",
            Role::Institution,
            TOWNSHIP,
            Some("XYZ-WSY".into()),
        )
        .await;
    Setup {
        app,
        campaign,
        institution,
        cadre,
        staff,
        residents,
    }
}

fn day(offset: i64) -> chrono::NaiveDate {
    registry::today() + Duration::days(offset)
}

impl Setup {
    async fn book(&self, offset: i64, residents: &[i32]) -> reqwest::Response {
        self.app
            .post(
                &format!("/api/v1/campaigns/{}/bookings", self.campaign),
                &self.cadre,
                json!({"institution_id": self.institution, "day": day(offset), "resident_ids": residents}),
            )
            .await
    }

    async fn calendar_day(&self, offset: i64) -> Value {
        let d = day(offset);
        let body: Value = self
            .app
            .get(
                &format!(
                    "/api/v1/institutions/{}/calendar?from={d}&to={d}",
                    self.institution
                ),
                &self.cadre,
            )
            .await
            .json()
            .await
            .unwrap();
        body["days"][0].clone()
    }
}

#[tokio::test]
async fn a_group_is_booked_and_a_full_day_proposes_the_next_days_with_room() {
    let s = setup(5, 8).await;
    let response = s.book(3, &s.residents[0..4]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let booking: Value = response.json().await.unwrap();
    assert_eq!(booking["appointments"].as_array().unwrap().len(), 4);
    assert_eq!(booking["calendar"]["booked"], 4);
    assert_eq!(booking["calendar"]["remaining"], 1);
    assert_eq!(booking["appointments"][0]["status"], "booked");
    let masked = booking["appointments"][0]["id_number"].as_str().unwrap();
    assert!(
        masked.starts_with("6540**********") && masked.len() == 18,
        "{masked}"
    );
    let row0 = row(&s.app, s.campaign, s.residents[0]).await.unwrap();
    assert_eq!(row0.stage, "appointed");
    assert!(row0.appointed_at.is_some());

    // Three more do not fit into the one place left; the next days are proposed.
    s.app
        .request(
            Method::PUT,
            &format!("/api/v1/institutions/{}/calendar/{}", s.institution, day(5)),
            Some(&s.staff),
            Some(json!({"closed": true, "note": "设备检修"})),
        )
        .await;
    let response = s.book(3, &s.residents[4..7]).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "day_full");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("已约满")
    );
    assert_eq!(body["error"]["details"]["remaining"], 1);
    let proposals: Vec<String> = body["error"]["details"]["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["day"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        proposals,
        [4, 6, 7, 8, 9].map(|o| day(o).to_string()),
        "the closed day is skipped"
    );
    // Nothing of the refused group was written.
    assert_eq!(s.calendar_day(3).await["booked"], 4);
    assert_eq!(
        row(&s.app, s.campaign, s.residents[4]).await.unwrap().stage,
        "target"
    );

    // A closed day is refused as such.
    let response = s.book(5, &s.residents[4..5]).await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "day_closed"
    );

    // Days outside the exam window, or past, are not bookable.
    let response = s.book(75, &s.residents[4..5]).await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "outside_exam_window"
    );
    let response = s.book(-1, &s.residents[4..5]).await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "day_passed"
    );
    let response = s.book(3, &[]).await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_group"
    );
}

#[tokio::test]
async fn a_resident_cannot_be_booked_twice_or_when_examined_refused_or_out_of_reach() {
    let s = setup(50, 6).await;
    let outsider = add_resident(
        &s.app,
        resident_id(90, "19700101"),
        OTHER_VILLAGE,
        None,
        None,
    )
    .await;
    assert_eq!(
        s.book(2, &s.residents[0..1]).await.status(),
        StatusCode::CREATED
    );

    // Refused (registered by the refusal workflow) and examined residents.
    enrolments::Entity::update_many()
        .col_expr(enrolments::Column::Stage, Expr::value("refused"))
        .filter(enrolments::Column::ResidentId.eq(s.residents[1]))
        .exec(&s.app.db)
        .await
        .unwrap();
    let exam = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/exams", s.campaign),
            &s.staff,
            json!({"resident_id": s.residents[2], "examined_on": day(0)}),
        )
        .await;
    assert_eq!(exam.status(), StatusCode::CREATED);

    let response = s
        .book(
            3,
            &[
                s.residents[0],
                s.residents[1],
                s.residents[2],
                s.residents[3],
                outsider,
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "residents_not_bookable");
    let codes: Vec<(i64, String)> = body["error"]["details"]["residents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resident_id"].as_i64().unwrap(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (s.residents[0] as i64, "already_appointed".to_owned()),
            (s.residents[1] as i64, "refused".to_owned()),
            (s.residents[2] as i64, "already_examined".to_owned()),
            (outsider as i64, "not_found".to_owned()),
        ]
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("已有未完成的预约")
    );
    // The bookable one was not booked either: all or nothing.
    assert_eq!(s.calendar_day(3).await["booked"], 0);

    // An institution that does not serve the village.
    let far = s
        .app
        .institution("FAR-WSY", "654025101000", &["654025101000"], 50)
        .await;
    let response = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/bookings", s.campaign),
            &s.cadre,
            json!({"institution_id": far, "day": day(3), "resident_ids": [s.residents[3]]}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["details"]["residents"][0]["code"],
        "institution_not_serving"
    );
}

#[tokio::test]
async fn parallel_bookings_never_exceed_the_capacity() {
    let s = setup(10, 41).await;
    // Twenty groups of two race for ten places on one day.
    let mut tasks = Vec::new();
    for pair in s.residents[..40].chunks(2) {
        let client = s.app.client.clone();
        let url = s
            .app
            .url(&format!("/api/v1/campaigns/{}/bookings", s.campaign));
        let body = json!({"institution_id": s.institution, "day": day(4), "resident_ids": pair});
        let token = s.cadre.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 5, "exactly the ten places were taken");
    let calendar = s.calendar_day(4).await;
    assert_eq!(calendar["booked"], 10);
    assert_eq!(calendar["remaining"], 0);
    let stored = appointments::Entity::find()
        .filter(appointments::Column::Status.eq("booked"))
        .all(&s.app.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 10);

    // The same resident booked by two cadres at once: one wins.
    let mut tasks = Vec::new();
    let lone = s.residents[40];
    for offset in [6, 7] {
        let client = s.app.client.clone();
        let url = s
            .app
            .url(&format!("/api/v1/campaigns/{}/bookings", s.campaign));
        let body =
            json!({"institution_id": s.institution, "day": day(offset), "resident_ids": [lone]});
        let token = s.cadre.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::CREATED {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    let active = appointments::Entity::find()
        .filter(appointments::Column::ResidentId.eq(lone))
        .filter(appointments::Column::Status.eq("booked"))
        .all(&s.app.db)
        .await
        .unwrap();
    assert_eq!(active.len(), 1);
}

#[tokio::test]
async fn reschedule_and_cancel_free_the_place() {
    let s = setup(2, 3).await;
    let booking: Value = s.book(3, &s.residents[0..2]).await.json().await.unwrap();
    let first = booking["appointments"][0]["id"].as_i64().unwrap();
    let second = booking["appointments"][1]["id"].as_i64().unwrap();
    assert_eq!(s.calendar_day(3).await["remaining"], 0);

    let moved = s
        .app
        .post(
            &format!("/api/v1/appointments/{first}/reschedule"),
            &s.cadre,
            json!({"day": day(4), "reason": "家中有事"}),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    let moved: Value = moved.json().await.unwrap();
    assert_eq!(moved["day"], day(4).to_string());
    assert_eq!(moved["status"], "booked");
    assert_eq!(s.calendar_day(3).await["booked"], 1);
    assert_eq!(s.calendar_day(4).await["booked"], 1);

    // The freed place is bookable again.
    let third: Value = s.book(3, &s.residents[2..3]).await.json().await.unwrap();
    let third = third["appointments"][0]["id"].as_i64().unwrap();
    assert_eq!(s.calendar_day(3).await["remaining"], 0);

    // Day 4 fills up; rescheduling into it is then refused with proposals, changing nothing.
    let moved_second = s
        .app
        .post(
            &format!("/api/v1/appointments/{second}/reschedule"),
            &s.cadre,
            json!({"day": day(4)}),
        )
        .await;
    assert_eq!(moved_second.status(), StatusCode::OK);
    assert_eq!(s.calendar_day(4).await["remaining"], 0);
    let full = s
        .app
        .post(
            &format!("/api/v1/appointments/{third}/reschedule"),
            &s.cadre,
            json!({"day": day(4)}),
        )
        .await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    let full: Value = full.json().await.unwrap();
    assert_eq!(full["error"]["code"], "day_full");
    assert_eq!(
        full["error"]["details"]["proposals"][0]["day"],
        day(5).to_string()
    );
    assert_eq!(s.calendar_day(3).await["booked"], 1);
    assert_eq!(s.calendar_day(4).await["booked"], 2);

    let cancelled = s
        .app
        .post(
            &format!("/api/v1/appointments/{first}/cancel"),
            &s.cadre,
            json!({"reason": "外出务工"}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["reason"], "外出务工");
    assert_eq!(s.calendar_day(4).await["booked"], 1);
    // Back out of appointed; reached stays (a booking was made with them).
    assert_eq!(
        row(&s.app, s.campaign, s.residents[0]).await.unwrap().stage,
        "reached"
    );
    let again = s
        .app
        .post(
            &format!("/api/v1/appointments/{first}/cancel"),
            &s.cadre,
            json!({"reason": "再取消"}),
        )
        .await;
    assert_eq!(error_code(again, StatusCode::CONFLICT).await, "not_active");

    // Staff cannot lower the capacity below what is booked.
    let lower = s
        .app
        .request(
            Method::PUT,
            &format!("/api/v1/institutions/{}/calendar/{}", s.institution, day(4)),
            Some(&s.staff),
            Some(json!({"capacity": 0})),
        )
        .await;
    assert_eq!(
        error_code(lower, StatusCode::CONFLICT).await,
        "capacity_below_booked"
    );
    let audit: Value = s
        .app
        .get(
            "/api/v1/audit?action=appointment.reschedule",
            &s.app.office_token().await,
        )
        .await
        .json()
        .await
        .unwrap();
    let reasons: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["summary"]["reason"])
        .collect();
    assert!(reasons.contains(&&json!("家中有事")), "{audit}");
}

#[tokio::test]
async fn attendance_writes_the_exam_and_a_missed_day_becomes_a_no_show() {
    let s = setup(10, 3).await;
    let booking: Value = s.book(0, &s.residents[0..3]).await.json().await.unwrap();
    let ids: Vec<i64> = booking["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();

    // Only the institution's own staff mark attendance.
    let by_cadre = s
        .app
        .post(
            &format!("/api/v1/appointments/{}/attendance", ids[0]),
            &s.cadre,
            json!({"attended": true}),
        )
        .await;
    assert_eq!(
        error_code(by_cadre, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let attended = s
        .app
        .post(
            &format!("/api/v1/appointments/{}/attendance", ids[0]),
            &s.staff,
            json!({"attended": true}),
        )
        .await;
    assert_eq!(attended.status(), StatusCode::OK);
    assert_eq!(
        attended.json::<Value>().await.unwrap()["status"],
        "attended"
    );
    let progress: Value = s
        .app
        .get(
            &format!(
                "/api/v1/campaigns/{}/residents/{}",
                s.campaign, s.residents[0]
            ),
            &s.cadre,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(progress["stage"], "examined");
    assert_eq!(progress["stage_label"], "已体检");
    assert_eq!(progress["exam"]["source"], "attendance");
    assert_eq!(progress["exam"]["institution_id"], s.institution);
    assert_eq!(progress["appointments"][0]["status"], "attended");

    // Staff of another institution do not see the appointment at all.
    let (_, other_staff) = s
        .app
        .user("clinic.c", Role::Institution, "654025101000")
        .await;
    let foreign = s
        .app
        .post(
            &format!("/api/v1/appointments/{}/attendance", ids[1]),
            &other_staff,
            json!({"attended": true}),
        )
        .await;
    assert_eq!(
        error_code(foreign, StatusCode::NOT_FOUND).await,
        "not_found"
    );

    // The second did not come: staff say so.
    let absent = s
        .app
        .post(
            &format!("/api/v1/appointments/{}/attendance", ids[1]),
            &s.staff,
            json!({"attended": false}),
        )
        .await;
    assert_eq!(absent.json::<Value>().await.unwrap()["status"], "no_show");

    // The third's day passes (yesterday) without anybody marking it: the job does.
    appointments::Entity::update(appointments::ActiveModel {
        id: Set(ids[2] as i32),
        day: Set(day(-1)),
        ..Default::default()
    })
    .exec(&s.app.db)
    .await
    .unwrap();
    let changed = outreach::flows::booking::mark_no_shows(&s.app.db, &Default::default())
        .await
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(
        outreach::flows::booking::mark_no_shows(&s.app.db, &Default::default())
            .await
            .unwrap(),
        0
    );
    let third = s
        .app
        .get(&format!("/api/v1/appointments/{}", ids[2]), &s.cadre)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(third["status"], "no_show");
    // Back out of appointed; reached stays (a booking was made with them).
    assert_eq!(
        row(&s.app, s.campaign, s.residents[2]).await.unwrap().stage,
        "reached"
    );

    let worklist: Value = s
        .app
        .get(
            &format!("/api/v1/campaigns/{}/worklists/no_shows", s.campaign),
            &s.cadre,
        )
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<i64> = worklist["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["resident_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [s.residents[1] as i64, s.residents[2] as i64]);
    assert!(
        s.app
            .worklist_tabs(&s.cadre)
            .await
            .contains(&("no_shows".to_owned(), 2))
    );

    // A no-show can be booked again.
    assert_eq!(
        s.book(2, &s.residents[1..3]).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_resident_marked_deceased_gives_the_place_back() {
    let s = setup(5, 2).await;
    assert_eq!(s.book(2, &s.residents).await.status(), StatusCode::CREATED);
    assert_eq!(s.calendar_day(2).await["booked"], 2);
    let marked = s
        .app
        .post(
            &format!("/api/v1/residents/{}/deceased", s.residents[0]),
            &s.cadre,
            json!({"reason": "病故"}),
        )
        .await;
    assert_eq!(marked.status(), StatusCode::OK);
    assert_eq!(s.calendar_day(2).await["booked"], 1);
    let exempt = row(&s.app, s.campaign, s.residents[0]).await.unwrap();
    assert_eq!(exempt.stage, "exempt");
    let page: Value = s
        .app
        .get(
            &format!(
                "/api/v1/campaigns/{}/appointments?status=cancelled",
                s.campaign
            ),
            &s.cadre,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["appointments"][0]["resident_id"], s.residents[0]);
    assert_eq!(page["appointments"][0]["reason"], "居民已死亡或迁出");
}

#[tokio::test]
async fn institutions_and_their_calendar_upload() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let admin = app.office_token().await;
    let response = app
        .post(
            "/api/v1/institutions",
            &admin,
            json!({"code": "xy-rmyy", "name": "新源县人民医院", "kind": "county_hospital",
                   "area_code": "654025000000", "daily_capacity": 80, "closed_weekdays": [7],
                   "serves": ["654025000000"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let hospital: Value = response.json().await.unwrap();
    assert_eq!(hospital["code"], "XY-RMYY");
    assert_eq!(hospital["kind_label"], "县直医疗机构");
    let id = hospital["id"].as_i64().unwrap();
    let duplicate = app
        .post(
            "/api/v1/institutions",
            &admin,
            json!({"code": "XY-RMYY", "name": "重复", "kind": "other", "area_code": TOWNSHIP,
                   "daily_capacity": 1, "serves": [TOWNSHIP]}),
        )
        .await;
    assert_eq!(
        error_code(duplicate, StatusCode::CONFLICT).await,
        "conflict"
    );
    let bad = app
        .post(
            "/api/v1/institutions",
            &admin,
            json!({"code": "A-1", "name": "坏", "kind": "other", "area_code": TOWNSHIP,
                   "daily_capacity": -1, "serves": [TOWNSHIP]}),
        )
        .await;
    assert_eq!(
        error_code(bad, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_capacity"
    );

    // Sundays are closed by default.
    let from = registry::today();
    let calendar: Value = app
        .get(
            &format!(
                "/api/v1/institutions/{id}/calendar?from={from}&to={}",
                from + Duration::days(6)
            ),
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    let days = calendar["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    for d in days {
        let date: chrono::NaiveDate = d["day"].as_str().unwrap().parse().unwrap();
        let sunday = chrono::Datelike::weekday(&date) == chrono::Weekday::Sun;
        assert_eq!(d["closed"], sunday, "{date}");
        assert_eq!(d["remaining"], if sunday { 0 } else { 80 });
    }
    let too_long = app
        .get(
            &format!(
                "/api/v1/institutions/{id}/calendar?from={from}&to={}",
                from + Duration::days(400)
            ),
            &admin,
        )
        .await;
    assert_eq!(
        error_code(too_long, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_range"
    );

    // The hospital's staff upload next week's calendar; a row for another institution, a
    // bad date and a bad capacity are rejected with reasons.
    app.institution("ZKT-WSY", "654025101000", &["654025101000"], 30)
        .await;
    let (_, staff) = app
        .user_at(
            "hospital.staff",
            Role::Institution,
            COUNTY_CODE,
            Some("XY-RMYY".into()),
        )
        .await;
    let d1 = from + Duration::days(1);
    let d2 = from + Duration::days(2);
    let csv = format!(
        "机构代码,日期,容量,休息,备注\nXY-RMYY,{d1},120,否,加开\nxy-rmyy,{d2},0,是,设备检修\nZKT-WSY,{d1},10,否,\nXY-RMYY,2026-02-30,10,否,\nXY-RMYY,{d1},很多,否,\n"
    );
    let response = app
        .post_csv("/api/v1/institutions/calendar/import", &staff, csv.clone())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["summary"]["updated"], 2);
    assert_eq!(report["summary"]["rejected"], 3);
    let codes: Vec<&str> = report["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["out_of_scope", "invalid_date", "invalid_capacity"]);
    let calendar: Value = app
        .get(
            &format!("/api/v1/institutions/{id}/calendar?from={d1}&to={d2}"),
            &staff,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(calendar["days"][0]["capacity"], 120);
    assert_eq!(calendar["days"][0]["note"], "加开");
    assert_eq!(calendar["days"][1]["closed"], true);
    // The same file again changes nothing.
    let again: Value = app
        .post_csv("/api/v1/institutions/calendar/import", &staff, csv)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["summary"]["updated"], 0);
    assert_eq!(again["summary"]["unchanged"], 2);
    let empty = app
        .post_csv(
            "/api/v1/institutions/calendar/import",
            &staff,
            "机构代码,日期,容量\n",
        )
        .await;
    assert_eq!(
        error_code(empty, StatusCode::UNPROCESSABLE_ENTITY).await,
        "no_rows"
    );
    let junk = app
        .post_csv(
            "/api/v1/institutions/calendar/import",
            &staff,
            vec![0u8, 159, 146, 150, 0, 1],
        )
        .await;
    assert_eq!(
        error_code(junk, StatusCode::UNPROCESSABLE_ENTITY).await,
        "unreadable_file"
    );

    // Staff change their own capacity but not the areas served.
    let changed = app
        .patch(
            &format!("/api/v1/institutions/{id}"),
            &staff,
            json!({"daily_capacity": 90}),
        )
        .await;
    assert_eq!(changed.json::<Value>().await.unwrap()["daily_capacity"], 90);
    let serves = app
        .patch(
            &format!("/api/v1/institutions/{id}"),
            &staff,
            json!({"serves": [TOWNSHIP]}),
        )
        .await;
    assert_eq!(error_code(serves, StatusCode::FORBIDDEN).await, "forbidden");

    // An institution user must name an institution.
    let response = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"username": "clinic.none", "role": "institution", "area_code": TOWNSHIP}),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "institution_required"
    );
}

const COUNTY_CODE: &str = "654025000000";

#[tokio::test]
async fn racing_changes_to_one_appointment_never_leak_places() {
    let s = setup(10, 4).await;
    let booking: Value = s.book(3, &s.residents[0..2]).await.json().await.unwrap();
    let a = booking["appointments"][0]["id"].as_i64().unwrap();
    let b = booking["appointments"][1]["id"].as_i64().unwrap();
    let post = |path: String, body: Value| {
        let client = s.app.client.clone();
        let url = s.app.url(&path);
        let token = s.cadre.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // The same appointment cancelled twice at once: one cancel, one refusal, one place back.
    let first = post(
        format!("/api/v1/appointments/{a}/cancel"),
        json!({"reason": "甲"}),
    );
    let second = post(
        format!("/api/v1/appointments/{a}/cancel"),
        json!({"reason": "乙"}),
    );
    let mut statuses = vec![first.await.unwrap(), second.await.unwrap()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    assert_eq!(s.calendar_day(3).await["booked"], 1);

    // Two moves in opposite directions at once both land (no deadlock, no leak).
    let other: Value = s.book(5, &s.residents[2..3]).await.json().await.unwrap();
    let c = other["appointments"][0]["id"].as_i64().unwrap();
    let there = post(
        format!("/api/v1/appointments/{b}/reschedule"),
        json!({"day": day(5)}),
    );
    let back = post(
        format!("/api/v1/appointments/{c}/reschedule"),
        json!({"day": day(3)}),
    );
    assert_eq!(there.await.unwrap(), StatusCode::OK);
    assert_eq!(back.await.unwrap(), StatusCode::OK);
    assert_eq!(s.calendar_day(3).await["booked"], 1);
    assert_eq!(s.calendar_day(5).await["booked"], 1);
}

#[tokio::test]
async fn closing_a_campaign_settles_its_bookings_and_defaults_follow_the_institution() {
    let s = setup(10, 3).await;
    assert_eq!(
        s.book(0, &s.residents[0..1]).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        s.book(4, &s.residents[1..3]).await.status(),
        StatusCode::CREATED
    );
    // Yesterday's booking (moved there directly: the day has passed).
    appointments::Entity::update_many()
        .col_expr(appointments::Column::Day, Expr::value(day(-1)))
        .filter(appointments::Column::ResidentId.eq(s.residents[0]))
        .exec(&s.app.db)
        .await
        .unwrap();

    // A new default capacity reaches the days not set by hand, never below their bookings.
    let changed = s
        .app
        .patch(
            &format!("/api/v1/institutions/{}", s.institution),
            &s.staff,
            json!({"daily_capacity": 1}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(s.calendar_day(4).await["capacity"], 2, "two are booked");
    assert_eq!(s.calendar_day(6).await["capacity"], 1);

    let office = s.app.office_token().await;
    let closed = s
        .app
        .post(
            &format!("/api/v1/campaigns/{}/close", s.campaign),
            &office,
            json!({}),
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    let statuses: Vec<(i32, String)> = appointments::Entity::find()
        .all(&s.app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.resident_id, a.status))
        .collect();
    assert!(statuses.contains(&(s.residents[0], "no_show".to_owned())));
    assert!(statuses.contains(&(s.residents[1], "cancelled".to_owned())));
    assert_eq!(s.calendar_day(4).await["booked"], 0);
    for r in &s.residents {
        assert_ne!(
            row(&s.app, s.campaign, *r).await.unwrap().stage,
            "appointed"
        );
    }
    let late = s.book(5, &s.residents[0..1]).await;
    assert_eq!(error_code(late, StatusCode::CONFLICT).await, "conflict");
}

#[tokio::test]
async fn a_booking_sent_again_with_its_client_key_books_once() {
    let s = setup(10, 4).await;
    let path = format!("/api/v1/campaigns/{}/bookings", s.campaign);
    let booking = |residents: &[i32], key: &str| {
        json!({"institution_id": s.institution, "day": day(2), "resident_ids": residents,
               "client_key": key})
    };
    let group = &s.residents[..2];
    let first = s
        .app
        .post(&path, &s.cadre, booking(group, "c0ffee00c0ffee01"))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    // The phone lost the answer and sends the same entry again: the same booking comes back.
    let again = s
        .app
        .post(&path, &s.cadre, booking(group, "c0ffee00c0ffee01"))
        .await;
    assert!(again.status().is_success(), "{}", again.status());
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["booking_ref"], first["booking_ref"]);
    assert_eq!(again["appointments"], first["appointments"]);
    assert_eq!(s.calendar_day(2).await["booked"], 2);
    let stored = appointments::Entity::find()
        .all(&s.app.state.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    // The key stands for that group: used for others it is refused, and nothing is booked.
    let other = s
        .app
        .post(
            &path,
            &s.cadre,
            booking(&s.residents[2..], "c0ffee00c0ffee01"),
        )
        .await;
    assert_eq!(error_code(other, StatusCode::CONFLICT).await, "conflict");
    assert_eq!(s.calendar_day(2).await["booked"], 2);
    // A booking refused (a full day) takes no key: the corrected entry may use it.
    let closed = s
        .app
        .request(
            Method::PUT,
            &format!("/api/v1/institutions/{}/calendar/{}", s.institution, day(3)),
            Some(&s.staff),
            Some(json!({"capacity": 1})),
        )
        .await;
    assert_eq!(closed.status(), StatusCode::OK);
    let full = s
        .app
        .post(
            &path,
            &s.cadre,
            json!({"institution_id": s.institution, "day": day(3),
                   "resident_ids": &s.residents[2..], "client_key": "d00dfeed00000001"}),
        )
        .await;
    assert_eq!(error_code(full, StatusCode::CONFLICT).await, "day_full");
    let fixed = s
        .app
        .post(
            &path,
            &s.cadre,
            json!({"institution_id": s.institution, "day": day(4),
                   "resident_ids": &s.residents[2..], "client_key": "d00dfeed00000001"}),
        )
        .await;
    assert_eq!(fixed.status(), StatusCode::CREATED);
    let bad = s
        .app
        .post(&path, &s.cadre, booking(&s.residents[..1], "bad key"))
        .await;
    assert_eq!(
        error_code(bad, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_client_key"
    );
}
