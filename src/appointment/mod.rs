//! Appointments: a cadre books a group of residents into an institution's day. Capacity is
//! taken with one conditional update (`booked + n <= capacity`), so parallel bookings never
//! overbook; one active appointment per resident and campaign is held by a unique index.
//! Rescheduling and cancelling give the place back; a booked day that has passed without
//! the resident turns into a no-show.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use entities::users::Role;
use entities::{appointments, enrolments, institutions, residents};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::area::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::{Actor, Scope};
use crate::campaign::{self, Campaign, Stage, enrol};
use crate::client_key;
use crate::db::Sql;
use crate::error::{AppError, AppResult};
use crate::institution::{self, DayView};

/// The largest group one booking may hold.
pub const MAX_GROUP: usize = 200;
/// How many other days a refusal for a full day proposes.
const PROPOSALS: usize = 5;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    pub institution_id: i32,
    pub day: NaiveDate,
    /// Residents of the caller's scope, booked together (1–200).
    pub resident_ids: Vec<i32>,
    /// A key the client chose for this booking (8–64 of `A-Z a-z 0-9 - _`): the same
    /// booking sent again with its key is answered with the booking made the first time.
    #[serde(default)]
    pub client_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AppointmentView {
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub resident_name: String,
    /// Masked ID number.
    pub id_number: String,
    pub village_code: String,
    pub institution_id: i32,
    pub day: NaiveDate,
    /// booked, attended, no_show or cancelled.
    pub status: String,
    pub booking_ref: String,
    pub reason: Option<String>,
    pub attended_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl AppointmentView {
    fn new(a: appointments::Model, r: &residents::Model) -> Self {
        Self {
            id: a.id,
            campaign_id: a.campaign_id,
            resident_id: a.resident_id,
            resident_name: r.name.clone(),
            id_number: r.id_masked.clone(),
            village_code: r.village_code.clone(),
            institution_id: a.institution_id,
            day: a.day,
            status: a.status,
            booking_ref: a.booking_ref,
            reason: a.reason,
            attended_at: a.attended_at,
            cancelled_at: a.cancelled_at,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Booking {
    pub booking_ref: String,
    pub institution_id: i32,
    pub day: NaiveDate,
    /// The day after this booking.
    pub calendar: DayView,
    pub appointments: Vec<AppointmentView>,
}

/// Why one resident of a group cannot be booked.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Unbookable {
    pub resident_id: i32,
    pub name: Option<String>,
    pub code: &'static str,
    pub reason: String,
}

fn check_day(campaign: &Campaign, day: NaiveDate) -> AppResult<()> {
    let window = campaign.exam_window();
    if day < window.from || day > window.to {
        return Err(AppError::validation(
            "outside_exam_window",
            format!(
                "体检日期应在 {} 至 {} 之间（体检实施和查漏补检阶段）",
                window.from, window.to
            ),
        ));
    }
    if day < campaign.today() {
        return Err(AppError::validation(
            "day_passed",
            format!("{day} 已经过去"),
        ));
    }
    Ok(())
}

/// The next days after `day` with room for `needed` people, within the exam window.
pub(crate) async fn proposals(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    institution: &institutions::Model,
    day: NaiveDate,
    needed: i32,
) -> AppResult<Vec<DayView>> {
    let window = campaign.exam_window();
    let Some(from) = day.succ_opt() else {
        return Ok(Vec::new());
    };
    let from = from.max(campaign.today());
    if from > window.to {
        return Ok(Vec::new());
    }
    let to = window
        .to
        .min(from + chrono::Duration::days(institution::MAX_DAYS - 1));
    Ok(institution::calendar(db, institution, from, to)
        .await?
        .into_iter()
        .filter(|d| d.remaining >= needed)
        .take(PROPOSALS)
        .collect())
}

async fn day_after(
    db: &impl ConnectionTrait,
    institution: &institutions::Model,
    day: NaiveDate,
) -> AppResult<DayView> {
    Ok(institution::calendar(db, institution, day, day)
        .await?
        .pop()
        .expect("one day asked, one day read"))
}

fn full_day(day: NaiveDate, view: &DayView, needed: i32, proposals: Vec<DayView>) -> AppError {
    let message = if view.closed {
        format!("{day} 该机构休息，不能预约")
    } else {
        format!(
            "{day} 已约满：剩余 {} 个名额，本次需要 {needed} 个",
            view.remaining
        )
    };
    let message = match proposals.first() {
        Some(first) => format!("{message}。最近有空位的日期：{}", first.day),
        None => format!("{message}。体检期内没有足够空位的日期"),
    };
    AppError::Refused {
        code: if view.closed {
            "day_closed"
        } else {
            "day_full"
        },
        message,
        details: Some(json!({
            "day": day,
            "remaining": view.remaining,
            "needed": needed,
            "proposals": proposals,
        })),
    }
}

/// What a booking did: made now (with the open campaign its notices are planned for), or
/// made earlier under the same client key.
pub enum Booked {
    Made {
        booking: Booking,
        campaign: Box<Campaign>,
    },
    Earlier {
        booking_ref: String,
    },
}

/// Books a group into an institution's day: all of them or none. Each resident must be in
/// the caller's scope, enrolled, served by the institution, and neither examined, refused,
/// exempt nor already booked; otherwise the answer lists who and why.
pub async fn book(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    request: BookingRequest,
) -> AppResult<Booked> {
    let mut ids = request.resident_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() || ids.len() > MAX_GROUP || ids.len() != request.resident_ids.len() {
        return Err(AppError::validation(
            "invalid_group",
            format!("一次预约 1–{MAX_GROUP} 名居民，且不能重复"),
        ));
    }
    let key = request
        .client_key
        .as_deref()
        .map(client_key::check)
        .transpose()?;
    let booking_ref = uuid::Uuid::new_v4().to_string();
    let campaign = campaign::get_open_locked(txn, campaign_id).await?;
    if let Some(key) = key {
        let subject = ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        let claimed = client_key::claim(
            txn,
            key,
            client_key::Kind::Booking,
            campaign_id,
            &subject,
            actor.user_id,
        )
        .await?;
        if let Some(taken) = claimed {
            let booking_ref = taken
                .record(client_key::Kind::Booking, campaign_id, &subject)?
                .to_owned();
            return Ok(Booked::Earlier { booking_ref });
        }
        client_key::settle(txn, key, &booking_ref).await?;
    }
    check_day(&campaign, request.day)?;
    let institution = institution::find(txn, request.institution_id).await?;
    if !institution.active {
        return Err(AppError::refused(
            "institution_inactive",
            format!("机构「{}」已停用", institution.name),
        ));
    }
    let problems = bookability(txn, actor, &campaign, &institution, &ids).await?;
    if !problems.is_empty() {
        return Err(AppError::Refused {
            code: "residents_not_bookable",
            message: format!(
                "{} 名居民不能预约：{}",
                problems.len(),
                problems
                    .iter()
                    .take(3)
                    .map(|p| p.reason.clone())
                    .collect::<Vec<_>>()
                    .join("；")
            ),
            details: Some(json!({"residents": problems})),
        });
    }
    let n = ids.len() as i32;
    if !institution::reserve(txn, &institution, request.day, n).await? {
        let view = day_after(txn, &institution, request.day).await?;
        let proposals = proposals(txn, &campaign, &institution, request.day, n).await?;
        return Err(full_day(request.day, &view, n, proposals));
    }
    let now = Utc::now();
    let inserted = appointments::Entity::insert_many(ids.iter().map(|&resident_id| {
        appointments::ActiveModel {
            campaign_id: Set(campaign_id),
            resident_id: Set(resident_id),
            institution_id: Set(institution.id),
            day: Set(request.day),
            status: Set("booked".to_owned()),
            booking_ref: Set(booking_ref.clone()),
            booked_by: Set(actor.user_id),
            reason: Set(None),
            attended_at: Set(None),
            cancelled_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
    }))
    .exec_without_returning(txn)
    .await;
    if let Err(e) = inserted {
        // Another booking of one of these residents committed first.
        return Err(match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                AppError::refused("already_appointed", "其中有居民刚刚被预约，请刷新后重试")
            }
            _ => e.into(),
        });
    }
    // A resident examined, refused or exempted by a transaction that committed meanwhile is
    // not moved: then the whole group is refused rather than holding a place for nobody.
    if enrol::mark_appointed(txn, campaign_id, &ids, now).await? != ids.len() as u64 {
        return Err(AppError::refused(
            "residents_changed",
            "其中有居民的状态刚刚发生变化，请刷新后重试",
        ));
    }
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "appointment.book",
            entity: "appointment",
            entity_id: Some(booking_ref.clone()),
            area_code: actor.scope.area().cloned(),
            summary: json!({
                "campaign_id": campaign_id,
                "institution_id": institution.id,
                "day": request.day,
                "resident_ids": ids,
            }),
        },
    )
    .await?;
    let appointments = list_where(
        txn,
        appointments::Column::BookingRef.eq(booking_ref.clone()),
    )
    .await?;
    let calendar = day_after(txn, &institution, request.day).await?;
    Ok(Booked::Made {
        booking: Booking {
            booking_ref,
            institution_id: institution.id,
            day: request.day,
            calendar,
            appointments,
        },
        campaign: Box::new(campaign),
    })
}

/// A booking made earlier, as its answer was: the appointments it made (as they are now)
/// and the day's calendar now.
pub async fn booking_made(
    db: &impl ConnectionTrait,
    actor: &Actor,
    booking_ref: &str,
) -> AppResult<Booking> {
    let found = appointments::Entity::find()
        .filter(appointments::Column::BookingRef.eq(booking_ref))
        .find_also_related(residents::Entity)
        .order_by_asc(appointments::Column::Id)
        .all(db)
        .await?;
    let mut appointments = Vec::with_capacity(found.len());
    for (a, r) in found {
        match r {
            Some(r) if may_see(actor, &a, &r) => appointments.push(AppointmentView::new(a, &r)),
            _ => return Err(AppError::NotFound("预约不存在".to_owned())),
        }
    }
    let Some(first) = appointments.first() else {
        return Err(AppError::NotFound("预约不存在".to_owned()));
    };
    let institution = institution::find(db, first.institution_id).await?;
    let day = first.day;
    Ok(Booking {
        booking_ref: booking_ref.to_owned(),
        institution_id: institution.id,
        day,
        calendar: day_after(db, &institution, day).await?,
        appointments,
    })
}

async fn bookability(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign: &Campaign,
    institution: &institutions::Model,
    ids: &[i32],
) -> AppResult<Vec<Unbookable>> {
    let residents: HashMap<i32, residents::Model> = residents::Entity::find()
        .filter(residents::Column::Id.is_in(ids.iter().copied()))
        .filter(actor.scope.filter(residents::Column::VillageCode))
        .all(db)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let rows: HashMap<i32, enrolments::Model> = enrolments::Entity::find()
        .filter(enrolments::Column::CampaignId.eq(campaign.id()))
        .filter(enrolments::Column::ResidentId.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|e| (e.resident_id, e))
        .collect();
    let served: Vec<AreaCode> = entities::institution_areas::Entity::find()
        .filter(entities::institution_areas::Column::InstitutionId.eq(institution.id))
        .all(db)
        .await?
        .iter()
        .filter_map(|a| AreaCode::parse(&a.area_code).ok())
        .collect();
    let mut problems = Vec::new();
    for &id in ids {
        let Some(resident) = residents.get(&id) else {
            problems.push(Unbookable {
                resident_id: id,
                name: None,
                code: "not_found",
                reason: format!("居民 {id} 不存在或不在您的管辖范围内"),
            });
            continue;
        };
        let name = Some(resident.name.clone());
        let problem = |code, reason: String| Unbookable {
            resident_id: id,
            name: name.clone(),
            code,
            reason: format!("{}：{reason}", resident.name),
        };
        let Some(row) = rows.get(&id) else {
            problems.push(problem("not_enrolled", "不在本次体检对象范围内".to_owned()));
            continue;
        };
        match Stage::parse(&row.stage) {
            Some(Stage::Examined) => {
                problems.push(problem("already_examined", "本年度已体检".to_owned()))
            }
            Some(Stage::Refused) => problems.push(problem(
                "refused",
                "已登记拒绝体检（本人签字确认）".to_owned(),
            )),
            Some(Stage::Exempt) => {
                problems.push(problem("exempt", "已死亡或迁出，不计入体检对象".to_owned()))
            }
            Some(Stage::Appointed) => problems.push(problem(
                "already_appointed",
                "已有未完成的预约，请改约或先取消".to_owned(),
            )),
            _ => {
                let village = AreaCode::parse(&resident.village_code).ok();
                if !village.is_some_and(|v| served.iter().any(|s| s.contains(&v))) {
                    problems.push(problem(
                        "institution_not_serving",
                        format!("「{}」不负责该居民所在村（社区）", institution.name),
                    ));
                }
            }
        }
    }
    Ok(problems)
}

async fn list_where(
    db: &impl ConnectionTrait,
    condition: impl sea_orm::sea_query::IntoCondition,
) -> AppResult<Vec<AppointmentView>> {
    Ok(appointments::Entity::find()
        .filter(condition)
        .find_also_related(residents::Entity)
        .order_by_asc(appointments::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|(a, r)| r.map(|r| AppointmentView::new(a, &r)))
        .collect())
}

/// Who may see an appointment: the resident's area in scope, or the staff of the institution.
fn may_see(actor: &Actor, appointment: &appointments::Model, resident: &residents::Model) -> bool {
    if actor.role == Role::Institution {
        return actor.institution_id == Some(appointment.institution_id);
    }
    AreaCode::parse(&resident.village_code).is_ok_and(|v| actor.scope.contains(&v))
}

async fn find_visible(
    db: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
) -> AppResult<(appointments::Model, residents::Model)> {
    let found = appointments::Entity::find_by_id(id)
        .find_also_related(residents::Entity)
        .one(db)
        .await?;
    match found {
        Some((a, Some(r))) if may_see(actor, &a, &r) => Ok((a, r)),
        _ => Err(AppError::NotFound(format!("预约 {id} 不存在"))),
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AppointmentFilter {
    pub institution_id: Option<i32>,
    pub day: Option<NaiveDate>,
    /// booked, attended, no_show or cancelled.
    pub status: Option<String>,
    /// Residents under this area.
    pub area: Option<String>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<u64>,
    /// Cursor: the `next_after` of the previous page.
    pub after: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AppointmentPage {
    pub appointments: Vec<AppointmentView>,
    pub next_after: Option<i32>,
}

const STATUSES: [&str; 4] = ["booked", "attended", "no_show", "cancelled"];

/// A campaign's appointments the caller may see: institution staff those of their
/// institution, everyone else those of residents in their scope.
pub async fn list(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    filter: AppointmentFilter,
) -> AppResult<AppointmentPage> {
    campaign::get(db, campaign_id).await?;
    let size = crate::paging::size(filter.limit)?;
    let mut query = appointments::Entity::find()
        .filter(appointments::Column::CampaignId.eq(campaign_id))
        .find_also_related(residents::Entity);
    if actor.role == Role::Institution {
        query = query
            .filter(appointments::Column::InstitutionId.eq(actor.institution_id.unwrap_or(-1)));
    } else {
        query = query.filter(actor.scope.filter(residents::Column::VillageCode));
    }
    if let Some(area) = filter.area.as_deref() {
        let area = crate::validate::parse_area(area)?;
        if actor.role != Role::Institution && !actor.scope.contains(&area) {
            return Err(AppError::out_of_scope());
        }
        query = query.filter(Scope::Within(area).filter(residents::Column::VillageCode));
    }
    if let Some(id) = filter.institution_id {
        query = query.filter(appointments::Column::InstitutionId.eq(id));
    }
    if let Some(day) = filter.day {
        institution::check_date(day)?;
        query = query.filter(appointments::Column::Day.eq(day));
    }
    if let Some(status) = filter.status.as_deref() {
        if !STATUSES.contains(&status) {
            return Err(AppError::validation(
                "invalid_value",
                "status 可选 booked、attended、no_show、cancelled",
            ));
        }
        query = query.filter(appointments::Column::Status.eq(status));
    }
    if let Some(after) = filter.after {
        query = query.filter(appointments::Column::Id.gt(after));
    }
    let mut rows = query
        .order_by_asc(appointments::Column::Id)
        .limit(size + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);
    let next_after = if more {
        rows.last().map(|(a, _)| a.id)
    } else {
        None
    };
    Ok(AppointmentPage {
        appointments: rows
            .into_iter()
            .filter_map(|(a, r)| r.map(|r| AppointmentView::new(a, &r)))
            .collect(),
        next_after,
    })
}

pub async fn get(db: &impl ConnectionTrait, actor: &Actor, id: i32) -> AppResult<AppointmentView> {
    let (a, r) = find_visible(db, actor, id).await?;
    Ok(AppointmentView::new(a, &r))
}

fn may_change(actor: &Actor) -> AppResult<()> {
    if matches!(actor.role, Role::Office | Role::Township | Role::Cadre) {
        Ok(())
    } else {
        Err(AppError::forbidden_role())
    }
}

fn require_booked(appointment: &appointments::Model) -> AppResult<()> {
    if appointment.status == "booked" {
        Ok(())
    } else {
        Err(AppError::refused(
            "not_active",
            format!(
                "该预约状态为 {}，不能再更改",
                status_label(&appointment.status)
            ),
        ))
    }
}

pub fn status_label(status: &str) -> &'static str {
    match status {
        "booked" => "已预约",
        "attended" => "已到检",
        "no_show" => "爽约",
        "cancelled" => "已取消",
        _ => "未知",
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reschedule {
    pub day: NaiveDate,
    /// Another institution (default: the same).
    pub institution_id: Option<i32>,
    pub reason: Option<String>,
}

/// An appointment moved to another day, with the open campaign its new notices are planned for.
pub struct Moved {
    pub saved: appointments::Model,
    pub view: AppointmentView,
    pub campaign: Campaign,
}

/// Moves an active appointment to another day (and institution): the new place is taken
/// first, then the old one given back.
pub async fn reschedule(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    request: Reschedule,
) -> AppResult<Moved> {
    may_change(actor)?;
    let reason = crate::validate::optional_name(request.reason.as_deref(), "原因", 200)?;
    let (current, resident) = find_visible(txn, actor, id).await?;
    require_booked(&current)?;
    let campaign = campaign::get_open(txn, current.campaign_id).await?;
    check_day(&campaign, request.day)?;
    let institution_id = request.institution_id.unwrap_or(current.institution_id);
    if institution_id == current.institution_id && request.day == current.day {
        return Err(AppError::validation("same_day", "新的日期与原预约相同"));
    }
    let institution = institution::find(txn, institution_id).await?;
    let village = AreaCode::parse(&resident.village_code)
        .map_err(|e| anyhow::anyhow!("stored village code: {e}"))?;
    if !institution.active || !institution::serves_village(txn, institution.id, &village).await? {
        return Err(AppError::refused(
            "institution_not_serving",
            format!("「{}」不负责该居民所在村（社区）或已停用", institution.name),
        ));
    }
    // The appointment row first: of two writers changing it at once, one wins here.
    let moved = appointments::Entity::update_many()
        .col_expr(
            appointments::Column::InstitutionId,
            Expr::value(institution.id),
        )
        .col_expr(appointments::Column::Day, Expr::value(request.day))
        .col_expr(appointments::Column::Reason, Expr::value(reason.clone()))
        .col_expr(appointments::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(appointments::Column::Id.eq(id))
        .filter(appointments::Column::Status.eq("booked"))
        .filter(appointments::Column::InstitutionId.eq(current.institution_id))
        .filter(appointments::Column::Day.eq(current.day))
        .exec(txn)
        .await?;
    if moved.rows_affected != 1 {
        return Err(changed_meanwhile());
    }
    // The two days in one fixed order, so that two moves in opposite directions cannot
    // wait on each other.
    let old_key = (current.institution_id, current.day);
    if (institution.id, request.day) > old_key {
        institution::release(txn, current.institution_id, current.day, 1).await?;
    }
    if !institution::reserve(txn, &institution, request.day, 1).await? {
        let view = day_after(txn, &institution, request.day).await?;
        let proposals = proposals(txn, &campaign, &institution, request.day, 1).await?;
        return Err(full_day(request.day, &view, 1, proposals));
    }
    if (institution.id, request.day) < old_key {
        institution::release(txn, current.institution_id, current.day, 1).await?;
    }
    let saved = appointments::Entity::find_by_id(id)
        .one(txn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("appointment {id} vanished"))?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "appointment.reschedule",
            entity: "appointment",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&resident.village_code).ok(),
            summary: json!({
                "from": {"institution_id": current.institution_id, "day": current.day},
                "to": {"institution_id": saved.institution_id, "day": saved.day},
                "reason": reason,
            }),
        },
    )
    .await?;
    let view = AppointmentView::new(saved.clone(), &resident);
    Ok(Moved {
        saved,
        view,
        campaign,
    })
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancellation {
    pub reason: String,
}

/// Cancels an active appointment and gives its place back.
pub async fn cancel(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    request: Cancellation,
) -> AppResult<AppointmentView> {
    may_change(actor)?;
    let reason = crate::validate::check_name(&request.reason, "原因", 200)?;
    let (current, resident) = find_visible(txn, actor, id).await?;
    require_booked(&current)?;
    let now = Utc::now();
    let saved = end(txn, &current, "cancelled", Some(reason.clone()), now).await?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "appointment.cancel",
            entity: "appointment",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&resident.village_code).ok(),
            summary: json!({"institution_id": current.institution_id, "day": current.day, "reason": reason}),
        },
    )
    .await?;
    Ok(AppointmentView::new(saved, &resident))
}

fn changed_meanwhile() -> AppError {
    AppError::refused("not_active", "该预约刚刚被其他人更改，请刷新后重试")
}

/// Moves an active appointment out of `booked`. The status is the condition of the update,
/// so of several writers ending one appointment at once exactly one succeeds. Its notices and
/// reminders are the caller's to cancel, in the same transaction.
async fn leave_booked(
    db: &impl ConnectionTrait,
    current: &appointments::Model,
    status: &str,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> AppResult<appointments::Model> {
    let mut update = appointments::Entity::update_many()
        .col_expr(appointments::Column::Status, Expr::value(status))
        .col_expr(appointments::Column::UpdatedAt, Expr::value(now));
    update = match status {
        "attended" => update.col_expr(appointments::Column::AttendedAt, Expr::value(now)),
        "cancelled" => update
            .col_expr(appointments::Column::CancelledAt, Expr::value(now))
            .col_expr(appointments::Column::Reason, Expr::value(reason)),
        _ => update,
    };
    let result = update
        .filter(appointments::Column::Id.eq(current.id))
        .filter(appointments::Column::Status.eq("booked"))
        .exec(db)
        .await?;
    if result.rows_affected != 1 {
        return Err(changed_meanwhile());
    }
    appointments::Entity::find_by_id(current.id)
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("appointment {} vanished", current.id).into())
}

/// Ends an active appointment as cancelled or attended. A cancel gives the place back and
/// moves the progress row out of `appointed`; an attended appointment keeps its place (the
/// day's `booked` counts places taken: booked, attended or missed).
async fn end(
    db: &impl ConnectionTrait,
    current: &appointments::Model,
    status: &str,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> AppResult<appointments::Model> {
    let saved = leave_booked(db, current, status, reason, now).await?;
    if status == "cancelled" {
        institution::release(db, current.institution_id, current.day, 1).await?;
        enrol::unmark_appointed(db, current.campaign_id, &[current.resident_id], now).await?;
    }
    Ok(saved)
}

/// The active appointment of a resident in a campaign, if any.
pub async fn active_of(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<Option<appointments::Model>> {
    Ok(appointments::Entity::find()
        .filter(appointments::Column::CampaignId.eq(campaign_id))
        .filter(appointments::Column::ResidentId.eq(resident_id))
        .filter(appointments::Column::Status.eq("booked"))
        .one(db)
        .await?)
}

/// Closes the active appointment of a resident who has just been examined: attended when
/// the exam was at that institution, otherwise cancelled (the place given back).
pub async fn close_for_exam(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    institution_id: Option<i32>,
    now: DateTime<Utc>,
) -> AppResult<Option<i32>> {
    let Some(active) = active_of(db, campaign_id, resident_id).await? else {
        return Ok(None);
    };
    if institution_id == Some(active.institution_id) {
        end(db, &active, "attended", None, now).await?;
    } else {
        end(
            db,
            &active,
            "cancelled",
            Some("已在其他地点体检".to_owned()),
            now,
        )
        .await?;
    }
    Ok(Some(active.id))
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attendance {
    /// `true`: came and was examined (an exam record is written); `false`: did not come.
    pub attended: bool,
}

/// An appointment marked attended or missed: as it was and as it is now, with its campaign.
pub struct Marked {
    pub before: appointments::Model,
    pub view: AppointmentView,
    pub campaign: Campaign,
}

/// Institution staff (or the office) mark whether a booked resident came, on or after the
/// day: attended or a no-show. The exam record of one who came is the caller's to write.
pub async fn mark_attendance(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    request: &Attendance,
) -> AppResult<Marked> {
    let (current, resident) = find_visible(txn, actor, id).await?;
    let may_mark = match actor.role {
        Role::Institution => actor.institution_id == Some(current.institution_id),
        Role::Office => true,
        _ => false,
    };
    if !may_mark {
        return Err(AppError::Forbidden(
            "只有该机构的工作人员可以登记到检".to_owned(),
        ));
    }
    require_booked(&current)?;
    let campaign = campaign::get_open(txn, current.campaign_id).await?;
    if current.day > campaign.today() {
        return Err(AppError::validation(
            "day_not_reached",
            format!("预约日期 {} 还没到", current.day),
        ));
    }
    let now = Utc::now();
    // The appointment row before the progress row, as every other path takes them.
    let saved = if request.attended {
        end(txn, &current, "attended", None, now).await?
    } else {
        no_show(txn, &current, now).await?
    };
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "appointment.attendance",
            entity: "appointment",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&resident.village_code).ok(),
            summary: json!({"attended": request.attended, "day": current.day, "institution_id": current.institution_id}),
        },
    )
    .await?;
    Ok(Marked {
        before: current,
        view: AppointmentView::new(saved, &resident),
        campaign,
    })
}

async fn no_show(
    db: &impl ConnectionTrait,
    current: &appointments::Model,
    now: DateTime<Utc>,
) -> AppResult<appointments::Model> {
    let saved = leave_booked(db, current, "no_show", None, now).await?;
    enrol::unmark_appointed(db, current.campaign_id, &[current.resident_id], now).await?;
    Ok(saved)
}

/// Booked appointments of a campaign before `day` become no-shows (their places stay taken:
/// the day is over); the residents' rows leave `appointed`. Returns (appointment, resident,
/// day) of each; their pending reminders are the caller's to cancel.
pub async fn no_shows_before(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    day: NaiveDate,
) -> AppResult<Vec<(i32, i32, NaiveDate)>> {
    let now = Utc::now();
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE appointments SET status = 'no_show', updated_at = ")
        .bind(now)
        .push(" WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND status = 'booked' AND day < ")
        .bind(day)
        .push(" RETURNING id, resident_id, institution_id, day");
    let missed: Vec<(i32, i32, NaiveDate)> = Ended::find_by_statement(sql.build())
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.id, row.resident_id, row.day))
        .collect();
    let residents: Vec<i32> = missed.iter().map(|m| m.1).collect();
    for chunk in residents.chunks(500) {
        enrol::unmark_appointed(db, campaign_id, chunk, now).await?;
    }
    Ok(missed)
}

/// An appointment a set-based update ended, as its `RETURNING` gives it.
#[derive(FromQueryResult)]
struct Ended {
    id: i32,
    resident_id: i32,
    institution_id: i32,
    day: NaiveDate,
}

/// Cancels a campaign's booked appointments that match `condition` (which appends SQL over
/// the `appointments` row, values bound) and gives their places back, day by day in a fixed
/// order. The update selects the rows itself, so concurrent changes are not overwritten.
/// Returns the (appointment, resident) pairs cancelled.
async fn cancel_matching(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    condition: impl FnOnce(&mut Sql),
    reason: &str,
    now: DateTime<Utc>,
) -> AppResult<Vec<(i32, i32)>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE appointments SET status = 'cancelled', reason = ")
        .bind(reason)
        .push(", cancelled_at = ")
        .bind(now)
        .push(", updated_at = ")
        .bind(now)
        .push(" WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND status = 'booked' AND ");
    condition(&mut sql);
    sql.push(" RETURNING id, institution_id, day, resident_id");
    let mut per_day: std::collections::BTreeMap<(i32, NaiveDate), i32> = Default::default();
    let mut cancelled = Vec::new();
    for row in Ended::find_by_statement(sql.build()).all(db).await? {
        *per_day.entry((row.institution_id, row.day)).or_default() += 1;
        cancelled.push((row.id, row.resident_id));
    }
    for ((institution_id, day), n) in per_day {
        institution::release(db, institution_id, day, n).await?;
    }
    Ok(cancelled)
}

/// Cancels the active appointments of residents who have just become exempt (deceased or
/// moved out), giving their places back. Set-based, for the registry refresh. Returns the
/// appointments cancelled.
pub async fn cancel_for_exempt(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    now: DateTime<Utc>,
) -> AppResult<Vec<i32>> {
    let cancelled = cancel_matching(
        db,
        campaign_id,
        |sql| {
            sql.push(
                "EXISTS (SELECT 1 FROM enrolments e WHERE e.campaign_id = appointments.campaign_id \
                 AND e.resident_id = appointments.resident_id AND e.stage = 'exempt')",
            );
        },
        "居民已死亡或迁出",
        now,
    )
    .await?;
    Ok(cancelled.into_iter().map(|(id, _)| id).collect())
}

/// A resident's refusal was confirmed: their booked appointment is cancelled (the place given
/// back). Returns the appointments cancelled.
pub async fn cancel_for_refusal(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    now: DateTime<Utc>,
) -> AppResult<Vec<i32>> {
    let cancelled = cancel_matching(
        db,
        campaign_id,
        |sql| {
            sql.push("resident_id = ").bind(resident_id);
        },
        "居民拒绝体检（已确认）",
        now,
    )
    .await?;
    Ok(cancelled.into_iter().map(|(id, _)| id).collect())
}

/// When a campaign closes: past bookings become no-shows, later ones are cancelled (their
/// places given back), so nobody is left `appointed` in a campaign that has ended. The
/// campaign's waiting messages are the caller's to cancel.
pub async fn settle_for_close(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> AppResult<()> {
    no_shows_before(db, campaign_id, today).await?;
    let cancelled = cancel_matching(
        db,
        campaign_id,
        |sql| {
            sql.push("1 = 1");
        },
        "体检工作已结束",
        now,
    )
    .await?;
    let residents: Vec<i32> = cancelled.iter().map(|&(_, resident)| resident).collect();
    for chunk in residents.chunks(500) {
        enrol::unmark_appointed(db, campaign_id, chunk, now).await?;
    }
    Ok(())
}

/// The resident confirms their active appointment (reply 1, or 确认 on their link); a second
/// confirmation keeps the first time.
pub async fn confirm(
    db: &impl ConnectionTrait,
    appointment_id: i32,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE appointments SET confirmed_at = ")
        .bind(now)
        .push(" WHERE id = ")
        .bind(appointment_id)
        .push(" AND confirmed_at IS NULL");
    db.execute_raw(sql.build()).await?;
    Ok(())
}

/// Every appointment of one resident in a campaign, oldest first.
pub async fn of_resident(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident: &residents::Model,
) -> AppResult<Vec<AppointmentView>> {
    Ok(appointments::Entity::find()
        .filter(appointments::Column::CampaignId.eq(campaign_id))
        .filter(appointments::Column::ResidentId.eq(resident.id))
        .order_by_asc(appointments::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|a| AppointmentView::new(a, resident))
        .collect())
}
