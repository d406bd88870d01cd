//! Request extractors whose rejections speak the JSON error envelope: `Json`, `Path`,
//! `Query`, and the client address used for login throttling.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

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

/// The client's address: the peer, or with `http.trust_forwarded_for` the first address of
/// `X-Forwarded-For` (only behind a reverse proxy that sets it).
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if state.settings.http.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return Ok(Self(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(Self(peer))
    }
}
