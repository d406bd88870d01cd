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
use axum::extract::{FromRequest, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::extract::ClientAddr;
use crate::config::Network;
use crate::error::{AppError, AppResult};
use crate::outreach::callbacks::{
    self, CallbackError, InboundSms, Receipt, aliyun_replies, aliyun_reports, jasmin_dlr,
    jasmin_mo, tencent_reply, tencent_statuses,
};
use crate::outreach::inbound;
use crate::outreach::webhooks::{self, Freshness, WebhookSettings};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/webhooks/aliyun/report",
            push::<Token, _>(ALIYUN, raw(aliyun_reports)),
        )
        .route(
            "/webhooks/aliyun/reply",
            push::<Token, _>(ALIYUN, raw(aliyun_replies)),
        )
        .route(
            "/webhooks/tencent/status",
            push::<Token, _>(TENCENT, raw(tencent_statuses)),
        )
        .route(
            "/webhooks/tencent/reply",
            push::<Token, _>(TENCENT, raw(tencent_reply)),
        )
        .route(
            "/webhooks/jasmin/dlr",
            push::<DlrQuery, _>(JASMIN, form(jasmin_dlr)),
        )
        .route(
            "/webhooks/jasmin/mo",
            push::<Token, _>(JASMIN, form(jasmin_mo)),
        )
        .route(
            "/webhooks/wechat",
            push::<WeChatQuery, _>(WECHAT, wechat_event).get(wechat_verify),
        )
}

/// A provider as its callbacks need it: its name in the records and logs, and the answer
/// it expects to a call it made.
#[derive(Clone, Copy)]
struct Provider {
    name: &'static str,
    answer: fn() -> Response,
}

const ALIYUN: Provider = Provider {
    name: "aliyun",
    answer: || axum::Json(json!({"code": 0, "msg": "接收成功"})).into_response(),
};

const TENCENT: Provider = Provider {
    name: "tencent",
    answer: || axum::Json(json!({"result": 0, "errmsg": "OK"})).into_response(),
};

const JASMIN: Provider = Provider {
    name: "jasmin",
    answer: || (StatusCode::OK, "ACK/Jasmin").into_response(),
};

const WECHAT: Provider = Provider {
    name: "wechat",
    answer: || "success".into_response(),
};

/// What a callback carries once read.
enum Pushed {
    Receipts(Vec<Receipt>),
    Replies(Vec<InboundSms>),
}

impl From<Vec<Receipt>> for Pushed {
    fn from(receipts: Vec<Receipt>) -> Self {
        Pushed::Receipts(receipts)
    }
}

impl From<Receipt> for Pushed {
    fn from(receipt: Receipt) -> Self {
        Pushed::Receipts(vec![receipt])
    }
}

impl From<Vec<InboundSms>> for Pushed {
    fn from(replies: Vec<InboundSms>) -> Self {
        Pushed::Replies(replies)
    }
}

/// A reply from a number that is not a mainland mobile is no reply at all.
impl From<Option<InboundSms>> for Pushed {
    fn from(reply: Option<InboundSms>) -> Self {
        Pushed::Replies(reply.into_iter().collect())
    }
}

/// How a provider's raw body is read: `parse`, its 400 when the body is not in the
/// provider's format.
fn raw<T: Into<Pushed> + 'static>(
    parse: fn(&[u8]) -> Result<T, CallbackError>,
) -> impl Fn(&Bytes) -> AppResult<Pushed> + Copy + Send + Sync + 'static {
    move |body| parse(body).map(Into::into).map_err(malformed)
}

/// How a provider's form post (Jasmin's) is read, as [`raw`].
fn form<T: Into<Pushed> + 'static>(
    parse: fn(&HashMap<String, String>) -> Result<T, CallbackError>,
) -> impl Fn(&Form<HashMap<String, String>>) -> AppResult<Pushed> + Copy + Send + Sync + 'static {
    move |Form(fields)| parse(fields).map(Into::into).map_err(malformed)
}

fn malformed(e: CallbackError) -> AppError {
    AppError::bad_request("invalid_callback", e.to_string())
}

/// WeChat's event pushes (XML): template-message completion events move their message
/// forward, any other event is answered and left alone.
fn wechat_event(body: &Bytes) -> AppResult<Pushed> {
    let xml = std::str::from_utf8(body)
        .map_err(|_| AppError::bad_request("invalid_callback", "回调内容不是 UTF-8 文本"))?;
    Ok(Pushed::Receipts(
        callbacks::wechat_event(xml).into_iter().collect(),
    ))
}

/// The handler of a provider's callback endpoint, which reads its body (`B`: the raw bytes,
/// or a form) with `read`; how its caller is checked comes with its query string (`Q`, a
/// [`Proof`]). Every provider callback takes this one way, [`receive`].
fn push<Q, B>(
    provider: Provider,
    read: impl Fn(&B) -> AppResult<Pushed> + Copy + Send + Sync + 'static,
) -> MethodRouter<AppState>
where
    Q: Proof,
    B: FromRequest<AppState> + Send + Sync + 'static,
{
    post(
        move |State(state): State<AppState>,
              ClientAddr(ip): ClientAddr,
              headers: HeaderMap,
              Query(query): Query<Q>,
              body: B| async move {
            receive(provider, read, &state, ip, &headers, &query, &body).await
        },
    )
}

/// The caller checked by the proof its query carries, the body read into receipts or
/// replies, each applied, and the provider answered the way it expects. When the call
/// cannot be processed after its caller was let in, what that claimed is given back (WeChat's
/// nonce), so the provider's retry of the same call gets through.
async fn receive<Q: Proof, B>(
    provider: Provider,
    read: impl Fn(&B) -> AppResult<Pushed>,
    state: &AppState,
    ip: IpAddr,
    headers: &HeaderMap,
    query: &Q,
    body: &B,
) -> AppResult<Response> {
    let admitted = query.admit(state, provider.name, ip, headers).await?;
    let processed = async {
        let pushed = read(body)?;
        admitted.covers(state, provider.name, ip, &pushed).await?;
        let signed_for = match &admitted {
            Admitted::Message(key) => Some(key.as_str()),
            _ => None,
        };
        apply(state, &pushed, signed_for).await?;
        Ok((provider.answer)())
    }
    .await;
    if processed.is_err() {
        admitted.release(state, provider.name).await?;
    }
    processed
}

/// Applies what was pushed; `signed_for` is the idempotency key a receipt URL was signed for.
async fn apply(state: &AppState, pushed: &Pushed, signed_for: Option<&str>) -> AppResult<()> {
    match pushed {
        Pushed::Receipts(receipts) => {
            for receipt in receipts {
                let outcome =
                    crate::flows::replies::apply_receipt_signed(&state.db, receipt, signed_for)
                        .await?;
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
        }
        Pushed::Replies(replies) => {
            for reply in replies {
                let action =
                    crate::flows::replies::apply_reply(&state.db, &state.privacy, reply).await?;
                tracing::info!(provider = reply.provider, action = action.code(), "reply");
            }
        }
    }
    Ok(())
}

/// How a provider shows that a callback is its own, read from the callback's query string.
trait Proof: DeserializeOwned + Send + Sync + 'static {
    /// Lets the caller in, or refuses it (403 for a source not allowed, 401 otherwise).
    fn admit(
        &self,
        state: &AppState,
        provider: &'static str,
        ip: IpAddr,
        headers: &HeaderMap,
    ) -> impl Future<Output = AppResult<Admitted>> + Send;
}

/// A caller let in: what it may change, and what its admission claimed.
enum Admitted {
    /// By the shared secret, or WeChat's signature: anything its provider may push.
    Provider,
    /// By a Jasmin receipt URL's signature: receipts of that one message (its idempotency
    /// key) only.
    Message(String),
    /// By WeChat's signature with a new nonce, now claimed.
    Nonce(String),
}

impl Admitted {
    /// Refuses what the caller may not push.
    async fn covers(
        &self,
        state: &AppState,
        provider: &'static str,
        ip: IpAddr,
        pushed: &Pushed,
    ) -> AppResult<()> {
        let (Admitted::Message(key), Pushed::Receipts(receipts)) = (self, pushed) else {
            return Ok(());
        };
        for receipt in receipts {
            if !inbound::receipt_may_concern(&state.db, provider, &receipt.provider_message_id, key)
                .await?
            {
                tracing::warn!(provider, source = %ip, "receipt refused: signed for another message");
                return Err(AppError::Unauthorized("回调未通过验证".to_owned()));
            }
        }
        Ok(())
    }

    /// Gives back what the admission claimed, for a call that could not be processed.
    async fn release(&self, state: &AppState, provider: &'static str) -> AppResult<()> {
        if let Admitted::Nonce(nonce) = self {
            // WeChat sends the same call again when it gets no answer: let that through.
            webhooks::release_nonce(&state.db, provider, nonce).await?;
        }
        Ok(())
    }
}

/// Whether `ip` is one of the configured sources (`a.b.c.d` or `a.b.c.d/nn`, IPv6 alike,
/// read as `http.trusted_proxies` is); an empty list allows any, an entry that is neither
/// allows none.
fn source_allowed(allowed: &[String], ip: IpAddr) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|entry| entry.parse::<Network>().is_ok_and(|net| net.contains(ip)))
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
    url_token: Option<&str>,
) -> AppResult<()> {
    let settings = &state.settings.messaging.webhooks;
    check_source(settings, provider, ip)?;
    let expected = settings.secret.as_ref().map(|s| s.expose()).unwrap_or("");
    let given = header_token(headers).or(if settings.url_token { url_token } else { None });
    if callbacks::secret_ok(expected, given.unwrap_or("")) {
        return Ok(());
    }
    tracing::warn!(provider, source = %ip, "callback refused: missing or wrong token");
    Err(AppError::Unauthorized("回调未通过验证".to_owned()))
}

/// The query of the providers that carry the shared secret (Alibaba, Tencent, Jasmin
/// replies).
#[derive(Debug, Deserialize)]
struct Token {
    token: Option<String>,
}

impl Proof for Token {
    async fn admit(
        &self,
        state: &AppState,
        provider: &'static str,
        ip: IpAddr,
        headers: &HeaderMap,
    ) -> AppResult<Admitted> {
        check_token(state, provider, ip, headers, self.token.as_deref())?;
        Ok(Admitted::Provider)
    }
}

/// A Jasmin receipt's query: the signature its URL carries for its own message, else the
/// shared secret.
#[derive(Debug, Deserialize)]
struct DlrQuery {
    token: Option<String>,
    /// The idempotency key of the message the receipt URL was made for.
    #[serde(rename = "ref")]
    key: Option<String>,
    sig: Option<String>,
}

impl Proof for DlrQuery {
    async fn admit(
        &self,
        state: &AppState,
        provider: &'static str,
        ip: IpAddr,
        headers: &HeaderMap,
    ) -> AppResult<Admitted> {
        let (Some(key), Some(sig)) = (&self.key, &self.sig) else {
            check_token(state, provider, ip, headers, self.token.as_deref())?;
            return Ok(Admitted::Provider);
        };
        let settings = &state.settings.messaging.webhooks;
        check_source(settings, provider, ip)?;
        let secret = settings.secret.as_ref().map(|s| s.expose()).unwrap_or("");
        if !callbacks::jasmin_dlr_signature_ok(secret, key, sig) {
            tracing::warn!(provider, source = %ip, "receipt refused: bad signature");
            return Err(AppError::Unauthorized("回调未通过验证".to_owned()));
        }
        Ok(Admitted::Message(key.clone()))
    }
}

#[derive(Debug, Deserialize)]
struct WeChatQuery {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
}

impl Proof for WeChatQuery {
    /// WeChat's signature, then a recent timestamp and a nonce not seen before, which is
    /// claimed.
    async fn admit(
        &self,
        state: &AppState,
        provider: &'static str,
        ip: IpAddr,
        _headers: &HeaderMap,
    ) -> AppResult<Admitted> {
        self.check_signature(state, provider, ip)?;
        let settings = &state.settings.messaging.webhooks;
        let now = chrono::Utc::now();
        let fresh =
            match webhooks::timestamp_fresh(self.timestamp.as_deref(), now, settings.max_skew_secs)
            {
                Ok(()) => {
                    webhooks::claim_nonce(
                        &state.db,
                        provider,
                        self.nonce.as_deref(),
                        now,
                        settings.max_skew_secs,
                    )
                    .await?
                }
                Err(e) => Err(e),
            };
        match fresh {
            Ok(()) => Ok(Admitted::Nonce(self.nonce.clone().unwrap_or_default())),
            Err(why) => {
                tracing::warn!(provider, source = %ip, ?why, "callback refused: not fresh");
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
}

impl WeChatQuery {
    fn check_signature(&self, state: &AppState, provider: &str, ip: IpAddr) -> AppResult<()> {
        let settings = &state.settings.messaging.webhooks;
        check_source(settings, provider, ip)?;
        let token = settings
            .wechat_token
            .as_ref()
            .map(|t| t.expose())
            .unwrap_or("");
        let signed = !token.is_empty()
            && callbacks::wechat_signature_ok(
                token,
                self.timestamp.as_deref().unwrap_or(""),
                self.nonce.as_deref().unwrap_or(""),
                self.signature.as_deref().unwrap_or(""),
            );
        if signed {
            return Ok(());
        }
        tracing::warn!(provider, source = %ip, "callback refused: bad signature");
        Err(AppError::Unauthorized("回调签名无效".to_owned()))
    }
}

/// The server check WeChat makes when the URL is configured: echo `echostr` if signed.
async fn wechat_verify(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    Query(query): Query<WeChatQuery>,
) -> AppResult<String> {
    query.admit(&state, "wechat", ip, &headers).await?;
    Ok(query.echostr.unwrap_or_default())
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
        assert!(!source_allowed(
            &["provider.example".to_owned()],
            "1.2.3.4".parse().unwrap()
        ));
    }
}
