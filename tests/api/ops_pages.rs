//! The office's upload and wave pages as the server answers them (the browser tests in
//! `tests/browser/ops.test.mjs` and `clinic.test.mjs` drive them in chromium): the register
//! upload's stream of progress lines and its report, the rejected rows' download, the
//! wave preview's segments.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, SET_COOKIE};
use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp, VILLAGE, resident_id, spawn_app_with};

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in through the form: the session cookie's `name=value` and the pages' token.
async fn sign_in(app: &TestApp, username: &str) -> (String, String) {
    let response = browser()
        .post(app.url("/"))
        .form(&[("username", username), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = browser()
        .get(app.url("/app/imports"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's token")
        .to_owned();
    (cookie, csrf)
}

async fn upload(
    app: &TestApp,
    cookie: &str,
    csrf: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut request = browser()
        .post(app.url("/app/imports/residents"))
        .header("cookie", cookie)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(body);
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_register_upload_streams_the_rows_read_then_the_report() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    app.office_token().await;
    let (cookie, csrf) = sign_in(&app, "office.county").await;

    let mut csv = String::from("姓名,身份证号,户籍地区划代码,联系电话\n");
    for n in 0..2500u32 {
        let birth = format!("19{}0101", 50 + n / 1000);
        csv.push_str(&format!("居民{n},{},{VILLAGE},\n", resident_id(n, &birth)));
    }
    let bad = resident_id(7, "19990101");
    let bad = format!(
        "{}{}",
        &bad[..17],
        if bad.ends_with('1') { '2' } else { '1' }
    );
    csv.push_str(&format!("错号,{bad},{VILLAGE},13899001234\n"));

    // Without the page's token nothing is read.
    let refused = upload(&app, &cookie, None, csv.clone()).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let response = upload(&app, &cookie, Some(&csrf), csv).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/x-ndjson")
    );
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (done, reading) = lines.split_last().unwrap();
    assert!(!reading.is_empty(), "{text}");
    let mut rows = 0;
    for line in reading {
        assert_eq!(line["stage"], "reading", "{line}");
        let now = line["rows"].as_u64().unwrap();
        assert!(now >= rows, "rows read only grow: {text}");
        rows = now;
    }
    let last = reading.last().unwrap();
    assert_eq!(last["finished"], true);
    assert_eq!(last["rows"], 2501);
    assert_eq!(last["bytes"], last["total"]);
    assert_eq!(done["stage"], "done");
    assert_eq!(done["ok"], true);
    let html = done["html"].as_str().unwrap();
    assert!(
        html.contains("data-count=\"imported\">2500<"),
        "{html:.600}"
    );
    assert!(html.contains("data-count=\"rejected\">1<"));
    assert!(html.contains("身份证号校验位错误"));
    assert!(
        !html.contains(&bad) && !html.contains("13899001234"),
        "masked"
    );

    // The API sees them, as a page's import is the API's.
    let token = app.office_token().await;
    let listed: Value = app
        .get("/api/v1/residents?q=居民2499", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["residents"][0]["name"], "居民2499");

    // A file that cannot be used writes nothing and says why, as the last line.
    let unusable = upload(&app, &cookie, Some(&csrf), "名字,号码\n张三,1\n".to_owned()).await;
    assert_eq!(unusable.status(), StatusCode::OK);
    let text = unusable.text().await.unwrap();
    let done: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(done["ok"], false);
    assert_eq!(done["status"], 422);
    assert!(done["html"].as_str().unwrap().contains("表头缺少必需的列"));
}

#[tokio::test]
async fn the_rejected_rows_download_in_the_command_lines_layout() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    app.office_token().await;
    let (cookie, csrf) = sign_in(&app, "office.county").await;
    let rows = serde_json::json!({
        "header": ["姓名", "身份证号"],
        "rows": [{"line": 5, "values": ["赵六", "6540**********0241"], "code": "invalid_check_digit", "reason": "身份证号校验位错误"}],
    })
    .to_string();
    let download = browser()
        .post(app.url("/app/imports/rejected.csv"))
        .header("cookie", &cookie)
        .form(&[("_csrf", csrf.as_str()), ("rows", rows.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert!(
        download.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let file = download.text().await.unwrap();
    assert_eq!(
        file,
        "\u{feff}line,姓名,身份证号,reason,reason_code\n5,赵六,6540**********0241,身份证号校验位错误,invalid_check_digit\n"
    );

    // More rows than a report lists is not a download.
    let many = serde_json::json!({
        "header": ["姓名"],
        "rows": (0..1001).map(|n| serde_json::json!({"line": n, "values": ["x"], "code": "c", "reason": "r"})).collect::<Vec<_>>(),
    })
    .to_string();
    let refused = browser()
        .post(app.url("/app/imports/rejected.csv"))
        .header("cookie", &cookie)
        .form(&[("_csrf", csrf.as_str()), ("rows", many.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_wave_preview_counts_segments_as_the_templates_do() {
    let app = spawn_app_with(|_| {}).await;
    app.seed_areas().await;
    app.open_campaign().await;
    let token = app.office_token().await;
    let (cookie, _) = sign_in(&app, "office.county").await;
    let csv = format!(
        "姓名,身份证号,户籍地区划代码,流动类型,语言\n阿依古丽·买买提,{},{VILLAGE},疆外,ug\n",
        resident_id(1, "19800101")
    );
    assert_eq!(
        app.upload_residents(&token, csv).await.status(),
        StatusCode::OK
    );
    let today = outreach::registry::today();
    let to = today + chrono::Duration::days(20);
    let preview: Value = browser()
        .get(app.url(&format!(
            "/app/waves/preview?filled=1&window_from={today}&window_to={to}&migrant=out_of_region"
        )))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = preview["text"].as_str().unwrap();
    // The sample resident's own language, her name and the window filled in.
    assert_eq!(preview["locale"], "ug");
    assert!(text.contains("阿依古丽·买买提"), "{text}");
    assert!(text.contains(&outreach::time::month_day(to)), "{text}");
    assert_eq!(
        preview["segments"].as_u64().unwrap() as usize,
        outreach::outreach::templates::segments(text)
    );
    assert!(preview["segments"].as_u64().unwrap() >= 2);
    // The page itself, in Chinese on request.
    let page = browser()
        .get(app.url(&format!(
            "/app/waves/new?filled=1&lang=zh-CN&window_from={today}&window_to={to}"
        )))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("data-testid=\"wave-segments\""));
    assert!(html.contains("回乡"));
}
