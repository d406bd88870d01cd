//! What the providers push to us — delivery receipts and residents' replies — parsed into
//! one shape, and the checks that a push really comes from the provider. Pure functions: no
//! database, no HTTP; the webhook handlers call these and act on the result.
//!
//! Formats (see `PROVIDERS.md` for the documentation links):
//! - Alibaba Cloud: receipts (SmsReport) and replies (SmsUp) as JSON arrays, times in Beijing
//!   time `YYYY-MM-DD HH:MM:SS`.
//! - Tencent Cloud: status callback as a JSON array, reply callback as one JSON object.
//! - Jasmin: form posts, receipts with `level` 1 (the operator took it) and 2/3 (final).
//! - WeChat: the `TEMPLATESENDJOBFINISH` event as XML, signed with the account's token.
//!
//! Malformed input is an error, never a panic; an entry from a number that is not a mainland
//! mobile (nothing in the registry can match it) is skipped rather than failing the batch.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

pub use super::signing::{jasmin_dlr_signature, jasmin_dlr_signature_ok};

use crate::privacy::redact;

/// What a receipt says about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// The provider or the operator took it; a final receipt may follow.
    Accepted,
    /// It reached the handset (or the WeChat user).
    Delivered,
    /// It will not arrive; the provider's reason.
    Failed(String),
}

impl ReceiptStatus {
    /// The status without the provider's reason: `accepted`, `delivered` or `failed`.
    pub fn code(&self) -> &'static str {
        match self {
            ReceiptStatus::Accepted => "accepted",
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Failed(_) => "failed",
        }
    }
}

/// A delivery receipt, matched to our message by `(provider, provider_message_id)` — the id
/// the channel returned in [`super::Sent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider: &'static str,
    pub provider_message_id: String,
    pub status: ReceiptStatus,
    /// When the provider says it happened, if it says.
    pub at: Option<DateTime<Utc>>,
}

/// A text a resident sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSms {
    pub provider: &'static str,
    /// The sender, 11 digits (`+86` / `86` removed).
    pub from_phone: String,
    pub text: String,
    pub at: Option<DateTime<Utc>>,
    /// The provider's id of the reply when it gives one (Alibaba `sequence_id`, Jasmin `id`),
    /// to recognise a push delivered twice.
    pub provider_id: Option<String>,
    /// The SMS signature the reply answers, when the provider says (Alibaba, Tencent):
    /// opt-outs count per signature.
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// Not the documented format; the reason never quotes a phone number.
    #[error("malformed callback: {0}")]
    Malformed(String),
}

fn malformed(what: impl std::fmt::Display) -> CallbackError {
    CallbackError::Malformed(redact(&what.to_string()))
}

/// Compares a shared secret in constant time. An empty `expected` (a secret left unset)
/// never matches.
pub fn secret_ok(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// A mainland mobile number as 11 digits, from `13812345678`, `8613812345678`,
/// `+8613812345678` or `008613812345678`; `None` for anything else.
pub fn normalise_mainland_mobile(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let digits = raw
        .strip_prefix("+86")
        .or_else(|| raw.strip_prefix("0086"))
        .or_else(|| (raw.len() == 13).then(|| raw.strip_prefix("86")).flatten())
        .unwrap_or(raw);
    (digits.len() == 11 && digits.starts_with('1') && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.to_owned())
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time (UTC+8 all year), as the Chinese providers write it.
fn beijing_time(text: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    let beijing = FixedOffset::east_opt(8 * 3600)?;
    beijing
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

fn unix_time(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

/// A JSON value the providers send as a string or as a number (ids, times).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn json_array(body: &[u8]) -> Result<Vec<Value>, CallbackError> {
    match serde_json::from_slice::<Value>(body).map_err(malformed)? {
        Value::Array(items) => Ok(items),
        _ => Err(malformed("expected a JSON array")),
    }
}

fn field<'a>(item: &'a Value, name: &str) -> Result<&'a Value, CallbackError> {
    item.get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| malformed(format!("missing {name}")))
}

fn string_field(item: &Value, name: &str) -> Result<String, CallbackError> {
    text_of(field(item, name)?).ok_or_else(|| malformed(format!("{name} is not a string")))
}

fn optional_string(item: &Value, name: &str) -> Option<String> {
    item.get(name).and_then(text_of).filter(|s| !s.is_empty())
}

/// Alibaba Cloud delivery receipts (SmsReport push): a JSON array of
/// `{phone_number, send_time, report_time, success, err_code, err_msg, sms_size, biz_id,
/// out_id}`; `biz_id` is the id `SendSms` answered.
pub fn aliyun_reports(body: &[u8]) -> Result<Vec<Receipt>, CallbackError> {
    json_array(body)?
        .iter()
        .map(|item| {
            let id = string_field(item, "biz_id")?;
            let success = match field(item, "success")? {
                Value::Bool(b) => *b,
                Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Err(malformed("success is not a boolean")),
            };
            let status = if success {
                ReceiptStatus::Delivered
            } else {
                let reason = [
                    optional_string(item, "err_code"),
                    optional_string(item, "err_msg"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
                ReceiptStatus::Failed(if reason.is_empty() {
                    "failed".to_owned()
                } else {
                    reason
                })
            };
            Ok(Receipt {
                provider: "aliyun",
                provider_message_id: id,
                status,
                at: optional_string(item, "report_time").and_then(|t| beijing_time(&t)),
            })
        })
        .collect()
}

/// Alibaba Cloud replies (SmsUp push): a JSON array of `{phone_number, send_time, content,
/// sign_name, dest_code, sequence_id}`.
pub fn aliyun_replies(body: &[u8]) -> Result<Vec<InboundSms>, CallbackError> {
    let mut replies = Vec::new();
    for item in json_array(body)? {
        let phone = string_field(&item, "phone_number")?;
        let text = string_field(&item, "content")?;
        let Some(from_phone) = normalise_mainland_mobile(&phone) else {
            continue;
        };
        replies.push(InboundSms {
            provider: "aliyun",
            from_phone,
            text,
            at: optional_string(&item, "send_time").and_then(|t| beijing_time(&t)),
            provider_id: optional_string(&item, "sequence_id"),
            signature: optional_string(&item, "sign_name"),
        });
    }
    Ok(replies)
}

/// Tencent Cloud status callback: a JSON array of `{user_receive_time, nationcode, mobile,
/// report_status: SUCCESS|FAIL, errmsg, description, sid}`; `sid` is the `SerialNo`
/// `SendSms` answered.
pub fn tencent_statuses(body: &[u8]) -> Result<Vec<Receipt>, CallbackError> {
    json_array(body)?
        .iter()
        .map(|item| {
            let id = string_field(item, "sid")?;
            let status = match string_field(item, "report_status")?.as_str() {
                "SUCCESS" => ReceiptStatus::Delivered,
                "FAIL" => {
                    let reason = [
                        optional_string(item, "errmsg"),
                        optional_string(item, "description"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                    ReceiptStatus::Failed(if reason.is_empty() {
                        "FAIL".to_owned()
                    } else {
                        reason
                    })
                }
                other => return Err(malformed(format!("unknown report_status {other:?}"))),
            };
            Ok(Receipt {
                provider: "tencent",
                provider_message_id: id,
                status,
                at: optional_string(item, "user_receive_time").and_then(|t| beijing_time(&t)),
            })
        })
        .collect()
}

/// Tencent Cloud reply callback: one object `{extend, mobile, nationcode, sign, text, time}`
/// (`time` in Unix seconds). `None` when the sender is not a mainland mobile.
pub fn tencent_reply(body: &[u8]) -> Result<Option<InboundSms>, CallbackError> {
    let item: Value = serde_json::from_slice(body).map_err(malformed)?;
    if !item.is_object() {
        return Err(malformed("expected a JSON object"));
    }
    let mobile = string_field(&item, "mobile")?;
    let text = string_field(&item, "text")?;
    let nationcode = optional_string(&item, "nationcode").unwrap_or_else(|| "86".to_owned());
    if nationcode != "86" {
        return Ok(None);
    }
    let at = match item.get("time") {
        Some(Value::Number(n)) => n.as_i64().and_then(unix_time),
        Some(Value::String(s)) => s.trim().parse().ok().and_then(unix_time),
        _ => None,
    };
    Ok(
        normalise_mainland_mobile(&mobile).map(|from_phone| InboundSms {
            provider: "tencent",
            from_phone,
            text,
            at,
            provider_id: None,
            signature: optional_string(&item, "sign"),
        }),
    )
}

fn form_field<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, CallbackError> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| malformed(format!("missing {name}")))
}

/// A Jasmin delivery receipt (form post to `dlr-url`): `id`, `message_status`, `level`.
/// Level 1 is the operator's answer to the submission (`ESME_ROK` = accepted, any other
/// `ESME_*` = refused); levels 2 and 3 carry the final state.
pub fn jasmin_dlr(form: &HashMap<String, String>) -> Result<Receipt, CallbackError> {
    let id = form_field(form, "id")?.to_owned();
    let status = form_field(form, "message_status")?;
    let level = form_field(form, "level")?;
    let status = match (level, status) {
        ("1", "ESME_ROK") => ReceiptStatus::Accepted,
        ("1", other) if other.starts_with("ESME_") => ReceiptStatus::Failed(other.to_owned()),
        ("2" | "3", "DELIVRD") => ReceiptStatus::Delivered,
        ("2" | "3", "ACCEPTD" | "ENROUTE") => ReceiptStatus::Accepted,
        ("2" | "3", "UNDELIV" | "REJECTD" | "EXPIRED" | "DELETED" | "UNKNOWN") => {
            ReceiptStatus::Failed(status.to_owned())
        }
        _ => {
            return Err(malformed(format!(
                "unknown status {status:?} at level {level:?}"
            )));
        }
    };
    Ok(Receipt {
        provider: "jasmin",
        provider_message_id: id,
        status,
        at: None,
    })
}

/// Hex (either case) to bytes; `None` unless every pair is hex.
fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    // Checked here because `from_str_radix` also takes a sign: `+A` would be the byte 0x0A.
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// UTF-16BE bytes (what `coding=8` carries) to text.
fn utf16be(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// A reply through Jasmin (form post: `id, from, to, content, coding`, and `binary`, the
/// content in hex). With `coding=8` the text is UCS-2: taken from `binary` when present,
/// else from `content` when that is UTF-16BE hex, else `content` as it came (a gateway that
/// already decoded it). `None` when the sender is not a mainland mobile.
pub fn jasmin_mo(form: &HashMap<String, String>) -> Result<Option<InboundSms>, CallbackError> {
    let from = form_field(form, "from")?;
    let coding = form.get("coding").map(String::as_str).unwrap_or("0");
    let content = form.get("content").map(String::as_str).unwrap_or_default();
    let binary = form.get("binary").map(String::as_str).unwrap_or_default();
    let text = if coding == "8" {
        if !binary.is_empty() {
            hex_bytes(binary)
                .and_then(|b| utf16be(&b))
                .ok_or_else(|| malformed("binary is not UTF-16BE hex"))?
        } else if content.len().is_multiple_of(4) {
            hex_bytes(content)
                .and_then(|b| utf16be(&b))
                .unwrap_or_else(|| content.to_owned())
        } else {
            content.to_owned()
        }
    } else if content.is_empty() && !binary.is_empty() {
        hex_bytes(binary)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| malformed("binary is not hex"))?
    } else {
        content.to_owned()
    };
    if text.is_empty() {
        return Err(malformed("no content"));
    }
    Ok(
        normalise_mainland_mobile(from).map(|from_phone| InboundSms {
            provider: "jasmin",
            from_phone,
            text,
            at: None,
            provider_id: form.get("id").filter(|id| !id.is_empty()).cloned(),
            signature: None,
        }),
    )
}

/// WeChat's server signature on its pushes: SHA-1 (hex) of `token`, `timestamp` and `nonce`
/// sorted and concatenated, compared in constant time.
pub fn wechat_signature_ok(token: &str, timestamp: &str, nonce: &str, signature: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    let digest = Sha1::digest(parts.concat().as_bytes());
    let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    bool::from(
        expected
            .as_bytes()
            .ct_eq(signature.trim().to_ascii_lowercase().as_bytes()),
    )
}

/// The most elements, texts and other nodes a WeChat push is read with: its pushes are one
/// level of a dozen or so fields, and a document of millions of empty elements would take
/// memory out of all proportion to its bytes.
const WECHAT_MAX_NODES: u32 = 1_000;

/// A WeChat push (`<xml><Event>…</Event>…</xml>`) read by roxmltree, which also refuses a
/// document type declaration (and so any entity of the document's own), as it does by
/// default. `None` for what is not a well-formed document.
fn wechat_document(xml: &str) -> Option<roxmltree::Document<'_>> {
    let options = roxmltree::ParsingOptions {
        nodes_limit: WECHAT_MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(xml, options).ok()
}

/// The text of the push's first field `name` (CDATA unwrapped, entities decoded); `None`
/// when it has no such field.
fn wechat_field<'a>(document: &'a roxmltree::Document<'_>, name: &str) -> Option<&'a str> {
    let field = document
        .root_element()
        .children()
        .find(|node| node.has_tag_name(name))?;
    Some(field.text().unwrap_or_default())
}

/// The `TEMPLATESENDJOBFINISH` event WeChat may push after a template message: `MsgID` (the
/// `msgid` the send answered) and `Status` = `success`, `failed:user block` or
/// `failed: system failed`. `None` for any other event or a document without those fields.
pub fn wechat_event(xml: &str) -> Option<Receipt> {
    let push = wechat_document(xml)?;
    let field = |name| wechat_field(&push, name);
    if field("Event")?.trim() != "TEMPLATESENDJOBFINISH" {
        return None;
    }
    let id = field("MsgID").or_else(|| field("MsgId"))?.trim().to_owned();
    if id.is_empty() {
        return None;
    }
    let status = match field("Status")?.trim() {
        "success" => ReceiptStatus::Delivered,
        failed => match failed.strip_prefix("failed:") {
            Some(reason) => ReceiptStatus::Failed(reason.trim().to_owned()),
            None => ReceiptStatus::Failed(failed.to_owned()),
        },
    };
    let at = field("CreateTime")
        .and_then(|t| t.trim().parse().ok())
        .and_then(unix_time);
    Some(Receipt {
        provider: "wechat",
        provider_message_id: id,
        status,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<DateTime<Utc>> {
        Some(
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc),
        )
    }

    #[test]
    fn aliyun_receipts_from_the_documented_push() {
        let body = r#"[
          {"phone_number":"13812345678","send_time":"2026-12-30 10:00:00",
           "report_time":"2026-12-30 10:00:05","success":true,"err_code":"DELIVERED",
           "err_msg":"用户接收成功","sms_size":"1","biz_id":"932702304080415357^0",
           "out_id":"appointment_notice.a7.2026-12-31"},
          {"phone_number":"13912345678","send_time":"2026-12-30 10:00:00",
           "report_time":"2026-12-30 10:01:00","success":false,"err_code":"MK:0001",
           "err_msg":"号码状态异常","sms_size":"2","biz_id":"932702304080415358^0","out_id":""}
        ]"#;
        let receipts = aliyun_reports(body.as_bytes()).unwrap();
        assert_eq!(
            receipts,
            vec![
                Receipt {
                    provider: "aliyun",
                    provider_message_id: "932702304080415357^0".into(),
                    status: ReceiptStatus::Delivered,
                    at: at("2026-12-30T02:00:05Z"),
                },
                Receipt {
                    provider: "aliyun",
                    provider_message_id: "932702304080415358^0".into(),
                    status: ReceiptStatus::Failed("MK:0001 号码状态异常".into()),
                    at: at("2026-12-30T02:01:00Z"),
                },
            ]
        );
        assert_eq!(aliyun_reports(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn malformed_aliyun_receipts_are_errors_that_quote_no_number() {
        for body in [
            &b""[..],
            b"{}",
            b"not json",
            b"[{\"success\":true}]",
            b"[{\"biz_id\":\"1\",\"success\":\"maybe\"}]",
            b"[{\"biz_id\":{\"phone\":13812345678},\"success\":true}]",
        ] {
            let error = aliyun_reports(body).unwrap_err();
            assert!(!error.to_string().contains("13812345678"), "{error}");
        }
    }

    #[test]
    fn aliyun_replies_from_the_documented_push() {
        let body = r#"[
          {"phone_number":"13812345678","send_time":"2026-12-30 20:15:00","content":"1",
           "sign_name":"新源县卫健委","dest_code":"1234","sequence_id":1234567890},
          {"phone_number":"85291234567","send_time":"2026-12-30 20:16:00","content":"hi",
           "sign_name":"新源县卫健委","dest_code":"1234","sequence_id":1234567891},
          {"phone_number":"+8613912345678","send_time":"2026-12-30 20:17:00","content":"TD",
           "sign_name":"新源县卫健委","dest_code":"1234","sequence_id":1234567892}
        ]"#;
        let replies = aliyun_replies(body.as_bytes()).unwrap();
        assert_eq!(replies.len(), 2, "the Hong Kong number is skipped");
        assert_eq!(
            replies[0],
            InboundSms {
                provider: "aliyun",
                from_phone: "13812345678".into(),
                text: "1".into(),
                at: at("2026-12-30T12:15:00Z"),
                provider_id: Some("1234567890".into()),
                signature: Some("新源县卫健委".into()),
            }
        );
        assert_eq!(replies[1].from_phone, "13912345678");
        assert_eq!(replies[1].text, "TD");
        assert!(aliyun_replies(b"[{\"phone_number\":\"13812345678\"}]").is_err());
        assert!(aliyun_replies(b"{\"content\":\"1\"}").is_err());
    }

    #[test]
    fn tencent_statuses_from_the_documented_callback() {
        let body = r#"[
          {"user_receive_time":"2026-12-30 08:03:04","nationcode":"86","mobile":"13812345678",
           "report_status":"SUCCESS","errmsg":"DELIVRD","description":"用户短信送达成功",
           "sid":"2019:6393513716891093155"},
          {"user_receive_time":"2026-12-30 08:05:00","nationcode":"86","mobile":"13912345678",
           "report_status":"FAIL","errmsg":"MI:0013","description":"用户短信接收失败",
           "sid":"2019:6393513716891093156"}
        ]"#;
        let receipts = tencent_statuses(body.as_bytes()).unwrap();
        assert_eq!(receipts[0].provider, "tencent");
        assert_eq!(receipts[0].provider_message_id, "2019:6393513716891093155");
        assert_eq!(receipts[0].status, ReceiptStatus::Delivered);
        assert_eq!(receipts[0].at, at("2026-12-30T00:03:04Z"));
        assert_eq!(
            receipts[1].status,
            ReceiptStatus::Failed("MI:0013 用户短信接收失败".into())
        );
        assert!(tencent_statuses(b"[{\"sid\":\"1\",\"report_status\":\"MAYBE\"}]").is_err());
        assert!(tencent_statuses(b"[{\"report_status\":\"SUCCESS\"}]").is_err());
        assert!(tencent_statuses(b"{").is_err());
    }

    #[test]
    fn tencent_reply_from_the_documented_callback() {
        let body = r#"{"extend":"","mobile":"13812345678","nationcode":"86",
                       "sign":"新源县卫健委","text":"确认","time":1767096000}"#;
        let reply = tencent_reply(body.as_bytes()).unwrap().unwrap();
        assert_eq!(reply.provider, "tencent");
        assert_eq!(reply.from_phone, "13812345678");
        assert_eq!(reply.text, "确认");
        assert_eq!(reply.at, at("2025-12-30T12:00:00Z"));
        assert_eq!(reply.signature.as_deref(), Some("新源县卫健委"));
        let foreign = r#"{"mobile":"91234567","nationcode":"852","text":"hi","time":1}"#;
        assert_eq!(tencent_reply(foreign.as_bytes()).unwrap(), None);
        assert!(tencent_reply(b"[]").is_err());
        assert!(tencent_reply(b"{\"mobile\":\"13812345678\"}").is_err());
        assert!(tencent_reply(b"").is_err());
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn jasmin_receipts_at_each_level() {
        let id = "1ad8ca9c-2c9f-4a1a-b6a5-5d1a6d8b8e10";
        let level1 = form(&[("id", id), ("message_status", "ESME_ROK"), ("level", "1")]);
        assert_eq!(jasmin_dlr(&level1).unwrap().status, ReceiptStatus::Accepted);
        let delivered = form(&[
            ("id", id),
            ("message_status", "DELIVRD"),
            ("level", "3"),
            ("subdate", "2612301000"),
            ("donedate", "2612301001"),
            ("sub", "001"),
            ("dlvrd", "001"),
            ("err", "000"),
            ("text", ""),
        ]);
        let receipt = jasmin_dlr(&delivered).unwrap();
        assert_eq!(receipt.provider, "jasmin");
        assert_eq!(receipt.provider_message_id, id);
        assert_eq!(receipt.status, ReceiptStatus::Delivered);
        for state in ["UNDELIV", "REJECTD", "EXPIRED"] {
            let failed = form(&[("id", id), ("message_status", state), ("level", "2")]);
            assert_eq!(
                jasmin_dlr(&failed).unwrap().status,
                ReceiptStatus::Failed(state.into())
            );
        }
        let refused = form(&[
            ("id", id),
            ("message_status", "ESME_RINVDSTADR"),
            ("level", "1"),
        ]);
        assert_eq!(
            jasmin_dlr(&refused).unwrap().status,
            ReceiptStatus::Failed("ESME_RINVDSTADR".into())
        );
        assert!(jasmin_dlr(&form(&[("id", id), ("level", "3")])).is_err());
        assert!(
            jasmin_dlr(&form(&[
                ("id", id),
                ("message_status", "HUH"),
                ("level", "3")
            ]))
            .is_err()
        );
        assert!(jasmin_dlr(&form(&[])).is_err());
    }

    #[test]
    fn jasmin_replies_in_plain_text_and_in_ucs2_hex() {
        // "确认" in UTF-16BE: 786e 8ba4.
        let hex_binary = form(&[
            ("id", "mo-1"),
            ("from", "8613812345678"),
            ("to", "10690000"),
            ("coding", "8"),
            ("content", "\u{fffd}"),
            ("binary", "786E8BA4"),
        ]);
        let reply = jasmin_mo(&hex_binary).unwrap().unwrap();
        assert_eq!(reply.from_phone, "13812345678");
        assert_eq!(reply.text, "确认");
        assert_eq!(reply.provider_id.as_deref(), Some("mo-1"));
        let hex_content = form(&[
            ("from", "+8613812345678"),
            ("coding", "8"),
            ("content", "786e8ba4"),
        ]);
        assert_eq!(jasmin_mo(&hex_content).unwrap().unwrap().text, "确认");
        let plain_ucs2 = form(&[
            ("from", "13812345678"),
            ("coding", "8"),
            ("content", "退订"),
        ]);
        assert_eq!(jasmin_mo(&plain_ucs2).unwrap().unwrap().text, "退订");
        let gsm = form(&[
            ("from", "8613812345678"),
            ("coding", "0"),
            ("content", "TD"),
        ]);
        assert_eq!(jasmin_mo(&gsm).unwrap().unwrap().text, "TD");
        let foreign = form(&[
            ("from", "4915112345678"),
            ("coding", "0"),
            ("content", "hi"),
        ]);
        assert_eq!(jasmin_mo(&foreign).unwrap(), None);
        assert!(jasmin_mo(&form(&[("coding", "0"), ("content", "1")])).is_err());
        assert!(
            jasmin_mo(&form(&[
                ("from", "13812345678"),
                ("coding", "8"),
                ("binary", "d800")
            ]))
            .is_err(),
            "a lone surrogate is not text"
        );
        assert!(jasmin_mo(&form(&[("from", "13812345678"), ("coding", "0")])).is_err());
    }

    #[test]
    fn wechat_server_signature() {
        let (token, timestamp, nonce) = ("outreach-token", "1767096000", "1379498520");
        let mut parts = [token, timestamp, nonce];
        parts.sort_unstable();
        let signature: String = Sha1::digest(parts.concat().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(wechat_signature_ok(token, timestamp, nonce, &signature));
        assert!(wechat_signature_ok(
            token,
            timestamp,
            nonce,
            &signature.to_uppercase()
        ));
        assert!(!wechat_signature_ok(
            token,
            timestamp,
            "1379498521",
            &signature
        ));
        assert!(!wechat_signature_ok("other", timestamp, nonce, &signature));
        assert!(!wechat_signature_ok(token, timestamp, nonce, ""));
        assert!(!wechat_signature_ok("", "", "", ""), "no token, no trust");
    }

    #[test]
    fn wechat_template_job_events() {
        let event = |status: &str| {
            format!(
                "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>\
                 <FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName>\
                 <CreateTime>1395658920</CreateTime><MsgType><![CDATA[event]]></MsgType>\
                 <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID>\
                 <Status><![CDATA[{status}]]></Status></xml>"
            )
        };
        assert_eq!(
            wechat_event(&event("success")),
            Some(Receipt {
                provider: "wechat",
                provider_message_id: "200163836".into(),
                status: ReceiptStatus::Delivered,
                at: at("2014-03-24T11:02:00Z"),
            })
        );
        assert_eq!(
            wechat_event(&event("failed:user block")).unwrap().status,
            ReceiptStatus::Failed("user block".into())
        );
        assert_eq!(
            wechat_event(&event("failed: system failed"))
                .unwrap()
                .status,
            ReceiptStatus::Failed("system failed".into())
        );
        let subscribe = "<xml><MsgType><![CDATA[event]]></MsgType>\
                         <Event><![CDATA[subscribe]]></Event></xml>";
        assert_eq!(wechat_event(subscribe), None);
        assert_eq!(wechat_event(""), None);
        assert_eq!(wechat_event("<xml><Event>TEMPLATESENDJOBFINISH"), None);
        assert_eq!(
            wechat_event("<xml><Event>TEMPLATESENDJOBFINISH</Event><Status>success</Status></xml>"),
            None,
            "no MsgID"
        );
    }

    #[test]
    fn wechat_pushes_are_read_as_xml_without_a_dtd_within_a_node_limit() {
        let push = "<xml>\n  <Event> <![CDATA[TEMPLATESENDJOBFINISH]]> </Event>\n  \
                    <MsgID>7</MsgID><Status>failed:user &amp; system</Status></xml>";
        assert_eq!(
            wechat_event(push).unwrap().status,
            ReceiptStatus::Failed("user & system".into())
        );
        let with_dtd = "<!DOCTYPE xml [<!ENTITY e \"TEMPLATESENDJOBFINISH\">]>\
                        <xml><Event>&e;</Event><MsgID>7</MsgID><Status>success</Status></xml>";
        assert_eq!(wechat_event(with_dtd), None);
        let padded = format!(
            "<xml><Event>TEMPLATESENDJOBFINISH</Event><MsgID>7</MsgID>\
             <Status>success</Status>{}</xml>",
            "<a/>".repeat(WECHAT_MAX_NODES as usize)
        );
        assert_eq!(wechat_event(&padded), None);
    }

    #[test]
    fn jasmin_receipt_signatures_are_per_message() {
        let sig = jasmin_dlr_signature("hook-secret", "appointment_notice.a7.2026-12-31");
        assert_eq!(sig.len(), 64);
        assert!(jasmin_dlr_signature_ok(
            "hook-secret",
            "appointment_notice.a7.2026-12-31",
            &sig
        ));
        assert!(!jasmin_dlr_signature_ok(
            "hook-secret",
            "appointment_notice.a8.2026-12-31",
            &sig
        ));
        assert!(!jasmin_dlr_signature_ok(
            "other",
            "appointment_notice.a7.2026-12-31",
            &sig
        ));
        assert!(!jasmin_dlr_signature_ok(
            "",
            "k",
            &jasmin_dlr_signature("", "k")
        ));
        assert!(!jasmin_dlr_signature_ok(
            "hook-secret",
            "appointment_notice.a7.2026-12-31",
            ""
        ));
    }

    #[test]
    fn shared_secrets_compare_whole() {
        assert!(secret_ok("s3cret-token", "s3cret-token"));
        assert!(!secret_ok("s3cret-token", "s3cret-toke"));
        assert!(!secret_ok("s3cret-token", "s3cret-tokem"));
        assert!(!secret_ok("", ""), "an unset secret authenticates nobody");
    }

    #[test]
    fn mainland_mobiles_are_normalised() {
        for raw in [
            "13812345678",
            "8613812345678",
            "+8613812345678",
            "008613812345678",
        ] {
            assert_eq!(
                normalise_mainland_mobile(raw).as_deref(),
                Some("13812345678")
            );
        }
        for raw in [
            "",
            "1381234567",
            "23812345678",
            "+85291234567",
            "86138123456789",
        ] {
            assert_eq!(normalise_mainland_mobile(raw), None, "{raw}");
        }
    }
}
