//! What providers push back to us: delivery receipts move a message forward (never back),
//! replies confirm, ask to reschedule or opt out. The HTTP side (authentication, each
//! provider's format) is in `crate::http::webhooks`; this is what a receipt or reply does.

use serde::Deserialize;

use crate::config::Secret;

/// `[messaging.webhooks]`: how provider callbacks are authenticated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// The shared secret every callback URL carries as `?token=…` (the providers that do not
    /// sign their callbacks: Alibaba, Tencent, Jasmin). Unset: those callbacks are refused.
    pub secret: Option<Secret>,
    /// The token configured in the WeChat official account's server settings; callbacks are
    /// checked against its signature.
    pub wechat_token: Option<Secret>,
    /// Addresses or networks (`203.0.113.7`, `10.0.0.0/8`) callbacks may come from; empty:
    /// any.
    pub allowed_sources: Vec<String>,
}
