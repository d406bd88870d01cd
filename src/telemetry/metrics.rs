//! The service's metrics: every name and label set in one place, recorded through the
//! `metrics` facade into one process-wide Prometheus recorder, and rendered as text by
//! `GET /metrics` (`http::metrics`). Labels hold only bounded, non-personal values: route
//! templates, status codes, provider, state and job names — never a path, phone, ID number,
//! token or username.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::import::ImportSummary;

pub const HTTP_REQUESTS: &str = "outreach_http_requests_total";
pub const HTTP_DURATION: &str = "outreach_http_request_duration_seconds";
pub const OUTBOX_DEPTH: &str = "outreach_outbox_messages";
pub const DISPATCH_SENDS: &str = "outreach_dispatch_sends_total";
pub const DISPATCH_SEND_DURATION: &str = "outreach_dispatch_send_duration_seconds";
pub const DISPATCH_RATE_LIMIT_WAIT: &str = "outreach_dispatch_rate_limit_wait_seconds";
pub const RECEIPTS: &str = "outreach_receipts_total";
pub const SCHEDULER_RUNS: &str = "outreach_scheduler_runs_total";
pub const SCHEDULER_DURATION: &str = "outreach_scheduler_run_duration_seconds";
pub const DB_POOL_CONNECTIONS: &str = "outreach_db_pool_connections";
pub const DB_POOL_MAX: &str = "outreach_db_pool_max_connections";
pub const IMPORT_ROWS: &str = "outreach_import_rows_total";

/// The label of a request no route matched (the raw path is never a label).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of the latency histograms, in seconds: from a fast API answer to a slow
/// provider call or a long import.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that renders it. Until it
/// is installed, recording is a no-op, so commands that expose no metrics pay nothing.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if ::metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

/// Whether [`install`] has run (the metrics are exposed somewhere).
pub fn installed() -> bool {
    HANDLE.get().is_some()
}

/// The scrape text (Prometheus text exposition format), or `None` before [`install`].
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

/// Drains histogram samples nobody scraped, so that memory stays flat without a scraper.
pub fn run_upkeep() {
    if let Some(handle) = HANDLE.get() {
        handle.run_upkeep();
    }
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "time to answer an HTTP request (to the response head), by method, route template and status"
    );
    describe_gauge!(
        OUTBOX_DEPTH,
        "messages waiting in the outbox, by state (scheduled, queued, sending), read at scrape time"
    );
    describe_counter!(
        DISPATCH_SENDS,
        "provider calls by the dispatch workers, by provider and outcome (sent, transient, permanent, unknown)"
    );
    describe_histogram!(
        DISPATCH_SEND_DURATION,
        Unit::Seconds,
        "time of one provider call, by provider and outcome"
    );
    describe_histogram!(
        DISPATCH_RATE_LIMIT_WAIT,
        Unit::Seconds,
        "time a send waited for its provider's rate limit, by provider"
    );
    describe_counter!(
        RECEIPTS,
        "delivery receipts received, by provider, status and what they did to their message"
    );
    describe_counter!(
        SCHEDULER_RUNS,
        "scheduled job firings, by job and outcome (succeeded, failed, claimed_elsewhere)"
    );
    describe_histogram!(
        SCHEDULER_DURATION,
        Unit::Seconds,
        "time of a scheduled job run, by job and outcome"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "database pool connections by state (idle, in_use), read at scrape time"
    );
    describe_gauge!(DB_POOL_MAX, "the database pool's configured maximum size");
    describe_counter!(
        IMPORT_ROWS,
        "rows of committed imports, by kind and result (imported, updated, unchanged, rejected)"
    );
}

/// A request's method as a label: the standard ones by name, anything else as `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// One answered HTTP request. `route` is the matched route template or [`UNMATCHED_ROUTE`].
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("method", method_label(method).to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
}

/// The outbox's waiting messages in one state.
pub fn outbox_depth(state: &'static str, messages: i64) {
    gauge!(OUTBOX_DEPTH, "state" => state).set(messages as f64);
}

/// One provider call of a dispatch worker and how it ended (`sent`, or the kind of error).
pub fn provider_send(provider: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(DISPATCH_SENDS, "provider" => provider, "outcome" => outcome).increment(1);
    histogram!(DISPATCH_SEND_DURATION, "provider" => provider, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// How long a send waited for its provider's rate limit.
pub fn rate_limit_wait(provider: &str, waited: Duration) {
    histogram!(DISPATCH_RATE_LIMIT_WAIT, "provider" => provider.to_owned())
        .record(waited.as_secs_f64());
}

/// One delivery receipt: its status (`accepted`, `delivered`, `failed`) and what it did.
pub fn receipt(provider: &'static str, status: &'static str, outcome: &'static str) {
    counter!(RECEIPTS, "provider" => provider, "status" => status, "outcome" => outcome)
        .increment(1);
}

/// One scheduled job firing (`succeeded`, `failed`, `claimed_elsewhere`).
pub fn scheduler_run(job: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(SCHEDULER_RUNS, "job" => job, "outcome" => outcome).increment(1);
    histogram!(SCHEDULER_DURATION, "job" => job, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// The database pool as it is now.
pub fn db_pool(max: u32, open: u32, idle: usize) {
    let idle = idle.min(open as usize) as f64;
    gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set(f64::from(open) - idle);
    gauge!(DB_POOL_MAX).set(f64::from(max));
}

/// The rows of a committed import of `kind` (`residents`, `areas`, `calendar`, …).
pub fn import_rows(kind: &'static str, summary: &ImportSummary) {
    import_rows_by_result(
        kind,
        &[
            ("imported", summary.imported),
            ("updated", summary.updated),
            ("unchanged", summary.unchanged),
            ("rejected", summary.rejected),
        ],
    );
}

/// The rows of a committed import of `kind` whose results are its own (`exams`: imported,
/// rejected; `tags`: added, removed, …).
pub fn import_rows_by_result(kind: &'static str, rows: &[(&'static str, u64)]) {
    for &(result, n) in rows {
        counter!(IMPORT_ROWS, "kind" => kind, "result" => result).increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PROPFIND"), "other");
    }
}
