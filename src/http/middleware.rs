//! Cross-cutting request handling: the tracing span of a request, the bound on a client's
//! request id, and turning every error response that is not already the JSON envelope (404 of
//! an unknown route, 405, 408, 413 from a layer, a caught panic) into it.

use std::any::Any;
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::envelope;
use crate::http::guard::REQUEST_ID_HEADER;

/// The longest request id a client may give; it is echoed, logged and kept in the audit log.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's request id may be kept: 1–128 characters of letters, digits and
/// `-_.:` (enough for UUIDs and the ids proxies and tracing systems write).
pub fn is_acceptable_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Drops a request id the client gave that is too long or holds other characters, so the
/// request-id layer generates a fresh one in its place.
pub async fn bound_request_id<B>(mut request: Request<B>) -> Request<B> {
    let headers = request.headers_mut();
    let acceptable = headers
        .get_all(REQUEST_ID_HEADER)
        .iter()
        .all(|v| is_acceptable_request_id(v.as_bytes()));
    if !acceptable || headers.get_all(REQUEST_ID_HEADER).iter().count() > 1 {
        headers.remove(REQUEST_ID_HEADER);
    }
    request
}

pub fn make_span<B>(request: &Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("<unmatched>");
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    // The route template, never the raw URI: paths and queries may carry personal data.
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

/// Counts and times every request by its route template (never the raw path) and status.
/// Outermost, so the status is the one the client got and the time includes every layer.
pub async fn measure(request: Request<axum::body::Body>, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    crate::telemetry::metrics::http_request(
        method.as_str(),
        route
            .as_deref()
            .unwrap_or(crate::telemetry::metrics::UNMATCHED_ROUTE),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

pub async fn not_found() -> Response {
    envelope(StatusCode::NOT_FOUND, "not_found", "请求的接口不存在")
}

pub async fn error_envelope(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // JSON is the envelope already; an HTML page is a page's own error page.
    let already = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if already {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "请求的接口不存在"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "该接口不支持此请求方法"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "请求处理超时"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "请求内容过大"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "不支持的内容类型"),
        s if s.is_server_error() => ("internal", "服务器内部错误，请稍后重试"),
        _ => ("bad_request", "请求无效"),
    };
    let mut replaced = envelope(status, code, message);
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = response.headers().get(&name) {
            replaced.headers_mut().insert(name, value.clone());
        }
    }
    replaced
}

pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(panic = detail, "request handler panicked");
    envelope(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "服务器内部错误，请稍后重试",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_to_a_safe_alphabet() {
        assert!(is_acceptable_request_id(
            b"3f2c9a4e-1b7d-4c1e-9f00-0a1b2c3d4e5f"
        ));
        assert!(is_acceptable_request_id(b"trace:abc_1.2"));
        assert!(is_acceptable_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!is_acceptable_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!is_acceptable_request_id(b""));
        assert!(!is_acceptable_request_id(b"a b"));
        assert!(!is_acceptable_request_id(b"<script>"));
        assert!(!is_acceptable_request_id("编号".as_bytes()));
    }
}
