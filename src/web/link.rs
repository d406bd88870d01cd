//! The resident's own appointment page, `/r/{code}`, opened from a notice or reminder without
//! signing in: the appointment, and 确认 / 改约 / 退订 as plain forms. Codes that open nothing
//! (unknown, or their campaign closed) are counted per client address, and an address that
//! keeps guessing is refused for a while.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use minijinja::context;
use serde::Deserialize;

use super::render::page;
use super::same_origin;
use crate::error::AppError;
use crate::http::extract::ClientAddr;
use crate::outreach::links::{self, Link};
use crate::state::AppState;

/// Why a code opened nothing.
enum Miss {
    Unknown,
    Expired,
}

/// The link of `code`, or the page to answer instead.
async fn resolve(state: &AppState, client: IpAddr, code: &str) -> Result<Link, Response> {
    if let Some(wait) = state.links.wait(client) {
        return Err(too_many(wait));
    }
    let found = links::open(&state.db, &state.privacy, code)
        .await
        .map_err(|e| failed(state, &e))?;
    let miss = match found {
        Some(link) if !link.expired() => return Ok(link),
        Some(_) => Miss::Expired,
        None => Miss::Unknown,
    };
    if let Some(wait) = state.links.miss(client) {
        tracing::warn!(client = %client, "resident link: too many codes that open nothing");
        return Err(too_many(wait));
    }
    let hotline = hotline(state);
    Err(match miss {
        Miss::Unknown => page(
            StatusCode::NOT_FOUND,
            "r/gone.html",
            context! { expired => false, hotline },
        ),
        Miss::Expired => page(
            StatusCode::GONE,
            "r/gone.html",
            context! { expired => true, hotline },
        ),
    })
}

fn hotline(state: &AppState) -> String {
    state.settings.messaging.outbox.hotline.clone()
}

fn too_many(wait: Duration) -> Response {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    let mut response = page(
        StatusCode::TOO_MANY_REQUESTS,
        "r/busy.html",
        context! { minutes },
    );
    if let Ok(value) = wait.as_secs().max(1).to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn failed(state: &AppState, error: &AppError) -> Response {
    let (status, message) = error.status_and_message();
    page(
        status,
        "r/gone.html",
        context! { failed => true, message, hotline => hotline(state) },
    )
}

#[derive(Deserialize)]
pub struct Shown {
    done: Option<String>,
}

/// `GET /r/{code}`.
pub async fn show(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Path(code): Path<String>,
    Query(shown): Query<Shown>,
) -> Response {
    let link = match resolve(&state, client, &code).await {
        Ok(link) => link,
        Err(response) => return response,
    };
    let done = match shown.done.as_deref() {
        Some("confirmed") => Some("已确认，请按时前来体检。"),
        Some("moved") => Some("已改约，新的预约短信稍后发到您的手机。"),
        Some("opted_out") => Some("已退订，今后不再给您发送体检消息。"),
        _ => None,
    };
    render(&state, &link, &code, StatusCode::OK, done, None).await
}

async fn render(
    state: &AppState,
    link: &Link,
    code: &str,
    status: StatusCode,
    done: Option<&str>,
    problem: Option<String>,
) -> Response {
    match links::page(&state.db, link).await {
        Ok(view) => page(
            status,
            "r/page.html",
            context! {
                view => minijinja::Value::from(minijinja::value::Serde(&view)),
                code,
                done,
                problem,
                time => state.settings.messaging.outbox.exam_time.clone(),
                hotline => hotline(state),
            },
        ),
        Err(error) => failed(state, &error),
    }
}

/// What an action ended as: back to the page (so a reload posts nothing again), or the page
/// with the reason it could not be done.
async fn after(
    state: &AppState,
    link: &Link,
    code: &str,
    result: Result<(), AppError>,
    done: &str,
) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/r/{code}?done={done}")).into_response(),
        Err(error) => {
            let (status, message) = error.status_and_message();
            if status.is_server_error() {
                return failed(state, &error);
            }
            render(state, link, code, status, None, Some(message)).await
        }
    }
}

/// The link of a posted form; forms sent from another site are refused.
async fn posted(
    state: &AppState,
    client: IpAddr,
    headers: &HeaderMap,
    code: &str,
) -> Result<Link, Response> {
    if !same_origin(headers) {
        return Err(super::pages::error_page(&AppError::Forbidden(
            "页面来源不明，请从短信中的链接重新打开".to_owned(),
        )));
    }
    resolve(state, client, code).await
}

/// `POST /r/{code}/confirm`.
pub async fn confirm(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    let link = match posted(&state, client, &headers, &code).await {
        Ok(link) => link,
        Err(response) => return response,
    };
    let result = crate::flows::replies::link_confirm(&state.db, &link).await;
    after(&state, &link, &code, result, "confirmed").await
}

#[derive(Deserialize)]
struct NewDay {
    day: NaiveDate,
}

/// `POST /r/{code}/reschedule` with the chosen `day`.
pub async fn reschedule(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let link = match posted(&state, client, &headers, &code).await {
        Ok(link) => link,
        Err(response) => return response,
    };
    let result = match serde_urlencoded::from_bytes::<NewDay>(&body) {
        Ok(form) => {
            crate::flows::replies::link_reschedule(
                &state.db,
                &link,
                form.day,
                &state.settings.messaging.outbox.reminders,
            )
            .await
        }
        Err(_) => Err(AppError::validation("invalid_day", "请选择新的体检日期")),
    };
    after(&state, &link, &code, result, "moved").await
}

/// `POST /r/{code}/opt-out`.
pub async fn opt_out(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    let link = match posted(&state, client, &headers, &code).await {
        Ok(link) => link,
        Err(response) => return response,
    };
    let result = crate::flows::replies::link_opt_out(&state.db, &link).await;
    after(&state, &link, &code, result, "opted_out").await
}
