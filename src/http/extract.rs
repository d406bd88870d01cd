//! Request extractors whose rejections speak the JSON error envelope: `Json`, `Path`,
//! `Query`, and the client address used for login throttling.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::config::Network;
use crate::error::AppError;
use crate::startup::AppState;

/// `axum::Json` with the contract's error envelope on rejection.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code, message) = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => return AppError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "请求需要 Content-Type: application/json".to_owned(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("请求数据的字段或类型不正确：{}", rejection.body_text()),
            ),
            status => (
                if status.is_client_error() {
                    status
                } else {
                    StatusCode::BAD_REQUEST
                },
                "malformed_json",
                format!("请求体不是有效的 JSON：{}", rejection.body_text()),
            ),
        };
        AppError::Request {
            status,
            code,
            message,
        }
    }
}

/// `axum::extract::Path` with the error envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::bad_request(
            "invalid_path",
            format!("路径参数不正确：{}", rejection.body_text()),
        )
    }
}

/// `axum::extract::Query` with the error envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::bad_request(
            "invalid_query",
            format!("查询参数不正确：{}", rejection.body_text()),
        )
    }
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
    fn the_client_is_the_right_most_address_not_a_trusted_proxy() {
        let proxies = nets(&["10.0.0.0/8"]);
        // The client wrote 1.1.1.1 itself; the proxy appended the address it saw.
        let got = client_address(ip("10.0.0.2"), ["1.1.1.1, 203.0.113.9"].into_iter(), &proxies);
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
