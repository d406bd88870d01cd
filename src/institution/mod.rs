//! Institutions that examine residents (县直医疗机构, 乡镇卫生院): the areas each serves and
//! its capacity calendar — people per day, weekly closed days, and per-day changes entered by
//! the office or the institution's own staff, one at a time or as a CSV upload.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, Utc};
use entities::users::Role;
use entities::{institution_areas, institution_days, institutions};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::area::{self, AreaCode};
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::db::Sql;
use crate::error::{AppError, AppResult};
use crate::import::{CsvTable, ImportSummary, RejectedRow, map_headers};

/// The longest calendar range read or proposed at once.
pub const MAX_DAYS: i64 = 366;
const MAX_CAPACITY: i32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 县直医疗机构
    CountyHospital,
    /// 乡镇卫生院
    TownshipCentre,
    Other,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::CountyHospital => "county_hospital",
            Kind::TownshipCentre => "township_centre",
            Kind::Other => "other",
        }
    }

    fn parse(raw: &str) -> Kind {
        match raw {
            "county_hospital" => Kind::CountyHospital,
            "township_centre" => Kind::TownshipCentre,
            _ => Kind::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::CountyHospital => "县直医疗机构",
            Kind::TownshipCentre => "乡镇卫生院",
            Kind::Other => "其他医疗机构",
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInstitution {
    /// Short unique code, used in calendar uploads and exam imports (letters, digits, `-`).
    pub code: String,
    pub name: String,
    pub kind: Kind,
    /// Where it is: the county or a township code.
    pub area_code: String,
    /// People per day.
    pub daily_capacity: i32,
    /// ISO weekdays it is closed (1 = Monday … 7 = Sunday).
    #[serde(default)]
    pub closed_weekdays: Vec<u32>,
    /// Areas whose residents it examines (county, townships or villages).
    pub serves: Vec<String>,
    /// Street address, quoted in appointment notices.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstitutionChanges {
    pub name: Option<String>,
    pub address: Option<String>,
    pub daily_capacity: Option<i32>,
    pub closed_weekdays: Option<Vec<u32>>,
    /// Office only.
    pub serves: Option<Vec<String>>,
    /// Office only.
    pub active: Option<bool>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstitutionView {
    pub id: i32,
    pub code: String,
    pub name: String,
    pub kind: Kind,
    pub kind_label: &'static str,
    pub area_code: String,
    pub daily_capacity: i32,
    pub closed_weekdays: Vec<u32>,
    pub serves: Vec<String>,
    pub active: bool,
    pub address: Option<String>,
}

/// One day of the calendar as the booking side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DayView {
    pub day: NaiveDate,
    pub capacity: i32,
    /// Places taken: appointments booked, attended or missed (a cancelled one gives its
    /// place back).
    pub booked: i32,
    /// Places left (0 on a closed day).
    pub remaining: i32,
    pub closed: bool,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DayChange {
    /// People that day; not below those already booked.
    pub capacity: Option<i32>,
    pub closed: Option<bool>,
    pub note: Option<String>,
}

fn parse_weekdays(raw: &str) -> Vec<u32> {
    raw.split(',').filter_map(|d| d.parse().ok()).collect()
}

fn weekdays_text(days: &[u32]) -> AppResult<String> {
    if days.iter().any(|d| !(1..=7).contains(d)) {
        return Err(AppError::validation(
            "invalid_weekday",
            "休息日应为 1（周一）到 7（周日）",
        ));
    }
    let mut days = days.to_vec();
    days.sort_unstable();
    days.dedup();
    if days.len() == 7 {
        return Err(AppError::validation("invalid_weekday", "不能每天都休息"));
    }
    Ok(days
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

fn check_capacity(capacity: i32) -> AppResult<i32> {
    if (0..=MAX_CAPACITY).contains(&capacity) {
        Ok(capacity)
    } else {
        Err(AppError::validation(
            "invalid_capacity",
            format!("每日容量应在 0–{MAX_CAPACITY} 之间"),
        ))
    }
}

fn check_code(raw: &str) -> AppResult<String> {
    let code = raw.trim().to_uppercase();
    if (2..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(code)
    } else {
        Err(AppError::validation(
            "invalid_institution_code",
            "机构代码应为 2–32 个字母、数字、- 或 _",
        ))
    }
}

async fn check_serves(
    db: &impl ConnectionTrait,
    actor: &Actor,
    serves: &[String],
) -> AppResult<Vec<AreaCode>> {
    if serves.is_empty() {
        return Err(AppError::validation(
            "invalid_serves",
            "请至少指定一个服务区域",
        ));
    }
    let mut codes = Vec::new();
    for raw in serves {
        let code = area::existing(db, raw).await?;
        if !actor.scope.contains(&code) {
            return Err(AppError::out_of_scope());
        }
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

async fn serves_of(db: &impl ConnectionTrait, ids: &[i32]) -> AppResult<HashMap<i32, Vec<String>>> {
    let mut map: HashMap<i32, Vec<String>> = HashMap::new();
    for row in institution_areas::Entity::find()
        .filter(institution_areas::Column::InstitutionId.is_in(ids.iter().copied()))
        .order_by_asc(institution_areas::Column::AreaCode)
        .all(db)
        .await?
    {
        map.entry(row.institution_id)
            .or_default()
            .push(row.area_code);
    }
    Ok(map)
}

fn view(model: institutions::Model, serves: Vec<String>) -> InstitutionView {
    let kind = Kind::parse(&model.kind);
    InstitutionView {
        id: model.id,
        code: model.code,
        name: model.name,
        kind,
        kind_label: kind.label(),
        area_code: model.area_code,
        daily_capacity: model.daily_capacity,
        closed_weekdays: parse_weekdays(&model.closed_weekdays),
        serves,
        active: model.active,
        address: model.address,
    }
}

async fn replace_serves(
    db: &impl ConnectionTrait,
    institution_id: i32,
    serves: &[AreaCode],
) -> AppResult<()> {
    institution_areas::Entity::delete_many()
        .filter(institution_areas::Column::InstitutionId.eq(institution_id))
        .exec(db)
        .await?;
    institution_areas::Entity::insert_many(serves.iter().map(|code| {
        institution_areas::ActiveModel {
            institution_id: Set(institution_id),
            area_code: Set(code.as_str().to_owned()),
            ..Default::default()
        }
    }))
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// A new institution checked against the caller's scope: made by [`prepare_create`],
/// written by [`create`].
pub struct Registration {
    new: NewInstitution,
    code: String,
    name: String,
    location: AreaCode,
    capacity: i32,
    closed: String,
    serves: Vec<AreaCode>,
}

/// Checks a new institution: its code, name, location and areas served in the caller's
/// scope, capacity and closed weekdays.
pub async fn prepare_create(
    db: &impl ConnectionTrait,
    actor: &Actor,
    new: NewInstitution,
) -> AppResult<Registration> {
    let code = check_code(&new.code)?;
    let name = crate::validate::check_name(&new.name, "机构名称", 100)?;
    let location = area::existing(db, &new.area_code).await?;
    if !actor.scope.contains(&location) {
        return Err(AppError::out_of_scope());
    }
    let capacity = check_capacity(new.daily_capacity)?;
    let closed = weekdays_text(&new.closed_weekdays)?;
    let serves = check_serves(db, actor, &new.serves).await?;
    Ok(Registration {
        new,
        code,
        name,
        location,
        capacity,
        closed,
        serves,
    })
}

/// Registers an institution checked by [`prepare_create`] (office); a code already used is a
/// conflict.
pub async fn create(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    registration: Registration,
) -> AppResult<InstitutionView> {
    let Registration {
        new,
        code,
        name,
        location,
        capacity,
        closed,
        serves,
    } = registration;
    if institutions::Entity::find()
        .filter(institutions::Column::Code.eq(&code))
        .one(txn)
        .await?
        .is_some()
    {
        return Err(AppError::Conflict(format!("机构代码 {code} 已被使用")));
    }
    let now = Utc::now();
    let model = institutions::ActiveModel {
        code: Set(code),
        name: Set(name),
        kind: Set(new.kind.code().to_owned()),
        area_code: Set(location.as_str().to_owned()),
        daily_capacity: Set(capacity),
        closed_weekdays: Set(closed),
        address: Set(crate::validate::optional_name(
            new.address.as_deref(),
            "地址",
            200,
        )?),
        active: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    replace_serves(txn, model.id, &serves).await?;
    let serves: Vec<String> = serves.into_iter().map(String::from).collect();
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "institution.create",
            entity: "institution",
            entity_id: Some(model.id.to_string()),
            area_code: Some(location),
            summary: json!({"code": model.code, "name": model.name, "daily_capacity": capacity, "serves": serves}),
        },
    )
    .await?;
    Ok(view(model, serves))
}

/// Every institution (any signed-in user may see where residents can be examined).
pub async fn list(db: &impl ConnectionTrait) -> AppResult<Vec<InstitutionView>> {
    let models = institutions::Entity::find()
        .order_by_asc(institutions::Column::Code)
        .all(db)
        .await?;
    let ids: Vec<i32> = models.iter().map(|m| m.id).collect();
    let mut serves = serves_of(db, &ids).await?;
    Ok(models
        .into_iter()
        .map(|m| {
            let s = serves.remove(&m.id).unwrap_or_default();
            view(m, s)
        })
        .collect())
}

pub async fn find(db: &impl ConnectionTrait, id: i32) -> AppResult<institutions::Model> {
    institutions::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("机构 {id} 不存在")))
}

pub async fn find_by_code(
    db: &impl ConnectionTrait,
    code: &str,
) -> AppResult<Option<institutions::Model>> {
    Ok(institutions::Entity::find()
        .filter(institutions::Column::Code.eq(code.trim().to_uppercase()))
        .one(db)
        .await?)
}

/// Institutions by code, each looked up once while a file is read.
#[derive(Default)]
pub struct CodeLookup(HashMap<String, Option<institutions::Model>>);

impl CodeLookup {
    pub async fn get(
        &mut self,
        db: &impl ConnectionTrait,
        code: &str,
    ) -> AppResult<Option<institutions::Model>> {
        if !self.0.contains_key(code) {
            let found = find_by_code(db, code).await?;
            self.0.insert(code.to_owned(), found);
        }
        Ok(self.0.get(code).cloned().flatten())
    }
}

pub async fn get(db: &impl ConnectionTrait, id: i32) -> AppResult<InstitutionView> {
    let model = find(db, id).await?;
    let serves = serves_of(db, &[id]).await?.remove(&id).unwrap_or_default();
    Ok(view(model, serves))
}

/// Whether `actor` runs this institution's calendar: the office (in scope), or its own staff.
pub fn may_manage(actor: &Actor, institution: &institutions::Model) -> bool {
    match actor.role {
        Role::Office => AreaCode::parse(&institution.area_code)
            .map(|code| actor.scope.contains(&code))
            .unwrap_or(false),
        Role::Institution => actor.institution_id == Some(institution.id),
        _ => false,
    }
}

fn require_manage(actor: &Actor, institution: &institutions::Model) -> AppResult<()> {
    if may_manage(actor, institution) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "无权管理机构「{}」",
            institution.name
        )))
    }
}

/// Changes an institution: its staff may change name, capacity and closed weekdays; the
/// areas served and whether it is active are the office's.
pub async fn update(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    changes: InstitutionChanges,
) -> AppResult<InstitutionView> {
    let current = find(txn, id).await?;
    require_manage(actor, &current)?;
    if actor.role != Role::Office && (changes.serves.is_some() || changes.active.is_some()) {
        return Err(AppError::Forbidden(
            "服务区域和启用状态由县卫健委设置".to_owned(),
        ));
    }
    let mut model: institutions::ActiveModel = current.clone().into();
    if let Some(name) = &changes.name {
        model.name = Set(crate::validate::check_name(name, "机构名称", 100)?);
    }
    if let Some(address) = &changes.address {
        model.address = Set(crate::validate::optional_name(Some(address), "地址", 200)?);
    }
    if let Some(capacity) = changes.daily_capacity {
        model.daily_capacity = Set(check_capacity(capacity)?);
    }
    if let Some(days) = &changes.closed_weekdays {
        model.closed_weekdays = Set(weekdays_text(days)?);
    }
    if let Some(active) = changes.active {
        model.active = Set(active);
    }
    model.updated_at = Set(Utc::now());
    let saved = model.update(txn).await?;
    if saved.daily_capacity != current.daily_capacity
        || saved.closed_weekdays != current.closed_weekdays
    {
        follow_defaults(txn, &saved).await?;
    }
    if let Some(serves) = &changes.serves {
        let serves = check_serves(txn, actor, serves).await?;
        replace_serves(txn, id, &serves).await?;
    }
    let serves = serves_of(txn, &[id]).await?.remove(&id).unwrap_or_default();
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "institution.update",
            entity: "institution",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&saved.area_code).ok(),
            summary: json!({
                "name": saved.name,
                "daily_capacity": {"from": current.daily_capacity, "to": saved.daily_capacity},
                "closed_weekdays": {"from": current.closed_weekdays, "to": saved.closed_weekdays},
                "active": saved.active,
                "serves": serves,
            }),
        },
    )
    .await?;
    Ok(view(saved, serves))
}

/// Days from today on that were never set by hand take the institution's new defaults; a
/// day keeps at least the places already taken, and stays open while anyone is booked.
async fn follow_defaults(
    db: &impl ConnectionTrait,
    institution: &institutions::Model,
) -> AppResult<()> {
    let rows = institution_days::Entity::find()
        .filter(institution_days::Column::InstitutionId.eq(institution.id))
        .filter(institution_days::Column::Overridden.eq(false))
        .filter(institution_days::Column::Day.gte(crate::time::today()))
        .all(db)
        .await?;
    for row in rows {
        let defaults = default_day(institution, row.day);
        // A day that now falls on a closed weekday but has bookings stays open for them only.
        let (capacity, closed) = match (defaults.closed, row.booked) {
            (true, 0) => (defaults.capacity, true),
            (true, booked) => (booked, false),
            (false, booked) => (defaults.capacity.max(booked), false),
        };
        if capacity == row.capacity && closed == row.closed {
            continue;
        }
        institution_days::Entity::update_many()
            .col_expr(institution_days::Column::Capacity, capacity.into())
            .col_expr(institution_days::Column::Closed, closed.into())
            .filter(institution_days::Column::Id.eq(row.id))
            .filter(institution_days::Column::Overridden.eq(false))
            .filter(institution_days::Column::Booked.eq(row.booked))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Whether the institution examines residents of `village`.
pub async fn serves_village(
    db: &impl ConnectionTrait,
    institution_id: i32,
    village: &AreaCode,
) -> AppResult<bool> {
    Ok(institution_areas::Entity::find()
        .filter(institution_areas::Column::InstitutionId.eq(institution_id))
        .all(db)
        .await?
        .iter()
        .filter_map(|row| AreaCode::parse(&row.area_code).ok())
        .any(|area| area.contains(village)))
}

/// The active institutions that examine residents of `village`, by name.
pub async fn serving(
    db: &impl ConnectionTrait,
    village: &AreaCode,
) -> AppResult<Vec<institutions::Model>> {
    let ids: Vec<i32> = institution_areas::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .filter(|row| AreaCode::parse(&row.area_code).is_ok_and(|area| area.contains(village)))
        .map(|row| row.institution_id)
        .collect();
    Ok(institutions::Entity::find()
        .filter(institutions::Column::Id.is_in(ids))
        .filter(institutions::Column::Active.eq(true))
        .order_by_asc(institutions::Column::Name)
        .all(db)
        .await?)
}

/// A day without its own row: the institution's defaults.
pub fn default_day(institution: &institutions::Model, day: NaiveDate) -> DayView {
    let closed =
        parse_weekdays(&institution.closed_weekdays).contains(&day.weekday().number_from_monday());
    DayView {
        day,
        capacity: institution.daily_capacity,
        booked: 0,
        remaining: if closed {
            0
        } else {
            institution.daily_capacity
        },
        closed,
        note: None,
    }
}

fn day_view(row: institution_days::Model) -> DayView {
    DayView {
        day: row.day,
        capacity: row.capacity,
        booked: row.booked,
        remaining: if row.closed {
            0
        } else {
            (row.capacity - row.booked).max(0)
        },
        closed: row.closed,
        note: row.note,
    }
}

/// Calendar days the service deals in: campaigns run from 2000 to 2101.
pub fn check_date(day: NaiveDate) -> AppResult<()> {
    if (2000..=2101).contains(&day.year()) {
        Ok(())
    } else {
        Err(AppError::validation(
            "invalid_date",
            format!("日期 {day} 超出范围（2000–2101 年）"),
        ))
    }
}

pub fn check_range(from: NaiveDate, to: NaiveDate) -> AppResult<()> {
    check_date(from)?;
    check_date(to)?;
    if to < from || (to - from).num_days() >= MAX_DAYS {
        return Err(AppError::validation(
            "invalid_range",
            format!("日期范围应从早到晚，且不超过 {MAX_DAYS} 天"),
        ));
    }
    Ok(())
}

/// The calendar from `from` to `to` inclusive.
pub async fn calendar(
    db: &impl ConnectionTrait,
    institution: &institutions::Model,
    from: NaiveDate,
    to: NaiveDate,
) -> AppResult<Vec<DayView>> {
    check_range(from, to)?;
    let mut stored: HashMap<NaiveDate, institution_days::Model> = institution_days::Entity::find()
        .filter(institution_days::Column::InstitutionId.eq(institution.id))
        .filter(institution_days::Column::Day.between(from, to))
        .all(db)
        .await?
        .into_iter()
        .map(|d| (d.day, d))
        .collect();
    Ok(from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|day| match stored.remove(&day) {
            Some(row) => day_view(row),
            None => default_day(institution, day),
        })
        .collect())
}

/// Makes sure a day has its row (with the defaults), so that bookings can change it with a
/// conditional update. Concurrent callers are fine: the unique index keeps one row.
pub async fn ensure_day(
    db: &impl ConnectionTrait,
    institution: &institutions::Model,
    day: NaiveDate,
) -> AppResult<()> {
    let defaults = default_day(institution, day);
    institution_days::Entity::insert(institution_days::ActiveModel {
        institution_id: Set(institution.id),
        day: Set(day),
        capacity: Set(defaults.capacity),
        booked: Set(0),
        closed: Set(defaults.closed),
        note: Set(None),
        overridden: Set(false),
        updated_at: Set(Utc::now()),
        ..Default::default()
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::columns([
            institution_days::Column::InstitutionId,
            institution_days::Column::Day,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Takes `n` places of a day, or none: the statement itself checks the room left, so two
/// bookings racing for the last places cannot both get them. The day's row is made first if
/// it has none. Returns whether the places were taken.
pub async fn reserve(
    db: &impl ConnectionTrait,
    institution: &institutions::Model,
    day: NaiveDate,
    n: i32,
) -> AppResult<bool> {
    ensure_day(db, institution, day).await?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE institution_days SET booked = booked + ")
        .bind(n)
        .push(", updated_at = ")
        .bind(Utc::now())
        .push(" WHERE institution_id = ")
        .bind(institution.id)
        .push(" AND day = ")
        .bind(day)
        .push(" AND closed = ")
        .bind(false)
        .push(" AND booked + ")
        .bind(n)
        .push(" <= capacity");
    Ok(db.execute_raw(sql.build()).await?.rows_affected() == 1)
}

/// Gives `n` places of a day back (never below none booked).
pub async fn release(
    db: &impl ConnectionTrait,
    institution_id: i32,
    day: NaiveDate,
    n: i32,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE institution_days SET booked = booked - ")
        .bind(n)
        .push(", updated_at = ")
        .bind(Utc::now())
        .push(" WHERE institution_id = ")
        .bind(institution_id)
        .push(" AND day = ")
        .bind(day)
        .push(" AND booked >= ")
        .bind(n);
    db.execute_raw(sql.build()).await?;
    Ok(())
}

/// Applies one day's change inside a transaction; capacity never goes below what is booked.
async fn apply_day(
    txn: &impl ConnectionTrait,
    institution: &institutions::Model,
    day: NaiveDate,
    change: &DayChange,
) -> Result<(DayView, DayView), AppError> {
    check_date(day)?;
    if let Some(capacity) = change.capacity {
        check_capacity(capacity)?;
    }
    let note = crate::validate::optional_name(change.note.as_deref(), "备注", 100)?;
    ensure_day(txn, institution, day).await?;
    let row = institution_days::Entity::find()
        .filter(institution_days::Column::InstitutionId.eq(institution.id))
        .filter(institution_days::Column::Day.eq(day))
        .one(txn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("calendar day vanished"))?;
    let before = day_view(row.clone());
    let capacity = change.capacity.unwrap_or(row.capacity);
    let closed = change.closed.unwrap_or(row.closed);
    if capacity < row.booked || (closed && row.booked > 0) {
        return Err(AppError::refused(
            "capacity_below_booked",
            format!(
                "{day} 已预约 {} 人，容量不能少于已预约人数，也不能设为休息；请先改约或取消预约",
                row.booked
            ),
        ));
    }
    // The booked count is re-checked in the statement itself, in case a booking landed
    // between the read and the write.
    let result = institution_days::Entity::update_many()
        .col_expr(institution_days::Column::Capacity, capacity.into())
        .col_expr(institution_days::Column::Closed, closed.into())
        .col_expr(
            institution_days::Column::Note,
            sea_orm::sea_query::Expr::value(note.clone().or(row.note.clone())),
        )
        .col_expr(
            institution_days::Column::UpdatedAt,
            sea_orm::sea_query::Expr::value(Utc::now()),
        )
        .col_expr(institution_days::Column::Overridden, true.into())
        .filter(institution_days::Column::Id.eq(row.id))
        .filter(institution_days::Column::Booked.lte(capacity))
        .filter(if closed {
            institution_days::Column::Booked.eq(0)
        } else {
            institution_days::Column::Booked.gte(0)
        })
        .exec(txn)
        .await?;
    if result.rows_affected == 0 {
        return Err(AppError::Conflict(format!(
            "{day} 的预约人数刚刚发生变化，请刷新后重试"
        )));
    }
    let after = DayView {
        capacity,
        closed,
        remaining: if closed { 0 } else { capacity - row.booked },
        note: note.or(row.note),
        ..before.clone()
    };
    Ok((before, after))
}

/// Changes one day of an institution's calendar (office or the institution's staff).
pub async fn set_day(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    day: NaiveDate,
    change: DayChange,
) -> AppResult<DayView> {
    let institution = find(txn, id).await?;
    require_manage(actor, &institution)?;
    let (before, after) = apply_day(txn, &institution, day, &change).await?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "institution.set_day",
            entity: "institution",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&institution.area_code).ok(),
            summary: json!({"day": day, "from": before, "to": after}),
        },
    )
    .await?;
    Ok(after)
}

const CAL_INSTITUTION: &[&str] = &["机构代码", "institution_code", "institution"];
const CAL_DATE: &[&str] = &["日期", "date", "day"];
const CAL_CAPACITY: &[&str] = &["容量", "人数", "capacity"];
const CAL_CLOSED: &[&str] = &["休息", "closed"];
const CAL_NOTE: &[&str] = &["备注", "note"];

fn parse_flag(raw: &str) -> Option<bool> {
    match raw.trim().to_lowercase().as_str() {
        "" | "否" | "0" | "no" | "false" | "n" => Some(false),
        "是" | "1" | "yes" | "true" | "y" | "休息" => Some(true),
        _ => None,
    }
}

/// What a calendar upload did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CalendarImport {
    pub summary: ImportSummary,
    pub rejected_rows: Vec<RejectedRow>,
    pub unknown_columns: Vec<String>,
    /// The header as read, for writing the rejected rows back.
    #[serde(skip)]
    pub headers: Vec<String>,
}

/// A calendar CSV read, with its columns found (made by [`read_calendar`]): what
/// [`import_calendar`] applies.
pub struct CalendarFile {
    table: CsvTable,
    inst_col: usize,
    date_col: usize,
    cap_col: Option<usize>,
    closed_col: Option<usize>,
    note_col: Option<usize>,
    unknown_columns: Vec<String>,
}

/// Reads a calendar CSV (institution code, date, capacity, closed, note). A file without the
/// code and date columns, or with neither capacity nor closed, is refused whole.
pub fn read_calendar(bytes: &[u8]) -> AppResult<CalendarFile> {
    let table = CsvTable::read(bytes)?;
    let ([inst_col, date_col, cap_col, closed_col, note_col], unknown_columns) = map_headers(
        &table.headers,
        [
            CAL_INSTITUTION,
            CAL_DATE,
            CAL_CAPACITY,
            CAL_CLOSED,
            CAL_NOTE,
        ],
    );
    let (Some(inst_col), Some(date_col)) = (inst_col, date_col) else {
        return Err(AppError::validation(
            "missing_columns",
            "表头缺少必需的列：机构代码（institution_code）和日期（date）",
        ));
    };
    if cap_col.is_none() && closed_col.is_none() {
        return Err(AppError::validation(
            "missing_columns",
            "表头至少需要容量（capacity）或休息（closed）一列",
        ));
    }
    table.ensure_rows()?;
    Ok(CalendarFile {
        table,
        inst_col,
        date_col,
        cap_col,
        closed_col,
        note_col,
        unknown_columns,
    })
}

/// Applies a calendar file read by [`read_calendar`]: each good row changes one day; a row
/// the caller may not change, or that would put capacity below the bookings, is rejected
/// with its reason.
pub async fn import_calendar(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    file: CalendarFile,
) -> AppResult<CalendarImport> {
    let CalendarFile {
        table,
        inst_col,
        date_col,
        cap_col,
        closed_col,
        note_col,
        unknown_columns,
    } = file;
    let mut summary = ImportSummary::default();
    let mut rejected = Vec::new();
    let mut institutions = crate::institution::CodeLookup::default();
    for (line, record) in &table.rows {
        let values: Vec<String> = match record {
            Ok(r) => r.iter().map(str::to_owned).collect(),
            Err(reason) => {
                rejected.push(RejectedRow::new(
                    *line,
                    Vec::new(),
                    "unreadable_row",
                    reason.clone(),
                ));
                continue;
            }
        };
        let get = |col: Option<usize>| {
            col.and_then(|c| values.get(c))
                .map(|s| s.trim())
                .unwrap_or("")
        };
        let code = get(Some(inst_col)).to_uppercase();
        let Some(institution) = institutions.get(txn, &code).await? else {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "unknown_institution",
                format!("机构 {code} 不存在"),
            ));
            continue;
        };
        if !may_manage(actor, &institution) {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "out_of_scope",
                format!("无权管理机构 {code}"),
            ));
            continue;
        }
        let Some(day) = crate::validate::parse_date(get(Some(date_col))) else {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "invalid_date",
                "日期应为 YYYY-MM-DD".to_owned(),
            ));
            continue;
        };
        let capacity = match get(cap_col) {
            "" => None,
            raw => match raw.parse::<i32>() {
                Ok(c) if check_capacity(c).is_ok() => Some(c),
                _ => {
                    rejected.push(RejectedRow::new(
                        *line,
                        values,
                        "invalid_capacity",
                        format!("容量应为 0–{MAX_CAPACITY} 的整数"),
                    ));
                    continue;
                }
            },
        };
        let Some(closed) = parse_flag(get(closed_col)) else {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "invalid_closed",
                "休息一列应为 是 或 否".to_owned(),
            ));
            continue;
        };
        let note = match get(note_col) {
            "" => None,
            n => Some(n.to_owned()),
        };
        let change = DayChange {
            capacity,
            closed: closed_col.map(|_| closed),
            note,
        };
        match apply_day(txn, &institution, day, &change).await {
            Ok((before, after)) if before == after => summary.unchanged += 1,
            Ok(_) => summary.updated += 1,
            Err(
                e
                @ (AppError::Validation { .. } | AppError::Refused { .. } | AppError::Conflict(_)),
            ) => {
                rejected.push(RejectedRow::new(*line, values, e.code(), e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    summary.rejected = rejected.len() as u64;
    if summary.updated > 0 {
        audit::record(
            txn,
            actor,
            AuditEvent {
                action: "institution.import_calendar",
                entity: "institution",
                entity_id: None,
                area_code: actor.scope.area().cloned(),
                summary: json!({"updated": summary.updated, "unchanged": summary.unchanged, "rejected": summary.rejected}),
            },
        )
        .await?;
    }
    Ok(CalendarImport {
        summary,
        rejected_rows: rejected,
        unknown_columns,
        headers: table.header_names(),
    })
}
