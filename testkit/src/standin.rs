//! A local stand-in for the cloud message providers (Alibaba Cloud SMS, Tencent Cloud SMS,
//! WeChat template messages), for verifying the channels offline: the integration tests send
//! through it instead of the real services.
//!
//! It checks what the real service checks, so a channel that passes against it signs and
//! fills its requests correctly:
//! - Alibaba: recomputes the RPC HMAC-SHA1 signature from the received form and query and
//!   refuses a mismatch with `SignatureDoesNotMatch`; checks the access key id, the common
//!   parameters, a fresh `SignatureNonce`, the `Timestamp` (15 minutes of skew), and
//!   `PhoneNumbers`, `SignName`, `TemplateCode`, a JSON `TemplateParam`.
//! - Tencent: recomputes the TC3-HMAC-SHA256 `Authorization` over the received body and the
//!   received `Host` and `Content-Type` headers and refuses a mismatch with
//!   `AuthFailure.SignatureFailure`; checks the secret id, `X-TC-Timestamp` (5 minutes of
//!   skew), action, version, region and the body's required fields.
//! - WeChat: checks appid and secret on `/cgi-bin/token`, and that a template send carries
//!   the current token (an older one, after a refresh, gets 40001).
//!
//! It records every accepted message, counts requests that repeat an idempotency key
//! (`OutId`, `SessionContext`, `client_msg_id`) and WeChat token fetches, and can be told to
//! misbehave ([`Behaviour`]). It keeps everything in memory and has no notion of our
//! database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{NaiveDateTime, Utc};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use outreach::outreach::signing::{aliyun_rpc_signature, tencent_tc3_authorization};

/// Which provider to stand in for, with the credentials it accepts.
#[derive(Debug, Clone)]
pub enum StandInKind {
    Aliyun {
        access_key_id: String,
        secret: String,
    },
    Tencent {
        secret_id: String,
        secret_key: String,
    },
    WeChat {
        app_id: String,
        secret: String,
    },
}

/// How the stand-in answers from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Checks the request and accepts it.
    Normal,
    /// Answers 503 (Alibaba: `ServiceUnavailable`), before any check.
    Fail5xx,
    /// Refuses for frequency: Alibaba `isv.BUSINESS_LIMIT_CONTROL`, Tencent
    /// `LimitExceeded.PhoneNumberDailyLimit`, WeChat 45009.
    Throttle,
    /// Never answers in time: waits far longer than any client timeout.
    Timeout,
    /// Answers normally after this long.
    Slow(Duration),
    /// Takes the message at once but answers only after this long (a client that dies
    /// meanwhile leaves a message the provider has and the sender does not know about).
    SlowAnswer(Duration),
    /// Refuses the recipient: Alibaba `isv.MOBILE_NUMBER_ILLEGAL`, Tencent
    /// `InvalidParameterValue.IncorrectPhoneNumber`, WeChat 43101 (the user refused).
    RejectNumber,
    /// WeChat: the next template send finds its token invalidated (40001), as when another
    /// party fetched a new one; then back to normal.
    ExpireTokenOnce,
}

/// A message the stand-in accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// `OutId`, `SessionContext` or `client_msg_id`.
    pub idempotency_key: String,
    /// The phone number as sent (Alibaba `13812345678`, Tencent `+8613812345678`) or the
    /// WeChat openid.
    pub to: String,
    /// Template code or id.
    pub template: String,
    /// Alibaba: the `TemplateParam` object; Tencent: the `TemplateParamSet` array; WeChat:
    /// the `data` object.
    pub params: Value,
    pub sign_name: Option<String>,
    /// The id the stand-in answered (`BizId`, `SerialNo`, `msgid`).
    pub provider_id: String,
}

struct Shared {
    kind: StandInKind,
    behaviour: Mutex<Behaviour>,
    accepted: Mutex<Vec<Accepted>>,
    /// Idempotency key → the provider id first answered for it.
    seen_keys: Mutex<HashMap<String, String>>,
    nonces: Mutex<HashSet<String>>,
    duplicates: AtomicUsize,
    refused: AtomicUsize,
    token_fetches: AtomicUsize,
    current_token: Mutex<Option<String>>,
    counter: AtomicU64,
}

impl Shared {
    fn behaviour(&self) -> Behaviour {
        *self.behaviour.lock().expect("behaviour lock")
    }

    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a repeated idempotency key; returns the id first answered for it.
    fn seen(&self, key: &str) -> Option<String> {
        if key.is_empty() {
            return None;
        }
        let seen = self.seen_keys.lock().expect("keys lock");
        let first = seen.get(key).cloned();
        if first.is_some() {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Records an accepted message; `dedupe_key` is what a repeat is recognised by (empty:
    /// nothing).
    fn accept(&self, dedupe_key: &str, accepted: Accepted) {
        if !dedupe_key.is_empty() {
            self.seen_keys
                .lock()
                .expect("keys lock")
                .entry(dedupe_key.to_owned())
                .or_insert_with(|| accepted.provider_id.clone());
        }
        self.accepted.lock().expect("accepted lock").push(accepted);
    }
}

/// A running stand-in on `127.0.0.1`, stopped when dropped.
pub struct StandIn {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StandIn {
    /// Binds `127.0.0.1:0` and serves in the background.
    pub async fn start(kind: StandInKind) -> std::io::Result<StandIn> {
        let shared = Arc::new(Shared {
            kind: kind.clone(),
            behaviour: Mutex::new(Behaviour::Normal),
            accepted: Mutex::default(),
            seen_keys: Mutex::default(),
            nonces: Mutex::default(),
            duplicates: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            token_fetches: AtomicUsize::new(0),
            current_token: Mutex::new(None),
            counter: AtomicU64::new(0),
        });
        let router = match kind {
            StandInKind::Aliyun { .. } => Router::new().route("/", any(aliyun)),
            StandInKind::Tencent { .. } => Router::new().route("/", post(tencent)),
            StandInKind::WeChat { .. } => Router::new()
                .route("/cgi-bin/token", get(wechat_token))
                .route("/cgi-bin/message/template/send", post(wechat_send)),
        }
        .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "provider stand-in stopped");
            }
        });
        Ok(StandIn {
            url,
            shared,
            server,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:40123/` (the endpoint / API base to configure).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().expect("behaviour lock") = behaviour;
    }

    /// Every accepted message, in order.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.accepted.lock().expect("accepted lock").clone()
    }

    /// Requests that carried an idempotency key already accepted before.
    pub fn duplicates(&self) -> usize {
        self.shared.duplicates.load(Ordering::Relaxed)
    }

    /// Requests refused for their credentials, signature or timestamp.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// WeChat: access tokens issued.
    pub fn token_fetches(&self) -> usize {
        self.shared.token_fetches.load(Ordering::Relaxed)
    }

    /// WeChat: the token currently valid (for checking it appears nowhere it should not).
    pub fn current_token(&self) -> Option<String> {
        self.shared
            .current_token
            .lock()
            .expect("token lock")
            .clone()
    }
}

/// Applies the behaviours that happen before the service looks at a request. `Some` is the
/// answer to give instead of going on.
async fn before_checks(
    shared: &Shared,
    unavailable: impl FnOnce() -> Response,
) -> Option<Response> {
    match shared.behaviour() {
        Behaviour::Timeout => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Behaviour::Fail5xx => Some(unavailable()),
        _ => None,
    }
}

fn is_mainland_mobile(phone: &str) -> bool {
    phone.len() == 11 && phone.starts_with('1') && phone.bytes().all(|b| b.is_ascii_digit())
}

fn equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

// ---------------------------------------------------------------------------------------
// Alibaba Cloud

fn aliyun_answer(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "RequestId": uuid::Uuid::new_v4().to_string().to_uppercase(),
            "HostId": "dysmsapi.aliyuncs.com",
            "Code": code,
            "Message": message,
        })),
    )
        .into_response()
}

async fn aliyun(
    State(shared): State<Arc<Shared>>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(answer) = before_checks(&shared, || {
        aliyun_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    })
    .await
    {
        return answer;
    }
    let StandInKind::Aliyun {
        access_key_id,
        secret,
    } = &shared.kind
    else {
        unreachable!("an Alibaba route serves an Alibaba stand-in")
    };
    // RPC parameters come in the query string, the form body, or both.
    let mut parameters: BTreeMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if method == Method::POST {
        parameters.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    let Some(given) = parameters.remove("Signature") else {
        return aliyun_answer(
            StatusCode::BAD_REQUEST,
            "MissingSignature",
            "Signature is mandatory for this action.",
        );
    };
    for name in [
        "AccessKeyId",
        "Action",
        "Format",
        "SignatureMethod",
        "SignatureNonce",
        "SignatureVersion",
        "Timestamp",
        "Version",
    ] {
        if parameters.get(name).is_none_or(|v| v.is_empty()) {
            return aliyun_answer(
                StatusCode::BAD_REQUEST,
                &format!("Missing{name}"),
                &format!("{name} is mandatory for this action."),
            );
        }
    }
    if parameters["AccessKeyId"] != *access_key_id {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return aliyun_answer(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        );
    }
    if parameters["SignatureMethod"] != "HMAC-SHA1" || parameters["SignatureVersion"] != "1.0" {
        return aliyun_answer(
            StatusCode::BAD_REQUEST,
            "InvalidSignatureMethod",
            "Specified signature method is not valid.",
        );
    }
    let Ok(timestamp) =
        NaiveDateTime::parse_from_str(&parameters["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    else {
        return aliyun_answer(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        );
    };
    if (Utc::now().naive_utc() - timestamp).num_seconds().abs() > 15 * 60 {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return aliyun_answer(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        );
    }
    let expected = aliyun_rpc_signature(method.as_str(), &parameters, secret);
    if !equal(&expected, &given) {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return aliyun_answer(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        );
    }
    if !shared
        .nonces
        .lock()
        .expect("nonce lock")
        .insert(parameters["SignatureNonce"].clone())
    {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return aliyun_answer(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        );
    }
    if parameters["Action"] == "QuerySendDetails" {
        return aliyun_query(&shared, &parameters);
    }
    if parameters["Action"] != "SendSms" {
        return aliyun_answer(
            StatusCode::BAD_REQUEST,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        );
    }
    if parameters["Version"] != "2017-05-25" {
        return aliyun_answer(
            StatusCode::BAD_REQUEST,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        );
    }
    for name in ["PhoneNumbers", "SignName", "TemplateCode"] {
        if parameters.get(name).is_none_or(|v| v.is_empty()) {
            return aliyun_answer(
                StatusCode::BAD_REQUEST,
                &format!("Missing{name}"),
                &format!("{name} is mandatory for this action."),
            );
        }
    }
    if shared.behaviour() == Behaviour::Throttle {
        return aliyun_answer(
            StatusCode::OK,
            "isv.BUSINESS_LIMIT_CONTROL",
            "触发小时级流控Permits:5",
        );
    }
    let phone = parameters["PhoneNumbers"].clone();
    if shared.behaviour() == Behaviour::RejectNumber || !phone.split(',').all(is_mainland_mobile) {
        return aliyun_answer(StatusCode::OK, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
    }
    let params = match parameters.get("TemplateParam") {
        None => json!({}),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) if map.values().all(Value::is_string) => Value::Object(map),
            _ => {
                return aliyun_answer(
                    StatusCode::OK,
                    "isv.INVALID_JSON_PARAM",
                    "JSON参数不合法，只接受字符串值",
                );
            }
        },
    };
    let key = parameters.get("OutId").cloned().unwrap_or_default();
    shared.seen(&key);
    let biz_id = format!("{:018}^0", 900_000_000_000_000_000 + shared.next_id());
    shared.accept(
        &key,
        Accepted {
            idempotency_key: key.clone(),
            to: phone,
            template: parameters["TemplateCode"].clone(),
            params,
            sign_name: parameters.get("SignName").cloned(),
            provider_id: biz_id.clone(),
        },
    );
    if let Behaviour::SlowAnswer(delay) = shared.behaviour() {
        tokio::time::sleep(delay).await;
    }
    (
        StatusCode::OK,
        axum::Json(json!({
            "Code": "OK",
            "Message": "OK",
            "BizId": biz_id,
            "RequestId": uuid::Uuid::new_v4().to_string().to_uppercase(),
        })),
    )
        .into_response()
}

/// `QuerySendDetails`: the messages accepted for `PhoneNumber` (all on the stand-in's one
/// day), one page of `PageSize` at `CurrentPage`, each with its `OutId`.
fn aliyun_query(shared: &Shared, parameters: &BTreeMap<String, String>) -> Response {
    for name in ["PhoneNumber", "SendDate", "PageSize", "CurrentPage"] {
        if parameters.get(name).is_none_or(|v| v.is_empty()) {
            return aliyun_answer(
                StatusCode::BAD_REQUEST,
                &format!("Missing{name}"),
                &format!("{name} is mandatory for this action."),
            );
        }
    }
    let size: usize = parameters["PageSize"].parse().unwrap_or(0);
    let page: usize = parameters["CurrentPage"].parse().unwrap_or(0);
    if !(1..=50).contains(&size) || page == 0 {
        return aliyun_answer(
            StatusCode::OK,
            "isv.INVALID_PARAMETERS",
            "PageSize 1–50, CurrentPage from 1",
        );
    }
    let phone = &parameters["PhoneNumber"];
    let records: Vec<Value> = shared
        .accepted
        .lock()
        .expect("accepted lock")
        .iter()
        .filter(|a| a.to.split(',').any(|p| p == phone))
        .map(|a| {
            json!({
                "PhoneNum": phone,
                "SendStatus": 3,
                "ErrCode": "DELIVERED",
                "TemplateCode": a.template,
                "OutId": a.idempotency_key,
                "SendDate": parameters["SendDate"],
            })
        })
        .collect();
    let total = records.len();
    let page: Vec<Value> = records
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    axum::Json(json!({
        "Code": "OK",
        "Message": "OK",
        "TotalCount": total,
        "SmsSendDetailDTOs": {"SmsSendDetailDTO": page},
        "RequestId": uuid::Uuid::new_v4().to_string().to_uppercase(),
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// Tencent Cloud

fn tencent_error(code: &str, message: &str) -> Response {
    axum::Json(json!({
        "Response": {
            "Error": {"Code": code, "Message": message},
            "RequestId": uuid::Uuid::new_v4().to_string(),
        }
    }))
    .into_response()
}

fn tencent_status(code: &str, message: &str, phone: &str, session: &str, serial: &str) -> Response {
    axum::Json(json!({
        "Response": {
            "SendStatusSet": [{
                "SerialNo": serial,
                "PhoneNumber": phone,
                "Fee": if code == "Ok" { 1 } else { 0 },
                "SessionContext": session,
                "Code": code,
                "Message": message,
                "IsoCode": "CN",
            }],
            "RequestId": uuid::Uuid::new_v4().to_string(),
        }
    }))
    .into_response()
}

async fn tencent(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(answer) = before_checks(&shared, || {
        (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response()
    })
    .await
    {
        return answer;
    }
    let StandInKind::Tencent {
        secret_id,
        secret_key,
    } = &shared.kind
    else {
        unreachable!("a Tencent route serves a Tencent stand-in")
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let authorization = header("authorization");
    let Some(credential) = authorization
        .strip_prefix("TC3-HMAC-SHA256 Credential=")
        .and_then(|rest| rest.split(',').next())
    else {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return tencent_error(
            "AuthFailure.InvalidAuthorization",
            "Authorization header is not valid.",
        );
    };
    let given_id = credential.split('/').next().unwrap_or_default();
    if given_id != secret_id {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return tencent_error(
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found, please ensure that your SecretId is correct.",
        );
    }
    let Ok(timestamp) = header("x-tc-timestamp").parse::<i64>() else {
        return tencent_error(
            "MissingParameter",
            "The request is missing a required parameter `X-TC-Timestamp`.",
        );
    };
    if (Utc::now().timestamp() - timestamp).abs() > 300 {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return tencent_error(
            "AuthFailure.SignatureExpire",
            "Signature expired. Timestamp and server time cannot differ by more than 5 minutes.",
        );
    }
    // The service recomputes over what it received; our signing function signs exactly
    // this content type, so any other one cannot match.
    let payload = String::from_utf8_lossy(&body).into_owned();
    let expected = tencent_tc3_authorization(
        secret_id,
        secret_key,
        "sms",
        &header("host"),
        timestamp,
        &payload,
    );
    if header("content-type") != "application/json; charset=utf-8"
        || !equal(&expected, &authorization)
    {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return tencent_error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        );
    }
    if header("x-tc-action") != "SendSms" {
        return tencent_error("InvalidAction", "The action is not found.");
    }
    if header("x-tc-version") != "2021-01-11" {
        return tencent_error(
            "NoSuchVersion",
            "The requested version does not exist or is not supported.",
        );
    }
    if header("x-tc-region").is_empty() {
        return tencent_error(
            "MissingParameter",
            "The request is missing a required parameter `X-TC-Region`.",
        );
    }
    let Ok(request) = serde_json::from_str::<Value>(&payload) else {
        return tencent_error("InvalidParameter", "The request body is not valid JSON.");
    };
    let text = |name: &str| {
        request
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    for name in ["SmsSdkAppId", "SignName", "TemplateId"] {
        if text(name).is_empty() {
            return tencent_error(
                "MissingParameter",
                &format!("The request is missing a required parameter `{name}`."),
            );
        }
    }
    let phones: Vec<String> = match request.get("PhoneNumberSet").and_then(Value::as_array) {
        Some(set) if !set.is_empty() && set.iter().all(Value::is_string) => set
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => {
            return tencent_error(
                "MissingParameter",
                "The request is missing a required parameter `PhoneNumberSet`.",
            );
        }
    };
    let params = match request.get("TemplateParamSet") {
        None => json!([]),
        Some(Value::Array(values)) if values.iter().all(Value::is_string) => {
            Value::Array(values.clone())
        }
        Some(_) => {
            return tencent_error(
                "InvalidParameterValue.TemplateParameterFormatError",
                "TemplateParamSet must be an array of strings.",
            );
        }
    };
    let phone = phones[0].clone();
    let session = text("SessionContext");
    if shared.behaviour() == Behaviour::Throttle {
        return tencent_status(
            "LimitExceeded.PhoneNumberDailyLimit",
            "the number of SMS messages sent from a single mobile number every day exceeds the upper limit",
            &phone,
            &session,
            "",
        );
    }
    let valid = phone.strip_prefix("+86").is_some_and(is_mainland_mobile);
    if shared.behaviour() == Behaviour::RejectNumber || !valid {
        return tencent_status(
            "InvalidParameterValue.IncorrectPhoneNumber",
            "invalid mobile number",
            &phone,
            &session,
            "",
        );
    }
    shared.seen(&session);
    let serial = format!("2640:{}", 100_000_000_000_000_000u64 + shared.next_id());
    shared.accept(
        &session,
        Accepted {
            idempotency_key: session.clone(),
            to: phone.clone(),
            template: text("TemplateId"),
            params,
            sign_name: Some(text("SignName")),
            provider_id: serial.clone(),
        },
    );
    tencent_status("Ok", "send success", &phone, &session, &serial)
}

// ---------------------------------------------------------------------------------------
// WeChat

fn wechat_answer(errcode: i64, errmsg: &str) -> Response {
    axum::Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
}

fn query_map(query: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn wechat_token(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    if let Some(answer) = before_checks(&shared, || {
        (StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable").into_response()
    })
    .await
    {
        return answer;
    }
    let StandInKind::WeChat { app_id, secret } = &shared.kind else {
        unreachable!("a WeChat route serves a WeChat stand-in")
    };
    let query = query_map(query);
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    if param("grant_type") != "client_credential" {
        return wechat_answer(40002, "invalid grant_type");
    }
    if param("appid") != app_id {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return wechat_answer(40013, "invalid appid");
    }
    if !equal(param("secret"), secret) {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return wechat_answer(40125, "invalid appsecret");
    }
    shared.token_fetches.fetch_add(1, Ordering::Relaxed);
    let token = format!(
        "{}_{}",
        shared.next_id(),
        uuid::Uuid::new_v4().simple().to_string().to_uppercase()
    );
    *shared.current_token.lock().expect("token lock") = Some(token.clone());
    axum::Json(json!({"access_token": token, "expires_in": 7200})).into_response()
}

async fn wechat_send(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(answer) = before_checks(&shared, || {
        (StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable").into_response()
    })
    .await
    {
        return answer;
    }
    let query = query_map(query);
    let Some(token) = query.get("access_token").filter(|t| !t.is_empty()) else {
        return wechat_answer(41001, "access_token missing");
    };
    {
        let mut current = shared.current_token.lock().expect("token lock");
        if current.as_deref().is_none_or(|c| !equal(c, token)) {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            return wechat_answer(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        if shared.behaviour() == Behaviour::ExpireTokenOnce {
            *current = None;
            *shared.behaviour.lock().expect("behaviour lock") = Behaviour::Normal;
            return wechat_answer(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return wechat_answer(47001, "data format error");
    };
    let text = |name: &str| {
        request
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let openid = text("touser");
    if openid.is_empty() {
        return wechat_answer(40003, "invalid openid");
    }
    if text("template_id").is_empty() {
        return wechat_answer(40037, "invalid template_id");
    }
    let data = match request.get("data") {
        Some(Value::Object(map))
            if map
                .values()
                .all(|v| v.get("value").is_some_and(Value::is_string)) =>
        {
            Value::Object(map.clone())
        }
        _ => return wechat_answer(47003, "argument invalid! data.value invalid"),
    };
    if shared.behaviour() == Behaviour::Throttle {
        return wechat_answer(45009, "reach max api daily quota limit");
    }
    if shared.behaviour() == Behaviour::RejectNumber {
        return wechat_answer(43101, "user refuse to accept the msg");
    }
    let key = text("client_msg_id");
    // WeChat sends one message per openid and client_msg_id (for ten minutes).
    let dedupe_key = if key.is_empty() {
        String::new()
    } else {
        format!("{openid}/{key}")
    };
    if let Some(first) = shared.seen(&dedupe_key) {
        return axum::Json(json!({"errcode": 0, "errmsg": "ok", "msgid": first.parse::<u64>().unwrap_or_default()}))
            .into_response();
    }
    let msgid = 200_000_000 + shared.next_id();
    shared.accept(
        &dedupe_key,
        Accepted {
            idempotency_key: key,
            to: openid,
            template: text("template_id"),
            params: data,
            sign_name: None,
            provider_id: msgid.to_string(),
        },
    );
    axum::Json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid})).into_response()
}
