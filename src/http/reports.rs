//! Reports over HTTP: progress for any slice, time series, rankings, reach figures — as JSON
//! or XLSX / CSV downloads —, a refresh on demand, and the bulletins' run history.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use crate::error::{AppError, AppResult, ErrorEnvelope};
use crate::http::guard::FieldAndAudit;
use crate::http::guard::{Auth, OfficeOnly, ReadAudit};
use crate::report::bulletin::{self, Bulletin, Kind};
use crate::report::export::{
    about_progress, as_of_text, contacts_tables, progress_tables, rankings_table, series_table,
    workbook,
};
use crate::report::{
    self, Contacts, ContactsQuery, Progress, RankingQuery, Rankings, Refreshed, Series,
    SeriesQuery, SliceQuery,
};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(progress_report))
        .routes(routes!(series_report))
        .routes(routes!(rankings_report))
        .routes(routes!(contacts_report))
        .routes(routes!(refresh_reports))
        .routes(routes!(bulletin_history, send_bulletin))
}

/// A CSV of the main table or an XLSX of every table, named `stem.csv` / `stem.xlsx`.
fn file(
    format: &str,
    stem: &str,
    about: &[(&str, String)],
    tables: &[report::export::Table],
) -> AppResult<Response> {
    Ok(match format {
        "csv" => super::download(
            tables
                .first()
                .map(|t| t.csv())
                .transpose()?
                .unwrap_or_default(),
            super::CSV,
            &format!("{stem}.csv"),
        ),
        _ => super::download(
            workbook(about, tables)?,
            super::XLSX,
            &format!("{stem}.xlsx"),
        ),
    })
}

/// Progress of a campaign for a slice in the caller's scope: target, notified, reached,
/// appointed, examined (by home village and by examining place), refused, exempt and the
/// reach, exam and refusal rates against each group's target; the migrant book's figures
/// apart; the campaign's key-group targets. `to` gives the figures at the end of a closed
/// day, `from` … `to` what happened in between.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/reports/progress",
    tag = "reports",
    security(("bearer" = [])),
    params(("id" = i32, Path), SliceQuery),
    responses(
        (status = 200, body = Progress, description = "JSON, or a CSV / XLSX download"),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn progress_report(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
    Query(q): Query<SliceQuery>,
) -> AppResult<Response> {
    let format = super::download_format(q.format.as_deref())?;
    let progress = report::progress(&state.db, &actor, id, &q).await?;
    if format == "json" {
        return Ok(Json(progress).into_response());
    }
    file(
        format,
        &format!("progress-{id}"),
        &about_progress(&progress),
        &progress_tables(&progress),
    )
}

/// Cumulative progress per day (每日数据) — or at each week's or month's end — for the last
/// `days` days, for the area as one line or per township / village; today is live.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/reports/series",
    tag = "reports",
    security(("bearer" = [])),
    params(("id" = i32, Path), SeriesQuery),
    responses(
        (status = 200, body = Series, description = "JSON, or a CSV / XLSX download"),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn series_report(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
    Query(q): Query<SeriesQuery>,
) -> AppResult<Response> {
    let format = super::download_format(q.format.as_deref())?;
    let series = report::series(&state.db, &actor, id, &q).await?;
    if format == "json" {
        return Ok(Json(series).into_response());
    }
    let about = [
        (
            "地区",
            series
                .area_code
                .clone()
                .unwrap_or_else(|| "全部".to_owned()),
        ),
        ("间隔", series.interval.clone()),
    ];
    file(
        format,
        &format!("series-{id}"),
        &about,
        &[series_table(&series)],
    )
}

/// Townships (or the villages of `township`) ranked by exam rate and by reach rate, ties
/// sharing a rank, the bottom three flagged, with the change since the previous period.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/reports/rankings",
    tag = "reports",
    security(("bearer" = [])),
    params(("id" = i32, Path), RankingQuery),
    responses(
        (status = 200, body = Rankings, description = "JSON, or a CSV / XLSX download"),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn rankings_report(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
    Query(q): Query<RankingQuery>,
) -> AppResult<Response> {
    let format = super::download_format(q.format.as_deref())?;
    let rankings = report::rankings(&state.db, &actor, id, &q).await?;
    if format == "json" {
        return Ok(Json(rankings).into_response());
    }
    let about = [
        ("数据截至", as_of_text(&rankings.as_of)),
        ("对比", format!("{} 日终", rankings.previous_day)),
    ];
    file(
        format,
        &format!("rankings-{id}"),
        &about,
        &[rankings_table(&rankings)],
    )
}

/// Reach figures: messages sent, delivered and failed per channel and provider with the
/// delivery rate, the cadres' calls, visits and letters, and replies per keyword.
#[utoipa::path(
    get,
    path = "/campaigns/{id}/reports/contacts",
    tag = "reports",
    security(("bearer" = [])),
    params(("id" = i32, Path), ContactsQuery),
    responses(
        (status = 200, body = Contacts, description = "JSON, or a CSV / XLSX download"),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn contacts_report(
    State(state): State<AppState>,
    actor: Auth<FieldAndAudit>,
    Path(id): Path<i32>,
    Query(q): Query<ContactsQuery>,
) -> AppResult<Response> {
    let format = super::download_format(q.format.as_deref())?;
    let contacts = report::contacts(&state.db, &actor, id, &q).await?;
    if format == "json" {
        return Ok(Json(contacts).into_response());
    }
    let about = [
        (
            "数据截至",
            contacts
                .refreshed_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        ),
        ("口径", contacts.note.clone()),
    ];
    file(
        format,
        &format!("contacts-{id}"),
        &about,
        &contacts_tables(&contacts),
    )
}

/// Rebuilds the campaign's report figures now (office) and computes closed days not kept
/// yet (as many as `reports.backfill_days_per_run`).
#[utoipa::path(
    post,
    path = "/campaigns/{id}/reports/refresh",
    tag = "reports",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = Refreshed), (status = 404, body = ErrorEnvelope))
)]
async fn refresh_reports(
    State(state): State<AppState>,
    _actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
) -> AppResult<Json<Refreshed>> {
    Ok(Json(
        crate::flows::reports::refresh_now(
            &state.db,
            id,
            state.settings.reports.backfill_days_per_run,
        )
        .await?,
    ))
}

/// The run history of the campaign's bulletins, newest first (office, auditor).
#[utoipa::path(
    get,
    path = "/campaigns/{id}/bulletins",
    tag = "reports",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    responses((status = 200, body = Vec<Bulletin>), (status = 404, body = ErrorEnvelope))
)]
async fn bulletin_history(
    State(state): State<AppState>,
    _actor: Auth<ReadAudit>,
    Path(id): Path<i32>,
) -> AppResult<Json<Vec<Bulletin>>> {
    Ok(Json(bulletin::history(&state.db, id).await?))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct SendBulletin {
    /// daily, weekly or monthly: the last closed day, week or month.
    pub kind: String,
    /// Send again although it went out before.
    #[serde(default)]
    pub resend: bool,
}

/// Sends the bulletin of the last closed period now (office); 409 when it went out already
/// (unless `resend`) or no recipients / mail server are configured.
#[utoipa::path(
    post,
    path = "/campaigns/{id}/bulletins",
    tag = "reports",
    security(("bearer" = [])),
    params(("id" = i32, Path)),
    request_body = SendBulletin,
    responses(
        (status = 201, body = Bulletin, description = "sent, or failed with the error"),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn send_bulletin(
    State(state): State<AppState>,
    actor: Auth<OfficeOnly>,
    Path(id): Path<i32>,
    Json(body): Json<SendBulletin>,
) -> AppResult<(StatusCode, Json<Bulletin>)> {
    let kind = Kind::parse(&body.kind)
        .ok_or_else(|| AppError::validation("invalid_kind", "kind 可选 daily、weekly、monthly"))?;
    let sent =
        bulletin::send_now(&state.db, &state.settings, &actor, id, kind, body.resend).await?;
    Ok((StatusCode::CREATED, Json(sent)))
}
