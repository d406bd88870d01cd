//! Provider callbacks under `/webhooks/<provider>/…`, each in the provider's own format and
//! answered the way the provider expects. Alibaba, Tencent and Jasmin neither sign their
//! callbacks nor let us add a header: they carry a shared secret, as the `X-Outreach-Token`
//! header or `Authorization: Bearer …` where a relay in front can set one, else as
//! `?token=…` in the URL (`webhooks.url_token`). Jasmin's receipts instead carry a signature
//! of their own message (see [`crate::outreach::callbacks::jasmin_dlr_signature`]), so the
//! URL the gateway logs with each message opens nothing else. WeChat signs with the token
//! of the official account's server settings; its timestamp must be recent and its nonce
//! new. Optionally only listed source addresses are accepted. A refused call is answered
//! 401/403 and logged (without the token).

use std::collections::HashMap;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::json;

use super::extract::ClientAddr;
use crate::error::{AppError, AppResult};
use crate::outreach::callbacks::{self, InboundSms, Receipt};
use crate::outreach::inbound;
use crate::outreach::webhooks::{self, Freshness, WebhookSettings};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/aliyun/report", post(aliyun_report))
        .route("/webhooks/aliyun/reply", post(aliyun_reply))
        .route("/webhooks/tencent/status", post(tencent_status))
        .route("/webhooks/tencent/reply", post(tencent_reply))
        .route("/webhooks/jasmin/dlr", post(jasmin_dlr))
        .route("/webhooks/jasmin/mo", post(jasmin_mo))
        .route("/webhooks/wechat", get(wechat_verify).post(wechat_event))
}

#[derive(Debug, Deserialize)]
struct Token {
    token: Option<String>,
}

/// Whether `ip` is one of the configured sources (`a.b.c.d` or `a.b.c.d/nn`, IPv6 alike);
/// an empty list allows any.
fn source_allowed(allowed: &[String], ip: IpAddr) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|entry| {
            let (address, bits) = match entry.split_once('/') {
                Some((a, b)) => (a, b.parse::<u32>().ok()),
                None => (entry.as_str(), None),
            };
            let Ok(network) = address.trim().parse::<IpAddr>() else {
                return false;
            };
            match (network, ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) => {
                    let bits = bits.unwrap_or(32).min(32);
                    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                    u32::from(n) & mask == u32::from(i) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(i)) => {
                    let bits = bits.unwrap_or(128).min(128);
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    u128::from(n) & mask == u128::from(i) & mask
                }
                _ => false,
            }
        })
}

fn check_source(settings: &WebhookSettings, provider: &str, ip: IpAddr) -> AppResult<()> {
    if source_allowed(&settings.allowed_sources, ip) {
        return Ok(());
    }
    tracing::warn!(provider, source = %ip, "callback from a source not allowed");
    Err(AppError::Forbidden("回调来源地址不在允许范围内".to_owned()))
}

/// The shared secret as a header: `X-Outreach-Token`, or `Authorization: Bearer …`.
fn header_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(token) = headers.get("x-outreach-token") {
        return token.to_str().ok();
    }
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The shared-secret check of the providers that do not sign: the header, or the URL's
/// `?token=` where that is allowed.
fn check_token(
    state: &AppState,
    provider: &str,
    ip: IpAddr,
    headers: &HeaderMap,
    query: &Token,
) -> AppResult<()> {
    let settings = &state.settings.messaging.webhooks;
    check_source(settings, provider, ip)?;
    let expected = settings.secret.as_ref().map(|s| s.expose()).unwrap_or("");
    let given = header_token(headers).or(if settings.url_token {
        query.token.as_deref()
    } else {
        None
    });
    if callbacks::secret_ok(expected, given.unwrap_or("")) {
        return Ok(());
    }
    tracing::warn!(provider, source = %ip, "callback refused: missing or wrong token");
    Err(AppError::Unauthorized("回调未通过验证".to_owned()))
}

fn malformed(e: callbacks::CallbackError) -> AppError {
    AppError::bad_request("invalid_callback", e.to_string())
}

async fn receipts(state: &AppState, receipts: &[Receipt]) -> AppResult<()> {
    for receipt in receipts {
        let outcome = crate::flows::replies::apply_receipt(&state.db, receipt).await?;
        if outcome.expected(&receipt.status) {
            tracing::debug!(
                provider = receipt.provider,
                id = %receipt.provider_message_id,
                ?outcome,
                "receipt"
            );
        } else {
            tracing::info!(
                provider = receipt.provider,
                id = %receipt.provider_message_id,
                ?outcome,
                "receipt changed nothing now (repeated, late, or before its send was recorded)"
            );
        }
    }
    Ok(())
}

async fn replies(state: &AppState, replies: &[InboundSms]) -> AppResult<()> {
    for reply in replies {
        let action = crate::flows::replies::apply_reply(&state.db, &state.privacy, reply).await?;
        tracing::info!(provider = reply.provider, action = action.code(), "reply");
    }
    Ok(())
}

fn aliyun_ok() -> Response {
    axum::Json(json!({"code": 0, "msg": "接收成功"})).into_response()
}

fn tencent_ok() -> Response {
    axum::Json(json!({"result": 0, "errmsg": "OK"})).into_response()
}

fn jasmin_ok() -> Response {
    (StatusCode::OK, "ACK/Jasmin").into_response()
}

async fn aliyun_report(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Query(token): Query<Token>,
    body: Bytes,
) -> AppResult<Response> {
    check_token(&state, "aliyun", ip, &headers, &token)?;
    receipts(
        &state,
        &callbacks::aliyun_reports(&body).map_err(malformed)?,
    )
    .await?;
    Ok(aliyun_ok())
}

async fn aliyun_reply(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Query(token): Query<Token>,
    body: Bytes,
) -> AppResult<Response> {
    check_token(&state, "aliyun", ip, &headers, &token)?;
    replies(
        &state,
        &callbacks::aliyun_replies(&body).map_err(malformed)?,
    )
    .await?;
    Ok(aliyun_ok())
}

async fn tencent_status(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Query(token): Query<Token>,
    body: Bytes,
) -> AppResult<Response> {
    check_token(&state, "tencent", ip, &headers, &token)?;
    receipts(
        &state,
        &callbacks::tencent_statuses(&body).map_err(malformed)?,
    )
    .await?;
    Ok(tencent_ok())
}

async fn tencent_reply(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Query(token): Query<Token>,
    body: Bytes,
) -> AppResult<Response> {
    check_token(&state, "tencent", ip, &headers, &token)?;
    let reply = callbacks::tencent_reply(&body).map_err(malformed)?;
    replies(&state, reply.as_slice()).await?;
    Ok(tencent_ok())
}

#[derive(Debug, Deserialize)]
struct DlrQuery {
    token: Option<String>,
    /// The idempotency key of the message the receipt URL was made for.
    #[serde(rename = "ref")]
    key: Option<String>,
    sig: Option<String>,
}

/// A Jasmin receipt: authenticated by the signature its URL carries for its own message
/// (and then only for that message), else by the shared secret.
async fn jasmin_dlr(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Query(query): Query<DlrQuery>,
    Form(form): Form<HashMap<String, String>>,
) -> AppResult<Response> {
    let settings = &state.settings.messaging.webhooks;
    let secret = settings.secret.as_ref().map(|s| s.expose()).unwrap_or("");
    let signed_for = match (&query.key, &query.sig) {
        (Some(key), Some(sig)) => {
            check_source(settings, "jasmin", ip)?;
            if !callbacks::jasmin_dlr_signature_ok(secret, key, sig) {
                tracing::warn!(provider = "jasmin", source = %ip, "receipt refused: bad signature");
                return Err(AppError::Unauthorized("回调未通过验证".to_owned()));
            }
            Some(key.as_str())
        }
        _ => {
            let token = Token {
                token: query.token.clone(),
            };
            check_token(&state, "jasmin", ip, &headers, &token)?;
            None
        }
    };
    let receipt = callbacks::jasmin_dlr(&form).map_err(malformed)?;
    if let Some(key) = signed_for
        && !inbound::receipt_may_concern(&state.db, "jasmin", &receipt.provider_message_id, key)
            .await?
    {
        tracing::warn!(
            provider = "jasmin",
            source = %ip,
            "receipt refused: signed for another message"
        );
        return Err(AppError::Unauthorized("回调未通过验证".to_owned()));
    }
    receipts(&state, std::slice::from_ref(&receipt)).await?;
    Ok(jasmin_ok())
}

async fn jasmin_mo(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Query(token): Query<Token>,
    Form(form): Form<HashMap<String, String>>,
) -> AppResult<Response> {
    check_token(&state, "jasmin", ip, &headers, &token)?;
    let reply = callbacks::jasmin_mo(&form).map_err(malformed)?;
    replies(&state, reply.as_slice()).await?;
    Ok(jasmin_ok())
}

#[derive(Debug, Deserialize)]
struct WeChatQuery {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
}

/// WeChat's signature, then a recent timestamp and a nonce not seen before. Returns the
/// nonce claimed, to release if the call cannot be processed.
async fn check_wechat_fresh(
    state: &AppState,
    ip: IpAddr,
    query: &WeChatQuery,
) -> AppResult<String> {
    check_wechat(state, ip, query)?;
    let settings = &state.settings.messaging.webhooks;
    let now = chrono::Utc::now();
    let fresh =
        match webhooks::timestamp_fresh(query.timestamp.as_deref(), now, settings.max_skew_secs) {
            Ok(()) => {
                webhooks::claim_nonce(
                    &state.db,
                    "wechat",
                    query.nonce.as_deref(),
                    now,
                    settings.max_skew_secs,
                )
                .await?
            }
            Err(e) => Err(e),
        };
    match fresh {
        Ok(()) => Ok(query.nonce.clone().unwrap_or_default()),
        Err(why) => {
            tracing::warn!(provider = "wechat", source = %ip, ?why, "callback refused: not fresh");
            Err(AppError::Unauthorized(
                match why {
                    Freshness::Replayed => "回调重复（nonce 已使用）",
                    Freshness::Stale => "回调时间戳超出允许范围",
                    Freshness::NoTimestamp | Freshness::NoNonce => "回调缺少时间戳或 nonce",
                }
                .to_owned(),
            ))
        }
    }
}

fn check_wechat(state: &AppState, ip: IpAddr, query: &WeChatQuery) -> AppResult<()> {
    let settings = &state.settings.messaging.webhooks;
    check_source(settings, "wechat", ip)?;
    let token = settings
        .wechat_token
        .as_ref()
        .map(|t| t.expose())
        .unwrap_or("");
    let signed = !token.is_empty()
        && callbacks::wechat_signature_ok(
            token,
            query.timestamp.as_deref().unwrap_or(""),
            query.nonce.as_deref().unwrap_or(""),
            query.signature.as_deref().unwrap_or(""),
        );
    if signed {
        return Ok(());
    }
    tracing::warn!(provider = "wechat", source = %ip, "callback refused: bad signature");
    Err(AppError::Unauthorized("回调签名无效".to_owned()))
}

/// The server check WeChat makes when the URL is configured: echo `echostr` if signed.
async fn wechat_verify(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Query(query): Query<WeChatQuery>,
) -> AppResult<String> {
    check_wechat_fresh(&state, ip, &query).await?;
    Ok(query.echostr.unwrap_or_default())
}

/// Event pushes (XML); template-message completion events move their message forward.
async fn wechat_event(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Query(query): Query<WeChatQuery>,
    body: Bytes,
) -> AppResult<&'static str> {
    let nonce = check_wechat_fresh(&state, ip, &query).await?;
    let processed = async {
        let xml = std::str::from_utf8(&body)
            .map_err(|_| AppError::bad_request("invalid_callback", "回调内容不是 UTF-8 文本"))?;
        if let Some(receipt) = callbacks::wechat_event(xml) {
            receipts(&state, std::slice::from_ref(&receipt)).await?;
        }
        Ok("success")
    }
    .await;
    if processed.is_err() {
        // WeChat sends the same call again when it gets no answer: let that through.
        webhooks::release_nonce(&state.db, "wechat", &nonce).await?;
    }
    processed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_read_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(header_token(&headers), None);
        headers.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(header_token(&headers), Some("s3cret"));
        headers.insert("authorization", "Basic czNjcmV0".parse().unwrap());
        assert_eq!(header_token(&headers), None);
        headers.insert("x-outreach-token", "s3cret-2".parse().unwrap());
        assert_eq!(header_token(&headers), Some("s3cret-2"));
    }

    #[test]
    fn sources_match_addresses_and_networks() {
        let allowed = vec!["10.0.0.0/8".to_owned(), "203.0.113.7".to_owned()];
        assert!(source_allowed(&allowed, "10.1.2.3".parse().unwrap()));
        assert!(source_allowed(&allowed, "203.0.113.7".parse().unwrap()));
        assert!(!source_allowed(&allowed, "203.0.113.8".parse().unwrap()));
        assert!(!source_allowed(&allowed, "::1".parse().unwrap()));
        assert!(source_allowed(&[], "198.51.100.1".parse().unwrap()));
        assert!(source_allowed(
            &["::1/128".to_owned()],
            "::1".parse().unwrap()
        ));
        assert!(source_allowed(
            &["0.0.0.0/0".to_owned()],
            "1.2.3.4".parse().unwrap()
        ));
    }
}
