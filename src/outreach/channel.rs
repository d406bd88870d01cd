//! Channels that carry a rendered message to a resident, behind one trait so the dispatcher
//! can follow a fallback plan without knowing how each one works: the `log` channel (the
//! embedded default, which only records) and e-mail over SMTP. SMS and WeChat providers
//! implement the same trait.

pub use crate::config::{JasminSettings, SmtpSecurity, SmtpSettings};
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::templates::{MessageContext, MessageKind};
use crate::config::Secret;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A mainland mobile number (11 digits).
    Phone(String),
    /// A WeChat official-account openid.
    WeChat(String),
    Email(String),
}

impl Recipient {
    /// For logs: never a whole phone number or address.
    pub fn masked(&self) -> String {
        match self {
            Recipient::Phone(p) if p.len() == 11 => format!("{}****{}", &p[..3], &p[7..]),
            Recipient::Phone(_) => "***".to_owned(),
            Recipient::WeChat(id) => format!("wechat:{}…", id.chars().take(4).collect::<String>()),
            Recipient::Email(address) => match address.split_once('@') {
                Some((user, domain)) => format!(
                    "{}***@{domain}",
                    user.chars().next().map(String::from).unwrap_or_default()
                ),
                None => "***".to_owned(),
            },
        }
    }
}

/// A rendered message ready to go.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Unique per (resident, kind, appointment or wave, day); passed to providers that accept
    /// one, so a retry after a crash is recognised as the same message.
    pub idempotency_key: String,
    pub kind: MessageKind,
    pub recipient: Recipient,
    /// Subject or first line.
    pub title: String,
    pub text: String,
    /// The values the text was rendered from: providers that send registered templates
    /// (cloud SMS, WeChat) pass these as template parameters instead of the text.
    pub context: MessageContext,
}

/// What the provider said when it took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub provider: &'static str,
    pub provider_message_id: String,
    /// The channel already knows the message arrived (the `log` channel when it simulates
    /// receipts); otherwise a receipt may follow on a webhook.
    pub delivered: bool,
}

/// Why a message did not go: worth retrying later, or never.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Throttled, timed out, server busy: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Invalid recipient, rejected content: fail fast.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The request went out and no answer came back: the provider may or may not have the
    /// message. Sending again blindly could deliver it twice.
    #[error("unknown: {0}")]
    Unknown(String),
}

impl SendError {
    /// The kind of error as a metric label: `transient`, `permanent` or `unknown`.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Transient(_) => "transient",
            SendError::Permanent(_) => "permanent",
            SendError::Unknown(_) => "unknown",
        }
    }
}

#[async_trait]
pub trait Channel: Send + Sync {
    /// Short name recorded with the message, e.g. `log`, `email`.
    fn name(&self) -> &'static str;
    /// Whether this channel can reach `recipient` at all.
    fn reaches(&self, recipient: &Recipient) -> bool;
    /// Whether the provider recognises a repeated idempotency key as the same message, so
    /// a send whose outcome was lost (a crash mid-call) may safely be sent again.
    fn deduplicates(&self) -> bool {
        false
    }
    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError>;
    /// Asks the provider whether it took `message` (by its idempotency key) since `since`:
    /// `Some` when it did, `None` when it certainly did not, an error when it cannot say
    /// (the default: most providers offer no such lookup).
    async fn lookup(
        &self,
        _message: &Outgoing,
        _since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Sent>, SendError> {
        Err(SendError::Transient(format!(
            "{} cannot look a message up",
            self.name()
        )))
    }
}

/// The embedded default: writes the message to the service log and reports it sent, so the
/// whole flow works with no provider configured. With `simulate_receipts` (demo and
/// development) it also reports each message delivered.
#[derive(Debug, Default)]
pub struct LogChannel {
    pub simulate_receipts: bool,
}

#[async_trait]
impl Channel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    fn reaches(&self, _recipient: &Recipient) -> bool {
        true
    }

    /// Sending a logged message again reaches nobody twice.
    fn deduplicates(&self) -> bool {
        true
    }

    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError> {
        let id = uuid::Uuid::new_v4().to_string();
        tracing::info!(
            channel = "log",
            kind = message.kind.code(),
            recipient = %message.recipient.masked(),
            key = %message.idempotency_key,
            title = %message.title,
            text = %message.text,
            "message"
        );
        Ok(Sent {
            provider: "log",
            provider_message_id: id,
            delivered: self.simulate_receipts,
        })
    }
}

/// E-mail over SMTP (lettre): a plain-text part and an HTML part, the idempotency key as the
/// Message-ID so a message sent twice is recognisable at the receiving end. The channel is
/// named after its provider, `smtp`, like every other channel: the name keys its rate limit
/// and is what the message rows record.
pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl EmailChannel {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("messaging.smtp.from {:?}: {e}", settings.from))?;
        let builder = match settings.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?,
        };
        let mut builder = builder
            .port(settings.port)
            .timeout(Some(Duration::from_secs(settings.timeout_secs)));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }
}

/// An RFC 5322 Message-ID derived from an idempotency key: `<left@domain>` where the left
/// part is a dot-atom. Keys use `:` and may hold other characters a strict parser stops at;
/// each byte outside the atom characters (and `=` itself) is written `=XX`, so two keys
/// never share an id and the key can still be read from it.
pub fn message_id(key: &str, domain: &str) -> String {
    fn atext(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-/?^_`{|}~".contains(&b)
    }
    let dots_ok = !key.starts_with('.') && !key.ends_with('.') && !key.contains("..");
    let mut left = String::with_capacity(key.len());
    for b in key.bytes() {
        if atext(b) || (b == b'.' && dots_ok) {
            left.push(char::from(b));
        } else {
            left.push_str(&format!("={b:02X}"));
        }
    }
    if left.is_empty() {
        left.push_str("=00");
    }
    format!("<{left}@{domain}>")
}

/// The text as HTML: escaped, line breaks kept.
fn html_of(title: &str, text: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<!doctype html><html lang=\"zh-CN\"><meta charset=\"utf-8\"><title>{}</title>\
         <body><p>{}</p></body></html>",
        escape(title),
        escape(text).replace('\n', "<br>")
    )
}

#[async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn reaches(&self, recipient: &Recipient) -> bool {
        matches!(recipient, Recipient::Email(_))
    }

    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError> {
        let Recipient::Email(address) = &message.recipient else {
            return Err(SendError::Permanent("not an e-mail recipient".to_owned()));
        };
        let to: Mailbox = address
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad address: {e}")))?;
        let message_id = message_id(&message.idempotency_key, self.from.email.domain());
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.title.clone())
            .message_id(Some(message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                html_of(&message.title, &message.text),
            ))
            .map_err(|e| SendError::Permanent(format!("cannot build the e-mail: {e}")))?;
        self.deliver(email).await?;
        Ok(Sent {
            provider: "smtp",
            provider_message_id: message_id,
            delivered: false,
        })
    }
}

impl EmailChannel {
    /// The configured sender.
    pub fn sender(&self) -> &Mailbox {
        &self.from
    }

    /// Hands a finished e-mail (a report with its attachment) to the server: a refusal by
    /// the server is permanent, anything else (unreachable, timed out) transient.
    pub async fn deliver(&self, email: Message) -> Result<(), SendError> {
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }
}

/// SMS through a self-hosted Jasmin gateway's HTTP API: Chinese text as `coding=8` with the
/// UTF-16BE bytes in `hex-content` (raw UTF-8 would arrive garbled), receipts requested at
/// level 3 on `dlr-url`.
pub struct JasminChannel {
    client: reqwest::Client,
    send_url: String,
    settings: JasminSettings,
    /// The webhook secret: each message's receipt URL carries a signature made with it.
    receipt_secret: Option<Secret>,
}

impl JasminChannel {
    pub fn new(settings: &JasminSettings) -> anyhow::Result<Self> {
        let base = url::Url::parse(&settings.url)
            .map_err(|e| anyhow::anyhow!("messaging.jasmin.url {:?}: {e}", settings.url))?;
        let send_url = base
            .join("send")
            .map_err(|e| anyhow::anyhow!("messaging.jasmin.url: {e}"))?
            .to_string();
        let client = super::http_client::http_client(Duration::from_secs(settings.timeout_secs))?;
        if let Some(dlr_url) = &settings.dlr_url {
            url::Url::parse(dlr_url)
                .map_err(|e| anyhow::anyhow!("messaging.jasmin.dlr_url {dlr_url:?}: {e}"))?;
        }
        Ok(Self {
            client,
            send_url,
            settings: settings.clone(),
            receipt_secret: None,
        })
    }

    /// Signs each message's receipt URL with the webhook secret (`ref` = the message's
    /// idempotency key, `sig` = its signature) and leaves any `token` out of it, so the URL
    /// the gateway logs with every message does not carry the secret.
    pub fn with_receipt_secret(mut self, secret: Option<Secret>) -> Self {
        self.receipt_secret = secret.filter(|s| !s.expose().is_empty());
        self
    }

    /// The receipt URL of one message.
    fn dlr_url_for(&self, key: &str) -> Option<String> {
        let configured = self.settings.dlr_url.as_ref()?;
        let Some(secret) = &self.receipt_secret else {
            return Some(configured.clone());
        };
        let mut url = url::Url::parse(configured).ok()?;
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| !matches!(name.as_ref(), "token" | "ref" | "sig"))
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("ref", key)
            .append_pair(
                "sig",
                &super::signing::jasmin_dlr_signature(secret.expose(), key),
            );
        Some(url.to_string())
    }
}

/// The UTF-16BE bytes of `text` in hex, as Jasmin's `hex-content` wants for `coding=8`.
pub fn ucs2_hex(text: &str) -> String {
    text.encode_utf16()
        .flat_map(u16::to_be_bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait]
impl Channel for JasminChannel {
    fn name(&self) -> &'static str {
        "jasmin"
    }

    fn reaches(&self, recipient: &Recipient) -> bool {
        matches!(recipient, Recipient::Phone(_))
    }

    async fn send(&self, message: &Outgoing) -> Result<Sent, SendError> {
        let Recipient::Phone(phone) = &message.recipient else {
            return Err(SendError::Permanent("not a phone recipient".to_owned()));
        };
        let mut form = vec![
            ("username", self.settings.username.clone()),
            ("password", self.settings.password.expose().to_owned()),
            ("to", format!("86{phone}")),
            ("coding", "8".to_owned()),
            ("hex-content", ucs2_hex(&message.text)),
        ];
        if let Some(dlr_url) = self.dlr_url_for(&message.idempotency_key) {
            form.extend([
                ("dlr", "yes".to_owned()),
                ("dlr-url", dlr_url),
                ("dlr-level", "3".to_owned()),
                ("dlr-method", "POST".to_owned()),
            ]);
        }
        let response = self
            .client
            .post(&self.send_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    // No connection: nothing reached the gateway.
                    SendError::Transient(format!("gateway unreachable: {e}"))
                } else {
                    // Timed out, or the connection broke with the request on its way: the
                    // gateway may have taken it, and a second send could reach the resident
                    // twice.
                    SendError::Unknown(format!("gateway did not answer: {e}"))
                }
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| SendError::Unknown(format!("gateway answer lost: {e}")))?;
        if status.is_success() {
            // `Success "<message id>"`
            let id = body
                .trim()
                .strip_prefix("Success")
                .map(|rest| rest.trim().trim_matches('"').to_owned())
                .filter(|id| !id.is_empty())
                .ok_or_else(|| SendError::Transient(format!("unexpected answer {body:?}")))?;
            return Ok(Sent {
                provider: "jasmin",
                provider_message_id: id,
                delivered: false,
            });
        }
        let reason = format!("gateway answered {status}: {}", body.trim());
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(SendError::Transient(reason))
        } else {
            Err(SendError::Permanent(reason))
        }
    }
}

/// The routes a message can take to a resident, in the order of the fallback plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    #[serde(rename = "wechat")]
    WeChat,
    Phone,
    Email,
    /// A relative's phone; the text asks them to pass it on.
    Relative,
}

impl Route {
    pub const PLAN: [Route; 4] = [Route::WeChat, Route::Phone, Route::Email, Route::Relative];

    pub fn code(self) -> &'static str {
        match self {
            Route::WeChat => "wechat",
            Route::Phone => "phone",
            Route::Email => "email",
            Route::Relative => "relative",
        }
    }

    pub fn parse(raw: &str) -> Option<Route> {
        Self::PLAN.into_iter().find(|r| r.code() == raw)
    }

    pub(crate) fn index(self) -> usize {
        Self::PLAN.iter().position(|r| *r == self).unwrap_or(0)
    }

    pub(crate) fn is_sms(self) -> bool {
        matches!(self, Route::Phone | Route::Relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_masked_for_logs() {
        assert_eq!(
            Recipient::Phone("13812345678".into()).masked(),
            "138****5678"
        );
        assert_eq!(
            Recipient::Email("zhangsan@example.org".into()).masked(),
            "z***@example.org"
        );
        assert_eq!(
            Recipient::WeChat("oAbCdEfGh123".into()).masked(),
            "wechat:oAbC…"
        );
    }

    #[test]
    fn chinese_text_is_hex_encoded_as_utf16_big_endian() {
        assert_eq!(ucs2_hex("体检A"), "4f5368c00041");
        // Outside the basic plane: a surrogate pair.
        assert_eq!(ucs2_hex("𠀀"), "d840dc00");
    }

    #[test]
    fn message_ids_are_valid_dot_atoms_derived_from_the_key() {
        let id = message_id("migrant_wave:r1487:w1:2026-12-07", "example.org");
        assert_eq!(id, "<migrant_wave=3Ar1487=3Aw1=3A2026-12-07@example.org>");
        assert_eq!(
            message_id("appointment_notice.a42.2026-12-31#s2", "example.org"),
            "<appointment_notice.a42.2026-12-31#s2@example.org>"
        );
        // `=` is escaped too, so `a:b` and `a=3Ab` stay apart.
        assert_ne!(message_id("a:b", "x.org"), message_id("a=3Ab", "x.org"));
        assert_eq!(message_id("a..b", "x.org"), "<a=2E=2Eb@x.org>");
        assert_eq!(message_id("<a b>", "x.org"), "<=3Ca=20b=3E@x.org>");
        // What a strict parser reads: one `@`, atom characters and single inner dots only.
        for key in [
            "migrant_wave:r1487:w1:2026-12-07",
            "体检:1",
            ".x.",
            "k@y\\\"q",
        ] {
            let id = message_id(key, "example.org");
            let left = id
                .strip_prefix('<')
                .and_then(|s| s.strip_suffix("@example.org>"))
                .unwrap();
            assert!(!left.is_empty() && !left.starts_with('.') && !left.ends_with('.'));
            assert!(!left.contains(".."), "{id}");
            assert!(
                left.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)),
                "{id}"
            );
        }
    }

    #[test]
    fn html_is_escaped() {
        let html = html_of("通知", "a<b>&\n第二行");
        assert!(html.contains("a&lt;b&gt;&amp;<br>第二行"), "{html}");
    }
}
