//! Reports the county office is judged on: progress (target, notified, reached, appointed,
//! examined, refused, exempt and the rates) for any slice — area, cohort, migrant type,
//! special situation, route, date range —, daily time series, township and village rankings
//! with the bottom three called out, and the reach figures (messages per channel and
//! provider, contact attempts, replies). Everything is read from the report cube
//! ([`cube`]), which a scheduled refresh keeps current; each answer says as of when.

pub mod bulletin;
pub mod cube;
pub mod export;
pub mod progress;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use entities::areas;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::area::AreaCode;
use crate::auth::Actor;
use crate::campaign::{self, Campaign, TargetGroup};
use crate::db::Sql;
use crate::error::{AppError, AppResult};
use crate::registry::{Cohort, MigrantType, Special};
use cube::Counts;

pub use cube::Refreshed;

/// The figures of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Figures {
    /// Enrolled residents (the campaign's cohorts in the area), exempt ones included.
    pub population: i64,
    /// Deceased or moved out of the county: outside the target.
    pub exempt: i64,
    /// 应检: population − exempt. Every rate is against it.
    pub target: i64,
    /// At least one notice sent or one contact attempt made.
    pub notified: i64,
    /// 触达: a message delivered, or an attempt that reached the person or a relative.
    pub reached: i64,
    pub appointed: i64,
    /// Examined, wherever (by home village): at an institution of the county or elsewhere
    /// with evidence.
    pub examined: i64,
    /// Of `examined`: elsewhere, with evidence (migrants examined where they live).
    pub examined_elsewhere: i64,
    /// Examined at the institutions located in this area (by examining place), among the
    /// residents the report covers; area rows only.
    pub examined_here: Option<i64>,
    /// Confirmed refusal registrations that stand.
    pub refused: i64,
    /// reached / target (a fraction; null when the target is 0).
    pub reach_rate: Option<f64>,
    /// examined / target.
    pub exam_rate: Option<f64>,
    /// refused / target.
    pub refusal_rate: Option<f64>,
}

fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

impl Figures {
    fn of(counts: &Counts, elsewhere: i64, here: Option<i64>) -> Self {
        let target = counts.target();
        Figures {
            population: counts.population,
            exempt: counts.exempt,
            target,
            notified: counts.notified,
            reached: counts.reached,
            appointed: counts.appointed,
            examined: counts.examined,
            examined_elsewhere: elsewhere,
            examined_here: here,
            refused: counts.refused,
            reach_rate: rate(counts.reached, target),
            exam_rate: rate(counts.examined, target),
            refusal_rate: rate(counts.refused, target),
        }
    }
}

/// What a report row is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    None,
    Township,
    Village,
    Cohort,
    MigrantType,
    Special,
    Route,
}

impl Dimension {
    pub fn parse(raw: &str) -> AppResult<Self> {
        serde_json::from_value(serde_json::json!(raw)).map_err(|_| {
            AppError::validation(
                "invalid_dimension",
                "by 可选 none、township、village、cohort、migrant_type、special、route",
            )
        })
    }

    fn column(self) -> Option<&'static str> {
        match self {
            Dimension::None => None,
            Dimension::Township => Some("township_code"),
            Dimension::Village => Some("village_code"),
            Dimension::Cohort => Some("cohort"),
            Dimension::MigrantType => Some("migrant_type"),
            Dimension::Special => Some("special"),
            Dimension::Route => Some("route"),
        }
    }

    /// The Chinese column header of the group.
    pub fn header(self) -> &'static str {
        match self {
            Dimension::None => "范围",
            Dimension::Township => "乡镇（场）",
            Dimension::Village => "村（社区）",
            Dimension::Cohort => "年龄组",
            Dimension::MigrantType => "流动类型",
            Dimension::Special => "特殊情况",
            Dimension::Route => "体检方式",
        }
    }

    fn is_area(self) -> bool {
        matches!(self, Dimension::Township | Dimension::Village)
    }
}

/// The slice of a report: an area in the caller's scope and optional dimension values.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SliceQuery {
    /// Area code (county, township or village); default the caller's scope.
    pub area: Option<String>,
    /// Group rows by: none, township, village, cohort, migrant_type, special, route
    /// (default: the level under the area).
    pub by: Option<String>,
    /// Age group: 0-6, 7-14, 15-64, 65-79, 80+.
    pub cohort: Option<String>,
    /// local, in_region_permit, in_region_no_permit, out_of_region, student_away,
    /// official_away.
    pub migrant_type: Option<String>,
    /// A special situation code, or `none`.
    pub special: Option<String>,
    /// clinic, home_visit, records, seasonal, facility.
    pub route: Option<String>,
    /// Figures as they stood at the end of this local day (default: now).
    pub to: Option<NaiveDate>,
    /// With `from`: what happened from this day to `to` (the target stays the one at `to`).
    pub from: Option<NaiveDate>,
    /// json (default), csv or xlsx.
    pub format: Option<String>,
}

/// A checked slice.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Slice {
    pub area_code: Option<String>,
    pub cohort: Option<String>,
    pub migrant_type: Option<String>,
    pub special: Option<String>,
    pub route: Option<String>,
}

const ROUTES: [(&str, &str); 5] = [
    ("clinic", "机构体检"),
    ("home_visit", "上门体检"),
    ("records", "医院记录"),
    ("seasonal", "季节性体检"),
    ("facility", "监管场所"),
];

fn invalid(field: &str, raw: &str) -> AppError {
    AppError::validation("invalid_value", format!("{field} 的取值 {raw} 无效"))
}

impl Slice {
    /// Checks the filters and that the area is the caller's.
    pub fn check(actor: &Actor, q: &SliceQuery) -> AppResult<(Slice, AreaScope)> {
        let area = match q.area.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(raw) => {
                let code = crate::validate::parse_area(raw)?;
                if !actor.scope.contains(&code) {
                    return Err(AppError::out_of_scope());
                }
                Some(code)
            }
            None => actor.scope.area().cloned(),
        };
        let cohort = match q.cohort.as_deref() {
            Some(raw) => Some(
                serde_json::from_value::<Cohort>(serde_json::json!(raw.trim()))
                    .map(|_| raw.trim().to_owned())
                    .map_err(|_| invalid("cohort", raw))?,
            ),
            None => None,
        };
        let migrant_type = match q.migrant_type.as_deref() {
            Some(raw) => Some(
                MigrantType::parse(raw)
                    .ok_or_else(|| invalid("migrant_type", raw))?
                    .code()
                    .to_owned(),
            ),
            None => None,
        };
        let special = match q.special.as_deref() {
            Some("none") | Some("无") => Some(String::new()),
            Some(raw) => Some(
                Special::parse(raw)
                    .ok_or_else(|| invalid("special", raw))?
                    .code()
                    .to_owned(),
            ),
            None => None,
        };
        let route = match q.route.as_deref() {
            Some(raw) => Some(
                ROUTES
                    .iter()
                    .find(|(code, label)| *code == raw.trim() || *label == raw.trim())
                    .ok_or_else(|| invalid("route", raw))?
                    .0
                    .to_owned(),
            ),
            None => None,
        };
        let slice = Slice {
            area_code: area.as_ref().map(|a| a.to_string()),
            cohort,
            migrant_type,
            special,
            route,
        };
        Ok((slice, AreaScope(area)))
    }

    /// `AND …` for this slice over `report_cells`.
    fn push(&self, sql: &mut Sql) {
        if let Some(area) = &self.area_code {
            match AreaCode::parse(area) {
                Ok(code) => {
                    let (low, high) = code.code_range();
                    sql.push(" AND village_code BETWEEN ")
                        .bind(low)
                        .push(" AND ")
                        .bind(high);
                }
                // Checked on the way in; never widen the slice if it were not.
                Err(_) => {
                    sql.push(" AND 1 = 0");
                }
            }
        }
        for (condition, value) in [
            (" AND cohort = ", &self.cohort),
            (" AND migrant_type = ", &self.migrant_type),
            (" AND special = ", &self.special),
            (" AND route = ", &self.route),
        ] {
            if let Some(value) = value {
                sql.push(condition).bind(value.clone());
            }
        }
    }
}

/// The area a report covers (`None`: the whole tree).
#[derive(Debug, Clone)]
pub struct AreaScope(pub Option<AreaCode>);

impl AreaScope {
    /// The grouping a report of this area uses unless told: the level under it.
    fn default_dimension(&self) -> Dimension {
        match self.0.as_ref().map(AreaCode::level) {
            None | Some(areas::AreaLevel::County) => Dimension::Township,
            Some(_) => Dimension::Village,
        }
    }
}

/// Which figures: live, or as they stood at the end of a closed day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Live,
    Day(NaiveDate),
}

/// Sums of the cube for `slice` at `at`, grouped by `dimension` and the examining place.
async fn grouped(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    at: At,
    slice: &Slice,
    dimension: Dimension,
) -> AppResult<Vec<(String, String, Counts)>> {
    let mut sql = Sql::new(db.get_database_backend());
    let key = dimension.column().unwrap_or("''");
    sql.push("SELECT ")
        .push(key)
        .push(" AS k, exam_area")
        .push(Counts::SUMS);
    sql.push(" FROM report_cells WHERE campaign_id = ")
        .bind(campaign_id);
    match at {
        At::Live => sql.push(" AND day IS NULL"),
        At::Day(day) => sql.push(" AND day = ").bind(day),
    };
    slice.push(&mut sql);
    match dimension.column() {
        Some(column) => sql.push(" GROUP BY ").push(column).push(", exam_area"),
        None => sql.push(" GROUP BY exam_area"),
    };
    Ok(GroupedRow::find_by_statement(sql.build())
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.k, row.exam_area, row.counts))
        .collect())
}

/// A row of [`grouped`]: the group's key, the examining place and the sums.
#[derive(FromQueryResult)]
struct GroupedRow {
    k: String,
    exam_area: String,
    #[sea_orm(nested)]
    counts: Counts,
}

/// One group's counts, the examined elsewhere, and the examined at its institutions.
#[derive(Debug, Clone, Default)]
struct Group {
    counts: Counts,
    elsewhere: i64,
    here: i64,
}

/// Folds [`grouped`] rows into groups; for area groupings also by examining place.
fn fold(rows: &[(String, String, Counts)], dimension: Dimension) -> BTreeMap<String, Group> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for (key, exam_area, counts) in rows {
        let group = groups.entry(key.clone()).or_default();
        group.counts.add(counts);
        if exam_area.is_empty() {
            group.elsewhere += counts.examined;
        }
    }
    if dimension.is_area() {
        for (_, exam_area, counts) in rows {
            let Ok(place) = AreaCode::parse(exam_area) else {
                continue;
            };
            let place_key = match dimension {
                Dimension::Township => format!("{}000", &place.as_str()[..9]),
                _ => place.to_string(),
            };
            if let Some(group) = groups.get_mut(&place_key) {
                group.here += counts.examined;
            }
        }
    }
    groups
}

/// Counts at `at`, or zero before the campaign had figures.
async fn groups_at<C>(
    db: &C,
    campaign: &Campaign,
    at: At,
    slice: &Slice,
    dimension: Dimension,
) -> AppResult<BTreeMap<String, Group>>
where
    C: KeepFigures,
{
    if let At::Day(day) = at {
        if day < cube::first_day(campaign) {
            return Ok(BTreeMap::new());
        }
        ensure_day(db, campaign, day).await?;
    }
    let rows = grouped(db, campaign.id(), at, slice, dimension).await?;
    Ok(fold(&rows, dimension))
}

/// A database a report reads through, which can also keep the figures the report needs and
/// the cube does not hold yet: a closed day the backfill has not reached, or the first live
/// figures of a campaign. Keeping them writes, in transactions of their own; reports only
/// ask for it, and `flows::reports` does it (for the database connection).
pub trait KeepFigures: ConnectionTrait + Sync {
    /// Computes and keeps the figures of closed day `day`; returns how many cells it has.
    fn compute_day(
        &self,
        campaign: &Campaign,
        day: NaiveDate,
    ) -> impl Future<Output = AppResult<usize>> + Send;

    /// Rebuilds the live figures of `campaign` (and up to `backfill_days` closed days).
    fn refresh(
        &self,
        campaign: &Campaign,
        backfill_days: u32,
    ) -> impl Future<Output = AppResult<Refreshed>> + Send;
}

/// Computes a closed day's figures if they are not kept yet (a report asked for a day the
/// backfill has not reached).
pub async fn ensure_day(
    db: &impl KeepFigures,
    campaign: &Campaign,
    day: NaiveDate,
) -> AppResult<()> {
    if day >= cube::first_day(campaign) && !cube::has_day(db, campaign.id(), day).await? {
        db.compute_day(campaign, day).await?;
    }
    Ok(())
}

/// Makes sure the live figures exist (the first report of a campaign computes them).
async fn ensure_live(
    db: &impl KeepFigures,
    campaign: &Campaign,
) -> AppResult<Option<DateTime<Utc>>> {
    if let Some(at) = cube::refreshed_at(db, campaign.id()).await? {
        return Ok(Some(at));
    }
    let refreshed = db.refresh(campaign, 0).await?;
    Ok(Some(refreshed.refreshed_at))
}

/// A row of a report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Row {
    /// Area code or dimension code (`""` for no special situation, or the whole slice).
    pub key: String,
    /// The area's name or the code's Chinese label.
    pub name: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A key group's target (the plan: 65 and over and chronic patients at 95 % or more).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetRow {
    pub group: String,
    pub name: String,
    /// The campaign's exam-rate goal in percent.
    pub goal_percent: f64,
    pub target: i64,
    pub examined: i64,
    pub exam_rate: Option<f64>,
    /// The goal is reached (never when nobody is in the group).
    pub met: bool,
    /// met, missed, or no_data when nobody is in the group (no resident tagged, nobody of
    /// that age): then there is no rate to miss the goal by.
    pub status: TargetStatus,
    /// 达标, 未达标 or 无数据.
    pub status_label: String,
}

/// Where a key group stands against its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Met,
    Missed,
    NoData,
}

impl TargetStatus {
    fn of(exam_rate: Option<f64>, goal_percent: f64) -> Self {
        match exam_rate {
            None => TargetStatus::NoData,
            Some(r) if r * 100.0 >= goal_percent => TargetStatus::Met,
            Some(_) => TargetStatus::Missed,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TargetStatus::Met => "达标",
            TargetStatus::Missed => "未达标",
            TargetStatus::NoData => "无数据",
        }
    }
}

/// When the figures are from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AsOf {
    /// `live` (the latest refresh) or `day` (as they stood at the end of `day`).
    pub kind: &'static str,
    pub day: Option<NaiveDate>,
    /// When the live figures were last rebuilt from the progress rows.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// With a date range: its first day. The figures are then the change from the end of
    /// the day before to the end of `day` — a net change, which a household moving away or
    /// an exemption can make negative — and the target is the one at the end.
    pub from: Option<NaiveDate>,
    /// The campaign's time zone, which days are counted in.
    pub timezone: String,
}

impl AsOf {
    fn new(
        campaign: &Campaign,
        at: At,
        refreshed_at: Option<DateTime<Utc>>,
        from: Option<NaiveDate>,
    ) -> Self {
        let (kind, day) = match at {
            At::Live => ("live", None),
            At::Day(day) => ("day", Some(day)),
        };
        AsOf {
            kind,
            day,
            refreshed_at,
            from,
            timezone: campaign.model.timezone.clone(),
        }
    }
}

/// A progress report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Progress {
    pub campaign_id: i32,
    pub campaign_name: String,
    pub as_of: AsOf,
    pub area_code: Option<String>,
    pub area_name: String,
    pub by: Dimension,
    pub slice: Slice,
    pub rows: Vec<Row>,
    pub total: Figures,
    /// The migrant book's figures, always shown apart: per migrant type (local residents
    /// excluded) and their total.
    pub migrants: Vec<Row>,
    pub migrants_total: Figures,
    /// The campaign's exam-rate targets for this slice's area (live figures).
    pub targets: Vec<TargetRow>,
}

/// Names of areas by code.
async fn area_names(
    db: &impl ConnectionTrait,
    codes: impl IntoIterator<Item = String>,
) -> AppResult<HashMap<String, String>> {
    let codes: Vec<String> = codes.into_iter().collect();
    let mut names = HashMap::new();
    for chunk in codes.chunks(500) {
        for area in areas::Entity::find()
            .filter(areas::Column::Code.is_in(chunk.to_vec()))
            .all(db)
            .await?
        {
            names.insert(area.code, area.name);
        }
    }
    Ok(names)
}

/// The areas one level under `area` (or the townships of every county): every township or
/// village is listed, with zeros where nobody is enrolled.
async fn child_areas(
    db: &impl ConnectionTrait,
    area: &AreaScope,
    dimension: Dimension,
) -> AppResult<Vec<areas::Model>> {
    let level = match dimension {
        Dimension::Township => areas::AreaLevel::Township,
        Dimension::Village => areas::AreaLevel::Village,
        _ => return Ok(Vec::new()),
    };
    let mut query = areas::Entity::find().filter(areas::Column::Level.eq(level));
    if let Some(code) = &area.0 {
        let (low, high) = code.code_range();
        query = query
            .filter(areas::Column::Code.gte(low))
            .filter(areas::Column::Code.lte(high));
    }
    Ok(query.all(db).await?)
}

/// The Chinese label of a dimension value.
pub fn label(dimension: Dimension, key: &str) -> String {
    match dimension {
        Dimension::None => "合计".to_owned(),
        Dimension::Township | Dimension::Village => key.to_owned(),
        Dimension::Cohort => format!("{key}岁"),
        Dimension::MigrantType => MigrantType::parse(key)
            .map(|m| m.label().to_owned())
            .unwrap_or_else(|| key.to_owned()),
        Dimension::Special => {
            if key.is_empty() {
                "无".to_owned()
            } else {
                Special::parse(key)
                    .map(|s| s.label().to_owned())
                    .unwrap_or_else(|| key.to_owned())
            }
        }
        Dimension::Route => ROUTES
            .iter()
            .find(|(code, _)| *code == key)
            .map(|(_, label)| (*label).to_owned())
            .unwrap_or_else(|| key.to_owned()),
    }
}

/// Which figures a `to` day asks for: live for a day not closed yet (today, or yesterday in
/// the first minutes after midnight) and later.
fn at_for(campaign: &Campaign, to: Option<NaiveDate>) -> At {
    match to {
        Some(day) if day <= cube::last_closed_day(campaign, Utc::now()) => At::Day(day),
        _ => At::Live,
    }
}

/// Rows of `groups` (all child areas listed for area groupings), sorted by key.
async fn rows_of(
    db: &impl ConnectionTrait,
    groups: &BTreeMap<String, Group>,
    area: &AreaScope,
    dimension: Dimension,
) -> AppResult<Vec<Row>> {
    let mut keys: Vec<String> = groups.keys().cloned().collect();
    let mut names = HashMap::new();
    if dimension.is_area() {
        // Within an area every township or village is listed, nobody enrolled or not; for
        // the whole tree (the system's own bulletins) only areas with residents.
        for child in child_areas(db, area, dimension).await? {
            if area.0.is_some() && !groups.contains_key(&child.code) {
                keys.push(child.code.clone());
            }
            names.insert(child.code, child.name);
        }
        let unknown: Vec<String> = keys
            .iter()
            .filter(|k| !names.contains_key(*k))
            .cloned()
            .collect();
        names.extend(area_names(db, unknown).await?);
        keys.sort();
    } else if dimension == Dimension::Cohort {
        keys.sort_by_key(|key| cohort_order(key));
    }
    Ok(keys
        .into_iter()
        .map(|key| {
            let group = groups.get(&key).cloned().unwrap_or_default();
            let name = match dimension.is_area() {
                true => names.get(&key).cloned().unwrap_or_else(|| key.clone()),
                false => label(dimension, &key),
            };
            Row {
                figures: Figures::of(
                    &group.counts,
                    group.elsewhere,
                    dimension.is_area().then_some(group.here),
                ),
                key,
                name,
            }
        })
        .collect())
}

/// Age groups in order of age (`0-6` before `7-14` before `15-64`), not as text; anything
/// else after them.
fn cohort_order(key: &str) -> (u32, String) {
    let lowest = key
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX);
    (lowest, key.to_owned())
}

fn total_of(groups: &BTreeMap<String, Group>) -> Figures {
    let mut counts = Counts::default();
    let mut elsewhere = 0;
    for group in groups.values() {
        counts.add(&group.counts);
        elsewhere += group.elsewhere;
    }
    Figures::of(&counts, elsewhere, None)
}

/// Groups at the end of `to` (or live), or what happened from `from` to `to`.
async fn groups_in_range<C>(
    db: &C,
    campaign: &Campaign,
    slice: &Slice,
    dimension: Dimension,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> AppResult<BTreeMap<String, Group>>
where
    C: KeepFigures,
{
    let at = at_for(campaign, to);
    let mut groups = groups_at(db, campaign, at, slice, dimension).await?;
    if let Some(from) = from {
        let before = groups_at(
            db,
            campaign,
            At::Day(from - Duration::days(1)),
            slice,
            dimension,
        )
        .await?;
        for (key, earlier) in before {
            let group = groups.entry(key).or_default();
            group.counts = group.counts.since(&earlier.counts);
            group.elsewhere -= earlier.elsewhere;
            group.here -= earlier.here;
        }
    }
    Ok(groups)
}

/// A day a report may ask about: this century, and (for `from`) not after today.
fn check_day(day: Option<NaiveDate>, name: &str) -> AppResult<()> {
    if let Some(day) = day
        && !(2000..=2100).contains(&day.year())
    {
        return Err(AppError::validation(
            "invalid_date",
            format!("{name} 应在 2000–2100 年之间"),
        ));
    }
    Ok(())
}

fn check_range(
    campaign: &Campaign,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> AppResult<()> {
    check_day(from, "from")?;
    check_day(to, "to")?;
    if let Some(from) = from
        && from > cube::local_day(campaign, Utc::now())
    {
        return Err(AppError::validation(
            "invalid_range",
            "开始日期不能晚于今天",
        ));
    }
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(AppError::validation(
            "invalid_range",
            "开始日期不能晚于结束日期",
        ));
    }
    Ok(())
}

/// The progress report of a campaign for a slice in the caller's scope.
pub async fn progress<C>(
    db: &C,
    actor: &Actor,
    campaign_id: i32,
    q: &SliceQuery,
) -> AppResult<Progress>
where
    C: KeepFigures,
{
    let campaign = campaign::get(db, campaign_id).await?;
    let (slice, area) = Slice::check(actor, q)?;
    let dimension = match q.by.as_deref() {
        Some(raw) => Dimension::parse(raw)?,
        None => area.default_dimension(),
    };
    check_range(&campaign, q.from, q.to)?;
    let refreshed_at = ensure_live(db, &campaign).await?;
    let at = at_for(&campaign, q.to);

    let groups = groups_in_range(db, &campaign, &slice, dimension, q.from, q.to).await?;
    let rows = rows_of(db, &groups, &area, dimension).await?;
    let total = total_of(&groups);

    let migrant_groups = if slice.migrant_type.as_deref() == Some(MigrantType::Local.code()) {
        BTreeMap::new()
    } else {
        let mut all =
            groups_in_range(db, &campaign, &slice, Dimension::MigrantType, q.from, q.to).await?;
        all.remove(MigrantType::Local.code());
        all
    };
    let migrants = rows_of(db, &migrant_groups, &area, Dimension::MigrantType).await?;
    let migrants_total = total_of(&migrant_groups);

    let targets = targets(db, &campaign, &area).await?;
    let area_name = match &area.0 {
        Some(code) => area_names(db, [code.to_string()])
            .await?
            .remove(code.as_str())
            .unwrap_or_else(|| code.to_string()),
        None => "全部".to_owned(),
    };
    Ok(Progress {
        campaign_id,
        campaign_name: campaign.model.name.clone(),
        as_of: AsOf::new(&campaign, at, refreshed_at, q.from),
        area_code: area.0.as_ref().map(|a| a.to_string()),
        area_name,
        by: dimension,
        slice,
        rows,
        total,
        migrants,
        migrants_total,
        targets,
    })
}

/// A key group's summed figures (NULL when no row was summed).
#[derive(FromQueryResult)]
struct TagRow {
    tag: String,
    target: Option<i64>,
    examined: Option<i64>,
}

/// The campaign's exam-rate targets with live figures for `area`.
async fn targets(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    area: &AreaScope,
) -> AppResult<Vec<TargetRow>> {
    let goals: Vec<campaign::Target> =
        serde_json::from_str(&campaign.model.targets).unwrap_or_default();
    if goals.is_empty() {
        return Ok(Vec::new());
    }
    let slice = Slice {
        area_code: area.0.as_ref().map(|a| a.to_string()),
        ..Slice::default()
    };
    let by_cohort = fold(
        &grouped(db, campaign.id(), At::Live, &slice, Dimension::Cohort).await?,
        Dimension::Cohort,
    );
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT tag, SUM(target) AS target, SUM(examined) AS examined FROM report_key_groups WHERE campaign_id = ")
        .bind(campaign.id());
    slice.push(&mut sql);
    sql.push(" GROUP BY tag");
    let tags: HashMap<String, (i64, i64)> = TagRow::find_by_statement(sql.build())
        .all(db)
        .await?
        .into_iter()
        .map(|row| {
            let figures = (row.target.unwrap_or(0), row.examined.unwrap_or(0));
            (row.tag, figures)
        })
        .collect();
    let cohort = |codes: &[&str]| {
        let mut counts = Counts::default();
        for code in codes {
            if let Some(group) = by_cohort.get(*code) {
                counts.add(&group.counts);
            }
        }
        (counts.target(), counts.examined)
    };
    Ok(goals
        .into_iter()
        .filter_map(|goal| {
            let group = TargetGroup::parse(&goal.group)?;
            let ((target, examined), name) = match &group {
                TargetGroup::All => (
                    cohort(&["0-6", "7-14", "15-64", "65-79", "80+"]),
                    "全部人群".to_owned(),
                ),
                TargetGroup::Elderly => (cohort(&["65-79", "80+"]), "65岁及以上".to_owned()),
                TargetGroup::Cohort(_) => {
                    let code = group.code();
                    (cohort(&[code.as_str()]), format!("{code}岁"))
                }
                TargetGroup::KeyGroup(key) => (
                    tags.get(key.code()).copied().unwrap_or((0, 0)),
                    key.label().to_owned(),
                ),
            };
            let exam_rate = rate(examined, target);
            let status = TargetStatus::of(exam_rate, goal.percent);
            Some(TargetRow {
                group: group.code(),
                name,
                goal_percent: goal.percent,
                target,
                examined,
                exam_rate,
                met: status == TargetStatus::Met,
                status,
                status_label: status.label().to_owned(),
            })
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Time series

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Area code; default the caller's scope.
    pub area: Option<String>,
    /// none (default: the area as one line), township or village.
    pub by: Option<String>,
    /// How many days back from today (default 30, at most 366).
    pub days: Option<u32>,
    /// day (default; 每日数据), week (每周, at each Sunday) or month (每月, at each month's end).
    pub interval: Option<String>,
    pub format: Option<String>,
}

/// One point: an area's cumulative figures at the end of a day (today: live).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Point {
    pub day: NaiveDate,
    pub key: String,
    pub name: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Series {
    pub campaign_id: i32,
    pub area_code: Option<String>,
    pub by: Dimension,
    pub interval: String,
    pub refreshed_at: Option<DateTime<Utc>>,
    pub points: Vec<Point>,
    /// Closed days whose figures are not computed yet (the refresh job fills them in).
    pub pending_days: Vec<NaiveDate>,
}

fn is_period_end(interval: &str, day: NaiveDate) -> bool {
    match interval {
        "week" => day.weekday() == chrono::Weekday::Sun,
        "month" => (day + Duration::days(1)).day() == 1,
        _ => true,
    }
}

/// A kept day's sums for one group of the series.
#[derive(FromQueryResult)]
struct DayRow {
    day: NaiveDate,
    k: String,
    #[sea_orm(nested)]
    counts: Counts,
    elsewhere: Option<i64>,
}

/// Daily (weekly, monthly) cumulative progress per area.
pub async fn series<C>(
    db: &C,
    actor: &Actor,
    campaign_id: i32,
    q: &SeriesQuery,
) -> AppResult<Series>
where
    C: KeepFigures,
{
    let campaign = campaign::get(db, campaign_id).await?;
    let (slice, area) = Slice::check(
        actor,
        &SliceQuery {
            area: q.area.clone(),
            ..SliceQuery::default()
        },
    )?;
    let dimension = match q.by.as_deref() {
        Some(raw) => Dimension::parse(raw)?,
        None => Dimension::None,
    };
    if !matches!(
        dimension,
        Dimension::None | Dimension::Township | Dimension::Village
    ) {
        return Err(AppError::validation(
            "invalid_dimension",
            "趋势可按 none、township、village 分组",
        ));
    }
    let interval = q.interval.clone().unwrap_or_else(|| "day".to_owned());
    if !matches!(interval.as_str(), "day" | "week" | "month") {
        return Err(AppError::validation(
            "invalid_interval",
            "interval 可选 day、week、month",
        ));
    }
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(AppError::validation("invalid_days", "days 应在 1–366 之间"));
    }
    let refreshed_at = ensure_live(db, &campaign).await?;
    let today = cube::local_day(&campaign, Utc::now());
    let first = (today - Duration::days(i64::from(days) - 1)).max(cube::first_day(&campaign));

    // Every kept day in the range in one statement, from the per-village daily sums.
    let key = match dimension {
        Dimension::Township => "township_code",
        Dimension::Village => "village_code",
        _ => "''",
    };
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT day, ")
        .push(key)
        .push(" AS k")
        .push(Counts::SUMS);
    sql.push(", SUM(elsewhere) AS elsewhere FROM report_days WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND day >= ")
        .bind(first)
        .push(" AND day < ")
        .bind(today);
    slice.push(&mut sql);
    match dimension {
        Dimension::None => sql.push(" GROUP BY day"),
        _ => sql.push(" GROUP BY day, ").push(key),
    };
    let mut by_day: BTreeMap<NaiveDate, BTreeMap<String, Group>> = BTreeMap::new();
    for row in DayRow::find_by_statement(sql.build()).all(db).await? {
        let group = by_day.entry(row.day).or_default().entry(row.k).or_default();
        group.counts = row.counts;
        group.elsewhere = row.elsewhere.unwrap_or(0);
    }
    let live = groups_at(db, &campaign, At::Live, &slice, dimension).await?;

    let mut names = HashMap::new();
    if dimension.is_area() {
        for child in child_areas(db, &area, dimension).await? {
            names.insert(child.code, child.name);
        }
    }
    let name_of = |key: &str| match dimension {
        Dimension::None => label(Dimension::None, key),
        _ => names.get(key).cloned().unwrap_or_else(|| key.to_owned()),
    };
    let keys: Vec<String> = match dimension {
        Dimension::None => vec![String::new()],
        _ => {
            let mut keys: Vec<String> = names.keys().cloned().collect();
            for groups in by_day.values().chain([&live]) {
                keys.extend(groups.keys().cloned());
            }
            keys.sort();
            keys.dedup();
            keys
        }
    };
    let mut points = Vec::new();
    let mut pending_days = Vec::new();
    let mut day = first;
    while day <= today {
        let groups = if day == today {
            Some(&live)
        } else {
            by_day.get(&day)
        };
        if day < today && groups.is_none() && !cube::has_day(db, campaign_id, day).await? {
            pending_days.push(day);
        } else if day == today || is_period_end(&interval, day) {
            for key in &keys {
                let group = groups.and_then(|g| g.get(key)).cloned().unwrap_or_default();
                points.push(Point {
                    day,
                    key: key.clone(),
                    name: name_of(key),
                    figures: Figures::of(&group.counts, group.elsewhere, None),
                });
            }
        }
        day += Duration::days(1);
    }
    Ok(Series {
        campaign_id,
        area_code: area.0.as_ref().map(|a| a.to_string()),
        by: dimension,
        interval,
        refreshed_at,
        points,
        pending_days,
    })
}

// ---------------------------------------------------------------------------------------
// Rankings

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RankingQuery {
    /// Rank the villages of this township; default the townships of the caller's scope.
    pub township: Option<String>,
    /// day, week (default) or month: the change is since the end of the previous one.
    pub period: Option<String>,
    /// Rank as things stood at the end of this closed day (default: now).
    pub to: Option<NaiveDate>,
    pub format: Option<String>,
}

/// An area's place by one rate.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Place {
    pub rate: Option<f64>,
    /// 1 = highest; areas with equal rates share a rank (1, 2, 2, 4). Null when the area has
    /// no target.
    pub rank: Option<usize>,
    /// Among the bottom three (fewer than three areas rank below it), as called out; an area
    /// no other area is ahead of is never called out.
    pub bottom_three: bool,
    /// Rate now minus rate at the end of the previous period (a fraction).
    pub rate_change: Option<f64>,
    /// Previous rank minus this rank (positive: moved up).
    pub rank_change: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ranked {
    pub code: String,
    pub name: String,
    pub target: i64,
    pub examined: i64,
    pub reached: i64,
    pub exam: Place,
    pub reach: Place,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rankings {
    pub campaign_id: i32,
    /// township or village.
    pub level: Dimension,
    pub area_code: Option<String>,
    pub period: String,
    pub as_of: AsOf,
    /// The end of the previous period the changes are measured from.
    pub previous_day: NaiveDate,
    /// By exam rate, highest first.
    pub areas: Vec<Ranked>,
}

/// Competition ranks (ties share, the next rank skips) of `rates`, highest first; `None`
/// for areas without a rate. Also whether each is among the bottom three (ties included;
/// never an area that nobody is ahead of).
pub fn rank(rates: &[Option<f64>]) -> Vec<(Option<usize>, bool)> {
    rates
        .iter()
        .map(|rate| match rate {
            None => (None, false),
            Some(r) => {
                let higher = rates.iter().flatten().filter(|o| **o > *r).count();
                let lower = rates.iter().flatten().filter(|o| **o < *r).count();
                (Some(higher + 1), lower < 3 && higher > 0)
            }
        })
        .collect()
}

/// The last day of the period before the one holding `day`.
pub fn previous_period_end(period: &str, day: NaiveDate) -> NaiveDate {
    match period {
        "day" => day - Duration::days(1),
        "month" => day.with_day(1).unwrap_or(day) - Duration::days(1),
        _ => day - Duration::days(i64::from(day.weekday().num_days_from_monday()) + 1),
    }
}

pub async fn rankings<C>(
    db: &C,
    actor: &Actor,
    campaign_id: i32,
    q: &RankingQuery,
) -> AppResult<Rankings>
where
    C: KeepFigures,
{
    let campaign = campaign::get(db, campaign_id).await?;
    let period = q.period.clone().unwrap_or_else(|| "week".to_owned());
    if !matches!(period.as_str(), "day" | "week" | "month") {
        return Err(AppError::validation(
            "invalid_period",
            "period 可选 day、week、month",
        ));
    }
    let (slice, area, level) = match q.township.as_deref() {
        Some(raw) => {
            let code = crate::validate::parse_area(raw)?;
            if code.level() != areas::AreaLevel::Township {
                return Err(AppError::validation(
                    "invalid_area_code",
                    "township 应为乡镇（场）代码",
                ));
            }
            let (slice, area) = Slice::check(
                actor,
                &SliceQuery {
                    area: Some(code.to_string()),
                    ..SliceQuery::default()
                },
            )?;
            (slice, area, Dimension::Village)
        }
        None => {
            let (slice, area) = Slice::check(actor, &SliceQuery::default())?;
            let level = area.default_dimension();
            (slice, area, level)
        }
    };
    check_day(q.to, "to")?;
    let refreshed_at = ensure_live(db, &campaign).await?;
    let at = at_for(&campaign, q.to);
    let day = match at {
        At::Day(day) => day,
        At::Live => cube::local_day(&campaign, Utc::now()),
    };
    let previous_day = previous_period_end(&period, day);
    let now = rows_of(
        db,
        &groups_at(db, &campaign, at, &slice, level).await?,
        &area,
        level,
    )
    .await?;
    let before: HashMap<String, Figures> = rows_of(
        db,
        &groups_at(db, &campaign, At::Day(previous_day), &slice, level).await?,
        &area,
        level,
    )
    .await?
    .into_iter()
    .map(|row| (row.key, row.figures))
    .collect();

    let rates_now =
        |f: fn(&Figures) -> Option<f64>| now.iter().map(|r| f(&r.figures)).collect::<Vec<_>>();
    let exam_now = rates_now(|f| f.exam_rate);
    let reach_now = rates_now(|f| f.reach_rate);
    let before_of = |f: fn(&Figures) -> Option<f64>| {
        now.iter()
            .map(|r| before.get(&r.key).and_then(f))
            .collect::<Vec<_>>()
    };
    let exam_before = before_of(|f| f.exam_rate);
    let reach_before = before_of(|f| f.reach_rate);
    let place = |rates: &[Option<f64>], earlier: &[Option<f64>], i: usize| {
        let ranks = rank(rates);
        let ranks_before = rank(earlier);
        let (rank_now, bottom) = ranks[i];
        Place {
            rate: rates[i],
            rank: rank_now,
            bottom_three: bottom,
            rate_change: rates[i].zip(earlier[i]).map(|(a, b)| a - b),
            rank_change: rank_now
                .zip(ranks_before[i].0)
                .map(|(a, b)| b as i64 - a as i64),
        }
    };
    let mut ranked: Vec<Ranked> = now
        .iter()
        .enumerate()
        .map(|(i, row)| Ranked {
            code: row.key.clone(),
            name: row.name.clone(),
            target: row.figures.target,
            examined: row.figures.examined,
            reached: row.figures.reached,
            exam: place(&exam_now, &exam_before, i),
            reach: place(&reach_now, &reach_before, i),
        })
        .collect();
    ranked.sort_by(|a, b| {
        a.exam
            .rank
            .unwrap_or(usize::MAX)
            .cmp(&b.exam.rank.unwrap_or(usize::MAX))
            .then_with(|| a.code.cmp(&b.code))
    });
    Ok(Rankings {
        campaign_id,
        level,
        area_code: area.0.as_ref().map(|a| a.to_string()),
        period,
        as_of: AsOf::new(&campaign, at, refreshed_at, None),
        previous_day,
        areas: ranked,
    })
}

// ---------------------------------------------------------------------------------------
// Reach figures

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactsQuery {
    pub area: Option<String>,
    pub format: Option<String>,
}

/// Messages of one channel through one provider.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelFigures {
    /// wechat, phone (own phone), relative (a relative's phone), email.
    pub channel: String,
    pub channel_name: String,
    pub provider: String,
    /// Handed to the provider.
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
    /// Sent, and no delivery receipt within the provider's receipt timeout (counted in
    /// `sent`, not in `delivered` nor `failed`).
    pub unconfirmed: i64,
    /// delivered / sent.
    pub delivery_rate: Option<f64>,
}

/// A cadre's own contact attempts of one channel (calls, visits, letters…).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptFigures {
    pub channel: String,
    pub channel_name: String,
    pub attempts: i64,
    /// Reached the person or a relative.
    pub reached: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplyFigures {
    /// confirm (1/确认), reschedule (2/改期), opt_out (TD/退订), unmatched.
    pub action: String,
    pub name: String,
    pub replies: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Contacts {
    pub campaign_id: i32,
    pub area_code: Option<String>,
    pub refreshed_at: Option<DateTime<Utc>>,
    pub channels: Vec<ChannelFigures>,
    /// All channels together.
    pub messages: ChannelFigures,
    pub attempts: Vec<AttemptFigures>,
    pub replies: Vec<ReplyFigures>,
    /// How the figures are counted (Chinese, for the office).
    pub note: String,
}

/// What the contacts report counts, as its note says.
pub const CONTACTS_NOTE: &str = "送达率=已送达/已发送。电子邮件没有送达回执，以邮件服务器接收为已送达。\
     “未获回执”为已发送、超过服务商回执时限仍无送达回执的消息：计入已发送，迟到的回执仍会更新。\
     “无可用渠道”为居民没有任何可用联系方式、无法发出的消息：计入失败，不计入已发送。";

fn channel_name(route: &str) -> &'static str {
    match route {
        "wechat" => "微信",
        "phone" => "短信（本人）",
        "relative" => "短信（亲属转告）",
        "email" => "电子邮件",
        "none" => "无可用渠道",
        _ => "其他",
    }
}

fn reply_name(action: &str) -> &'static str {
    match action {
        "confirm" => "确认（1）",
        "reschedule" => "改期（2）",
        "opt_out" => "退订（TD）",
        _ => "无法识别",
    }
}

/// A line of the reach figures, summed over the villages of the slice (NULL when no row was
/// summed).
#[derive(FromQueryResult)]
struct ContactLine {
    source: String,
    channel: String,
    provider: String,
    total: Option<i64>,
    succeeded: Option<i64>,
    failed: Option<i64>,
    unconfirmed: Option<i64>,
}

/// Messages sent, delivered, failed and unconfirmed per channel and provider, the cadres' attempts per
/// channel, replies per keyword — for the caller's scope (replies from unknown numbers only
/// for the whole county).
pub async fn contacts<C>(
    db: &C,
    actor: &Actor,
    campaign_id: i32,
    q: &ContactsQuery,
) -> AppResult<Contacts>
where
    C: KeepFigures,
{
    let campaign = campaign::get(db, campaign_id).await?;
    let (slice, area) = Slice::check(
        actor,
        &SliceQuery {
            area: q.area.clone(),
            ..SliceQuery::default()
        },
    )?;
    let refreshed_at = ensure_live(db, &campaign).await?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT source, channel, provider, SUM(total) AS total, SUM(succeeded) AS succeeded, \
         SUM(failed) AS failed, SUM(unconfirmed) AS unconfirmed FROM report_contacts \
         WHERE campaign_id = ",
    )
    .bind(campaign_id);
    match &area.0 {
        // The county office also sees replies from numbers no resident has (as in the
        // replies list).
        Some(code)
            if code.level() == areas::AreaLevel::County
                && actor.role == entities::users::Role::Office =>
        {
            let (low, high) = code.code_range();
            sql.push(" AND (village_code BETWEEN ")
                .bind(low)
                .push(" AND ")
                .bind(high)
                .push(" OR village_code = '')");
        }
        Some(_) => slice.push(&mut sql),
        None => {}
    }
    sql.push(" GROUP BY source, channel, provider ORDER BY source, channel, provider");
    let mut channels = Vec::new();
    let mut attempts: BTreeMap<String, AttemptFigures> = BTreeMap::new();
    let mut replies: BTreeMap<String, ReplyFigures> = BTreeMap::new();
    let (mut sent, mut delivered, mut failed, mut unconfirmed) = (0, 0, 0, 0);
    for row in ContactLine::find_by_statement(sql.build()).all(db).await? {
        let ContactLine {
            source,
            channel,
            provider,
            total,
            succeeded,
            failed: failures,
            unconfirmed: unconfirmed_here,
        } = row;
        let unconfirmed_here = unconfirmed_here.unwrap_or(0);
        let (total, succeeded, failures) = (
            total.unwrap_or(0),
            succeeded.unwrap_or(0),
            failures.unwrap_or(0),
        );
        match source.as_str() {
            "message" => {
                sent += total;
                delivered += succeeded;
                failed += failures;
                unconfirmed += unconfirmed_here;
                channels.push(ChannelFigures {
                    channel_name: channel_name(&channel).to_owned(),
                    channel,
                    provider,
                    sent: total,
                    delivered: succeeded,
                    failed: failures,
                    unconfirmed: unconfirmed_here,
                    delivery_rate: rate(succeeded, total),
                });
            }
            "attempt" => {
                let entry = attempts.entry(channel.clone()).or_insert(AttemptFigures {
                    channel_name: crate::contact::ContactChannel::parse(&channel)
                        .map(|c| c.label().to_owned())
                        .unwrap_or_else(|| channel.clone()),
                    channel,
                    attempts: 0,
                    reached: 0,
                });
                entry.attempts += total;
                entry.reached += succeeded;
            }
            _ => {
                let entry = replies.entry(channel.clone()).or_insert(ReplyFigures {
                    name: reply_name(&channel).to_owned(),
                    action: channel,
                    replies: 0,
                });
                entry.replies += total;
            }
        }
    }
    Ok(Contacts {
        campaign_id,
        area_code: area.0.as_ref().map(|a| a.to_string()),
        refreshed_at,
        channels,
        messages: ChannelFigures {
            channel: "all".to_owned(),
            channel_name: "全部渠道".to_owned(),
            provider: String::new(),
            sent,
            delivered,
            failed,
            unconfirmed,
            delivery_rate: rate(delivered, sent),
        },
        attempts: attempts.into_values().collect(),
        replies: replies.into_values().collect(),
        note: CONTACTS_NOTE.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_share_a_rank_and_the_bottom_three_include_ties() {
        let all_equal = rank(&[Some(0.5), Some(0.5)]);
        assert_eq!(all_equal, [(Some(1), false), (Some(1), false)]);
        let two = rank(&[Some(0.4), Some(0.5)]);
        assert_eq!(two, [(Some(2), true), (Some(1), false)]);
        let rates = [
            Some(0.9),
            Some(0.5),
            Some(0.5),
            Some(0.7),
            None,
            Some(0.2),
            Some(0.9),
        ];
        let ranked = rank(&rates);
        let ranks: Vec<_> = ranked.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            ranks,
            [Some(1), Some(4), Some(4), Some(3), None, Some(6), Some(1)]
        );
        let bottom: Vec<_> = ranked.iter().map(|(_, b)| *b).collect();
        // 0.2 (none lower), both 0.5 (one lower): bottom three; 0.7 has three lower.
        assert_eq!(bottom, [false, true, true, false, false, true, false]);
    }

    #[test]
    fn cohorts_sort_by_age() {
        let mut keys = vec!["0-6", "15-64", "65-79", "7-14", "80+"];
        keys.sort_by_key(|k| cohort_order(k));
        assert_eq!(keys, ["0-6", "7-14", "15-64", "65-79", "80+"]);
    }

    #[test]
    fn previous_periods_end_where_they_should() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        // Sunday 29 Nov 2026.
        assert_eq!(previous_period_end("day", d(2026, 11, 29)), d(2026, 11, 28));
        assert_eq!(
            previous_period_end("week", d(2026, 11, 29)),
            d(2026, 11, 22)
        );
        assert_eq!(
            previous_period_end("week", d(2026, 11, 30)),
            d(2026, 11, 29)
        );
        assert_eq!(
            previous_period_end("month", d(2026, 11, 29)),
            d(2026, 10, 31)
        );
        assert_eq!(previous_period_end("month", d(2026, 3, 1)), d(2026, 2, 28));
    }
}
