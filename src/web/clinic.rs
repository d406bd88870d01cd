//! The clinic's pages (institution role): today's and tomorrow's appointments by village
//! group, attendance, exams for walk-ins, an exam CSV upload. Each change is the API's:
//! `mark_attendance` (came, or a no-show), `record_exam` (an exam done here, for a booked
//! resident or a walk-in found by ID number) and `import_exams`, with the same policy; the
//! appointments listed are those the API lists for the user, i.e. their own institution's.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::imports::from_script;
use super::pages::{Nothing, PageError, current_campaign, error_page, ser};
use super::render::{page, templates};
use super::{Form, Session};
use crate::appointment::{self, AppointmentFilter, AppointmentView, Attendance};
use crate::auth::Actor;
use crate::campaign::Campaign;
use crate::error::AppError;
use crate::exam::InstitutionExam;
use crate::http::guard::{ManageInstitution, Policy};
use crate::registry::{self, ResidentFilter};
use crate::state::AppState;
use crate::{flows, institution};

pub(super) const TEMPLATES: &[(&str, &str)] =
    templates!["app/clinic.html", "app/clinic_exam_report.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/clinic", get(clinic))
        .route("/app/clinic/appointments/{id}/attended", post(attended))
        .route("/app/clinic/appointments/{id}/no-show", post(no_show))
        .route("/app/clinic/appointments/{id}/exam", post(examined))
        .route("/app/clinic/walk-in", post(walk_in))
        .route("/app/clinic/exams/import", post(import_exams))
}

/// Pages of appointments read for one day (500 each): far above any institution's day.
const MAX_PAGES: usize = 20;

/// What the page says after a change, by the code its address carries.
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "attended" => "已登记到检，体检记录已写入",
        "examined" => "已登记体检",
        "no_show" => "已登记爽约，居民会收到补约提醒",
        "walk_in" => "已登记体检",
        _ => return None,
    })
}

/// One day's appointments the caller may see (their institution's), all pages of them.
async fn appointments_on(
    state: &AppState,
    actor: &Actor,
    campaign: &Campaign,
    day: NaiveDate,
) -> Result<Vec<AppointmentView>, AppError> {
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let page = appointment::list(
            &state.db,
            actor,
            campaign.id(),
            AppointmentFilter {
                day: Some(day),
                limit: Some(500),
                after,
                ..Default::default()
            },
        )
        .await?;
        all.extend(page.appointments);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(all)
}

#[derive(Serialize)]
struct Row {
    id: i32,
    resident_id: i32,
    name: String,
    id_number: String,
    booking_ref: String,
    status: String,
    status_label: &'static str,
    booked: bool,
}

/// A day's appointments grouped by village, each village's group bookings named.
async fn day_groups(
    state: &AppState,
    actor: &Actor,
    campaign: &Campaign,
    day: NaiveDate,
    villages: &std::collections::HashMap<String, String>,
) -> Result<minijinja::Value, AppError> {
    let listed = appointments_on(state, actor, campaign, day).await?;
    let mut by_village: BTreeMap<String, Vec<AppointmentView>> = BTreeMap::new();
    for a in listed.into_iter().filter(|a| a.status != "cancelled") {
        by_village
            .entry(a.village_code.clone())
            .or_default()
            .push(a);
    }
    let count = |status: &str| -> usize {
        by_village
            .values()
            .flatten()
            .filter(|a| a.status == status)
            .count()
    };
    let totals = context! {
        all => by_village.values().map(Vec::len).sum::<usize>(),
        booked => count("booked"),
        attended => count("attended"),
        no_show => count("no_show"),
    };
    let groups: Vec<_> = by_village
        .into_iter()
        .map(|(code, mut list)| {
            list.sort_by(|a, b| {
                (&a.booking_ref, &a.resident_name, a.id).cmp(&(&b.booking_ref, &b.resident_name, b.id))
            });
            let mut bookings: Vec<(String, usize)> = Vec::new();
            for a in &list {
                match bookings.iter_mut().find(|(r, _)| *r == a.booking_ref) {
                    Some((_, n)) => *n += 1,
                    None => bookings.push((a.booking_ref.clone(), 1)),
                }
            }
            let rows: Vec<Row> = list
                .into_iter()
                .map(|a| Row {
                    status_label: appointment::status_label(&a.status),
                    booked: a.status == "booked",
                    id: a.id,
                    resident_id: a.resident_id,
                    name: a.resident_name,
                    id_number: a.id_number,
                    booking_ref: a.booking_ref,
                    status: a.status,
                })
                .collect();
            context! {
                village => villages.get(&code).cloned().unwrap_or_else(|| code.clone()),
                code,
                bookings => bookings
                    .into_iter()
                    .map(|(r, n)| context! { short => r.chars().take(8).collect::<String>(), booking_ref => r, n })
                    .collect::<Vec<_>>(),
                rows => ser(&rows),
            }
        })
        .collect();
    Ok(context! {
        date => day.to_string(),
        label => format!("{}（周{}）", crate::time::month_day(day), crate::time::weekday(day)),
        groups,
        totals,
    })
}

/// What the clinic page shows besides its lists: a notice after a change, or why a change
/// was refused, and the walk-in form's input.
#[derive(Default)]
struct Said {
    notice: Option<String>,
    error: Option<String>,
    walk_in_error: Option<String>,
    walk_in_id: String,
}

/// The clinic page: the institution, today's and tomorrow's appointments by village, the
/// walk-in form and the exam upload.
async fn clinic_page<P: Policy>(
    state: &AppState,
    session: &Session<P>,
    status: StatusCode,
    said: Said,
) -> Result<Response, AppError> {
    let actor = &session.actor;
    let Some(campaign) = current_campaign(state).await? else {
        return Ok(page(
            status,
            "app/clinic.html",
            context! { section => "clinic", ..session.frame() },
        ));
    };
    let place = match actor.institution_id {
        Some(id) => Some(institution::find(&state.db, id).await?),
        None => None,
    };
    let villages = registry::village_names(&state.db).await?;
    let today = campaign.today();
    let tomorrow = today.succ_opt().unwrap_or(today);
    let days = vec![
        context! { today => true, ..day_groups(state, actor, &campaign, today, &villages).await? },
        context! { today => false, ..day_groups(state, actor, &campaign, tomorrow, &villages).await? },
    ];
    Ok(page(
        status,
        "app/clinic.html",
        context! {
            section => "clinic",
            campaign => context! { id => campaign.id(), name => campaign.model.name.clone() },
            institution => place.map(|p| context! { name => p.name, code => p.code }),
            days,
            today => today.to_string(),
            notice => said.notice,
            error => said.error,
            walk_in_error => said.walk_in_error,
            walk_in_id => said.walk_in_id,
            ..session.frame()
        },
    ))
}

/// `/app/` for clinic staff: the institution's appointments.
pub(super) async fn home(state: AppState, session: super::Session) -> Response {
    match clinic_page(&state, &session, StatusCode::OK, Said::default()).await {
        Ok(response) => response,
        Err(error) => error_page(&error),
    }
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
    resident: Option<i32>,
}

/// `GET /app/clinic[?done=…]`: the clinic page again after a change, saying what was done.
pub async fn clinic(
    State(state): State<AppState>,
    session: Session<ManageInstitution>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let mut said = Said {
        notice: done.done.as_deref().and_then(notice).map(str::to_owned),
        ..Default::default()
    };
    if let (Some(id), Some(text)) = (done.resident, said.notice.as_mut()) {
        // Whom the walk-in's exam was recorded for, as the clinic may see them.
        if let Ok(found) =
            flows::registry::detail(&state.db, &state.privacy, &session.actor, id, false).await
        {
            *text = format!("{text}：{}（{}）", found.name, found.id_number);
        }
    }
    Ok(clinic_page(&state, &session, StatusCode::OK, said).await?)
}

/// After a change: back to the clinic page saying so, or the page again with why it was
/// refused (a server failure is the error page).
async fn after_change(
    state: &AppState,
    session: &Session<ManageInstitution>,
    result: Result<String, AppError>,
) -> Result<Response, PageError> {
    match result {
        Ok(to) => Ok(Redirect::to(&to).into_response()),
        Err(error) => {
            let (status, message) = error.status_and_message();
            if status.is_server_error() {
                return Err(error.into());
            }
            let said = Said {
                error: Some(message),
                ..Default::default()
            };
            Ok(clinic_page(state, session, status, said).await?)
        }
    }
}

/// Marks attendance as the API's `mark_attendance` does.
async fn mark(
    state: &AppState,
    actor: &Actor,
    id: i32,
    attended: bool,
) -> Result<String, AppError> {
    flows::booking::mark_attendance(
        &state.db,
        actor,
        id,
        Attendance { attended },
        &state.settings.messaging.outbox.reminders,
    )
    .await?;
    let done = if attended { "attended" } else { "no_show" };
    Ok(format!("/app/clinic?done={done}#appointment-{id}"))
}

/// `POST /app/clinic/appointments/{id}/attended`: the resident came and was examined (the
/// exam record is written, as the API's `mark_attendance` with `attended: true`).
pub async fn attended(
    State(state): State<AppState>,
    session: Session<ManageInstitution>,
    Path(id): Path<i32>,
    Form(Nothing {}): Form<Nothing>,
) -> Result<Response, PageError> {
    let result = mark(&state, &session.actor, id, true).await;
    after_change(&state, &session, result).await
}

/// `POST /app/clinic/appointments/{id}/no-show`: the resident did not come (the API's
/// `mark_attendance` with `attended: false`; the village gets the follow-up).
pub async fn no_show(
    State(state): State<AppState>,
    session: Session<ManageInstitution>,
    Path(id): Path<i32>,
    Form(Nothing {}): Form<Nothing>,
) -> Result<Response, PageError> {
    let result = mark(&state, &session.actor, id, false).await;
    after_change(&state, &session, result).await
}

/// Records today's exam of a resident at the institution, as the API's `record_exam`.
async fn record_exam(
    state: &AppState,
    actor: &Actor,
    campaign: &Campaign,
    resident_id: i32,
    institution_id: Option<i32>,
    examined_on: NaiveDate,
) -> Result<(), AppError> {
    flows::exams::record_at_institution(
        &state.db,
        actor,
        campaign.id(),
        InstitutionExam {
            resident_id,
            examined_on,
            institution_id,
        },
    )
    .await?;
    Ok(())
}

/// The open campaign the clinic works in.
async fn open_campaign(state: &AppState) -> Result<Campaign, AppError> {
    current_campaign(state)
        .await?
        .ok_or_else(|| AppError::NotFound("当前没有进行中的体检工作".to_owned()))
}

/// `POST /app/clinic/appointments/{id}/exam`: an exam done here today for a booked
/// resident (the API's `record_exam`; their appointment — today's, or a later day's when they
/// came early — is closed as attended).
pub async fn examined(
    State(state): State<AppState>,
    session: Session<ManageInstitution>,
    Path(id): Path<i32>,
    Form(Nothing {}): Form<Nothing>,
) -> Result<Response, PageError> {
    let result = async {
        let campaign = open_campaign(&state).await?;
        let booked = appointment::get(&state.db, &session.actor, id).await?;
        record_exam(
            &state,
            &session.actor,
            &campaign,
            booked.resident_id,
            Some(booked.institution_id),
            campaign.today(),
        )
        .await?;
        Ok(format!("/app/clinic?done=examined#appointment-{id}"))
    }
    .await;
    after_change(&state, &session, result).await
}

#[derive(Deserialize)]
pub struct WalkIn {
    #[serde(default)]
    id_number: String,
}

/// `POST /app/clinic/walk-in`: a resident who came without an appointment, found by ID
/// number as the API's `GET /residents?id_number=…` finds them (among those the clinic
/// serves), gets today's exam recorded (the API's `record_exam`). A number not found is
/// said next to the form, the number kept.
pub async fn walk_in(
    State(state): State<AppState>,
    session: Session<ManageInstitution>,
    Form(form): Form<WalkIn>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let typed = form.id_number.trim().to_owned();
    let result = async {
        if typed.is_empty() {
            return Err(AppError::validation("invalid_id_number", "请输入身份证号"));
        }
        let campaign = open_campaign(&state).await?;
        let found = registry::list(
            &state.db,
            &state.privacy,
            actor,
            ResidentFilter {
                id_number: Some(typed.clone()),
                limit: Some(1),
                ..Default::default()
            },
        )
        .await?;
        let resident = found.residents.into_iter().next().ok_or_else(|| {
            AppError::validation(
                "unknown_resident",
                "没有找到该居民：身份证号未登记，或不在本机构服务的地区",
            )
        })?;
        // Clinic staff record for their own institution, the default.
        record_exam(
            &state,
            actor,
            &campaign,
            resident.id,
            None,
            campaign.today(),
        )
        .await?;
        Ok(resident.id)
    }
    .await;
    match result {
        Ok(resident) => Ok(
            Redirect::to(&format!("/app/clinic?done=walk_in&resident={resident}")).into_response(),
        ),
        Err(error) => {
            let (status, message) = error.status_and_message();
            if status.is_server_error() {
                return Err(error.into());
            }
            let said = Said {
                walk_in_error: Some(message),
                walk_in_id: typed,
                ..Default::default()
            };
            Ok(clinic_page(&state, &session, status, said).await?)
        }
    }
}

#[derive(Deserialize)]
pub struct ImportQuery {
    campaign: i32,
}

/// `POST /app/clinic/exams/import?campaign=…` (the CSV as the body, from the page's
/// script): the checkup system's exam list imported as by the API's `import_exams`,
/// answered with the report fragment (ID numbers masked for clinic staff, as the API does).
pub async fn import_exams(
    State(state): State<AppState>,
    session: Session<ManageInstitution>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    from_script(&headers, &session)?;
    const REPORT: &str = "app/clinic_exam_report.html";
    let actor = &session.actor;
    match flows::exams::import(&state.db, &state.privacy, actor, query.campaign, &body).await {
        Ok(mut result) => {
            if !registry::may_reveal(actor.role) {
                result.mask_ids();
            }
            let more = result.summary.rejected > result.rejected_rows.len() as u64;
            Ok(page(
                StatusCode::OK,
                REPORT,
                context! {
                    summary => ser(&result.summary),
                    unknown => result.unknown_columns,
                    header => result.headers,
                    rows => ser(&result.rejected_rows),
                    more,
                },
            ))
        }
        Err(error) => {
            let (status, message) = error.status_and_message();
            Ok(page(status, REPORT, context! { error => message }))
        }
    }
}
