//! Request extractors whose rejections speak the JSON error envelope: `Json`, `Path`,
//! `Query`, and the client address used for login throttling and callback sources.
//!
//! Their rejections say in words (zh-CN) which field is wrong and what it wants, never a
//! Rust type name, and every string they take in is refused when it holds a NUL character
//! (PostgreSQL cannot store one, and no person types one).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::config::Network;
use crate::error::AppError;
use crate::state::AppState;

/// The refusal of any request text holding U+0000.
fn nul_refused() -> AppError {
    AppError::validation("invalid_input", crate::text::NUL_REASON)
}

/// A JSON body, with the contract's error envelope on rejection.
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        if !is_json(request.headers()) {
            return Err(AppError::Request {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                message: "请求需要 Content-Type: application/json".to_owned(),
            });
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge
                } else {
                    AppError::bad_request("malformed_json", "无法读取请求体")
                }
            })?;
        let value = parse_json(&bytes)?;
        if json_has_nul(&bytes) {
            return Err(nul_refused());
        }
        Ok(Self(value))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body: unreadable JSON is a 400, JSON of the wrong shape a 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| {
            let path = e.path().to_string();
            json_error(&path, e.into_inner())
        })
        .and_then(|value| {
            deserializer
                .end()
                .map(|()| value)
                .map_err(|e| json_error(".", e))
        })
}

fn json_error(path: &str, error: serde_json::Error) -> AppError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => AppError::Request {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_body",
            message: format!("请求数据不正确：{}", describe(path, &error.to_string())),
        },
        Category::Eof if error.line() == 1 && error.column() == 0 => {
            AppError::bad_request("malformed_json", "请求体为空，应为 JSON")
        }
        Category::Syntax | Category::Eof | Category::Io => AppError::bad_request(
            "malformed_json",
            format!(
                "请求体不是有效的 JSON（第 {} 行第 {} 列附近）",
                error.line(),
                error.column()
            ),
        ),
    }
}

/// Whether a JSON text holds a `\u0000` escape (a raw NUL byte is not valid JSON at all).
/// Backslashes only occur inside strings, so pairing them off is enough.
fn json_has_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0 => return true,
            b'\\' => {
                if bytes.get(i + 1) == Some(&b'u')
                    && bytes.get(i + 2..i + 6).is_some_and(|hex| hex == b"0000")
                {
                    return true;
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    false
}

/// `axum::extract::Path` with the error envelope.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        if let Ok(raw) = RawPathParams::from_request_parts(parts, state).await
            && raw.iter().any(|(_, value)| value.contains('\0'))
        {
            return Err(nul_refused());
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(path_error)
    }
}

fn path_error(rejection: PathRejection) -> AppError {
    use axum::extract::path::ErrorKind;
    let message = match &rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            ErrorKind::ParseErrorAtKey {
                key, expected_type, ..
            } => format!("路径参数 {key} 应为{}", wants(expected_type)),
            ErrorKind::ParseErrorAtIndex { expected_type, .. }
            | ErrorKind::ParseError { expected_type, .. } => {
                format!("路径参数应为{}", wants(expected_type))
            }
            ErrorKind::InvalidUtf8InPathParam { key } => {
                format!("路径参数 {key} 不是有效的 UTF-8 文本")
            }
            ErrorKind::DeserializeError { key, message, .. } => {
                format!("路径参数 {}", describe(key, message))
            }
            _ => "路径参数不正确".to_owned(),
        },
        _ => "路径参数不正确".to_owned(),
    };
    AppError::bad_request("invalid_path", message)
}

/// `axum::extract::Query` with the error envelope.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or_default();
        parse_query(query).map(Self)
    }
}

/// Parses a query string into `T`; a NUL anywhere in it is a 422.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, AppError> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    if pairs
        .clone()
        .any(|(key, value)| key.contains('\0') || value.contains('\0'))
    {
        return Err(nul_refused());
    }
    let deserializer = serde_urlencoded::Deserializer::new(pairs);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        AppError::bad_request(
            "invalid_query",
            format!(
                "查询参数不正确：{}",
                describe(&path, &e.into_inner().to_string())
            ),
        )
    })
}

/// What a field wants, in words, from serde's "expected …" text or a Rust type name.
fn wants(expected: &str) -> String {
    let expected = expected.trim().trim_matches('`');
    let known = match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "an integer" | "integer" => "整数",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "非负整数",
        "f32" | "f64" | "a float" | "a number" => "数字",
        "bool" | "a boolean" => "true 或 false",
        "char" | "a character" | "a char" => "单个字符",
        "a string" | "a borrowed string" | "String" | "&str" | "string" => "文本",
        "a sequence" | "a tuple" | "a list" => "列表（JSON 数组）",
        "a map" | "a struct" => "对象（JSON 对象）",
        "a formatted date string" | "NaiveDate" => "日期，格式 YYYY-MM-DD",
        "a formatted date and time string or a unix timestamp"
        | "a formatted date and time string"
        | "DateTime"
        | "a RFC 3339 date and time string" => "日期时间，如 2026-03-01T08:00:00+08:00",
        "a formatted time string" | "NaiveTime" => "时间，格式 HH:MM",
        "unit" | "null" => "空值（null）",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    if expected.starts_with("struct ") {
        return "对象（JSON 对象）".to_owned();
    }
    if expected.starts_with("tuple") || expected.starts_with("a tuple") {
        return "列表（JSON 数组）".to_owned();
    }
    if let Some(list) = expected.strip_prefix("one of ") {
        return format!("以下之一：{}", names(list));
    }
    if expected.starts_with("variant") || expected.starts_with("enum ") {
        return "规定的取值之一".to_owned();
    }
    if !expected.is_ascii() {
        // A message the domain types wrote themselves (already in Chinese).
        return expected.to_owned();
    }
    "正确格式的值".to_owned()
}

/// "`a`, `b`" or "`a` or `b`" → "a、b".
fn names(list: &str) -> String {
    list.split(',')
        .flat_map(|part| part.split(" or "))
        .map(|name| name.trim().trim_matches('`'))
        .filter(|name| !name.is_empty())
        .collect::<Vec<_>>()
        .join("、")
}

/// A serde error message (`invalid type: string "x", expected i32`, `missing field "a"`,
/// parse errors of numbers, chrono's date errors) as a sentence naming the field.
fn describe(path: &str, message: &str) -> String {
    let field = match path {
        "" | "." => None,
        p => Some(p),
    };
    let subject = field.map_or_else(|| "请求数据".to_owned(), |f| format!("字段 {f}"));
    // serde_json appends the position; the field name says more.
    let message = message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at])
        .trim();
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("缺少字段 {}", rest.trim_matches('`'));
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (name, allowed) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed).trim();
        return if allowed.is_empty() || allowed == "nothing" {
            format!("不认识的字段 {}", name.trim_matches('`'))
        } else {
            format!(
                "不认识的字段 {}（可用字段：{}）",
                name.trim_matches('`'),
                names(allowed)
            )
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (value, allowed) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed);
        return format!(
            "{subject} 的取值 {} 无效，可选：{}",
            value.trim_matches('`'),
            names(allowed)
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (given, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        if given == "null" {
            return format!("{subject} 不能为空，应为{}", wants(expected));
        }
        return format!("{subject} 应为{}", wants(expected));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let (_, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!("{subject} 的值无效或超出范围，应为{}", wants(expected));
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        let (_, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!("{subject} 的长度不正确（应为{}）", wants(expected));
    }
    let plain = match message {
        "invalid digit found in string" | "cannot parse integer from empty string" => Some("整数"),
        "number too large to fit in target type" | "number too small to fit in target type" => {
            return format!("{subject} 超出允许的范围");
        }
        "invalid float literal" => Some("数字"),
        "provided string was not `true` or `false`" => Some("true 或 false"),
        "input contains invalid characters"
        | "premature end of input"
        | "trailing input"
        | "input is out of range"
        | "no possible date and time matching input"
        | "input is not enough for unique date and time"
        | "bad or unsupported format string" => {
            Some("日期 YYYY-MM-DD 或日期时间（如 2026-03-01T08:00:00+08:00）")
        }
        _ => None,
    };
    if let Some(wanted) = plain {
        return format!("{subject} 应为{wanted}");
    }
    if !message.is_ascii() {
        return format!("{subject}：{message}");
    }
    format!("{subject} 的值无效")
}

/// The client's address. Without `http.trust_forwarded_for` it is the peer. With it, and
/// only when the peer is a trusted proxy, `X-Forwarded-For` is read from the right: each
/// trusted proxy appends the address it saw, so the first entry from the right that is not a
/// trusted proxy is the client; entries left of it are written by the client and ignored.
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let http = &state.settings.http;
        if !http.trust_forwarded_for {
            return Ok(Self(peer));
        }
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Ok(Self(client_address(peer, forwarded, &http.trusted_proxies)))
    }
}

/// The client behind `peer` given the `X-Forwarded-For` header lines in order and the trusted
/// proxies (empty: the loopback addresses).
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[Network],
) -> IpAddr {
    let canonical = |ip: IpAddr| ip.to_canonical();
    let is_trusted = |ip: IpAddr| {
        let ip = canonical(ip);
        if trusted.is_empty() {
            ip.is_loopback()
        } else {
            trusted.iter().any(|net| net.contains(ip))
        }
    };
    if !is_trusted(peer) {
        return canonical(peer);
    }
    // Several header lines are one list, in order.
    let entries: Vec<&str> = forwarded.flat_map(|line| line.split(',')).collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded_entry(entry) else {
            // A proxy never writes garbage: what is left of it came from the client.
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    canonical(client)
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    entry.parse::<SocketAddr>().ok().map(|addr| addr.ip())
}

/// Streams an uploaded file (an upload endpoint's body, or a page's) into a temporary file, up
/// to `import.max_upload_bytes`.
pub async fn receive_file(
    state: &AppState,
    body: axum::body::Body,
) -> Result<tempfile::NamedTempFile, AppError> {
    let limit = state.settings.import.max_upload_bytes;
    let file = tempfile::NamedTempFile::new().map_err(|e| anyhow::anyhow!("temp file: {e}"))?;
    let mut writer = std::io::BufWriter::new(file.as_file());
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if e.to_string().contains("length limit") {
                AppError::PayloadTooLarge
            } else {
                AppError::bad_request("unreadable_body", "上传中断，请重试")
            }
        })?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(AppError::PayloadTooLarge);
        }
        writer
            .write_all(&chunk)
            .map_err(|e| anyhow::anyhow!("temp file: {e}"))?;
    }
    writer
        .flush()
        .map_err(|e| anyhow::anyhow!("temp file: {e}"))?;
    drop(writer);
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    fn nets(raw: &[&str]) -> Vec<Network> {
        raw.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn serde_messages_become_words_naming_the_field() {
        let cases = [
            (
                "channel",
                "unknown variant `we_chat`, expected one of `sms`, `wechat`, `email` at line 1 column 20",
                "字段 channel 的取值 we_chat 无效，可选：sms、wechat、email",
            ),
            (
                "age",
                "invalid type: string \"x\", expected i32",
                "字段 age 应为整数",
            ),
            (
                "count",
                "invalid value: integer `-1`, expected u32",
                "字段 count 的值无效或超出范围，应为非负整数",
            ),
            (
                "day",
                "input contains invalid characters",
                "字段 day 应为日期 YYYY-MM-DD 或日期时间（如 2026-03-01T08:00:00+08:00）",
            ),
            (".", "missing field `username`", "缺少字段 username"),
            (
                ".",
                "unknown field `nmae`, expected `name` or `note`",
                "不认识的字段 nmae（可用字段：name、note）",
            ),
            (
                "name",
                "invalid type: null, expected a string",
                "字段 name 不能为空，应为文本",
            ),
        ];
        for (path, message, expected) in cases {
            assert_eq!(describe(path, message), expected);
        }
    }

    #[test]
    fn only_a_real_nul_escape_counts() {
        assert!(json_has_nul(br#"{"a":"x\u0000"}"#));
        assert!(!json_has_nul(br#"{"a":"x\\u0000"}"#));
        assert!(!json_has_nul(br#"{"a":"\u0001"}"#));
    }

    #[test]
    fn the_client_is_the_right_most_address_not_a_trusted_proxy() {
        let proxies = nets(&["10.0.0.0/8"]);
        // The client wrote 1.1.1.1 itself; the proxy appended the address it saw.
        let got = client_address(
            ip("10.0.0.2"),
            ["1.1.1.1, 203.0.113.9"].into_iter(),
            &proxies,
        );
        assert_eq!(got, ip("203.0.113.9"));
        // Two proxies in a row are skipped.
        let got = client_address(
            ip("10.0.0.2"),
            ["1.1.1.1, 203.0.113.9, 10.0.0.7"].into_iter(),
            &proxies,
        );
        assert_eq!(got, ip("203.0.113.9"));
        // Header lines are read as one list.
        let got = client_address(
            ip("10.0.0.2"),
            ["6.6.6.6", "203.0.113.9:4431"].into_iter(),
            &proxies,
        );
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_or_garbage_is_ignored() {
        let proxies = nets(&["10.0.0.0/8"]);
        let got = client_address(ip("198.51.100.4"), ["1.1.1.1"].into_iter(), &proxies);
        assert_eq!(got, ip("198.51.100.4"));
        let got = client_address(ip("10.0.0.2"), ["1.1.1.1, junk"].into_iter(), &proxies);
        assert_eq!(got, ip("10.0.0.2"));
        let got = client_address(ip("10.0.0.2"), std::iter::empty(), &proxies);
        assert_eq!(got, ip("10.0.0.2"));
        // With no list, only loopback proxies are trusted.
        let got = client_address(ip("127.0.0.1"), ["203.0.113.9"].into_iter(), &[]);
        assert_eq!(got, ip("203.0.113.9"));
        let got = client_address(ip("192.0.2.1"), ["203.0.113.9"].into_iter(), &[]);
        assert_eq!(got, ip("192.0.2.1"));
        // An IPv4 peer seen on a dual-stack socket is the same address.
        let got = client_address(ip("::ffff:10.0.0.2"), ["203.0.113.9"].into_iter(), &proxies);
        assert_eq!(got, ip("203.0.113.9"));
    }
}
