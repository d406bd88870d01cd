//! The office's refusal review queue: pending registrations with the contact history they
//! rest on, the signature, confirm or return; the register by village; the chain check.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use entities::users::Role;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::pages::{PageError, current_campaign, local_time, ser};
use super::render::{page, templates};
use super::{Form, Session};
use crate::audit::{self, AuditFilter};
use crate::campaign::{self, Campaign};
use crate::error::AppError;
use crate::http::guard::{OfficeOnly, Policy, ReadAudit};
use crate::refusal::{self, Registration, Review, Status};
use crate::state::AppState;
use crate::{contact, flows};

pub(super) const TEMPLATES: &[(&str, &str)] = templates!["app/refusals.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/refusals", get(queue))
        .route("/app/refusals/verify", post(verify))
        .route("/app/refusals/{id}/confirm", post(confirm))
        .route("/app/refusals/{id}/return", post(return_registration))
}

/// Pending registrations shown on one page of the queue; each shows its signature and
/// contact history, read one by one.
const QUEUE_PAGE: usize = 20;

/// The audit action a chain check is recorded under (`flows::refusals::verify_and_record`).
const VERIFY_ACTION: &str = "refusal.verify";

#[derive(Deserialize)]
pub struct QueueQuery {
    campaign: Option<String>,
    page: Option<String>,
    /// What was just done, for the notice: `confirmed`, `returned` or `verified`.
    done: Option<String>,
    /// The registration it was done to.
    refusal: Option<String>,
}

/// A return form sent back with what was wrong.
struct Rejected {
    id: i32,
    note: String,
    message: String,
}

/// `GET /app/refusals`: the review queue of the open campaign (or `?campaign=`) — pending
/// registrations oldest first with the resident (masked ID number), the reason, who
/// registered it when, the contact attempts it rests on against the campaign's rule, the
/// signature, signer, witness and place; confirm and return for the office. Below, the
/// register by village with its status counts and downloads, and the last chain check.
pub async fn queue(
    State(state): State<AppState>,
    session: Session<ReadAudit>,
    Query(query): Query<QueueQuery>,
) -> Result<Response, PageError> {
    render(&state, &session, &query, None).await
}

async fn render<P: Policy>(
    state: &AppState,
    session: &Session<P>,
    query: &QueueQuery,
    rejected: Option<Rejected>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let campaigns: Vec<Campaign> = campaign::list(&state.db)
        .await?
        .into_iter()
        .filter(|c| c.model.status != "draft")
        .collect();
    let chosen = match number(query.campaign.as_deref(), "体检工作编号")? {
        Some(id) => Some(campaign::get(&state.db, id).await?),
        None => match current_campaign(state).await? {
            Some(open) => Some(open),
            None => campaigns.first().cloned(),
        },
    };
    let check = last_check(state, session).await?;
    let status = if rejected.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let can_review = actor.role == Role::Office;
    let Some(campaign) = chosen else {
        return Ok(page(
            status,
            "app/refusals.html",
            context! { section => "refusals", check, can_review, ..session.frame() },
        ));
    };
    let campaign_id = campaign.model.id;
    let register = refusal::register_of(
        &state.db,
        &state.privacy,
        actor,
        campaign_id,
        None,
        None,
        false,
    )
    .await?;

    let mut pending: Vec<&Registration> = register
        .items
        .iter()
        .filter(|r| r.status == Status::Pending)
        .collect();
    pending.sort_by_key(|r| (r.registered_at, r.id));
    let total_pending = pending.len();
    let pages = total_pending.div_ceil(QUEUE_PAGE).max(1);
    let page_no = number(query.page.as_deref(), "页码")?
        .unwrap_or(1)
        .clamp(1, pages as i32) as usize;
    let rule = campaign.refusal_rule();
    let mut items = Vec::new();
    for r in pending
        .iter()
        .skip((page_no - 1) * QUEUE_PAGE)
        .take(QUEUE_PAGE)
    {
        let attempts = contact::list(&state.db, actor, campaign_id, r.resident_id).await?;
        let cited: BTreeSet<i32> = r.attempt_ids.iter().copied().collect();
        let rested: Vec<_> = attempts
            .items
            .iter()
            .filter(|a| cited.contains(&a.id))
            .collect();
        let days = rested.iter().map(|a| a.day).collect::<BTreeSet<_>>().len() as u32;
        let reached = rested.iter().any(|a| a.reached);
        let count = rested.len() as u32;
        let history: Vec<_> = rested
            .iter()
            .map(|a| {
                context! {
                    at => local_time(Some(&campaign), a.attempted_at),
                    channel => a.channel_label.clone(),
                    outcome => a.outcome_label.clone(),
                    reached => a.reached,
                    note => a.note.clone(),
                }
            })
            .collect();
        let earlier = r
            .supersedes
            .and_then(|id| register.items.iter().find(|e| e.id == id))
            .map(|e| {
                context! {
                    id => e.id,
                    note => e.review_note.clone(),
                    at => e.reviewed_at.map(|at| local_time(Some(&campaign), at)),
                }
            });
        let form = rejected.as_ref().filter(|f| f.id == r.id).map(|f| {
            context! { note => f.note.clone(), message => f.message.clone() }
        });
        items.push(context! {
            registered_local => local_time(Some(&campaign), r.registered_at),
            history,
            attempts => count,
            days,
            reached,
            met => count >= rule.min_attempts && days >= rule.min_days && reached,
            other_attempts => attempts.count.saturating_sub(rested.len()),
            earlier,
            form,
            ..ser(r)
        });
    }

    // The register by village, every status counted.
    let mut villages: BTreeMap<&str, VillageCounts> = BTreeMap::new();
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &register.items {
        let entry = villages
            .entry(r.village_code.as_str())
            .or_insert_with(|| VillageCounts {
                code: r.village_code.as_str(),
                township: r.township_name.as_deref(),
                name: r.village_name.as_deref().unwrap_or(&r.village_code),
                total: 0,
                counts: BTreeMap::new(),
            });
        *entry.counts.entry(r.status.code()).or_default() += 1;
        entry.total += 1;
        *totals.entry(r.status.code()).or_default() += 1;
    }
    let statuses: Vec<_> = Status::ALL
        .iter()
        .map(|s| context! { code => s.code(), label => s.label() })
        .collect();
    let villages: Vec<_> = villages.values().map(ser).collect();

    let notice = notice(query, &register.items);
    Ok(page(
        status,
        "app/refusals.html",
        context! {
            section => "refusals",
            campaign => ser(campaign.view()),
            campaigns => campaigns.iter().map(|c| ser(c.view())).collect::<Vec<_>>(),
            rule => ser(rule),
            items,
            total_pending,
            page => page_no,
            pages,
            statuses,
            villages,
            totals => ser(&totals),
            registered => register.items.len(),
            check,
            can_review,
            notice,
            ..session.frame()
        },
    ))
}

/// One village's line of the register: registrations by status.
#[derive(Serialize)]
struct VillageCounts<'a> {
    code: &'a str,
    township: Option<&'a str>,
    name: &'a str,
    total: usize,
    counts: BTreeMap<&'static str, usize>,
}

/// A whole number from the address, or a 422 page naming the field.
fn number(raw: Option<&str>, what: &str) -> Result<Option<i32>, AppError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| AppError::validation("invalid_number", format!("{what}应为整数：{raw}"))),
    }
}

/// The notice after a redirect, in the service's own words (nothing from the address is shown).
fn notice(query: &QueueQuery, items: &[Registration]) -> Option<String> {
    let name = query
        .refusal
        .as_deref()
        .and_then(|id| id.parse::<i32>().ok())
        .and_then(|id| items.iter().find(|r| r.id == id))
        .map(|r| r.resident_name.as_str())
        .unwrap_or("居民");
    match query.done.as_deref()? {
        "confirmed" => Some(format!("已确认{name}的拒检登记，该居民计为拒检")),
        "returned" => Some(format!(
            "已将{name}的拒检登记退回村干部更正，退回原因已告知登记人"
        )),
        "verified" => Some("拒检记录校验已完成，结果见下方".to_owned()),
        _ => None,
    }
}

/// The last chain check the audit log shows the caller (their scope), as the page says it.
async fn last_check<P: Policy>(
    state: &AppState,
    session: &Session<P>,
) -> Result<Option<minijinja::Value>, AppError> {
    let found = audit::list(
        &state.db,
        &session.actor.scope,
        AuditFilter {
            action: Some(VERIFY_ACTION.to_owned()),
            limit: Some(1),
            ..Default::default()
        },
        None,
    )
    .await?;
    Ok(found.entries.into_iter().next().map(|entry| {
        let s = &entry.summary;
        let problems: Vec<_> = s["problems"]
            .as_object()
            .map(|p| {
                p.iter()
                    .map(|(code, n)| context! { label => problem_label(code), count => n.as_u64() })
                    .collect()
            })
            .unwrap_or_default();
        let listed: Vec<_> = s["listed_breaks"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|b| {
                        context! {
                            resident_id => b["resident_id"].as_i64(),
                            record_id => b["record_id"].as_i64(),
                            problem => problem_label(b["problem"].as_str().unwrap_or_default()),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        context! {
            ok => s["ok"].as_bool().unwrap_or(false),
            at => local_time(None, entry.at),
            by => entry.actor_name,
            whole_tree => s["scope"].as_str() == Some("all"),
            residents => s["residents"].as_u64(),
            records => s["records"].as_u64(),
            breaks => s["breaks"].as_u64(),
            problems,
            listed,
        }
    }))
}

/// A chain break's kind, as the office reads it.
fn problem_label(code: &str) -> &'static str {
    match code {
        "altered" => "记录被改动",
        "broken_link" => "链接断开",
        "missing" => "记录缺失",
        "unaudited" => "记录未经本系统写入",
        _ => "其他问题",
    }
}

#[derive(Deserialize)]
pub struct ReviewForm {
    #[serde(default)]
    note: String,
}

/// `POST /app/refusals/{id}/confirm`: the office confirms a pending registration, as the
/// API's confirm does; back to the queue with a notice.
pub async fn confirm(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(form): Form<ReviewForm>,
) -> Result<Response, PageError> {
    let note = Some(form.note).filter(|n| !n.trim().is_empty());
    let done = flows::refusals::confirm(&state.db, &session.actor, id, Review { note }).await?;
    Ok(back(done.campaign_id, "confirmed", id))
}

/// `POST /app/refusals/{id}/return`: the office returns a pending registration with the
/// reason, as the API's return does; an empty or overlong reason shows the queue again with
/// the message beside the form (422).
pub async fn return_registration(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(form): Form<ReviewForm>,
) -> Result<Response, PageError> {
    let review = Review {
        note: Some(form.note.clone()),
    };
    match flows::refusals::return_for_correction(&state.db, &session.actor, id, review).await {
        Ok(done) => Ok(back(done.campaign_id, "returned", id)),
        Err(AppError::Validation { message, .. }) => {
            let registration = refusal::get(&state.db, &session.actor, id).await?;
            let query = QueueQuery {
                campaign: Some(registration.campaign_id.to_string()),
                page: None,
                done: None,
                refusal: None,
            };
            render(
                &state,
                &session,
                &query,
                Some(Rejected {
                    id,
                    note: form.note,
                    message,
                }),
            )
            .await
        }
        Err(error) => Err(error.into()),
    }
}

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    campaign: Option<i32>,
}

/// `POST /app/refusals/verify`: checks the refusal chains of the office's scope now; the
/// outcome is recorded in the audit log and shown on the queue.
pub async fn verify(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Form(form): Form<VerifyForm>,
) -> Result<Response, PageError> {
    flows::refusals::verify_and_record(&state.db, &session.actor).await?;
    let mut to = "/app/refusals?done=verified".to_owned();
    if let Some(campaign) = form.campaign {
        to.push_str(&format!("&campaign={campaign}"));
    }
    Ok(Redirect::to(&to).into_response())
}

fn back(campaign: i32, done: &str, id: i32) -> Response {
    Redirect::to(&format!(
        "/app/refusals?campaign={campaign}&done={done}&refusal={id}"
    ))
    .into_response()
}
