//! Provider callbacks under `/webhooks/<provider>/…`, each in the provider's own format and
//! answered the way the provider expects. Alibaba, Tencent and Jasmin do not sign their
//! callbacks: the URL configured with them carries a shared secret (`?token=…`). WeChat signs
//! with the token of the official account's server settings. Optionally only listed source
//! addresses are accepted. A refused call is answered 401/403 and logged (without the token).

use std::collections::HashMap;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::json;

use super::extract::ClientAddr;
use crate::error::{AppError, AppResult};
use crate::outreach::callbacks::{self, InboundSms, Receipt};
use crate::outreach::inbound;
use crate::outreach::webhooks::WebhookSettings;
use crate::startup::AppState;

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

/// The shared-secret check of the providers that do not sign.
fn check_token(state: &AppState, provider: &str, ip: IpAddr, given: Option<&str>) -> AppResult<()> {
    let settings = &state.settings.messaging.webhooks;
    check_source(settings, provider, ip)?;
    let expected = settings.secret.as_ref().map(|s| s.expose()).unwrap_or("");
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
        let outcome = inbound::apply_receipt(&state.db, receipt).await?;
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
        let action = inbound::apply_reply(&state.db, &state.privacy, reply).await?;
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
    Query(token): Query<Token>,
    body: Bytes,
) -> AppResult<Response> {
    check_token(&state, "aliyun", ip, token.token.as_deref())?;
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
    Query(token): Query<Token>,
    body: Bytes,
) -> AppResult<Response> {
    check_token(&state, "aliyun", ip, token.token.as_deref())?;
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
    Query(token): Query<Token>,
    body: Bytes,
) -> AppResult<Response> {
    check_token(&state, "tencent", ip, token.token.as_deref())?;
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
    Query(token): Query<Token>,
    body: Bytes,
) -> AppResult<Response> {
    check_token(&state, "tencent", ip, token.token.as_deref())?;
    let reply = callbacks::tencent_reply(&body).map_err(malformed)?;
    replies(&state, reply.as_slice()).await?;
    Ok(tencent_ok())
}

async fn jasmin_dlr(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Query(token): Query<Token>,
    Form(form): Form<HashMap<String, String>>,
) -> AppResult<Response> {
    check_token(&state, "jasmin", ip, token.token.as_deref())?;
    let receipt = callbacks::jasmin_dlr(&form).map_err(malformed)?;
    receipts(&state, std::slice::from_ref(&receipt)).await?;
    Ok(jasmin_ok())
}

async fn jasmin_mo(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Query(token): Query<Token>,
    Form(form): Form<HashMap<String, String>>,
) -> AppResult<Response> {
    check_token(&state, "jasmin", ip, token.token.as_deref())?;
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
    check_wechat(&state, ip, &query)?;
    Ok(query.echostr.unwrap_or_default())
}

/// Event pushes (XML); template-message completion events move their message forward.
async fn wechat_event(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Query(query): Query<WeChatQuery>,
    body: Bytes,
) -> AppResult<&'static str> {
    check_wechat(&state, ip, &query)?;
    let xml = std::str::from_utf8(&body)
        .map_err(|_| AppError::bad_request("invalid_callback", "回调内容不是 UTF-8 文本"))?;
    if let Some(receipt) = callbacks::wechat_event(xml) {
        receipts(&state, std::slice::from_ref(&receipt)).await?;
    }
    Ok("success")
}

#[cfg(test)]
mod tests {
    use super::*;

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
