//! Refusal registration: the N/M contact rule at its edges, each bad input refused with
//! nothing stored, office review and supersede, revocation by a later exam, the hash chain
//! catching a record altered in the database, and who may see a signature.

use base64::Engine;
use chrono::{Duration, Utc};
use entities::users::Role;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use outreach::auth::Actor;
use outreach::contact::{ContactChannel, ContactUsed, NewAttempt, Outcome};

use crate::campaigns::{add_resident, row};
use crate::helpers::{
    COUNTY, OTHER_VILLAGE, TOWNSHIP, TestApp, VILLAGE, error_code, resident_id, spawn_app_with,
};

/// A signature as a signature pad sends it: one zig-zag stroke, a little different each time
/// (as two people's signatures are; the same image twice is refused as a copy).
pub fn strokes() -> Value {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (dx, dy) = (n % 40, (n / 40) % 40);
    json!({
        "width": 400,
        "height": 150,
        "strokes": [[[20, 110], [80 + dx, 30], [140, 120 - dy], [200, 40], [260, 115], [320, 35],
                     [380, 100]]],
    })
}

/// A PNG of `width` × `height`, white, with a black band across the middle when `ink`.
pub fn png(width: u32, height: u32, ink: bool) -> Vec<u8> {
    let mut pixels = vec![255u8; (width * height) as usize];
    if ink {
        for y in height / 2 - 3..height / 2 + 3 {
            for x in width / 10..width * 9 / 10 {
                pixels[(y * width + x) as usize] = 0;
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&pixels).unwrap();
    }
    out
}

fn registration(signature: Value) -> Value {
    let mut body = json!({
        "reason": "unwilling",
        "signer_name": "王某某",
        "signer_relation": "self",
        "location": {"latitude": 43.43, "longitude": 83.26, "address": "阿勒玛勒村3组"},
    });
    body.as_object_mut()
        .unwrap()
        .extend(signature.as_object().unwrap().clone());
    body
}

fn with_strokes() -> Value {
    registration(json!({"signature_strokes": strokes()}))
}

/// Logs an attempt as `actor` (library call: set-up, not the thing tested).
pub async fn attempt(
    app: &TestApp,
    actor: &Actor,
    campaign: i32,
    resident: i32,
    days_ago: i64,
    outcome: Outcome,
) -> i32 {
    outreach::flows::attempts::record(
        &app.db,
        actor,
        campaign,
        resident,
        NewAttempt {
            attempted_at: Some(Utc::now() - Duration::days(days_ago) - Duration::minutes(1)),
            channel: ContactChannel::PhoneCall,
            contact: ContactUsed::OwnPhone,
            outcome,
            note: None,
            client_key: None,
        },
    )
    .await
    .unwrap()
    .id
}

/// Three attempts on two days, the last one reaching the resident: what the default rule asks.
pub async fn enough_contact(app: &TestApp, campaign: i32, resident: i32) {
    let cli = Actor::cli();
    attempt(app, &cli, campaign, resident, 1, Outcome::NoAnswer).await;
    attempt(app, &cli, campaign, resident, 1, Outcome::NoAnswer).await;
    attempt(app, &cli, campaign, resident, 0, Outcome::ReachedRefused).await;
}

async fn count(app: &TestApp, table: &str) -> i64 {
    app.db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

async fn sql(app: &TestApp, statement: &str) -> Result<(), sea_orm::DbErr> {
    app.db
        .execute_raw(Statement::from_string(
            app.db.get_database_backend(),
            statement.to_owned(),
        ))
        .await
        .map(|_| ())
}

struct Setup {
    app: TestApp,
    campaign: i32,
    cadre: String,
    cadre_id: i32,
    office: String,
}

async fn setup() -> Setup {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    let campaign = app.open_campaign().await;
    let (cadre_id, cadre) = app.user("cadre.refusals", Role::Cadre, VILLAGE).await;
    let office = app.office_token().await;
    Setup {
        app,
        campaign,
        cadre,
        cadre_id,
        office,
    }
}

async fn new_resident(app: &TestApp, n: u32) -> i32 {
    add_resident(app, resident_id(n, "19600101"), VILLAGE, None, None).await
}

fn refusals_path(campaign: i32, resident: i32) -> String {
    format!("/api/v1/campaigns/{campaign}/residents/{resident}/refusals")
}

/// A registration with a drawn signature, as `token`; the answer's body.
async fn post_registration(app: &TestApp, token: &str, campaign: i32, resident: i32) -> Value {
    app.post(&refusals_path(campaign, resident), token, with_strokes())
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_contact_rule_holds_at_its_edges() {
    let s = setup().await;
    let (app, campaign) = (&s.app, s.campaign);
    let cli = Actor::cli();

    // Nothing documented yet: 422 saying how much is missing, nothing stored.
    let first = new_resident(app, 1).await;
    let path = refusals_path(campaign, first);
    let none = app.post(&path, &s.cadre, with_strokes()).await;
    assert_eq!(none.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let none: Value = none.json().await.unwrap();
    assert_eq!(none["error"]["code"], "insufficient_contact");
    assert_eq!(none["error"]["details"]["more_attempts"], 3);
    assert_eq!(none["error"]["details"]["more_days"], 2);
    assert!(
        none["error"]["message"]
            .as_str()
            .unwrap()
            .contains("再联系 3 次"),
        "{none}"
    );

    // Two attempts on two days, one reaching him: one attempt short.
    attempt(app, &cli, campaign, first, 1, Outcome::NoAnswer).await;
    attempt(app, &cli, campaign, first, 0, Outcome::ReachedRefused).await;
    let short: Value = app
        .post(&path, &s.cadre, with_strokes())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(short["error"]["code"], "insufficient_contact");
    assert_eq!(short["error"]["details"]["more_attempts"], 1);
    assert_eq!(short["error"]["details"]["more_days"], 0);
    assert_eq!(short["error"]["details"]["needs_reached"], false);
    assert_eq!(count(app, "refusal_records").await, 0);
    assert_eq!(count(app, "signature_blobs").await, 0, "nothing stored");

    // The third attempt (same day as another): exactly the rule.
    attempt(app, &cli, campaign, first, 0, Outcome::NoAnswer).await;
    let done = app.post(&path, &s.cadre, with_strokes()).await;
    assert_eq!(done.status(), StatusCode::CREATED);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["status"], "pending");
    assert_eq!(done["attempt_ids"].as_array().unwrap().len(), 3);
    assert_eq!(done["witness_user_id"], s.cadre_id);
    assert_eq!(done["reason_label"], "不愿意");
    assert_eq!(done["location"]["address"], "阿勒玛勒村3组");
    assert_eq!(count(app, "signature_blobs").await, 1);

    // Three attempts, all on one day: one more day needed.
    let second = new_resident(app, 2).await;
    for outcome in [
        Outcome::NoAnswer,
        Outcome::NoAnswer,
        Outcome::ReachedRefused,
    ] {
        attempt(app, &cli, campaign, second, 0, outcome).await;
    }
    let one_day = post_registration(app, &s.cadre, campaign, second).await;
    assert_eq!(one_day["error"]["details"]["more_attempts"], 0);
    assert_eq!(one_day["error"]["details"]["more_days"], 1);

    // Three attempts on two days, nobody ever reached: refused for that alone.
    let third = new_resident(app, 3).await;
    for days_ago in [2, 1, 0] {
        attempt(app, &cli, campaign, third, days_ago, Outcome::NoAnswer).await;
    }
    let unreached = post_registration(app, &s.cadre, campaign, third).await;
    assert_eq!(unreached["error"]["code"], "insufficient_contact");
    assert_eq!(unreached["error"]["details"]["more_attempts"], 0);
    assert_eq!(unreached["error"]["details"]["more_days"], 0);
    assert_eq!(unreached["error"]["details"]["needs_reached"], true);

    // Citing only some attempts: the rule counts those.
    let listed: Value = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/residents/{second}/attempts"),
            &s.cadre,
        )
        .await
        .json()
        .await
        .unwrap();
    let cited = listed["items"][0]["id"].clone();

    // The county makes the rule 2 attempts on 1 day: the second resident now qualifies, but
    // not when citing a single attempt.
    let patched = app
        .patch(
            &format!("/api/v1/campaigns/{campaign}"),
            &s.office,
            json!({"refusal_rule": {"min_attempts": 2, "min_days": 1}}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["refusal_rule"]["min_attempts"], 2);
    let mut one = with_strokes();
    one["attempt_ids"] = json!([cited]);
    let single: Value = app
        .post(&refusals_path(campaign, second), &s.cadre, one)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(single["error"]["details"]["more_attempts"], 1);
    let ok = app
        .post(&refusals_path(campaign, second), &s.cadre, with_strokes())
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);

    // A rule that makes no sense is refused.
    let bad = app
        .patch(
            &format!("/api/v1/campaigns/{campaign}"),
            &s.office,
            json!({"refusal_rule": {"min_attempts": 1, "min_days": 2}}),
        )
        .await;
    assert_eq!(
        error_code(bad, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_refusal_rule"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_nothing_stored() {
    let s = setup().await;
    let (app, campaign) = (&s.app, s.campaign);
    let resident = new_resident(app, 1).await;
    enough_contact(app, campaign, resident).await;
    let path = refusals_path(campaign, resident);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);

    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            registration(json!({"signature_png": b64(b"not a picture at all")})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_signature",
        ),
        (
            registration(json!({"signature_png": b64(&png(400, 150, false))})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_signature",
        ),
        (
            registration(json!({"signature_png": b64(&vec![7u8; 700 * 1024])})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "signature_too_large",
        ),
        (
            registration(
                json!({"signature_svg": "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"150\"></svg>"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_signature",
        ),
        (
            registration(json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "signature_required",
        ),
        (
            {
                let mut body = with_strokes();
                body["reason"] = json!("other");
                body
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_text_required",
        ),
        (
            {
                let mut body = with_strokes();
                body["attempt_ids"] = json!([999_999]);
                body
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_attempt",
        ),
        (
            {
                let mut body = with_strokes();
                body["location"] = json!({"latitude": 123.0, "longitude": 83.0});
                body
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_location",
        ),
    ];
    for (body, status, code) in cases {
        let response = app.post(&path, &s.cadre, body).await;
        assert_eq!(error_code(response, status).await, code);
    }
    // The blank PNG says why.
    let blank: Value = app
        .post(
            &path,
            &s.cadre,
            registration(json!({"signature_png": b64(&png(400, 150, false))})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(blank["error"]["details"]["problem"], "blank");
    assert!(blank["error"]["message"].as_str().unwrap().contains("空白"));
    assert_eq!(count(app, "refusal_records").await, 0);
    assert_eq!(count(app, "signature_blobs").await, 0);

    // Another village's cadre does not see the resident.
    let (_, stranger) = app.user("cadre.stranger", Role::Cadre, OTHER_VILLAGE).await;
    let outside = app.post(&path, &stranger, with_strokes()).await;
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);

    // A real PNG signature is accepted; a second open registration is not.
    let first = app
        .post(
            &path,
            &s.cadre,
            registration(json!({"signature_png": format!("data:image/png;base64,{}", b64(&png(400, 150, true)))})),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second = app.post(&path, &s.cadre, with_strokes()).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["error"]["code"], "open_registration");
    assert_eq!(second["error"]["details"]["registration_id"], first["id"]);
    assert_eq!(count(app, "refusal_records").await, 1);
    assert_eq!(count(app, "signature_blobs").await, 1);

    // The same image for another resident is a copy, not their signature.
    let copied = new_resident(app, 4).await;
    enough_contact(app, campaign, copied).await;
    let copy = app
        .post(
            &refusals_path(campaign, copied),
            &s.cadre,
            registration(json!({"signature_png": b64(&png(400, 150, true))})),
        )
        .await;
    assert_eq!(copy.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let copy: Value = copy.json().await.unwrap();
    assert_eq!(copy["error"]["details"]["problem"], "reused");

    // A resident already examined.
    let examined = new_resident(app, 2).await;
    enough_contact(app, campaign, examined).await;
    let exam = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{examined}/examined-elsewhere"),
            &s.cadre,
            json!({"examined_on": outreach::registry::today(), "place": "伊宁市人民医院",
                   "examiner": "体检科"}),
        )
        .await;
    assert_eq!(exam.status(), StatusCode::CREATED);
    let refused = app
        .post(&refusals_path(campaign, examined), &s.cadre, with_strokes())
        .await;
    assert_eq!(
        error_code(refused, StatusCode::CONFLICT).await,
        "already_examined"
    );

    // Attempts logged by the cadre of the village the resident has since moved from.
    let moved = new_resident(app, 3).await;
    enough_contact(app, campaign, moved).await;
    let old_cadre = Actor {
        user_id: Some(s.cadre_id),
        username: "cadre.refusals".into(),
        role: Role::Cadre,
        scope: outreach::auth::Scope::Within(outreach::area::AreaCode::parse(VILLAGE).unwrap()),
        request_id: None,
        token_id: None,
        institution_id: None,
    };
    let by_old = attempt(app, &old_cadre, campaign, moved, 0, Outcome::ReachedRefused).await;
    sql(
        app,
        &format!("UPDATE residents SET village_code = '{OTHER_VILLAGE}' WHERE id = {moved}"),
    )
    .await
    .unwrap();
    let mut body = with_strokes();
    body["attempt_ids"] = json!([by_old]);
    let foreign = app
        .post(&refusals_path(campaign, moved), &stranger, body)
        .await;
    assert_eq!(foreign.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let foreign: Value = foreign.json().await.unwrap();
    assert_eq!(foreign["error"]["code"], "attempt_out_of_scope");
    assert_eq!(foreign["error"]["details"]["attempt_ids"], json!([by_old]));
    assert_eq!(count(app, "refusal_records").await, 1, "nothing stored");
}

#[tokio::test]
async fn the_office_reviews_a_returned_one_is_superseded_and_an_exam_revokes() {
    let s = setup().await;
    let (app, campaign) = (&s.app, s.campaign);
    let resident = new_resident(app, 1).await;
    enough_contact(app, campaign, resident).await;
    let path = refusals_path(campaign, resident);
    let first: Value = app
        .post(&path, &s.cadre, with_strokes())
        .await
        .json()
        .await
        .unwrap();
    let first_id = first["id"].as_i64().unwrap();
    assert_eq!(
        row(app, campaign, resident).await.unwrap().stage,
        "reached",
        "a pending registration does not count as refused"
    );

    // Only the office reviews; returning needs a reason.
    let (_, township) = app.user("township.r", Role::Township, TOWNSHIP).await;
    let by_township = app
        .post(
            &format!("/api/v1/refusals/{first_id}/confirm"),
            &township,
            json!({}),
        )
        .await;
    assert_eq!(by_township.status(), StatusCode::FORBIDDEN);
    let no_reason = app
        .post(
            &format!("/api/v1/refusals/{first_id}/return"),
            &s.office,
            json!({}),
        )
        .await;
    assert_eq!(
        error_code(no_reason, StatusCode::UNPROCESSABLE_ENTITY).await,
        "note_required"
    );
    let returned = app
        .post(
            &format!("/api/v1/refusals/{first_id}/return"),
            &s.office,
            json!({"note": "签字人与本人关系填写有误"}),
        )
        .await;
    assert_eq!(returned.status(), StatusCode::OK);
    let returned: Value = returned.json().await.unwrap();
    assert_eq!(returned["status"], "returned");
    assert_eq!(returned["review_note"], "签字人与本人关系填写有误");
    let again = app
        .post(
            &format!("/api/v1/refusals/{first_id}/confirm"),
            &s.office,
            json!({}),
        )
        .await;
    assert_eq!(error_code(again, StatusCode::CONFLICT).await, "not_pending");

    // The cadre registers it again, correctly: the new one supersedes the returned one.
    let mut fixed = with_strokes();
    fixed["signer_relation"] = json!("guardian");
    fixed["signer_name"] = json!("王某（监护人）");
    let second = app.post(&path, &s.cadre, fixed).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    let second_id = second["id"].as_i64().unwrap();
    assert_eq!(second["supersedes"], first_id);
    let old: Value = app
        .get(&format!("/api/v1/refusals/{first_id}"), &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["status"], "superseded");
    assert_eq!(old["superseded_by"], second_id);
    assert_eq!(
        old["signer_relation"], "self",
        "the old record is unchanged"
    );

    // He had been booked; confirming the refusal gives the place back.
    let institution = app.institution("XY-WSY", TOWNSHIP, &[VILLAGE], 20).await;
    let booked = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/bookings"),
            &s.cadre,
            json!({"institution_id": institution,
                   "day": outreach::registry::today() + Duration::days(2),
                   "resident_ids": [resident]}),
        )
        .await;
    assert_eq!(booked.status(), StatusCode::CREATED);
    let booked: Value = booked.json().await.unwrap();
    let appointment = booked["appointments"][0]["id"].as_i64().unwrap();

    // Confirmed: the resident counts as refused.
    let confirmed = app
        .post(
            &format!("/api/v1/refusals/{second_id}/confirm"),
            &s.office,
            json!({"note": "材料齐全"}),
        )
        .await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let confirmed: Value = confirmed.json().await.unwrap();
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["status_label"], "已确认");
    let progress = row(app, campaign, resident).await.unwrap();
    assert_eq!(progress.stage, "refused");
    assert!(progress.refused_at.is_some());
    let cancelled: Value = app
        .get(&format!("/api/v1/appointments/{appointment}"), &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // The register, filtered by status, as JSON and downloads.
    let register = |query: &'static str| {
        let office = s.office.clone();
        async move {
            app.get(
                &format!("/api/v1/campaigns/{campaign}/refusals{query}"),
                &office,
            )
            .await
        }
    };
    let all: Value = register("").await.json().await.unwrap();
    assert_eq!(all["count"], 2);
    assert_eq!(all["by_status"]["confirmed"], 1);
    assert_eq!(all["by_status"]["superseded"], 1);
    let only: Value = register("?status=confirmed").await.json().await.unwrap();
    assert_eq!(only["count"], 1);
    assert_eq!(only["items"][0]["id"], second_id);
    assert!(
        only["items"][0]["id_number"]
            .as_str()
            .unwrap()
            .contains('*')
    );
    assert_eq!(only["items"][0]["village_name"], "阿勒玛勒村");
    let csv = register("?status=confirmed&format=csv").await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("refusal-register.csv")
    );
    let csv = csv.text().await.unwrap();
    assert!(csv.contains("身份证号") && csv.contains("已确认") && csv.contains("王某（监护人）"));
    assert!(!csv.contains(&resident_id(1, "19600101")), "masked");
    let xlsx = register("?format=xlsx").await.bytes().await.unwrap();
    assert_eq!(&xlsx[..2], b"PK");
    let revealed: Value = app
        .get(
            &format!("/api/v1/campaigns/{campaign}/refusals?reveal=true"),
            &s.cadre,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        revealed["items"][0]["id_number"],
        resident_id(1, "19600101")
    );
    let bad = register("?status=maybe").await;
    assert_eq!(
        error_code(bad, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_status"
    );

    // Examined later: the refusal is revoked by a new record, the row moves to examined.
    let exam = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/residents/{resident}/examined-elsewhere"),
            &s.cadre,
            json!({"examined_on": outreach::registry::today(), "place": "伊宁市人民医院",
                   "examiner": "体检科"}),
        )
        .await;
    assert_eq!(exam.status(), StatusCode::CREATED);
    let exam: Value = exam.json().await.unwrap();
    let revoked: Value = app
        .get(&format!("/api/v1/refusals/{second_id}"), &s.cadre)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    let events = revoked["events"].as_array().unwrap();
    assert_eq!(events.last().unwrap()["kind"], "revoked");
    assert_eq!(events.last().unwrap()["exam_record_id"], exam["id"]);
    assert_eq!(
        row(app, campaign, resident).await.unwrap().stage,
        "examined"
    );
    let history: Value = app.get(&path, &s.cadre).await.json().await.unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[0]["id"], second_id, "newest first");

    // Every step is audited and the chain holds.
    let audit: Value = app
        .get("/api/v1/audit?entity=refusal_record", &s.office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 5);
    let report: Value = app
        .get("/api/v1/refusals/verify", &s.office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"], 5);
}

#[tokio::test]
async fn the_chain_catches_a_record_altered_or_removed_in_the_database() {
    let s = setup().await;
    let (app, campaign) = (&s.app, s.campaign);
    let resident = new_resident(app, 1).await;
    enough_contact(app, campaign, resident).await;
    let registered = post_registration(app, &s.cadre, campaign, resident).await;
    let id = registered["id"].as_i64().unwrap();
    app.post(
        &format!("/api/v1/refusals/{id}/confirm"),
        &s.office,
        json!({}),
    )
    .await;
    let other = new_resident(app, 2).await;
    enough_contact(app, campaign, other).await;
    let untouched = post_registration(app, &s.cadre, campaign, other).await;
    let verify = || async {
        let response = app.get("/api/v1/refusals/verify", &s.office).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()
    };
    let clean = verify().await;
    assert_eq!(clean["ok"], true, "{clean}");
    assert_eq!(clean["records"], 3);
    assert_eq!(clean["residents"], 2);

    // The database itself refuses changes and deletions.
    let update = format!("UPDATE refusal_records SET reason_text = 'x' WHERE id = {id}");
    assert!(sql(app, &update).await.is_err());
    assert!(
        sql(app, &format!("DELETE FROM refusal_records WHERE id = {id}"))
            .await
            .is_err()
    );

    // Someone with the database's own rights drops the guard and rewrites the reason.
    let drop_guard = match app.db.get_database_backend() {
        DbBackend::Postgres => {
            "ALTER TABLE refusal_records DISABLE TRIGGER refusal_records_no_update"
        }
        _ => "DROP TRIGGER refusal_records_no_update",
    };
    sql(app, drop_guard).await.unwrap();
    sql(
        app,
        &format!("UPDATE refusal_records SET reason_code = 'examined_elsewhere' WHERE id = {id}"),
    )
    .await
    .unwrap();
    let tampered = verify().await;
    assert_eq!(tampered["ok"], false);
    let breaks = tampered["breaks"].as_array().unwrap();
    assert_eq!(breaks.len(), 1, "{tampered}");
    assert_eq!(breaks[0]["problem"], "altered");
    assert_eq!(breaks[0]["record_id"], id);
    assert_eq!(breaks[0]["resident_id"], resident);
    assert!(
        !breaks.iter().any(|b| b["record_id"] == untouched["id"]),
        "the other resident's chain holds"
    );

    // Rewritten with its hash recomputed, as someone who knows the scheme would: the chain
    // holds, the audit log does not agree.
    let other_id = untouched["id"].as_i64().unwrap();
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!(
                "SELECT {} FROM refusal_records WHERE id = {other_id}",
                outreach::refusal::chain::COLUMNS
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    let mut stored = outreach::refusal::chain::Stored::from_row(&row).unwrap();
    stored.content.reason_code = Some("seriously_ill".into());
    let forged = outreach::refusal::chain::hash(stored.seq, &stored.prev_hash, &stored.content);
    sql(
        app,
        &format!(
            "UPDATE refusal_records SET reason_code = 'seriously_ill', hash = '{forged}' \
             WHERE id = {other_id}"
        ),
    )
    .await
    .unwrap();
    let rewritten = verify().await;
    let breaks = rewritten["breaks"].as_array().unwrap();
    assert!(
        breaks
            .iter()
            .any(|b| b["record_id"] == other_id && b["problem"] == "altered"),
        "{rewritten}"
    );

    // The confirmation removed from the end of the chain is missed by the chain alone, not by
    // the audit log beside it.
    if app.db.get_database_backend() == DbBackend::Sqlite {
        sql(app, "DROP TRIGGER refusal_records_no_delete")
            .await
            .unwrap();
    }
    sql(
        app,
        &format!("DELETE FROM refusal_records WHERE registration_id = {id}"),
    )
    .await
    .unwrap();
    let removed = verify().await;
    let problems: Vec<&str> = removed["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["problem"].as_str().unwrap())
        .collect();
    assert!(problems.contains(&"missing"), "{removed}");

    // Cadres do not run the check.
    let cadre = app.get("/api/v1/refusals/verify", &s.cadre).await;
    assert_eq!(cadre.status(), StatusCode::FORBIDDEN);
}

/// The last `refusal.verify` entries `token` may read, newest first.
async fn checks(app: &TestApp, token: &str) -> Vec<Value> {
    let page: Value = app
        .get("/api/v1/audit?action=refusal.verify", token)
        .await
        .json()
        .await
        .unwrap();
    page["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_chain_check_is_recorded_in_the_audit_log_with_its_result() {
    let s = setup().await;
    let (app, campaign) = (&s.app, s.campaign);
    let resident = new_resident(app, 1).await;
    enough_contact(app, campaign, resident).await;
    let registered = post_registration(app, &s.cadre, campaign, resident).await;
    let id = registered["id"].as_i64().unwrap();
    app.post(
        &format!("/api/v1/refusals/{id}/confirm"),
        &s.office,
        json!({}),
    )
    .await;
    assert!(checks(app, &s.office).await.is_empty());

    // The office's check (as the review page runs it), within the county.
    let (office_id, _) = app.user("office.verify", Role::Office, COUNTY).await;
    let office = Actor {
        user_id: Some(office_id),
        username: "office.verify".into(),
        role: Role::Office,
        scope: outreach::auth::Scope::Within(outreach::area::AreaCode::parse(COUNTY).unwrap()),
        request_id: None,
        token_id: None,
        institution_id: None,
    };
    let report = outreach::flows::refusals::verify_and_record(&app.db, &office)
        .await
        .unwrap();
    assert!(report.ok);
    let entries = checks(app, &s.office).await;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry["actor_name"], "office.verify");
    assert_eq!(entry["entity"], "refusal_chain");
    assert_eq!(entry["area_code"], COUNTY);
    assert_eq!(entry["summary"]["ok"], true);
    assert_eq!(entry["summary"]["records"], 2);
    assert_eq!(entry["summary"]["residents"], 1);
    assert_eq!(entry["summary"]["breaks"], 0);
    assert_eq!(entry["summary"]["scope"], COUNTY);

    // A record rewritten behind the service's back: the command line's check (the whole
    // tree) finds it, and its entry, under the county, says so.
    let drop_guard = match app.db.get_database_backend() {
        DbBackend::Postgres => {
            "ALTER TABLE refusal_records DISABLE TRIGGER refusal_records_no_update"
        }
        _ => "DROP TRIGGER refusal_records_no_update",
    };
    sql(app, drop_guard).await.unwrap();
    sql(
        app,
        &format!("UPDATE refusal_records SET reason_code = 'seriously_ill' WHERE id = {id}"),
    )
    .await
    .unwrap();
    let report = outreach::flows::refusals::verify_and_record(&app.db, &Actor::cli())
        .await
        .unwrap();
    assert!(!report.ok);
    let entries = checks(app, &s.office).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let latest = &entries[0];
    assert_eq!(latest["actor_name"], "cli");
    assert_eq!(latest["actor_role"], "system");
    assert_eq!(latest["area_code"], COUNTY, "seen by the county's office");
    assert_eq!(latest["summary"]["ok"], false);
    assert_eq!(latest["summary"]["scope"], "all");
    assert_eq!(latest["summary"]["breaks"], 1);
    assert_eq!(latest["summary"]["problems"]["altered"], 1);
    assert_eq!(latest["summary"]["listed_breaks"][0]["record_id"], id);
    assert_eq!(
        latest["summary"]["listed_breaks"][0]["resident_id"],
        resident
    );

    // The other county's office sees the whole tree's check, not the first county's own; a
    // township's auditor sees no check of the county.
    let (_, yining) = app
        .user("office.yining", Role::Office, "654021000000")
        .await;
    let theirs = checks(app, &yining).await;
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["actor_name"], "cli");
    assert_eq!(theirs[0]["area_code"], "654021000000");
    let (_, auditor) = app.user("auditor.township", Role::Auditor, TOWNSHIP).await;
    assert!(checks(app, &auditor).await.is_empty());
}

#[tokio::test]
async fn a_signature_is_shown_to_those_allowed_and_every_view_is_audited() {
    let s = setup().await;
    let (app, campaign) = (&s.app, s.campaign);
    let resident = new_resident(app, 1).await;
    enough_contact(app, campaign, resident).await;
    let registered = post_registration(app, &s.cadre, campaign, resident).await;
    let path = format!("/api/v1/refusals/{}/signature", registered["id"]);
    let (_, neighbour) = app.user("cadre.neighbour", Role::Cadre, VILLAGE).await;
    let (_, township) = app.user("township.s", Role::Township, TOWNSHIP).await;
    let (_, other_township) = app
        .user("township.other", Role::Township, "654025101000")
        .await;
    let (_, auditor) = app
        .user("auditor.s", Role::Auditor, crate::helpers::COUNTY)
        .await;
    let (_, institution) = app.user("clinic.s", Role::Institution, TOWNSHIP).await;

    let mut shown = 0;
    for (who, token, expected) in [
        ("registering cadre", &s.cadre, StatusCode::OK),
        ("office", &s.office, StatusCode::OK),
        ("township", &township, StatusCode::OK),
        ("auditor", &auditor, StatusCode::OK),
        (
            "another cadre of the village",
            &neighbour,
            StatusCode::FORBIDDEN,
        ),
        ("another township", &other_township, StatusCode::NOT_FOUND),
        ("institution", &institution, StatusCode::FORBIDDEN),
    ] {
        let response = app.get(&path, token).await;
        assert_eq!(response.status(), expected, "{who}");
        if expected == StatusCode::OK {
            shown += 1;
            assert_eq!(response.headers()["content-type"], "image/png");
            assert_eq!(response.headers()["cache-control"], "no-store");
            let bytes = response.bytes().await.unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(digest, registered["signature_sha256"].as_str().unwrap());
        } else {
            let body: Value = response.json().await.unwrap();
            assert!(body["error"]["code"].is_string(), "{who}: envelope");
        }
    }
    let audit: Value = app
        .get("/api/v1/audit?action=refusal.signature_view", &s.office)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), shown);
}

#[tokio::test]
async fn signatures_can_live_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let app = spawn_app_with(move |settings| settings.signatures.dir = Some(root)).await;
    app.seed_areas().await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.dir", Role::Cadre, VILLAGE).await;
    let resident = new_resident(&app, 1).await;
    enough_contact(&app, campaign, resident).await;
    let registered = post_registration(&app, &cadre, campaign, resident).await;
    let sha = registered["signature_sha256"].as_str().unwrap();
    let file = dir.path().join(&sha[..2]).join(format!("{sha}.png"));
    assert!(file.exists(), "stored as a file");
    assert_eq!(
        count(&app, "signature_blobs").await,
        0,
        "not in the database"
    );
    let served = app
        .get(
            &format!("/api/v1/refusals/{}/signature", registered["id"]),
            &cadre,
        )
        .await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(
        served.bytes().await.unwrap().as_ref(),
        std::fs::read(&file).unwrap()
    );
}

#[tokio::test]
async fn a_chain_that_moved_villages_verifies_from_either_side() {
    let s = setup().await;
    let (app, campaign) = (&s.app, s.campaign);
    let resident = new_resident(app, 1).await;
    enough_contact(app, campaign, resident).await;
    let first = post_registration(app, &s.cadre, campaign, resident).await;
    let first_id = first["id"].as_i64().unwrap();
    app.post(
        &format!("/api/v1/refusals/{first_id}/return"),
        &s.office,
        json!({"note": "请补充说明"}),
    )
    .await;
    // The household moves to a village of the other township; its cadre registers again.
    let moved = app
        .post(
            &format!("/api/v1/residents/{resident}/move"),
            &s.office,
            json!({"village_code": OTHER_VILLAGE, "reason": "户口迁移"}),
        )
        .await;
    assert_eq!(
        moved.status(),
        StatusCode::OK,
        "{}",
        moved.text().await.unwrap()
    );
    let (_, new_cadre) = app.user("cadre.new", Role::Cadre, OTHER_VILLAGE).await;
    let second = app
        .post(
            &refusals_path(campaign, resident),
            &new_cadre,
            with_strokes(),
        )
        .await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["supersedes"], first_id);
    assert_eq!(second["village_code"], OTHER_VILLAGE);
    for (name, area) in [("auditor.old", TOWNSHIP), ("auditor.new", "654025101000")] {
        let (_, auditor) = app.user(name, Role::Auditor, area).await;
        let report: Value = app
            .get("/api/v1/refusals/verify", &auditor)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(report["ok"], true, "{name}: {report}");
        assert_eq!(report["records"], 3, "{name}: the whole chain");
    }
}

#[tokio::test]
async fn a_refused_registration_leaves_no_file_in_the_signature_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let app = spawn_app_with(move |settings| settings.signatures.dir = Some(root)).await;
    app.seed_areas().await;
    let campaign = app.open_campaign().await;
    let (_, cadre) = app.user("cadre.dir", Role::Cadre, VILLAGE).await;
    let resident = new_resident(&app, 1).await;
    let refused = app
        .post(&refusals_path(campaign, resident), &cadre, with_strokes())
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn the_witness_is_a_cadre_or_officer_covering_the_village() {
    let s = setup().await;
    let app = &s.app;
    let campaign = s.campaign;
    let resident = new_resident(app, 1).await;
    enough_contact(app, campaign, resident).await;
    let (admin_id, _) = app.user("admin.county", Role::Office, COUNTY).await;
    let (neighbour_id, _) = app.user("cadre.next", Role::Cadre, OTHER_VILLAGE).await;
    let (clinic_id, _) = app.user("clinic.w", Role::Institution, TOWNSHIP).await;
    let (officer_id, _) = app.user("officer.w", Role::Township, TOWNSHIP).await;

    // The county administrator, a cadre of another village and institution staff are refused,
    // in Chinese, and nothing is stored.
    for witness in [admin_id, neighbour_id, clinic_id] {
        let mut body = with_strokes();
        body["witness_user_id"] = json!(witness);
        let response = app
            .post(&refusals_path(campaign, resident), &s.cadre, body)
            .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "witness_out_of_scope");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("见证人应为负责该村"),
            "{body}"
        );
    }
    assert_eq!(count(app, "refusal_records").await, 0);

    // An office user must name the witness; naming the township officer works.
    let response = app
        .post(
            &refusals_path(campaign, resident),
            &s.office,
            with_strokes(),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "witness_required"
    );
    let mut body = with_strokes();
    body["witness_user_id"] = json!(officer_id);
    let response = app
        .post(&refusals_path(campaign, resident), &s.office, body)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let registered: Value = response.json().await.unwrap();
    assert_eq!(registered["witness_user_id"], officer_id);
    assert_eq!(count(app, "refusal_records").await, 1);
}

#[tokio::test]
async fn a_registration_sent_again_with_its_client_key_is_registered_once() {
    let s = setup().await;
    let (app, campaign) = (&s.app, s.campaign);
    let resident = new_resident(app, 40).await;
    let neighbour = new_resident(app, 41).await;
    enough_contact(app, campaign, resident).await;
    enough_contact(app, campaign, neighbour).await;
    let with_key = |key: &str| {
        let mut body = with_strokes();
        body["client_key"] = json!(key);
        body
    };
    let path = refusals_path(campaign, resident);
    let body = with_key("5ea1ed0000000001");
    let first = app.post(&path, &s.cadre, body.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    // The upload is repeated (the answer was lost on the way back to the phone): the same
    // registration is the answer, not "already registered", and the chain holds one record.
    let again = app.post(&path, &s.cadre, body).await;
    assert!(again.status().is_success(), "{}", again.status());
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(count(app, "refusal_records").await, 1);
    // The key is that registration's: for another resident it is refused.
    let other = app
        .post(
            &refusals_path(campaign, neighbour),
            &s.cadre,
            with_key("5ea1ed0000000001"),
        )
        .await;
    assert_eq!(error_code(other, StatusCode::CONFLICT).await, "conflict");
    assert_eq!(count(app, "refusal_records").await, 1);
    // Without a key a second registration of the same resident is still refused.
    let twice = app.post(&path, &s.cadre, with_strokes()).await;
    assert_eq!(
        error_code(twice, StatusCode::CONFLICT).await,
        "open_registration"
    );
}
