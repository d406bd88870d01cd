//! The cadre's booking and task pages: a day with free places for one resident or a group
//! (or a new day for an appointment), and the open tasks messaging left for the village.
//! Bookings are sent by the page's script to the API (queued on the phone when there is no
//! network); marking a task done is a form post.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use entities::areas::AreaLevel;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::pages::{Nothing, PageError, current_campaign, local_time, ser};
use super::render::page;
use super::{Form, Session};
use crate::appointment::{self, MAX_GROUP};
use crate::area::AreaCode;
use crate::error::AppError;
use crate::flows;
use crate::http::guard::FieldWork;
use crate::institution;
use crate::outreach::tasks::{self, TaskFilter};
use crate::state::AppState;

/// How many days ahead the booking page shows.
const DAYS_SHOWN: i64 = 28;

#[derive(Deserialize)]
pub struct BookQuery {
    /// The residents to book, as `12,13,14`.
    r: Option<String>,
    /// The appointment to move to another day.
    appointment: Option<i32>,
}

#[derive(Serialize)]
struct Day {
    day: NaiveDate,
    label: String,
    week: &'static str,
    remaining: i32,
    closed: bool,
    full: bool,
}

/// Resident ids from `12,13,14`: at most a group's worth, each a number.
fn resident_ids(raw: Option<&str>) -> Result<Vec<i32>, AppError> {
    let mut ids = Vec::new();
    for part in raw.unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        if ids.len() == MAX_GROUP {
            return Err(AppError::validation(
                "invalid_group",
                format!("一次预约最多 {MAX_GROUP} 名居民"),
            ));
        }
        let id = part
            .trim()
            .parse::<i32>()
            .map_err(|_| AppError::validation("invalid_resident", "居民编号无效"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `GET /m/book?r=…[&appointment=…]`: the institutions serving the village with their days
/// and the places left, for booking the residents named (or moving one appointment).
/// Without residents it is the page the phone keeps for booking offline; its script then
/// takes the residents from the address.
pub async fn book(
    State(state): State<AppState>,
    session: Session<FieldWork>,
    Query(query): Query<BookQuery>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let Some(campaign) = current_campaign(&state).await? else {
        return Err(AppError::NotFound("当前没有进行中的体检工作".to_owned()).into());
    };
    let moving = match query.appointment {
        Some(id) => Some(appointment::get(&state.db, actor, id).await?),
        None => None,
    };
    let ids = match &moving {
        Some(a) => vec![a.resident_id],
        None => resident_ids(query.r.as_deref())?,
    };
    let mut people = Vec::with_capacity(ids.len());
    for id in &ids {
        people.push(flows::registry::detail(&state.db, &state.privacy, actor, *id, false).await?);
    }
    let village = match people.first() {
        Some(p) => AreaCode::parse(&p.village_code).ok(),
        None => actor
            .scope
            .area()
            .filter(|a| a.level() == AreaLevel::Village)
            .cloned(),
    };
    let institutions = match &village {
        Some(v) => institution::serving(&state.db, v).await?,
        None => Vec::new(),
    };
    let window = campaign.exam_window();
    let from = campaign.today().max(window.from);
    let to = window.to.min(from + chrono::Duration::days(DAYS_SHOWN - 1));
    let needed = ids.len().max(1) as i32;
    let mut shown = Vec::with_capacity(institutions.len());
    for inst in &institutions {
        let days = if from <= to {
            institution::calendar(&state.db, inst, from, to).await?
        } else {
            Vec::new()
        };
        let days: Vec<Day> = days
            .into_iter()
            .map(|d| {
                let current = moving
                    .as_ref()
                    .is_some_and(|a| a.institution_id == inst.id && a.day == d.day);
                Day {
                    label: crate::time::month_day(d.day),
                    week: crate::time::weekday(d.day),
                    full: d.closed || d.remaining < needed || current,
                    day: d.day,
                    remaining: d.remaining,
                    closed: d.closed,
                }
            })
            .collect();
        shown.push(context! {
            id => inst.id,
            name => inst.name.clone(),
            address => inst.address.clone(),
            days => ser(&days),
        });
    }
    let back = match (&moving, ids.as_slice()) {
        (_, [one]) => format!("/m/residents/{one}"),
        _ => "/m/".to_owned(),
    };
    let people: Vec<_> = people
        .iter()
        .map(|p| context! { id => p.id, name => p.name.clone(), id_number => p.id_number.clone() })
        .collect();
    let moving = moving.map(|a| {
        let place = institutions
            .iter()
            .find(|i| i.id == a.institution_id)
            .map(|i| i.name.clone());
        context! { id => a.id, day => a.day.to_string(), institution => place }
    });
    Ok(page(
        StatusCode::OK,
        "m/book.html",
        context! {
            campaign_id => campaign.model.id,
            people,
            moving,
            institutions => shown,
            back,
            window_to => window.to.to_string(),
            ..session.frame()
        },
    ))
}

/// `GET /m/tasks`: the open tasks of the caller's villages, newest first.
pub async fn tasks(
    State(state): State<AppState>,
    session: Session<FieldWork>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let campaign = current_campaign(&state).await?;
    let open = tasks::list(
        &state.db,
        actor,
        &TaskFilter {
            limit: Some(200),
            ..Default::default()
        },
    )
    .await?;
    let items: Vec<_> = open
        .items
        .iter()
        .map(|t| {
            context! {
                at => local_time(campaign.as_ref(), t.created_at),
                ..ser(t)
            }
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "m/tasks.html",
        context! {
            items,
            more => open.next.is_some(),
            ..session.frame()
        },
    ))
}

/// `POST /m/tasks/{id}/done`: marks a task done and goes back to the list.
pub async fn task_done(
    State(state): State<AppState>,
    session: Session<FieldWork>,
    Path(id): Path<i32>,
    Form(Nothing {}): Form<Nothing>,
) -> Result<Response, PageError> {
    crate::flows::messaging::tasks::done(&state.db, &session.actor, id).await?;
    Ok(Redirect::to("/m/tasks").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_read_from_the_address() {
        assert_eq!(resident_ids(Some("3,4,3")).unwrap(), vec![3, 4]);
        assert_eq!(resident_ids(None).unwrap(), Vec::<i32>::new());
        assert!(resident_ids(Some("3,x")).is_err());
        let too_many = (1..=(MAX_GROUP as i32 + 1))
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(resident_ids(Some(&too_many)).is_err());
    }
}
