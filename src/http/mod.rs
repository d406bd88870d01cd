//! The HTTP surface: every resource router, the OpenAPI document generated from them, and
//! the layers every request passes (request id, tracing, limits, error envelope).

mod appointments;
mod areas;
mod audit;
mod auth;
mod campaigns;
mod contact;
pub mod extract;
mod health;
mod institutions;
mod messaging;
mod middleware;
mod refusals;
mod reports;
mod residents;
mod users;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::REQUEST_ID_HEADER;
use crate::error::{AppError, AppResult};
use crate::startup::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "outreach",
        description = "全民健康体检 outreach service: areas, users, audit log, residents, campaigns, \
                       institutions, appointments and exams. Errors are \
                       `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "system", description = "health"),
        (name = "auth", description = "login and the signed-in user"),
        (name = "areas", description = "the statistical area tree"),
        (name = "users", description = "user accounts (office)"),
        (name = "audit", description = "the audit log (office, auditor)"),
        (name = "residents", description = "the resident registry and the migrant book"),
        (name = "campaigns", description = "the year's campaign, enrolment, progress and worklists"),
        (name = "institutions", description = "institutions, the areas they serve, capacity calendars"),
        (name = "appointments", description = "group bookings, reschedule, cancel, attendance"),
        (name = "contact", description = "contact attempts: calls, visits, delivered messages"),
        (name = "messaging", description = "messages and their states, waves, the outbox, tasks and replies"),
        (name = "exams", description = "exam records: at an institution, elsewhere, imported"),
        (name = "refusals", description = "refusal registration with signatures, review, the register, chain verification"),
        (name = "reports", description = "progress, time series, rankings, reach figures, exports and bulletins"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) const CSV: &str = "text/csv; charset=utf-8";
pub(crate) const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// The `format` of a list that can also be downloaded: `json` (default), `csv` or `xlsx`.
pub(crate) fn download_format(raw: Option<&str>) -> AppResult<&'static str> {
    match raw.unwrap_or("json") {
        "json" => Ok("json"),
        "csv" => Ok("csv"),
        "xlsx" => Ok("xlsx"),
        _ => Err(AppError::validation(
            "invalid_format",
            "format 可选 json、csv、xlsx",
        )),
    }
}

/// A file download of `bytes`.
pub(crate) fn download(bytes: Vec<u8>, content_type: &'static str, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// The API routes and the OpenAPI document describing them.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .merge(auth::router())
        .merge(areas::router())
        .merge(users::router())
        .merge(residents::router())
        .merge(campaigns::router())
        .merge(institutions::router())
        .merge(appointments::router())
        .merge(messaging::router())
        .merge(contact::router())
        .merge(refusals::router())
        .merge(reports::router())
        .merge(audit::router());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .nest("/api/v1", v1)
        .split_for_parts()
}

/// The whole application router with its layers.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    let openapi = Arc::new(openapi);
    let http = &state.settings.http;
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    api.merge(webhooks::router())
        .merge(crate::web::router())
        .route(
            "/api/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi) }
            }),
        )
        .fallback(middleware::not_found)
        // Innermost first: limits and panics, then the envelope for every error response that
        // is not one yet, then request ids and tracing around everything.
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(middleware::panic_response))
                // The upload endpoint streams up to `import.max_upload_bytes`; every other body is
                // held to `http.max_body_bytes` by `DefaultBodyLimit` in its extractor.
                .layer(RequestBodyLimitLayer::new(
                    http.max_body_bytes
                        .max(state.settings.import.max_upload_bytes as usize),
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(http.request_timeout_secs),
                ))
                .layer(DefaultBodyLimit::max(http.max_body_bytes)),
        )
        .layer(axum::middleware::map_response(middleware::error_envelope))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(middleware::make_span))
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .with_state(state)
}
