use std::sync::LazyLock;

use entities::users::Role;
use outreach::auth::Actor;
use outreach::config::{DatabaseUrl, Settings};
use outreach::startup::Application;
use outreach::{campaign, flows, institution, users};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "correct-horse-battery";

/// Two counties: 新源县 with two townships, and 伊宁县 beside it (for out-of-scope checks).
pub const AREAS_CSV: &str = "区划代码,名称
654025000000,新源县
654025100000,新源镇
654025100201,阿勒玛勒村
654025100202,托格拉克村
654025101000,则克台镇
654025101201,克孜勒塔斯村
654021000000,伊宁县
654021100000,吉里于孜镇
654021100201,吉里于孜村
";
pub const COUNTY: &str = "654025000000";
pub const TOWNSHIP: &str = "654025100000";
pub const VILLAGE: &str = "654025100201";
pub const OTHER_VILLAGE: &str = "654025101201";
pub const OTHER_COUNTY: &str = "654021000000";
pub const OTHER_COUNTY_VILLAGE: &str = "654021100201";

/// A database of the test's own; the SQLite file lives as long as this value.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub fn postgres_admin_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

static PG_CREATE_LOCK: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

impl TestDb {
    pub async fn new() -> Self {
        match postgres_admin_url() {
            Some(admin_url) => {
                let name = format!("outreach_test_{}", uuid::Uuid::new_v4().simple());
                {
                    // CREATE DATABASE copies template1; PostgreSQL refuses concurrent copies.
                    let _guard = PG_CREATE_LOCK.lock().await;
                    let admin = Database::connect(&admin_url)
                        .await
                        .expect("connect TEST_DATABASE_URL");
                    admin
                        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                        .await
                        .expect("create test database");
                    admin.close().await.ok();
                }
                let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
                url.set_path(&name);
                Self {
                    url: url.to_string(),
                    _dir: None,
                }
            }
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("outreach.db").display()
                );
                Self {
                    url,
                    _dir: Some(dir),
                }
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// The metrics listener of its own (`metrics.bind`), when the test configured one.
    pub metrics_address: Option<String>,
    pub db: DatabaseConnection,
    /// The running application's state (database, settings, keys), for calling services.
    pub state: outreach::state::AppState,
    pub client: reqwest::Client,
    _test_db: TestDb,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let test_db = TestDb::new().await;
    let mut settings = Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        database_url: DatabaseUrl::new(test_db.url.clone()),
        ..Settings::default()
    };
    settings.database.max_connections = 5;
    settings.privacy.key = Some(outreach::config::Secret::new(
        outreach::privacy::new_key_base64(),
    ));
    settings.scheduler.enabled = false;
    // Tests drain the outbox themselves, when they choose.
    settings.messaging.outbox.dispatch = false;
    configure(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let db = app.state().db.clone();
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        metrics_address,
        db,
        state,
        client: outreach::outreach::http_client::builder().build().unwrap(),
        _test_db: test_db,
        shutdown,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    /// The counts on the worklist page's tabs (`/m/`), code and count, as the page session
    /// holding `token` sees them.
    pub async fn worklist_tabs(&self, token: &str) -> Vec<(String, u64)> {
        let response = self
            .client
            .get(self.url("/m/"))
            .header("cookie", format!("outreach_session={token}"))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK);
        let html = response.text().await.unwrap();
        html.split("data-testid=\"worklist-tab-")
            .skip(1)
            .map(|tab| {
                let code = &tab[..tab.find('"').unwrap()];
                let count = &tab[tab.find("<b>").unwrap() + 3..tab.find("</b>").unwrap()];
                (code.to_owned(), count.trim().parse().unwrap())
            })
            .collect()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn post_csv(
        &self,
        path: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    pub async fn token_for(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), StatusCode::OK, "login as {username}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// The bootstrap administrator (whole tree) and a token for it.
    pub async fn admin_token(&self) -> String {
        let password = flows::accounts::ensure_admin(&self.db)
            .await
            .unwrap()
            .expect("fresh database has no admin yet");
        self.token_for(users::ADMIN_USERNAME, &password).await
    }

    pub async fn seed_areas(&self) {
        let result = flows::areas::import_areas(&self.db, &Actor::cli(), AREAS_CSV.as_bytes())
            .await
            .unwrap();
        assert_eq!(result.summary.imported, 9);
    }

    /// Creates a user with the test password and returns (id, token). An institution user
    /// works for `INST-<area>` (created, serving `area`, when missing).
    pub async fn user(&self, username: &str, role: Role, area: &str) -> (i32, String) {
        let institution = if role == Role::Institution {
            let code = format!("INST-{area}");
            if institution::find_by_code(&self.db, &code)
                .await
                .unwrap()
                .is_none()
            {
                self.institution(&code, area, &[area], 50).await;
            }
            Some(code)
        } else {
            None
        };
        self.user_at(username, role, area, institution).await
    }

    /// Creates a user working for the institution with code `institution`.
    pub async fn user_at(
        &self,
        username: &str,
        role: Role,
        area: &str,
        institution: Option<String>,
    ) -> (i32, String) {
        let created = flows::accounts::create(
            &self.db,
            &Actor::cli(),
            users::NewUser {
                username: username.to_owned(),
                display_name: None,
                role,
                area_code: area.to_owned(),
                password: Some(PASSWORD.to_owned()),
                institution,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("create {username}: {e}"));
        (created.user.id, self.token_for(username, PASSWORD).await)
    }
}

/// Asserts the contract's error envelope and returns its code.
pub async fn error_code(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let body: Value = response.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    let message = body["error"]["message"].as_str().expect("error.message");
    assert!(!message.is_empty());
    code
}

/// A valid 18-character ID from 17 digits: the check character is computed here, apart from
/// the code under test (ISO 7064 MOD 11-2 as GB 11643 defines it).
pub fn id_with_check(first17: &str) -> String {
    let weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(weights)
        .map(|(c, w)| c.to_digit(10).unwrap() * w)
        .sum();
    let check = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize];
    format!("{first17}{check}")
}

/// The n-th synthetic resident ID, born on `birth` (YYYYMMDD).
pub fn resident_id(n: u32, birth: &str) -> String {
    id_with_check(&format!("654025{birth}{:03}", n % 1000))
}

impl TestApp {
    pub async fn upload_residents(
        &self,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/residents/import"))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }
}

impl TestApp {
    /// Registers an institution located in `area`, serving `serves`, open every day.
    pub async fn institution(&self, code: &str, area: &str, serves: &[&str], capacity: i32) -> i32 {
        flows::institutions::create(
            &self.db,
            &Actor::cli(),
            institution::NewInstitution {
                code: code.to_owned(),
                name: format!("{code}卫生院"),
                kind: institution::Kind::TownshipCentre,
                area_code: area.to_owned(),
                daily_capacity: capacity,
                closed_weekdays: Vec::new(),
                serves: serves.iter().map(|s| s.to_string()).collect(),
                address: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("create institution {code}: {e}"))
        .id
    }

    /// Creates and opens this year's campaign, with the exam window running from 1 January
    /// to 60 days from today (then catch-up and acceptance), so that today and the coming
    /// weeks can be booked whatever the date the tests run on. Returns its id.
    pub async fn open_campaign(&self) -> i32 {
        let today = outreach::registry::today();
        let id = flows::campaigns::create(&self.db, &Actor::cli(), test_campaign(today))
            .await
            .unwrap_or_else(|e| panic!("create campaign: {e}"))
            .id();
        flows::campaigns::open(&self.db, &Actor::cli(), id)
            .await
            .unwrap_or_else(|e| panic!("open campaign: {e}"));
        id
    }
}

/// This year's campaign with an exam window that includes today and the next 60 days.
pub fn test_campaign(today: chrono::NaiveDate) -> campaign::NewCampaign {
    use chrono::Datelike;
    let year = today.year();
    let days = |n| today + chrono::Duration::days(n);
    let range = |from, to| Some(campaign::DateRange { from, to });
    let jan1 = chrono::NaiveDate::from_ymd_opt(year, 1, 1).unwrap();
    campaign::NewCampaign {
        year,
        name: None,
        reference_date: Some(jan1),
        timezone: None,
        quiet_hours: None,
        cohorts: None,
        targets: None,
        phases: campaign::PhaseDates {
            survey: range(jan1, jan1),
            kickoff: range(jan1, jan1),
            exams: range(jan1, days(60)),
            catch_up: range(days(61), days(70)),
            acceptance: range(days(71), days(80)),
        },
        refusal_rule: None,
    }
}

impl TestApp {
    /// A county office user of 新源县 (created on first use) and a token for it.
    pub async fn office_token(&self) -> String {
        const NAME: &str = "office.county";
        if self.login(NAME, PASSWORD).await.status() == StatusCode::OK {
            return self.token_for(NAME, PASSWORD).await;
        }
        self.user(NAME, Role::Office, COUNTY).await.1
    }
}
