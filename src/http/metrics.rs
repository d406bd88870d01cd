//! `GET /metrics`: the Prometheus scrape, on the public listener when `metrics.token` is set
//! and on a listener of its own at `metrics.bind`. The outbox depth and the pool gauges are
//! read at scrape time; everything else is recorded where it happens (`telemetry::metrics`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{HttpSettings, Secret};
use crate::error::{AppError, AppResult};
use crate::outreach::outbox;
use crate::state::AppState;
use crate::telemetry::metrics;

/// The media type of Prometheus's text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples are folded in when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(30);

/// Gauges are process-wide: one scrape at a time refreshes them and renders what it read.
static SCRAPING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `/metrics` on the public listener: 404 unless `metrics.token` is set, then 401 without it.
pub async fn public_scrape(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let Some(token) = &state.settings.metrics.token else {
        return Err(AppError::NotFound("请求的接口不存在".to_owned()));
    };
    scrape(&state.db, Some(token), &headers).await
}

/// What the listener of its own serves with.
struct Apart {
    db: DatabaseConnection,
    token: Option<Secret>,
}

async fn apart_scrape(State(apart): State<Arc<Apart>>, headers: HeaderMap) -> AppResult<Response> {
    scrape(&apart.db, apart.token.as_ref(), &headers).await
}

async fn scrape(
    db: &DatabaseConnection,
    token: Option<&Secret>,
    headers: &HeaderMap,
) -> AppResult<Response> {
    if let Some(token) = token {
        check_bearer(token, headers)?;
    }
    if !metrics::installed() {
        return Err(AppError::NotFound("请求的接口不存在".to_owned()));
    }
    let _one_at_a_time = SCRAPING.lock().await;
    refresh(db).await;
    let text = metrics::render().unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response())
}

/// Refreshes the gauges read at scrape time. A failed read leaves the last value and is
/// logged; the rest of the scrape is still worth having.
async fn refresh(db: &DatabaseConnection) {
    match outbox::depth(db).await {
        Ok(depth) => {
            for (state, messages) in depth {
                metrics::outbox_depth(state.code(), messages);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the outbox for the metrics"),
    }
    if let Some(pool) = crate::db::pool_usage(db) {
        metrics::db_pool(pool.max, pool.open, pool.idle);
    }
}

/// `Authorization: Bearer <token>`, compared in constant time (over digests, so that the
/// length of the configured token does not show either).
fn check_bearer(token: &Secret, headers: &HeaderMap) -> AppResult<()> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, value)| value.trim())
        .unwrap_or_default();
    let matches =
        Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(token.expose().as_bytes()));
    if presented.is_empty() || !bool::from(matches) {
        return Err(AppError::Unauthorized("需要有效的指标访问令牌".to_owned()));
    }
    Ok(())
}

/// Whether the settings expose the metrics anywhere; only then is the recorder installed.
pub fn exposed(settings: &crate::config::MetricsSettings) -> bool {
    settings.bind.is_some() || settings.token.is_some()
}

/// Serves `/metrics` on `listener` (when given) and folds in histogram samples every little
/// while, until `shutdown`.
pub async fn run(
    listener: Option<TcpListener>,
    db: DatabaseConnection,
    token: Option<Secret>,
    http: HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let upkeep_shutdown = shutdown.clone();
    let upkeep = async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tokio::select! {
                () = upkeep_shutdown.cancelled() => break,
                _ = every.tick() => metrics::run_upkeep(),
            }
        }
    };
    let Some(listener) = listener else {
        upkeep.await;
        return Ok(());
    };
    let app = Router::new()
        .route("/metrics", get(apart_scrape))
        .fallback(super::middleware::not_found)
        .layer(axum::middleware::map_response(
            super::middleware::error_envelope,
        ))
        .with_state(Arc::new(Apart { db, token }));
    let serving = super::serve::serve(listener, app, &http, shutdown);
    let (served, ()) = tokio::join!(serving, upkeep);
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let token = Secret::new("scrape-token-0123456789");
        assert!(
            check_bearer(
                &token,
                &with_authorization("Bearer scrape-token-0123456789")
            )
            .is_ok()
        );
        assert!(
            check_bearer(
                &token,
                &with_authorization("bearer scrape-token-0123456789")
            )
            .is_ok()
        );
        assert!(
            check_bearer(&token, &with_authorization("Bearer scrape-token-012345678")).is_err()
        );
        assert!(
            check_bearer(&token, &with_authorization("Basic scrape-token-0123456789")).is_err()
        );
        assert!(check_bearer(&token, &HeaderMap::new()).is_err());
    }
}
