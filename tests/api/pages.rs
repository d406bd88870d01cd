//! The pages as the server answers them (the browser tests in `tests/browser/` drive them in
//! chromium): sign-in, the session cookie, who may open the cadre pages, anti-forgery checks.

use entities::users::Role;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};

use crate::helpers::{PASSWORD, TestApp, VILLAGE, spawn_app_with};

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
