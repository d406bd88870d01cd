//! Settings: built-in defaults, then an optional TOML file, then environment variables,
//! then command-line flags (each later source overrides the earlier ones).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub mod messaging;

pub use messaging::{
    AliyunSmsSettings, JasminSettings, OutboxSettings, Reminders, SmtpSecurity, SmtpSettings,
    TencentSmsSettings, WeChatSettings, WebhookSettings,
};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server listens on (`OUTREACH_BIND`).
    pub bind: SocketAddr,
    /// `sqlite://…` or `postgres://…` (`DATABASE_URL`).
    pub database_url: DatabaseUrl,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub log: LogSettings,
    pub scheduler: SchedulerSettings,
    pub privacy: PrivacySettings,
    pub import: ImportSettings,
    pub messaging: MessagingSettings,
    pub signatures: SignatureSettings,
    pub reports: ReportSettings,
    pub metrics: MetricsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DatabaseUrl::new("sqlite://outreach.db?mode=rwc"),
            database: DatabaseSettings::default(),
            http: HttpSettings::default(),
            auth: AuthSettings::default(),
            log: LogSettings::default(),
            scheduler: SchedulerSettings::default(),
            privacy: PrivacySettings::default(),
            import: ImportSettings::default(),
            messaging: MessagingSettings::default(),
            signatures: SignatureSettings::default(),
            reports: ReportSettings::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

/// Where `GET /metrics` (Prometheus text) is served. By default nowhere: on the public
/// listener it answers 404 until a token is set, and no listener of its own is opened.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// A listener of its own for `/metrics` (e.g. `127.0.0.1:9464`), opened by `serve` and
    /// `dispatch`; keep it off the public network.
    pub bind: Option<SocketAddr>,
    /// A bearer token a scraper must send (`Authorization: Bearer …`). Set, `/metrics` is
    /// also served on the public listener; it is asked for on the own listener too.
    pub token: Option<Secret>,
}

/// Reports and the bulletins e-mailed to the county office.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportSettings {
    /// Closed days one refresh computes at most (a campaign's history is filled in over
    /// several refreshes).
    pub backfill_days_per_run: u32,
    pub bulletins: BulletinSettings,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            backfill_days_per_run: 31,
            bulletins: BulletinSettings::default(),
        }
    }
}

/// Daily, weekly and monthly bulletins: cron expressions (`sec min hour day-of-month month
/// day-of-week`) read in each campaign's time zone, and who receives them. A bulletin
/// reports the period that ended before its firing (the daily one: yesterday; the weekly
/// one: last Monday to Sunday; the monthly one: last month). The `send_bulletins` job
/// sends what is due; it needs `messaging.smtp`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulletinSettings {
    pub recipients: Vec<String>,
    pub daily: Option<String>,
    pub weekly: Option<String>,
    pub monthly: Option<String>,
    /// Sends of one period tried at most this many times when the server refuses or fails.
    pub max_attempts: u32,
}

impl Default for BulletinSettings {
    fn default() -> Self {
        Self {
            recipients: Vec::new(),
            daily: Some("0 0 8 * * *".to_owned()),
            weekly: Some("0 0 8 * * Mon".to_owned()),
            monthly: Some("0 0 8 1 * *".to_owned()),
            max_attempts: 5,
        }
    }
}

/// Where the signature images of refusal registrations are kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignatureSettings {
    /// A directory for the images (large deployments); unset, they live in the database.
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingSettings {
    /// The SMS signature, without the 【】 (registered with the SMS provider).
    pub sms_signature: String,
    /// A folder of the county's own templates (`<kind>/<locale>.txt`) instead of the built-in
    /// ones.
    pub templates_dir: Option<std::path::PathBuf>,
    /// The SMTP server e-mail goes through; no e-mail channel when unset.
    pub smtp: Option<SmtpSettings>,
    /// A self-hosted Jasmin SMS gateway; no SMS through it when unset.
    pub jasmin: Option<JasminSettings>,
    /// Alibaba Cloud SMS; no SMS through it when unset.
    pub aliyun: Option<AliyunSmsSettings>,
    /// Tencent Cloud SMS; no SMS through it when unset.
    pub tencent: Option<TencentSmsSettings>,
    /// WeChat official-account template messages; none when unset.
    pub wechat: Option<WeChatSettings>,
    /// Which provider carries SMS: `log` (the embedded default, which only records and then
    /// also stands in for WeChat and e-mail), `aliyun`, `tencent` or `jasmin`.
    pub sms_provider: String,
    /// When reminders go out, retries, leases, caps and rate limits.
    pub outbox: OutboxSettings,
    /// How provider callbacks are authenticated.
    pub webhooks: WebhookSettings,
}

impl Default for MessagingSettings {
    fn default() -> Self {
        Self {
            sms_signature: "全民健康体检".to_owned(),
            templates_dir: None,
            smtp: None,
            jasmin: None,
            aliyun: None,
            tencent: None,
            wechat: None,
            sms_provider: "log".to_owned(),
            outbox: Default::default(),
            webhooks: Default::default(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySettings {
    /// The 256-bit master key, base64 (`OUTREACH_PRIVACY__KEY`). Wins over `key_file`.
    pub key: Option<Secret>,
    /// A file holding the base64 key. Default for SQLite: `outreach.key` beside the database,
    /// generated on first start.
    pub key_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportSettings {
    /// Largest resident file accepted by `outreach import residents`.
    pub max_file_bytes: u64,
    /// Largest resident file accepted by the upload endpoint.
    pub max_upload_bytes: u64,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: 1024 * 1024 * 1024,
            max_upload_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A secret setting: `Debug` never shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub max_connections: u32,
    /// How long an SQLite connection waits for the writer lock before giving up.
    pub busy_timeout_ms: u64,
    pub connect_timeout_secs: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            busy_timeout_ms: 5_000,
            connect_timeout_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest accepted request body (uploads included).
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    /// A connection that has not sent a whole request head (request line and headers) this
    /// long after it opened or after its previous response is closed.
    pub header_read_timeout_secs: u64,
    /// An idle kept-alive connection is closed after this long.
    pub keep_alive_timeout_secs: u64,
    /// Take the client address from `X-Forwarded-For` when the request comes from one of
    /// `trusted_proxies`.
    pub trust_forwarded_for: bool,
    /// The reverse proxies (addresses or networks) whose `X-Forwarded-For` entries are
    /// believed. Empty with `trust_forwarded_for`: the loopback addresses.
    pub trusted_proxies: Vec<Network>,
    /// The address residents and cadres reach the service at (`https://tijian.example.gov.cn`);
    /// page cookies are `Secure` when it is https.
    pub public_url: Option<String>,
    /// Serve the API browser (Swagger UI) at `/api/docs` to office users.
    pub api_docs: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_secs: 60,
            header_read_timeout_secs: 10,
            keep_alive_timeout_secs: 75,
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
            public_url: None,
            api_docs: true,
        }
    }
}

/// An address (`10.0.0.5`, `::1`) or a network (`10.0.0.0/8`) in the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network(ipnet::IpNet);

impl Network {
    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        self.0.contains(&address)
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Ok(net) = raw.parse::<ipnet::IpNet>() {
            return Ok(Self(net.trunc()));
        }
        raw.parse::<std::net::IpAddr>()
            .map(|address| Self(ipnet::IpNet::from(address)))
            .map_err(|_| format!("{raw:?} is not an address or a network like 10.0.0.0/8"))
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Lifetime of a bearer token issued at login.
    pub token_ttl_hours: u32,
    /// Failed logins allowed for one username before it is throttled.
    pub max_failures_per_user: u32,
    /// Failed logins allowed from one client address before it is throttled.
    pub max_failures_per_address: u32,
    /// Time in which one allowance of failed logins is earned back.
    pub failure_window_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            token_ttl_hours: 12,
            max_failures_per_user: 5,
            max_failures_per_address: 20,
            failure_window_secs: 900,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter (`RUST_LOG` syntax); `RUST_LOG` overrides it when set.
    pub filter: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info,sqlx=warn,sea_orm=warn".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    pub enabled: bool,
    /// Time zone cron expressions are read in.
    pub timezone: String,
    /// Job name → cron expression (`sec min hour day-of-month month day-of-week`).
    pub jobs: BTreeMap<String, String>,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            timezone: "Asia/Shanghai".to_owned(),
            jobs: BTreeMap::from([
                ("purge_expired_tokens".to_owned(), "0 17 * * * *".to_owned()),
                // Five past midnight and hourly after: a missed firing is caught up soon.
                ("mark_no_shows".to_owned(), "0 5 * * * *".to_owned()),
                // The safety net under the reminders a booking plans itself.
                ("plan_reminders".to_owned(), "0 */10 * * * *".to_owned()),
                // Tops up waves with residents who joined their audience later.
                ("plan_waves".to_owned(), "0 30 * * * *".to_owned()),
                // Rebuilds the report figures and fills in closed days.
                ("refresh_reports".to_owned(), "0 */5 * * * *".to_owned()),
                // Sends the bulletins that are due (their own schedules are under
                // `reports.bulletins`).
                ("send_bulletins".to_owned(), "30 */5 * * * *".to_owned()),
            ]),
        }
    }
}

/// A database URL. It may carry a password, so `Debug` and `Display` show it redacted;
/// only [`DatabaseUrl::expose`] gives the real text, for connecting.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }

    /// The file of an SQLite database (`sqlite://data/outreach.db?mode=rwc` →
    /// `data/outreach.db`); `None` for PostgreSQL and for an in-memory database.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        let rest = self
            .0
            .strip_prefix("sqlite://")
            .or_else(|| self.0.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                f.write_str(url.as_str())
            }
            Ok(_) => f.write_str(&self.0),
            Err(_) => f.write_str("<unparsable database url>"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Values given on the command line; they win over every other source.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub bind: Option<SocketAddr>,
    pub database_url: Option<String>,
}

impl Settings {
    /// Loads settings from the defaults, `config_file` (when given), the environment and `overrides`.
    pub fn load(
        config_file: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Self, Box<figment::Error>> {
        Self::load_from(config_file, overrides, Env::raw())
    }

    fn load_from(
        config_file: Option<&Path>,
        overrides: &Overrides,
        env: Env,
    ) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::new();
        if let Some(path) = config_file {
            // An explicitly named file must exist; a typo should not silently mean "defaults".
            if !path.exists() {
                return Err(Box::new(figment::Error::from(format!(
                    "configuration file {} does not exist",
                    path.display()
                ))));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let prefixed = env
            .clone()
            .filter_map(|key| {
                let key = key.as_str().strip_prefix("OUTREACH_")?.to_owned();
                (key != "CONFIG").then_some(key.into())
            })
            .split("__");
        figment = figment
            .merge(prefixed)
            .merge(env.filter(|key| key.as_str() == "DATABASE_URL"));
        let mut settings: Settings = figment.extract()?;
        if let Some(bind) = overrides.bind {
            settings.bind = bind;
        }
        if let Some(url) = &overrides.database_url {
            settings.database_url = DatabaseUrl::new(url.clone());
        }
        settings
            .check()
            .map_err(|e| Box::new(figment::Error::from(e)))?;
        Ok(settings)
    }

    /// Refuses settings the service cannot work with (a zero lifetime, pool, limit, size or
    /// window), naming every key at fault.
    pub fn check(&self) -> Result<(), String> {
        let mut wrong = Vec::new();
        let mut positive = |key: &str, value: u64| {
            if value == 0 {
                wrong.push(format!("{key} must be greater than 0"));
            }
        };
        positive(
            "database.max_connections",
            u64::from(self.database.max_connections),
        );
        positive(
            "database.connect_timeout_secs",
            self.database.connect_timeout_secs,
        );
        positive("http.max_body_bytes", self.http.max_body_bytes as u64);
        positive("http.request_timeout_secs", self.http.request_timeout_secs);
        positive(
            "http.header_read_timeout_secs",
            self.http.header_read_timeout_secs,
        );
        positive(
            "http.keep_alive_timeout_secs",
            self.http.keep_alive_timeout_secs,
        );
        positive("auth.token_ttl_hours", u64::from(self.auth.token_ttl_hours));
        positive(
            "auth.max_failures_per_user",
            u64::from(self.auth.max_failures_per_user),
        );
        positive(
            "auth.max_failures_per_address",
            u64::from(self.auth.max_failures_per_address),
        );
        positive("auth.failure_window_secs", self.auth.failure_window_secs);
        positive("import.max_file_bytes", self.import.max_file_bytes);
        positive("import.max_upload_bytes", self.import.max_upload_bytes);
        let outbox = &self.messaging.outbox;
        positive("messaging.outbox.daily_cap", u64::from(outbox.daily_cap));
        positive(
            "messaging.outbox.max_attempts",
            u64::from(outbox.max_attempts),
        );
        positive("messaging.outbox.retry_base_secs", outbox.retry_base_secs);
        positive("messaging.outbox.retry_max_secs", outbox.retry_max_secs);
        positive("messaging.outbox.lease_secs", outbox.lease_secs);
        positive("messaging.outbox.batch", u64::from(outbox.batch));
        positive("messaging.outbox.concurrency", outbox.concurrency as u64);
        positive("messaging.outbox.poll_ms", outbox.poll_ms);
        for (provider, rate) in &outbox.rate_per_second {
            positive(
                &format!("messaging.outbox.rate_per_second.{provider}"),
                u64::from(*rate),
            );
        }
        positive(
            "reports.backfill_days_per_run",
            u64::from(self.reports.backfill_days_per_run),
        );
        positive(
            "reports.bulletins.max_attempts",
            u64::from(self.reports.bulletins.max_attempts),
        );
        if outbox.retry_base_secs > outbox.retry_max_secs {
            wrong.push(
                "messaging.outbox.retry_base_secs must not exceed messaging.outbox.retry_max_secs"
                    .to_owned(),
            );
        }
        // Beyond these the arithmetic on instants and durations would overflow.
        if self.auth.token_ttl_hours > 24 * 366 {
            wrong.push("auth.token_ttl_hours must be at most 8784 (a year)".to_owned());
        }
        if self.auth.failure_window_secs > 7 * 24 * 3600 {
            wrong.push("auth.failure_window_secs must be at most 604800 (a week)".to_owned());
        }
        if self
            .metrics
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().len() < 16)
        {
            wrong.push("metrics.token must be at least 16 characters".to_owned());
        }
        if self.metrics.bind == Some(self.bind) && self.bind.port() != 0 {
            wrong.push("metrics.bind must differ from bind".to_owned());
        }
        if !self.http.trust_forwarded_for && !self.http.trusted_proxies.is_empty() {
            wrong.push(
                "http.trusted_proxies is set but http.trust_forwarded_for is false".to_owned(),
            );
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("impossible settings: {}", wrong.join("; ")))
        }
    }
}

#[cfg(test)]
// figment's Jail closures must return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_database_password() {
        let url = DatabaseUrl::new("postgres://outreach:s3cret-pw@db.example:5432/outreach");
        let settings = Settings {
            database_url: url,
            ..Settings::default()
        };
        let settings = Settings {
            privacy: PrivacySettings {
                key: Some(Secret::new("bWFzdGVyLWtleS1tYXRlcmlhbA==")),
                key_file: None,
            },
            ..settings
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(!shown.contains("bWFzdGVy"), "{shown}");
        assert!(shown.contains("outreach:***@db.example"), "{shown}");
    }

    #[test]
    fn sources_apply_in_order_file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "outreach.toml",
                r#"
                bind = "0.0.0.0:9000"
                database_url = "sqlite://from-file.db?mode=rwc"
                [auth]
                token_ttl_hours = 3
                max_failures_per_user = 7
                "#,
            )?;
            jail.set_env("OUTREACH_AUTH__TOKEN_TTL_HOURS", "4");
            jail.set_env("DATABASE_URL", "sqlite://from-env.db?mode=rwc");
            jail.set_env("OUTREACH_CONFIG", "ignored-here.toml");
            let overrides = Overrides {
                bind: Some("127.0.0.1:9100".parse().unwrap()),
                database_url: None,
            };
            let s = Settings::load(Some(Path::new("outreach.toml")), &overrides).map_err(|e| *e)?;
            assert_eq!(s.bind.to_string(), "127.0.0.1:9100");
            assert_eq!(s.database_url.expose(), "sqlite://from-env.db?mode=rwc");
            assert_eq!(s.auth.token_ttl_hours, 4);
            assert_eq!(s.auth.max_failures_per_user, 7);
            assert_eq!(s.auth.max_failures_per_address, 20);
            Ok(())
        });
    }

    #[test]
    fn impossible_settings_are_refused_naming_their_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OUTREACH_AUTH__TOKEN_TTL_HOURS", "0");
            jail.set_env("OUTREACH_DATABASE__MAX_CONNECTIONS", "0");
            jail.set_env("OUTREACH_MESSAGING__OUTBOX__CONCURRENCY", "0");
            let err = Settings::load(None, &Overrides::default()).unwrap_err();
            let text = err.to_string();
            for key in [
                "auth.token_ttl_hours",
                "database.max_connections",
                "messaging.outbox.concurrency",
            ] {
                assert!(text.contains(key), "{text}");
            }
            Ok(())
        });
        let mut settings = Settings::default();
        assert!(settings.check().is_ok());
        settings.http.max_body_bytes = 0;
        settings.messaging.outbox.batch = 0;
        settings.messaging.outbox.retry_base_secs = 7200;
        settings.metrics.token = Some(Secret::new("short"));
        settings
            .messaging
            .outbox
            .rate_per_second
            .insert("jasmin".to_owned(), 0);
        let text = settings.check().unwrap_err();
        for key in [
            "http.max_body_bytes",
            "messaging.outbox.batch",
            "retry_base_secs must not exceed",
            "rate_per_second.jasmin",
            "metrics.token",
        ] {
            assert!(text.contains(key), "{text}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "outreach.toml",
                r#"
                [http]
                trust_forwarded_for = true
                trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "::1"]
                "#,
            )?;
            let s = Settings::load(Some(Path::new("outreach.toml")), &Overrides::default())
                .map_err(|e| *e)?;
            let proxies = &s.http.trusted_proxies;
            assert!(proxies[0].contains("10.200.3.4".parse().unwrap()));
            assert!(proxies[1].contains("192.168.1.7".parse().unwrap()));
            assert!(!proxies[1].contains("192.168.1.8".parse().unwrap()));
            assert!(proxies[2].contains("::1".parse().unwrap()));
            jail.create_file(
                "bad.toml",
                "[http]\ntrust_forwarded_for = true\ntrusted_proxies = [\"proxy.example\"]\n",
            )?;
            let err =
                Settings::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("proxy.example"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_key_and_a_missing_file_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("outreach.toml", "bnid = \"0.0.0.0:1\"\n")?;
            let err = Settings::load(Some(Path::new("outreach.toml")), &Overrides::default())
                .unwrap_err();
            assert!(err.to_string().contains("bnid"), "{err}");
            let err =
                Settings::load(Some(Path::new("nope.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("does not exist"), "{err}");
            Ok(())
        });
    }
}
