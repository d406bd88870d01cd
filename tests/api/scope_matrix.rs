//! Role × scope matrix: every endpoint of the OpenAPI document is called by every role, from
//! inside and outside the scope, and without a token. A new endpoint that is not listed here
//! fails `every_documented_endpoint_is_in_the_matrix`.

use std::collections::BTreeSet;

use entities::users::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use outreach::auth::Actor;

use crate::helpers::{COUNTY, OTHER_COUNTY, TOWNSHIP, VILLAGE, resident_id, spawn_app};

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

type Request = Box<dyn Fn(usize) -> (String, Option<Value>)>;

struct Case {
    method: Method,
    /// The documented path template.
    template: &'static str,
    /// Path and JSON body for the user at this index of `USERS`.
    request: Request,
    /// A CSV body instead of JSON.
    csv: Option<String>,
    /// Expected status for each of `USERS`, in order; 0 = checked without a token only.
    expected: [u16; 6],
}

/// Residents and users the matrix acts on.
struct Targets {
    user: i32,
    resident: i32,
    /// One resident per user for each action that can only happen once.
    deceased: Vec<i32>,
    moved_out: Vec<i32>,
    moved: Vec<i32>,
    /// The open campaign most cases act in, and the institution of the `institution` user.
    campaign: i32,
    institution: i32,
    /// Per user: a draft campaign to open, an open campaign to close.
    drafts: Vec<i32>,
    closable: Vec<i32>,
    /// Per user: residents to book, examine, record as examined elsewhere.
    to_book: Vec<i32>,
    to_examine: Vec<i32>,
    elsewhere: Vec<i32>,
    /// Per user: appointments (booked for today) to reschedule, cancel, mark attended.
    to_reschedule: Vec<i32>,
    to_cancel: Vec<i32>,
    to_attend: Vec<i32>,
    /// An appointment and an exam with evidence, of a resident of the village.
    appointment: i32,
    evidence_exam: i32,
    /// A wave over the county; per user: waves to cancel, failed messages to re-send, tasks
    /// to mark done (all of residents of the village).
    wave: i32,
    waves: Vec<i32>,
    failed: Vec<i32>,
    tasks: Vec<i32>,
    /// Per user: residents with enough documented contact to register a refusal, pending
    /// registrations to confirm and to return; one registration (by the command line) to read.
    to_refuse: Vec<i32>,
    to_confirm: Vec<i32>,
    to_return: Vec<i32>,
    refusal: i32,
}

fn each(ids: &[i32], path: impl Fn(i32) -> String + 'static, body: Option<Value>) -> Request {
    let ids = ids.to_vec();
    Box::new(move |i| (path(ids[i]), body.clone()))
}

fn fixed(path: String, body: Option<Value>) -> Request {
    Box::new(move |_| (path.clone(), body.clone()))
}

fn per_user(targets: &[i32], suffix: &'static str, body: Value) -> Request {
    let targets = targets.to_vec();
    Box::new(move |i| {
        (
            format!("/api/v1/residents/{}{suffix}", targets[i]),
            Some(body.clone()),
        )
    })
}

fn cases(t: &Targets) -> Vec<Case> {
    let campaign_id = t.campaign;
    let user = format!("/api/v1/users/{}", t.user);
    let resident = format!("/api/v1/residents/{}", t.resident);
    let campaign = format!("/api/v1/campaigns/{}", t.campaign);
    let institution = format!("/api/v1/institutions/{}", t.institution);
    let case =
        |method: Method, template: &'static str, request: Request, expected: [u16; 6]| Case {
            method,
            template,
            request,
            csv: None,
            expected,
        };
    vec![
        case(
            Method::GET,
            "/api/v1/me",
            fixed("/api/v1/me".into(), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/api/v1/areas",
            fixed("/api/v1/areas".into(), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/api/v1/areas/{code}",
            fixed(format!("/api/v1/areas/{VILLAGE}"), None),
            [200, 403, 200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/api/v1/areas/{code}",
            fixed(format!("/api/v1/areas/{TOWNSHIP}"), None),
            [200, 403, 200, 403, 200, 200],
        ),
        Case {
            csv: Some("区划代码,名称\n654025100203,新村\n".into()),
            ..case(
                Method::POST,
                "/api/v1/areas/import",
                fixed("/api/v1/areas/import".into(), None),
                [200, 200, 403, 403, 403, 403],
            )
        },
        case(
            Method::GET,
            "/api/v1/users",
            fixed("/api/v1/users".into(), None),
            [200, 200, 403, 403, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/users",
            Box::new(|i| {
                (
                    "/api/v1/users".into(),
                    Some(
                        json!({"username": format!("new.{i}"), "role": "cadre", "area_code": VILLAGE}),
                    ),
                )
            }),
            [201, 403, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/users/{id}",
            fixed(user.clone(), None),
            [200, 404, 403, 403, 403, 403],
        ),
        case(
            Method::PATCH,
            "/api/v1/users/{id}",
            fixed(user.clone(), Some(json!({"display_name": "改名"}))),
            [200, 404, 403, 403, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/users/{id}/reset-password",
            fixed(format!("{user}/reset-password"), None),
            [200, 404, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/audit",
            fixed("/api/v1/audit".into(), None),
            [200, 200, 403, 403, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/residents",
            fixed("/api/v1/residents".into(), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::POST,
            "/api/v1/residents",
            Box::new(|i| {
                let body = json!({"name": "新居民", "id_number": resident_id(100 + i as u32, "19900101"), "village_code": VILLAGE});
                ("/api/v1/residents".into(), Some(body))
            }),
            [201, 403, 201, 201, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/residents/{id}",
            fixed(resident.clone(), None),
            [200, 404, 200, 200, 200, 200],
        ),
        case(
            Method::PATCH,
            "/api/v1/residents/{id}",
            fixed(resident.clone(), Some(json!({"current_address": "伊宁市"}))),
            [200, 404, 200, 200, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/residents/{id}/deceased",
            per_user(&t.deceased, "/deceased", json!({"reason": "病故"})),
            [200, 404, 200, 200, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/residents/{id}/moved-out",
            per_user(&t.moved_out, "/moved-out", json!({"reason": "迁往外县"})),
            [200, 404, 200, 200, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/residents/{id}/move",
            per_user(
                &t.moved,
                "/move",
                json!({"village_code": "654025100202", "reason": "分户"}),
            ),
            [200, 403, 200, 403, 403, 403],
        ),
        Case {
            csv: Some(format!(
                "姓名,身份证号,户籍地区划代码\n上传者,{},{VILLAGE}\n",
                resident_id(200, "19900101")
            )),
            ..case(
                Method::POST,
                "/api/v1/residents/import",
                fixed("/api/v1/residents/import".into(), None),
                [200, 200, 200, 200, 403, 403],
            )
        },
        Case {
            csv: Some(format!(
                "身份证号,标签\n{},高血压\n",
                resident_id(200, "19900101")
            )),
            ..case(
                Method::POST,
                "/api/v1/residents/tags/import",
                fixed("/api/v1/residents/tags/import".into(), None),
                [200, 200, 200, 200, 403, 403],
            )
        },
        case(
            Method::GET,
            "/api/v1/migrant-book",
            fixed("/api/v1/migrant-book".into(), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns",
            fixed("/api/v1/campaigns".into(), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns",
            Box::new(|i| ("/api/v1/campaigns".into(), Some(json!({"year": 2050 + i})))),
            [201, 201, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}",
            fixed(campaign.clone(), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::PATCH,
            "/api/v1/campaigns/{id}",
            fixed(
                campaign.clone(),
                Some(json!({"quiet_hours": {"start": "21:30", "end": "08:00"}})),
            ),
            [200, 200, 403, 403, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/open",
            each(&t.drafts, |c| format!("/api/v1/campaigns/{c}/open"), None),
            [200, 200, 403, 403, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/close",
            each(
                &t.closable,
                |c| format!("/api/v1/campaigns/{c}/close"),
                None,
            ),
            [200, 200, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/residents/{resident_id}",
            fixed(format!("{campaign}/residents/{}", t.resident), None),
            [200, 404, 200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/worklists/{kind}",
            fixed(format!("{campaign}/worklists/migrants"), None),
            [200, 200, 200, 200, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/residents/{id}/tags",
            fixed(format!("{resident}/tags"), None),
            [200, 404, 200, 200, 200, 200],
        ),
        case(
            Method::PUT,
            "/api/v1/residents/{id}/tags",
            fixed(
                format!("{resident}/tags"),
                Some(json!({"tags": ["高血压"]})),
            ),
            [200, 404, 200, 200, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/institutions",
            fixed("/api/v1/institutions".into(), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::POST,
            "/api/v1/institutions",
            Box::new(|i| {
                let body = json!({"code": format!("NEW-{i}"), "name": "新机构", "kind": "other",
                    "area_code": TOWNSHIP, "daily_capacity": 10, "serves": [TOWNSHIP]});
                ("/api/v1/institutions".into(), Some(body))
            }),
            [201, 403, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/institutions/{id}",
            fixed(institution.clone(), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::PATCH,
            "/api/v1/institutions/{id}",
            fixed(institution.clone(), Some(json!({"daily_capacity": 60}))),
            [200, 403, 403, 403, 200, 403],
        ),
        case(
            Method::GET,
            "/api/v1/institutions/{id}/calendar",
            fixed(format!("{institution}/calendar"), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::PUT,
            "/api/v1/institutions/{id}/calendar/{day}",
            fixed(
                format!("{institution}/calendar/{}", day(9)),
                Some(json!({"capacity": 70})),
            ),
            [200, 403, 403, 403, 200, 403],
        ),
        Case {
            csv: Some(format!(
                "机构代码,日期,容量\nINST-{TOWNSHIP},{},40\n",
                day(10)
            )),
            ..case(
                Method::POST,
                "/api/v1/institutions/calendar/import",
                fixed("/api/v1/institutions/calendar/import".into(), None),
                [200, 200, 403, 403, 200, 403],
            )
        },
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/bookings",
            {
                let (ids, institution) = (t.to_book.clone(), t.institution);
                let campaign = campaign.clone();
                Box::new(move |i| {
                    let body = json!({"institution_id": institution, "day": day(2), "resident_ids": [ids[i]]});
                    (format!("{campaign}/bookings"), Some(body))
                })
            },
            [201, 409, 201, 201, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/appointments",
            fixed(format!("{campaign}/appointments"), None),
            [200, 200, 200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/api/v1/appointments/{id}",
            fixed(format!("/api/v1/appointments/{}", t.appointment), None),
            [200, 404, 200, 200, 200, 200],
        ),
        case(
            Method::POST,
            "/api/v1/appointments/{id}/reschedule",
            each(
                &t.to_reschedule,
                |a| format!("/api/v1/appointments/{a}/reschedule"),
                Some(json!({"day": day(3)})),
            ),
            [200, 404, 200, 200, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/appointments/{id}/cancel",
            each(
                &t.to_cancel,
                |a| format!("/api/v1/appointments/{a}/cancel"),
                Some(json!({"reason": "外出"})),
            ),
            [200, 404, 200, 200, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/appointments/{id}/attendance",
            each(
                &t.to_attend,
                |a| format!("/api/v1/appointments/{a}/attendance"),
                Some(json!({"attended": true})),
            ),
            [200, 404, 403, 403, 200, 403],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/exams",
            {
                let (ids, institution) = (t.to_examine.clone(), t.institution);
                let campaign = campaign.clone();
                Box::new(move |i| {
                    let body = json!({"resident_id": ids[i], "examined_on": day(0), "institution_id": institution});
                    (format!("{campaign}/exams"), Some(body))
                })
            },
            [201, 404, 403, 403, 201, 403],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/residents/{resident_id}/examined-elsewhere",
            {
                let ids = t.elsewhere.clone();
                let campaign = campaign.clone();
                Box::new(move |i| {
                    let body =
                        json!({"examined_on": day(0), "place": "伊宁市", "examiner": "伊宁市医院"});
                    (
                        format!("{campaign}/residents/{}/examined-elsewhere", ids[i]),
                        Some(body),
                    )
                })
            },
            [201, 404, 201, 201, 403, 403],
        ),
        Case {
            csv: Some(format!(
                "身份证号,体检日期,体检机构\n{},{},INST-{TOWNSHIP}\n",
                resident_id(1, "19700101"),
                day(0)
            )),
            ..case(
                Method::POST,
                "/api/v1/campaigns/{id}/exams/import",
                fixed(format!("{campaign}/exams/import"), None),
                [200, 200, 403, 403, 200, 403],
            )
        },
        case(
            Method::GET,
            "/api/v1/exams/{id}/evidence",
            fixed(format!("/api/v1/exams/{}/evidence", t.evidence_exam), None),
            [200, 404, 200, 200, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/residents/{id}/messages",
            fixed(format!("{resident}/messages"), None),
            [200, 404, 200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/api/v1/appointments/{id}/messages",
            fixed(
                format!("/api/v1/appointments/{}/messages", t.appointment),
                None,
            ),
            [200, 404, 200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/waves",
            fixed(format!("{campaign}/waves"), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/waves",
            fixed(
                format!("{campaign}/waves"),
                Some(json!({"name": "春节", "window_from": day(1), "window_to": day(20)})),
            ),
            [201, 201, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/waves/{id}",
            fixed(format!("/api/v1/waves/{}", t.wave), None),
            [200, 404, 200, 200, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/waves/{id}/messages",
            fixed(format!("/api/v1/waves/{}/messages", t.wave), None),
            [200, 404, 200, 200, 403, 200],
        ),
        case(
            Method::POST,
            "/api/v1/waves/{id}/cancel",
            each(&t.waves, |w| format!("/api/v1/waves/{w}/cancel"), None),
            [200, 404, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/outbox/health",
            fixed("/api/v1/outbox/health".into(), None),
            [200, 200, 403, 403, 403, 200],
        ),
        case(
            Method::POST,
            "/api/v1/messages/{id}/resend",
            each(&t.failed, |m| format!("/api/v1/messages/{m}/resend"), None),
            [201, 404, 201, 201, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/tasks",
            fixed("/api/v1/tasks".into(), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::POST,
            "/api/v1/tasks/{id}/done",
            each(&t.tasks, |id| format!("/api/v1/tasks/{id}/done"), None),
            [204, 404, 204, 204, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/replies",
            fixed("/api/v1/replies".into(), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/residents/{resident_id}/attempts",
            fixed(
                format!("{campaign}/residents/{}/attempts", t.resident),
                Some(
                    json!({"channel": "phone_call", "contact": "own_phone", "outcome": "no_answer"}),
                ),
            ),
            [201, 404, 201, 201, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/residents/{resident_id}/attempts",
            fixed(
                format!("{campaign}/residents/{}/attempts", t.resident),
                None,
            ),
            [200, 404, 200, 200, 403, 200],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/residents/{resident_id}/refusals",
            {
                let residents = t.to_refuse.clone();
                let witness = t.user;
                // A signature of each caller's own (the same image twice is refused as a copy);
                // the witness is a cadre of the village (office users cannot witness).
                Box::new(move |i| {
                    (
                        format!(
                            "/api/v1/campaigns/{campaign_id}/residents/{}/refusals",
                            residents[i]
                        ),
                        Some(json!({"reason": "unwilling", "signer_name": "本人",
                                    "signer_relation": "self",
                                    "witness_user_id": witness,
                                    "signature_strokes": crate::refusals::strokes()})),
                    )
                })
            },
            [201, 404, 201, 201, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/residents/{resident_id}/refusals",
            fixed(
                format!("{campaign}/residents/{}/refusals", t.resident),
                None,
            ),
            [200, 404, 200, 200, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/refusals",
            fixed(format!("{campaign}/refusals"), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/refusals/{id}",
            fixed(format!("/api/v1/refusals/{}", t.refusal), None),
            [200, 404, 200, 200, 403, 200],
        ),
        case(
            Method::POST,
            "/api/v1/refusals/{id}/confirm",
            each(
                &t.to_confirm,
                |r| format!("/api/v1/refusals/{r}/confirm"),
                Some(json!({})),
            ),
            [200, 404, 403, 403, 403, 403],
        ),
        case(
            Method::POST,
            "/api/v1/refusals/{id}/return",
            each(
                &t.to_return,
                |r| format!("/api/v1/refusals/{r}/return"),
                Some(json!({"note": "签名不清晰"})),
            ),
            [200, 404, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/refusals/{id}/signature",
            fixed(format!("/api/v1/refusals/{}/signature", t.refusal), None),
            [200, 404, 200, 403, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/refusals/verify",
            fixed("/api/v1/refusals/verify".into(), None),
            [200, 200, 403, 403, 403, 200],
        ),
        // Reports: every reader gets the figures of their own scope (the other county's
        // office gets its own villages, none of ours); institutions none.
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/reports/progress",
            fixed(format!("{campaign}/reports/progress?by=village"), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/reports/series",
            fixed(format!("{campaign}/reports/series?by=village&days=3"), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/reports/rankings",
            fixed(format!("{campaign}/reports/rankings"), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/reports/contacts",
            fixed(format!("{campaign}/reports/contacts"), None),
            [200, 200, 200, 200, 403, 200],
        ),
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/reports/refresh",
            fixed(format!("{campaign}/reports/refresh"), Some(json!({}))),
            [200, 200, 403, 403, 403, 403],
        ),
        case(
            Method::GET,
            "/api/v1/campaigns/{id}/bulletins",
            fixed(format!("{campaign}/bulletins"), None),
            [200, 200, 403, 403, 403, 200],
        ),
        // No recipients are configured here: the office is told so (409).
        case(
            Method::POST,
            "/api/v1/campaigns/{id}/bulletins",
            fixed(
                format!("{campaign}/bulletins"),
                Some(json!({"kind": "daily"})),
            ),
            [409, 409, 403, 403, 403, 403],
        ),
        // Endpoints that change the caller's own session are checked for "no token" only here
        // (their behaviour is covered in auth.rs).
        case(
            Method::PUT,
            "/api/v1/me/password",
            fixed(
                "/api/v1/me/password".into(),
                Some(json!({"current_password": "x", "new_password": "y"})),
            ),
            [0; 6],
        ),
        case(
            Method::POST,
            "/api/v1/auth/logout",
            fixed("/api/v1/auth/logout".into(), None),
            [0; 6],
        ),
    ]
}

fn day(offset: i64) -> chrono::NaiveDate {
    outreach::registry::today() + chrono::Duration::days(offset)
}

async fn resident(app: &crate::helpers::TestApp, n: u32) -> i32 {
    let new = outreach::registry::NewResident {
        name: format!("居民{n}"),
        id_number: resident_id(n, "19700101"),
        village_code: VILLAGE.to_owned(),
        phone: Some("13800001111".to_owned()),
        relative_name: None,
        relative_relation: None,
        relative_phone: None,
        migrant_type: Some(outreach::registry::MigrantType::OutOfRegion),
        permit_since: None,
        special: None,
        current_address: None,
        wechat_openid: None,
        email: None,
        language: None,
    };
    outreach::flows::registry::create(
        &app.db,
        &app.state.privacy,
        &outreach::auth::Actor::cli(),
        new,
    )
    .await
    .unwrap()
    .id
}

/// A county-wide wave, six more to cancel, six failed messages and six open tasks, all of
/// `resident` (a migrant of the village).
async fn messaging_targets(
    app: &crate::helpers::TestApp,
    campaign: i32,
    resident: i32,
) -> (i32, Vec<i32>, Vec<i32>, Vec<i32>) {
    use sea_orm::ConnectionTrait;
    let wave = |name: &str| outreach::outreach::waves::NewWave {
        name: name.to_owned(),
        audience: outreach::outreach::waves::Audience {
            area: Some(COUNTY.to_owned()),
            ..Default::default()
        },
        window_from: day(1),
        window_to: day(20),
        send_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    };
    let mut waves = Vec::new();
    for i in 0..7 {
        waves.push(
            outreach::flows::messaging::waves::create(
                &app.db,
                &Actor::cli(),
                campaign,
                wave(&format!("批次{i}")),
            )
            .await
            .unwrap()
            .id,
        );
    }
    let now = chrono::Utc::now();
    let mut failed = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut planned = outreach::outreach::outbox::immediate(
            campaign,
            resident,
            outreach::outreach::MessageKind::MigrantWave,
            None,
            format!("matrix:{i}"),
            now,
        );
        planned.expires_at = now + chrono::Duration::days(3);
        outreach::outreach::outbox::insert(&app.db, &[planned], now)
            .await
            .unwrap();
        let row = app
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                app.db.get_database_backend(),
                format!(
                    "UPDATE messages SET state = 'failed', failed_at = created_at \
                     WHERE idempotency_key = 'matrix:{i}' RETURNING id"
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        failed.push(row.try_get::<i32>("", "id").unwrap());
        outreach::outreach::tasks::create(
            &app.db,
            outreach::outreach::tasks::NewTask {
                campaign_id: campaign,
                resident_id: resident,
                village_code: VILLAGE.to_owned(),
                kind: outreach::outreach::tasks::TaskKind::Unreachable,
                dedupe_key: format!("matrix:{i}"),
                message_id: None,
                reply_id: None,
                note: None,
            },
            now,
        )
        .await
        .unwrap();
    }
    let rows = app
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            "SELECT id FROM outreach_tasks ORDER BY id".to_owned(),
        ))
        .await
        .unwrap();
    for row in rows {
        tasks.push(row.try_get::<i32>("", "id").unwrap());
    }
    let first = waves.remove(0);
    (first, waves, failed, tasks)
}

/// Per user: a resident ready to be registered as refusing, a pending registration to
/// confirm and one to return; and one more registration to read.
async fn refusal_targets(
    app: &crate::helpers::TestApp,
    campaign: i32,
    residents: &[i32],
) -> (Vec<i32>, Vec<i32>, Vec<i32>, i32) {
    let mut registrations = Vec::new();
    for (i, resident) in residents.iter().enumerate() {
        crate::refusals::enough_contact(app, campaign, *resident).await;
        if i < 6 {
            continue;
        }
        let new: outreach::refusal::NewRegistration = serde_json::from_value(json!({
            "reason": "unwilling", "signer_name": "本人", "signer_relation": "self",
            "signature_strokes": crate::refusals::strokes(),
        }))
        .unwrap();
        registrations.push(
            outreach::flows::refusals::register(
                &app.db,
                &Default::default(),
                &Actor::cli(),
                campaign,
                *resident,
                new,
            )
            .await
            .unwrap()
            .id,
        );
    }
    (
        residents[..6].to_vec(),
        registrations[..6].to_vec(),
        registrations[6..12].to_vec(),
        registrations[12],
    )
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
    let (user, _) = app.user("m.target", Role::Cadre, VILLAGE).await;
    let mut next = 0;
    let mut fresh = || {
        next += 1;
        next
    };
    let mut ids = Vec::new();
    for _ in 0..19 {
        ids.push(resident(&app, fresh()).await);
    }
    let campaign = app.open_campaign().await;
    let institution = outreach::institution::find_by_code(&app.db, &format!("INST-{TOWNSHIP}"))
        .await
        .unwrap()
        .unwrap()
        .id;
    let mut drafts = Vec::new();
    let mut closable = Vec::new();
    for i in 0..6 {
        let draft = |year| outreach::campaign::NewCampaign {
            year,
            name: None,
            reference_date: None,
            timezone: None,
            quiet_hours: None,
            cohorts: None,
            targets: None,
            phases: Default::default(),
            refusal_rule: None,
        };
        let d = outreach::flows::campaigns::create(&app.db, &Actor::cli(), draft(2060 + i))
            .await
            .unwrap()
            .id();
        drafts.push(d);
        let c = outreach::flows::campaigns::create(&app.db, &Actor::cli(), draft(2070 + i))
            .await
            .unwrap()
            .id();
        if i < 2 {
            outreach::flows::campaigns::open(&app.db, &Actor::cli(), c)
                .await
                .unwrap();
        }
        closable.push(c);
    }
    let mut group = |n: usize| {
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(fresh());
        }
        ids
    };
    let numbers = group(6 * 6 + 2);
    let mut more = Vec::new();
    for n in numbers {
        more.push(resident(&app, n).await);
    }
    let booked = outreach::flows::booking::book(
        &app.db,
        &Actor::cli(),
        campaign,
        outreach::appointment::BookingRequest {
            institution_id: institution,
            day: day(0),
            resident_ids: more[18..37].to_vec(),
            client_key: None,
        },
        &Default::default(),
    )
    .await
    .unwrap();
    let appointment_ids: Vec<i32> = booked.appointments.iter().map(|a| a.id).collect();
    let evidence = outreach::flows::exams::record_elsewhere(
        &app.db,
        &Actor::cli(),
        campaign,
        more[37],
        outreach::exam::ElsewhereExam {
            examined_on: day(0),
            place: "乌鲁木齐".into(),
            examiner: "体检中心".into(),
            note: None,
            evidence_base64: Some("aGVsbG8=".into()),
            evidence_name: Some("form.txt".into()),
            evidence_type: Some("text/plain".into()),
        },
    )
    .await
    .unwrap();
    let (wave, waves, failed, tasks) = messaging_targets(&app, campaign, ids[0]).await;
    let mut refusing = Vec::new();
    for _ in 0..19 {
        let n = fresh();
        refusing.push(resident(&app, n).await);
    }
    let (to_refuse, to_confirm, to_return, refusal) =
        refusal_targets(&app, campaign, &refusing).await;
    let targets = Targets {
        to_refuse,
        to_confirm,
        to_return,
        refusal,
        wave,
        waves,
        failed,
        tasks,
        user,
        resident: ids[0],
        deceased: ids[1..7].to_vec(),
        moved_out: ids[7..13].to_vec(),
        moved: ids[13..19].to_vec(),
        campaign,
        institution,
        drafts,
        closable,
        to_book: more[0..6].to_vec(),
        to_examine: more[6..12].to_vec(),
        elsewhere: more[12..18].to_vec(),
        to_reschedule: appointment_ids[0..6].to_vec(),
        to_cancel: appointment_ids[6..12].to_vec(),
        to_attend: appointment_ids[12..18].to_vec(),
        appointment: appointment_ids[18],
        evidence_exam: evidence.id,
    };

    let mut failures = Vec::new();
    for case in cases(&targets) {
        let (path, body) = (case.request)(0);
        let anonymous = app.request(case.method.clone(), &path, None, body).await;
        if anonymous.status() != StatusCode::UNAUTHORIZED {
            failures.push(format!(
                "{} {path} without token: {}",
                case.method,
                anonymous.status()
            ));
        }
        for (i, token) in tokens.iter().enumerate() {
            if case.expected[i] == 0 {
                continue;
            }
            let (path, body) = (case.request)(i);
            let response = match &case.csv {
                Some(csv) => app.post_csv(&path, token, csv.clone()).await,
                None => {
                    app.request(case.method.clone(), &path, Some(token), body)
                        .await
                }
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            if status != case.expected[i] {
                failures.push(format!(
                    "{} {path} as {}: {status}, expected {} — {text}",
                    case.method, USERS[i], case.expected[i]
                ));
            }
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status >= 400 && body["error"]["code"].as_str().is_none() {
                failures.push(format!(
                    "{} {path} as {}: no error envelope",
                    case.method, USERS[i]
                ));
            }
            // Lists are not refused outright; what the other county reads must not include ours.
            if USERS[i] == "office_other"
                && case.method == Method::GET
                && status == 200
                && (text.contains(VILLAGE)
                    || (path.starts_with("/api/v1/users")
                        && text.contains(&format!("\"id\":{user},"))))
            {
                failures.push(format!(
                    "{} {path} as office_other leaks the other county: {text}",
                    case.method
                ));
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
    let targets = Targets {
        user: 1,
        resident: 1,
        deceased: vec![1; 6],
        moved_out: vec![1; 6],
        moved: vec![1; 6],
        campaign: 1,
        institution: 1,
        drafts: vec![1; 6],
        closable: vec![1; 6],
        to_book: vec![1; 6],
        to_examine: vec![1; 6],
        elsewhere: vec![1; 6],
        to_reschedule: vec![1; 6],
        to_cancel: vec![1; 6],
        to_attend: vec![1; 6],
        appointment: 1,
        evidence_exam: 1,
        wave: 1,
        waves: vec![1; 6],
        failed: vec![1; 6],
        tasks: vec![1; 6],
        to_refuse: vec![1; 6],
        to_confirm: vec![1; 6],
        to_return: vec![1; 6],
        refusal: 1,
    };
    let mut covered: BTreeSet<(String, String)> = cases(&targets)
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

/// An institution's staff see the residents booked with it or living in the areas it serves,
/// not the rest of their township, and of them only what a clinic needs.
#[tokio::test]
async fn institution_staff_see_only_their_patients_and_what_a_clinic_needs() {
    use outreach::registry::{MigrantType, Special};

    const NEIGHBOUR_VILLAGE: &str = "654025100202";
    let app = spawn_app().await;
    app.seed_areas().await;
    let cli = Actor::cli();
    // The clinic serves both villages of the township while the booking is made, then only
    // the first: the resident booked in the second stays visible, her neighbour does not.
    let clinic = app
        .institution("CLINIC-1", TOWNSHIP, &[VILLAGE, NEIGHBOUR_VILLAGE], 50)
        .await;
    let (_, staff) = app
        .user_at(
            "clinic.staff",
            Role::Institution,
            TOWNSHIP,
            Some("CLINIC-1".into()),
        )
        .await;
    let (_, township) = app.user("township.s", Role::Township, TOWNSHIP).await;
    let served = crate::campaigns::add_resident(
        &app,
        resident_id(1, "19600101"),
        VILLAGE,
        Some(MigrantType::OutOfRegion),
        Some(Special::Detained),
    )
    .await;
    let booked = crate::campaigns::add_resident(
        &app,
        resident_id(2, "19600101"),
        NEIGHBOUR_VILLAGE,
        None,
        None,
    )
    .await;
    let neighbour = crate::campaigns::add_resident(
        &app,
        resident_id(3, "19600101"),
        NEIGHBOUR_VILLAGE,
        None,
        None,
    )
    .await;
    let campaign = app.open_campaign().await;
    outreach::flows::booking::book(
        &app.db,
        &cli,
        campaign,
        outreach::appointment::BookingRequest {
            institution_id: clinic,
            day: outreach::registry::today() + chrono::Duration::days(1),
            resident_ids: vec![booked],
            client_key: None,
        },
        &app.state.settings.messaging.outbox.reminders,
    )
    .await
    .unwrap();
    outreach::flows::institutions::update(
        &app.db,
        &cli,
        clinic,
        outreach::institution::InstitutionChanges {
            name: None,
            address: None,
            daily_capacity: None,
            closed_weekdays: None,
            serves: Some(vec![VILLAGE.into()]),
            active: None,
        },
    )
    .await
    .unwrap();

    let ids = |page: &Value| -> Vec<i64> {
        page["residents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let listed: Value = app
        .get("/api/v1/residents", &staff)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&listed), [served as i64, booked as i64]);
    // The township officer of the same township sees all three, with every field.
    let all: Value = app
        .get("/api/v1/residents", &township)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&all), [served as i64, booked as i64, neighbour as i64]);
    assert_eq!(all["residents"][0]["migrant_type"], "out_of_region");
    assert_eq!(all["residents"][0]["special"], "detained");
    // Listed for the clinic: no migrant type, no special situation (not even as null).
    let first = listed["residents"][0].as_object().unwrap();
    assert_eq!(first["name"], all["residents"][0]["name"]);
    assert!(first["id_number"].as_str().unwrap().contains('*'));
    assert!(!first.contains_key("migrant_type") && !first.contains_key("special"));
    // A filter cannot get around it either.
    let detained: Value = app
        .get("/api/v1/residents?special=detained", &staff)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&detained), [served as i64]);

    // The detail: what a clinic needs, nothing of the migrant book or the relative.
    let detail = app
        .get(&format!("/api/v1/residents/{served}"), &staff)
        .await;
    assert_eq!(detail.status(), StatusCode::OK);
    let detail: Value = detail.json().await.unwrap();
    let detail = detail.as_object().unwrap();
    for kept in [
        "name",
        "sex",
        "birth_date",
        "age",
        "village_code",
        "id_number",
        "phone",
        "language",
    ] {
        assert!(detail.contains_key(kept), "{kept} kept");
    }
    for withheld in [
        "migrant_type",
        "special",
        "permit_since",
        "current_address",
        "relative_name",
        "relative_relation",
        "relative_phone",
        "wechat_openid",
        "email",
    ] {
        assert!(!detail.contains_key(withheld), "{withheld} withheld");
    }
    let full: Value = app
        .get(&format!("/api/v1/residents/{served}"), &township)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["special"], "detained");
    assert!(full.as_object().unwrap().contains_key("current_address"));
    assert_eq!(
        app.get(&format!("/api/v1/residents/{booked}"), &staff)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/residents/{neighbour}"), &staff)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // The migrant book is not theirs.
    assert_eq!(
        app.get("/api/v1/migrant-book", &staff).await.status(),
        StatusCode::FORBIDDEN
    );
    // Nor the campaign row's migrant type and situation, nor the neighbour's row.
    let row = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/residents/{served}"),
            &staff,
        )
        .await;
    assert_eq!(row.status(), StatusCode::OK);
    let row: Value = row.json().await.unwrap();
    let row = row.as_object().unwrap();
    assert!(row.contains_key("stage"));
    assert!(!row.contains_key("migrant_type") && !row.contains_key("special"));
    let officer_row: Value = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/residents/{served}"),
            &township,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(officer_row["special"], "detained");
    // The key groups and the messages of a resident follow the same rule.
    for suffix in ["tags", "messages"] {
        let status = |id: i32| {
            let path = format!("/api/v1/residents/{id}/{suffix}");
            let app = &app;
            let staff = &staff;
            async move { app.get(&path, staff).await.status() }
        };
        assert_eq!(status(served).await, StatusCode::OK, "{suffix}");
        assert_eq!(status(neighbour).await, StatusCode::NOT_FOUND, "{suffix}");
    }
    assert_eq!(
        app.get(
            &format!("/api/v1/campaigns/{campaign}/residents/{neighbour}"),
            &staff
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
}
