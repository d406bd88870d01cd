//! The pages as the server answers them (the browser tests in `tests/browser/` drive them in
//! chromium): sign-in, the session cookie, who may open the cadre pages, anti-forgery checks.

use entities::users::Role;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};

use crate::helpers::{COUNTY, PASSWORD, TOWNSHIP, TestApp, VILLAGE, spawn_app_with};

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in through the form; the session cookie's `name=value`.
async fn sign_in(app: &TestApp, username: &str) -> String {
    let response = browser()
        .post(app.url("/"))
        .form(&[("username", username), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

async fn get(path: &str, app: &TestApp, cookie: &str) -> reqwest::Response {
    browser()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_sends_each_role_to_its_pages_and_keeps_others_out() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    app.open_campaign().await;
    app.user("cadre.c", Role::Cadre, VILLAGE).await;
    app.user("clinic.c", Role::Institution, VILLAGE).await;

    let form = browser().get(app.url("/")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert!(
        form.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = form.text().await.unwrap();
    for hook in ["login-username", "login-password", "login-submit"] {
        assert!(html.contains(hook), "{hook}");
    }

    // Not signed in: the pages send the browser to sign in.
    let away = browser().get(app.url("/m/")).send().await.unwrap();
    assert_eq!(away.status(), StatusCode::SEE_OTHER);
    assert_eq!(away.headers()[LOCATION], "/");

    let wrong = browser()
        .post(app.url("/"))
        .form(&[("username", "cadre.c"), ("password", "Not-The-Password-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await.unwrap().contains("用户名或密码错误"));

    let cadre = sign_in(&app, "cadre.c").await;
    let home = get("/", &app, &cadre).await;
    assert_eq!(home.headers()[LOCATION], "/m/");
    let worklist = get("/m/", &app, &cadre).await;
    assert_eq!(worklist.status(), StatusCode::OK);
    assert!(
        worklist
            .text()
            .await
            .unwrap()
            .contains("worklist-tab-not_appointed")
    );

    // Clinic staff land on /app/; the cadre pages are not theirs.
    let clinic = sign_in(&app, "clinic.c").await;
    assert_eq!(get("/", &app, &clinic).await.headers()[LOCATION], "/app/");
    let refused = get("/m/", &app, &clinic).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(get("/app/", &app, &clinic).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_change_made_with_the_cookie_needs_the_pages_anti_forgery_token() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    app.user("cadre.c", Role::Cadre, VILLAGE).await;
    let cadre = sign_in(&app, "cadre.c").await;
    let page = get("/m/", &app, &cadre).await.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();

    // A form from another site, or one without the token, is refused; the session holds.
    for (origin, token) in [("https://evil.example", csrf.as_str()), ("", "")] {
        let mut request = browser()
            .post(app.url("/logout"))
            .header("cookie", &cadre)
            .form(&[("_csrf", token)]);
        if !origin.is_empty() {
            request = request.header("origin", origin);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        get("/api/v1/me", &app, &cadre).await.status(),
        StatusCode::OK
    );
    // The API takes the cookie, and a change through it only with the token in its header.
    let bare = browser()
        .post(app.url("/api/v1/auth/logout"))
        .header("cookie", &cadre)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::FORBIDDEN);
    let with_token = browser()
        .post(app.url("/api/v1/auth/logout"))
        .header("cookie", &cadre)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get("/api/v1/me", &app, &cadre).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// The page's anti-forgery token (from its `<meta name="csrf-token">`).
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_booking_page_shows_the_days_left_and_only_residents_in_scope() {
    use crate::campaigns::add_resident;
    use crate::helpers::{OTHER_VILLAGE, TOWNSHIP, resident_id};

    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    let mine = add_resident(&app, resident_id(1, "19700101"), VILLAGE, None, None).await;
    let booked = add_resident(&app, resident_id(2, "19700101"), VILLAGE, None, None).await;
    let theirs = add_resident(&app, resident_id(3, "19700101"), OTHER_VILLAGE, None, None).await;
    let campaign = app.open_campaign().await;
    let institution = app.institution("XYZ-BOOK", TOWNSHIP, &[TOWNSHIP], 3).await;
    let (_, token) = app.user("cadre.c", Role::Cadre, VILLAGE).await;
    let tomorrow = outreach::registry::today() + chrono::Duration::days(1);
    let made = app
        .post(
            &format!("/api/v1/campaigns/{campaign}/bookings"),
            &token,
            serde_json::json!({"institution_id": institution, "day": tomorrow, "resident_ids": [booked]}),
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let cadre = sign_in(&app, "cadre.c").await;

    let page = get(&format!("/m/book?r={mine}"), &app, &cadre).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("XYZ-BOOK") || html.contains("卫生院"),
        "{html}"
    );
    // Tomorrow's cell says two of three places are left.
    let cell = html
        .split(&format!("data-day=\"{tomorrow}\""))
        .nth(1)
        .and_then(|rest| rest.split("</label>").next())
        .unwrap();
    assert!(cell.contains("余 2"), "{cell}");
    assert!(html.contains("data-testid=\"book-submit\""));
    // Another village's resident cannot be booked from this phone, not even by address.
    let other = get(&format!("/m/book?r={theirs}"), &app, &cadre).await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let bad = get("/m/book?r=1,x", &app, &cadre).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The resident page offers the booking, and for the booked resident a move and a cancel.
    let page = get(&format!("/m/residents/{booked}"), &app, &cadre).await;
    let html = page.text().await.unwrap();
    assert!(html.contains("appointment-reschedule") && html.contains("appointment-cancel"));
    assert!(html.contains(&tomorrow.to_string()));
}

#[tokio::test]
async fn the_worklist_finds_a_resident_by_the_last_digits_of_the_id() {
    use crate::campaigns::add_resident;
    use crate::helpers::{OTHER_VILLAGE, resident_id};

    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    let id = resident_id(7, "19800101");
    add_resident(&app, id.clone(), VILLAGE, None, None).await;
    add_resident(&app, resident_id(8, "19800101"), VILLAGE, None, None).await;
    add_resident(
        &app,
        resident_id(107, "19800101"),
        OTHER_VILLAGE,
        None,
        None,
    )
    .await;
    app.open_campaign().await;
    app.user("cadre.c", Role::Cadre, VILLAGE).await;
    let cadre = sign_in(&app, "cadre.c").await;
    let tail = &id[14..];
    let html = get(&format!("/m/?q={tail}"), &app, &cadre)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        html.matches("data-testid=\"worklist-item\"").count(),
        1,
        "{html}"
    );
    assert!(html.contains(&format!("**********{tail}")));
    assert!(!html.contains(&id), "the full ID number is on the page");
}

#[tokio::test]
async fn the_cadre_marks_a_task_done_on_the_tasks_page() {
    use crate::campaigns::add_resident;
    use crate::helpers::resident_id;
    use outreach::outreach::tasks::{self, NewTask, TaskKind};

    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    let resident = add_resident(&app, resident_id(1, "19700101"), VILLAGE, None, None).await;
    let campaign = app.open_campaign().await;
    app.user("cadre.c", Role::Cadre, VILLAGE).await;
    tasks::create(
        &app.state.db,
        NewTask {
            campaign_id: campaign,
            resident_id: resident,
            village_code: VILLAGE.to_owned(),
            kind: TaskKind::Unreachable,
            dedupe_key: "unreachable:test".to_owned(),
            message_id: None,
            reply_id: None,
            note: Some("短信和微信都发不出".to_owned()),
        },
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let cadre = sign_in(&app, "cadre.c").await;
    let worklist = get("/m/", &app, &cadre).await.text().await.unwrap();
    let tab = worklist
        .split("data-testid=\"worklist-tab-tasks\"")
        .nth(1)
        .unwrap();
    assert!(tab.starts_with(">待办任务 <b>1</b>"), "{tab}");
    let page = get("/m/tasks", &app, &cadre).await.text().await.unwrap();
    assert!(page.contains("短信和微信都发不出") && page.contains("无法送达"));
    let id = page
        .split("data-task-id=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let done = |token: String| {
        browser()
            .post(app.url(&format!("/m/tasks/{id}/done")))
            .header("cookie", &cadre)
            .form(&[("_csrf", token)])
            .send()
    };
    assert_eq!(
        done(String::new()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let answer = done(csrf_of(&page)).await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()[LOCATION], "/m/tasks");
    let page = get("/m/tasks", &app, &cadre).await.text().await.unwrap();
    assert!(page.contains("没有待办任务"), "{page}");
}

#[tokio::test]
async fn the_api_browser_is_the_offices_and_can_be_turned_off() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    app.user("office.o", Role::Office, COUNTY).await;
    app.user("township.t", Role::Township, TOWNSHIP).await;
    app.user("auditor.a", Role::Auditor, COUNTY).await;

    let office = sign_in(&app, "office.o").await;
    let docs = get("/api/docs", &app, &office).await;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle."), "{html}");
    // The script and styles it names are served from the binary.
    for name in ["swagger-ui-bundle.", "swagger-ui.", "apidocs."] {
        let at = html.find(&format!("/static/{name}")).unwrap();
        let path = &html[at..at + html[at..].find('"').unwrap()];
        let asset = get(path, &app, &office).await;
        assert_eq!(asset.status(), StatusCode::OK, "{path}");
        assert!(asset.bytes().await.unwrap().len() > 100, "{path}");
    }
    for other in ["township.t", "auditor.a"] {
        let cookie = sign_in(&app, other).await;
        assert_eq!(
            get("/api/docs", &app, &cookie).await.status(),
            StatusCode::FORBIDDEN,
            "{other}"
        );
    }
    let away = browser().get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(away.status(), StatusCode::SEE_OTHER);

    let closed = spawn_app_with(|settings| settings.http.api_docs = false).await;
    closed.seed_areas().await;
    closed.user("office.o", Role::Office, COUNTY).await;
    let office = sign_in(&closed, "office.o").await;
    assert_eq!(
        get("/api/docs", &closed, &office).await.status(),
        StatusCode::NOT_FOUND
    );
}
