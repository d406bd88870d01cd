//! The HTTP surface: every resource router, the OpenAPI document generated from them, and
//! the layers every request passes (request id, tracing, limits, error envelope).

mod appointments;
mod areas;
mod audit;
mod auth;
mod campaigns;
mod contact;
pub mod extract;
pub mod guard;
mod health;
mod institutions;
mod messaging;
pub mod metrics;
mod middleware;
mod refusals;
mod reports;
mod residents;
pub mod serve;
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

use crate::error::{AppError, AppResult};
use crate::http::guard::REQUEST_ID_HEADER;
use crate::state::AppState;

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

/// Adds the error answers an operation can give where it does not describe them itself, all
/// with the error envelope: 400 (a path, query or body that cannot be read), 401 and 403
/// (operations that need a token), 404 (operations on one record), 415 (JSON bodies) and 422
/// (query parameters or bodies the service refuses). Applied to the merged document, after
/// every router has added its operations.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let parameters = operation.parameters.as_deref().unwrap_or_default();
                let query = parameters.iter().any(
                    |p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)),
                );
                let (body, json_body) = match &operation.request_body {
                    Some(RefOr::T(body)) => (
                        true,
                        body.content
                            .keys()
                            .any(|k| k.starts_with("application/json")),
                    ),
                    Some(RefOr::Ref(_)) => (true, true),
                    None => (false, false),
                };
                let record = path.contains('{');
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                };
                if record || query || body {
                    add("400", "a path, query or body that cannot be read");
                }
                if secured {
                    add("401", "no token, or an expired or revoked one");
                    add("403", "the caller's role or scope does not allow it");
                }
                if record {
                    add("404", "no such record in the caller's scope");
                }
                if json_body {
                    add("415", "the body is not sent as application/json");
                }
                if query || body {
                    add("422", "a value the service refuses, with the reason");
                }
            }
        }
    }
}

/// Schema names that two routers describe differently: two types sharing a name, of which
/// the merged document would keep only one. Empty when every name means one type.
pub fn schema_name_clashes() -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let routers = [
        health::router(),
        auth::router(),
        areas::router(),
        users::router(),
        residents::router(),
        campaigns::router(),
        institutions::router(),
        appointments::router(),
        messaging::router(),
        contact::router(),
        refusals::router(),
        reports::router(),
        audit::router(),
    ];
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for router in routers {
        let openapi = router.into_openapi();
        for (name, schema) in openapi.components.into_iter().flat_map(|c| c.schemas) {
            let text = serde_json::to_string(&schema).unwrap_or_default();
            seen.entry(name).or_default().insert(text);
        }
    }
    seen.into_iter()
        .filter(|(_, shapes)| shapes.len() > 1)
        .map(|(name, _)| name)
        .collect()
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
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .nest("/api/v1", v1)
        .split_for_parts();
    ErrorResponses.modify(&mut openapi);
    (router, openapi)
}

/// The whole application router with its layers: the API, the providers' callbacks, and
/// `pages` (the web pages, which stand beside the API rather than under it).
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let (api, openapi) = api();
    let openapi = Arc::new(openapi);
    let http = &state.settings.http;
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    api.merge(webhooks::router())
        .merge(pages)
        .route(
            "/api/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi) }
            }),
        )
        .route("/metrics", get(metrics::public_scrape))
        .fallback(middleware::not_found)
        // Innermost first: limits and panics, then the envelope for every error response that
        // is not one yet, then request ids and tracing, and the request metrics around everything.
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
                .layer(axum::middleware::map_request(middleware::bound_request_id))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(middleware::make_span))
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .layer(axum::middleware::from_fn(middleware::measure))
        .with_state(state)
}
