//! The settings of the messaging providers, the outbox and the provider callbacks
//! (`[messaging.*]`): plain data read from the configuration, kept with the rest of the
//! configuration so that the modules using them depend on it and not the other way round.

use std::collections::BTreeMap;

use chrono::NaiveTime;
use serde::{Deserialize, Deserializer};

use super::Secret;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on the same host or network).
    None,
    /// STARTTLS on the submission port (587).
    Starttls,
    /// TLS from the first byte (465).
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender, e.g. `新源县卫健委 <tijian@example.org>`.
    pub from: String,
    #[serde(default = "default_smtp_timeout")]
    pub timeout_secs: u64,
}

fn default_smtp_timeout() -> u64 {
    20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JasminSettings {
    /// The gateway's HTTP API, e.g. `http://127.0.0.1:1401`.
    pub url: String,
    pub username: String,
    pub password: Secret,
    /// Where the gateway posts delivery receipts (our webhook).
    pub dlr_url: Option<String>,
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: u64,
}

fn default_http_timeout() -> u64 {
    10
}

fn default_timeout_secs() -> u64 {
    10
}

/// `messaging.aliyun`: Alibaba Cloud SMS (dysmsapi 2017-05-25).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliyunSmsSettings {
    #[serde(default = "default_aliyun_endpoint")]
    pub endpoint: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// The approved signature, without 【】.
    pub sign_name: String,
    /// Message kind code (`appointment_notice`, …) → approved template code (`SMS_…`).
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_aliyun_endpoint() -> String {
    "https://dysmsapi.aliyuncs.com/".to_owned()
}

/// `messaging.tencent`: Tencent Cloud SMS (SendSms 2021-01-11).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TencentSmsSettings {
    #[serde(default = "default_tencent_endpoint")]
    pub endpoint: String,
    /// e.g. `ap-guangzhou`.
    #[serde(default = "default_tencent_region")]
    pub region: String,
    pub secret_id: String,
    pub secret_key: Secret,
    /// The SMS application's `SmsSdkAppId`.
    pub sdk_app_id: String,
    /// The approved signature, without 【】.
    pub sign_name: String,
    /// Message kind code → approved template id.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Message kind code → the `MessageContext` fields that fill the template's `{1}`,
    /// `{2}`…, in order; a kind not listed sends no values.
    #[serde(default)]
    pub template_params: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

pub(crate) fn default_tencent_endpoint() -> String {
    "https://sms.tencentcloudapi.com".to_owned()
}

pub(crate) fn default_tencent_region() -> String {
    "ap-guangzhou".to_owned()
}

/// `messaging.wechat`: a WeChat official account's template messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeChatSettings {
    #[serde(default = "default_wechat_api_base")]
    pub api_base: String,
    pub app_id: String,
    pub app_secret: Secret,
    /// Message kind code → template id.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Opened when the resident taps the message (e.g. the booking page); none when unset.
    pub url: Option<String>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_wechat_api_base() -> String {
    "https://api.weixin.qq.com".to_owned()
}

/// When reminders go out, in the campaign's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reminders {
    /// The day-before notice.
    #[serde(deserialize_with = "hh_mm")]
    pub notice_at: NaiveTime,
    /// The same-day reminder.
    #[serde(deserialize_with = "hh_mm")]
    pub same_day_at: NaiveTime,
    /// The follow-up the day after a missed appointment.
    #[serde(deserialize_with = "hh_mm")]
    pub followup_at: NaiveTime,
}

impl Default for Reminders {
    fn default() -> Self {
        let at = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("a valid hour");
        Self {
            notice_at: at(18),
            same_day_at: at(8),
            followup_at: at(10),
        }
    }
}

fn hh_mm<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
    let raw = String::deserialize(deserializer)?;
    NaiveTime::parse_from_str(&raw, "%H:%M")
        .map_err(|_| serde::de::Error::custom(format!("{raw:?} is not a time like 18:00")))
}

/// `[messaging.outbox]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// `[messaging.outbox.reminders]`.
    pub reminders: Reminders,
    /// What the notice says about the time of day (institutions examine in the morning,
    /// fasting).
    pub exam_time: String,
    /// At most this many messages reach one resident on one (local) day.
    pub daily_cap: u32,
    /// Attempts on one channel before the next channel of the fallback plan is tried.
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long (with jitter).
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// How long a worker holds a message it is sending before another may reconcile it.
    pub lease_secs: u64,
    /// Messages leased per round.
    pub batch: u32,
    /// Sends in flight at once per worker.
    pub concurrency: usize,
    /// How often an idle worker looks for due messages.
    pub poll_ms: u64,
    /// Run dispatch workers inside `serve` (turn off when `outreach dispatch` runs apart).
    pub dispatch: bool,
    /// Messages per second per provider (`aliyun`, `tencent`, `jasmin`, `wechat`, `smtp`,
    /// `log`); a provider not listed is not limited here, `0` lifts a limit. Each key given
    /// in the configuration overrides only its own default.
    #[serde(deserialize_with = "rates_over_defaults")]
    pub rate_per_second: BTreeMap<String, u32>,
    /// How long after a send its delivery receipt may still be expected, per provider that
    /// gives receipts (`aliyun`, `tencent`, `jasmin`, `wechat`); a `sent` message older than
    /// that becomes `unconfirmed`, and a receipt that comes later still moves it on. `0`
    /// turns the sweep off for a provider. Each key given in the configuration overrides
    /// only its own default; `log` and `smtp`, which give no receipts, are refused.
    #[serde(deserialize_with = "receipt_timeouts_over_defaults")]
    pub receipt_timeout_secs: BTreeMap<String, u64>,
    /// The `log` channel reports its messages delivered (demo and development).
    pub simulate_receipts: bool,
    /// The phone residents are told to call with questions (村委会 or 卫生院).
    pub hotline: String,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            reminders: Reminders::default(),
            exam_time: "上午8:00—11:00".to_owned(),
            daily_cap: 3,
            max_attempts: 5,
            retry_base_secs: 30,
            retry_max_secs: 3600,
            lease_secs: 120,
            batch: 200,
            concurrency: 16,
            poll_ms: 1000,
            dispatch: true,
            rate_per_second: default_rates(),
            receipt_timeout_secs: default_receipt_timeouts(),
            simulate_receipts: false,
            hotline: String::new(),
        }
    }
}

/// The providers a rate limit can name: the names the channels go by.
pub const RATE_LIMITED_PROVIDERS: [&str; 6] =
    ["aliyun", "tencent", "jasmin", "wechat", "smtp", "log"];

fn default_rates() -> BTreeMap<String, u32> {
    BTreeMap::from([
        ("aliyun".to_owned(), 500),
        ("tencent".to_owned(), 500),
        ("jasmin".to_owned(), 100),
        ("wechat".to_owned(), 200),
        ("smtp".to_owned(), 20),
    ])
}

/// The configured rates laid over the defaults, key by key: setting `smtp = 10` leaves the
/// other providers' limits in place. A name that is no provider is refused rather than
/// silently limiting nothing.
fn rates_over_defaults<'de, D>(deserializer: D) -> Result<BTreeMap<String, u32>, D::Error>
where
    D: Deserializer<'de>,
{
    let given = BTreeMap::<String, u32>::deserialize(deserializer)?;
    let mut rates = default_rates();
    for (provider, rate) in given {
        if !RATE_LIMITED_PROVIDERS.contains(&provider.as_str()) {
            let hint = if provider == "email" {
                " (e-mail is limited as `smtp`)"
            } else {
                ""
            };
            return Err(serde::de::Error::custom(format!(
                "rate_per_second.{provider}: unknown provider{hint}; expected one of {}",
                RATE_LIMITED_PROVIDERS.join(", ")
            )));
        }
        rates.insert(provider, rate);
    }
    Ok(rates)
}

/// The providers that send delivery receipts: the names the channels go by.
pub const RECEIPT_PROVIDERS: [&str; 4] = ["aliyun", "tencent", "jasmin", "wechat"];

/// Two days for SMS (operators retry a switched-off phone for up to 48 hours before they
/// report); one for WeChat, whose completion event comes within minutes when the account
/// gets it at all.
fn default_receipt_timeouts() -> BTreeMap<String, u64> {
    BTreeMap::from([
        ("aliyun".to_owned(), 172_800),
        ("tencent".to_owned(), 172_800),
        ("jasmin".to_owned(), 172_800),
        ("wechat".to_owned(), 86_400),
    ])
}

/// The configured receipt timeouts laid over the defaults, key by key, as the rates are.
fn receipt_timeouts_over_defaults<'de, D>(
    deserializer: D,
) -> Result<BTreeMap<String, u64>, D::Error>
where
    D: Deserializer<'de>,
{
    let given = BTreeMap::<String, u64>::deserialize(deserializer)?;
    let mut timeouts = default_receipt_timeouts();
    for (provider, secs) in given {
        if !RECEIPT_PROVIDERS.contains(&provider.as_str()) {
            let hint = if matches!(provider.as_str(), "log" | "smtp" | "email") {
                " (it gives no delivery receipts)"
            } else {
                ""
            };
            return Err(serde::de::Error::custom(format!(
                "receipt_timeout_secs.{provider}: unknown provider{hint}; expected one of {}",
                RECEIPT_PROVIDERS.join(", ")
            )));
        }
        timeouts.insert(provider, secs);
    }
    Ok(timeouts)
}

/// `[messaging.webhooks]`: how provider callbacks are authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// The shared secret of the providers that do not sign their callbacks (Alibaba,
    /// Tencent, Jasmin). Sent as the `X-Outreach-Token` header or `Authorization: Bearer …`
    /// where whatever calls us can set a header, as `?token=…` in the callback URL where it
    /// cannot (see `url_token`). Unset: those callbacks are refused.
    pub secret: Option<Secret>,
    /// Accept the secret as `?token=…` in the URL. Alibaba's and Tencent's consoles and
    /// Jasmin's reply connector take a bare URL, so this is the only way for them to send
    /// it; turn it off where a relay in front of the service sends the header instead.
    pub url_token: bool,
    /// The token configured in the WeChat official account's server settings; callbacks are
    /// checked against its signature.
    pub wechat_token: Option<Secret>,
    /// How far a signed callback's timestamp may be from our clock; older (or later) ones
    /// are refused, and a nonce is remembered for twice this long to refuse replays.
    pub max_skew_secs: u32,
    /// Addresses or networks (`203.0.113.7`, `10.0.0.0/8`) callbacks may come from; empty:
    /// any.
    pub allowed_sources: Vec<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            secret: None,
            url_token: true,
            wechat_token: None,
            max_skew_secs: 300,
            allowed_sources: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox_from_toml(toml: &str) -> Result<OutboxSettings, String> {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_configured_rate_overrides_only_its_own_default() {
        let settings = outbox_from_toml("[rate_per_second]\nsmtp = 10\naliyun = 0\n").unwrap();
        let rates = &settings.rate_per_second;
        assert_eq!(rates.get("smtp"), Some(&10));
        assert_eq!(rates.get("aliyun"), Some(&0), "0 lifts a limit");
        assert_eq!(
            rates.get("jasmin"),
            Some(&100),
            "the gateway keeps its limit"
        );
        assert_eq!(rates.get("tencent"), Some(&500));
        assert_eq!(rates.get("wechat"), Some(&200));
        assert_eq!(
            outbox_from_toml("").unwrap().rate_per_second,
            default_rates()
        );

        let err = outbox_from_toml("[rate_per_second]\nemail = 20\n").unwrap_err();
        assert!(err.contains("smtp"), "{err}");
        assert!(outbox_from_toml("[rate_per_second]\nsms = 5\n").is_err());
    }

    #[test]
    fn receipt_timeouts_override_their_own_default_and_refuse_providers_without_receipts() {
        let settings =
            outbox_from_toml("[receipt_timeout_secs]\njasmin = 3600\nwechat = 0\n").unwrap();
        let timeouts = &settings.receipt_timeout_secs;
        assert_eq!(timeouts["jasmin"], 3600);
        assert_eq!(timeouts["wechat"], 0);
        assert_eq!(timeouts["aliyun"], 172_800);
        let err = outbox_from_toml("[receipt_timeout_secs]\nlog = 60\n").unwrap_err();
        assert!(err.to_string().contains("no delivery receipts"), "{err}");
        assert!(outbox_from_toml("[receipt_timeout_secs]\nsmtp = 60\n").is_err());
    }
}
