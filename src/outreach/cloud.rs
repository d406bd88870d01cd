//! The cloud providers behind the [`Channel`] trait: Alibaba Cloud SMS, Tencent Cloud SMS
//! and WeChat official-account template messages. All three send *registered templates*:
//! the text is approved in the provider's console, and we pass the values it was rendered
//! from ([`MessageContext`]), not our own rendering of it.
//!
//! Template values (the mapping each county registers its templates against):
//! - the names are the [`MessageContext`] text field names: `resident_name`,
//!   `campaign_name`, `institution_name`, `institution_address`, `day`, `time`,
//!   `cadre_phone`, `window_from`, `window_to`, … ([`context_fields`]; `relay` is a flag, not
//!   a value);
//! - Alibaba: `TemplateParam` is a JSON object of every non-empty field, so the registered
//!   template uses `${resident_name}`, `${day}` and so on (unused values are ignored);
//! - Tencent: templates have numbered `{1}`, `{2}`… variables, so `template_params` lists per
//!   kind which fields fill them, in order;
//! - WeChat: `data` is `{"first": {"value": <title>}, "<field>": {"value": …}}` for every
//!   non-empty field, so the template's keys are `{{first.DATA}}`, `{{day.DATA}}` and so on.
//!
//! Outcomes: throttling, provider hiccups, 5xx answers and timeouts are [`SendError::Transient`];
//! a refused number, template, signature or credential is [`SendError::Permanent`] (a bad
//! credential does not heal by retrying). None of the three recognises a repeated request as
//! the same message (Alibaba's documentation says so of `SendSms`; WeChat's `client_msg_id`
//! only holds for ten minutes), so [`Channel::deduplicates`] is false for all of them.
//!
//! Nothing here logs a whole phone number, a token or a secret; provider messages are passed
//! through [`redact`] before they end up in an error.

pub use crate::config::{AliyunSmsSettings, TencentSmsSettings, WeChatSettings};
use crate::privacy::redact;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use sea_orm::DbErr;
use serde::Deserialize;
use serde_json::{Value, json};

use super::channel::{Channel, Outgoing, Recipient, SendError, Sent};
use super::http_client::http_client;
use super::signing::{aliyun_rpc_signature, tencent_tc3_authorization};
use super::templates::{MessageContext, MessageKind};
use crate::privacy::{Field, Privacy};

/// The text fields of a [`MessageContext`] by field name (`resident_name`, `day`, …), as it
/// serialises: a field added to the context is a template value without a change here.
/// `relay`, a flag, is not a value.
pub fn context_values(context: &MessageContext) -> BTreeMap<String, String> {
    match serde_json::to_value(context) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .filter_map(|(name, value)| match value {
                Value::String(text) => Some((name, text)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The names a template may use: the text fields of [`MessageContext`].
pub fn context_fields() -> Vec<String> {
    context_values(&MessageContext::default())
        .into_keys()
        .collect()
}

/// Every non-empty text field.
fn filled_fields(context: &MessageContext) -> BTreeMap<String, String> {
    let mut values = context_values(context);
    values.retain(|_, v| !v.is_empty());
    values
}

/// Checks that every key of a per-kind table names a [`MessageKind`]: a misspelt kind would
/// otherwise silently never be used.
fn check_kinds<'a>(
    section: &str,
    kinds: impl IntoIterator<Item = &'a String>,
) -> anyhow::Result<()> {
    for kind in kinds {
        if !MessageKind::ALL.iter().any(|k| k.code() == kind) {
            anyhow::bail!(
                "{section}: unknown message kind {kind:?} (one of {})",
                MessageKind::ALL.map(MessageKind::code).join(", ")
            );
        }
    }
    Ok(())
}

fn parse_url(setting: &str, value: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(value).map_err(|e| anyhow::anyhow!("{setting} {value:?}: {e}"))?;
    if url.host_str().is_none() {
        anyhow::bail!("{setting} {value:?}: no host");
    }
    Ok(url)
}

/// `key` when it fits in `max` bytes; else a prefix of it and 16 hex digits of its SHA-256,
/// so distinct keys stay distinct and the value stays recognisable in the provider's console.
pub fn short_key(key: &str, max: usize) -> String {
    use sha2::{Digest, Sha256};
    if key.len() <= max {
        return key.to_owned();
    }
    let digest: String = Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut end = max.saturating_sub(digest.len() + 1);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{digest}", &key[..end])
}

/// A request that did not get an answer: timed out, refused connection, cut off. Transient;
/// the URL is left out (WeChat's carries the access token).
/// A token fetch that got no answer sent no message: retry later.
fn token_unanswered(error: SendError) -> SendError {
    match error {
        SendError::Unknown(reason) => SendError::Transient(reason),
        other => other,
    }
}

fn unanswered(provider: &str, error: reqwest::Error) -> SendError {
    let what = if error.is_connect() {
        "unreachable"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "no answer"
    };
    let error = error.without_url();
    let mut reason = format!("{provider} {what}: {error}");
    // The causes (I/O, TLS, HTTP) say why; none of them carries the URL.
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    if what == "unreachable" {
        // No connection was made: nothing reached the provider, so it may be tried again.
        SendError::Transient(redact(&reason))
    } else {
        // Timed out, or the connection broke once the request was on its way (or its answer
        // was cut off): the provider may have taken the message, and sending it again could
        // reach the resident twice.
        SendError::Unknown(redact(&reason))
    }
}

/// An answer that is not the provider's JSON: a 5xx or 429 from a proxy is transient,
/// anything else permanent.
fn unexpected_answer(provider: &str, status: StatusCode, body: &str) -> SendError {
    let reason = redact(&format!("{provider} answered {status}: {}", body.trim()));
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        SendError::Transient(reason)
    } else {
        SendError::Permanent(reason)
    }
}

// ---------------------------------------------------------------------------------------
// Alibaba Cloud SMS

/// `OutId` has no firm documented length; ours stay within this many bytes.
pub const ALIYUN_OUT_ID_MAX: usize = 64;

/// SMS through Alibaba Cloud `SendSms`, an RPC call signed with HMAC-SHA1
/// ([`aliyun_rpc_signature`]), POSTed as a form. `OutId` carries the idempotency key (it
/// comes back on the receipt); the answer's `BizId` is the provider message id.
pub struct AliyunSmsChannel {
    client: reqwest::Client,
    endpoint: url::Url,
    settings: AliyunSmsSettings,
}

impl AliyunSmsChannel {
    /// One RPC call: the common parameters, the action's own, the signature; the answer's
    /// status and body.
    async fn call<const N: usize>(
        &self,
        action: &str,
        own: [(&str, String); N],
    ) -> Result<(StatusCode, String), SendError> {
        let mut parameters: BTreeMap<String, String> = [
            ("AccessKeyId", self.settings.access_key_id.clone()),
            ("Action", action.to_owned()),
            ("Format", "JSON".to_owned()),
            ("SignatureMethod", "HMAC-SHA1".to_owned()),
            ("SignatureNonce", uuid::Uuid::new_v4().to_string()),
            ("SignatureVersion", "1.0".to_owned()),
            (
                "Timestamp",
                Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
            ("Version", "2017-05-25".to_owned()),
        ]
        .into_iter()
        .chain(own)
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let signature = aliyun_rpc_signature(
            "POST",
            &parameters,
            self.settings.access_key_secret.expose(),
        );
        parameters.insert("Signature".to_owned(), signature);
        let response = self
            .client
            .post(self.endpoint.clone())
            .form(&parameters)
            .send()
            .await
            .map_err(|e| unanswered("aliyun", e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| unanswered("aliyun", e))?;
        Ok((status, body))
    }

    pub fn new(settings: &AliyunSmsSettings) -> anyhow::Result<Self> {
        let endpoint = parse_url("messaging.aliyun.endpoint", &settings.endpoint)?;
        check_kinds("messaging.aliyun.templates", settings.templates.keys())?;
        Ok(Self {
            client: http_client(Duration::from_secs(settings.timeout_secs))?,
            endpoint,
            settings: settings.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliyunAnswer {
    code: String,
    #[serde(default)]
    message: String,
    biz_id: Option<String>,
    request_id: Option<String>,
}

/// Sorts an Alibaba error code into retry-later or never.
fn aliyun_error(code: &str, message: &str) -> SendError {
    let reason = redact(&format!("aliyun {code}: {message}"));
    // Throttling (per number, per account, per second), a balance that will be topped up,
    // and the platform's own failures heal with time; a refused number, signature,
    // template, parameter or credential does not.
    let transient = matches!(
        code,
        "isv.BUSINESS_LIMIT_CONTROL"
            | "isv.DAY_LIMIT_CONTROL"
            | "isv.AMOUNT_NOT_ENOUGH"
            | "ServiceUnavailable"
            | "InternalError"
    ) || code.starts_with("Throttling")
        || code.starts_with("isp.")
        || code.starts_with("ServiceUnavailable");
    if transient {
        SendError::Transient(reason)
    } else {
        SendError::Permanent(reason)
    }
}

#[async_trait]
impl Channel for AliyunSmsChannel {
    fn name(&self) -> &'static str {
        "aliyun"
    }

    fn reaches(&self, recipient: &Recipient) -> bool {
        matches!(recipient, Recipient::Phone(_))
    }

    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError> {
        let Recipient::Phone(phone) = &message.recipient else {
            return Err(SendError::Permanent("not a phone recipient".to_owned()));
        };
        let template = self
            .settings
            .templates
            .get(message.kind.code())
            .ok_or_else(|| {
                SendError::Permanent(format!(
                    "no Alibaba Cloud template code configured for {}",
                    message.kind.code()
                ))
            })?;
        let values: serde_json::Map<String, Value> = filled_fields(&message.context)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let (status, body) = self
            .call(
                "SendSms",
                [
                    ("PhoneNumbers", phone.clone()),
                    ("SignName", self.settings.sign_name.clone()),
                    ("TemplateCode", template.clone()),
                    ("TemplateParam", Value::Object(values).to_string()),
                    (
                        "OutId",
                        short_key(&message.idempotency_key, ALIYUN_OUT_ID_MAX),
                    ),
                ],
            )
            .await?;
        let Ok(answer) = serde_json::from_str::<AliyunAnswer>(&body) else {
            return Err(unexpected_answer("aliyun", status, &body));
        };
        if answer.code == "OK" {
            let id = answer
                .biz_id
                .or(answer.request_id)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| SendError::Transient("aliyun answered OK without BizId".into()))?;
            return Ok(Sent {
                provider: "aliyun",
                provider_message_id: id,
                delivered: false,
            });
        }
        let error = aliyun_error(&answer.code, &answer.message);
        tracing::warn!(
            channel = "aliyun",
            kind = message.kind.code(),
            recipient = %message.recipient.masked(),
            status = status.as_u16(),
            error = %error,
            "message refused"
        );
        Err(error)
    }
    /// `QuerySendDetails`: the messages sent to the number on the day `since` falls on
    /// (China time), searched for our `OutId`. Alibaba keeps the OutId with each record, so a
    /// message taken before a crash is recognised and not sent again.
    async fn lookup(
        &self,
        message: &Outgoing,
        since: DateTime<Utc>,
    ) -> Result<Option<Sent>, SendError> {
        let Recipient::Phone(phone) = &message.recipient else {
            return Ok(None);
        };
        let out_id = short_key(&message.idempotency_key, ALIYUN_OUT_ID_MAX);
        let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8");
        let mut day = since.with_timezone(&china).date_naive();
        let today = Utc::now().with_timezone(&china).date_naive();
        while day <= today {
            for page in 1..=20u32 {
                let (status, body) = self
                    .call(
                        "QuerySendDetails",
                        [
                            ("PhoneNumber", phone.clone()),
                            ("SendDate", day.format("%Y%m%d").to_string()),
                            ("PageSize", "50".to_owned()),
                            ("CurrentPage", page.to_string()),
                        ],
                    )
                    .await?;
                let Ok(answer) = serde_json::from_str::<Value>(&body) else {
                    return Err(unexpected_answer("aliyun", status, &body));
                };
                let code = answer["Code"].as_str().unwrap_or_default();
                if code != "OK" {
                    return Err(aliyun_error(code, answer["Message"].as_str().unwrap_or("")));
                }
                let records = answer["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if records
                    .iter()
                    .any(|r| r["OutId"].as_str() == Some(out_id.as_str()))
                {
                    // The record carries no BizId; the receipt (which does) is matched
                    // when it comes, and the message counts as sent meanwhile.
                    return Ok(Some(Sent {
                        provider: "aliyun",
                        provider_message_id: String::new(),
                        delivered: false,
                    }));
                }
                if records.len() < 50 {
                    break;
                }
            }
            day = day.succ_opt().unwrap_or(today + chrono::Duration::days(1));
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// Tencent Cloud SMS

/// `SessionContext` must stay under 512 bytes.
pub const TENCENT_SESSION_CONTEXT_MAX: usize = 500;

/// SMS through Tencent Cloud `SendSms`: a JSON POST signed with TC3-HMAC-SHA256
/// ([`tencent_tc3_authorization`]). `SessionContext` carries the idempotency key; the
/// `SerialNo` of the answer is the provider message id.
pub struct TencentSmsChannel {
    client: reqwest::Client,
    endpoint: url::Url,
    /// The `Host` header as reqwest sends it (with the port when not the default): it is
    /// part of the signature.
    host: String,
    settings: TencentSmsSettings,
}

impl TencentSmsChannel {
    pub fn new(settings: &TencentSmsSettings) -> anyhow::Result<Self> {
        let endpoint = parse_url("messaging.tencent.endpoint", &settings.endpoint)?;
        check_kinds("messaging.tencent.templates", settings.templates.keys())?;
        check_kinds(
            "messaging.tencent.template_params",
            settings.template_params.keys(),
        )?;
        let known = context_fields();
        for (kind, fields) in &settings.template_params {
            if let Some(unknown) = fields.iter().find(|f| !known.contains(f)) {
                anyhow::bail!(
                    "messaging.tencent.template_params.{kind}: unknown field {unknown:?} (one of {})",
                    known.join(", ")
                );
            }
        }
        let host = match (endpoint.host_str(), endpoint.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => unreachable!("parse_url checks the host"),
        };
        Ok(Self {
            client: http_client(Duration::from_secs(settings.timeout_secs))?,
            endpoint,
            host,
            settings: settings.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
struct TencentAnswer {
    #[serde(rename = "Response")]
    response: TencentResponse,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TencentResponse {
    error: Option<TencentError>,
    #[serde(default)]
    send_status_set: Vec<TencentStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TencentError {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TencentStatus {
    #[serde(default)]
    serial_no: String,
    code: String,
    #[serde(default)]
    message: String,
}

/// Sorts a Tencent error code (of the whole request or of one number) into retry-later or
/// never.
fn tencent_error(code: &str, message: &str) -> SendError {
    let reason = redact(&format!("tencent {code}: {message}"));
    if code == "FailedOperation.PhoneNumberInBlacklist" {
        // The number unsubscribed from our signature at the provider.
        return SendError::Permanent(format!("opted_out: {reason}"));
    }
    // Frequency limits (per request rate, per number per 30 s / hour / day) and the
    // platform's own failures heal with time; a refused credential, signature, template or
    // number does not.
    let transient = code.starts_with("LimitExceeded")
        || code.starts_with("RequestLimitExceeded")
        || code.starts_with("InternalError")
        || code.starts_with("ResourceUnavailable")
        || code == "FailedOperation.InsufficientBalanceInSmsPackage";
    if transient {
        SendError::Transient(reason)
    } else {
        SendError::Permanent(reason)
    }
}

#[async_trait]
impl Channel for TencentSmsChannel {
    fn name(&self) -> &'static str {
        "tencent"
    }

    fn reaches(&self, recipient: &Recipient) -> bool {
        matches!(recipient, Recipient::Phone(_))
    }

    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError> {
        let Recipient::Phone(phone) = &message.recipient else {
            return Err(SendError::Permanent("not a phone recipient".to_owned()));
        };
        let kind = message.kind.code();
        let template = self.settings.templates.get(kind).ok_or_else(|| {
            SendError::Permanent(format!(
                "no Tencent Cloud template id configured for {kind}"
            ))
        })?;
        let context = context_values(&message.context);
        let values: Vec<&str> = self
            .settings
            .template_params
            .get(kind)
            .map(|fields| {
                fields
                    .iter()
                    .map(|f| context.get(f).map(String::as_str).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        let payload = json!({
            "PhoneNumberSet": [format!("+86{phone}")],
            "SmsSdkAppId": self.settings.sdk_app_id,
            "SignName": self.settings.sign_name,
            "TemplateId": template,
            "TemplateParamSet": values,
            "SessionContext": short_key(&message.idempotency_key, TENCENT_SESSION_CONTEXT_MAX),
        })
        .to_string();
        let timestamp = Utc::now().timestamp();
        let authorization = tencent_tc3_authorization(
            &self.settings.secret_id,
            self.settings.secret_key.expose(),
            "sms",
            &self.host,
            timestamp,
            &payload,
        );
        let response = self
            .client
            .post(self.endpoint.clone())
            .header("Authorization", authorization)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-TC-Action", "SendSms")
            .header("X-TC-Version", "2021-01-11")
            .header("X-TC-Region", &self.settings.region)
            .header("X-TC-Timestamp", timestamp.to_string())
            .body(payload)
            .send()
            .await
            .map_err(|e| unanswered("tencent", e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| unanswered("tencent", e))?;
        let Ok(answer) = serde_json::from_str::<TencentAnswer>(&body) else {
            return Err(unexpected_answer("tencent", status, &body));
        };
        let outcome = match (
            answer.response.error,
            answer.response.send_status_set.first(),
        ) {
            (Some(error), _) => Err(tencent_error(&error.code, &error.message)),
            (None, Some(first)) if first.code == "Ok" && !first.serial_no.is_empty() => Ok(Sent {
                provider: "tencent",
                provider_message_id: first.serial_no.clone(),
                delivered: false,
            }),
            (None, Some(first)) => Err(tencent_error(&first.code, &first.message)),
            (None, None) => Err(unexpected_answer("tencent", status, &body)),
        };
        if let Err(error) = &outcome {
            tracing::warn!(
                channel = "tencent",
                kind,
                recipient = %message.recipient.masked(),
                error = %error,
                "message refused"
            );
        }
        outcome
    }
}

// ---------------------------------------------------------------------------------------
// WeChat official account template messages

/// A token is replaced this long before WeChat says it expires.
const TOKEN_REFRESH_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// `client_msg_id` is at most 64 bytes.
const WECHAT_CLIENT_MSG_ID_MAX: usize = 64;

#[derive(Clone)]
struct AccessToken {
    token: String,
    expires_at: DateTime<Utc>,
}

impl AccessToken {
    fn usable(&self, now: DateTime<Utc>, rejected: Option<&str>) -> bool {
        self.expires_at - TOKEN_REFRESH_MARGIN > now && rejected != Some(self.token.as_str())
    }
}

/// An access token as a [`TokenStore`] keeps it: encrypted with the data key.
pub struct StoredToken {
    pub cipher: Vec<u8>,
    pub expires_at: DateTime<Utc>,
}

/// Where the access token of an account is shared by every instance, with the lock under
/// which one instance at a time fetches a new one (fetching invalidates the old token, so
/// there must be one refresher per account). The dispatch worker, which owns the database's
/// transactions, keeps it in `provider_tokens` (`dispatch`'s `TokenStore` for the database).
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The token stored for `account`.
    async fn stored(&self, account: &str) -> Result<Option<StoredToken>, DbErr>;
    /// Takes the refresh lock of `account` and reads the token stored under it (another
    /// instance may just have refreshed it). The lock is held until the returned
    /// [`TokenLock`] stores a token or is released or dropped.
    async fn lock(&self, account: &str)
    -> Result<(Box<dyn TokenLock>, Option<StoredToken>), DbErr>;
}

/// The refresh lock of one account, held.
#[async_trait]
pub trait TokenLock: Send {
    /// Stores `token` for the account and lets go of the lock.
    async fn store(self: Box<Self>, token: StoredToken) -> Result<(), DbErr>;
    /// Lets go of the lock, storing nothing.
    async fn release(self: Box<Self>) -> Result<(), DbErr>;
}

/// WeChat template messages to residents who follow the county's official account.
///
/// The access token is shared by every instance through a [`TokenStore`]: read from memory,
/// else from the store, else refreshed under the store's lock after reading it again. A
/// token is replaced five minutes before it expires, and when WeChat says it is invalid or
/// expired (40001, 40014, 42001): then the send is retried once with the new one.
pub struct WeChatChannel {
    client: reqwest::Client,
    api_base: url::Url,
    settings: WeChatSettings,
    account: String,
    tokens: Box<dyn TokenStore>,
    privacy: Arc<Privacy>,
    cached: Mutex<Option<AccessToken>>,
    /// One refresher per process; the store's lock covers the other processes.
    refreshing: tokio::sync::Mutex<()>,
}

/// What a template send came to.
enum WeChatOutcome {
    Sent(String),
    TokenRejected,
}

#[derive(Debug, Deserialize)]
struct WeChatAnswer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    msgid: Option<Value>,
    access_token: Option<String>,
    expires_in: Option<i64>,
}

/// Sorts a WeChat error code into opt-out, retry-later or never.
fn wechat_error(errcode: i64, errmsg: &str) -> SendError {
    let reason = redact(&format!("wechat {errcode}: {errmsg}"));
    match errcode {
        // The resident unfollowed the account or refused its messages.
        43004 | 43101 => SendError::Permanent(format!("opted_out: {reason}")),
        // System busy; daily quota or frequency limits.
        -1 | 45009 | 45011 => SendError::Transient(reason),
        _ => SendError::Permanent(reason),
    }
}

impl WeChatChannel {
    pub fn new(
        settings: &WeChatSettings,
        tokens: impl TokenStore + 'static,
        privacy: Arc<Privacy>,
    ) -> anyhow::Result<Self> {
        let api_base = parse_url("messaging.wechat.api_base", &settings.api_base)?;
        check_kinds("messaging.wechat.templates", settings.templates.keys())?;
        if let Some(url) = &settings.url {
            parse_url("messaging.wechat.url", url)?;
        }
        let account = format!("wechat:{}", settings.app_id);
        if account.len() > 100 {
            anyhow::bail!("messaging.wechat.app_id is too long");
        }
        Ok(Self {
            client: http_client(Duration::from_secs(settings.timeout_secs))?,
            api_base,
            settings: settings.clone(),
            account,
            tokens: Box::new(tokens),
            privacy,
            cached: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    fn endpoint(&self, path: &str) -> url::Url {
        let mut url = self.api_base.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    fn cached_token(&self, rejected: Option<&str>) -> Option<String> {
        let cached = self.cached.lock().expect("token cache lock");
        cached
            .as_ref()
            .filter(|t| t.usable(Utc::now(), rejected))
            .map(|t| t.token.clone())
    }

    fn remember(&self, token: &AccessToken) {
        *self.cached.lock().expect("token cache lock") = Some(token.clone());
    }

    /// A usable access token, never `rejected` (the one WeChat just refused).
    async fn access_token(&self, rejected: Option<&str>) -> Result<String, SendError> {
        if let Some(token) = self.cached_token(rejected) {
            return Ok(token);
        }
        let _refreshing = self.refreshing.lock().await;
        if let Some(token) = self.cached_token(rejected) {
            return Ok(token);
        }
        // Another instance may have refreshed it.
        let stored = self.tokens.stored(&self.account).await.map_err(database)?;
        if let Some(stored) = self
            .readable(stored)
            .filter(|t| t.usable(Utc::now(), rejected))
        {
            self.remember(&stored);
            return Ok(stored.token);
        }
        // One refresher across instances: the store's lock is held for the fetch (at most
        // `timeout_secs`, about once every two hours).
        let (lock, stored) = self.tokens.lock(&self.account).await.map_err(database)?;
        if let Some(stored) = self
            .readable(stored)
            .filter(|t| t.usable(Utc::now(), rejected))
        {
            lock.release().await.map_err(database)?;
            self.remember(&stored);
            return Ok(stored.token);
        }
        let fresh = self.fetch_token().await?;
        let stored = lock
            .store(StoredToken {
                cipher: self.privacy.encrypt(Field::ProviderToken, &fresh.token),
                expires_at: fresh.expires_at,
            })
            .await
            .map_err(database);
        if let Err(error) = stored {
            // The new token is valid (and the old one no longer is): use it anyway; another
            // instance will refresh its own.
            tracing::warn!(account = %self.account, error = %error, "could not store the WeChat access token");
        }
        tracing::info!(
            account = %self.account,
            expires_at = %fresh.expires_at,
            "WeChat access token refreshed"
        );
        self.remember(&fresh);
        Ok(fresh.token)
    }

    /// The stored token decrypted; one written under another key is replaced.
    fn readable(&self, stored: Option<StoredToken>) -> Option<AccessToken> {
        let stored = stored?;
        match self.privacy.decrypt(Field::ProviderToken, &stored.cipher) {
            Ok(token) => Some(AccessToken {
                token,
                expires_at: stored.expires_at,
            }),
            Err(e) => {
                tracing::warn!(account = %self.account, error = %e, "stored WeChat access token unreadable");
                None
            }
        }
    }

    /// `GET /cgi-bin/token`: a new token, which makes the previous one invalid.
    async fn fetch_token(&self) -> Result<AccessToken, SendError> {
        let mut url = self.endpoint("/cgi-bin/token");
        url.query_pairs_mut()
            .append_pair("grant_type", "client_credential")
            .append_pair("appid", &self.settings.app_id)
            .append_pair("secret", self.settings.app_secret.expose());
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| token_unanswered(unanswered("wechat", e)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| token_unanswered(unanswered("wechat", e)))?;
        let answer = match serde_json::from_str::<WeChatAnswer>(&body) {
            Ok(answer) if status.is_success() => answer,
            _ => return Err(unexpected_answer("wechat", status, &body)),
        };
        match (answer.access_token, answer.expires_in) {
            (Some(token), Some(seconds)) if answer.errcode == 0 && !token.is_empty() => {
                Ok(AccessToken {
                    token,
                    expires_at: Utc::now() + chrono::TimeDelta::seconds(seconds),
                })
            }
            _ => {
                // A wrong appid or secret, or our address not on the account's allow-list,
                // does not heal by retrying.
                let error = wechat_error(answer.errcode, &answer.errmsg);
                Err(match error {
                    SendError::Permanent(reason) => {
                        SendError::Permanent(format!("access token refused: {reason}"))
                    }
                    transient => transient,
                })
            }
        }
    }

    async fn post_template(
        &self,
        token: &str,
        payload: &Value,
    ) -> Result<WeChatOutcome, SendError> {
        let mut url = self.endpoint("/cgi-bin/message/template/send");
        url.query_pairs_mut().append_pair("access_token", token);
        let response = self
            .client
            .post(url)
            .json(payload)
            .send()
            .await
            .map_err(|e| unanswered("wechat", e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| unanswered("wechat", e))?;
        let answer = match serde_json::from_str::<WeChatAnswer>(&body) {
            Ok(answer) if status.is_success() => answer,
            _ => return Err(unexpected_answer("wechat", status, &body)),
        };
        match answer.errcode {
            0 => {
                let id = match answer.msgid {
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::String(s)) if !s.is_empty() => s,
                    _ => {
                        return Err(SendError::Transient(
                            "wechat answered 0 without msgid".to_owned(),
                        ));
                    }
                };
                Ok(WeChatOutcome::Sent(id))
            }
            40001 | 40014 | 42001 => Ok(WeChatOutcome::TokenRejected),
            code => Err(wechat_error(code, &answer.errmsg)),
        }
    }
}

fn database(error: impl std::fmt::Display) -> SendError {
    SendError::Transient(format!("database: {error}"))
}

#[async_trait]
impl Channel for WeChatChannel {
    fn name(&self) -> &'static str {
        "wechat"
    }

    fn reaches(&self, recipient: &Recipient) -> bool {
        matches!(recipient, Recipient::WeChat(_))
    }

    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError> {
        let Recipient::WeChat(openid) = &message.recipient else {
            return Err(SendError::Permanent("not a WeChat recipient".to_owned()));
        };
        let kind = message.kind.code();
        let template = self.settings.templates.get(kind).ok_or_else(|| {
            SendError::Permanent(format!("no WeChat template configured for {kind}"))
        })?;
        let mut data = serde_json::Map::new();
        data.insert("first".to_owned(), json!({ "value": message.title }));
        for (field, value) in filled_fields(&message.context) {
            data.insert(field, json!({ "value": value }));
        }
        let mut payload = json!({
            "touser": openid,
            "template_id": template,
            "client_msg_id": short_key(&message.idempotency_key, WECHAT_CLIENT_MSG_ID_MAX),
            "data": data,
        });
        if let Some(url) = &self.settings.url {
            payload["url"] = Value::String(url.clone());
        }
        let token = self.access_token(None).await?;
        let outcome = match self.post_template(&token, &payload).await? {
            WeChatOutcome::TokenRejected => {
                tracing::info!(account = %self.account, "WeChat refused the access token; refreshing it");
                let token = self.access_token(Some(&token)).await?;
                self.post_template(&token, &payload).await?
            }
            sent => sent,
        };
        match outcome {
            WeChatOutcome::Sent(id) => Ok(Sent {
                provider: "wechat",
                provider_message_id: id,
                delivered: false,
            }),
            WeChatOutcome::TokenRejected => Err(SendError::Transient(
                "wechat refused a freshly refreshed access token".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn phone_numbers_are_masked_in_provider_messages() {
        assert_eq!(
            redact("invalid mobile 13812345678, code 1234"),
            "invalid mobile 138****5678, code 1234"
        );
        assert_eq!(
            redact("PhoneNumbers%3D8613812345678&"),
            "PhoneNumbers%3D861****5678&"
        );
        assert_eq!(redact(&"9".repeat(7)), "999****9999");
        assert!(redact(&"说".repeat(400)).chars().count() <= 301);
    }

    #[test]
    fn long_keys_are_shortened_to_a_prefix_and_a_hash() {
        assert_eq!(
            short_key("same_day_reminder.a7.2026-12-31", 64),
            "same_day_reminder.a7.2026-12-31"
        );
        let long = format!("migrant_wave.{}", "x".repeat(100));
        let short = short_key(&long, 64);
        assert_eq!(short.len(), 64);
        assert!(short.starts_with("migrant_wave.xxx"));
        assert_ne!(
            short,
            short_key(&format!("{long}y"), 64),
            "distinct keys stay distinct"
        );
        let chinese = "通知".repeat(40);
        assert!(short_key(&chinese, 64).len() <= 64);
    }

    #[test]
    fn only_filled_text_fields_become_template_values() {
        let context = MessageContext {
            resident_name: "张三".into(),
            day: "3月15日".into(),
            relay: true,
            ..Default::default()
        };
        assert_eq!(
            filled_fields(&context).into_iter().collect::<Vec<_>>(),
            vec![
                ("day".to_owned(), "3月15日".to_owned()),
                ("resident_name".to_owned(), "张三".to_owned())
            ]
        );
        let fields = context_fields();
        for field in [
            "resident_name",
            "campaign_name",
            "institution_name",
            "institution_address",
            "day",
            "time",
            "cadre_phone",
            "window_from",
            "window_to",
        ] {
            assert!(fields.iter().any(|f| f == field), "{field}");
        }
        assert!(!fields.iter().any(|f| f == "relay"));
        let sample = context_values(&MessageContext::sample());
        assert_eq!(sample.len(), fields.len());
        assert!(sample.values().all(|v| !v.is_empty()));
    }

    #[test]
    fn errors_are_sorted_into_transient_and_permanent() {
        let transient = |e: SendError| matches!(e, SendError::Transient(_));
        assert!(transient(aliyun_error(
            "isv.BUSINESS_LIMIT_CONTROL",
            "触发分钟级流控"
        )));
        assert!(transient(aliyun_error("Throttling.User", "")));
        assert!(transient(aliyun_error("isp.SYSTEM_ERROR", "")));
        assert!(!transient(aliyun_error("isv.MOBILE_NUMBER_ILLEGAL", "")));
        assert!(!transient(aliyun_error("isv.SMS_TEMPLATE_ILLEGAL", "")));
        assert!(!transient(aliyun_error("SignatureDoesNotMatch", "")));
        assert!(transient(tencent_error(
            "LimitExceeded.PhoneNumberDailyLimit",
            ""
        )));
        assert!(transient(tencent_error("RequestLimitExceeded", "")));
        assert!(transient(tencent_error("InternalError.Timeout", "")));
        assert!(!transient(tencent_error(
            "AuthFailure.SignatureFailure",
            ""
        )));
        assert!(!transient(tencent_error(
            "InvalidParameterValue.IncorrectPhoneNumber",
            ""
        )));
        assert!(!transient(tencent_error(
            "FailedOperation.TemplateIncorrectOrUnapproved",
            ""
        )));
        assert!(
            tencent_error("FailedOperation.PhoneNumberInBlacklist", "")
                .to_string()
                .contains("opted_out")
        );
        assert!(
            wechat_error(43101, "user refuse to accept the msg")
                .to_string()
                .contains("opted_out")
        );
        assert!(
            wechat_error(43004, "require subscribe")
                .to_string()
                .contains("opted_out")
        );
        assert!(transient(wechat_error(-1, "system error")));
        assert!(transient(wechat_error(
            45009,
            "reach max api daily quota limit"
        )));
        assert!(!transient(wechat_error(40003, "invalid openid")));
    }

    #[test]
    fn settings_read_from_toml_with_their_defaults() {
        use figment::providers::{Format, Toml};
        let figment = figment::Figment::from(Toml::string(
            r#"
            [aliyun]
            access_key_id = "LTAI5t"
            access_key_secret = "s"
            sign_name = "新源县卫健委"
            templates = { appointment_notice = "SMS_465000001" }

            [tencent]
            secret_id = "AKID"
            secret_key = "k"
            sdk_app_id = "1400787878"
            sign_name = "新源县卫健委"
            templates = { appointment_notice = "1888001" }
            template_params = { appointment_notice = ["resident_name", "day", "time"] }

            [wechat]
            app_id = "wx8f3a2b1c4d5e6f70"
            app_secret = "w"
            templates = { appointment_notice = "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY" }

            [typo]
            access_key_id = "LTAI5t"
            access_key_secret = "s"
            sign_name = "x"
            template = {}
            "#,
        ));
        let aliyun: AliyunSmsSettings = figment.extract_inner("aliyun").unwrap();
        assert_eq!(aliyun.endpoint, "https://dysmsapi.aliyuncs.com/");
        assert_eq!(aliyun.timeout_secs, 10);
        assert_eq!(format!("{:?}", aliyun.access_key_secret), "Secret(***)");
        AliyunSmsChannel::new(&aliyun).unwrap();
        let tencent: TencentSmsSettings = figment.extract_inner("tencent").unwrap();
        assert_eq!(tencent.endpoint, "https://sms.tencentcloudapi.com");
        assert_eq!(tencent.region, "ap-guangzhou");
        assert_eq!(
            TencentSmsChannel::new(&tencent).unwrap().host,
            "sms.tencentcloudapi.com"
        );
        let wechat: WeChatSettings = figment.extract_inner("wechat").unwrap();
        assert_eq!(wechat.api_base, "https://api.weixin.qq.com");
        assert_eq!(wechat.url, None);
        let typo = figment
            .extract_inner::<AliyunSmsSettings>("typo")
            .unwrap_err();
        assert!(typo.to_string().contains("template"), "{typo}");
    }

    #[test]
    fn unknown_kinds_and_fields_in_settings_are_refused() {
        let settings = TencentSmsSettings {
            endpoint: crate::config::messaging::default_tencent_endpoint(),
            region: crate::config::messaging::default_tencent_region(),
            secret_id: "id".into(),
            secret_key: Secret::new("key"),
            sdk_app_id: "1400000000".into(),
            sign_name: "新源县卫健委".into(),
            templates: [("appointment_notice".to_owned(), "1".to_owned())].into(),
            template_params: [(
                "appointment_notice".to_owned(),
                vec!["resident_name".to_owned(), "dya".to_owned()],
            )]
            .into(),
            timeout_secs: 1,
        };
        let error = TencentSmsChannel::new(&settings).err().unwrap().to_string();
        assert!(error.contains("\"dya\""), "{error}");
        let settings = TencentSmsSettings {
            templates: [("appointment_notise".to_owned(), "1".to_owned())].into(),
            template_params: BTreeMap::new(),
            ..settings
        };
        let error = TencentSmsChannel::new(&settings).err().unwrap().to_string();
        assert!(error.contains("appointment_notise"), "{error}");
    }
}
