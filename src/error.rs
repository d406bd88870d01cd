//! Errors of the service layer and their one mapping to HTTP: the stable JSON envelope
//! `{"error": {"code", "message"}}`. Messages are for the people using the pages (zh-CN);
//! database and internal text never reaches a client, it is logged instead.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sea_orm::{DbErr, SqlErr};
use serde::Serialize;

pub type AppResult<T> = Result<T, AppError>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is well-formed but a value in it is not acceptable.
    #[error("{message}")]
    Validation {
        code: &'static str,
        message: String,
        details: Option<serde_json::Value>,
    },
    /// The request itself could not be read (malformed JSON, wrong type, bad path, wrong
    /// content type); the status says which.
    #[error("{message}")]
    Request {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// The request conflicts with the state of things (a full day, an examined resident);
    /// `details` says what would work instead.
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    OutOfScope { message: String },
    #[error("too many attempts")]
    TooManyRequests { retry_after: Duration },
    #[error("payload too large")]
    PayloadTooLarge,
    /// SQLite's single writer stayed busy past the busy timeout (e.g. during a large import).
    #[error("database busy")]
    Busy,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl AppError {
    pub fn validation(code: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::Request {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn out_of_scope() -> Self {
        Self::OutOfScope {
            message: "该数据不在您的管辖范围内".to_owned(),
        }
    }

    pub fn forbidden_role() -> Self {
        Self::Forbidden("您的角色无权执行此操作".to_owned())
    }

    /// The machine-readable code of the envelope.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The status and the message a person reads, for a page showing the error; a server
    /// error is logged with its cause here, as the API logs it.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        let (status, _, message) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = format!("{self:#}"), "page failed");
        }
        (status, message)
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::Refused { code, message, .. } => (StatusCode::CONFLICT, code, message.clone()),
            Self::Validation { code, message, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, message.clone())
            }
            Self::Request {
                status,
                code,
                message,
            } => (*status, code, message.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.clone()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            Self::OutOfScope { message } => {
                (StatusCode::FORBIDDEN, "out_of_scope", message.clone())
            }
            Self::TooManyRequests { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "尝试次数过多，请在 {} 秒后重试",
                    retry_after.as_secs().max(1)
                ),
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "请求内容过大".to_owned(),
            ),
            Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "数据库正忙（可能正在导入数据），请稍后重试".to_owned(),
            ),
            Self::Unexpected(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "服务器内部错误，请稍后重试".to_owned(),
            ),
        }
    }
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                return Self::Conflict("数据已存在，与现有记录冲突".to_owned());
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                return Self::validation("invalid_reference", "引用的数据不存在或仍被使用");
            }
            _ => {}
        }
        let text = err.to_string();
        // PostgreSQL gave up one of two transactions waiting on each other: retrying works.
        if text.contains("deadlock detected") || text.contains("could not serialize access") {
            tracing::warn!("transaction conflict: {err}");
            return Self::Busy;
        }
        if text.contains("database is locked") {
            tracing::warn!("database busy: {err}");
            return Self::Busy;
        }
        match err {
            DbErr::RecordNotFound(_) => Self::NotFound("记录不存在".to_owned()),
            other => Self::Unexpected(anyhow::Error::new(other).context("database error")),
        }
    }
}

/// The error body of the HTTP contract.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `validation`, `not_found`, `out_of_scope`.
    pub code: String,
    /// Human-readable message (zh-CN).
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

pub fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorEnvelope {
        error: ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
            details: None,
        },
    };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            // `{:#}` prints the whole cause chain on one line.
            tracing::error!(error = format!("{self:#}"), "request failed");
        } else {
            tracing::debug!(code, "request refused");
        }
        let details = match &self {
            Self::Validation { details, .. } | Self::Refused { details, .. } => details.clone(),
            _ => None,
        };
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: code.to_owned(),
                message,
                details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            Self::TooManyRequests { retry_after } => Some(retry_after),
            Self::Busy => Some(Duration::from_secs(5)),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would be accepted.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"outreach\""),
            );
        }
        response
    }
}
