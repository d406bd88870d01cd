//! Uploads for the office: the resident register with its progress and rejected rows, and
//! key-group tags. A page's script sends the file as the request body (like the API's
//! upload endpoints) with the session's anti-forgery token in its header; the register's
//! answer streams as lines of JSON — rows read so far, then the report — so the page's bar
//! follows the server's work and not only the upload.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::pages::{PageError, ser};
use super::render::{page, templates};
use super::{Form, Session, same_origin};
use crate::error::AppError;
use crate::flows;
use crate::http::guard::{CSRF_HEADER, OfficeOnly, Policy};
use crate::import::RejectedRow;
use crate::registry::{KeyGroup, Progress, ReadProgress, ResidentImport};
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates![
    "app/imports.html",
    "app/import_report.html",
    "app/import_tags_report.html",
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/imports", get(imports))
        .route("/app/imports/residents", post(import_residents))
        .route("/app/imports/tags", post(import_tags))
        .route("/app/imports/rejected.csv", post(rejected_csv))
}

/// Rejected rows a download may carry: as many as a report lists.
const DOWNLOAD_ROWS: usize = 1000;
/// Columns of a rejected row a download may carry.
const DOWNLOAD_COLUMNS: usize = 200;

/// `GET /app/imports`: the resident register upload (with the columns it reads) and the
/// key-group tags upload.
pub async fn imports(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
) -> Result<Response, PageError> {
    let groups: Vec<&str> = KeyGroup::ALL.iter().map(|g| g.label()).collect();
    Ok(page(
        StatusCode::OK,
        "app/imports.html",
        context! {
            section => "imports",
            max_upload_mb => state.settings.import.max_upload_bytes / (1024 * 1024),
            groups => groups.join("、"),
            ..session.frame()
        },
    ))
}

/// A change a page's script sends with the file as its body: from this site, with the
/// session's anti-forgery token in `X-CSRF-Token` (a form carries it in `_csrf` instead).
pub(super) fn from_script<P: Policy>(
    headers: &HeaderMap,
    session: &Session<P>,
) -> Result<(), AppError> {
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let matches = bool::from(subtle::ConstantTimeEq::ct_eq(
        sent.as_bytes(),
        session.csrf.as_bytes(),
    ));
    if same_origin(headers) && matches {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "页面已过期或来源不明，请刷新后重试".to_owned(),
        ))
    }
}

/// The uploaded body in a temporary file, as the API's upload endpoints take it; an empty
/// one is no file at all.
async fn receive(state: &AppState, body: Body) -> Result<tempfile::NamedTempFile, AppError> {
    let file = crate::http::extract::receive_file(state, body).await?;
    let empty = file
        .as_file()
        .metadata()
        .map_err(|e| anyhow::anyhow!("temp file: {e}"))?
        .len()
        == 0;
    if empty {
        return Err(AppError::validation("no_rows", "请选择要上传的文件"));
    }
    Ok(file)
}

/// A rendered page or fragment as text (for a line of the import's stream).
async fn html_of(response: Response) -> String {
    match axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// One line of the register upload's answer.
#[derive(Serialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
enum Line {
    /// The file is being read (and written as it is read).
    Reading {
        rows: u64,
        bytes: u64,
        total: u64,
        /// Every row has been read; the last batches are being written.
        finished: bool,
    },
    /// The import is over: the report, or why nothing was written.
    Done { ok: bool, status: u16, html: String },
}

impl Line {
    fn bytes(&self) -> axum::body::Bytes {
        let mut text = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        text.push('\n');
        text.into()
    }
}

/// `POST /app/imports/residents` (the file as the body, from the page's script): the same
/// import as the API's upload, for the office's scope, answered as lines of JSON — the rows
/// read so far while the import runs, then the rendered report. The import runs to its end
/// (all or nothing) even if the browser goes away meanwhile.
pub async fn import_residents(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PageError> {
    from_script(&headers, &session)?;
    let file = receive(&state, body).await?;
    let (tell, told) = watch::channel(ReadProgress::default());
    let progress = Progress::Report(Arc::new(move |read| {
        tell.send_replace(read);
    }));
    let actor = session.actor.clone();
    let job = tokio::spawn(async move {
        let result = flows::registry::import_residents(
            &state.db,
            state.privacy.clone(),
            &actor,
            file.path(),
            None,
            progress,
        )
        .await;
        drop(file);
        result
    });
    let csrf = session.csrf.clone();
    let lines = futures_util::stream::unfold(Some((told, job, true)), move |running| {
        let csrf = csrf.clone();
        async move {
            let (mut told, mut job, mut open) = running?;
            loop {
                tokio::select! {
                    biased;
                    changed = told.changed(), if open => {
                        if changed.is_err() {
                            open = false;
                            continue;
                        }
                        let read = *told.borrow_and_update();
                        let line = Line::Reading {
                            rows: read.rows,
                            bytes: read.bytes,
                            total: read.total_bytes,
                            finished: read.finished,
                        };
                        return Some((Ok::<_, Infallible>(line.bytes()), Some((told, job, open))));
                    }
                    joined = &mut job => {
                        let line = match joined {
                            Ok(Ok(result)) => Line::Done {
                                ok: true,
                                status: 200,
                                html: html_of(report(&result, &csrf)).await,
                            },
                            Ok(Err(error)) => {
                                let (status, _) = error.status_and_message();
                                Line::Done {
                                    ok: false,
                                    status: status.as_u16(),
                                    html: html_of(failed("app/import_report.html", &error)).await,
                                }
                            }
                            Err(error) => {
                                tracing::error!(error = %error, "the resident import stopped");
                                let error = AppError::from(anyhow::anyhow!("the import stopped"));
                                Line::Done {
                                    ok: false,
                                    status: 500,
                                    html: html_of(failed("app/import_report.html", &error)).await,
                                }
                            }
                        };
                        return Some((Ok(line.bytes()), None));
                    }
                }
            }
        }
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        Body::from_stream(lines),
    )
        .into_response())
}

/// A rejected row as a report shows it and its download carries it back.
#[derive(Serialize, Deserialize)]
struct ShownRow {
    line: u64,
    values: Vec<String>,
    code: String,
    reason: String,
}

impl From<RejectedRow> for ShownRow {
    fn from(row: RejectedRow) -> Self {
        Self {
            line: row.line,
            values: row.values,
            code: row.code,
            reason: row.reason,
        }
    }
}

/// What the download form carries: the header and the rejected rows as the report shows
/// them (numbers masked).
#[derive(Serialize, Deserialize)]
struct Rejected {
    header: Vec<String>,
    rows: Vec<ShownRow>,
}

/// The register upload's report: the counts, the columns not read, the rejected rows with
/// their reasons (ID and phone numbers masked, as the API answers them) and their download.
fn report(result: &ResidentImport, csrf: &str) -> Response {
    let rows: Vec<ShownRow> = result
        .rejected_rows_for_response()
        .into_iter()
        .map(ShownRow::from)
        .collect();
    let listed = rows.len() as u64;
    let download = Rejected {
        header: result.header.clone(),
        rows,
    };
    let payload = serde_json::to_string(&download).unwrap_or_default();
    page(
        StatusCode::OK,
        "app/import_report.html",
        context! {
            summary => ser(&result.summary),
            unknown => result.unknown_columns.clone(),
            header => download.header,
            rows => ser(&download.rows),
            more => result.summary.rejected > listed,
            payload,
            csrf,
        },
    )
}

/// A report fragment saying why nothing was imported, with the status the API answers.
fn failed(template: &str, error: &AppError) -> Response {
    let (status, message) = error.status_and_message();
    page(status, template, context! { error => message })
}

/// `POST /app/imports/tags` (the file as the body, from the page's script): key-group tags
/// loaded as by the API's upload, answered with the report fragment.
pub async fn import_tags(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PageError> {
    from_script(&headers, &session)?;
    const REPORT: &str = "app/import_tags_report.html";
    let file = match receive(&state, body).await {
        Ok(file) => file,
        Err(error) => return Ok(failed(REPORT, &error)),
    };
    let result = match flows::registry::import_tags(
        &state.db,
        state.privacy.clone(),
        &session.actor,
        file.path(),
    )
    .await
    {
        Ok(result) => result,
        Err(error) => return Ok(failed(REPORT, &error)),
    };
    let rows: Vec<ShownRow> = result
        .rejected_rows_for_response()
        .into_iter()
        .map(ShownRow::from)
        .collect();
    Ok(page(
        StatusCode::OK,
        REPORT,
        context! {
            summary => ser(&result.summary),
            unknown => result.unknown_columns,
            header => result.headers,
            more => result.summary.rejected > rows.len() as u64,
            rows => ser(&rows),
        },
    ))
}

#[derive(Deserialize)]
pub struct RejectedForm {
    rows: String,
}

/// `POST /app/imports/rejected.csv`: the rejected rows a report lists, as a CSV file in the
/// layout of the command line's `FILE.rejected.csv` (line, the file's columns, reason),
/// numbers masked as the report shows them. The page sends back what it shows, so nothing of
/// an upload is kept on the server.
pub async fn rejected_csv(
    _session: Session<OfficeOnly>,
    Form(form): Form<RejectedForm>,
) -> Result<Response, PageError> {
    let bad = || AppError::validation("invalid_rows", "下载内容无效，请重新导入后再下载");
    let rejected: Rejected = serde_json::from_str(&form.rows).map_err(|_| bad())?;
    if rejected.rows.len() > DOWNLOAD_ROWS
        || rejected.header.len() > DOWNLOAD_COLUMNS
        || rejected
            .rows
            .iter()
            .any(|r| r.values.len() > DOWNLOAD_COLUMNS)
    {
        return Err(bad().into());
    }
    let rows: Vec<RejectedRow> = rejected
        .rows
        .into_iter()
        .map(|r| RejectedRow::new(r.line, r.values, &r.code, r.reason))
        .collect();
    let written = tempfile::tempdir()
        .and_then(|dir| {
            let path = crate::import::write_rejected_csv(
                &dir.path().join("upload"),
                &rejected.header,
                &rows,
            )?;
            std::fs::read(path)
        })
        .map_err(|e| AppError::from(anyhow::anyhow!("writing the rejected rows: {e}")))?;
    Ok(crate::http::download(
        written,
        "text/csv; charset=utf-8",
        "rejected-rows.csv",
    ))
}
