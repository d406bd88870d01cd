//! Page handlers: each reads through the domain functions the API uses, with the signed-in
//! user's scope, and renders one template.

use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::render::page;
use super::{Form, Session, clear_cookie, home_of, same_origin, session_cookie_for};
use crate::auth::{self};
use crate::campaign::worklist::{self, Worklist, WorklistParams};
use crate::campaign::{self, Campaign, Stage};
use crate::contact::{ContactChannel, ContactUsed, Outcome};
use crate::error::AppError;
use crate::http::extract::ClientAddr;
use crate::http::guard::FieldWork;
use crate::http::guard::{AnyRole, Auth};
use crate::outreach::waves::{self, MessageFilter, MessagesOf};
use crate::registry::{self, MigrantType, ResidentFilter, Special, sex_label};
use crate::state::AppState;
use crate::{contact, flows, refusal};
use entities::users::Role;

/// A role as the people in it call it.
pub(super) fn role_title(role: Role) -> &'static str {
    match role {
        Role::Office => "县卫健委",
        Role::Township => "乡镇",
        Role::Cadre => "村干部",
        Role::Institution => "医疗机构",
        Role::Auditor => "审计",
    }
}

/// Any serialisable value as a template value.
pub(super) fn ser<T: Serialize>(value: T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// An error a page handler meets, answered with the error page.
pub struct PageError(AppError);

impl From<AppError> for PageError {
    fn from(error: AppError) -> Self {
        Self(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        error_page(&self.0)
    }
}

/// A page telling what went wrong, with the status the API would answer.
pub fn error_page(error: &AppError) -> Response {
    let (status, message) = error.status_and_message();
    page(
        status,
        "error.html",
        context! { status => status.as_u16(), message },
    )
}

/// `GET /`: the sign-in form, or the user's own start page when already signed in.
pub async fn sign_in_page(State(state): State<AppState>, parts: Parts) -> Response {
    if crate::http::guard::session_cookie(&parts).is_some()
        && let Ok(auth) = Auth::<AnyRole>::resolve(&parts, &state, true).await
    {
        return Redirect::to(home_of(auth.role)).into_response();
    }
    page(StatusCode::OK, "login.html", context! {})
}

#[derive(Deserialize)]
pub struct SignIn {
    username: String,
    password: String,
}

/// `POST /`: checks the password as the API's login does (same throttling), starts a page
/// session and goes to the user's start page.
pub async fn sign_in(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: axum::http::HeaderMap,
    axum::Form(form): axum::Form<SignIn>,
) -> Response {
    if !same_origin(&headers) {
        return error_page(&AppError::Forbidden("来源不明的登录请求".to_owned()));
    }
    match auth::login(
        &state.db,
        &state.settings.auth,
        &state.throttle,
        &form.username,
        &form.password,
        client,
    )
    .await
    {
        Ok(issued) => (
            [(
                header::SET_COOKIE,
                session_cookie_for(&state, &issued.token),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Err(error) => {
            let (status, message) = error.status_and_message();
            let mut response = page(
                status,
                "login.html",
                context! { error => message, username => form.username },
            );
            if let AppError::TooManyRequests { retry_after } = error
                && let Ok(value) = retry_after.as_secs().max(1).to_string().parse()
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

#[derive(Deserialize)]
pub struct Nothing {}

/// `POST /logout`: ends the session (its token is revoked) and forgets the cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    session: Session,
    Form(Nothing {}): Form<Nothing>,
) -> Response {
    if let Err(error) = auth::logout(&state.db, &session.actor).await {
        return error_page(&error);
    }
    (
        [(header::SET_COOKIE, clear_cookie(&state))],
        Redirect::to("/"),
    )
        .into_response()
}

/// The campaign the field pages work on: the open one of the latest year.
pub(super) async fn current_campaign(state: &AppState) -> Result<Option<Campaign>, AppError> {
    Ok(campaign::open_campaigns(&state.db)
        .await?
        .into_iter()
        .max_by_key(|c| c.model.year))
}

const LISTS: [(Worklist, &str); 6] = [
    (Worklist::NotAppointed, "未预约"),
    (Worklist::NoShows, "爽约"),
    (Worklist::Migrants, "外出人员"),
    (Worklist::HomeVisits, "上门体检"),
    (Worklist::HospitalRecords, "住院记录"),
    (Worklist::Seasonal, "季节性（牧区）"),
];

const PAGE_SIZE: u64 = 50;

#[derive(Deserialize)]
pub struct WorklistQuery {
    list: Option<String>,
    q: Option<String>,
    page: Option<u64>,
}

#[derive(Serialize)]
struct Tab {
    code: &'static str,
    label: &'static str,
    count: u64,
    active: bool,
}

#[derive(Serialize)]
struct Row {
    resident_id: i32,
    name: String,
    id_number: String,
    sex: &'static str,
    age: u32,
    village_code: String,
    stage: Option<&'static str>,
    stage_code: Option<&'static str>,
    migrant: Option<&'static str>,
    special: Option<&'static str>,
    phone: Option<String>,
}

fn migrant_label(code: &str) -> Option<&'static str> {
    MigrantType::parse(code)
        .filter(|m| *m != MigrantType::Local)
        .map(MigrantType::label)
}

/// `GET /m/`: the cadre's worklists of their village, with counts, or a search by name.
pub async fn worklist(
    State(state): State<AppState>,
    session: Session<FieldWork>,
    Query(query): Query<WorklistQuery>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let Some(campaign) = current_campaign(&state).await? else {
        return Ok(page(StatusCode::OK, "m/worklist.html", session.frame()));
    };
    let active = match query.list.as_deref() {
        None => Worklist::NotAppointed,
        Some(raw) => Worklist::parse(raw)?,
    };
    let counts = worklist::counts(&state.db, actor, campaign.model.id).await?;
    let tabs: Vec<Tab> = LISTS
        .into_iter()
        .map(|(list, label)| Tab {
            code: list.code(),
            label,
            count: counts
                .iter()
                .find(|(counted, _)| *counted == list)
                .map_or(0, |(_, n)| *n),
            active: list == active,
        })
        .collect();
    let open_tasks = crate::outreach::tasks::open_count(&state.db, actor).await?;
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let (rows, total, page_no, pages) = if let Some(q) = search {
        let found = registry::list(
            &state.db,
            &state.privacy,
            actor,
            ResidentFilter {
                q: Some(q.to_owned()),
                limit: Some(PAGE_SIZE),
                ..Default::default()
            },
        )
        .await?;
        let rows: Vec<Row> = found
            .residents
            .into_iter()
            .map(|r| Row {
                resident_id: r.id,
                sex: sex_label(&r.sex),
                migrant: r.migrant_type.as_deref().and_then(migrant_label),
                special: r
                    .special
                    .flatten()
                    .as_deref()
                    .and_then(Special::parse)
                    .map(Special::label),
                name: r.name,
                id_number: r.id_number,
                age: r.age,
                village_code: r.village_code,
                stage: None,
                stage_code: None,
                phone: r.phone,
            })
            .collect();
        let total = rows.len() as u64;
        (rows, total, 1, 1)
    } else {
        let listed = worklist::list(
            &state.db,
            actor,
            campaign.model.id,
            active,
            WorklistParams {
                page: query.page,
                limit: Some(PAGE_SIZE),
                ..Default::default()
            },
        )
        .await?;
        let rows = listed
            .items
            .into_iter()
            .map(|item| Row {
                resident_id: item.resident_id,
                sex: sex_label(&item.sex),
                migrant: migrant_label(&item.migrant_type),
                special: item
                    .special
                    .as_deref()
                    .and_then(Special::parse)
                    .map(Special::label),
                stage: Some(item.stage.label()),
                stage_code: Some(item.stage.code()),
                name: item.name,
                id_number: item.id_number,
                age: item.age,
                village_code: item.village_code,
                phone: item.phone,
            })
            .collect();
        (rows, listed.total, listed.page, listed.pages)
    };
    let villages = registry::village_names(&state.db).await?;
    let rows: Vec<_> = rows
        .into_iter()
        .map(|row| {
            let village = villages.get(&row.village_code).cloned();
            context! { village, ..ser(&row) }
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "m/worklist.html",
        context! {
            campaign => campaign.model.name,
            tabs => ser(&tabs),
            open_tasks,
            active => active.code(),
            q => search,
            rows,
            total,
            page => page_no,
            pages,
            ..session.frame()
        },
    ))
}

/// `GET /m/residents/{id}`: one resident of the caller's scope — masked numbers, stage,
/// appointments, contact attempts and messages.
pub async fn resident(
    State(state): State<AppState>,
    session: Session<FieldWork>,
    Path(id): Path<i32>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let detail = flows::registry::detail(&state.db, &state.privacy, actor, id, false).await?;
    let campaign = current_campaign(&state).await?;
    let (progress, attempts) = match &campaign {
        Some(c) => {
            let progress =
                match crate::report::progress::progress(&state.db, actor, c.model.id, id).await {
                    Ok(progress) => Some(progress),
                    Err(AppError::NotFound(_)) => None,
                    Err(error) => return Err(error.into()),
                };
            let attempts = contact::list(&state.db, actor, c.model.id, id).await?;
            (progress, Some(attempts))
        }
        None => (None, None),
    };
    let messages = waves::messages(
        &state.db,
        &actor.scope,
        MessagesOf::Resident(id),
        &MessageFilter {
            limit: Some(50),
            ..Default::default()
        },
    )
    .await?;
    let stages: Vec<_> = progress
        .as_ref()
        .map(|p| {
            [
                (Stage::Notified, p.notified_at),
                (Stage::Reached, p.reached_at),
                (Stage::Appointed, p.appointed_at),
                (Stage::Examined, p.examined_at),
                (Stage::Refused, p.refused_at),
                (Stage::Exempt, p.exempt_at),
            ]
            .into_iter()
            .filter_map(|(stage, at)| {
                at.map(|at| context! { label => stage.label(), at => local_time(campaign.as_ref(), at) })
            })
            .collect()
        })
        .unwrap_or_default();
    let attempt_rows: Vec<_> = attempts
        .as_ref()
        .map(|a| {
            a.items
                .iter()
                .map(|item| {
                    context! {
                        at => local_time(campaign.as_ref(), item.attempted_at),
                        channel => item.channel_label.clone(),
                        outcome => item.outcome_label.clone(),
                        reached => item.reached,
                        note => item.note.clone(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let message_rows: Vec<_> = messages
        .items
        .iter()
        .map(|m| {
            let view = ser(m);
            let kind = crate::outreach::MessageKind::parse(&m.kind).map(|k| k.title());
            context! { created => local_time(campaign.as_ref(), m.created_at), kind_label => kind, ..view }
        })
        .collect();
    let replies = crate::outreach::tasks::replies(
        &state.db,
        actor,
        &crate::outreach::tasks::ReplyFilter {
            resident_id: Some(id),
            limit: Some(20),
            ..Default::default()
        },
    )
    .await?;
    let replies: Vec<_> = replies
        .items
        .iter()
        .map(|r| {
            context! {
                at => local_time(campaign.as_ref(), r.received_at),
                text => r.text.clone(),
                from => r.from.clone(),
                action => reply_label(&r.action),
            }
        })
        .collect();
    let villages = registry::village_names(&state.db).await?;
    let mut places = std::collections::HashMap::new();
    for a in progress.iter().flat_map(|p| &p.appointments) {
        if let std::collections::hash_map::Entry::Vacant(entry) = places.entry(a.institution_id) {
            entry.insert(
                crate::institution::find(&state.db, a.institution_id)
                    .await?
                    .name,
            );
        }
    }
    Ok(page(
        StatusCode::OK,
        "m/resident.html",
        context! {
            resident => ser(&detail),
            sex => sex_label(&detail.sex),
            village => villages.get(&detail.village_code),
            migrant => detail.migrant_type.as_deref().and_then(migrant_label),
            special => detail.special.clone().flatten().as_deref().and_then(Special::parse).map(Special::label),
            campaign => campaign.as_ref().map(|c| c.model.name.clone()),
            stage => progress.as_ref().map(|p| p.stage_label),
            stage_code => progress.as_ref().map(|p| p.stage.code()),
            stages,
            appointments => progress.as_ref().map(|p| {
                p.appointments
                    .iter()
                    .map(|a| context! {
                        id => a.id,
                        day => a.day.to_string(),
                        institution => places.get(&a.institution_id).cloned(),
                        active => a.status == "booked",
                        status => crate::appointment::status_label(&a.status),
                        reason => a.reason.clone(),
                    })
                    .collect::<Vec<_>>()
            }),
            cancel_reasons => CANCEL_REASONS,
            attempts => attempt_rows,
            attempt_count => attempts.as_ref().map(|a| a.count),
            attempt_days => attempts.as_ref().map(|a| a.days),
            messages => message_rows,
            replies,
            campaign_id => campaign.as_ref().map(|c| c.model.id),
            channels => choices(ContactChannel::ALL.iter().map(|c| (c.code(), c.label()))),
            contacts => choices(ContactUsed::ALL.iter().map(|c| (c.code(), c.label()))),
            outcomes => choices(
                Outcome::ALL
                    .iter()
                    .filter(|o| **o != Outcome::Delivered)
                    .map(|o| (o.code(), o.label())),
            ),
            ..session.frame()
        },
    ))
}

/// What the service did with a resident's reply, as the cadre reads it.
fn reply_label(action: &str) -> &'static str {
    match action {
        "confirm" => "已确认预约",
        "reschedule" => "申请改期",
        "opt_out" => "已退订短信",
        _ => "待人工处理",
    }
}

/// Why a cadre cancels an appointment, as the form offers them.
const CANCEL_REASONS: [&str; 4] = ["居民要求取消", "时间冲突", "外出务工", "身体原因"];

/// The options of a select: `code` and `label` each.
fn choices<'a>(options: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<minijinja::Value> {
    options
        .map(|(code, label)| context! { code, label })
        .collect()
}

/// A time as the campaign's office reads it (`2026-12-07 10:05`).
pub(super) fn local_time(campaign: Option<&Campaign>, at: chrono::DateTime<chrono::Utc>) -> String {
    let tz = campaign.map_or(crate::time::DEFAULT_ZONE, |c| c.timezone);
    at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
}

/// `GET /m/residents/{id}/refusal`: the refusal registration form — the contact rule's
/// progress first (the form is sent only once it is met), the resident's earlier
/// registrations with the office's reasons for returning them, and a signature pad.
pub async fn refusal(
    State(state): State<AppState>,
    session: Session<FieldWork>,
    Path(id): Path<i32>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let detail = flows::registry::detail(&state.db, &state.privacy, actor, id, false).await?;
    let Some(campaign) = current_campaign(&state).await? else {
        return Err(AppError::NotFound("当前没有进行中的体检工作".to_owned()).into());
    };
    let progress = refusal::contact_progress(&state.db, actor, campaign.model.id, id).await?;
    let earlier = refusal::of_resident(&state.db, actor, campaign.model.id, id).await?;
    let open = earlier.iter().any(|r| {
        matches!(
            r.status,
            refusal::Status::Pending | refusal::Status::Confirmed
        )
    });
    let earlier: Vec<_> = earlier
        .iter()
        .map(|r| {
            context! {
                at => local_time(Some(&campaign), r.registered_at),
                status => r.status_label.clone(),
                returned => r.status == refusal::Status::Returned,
                note => r.review_note.clone(),
                reason => r.reason_label.clone(),
            }
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "m/refusal.html",
        context! {
            resident => ser(&detail),
            campaign_id => campaign.model.id,
            progress => ser(&progress),
            needs => progress.needs.join("，"),
            earlier,
            open,
            reasons => choices(refusal::Reason::ALL.iter().map(|r| (r.code(), r.label()))),
            relations => choices(refusal::SignerRelation::ALL.iter().map(|r| (r.code(), r.label()))),
            ..session.frame()
        },
    ))
}
