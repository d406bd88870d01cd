//! Campaigns: the year's 全民健康体检 with its reference date, phases, cohorts in scope,
//! exam-rate targets, time zone and quiet hours. Opening a campaign enrols the registry into
//! one progress row per resident (`enrol`), which every later figure is read from.

pub mod enrol;
pub mod tags;
pub mod worklist;

use std::str::FromStr;

use chrono::{Datelike, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use entities::campaigns;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, TransactionSession, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::error::{AppError, AppResult};
use crate::registry::{Cohort, KeyGroup};

pub use enrol::Stage;

/// The five phases of the plan (section 八), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// 摸底培训
    Survey,
    /// 部署推进
    Kickoff,
    /// 体检实施
    Exams,
    /// 查漏补检
    CatchUp,
    /// 验收总结
    Acceptance,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Survey,
        Phase::Kickoff,
        Phase::Exams,
        Phase::CatchUp,
        Phase::Acceptance,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Phase::Survey => "摸底培训",
            Phase::Kickoff => "部署推进",
            Phase::Exams => "体检实施",
            Phase::CatchUp => "查漏补检",
            Phase::Acceptance => "验收总结",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// Dates of each phase; any left out keeps its current (or default) dates.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseDates {
    pub survey: Option<DateRange>,
    pub kickoff: Option<DateRange>,
    pub exams: Option<DateRange>,
    pub catch_up: Option<DateRange>,
    pub acceptance: Option<DateRange>,
}

/// The plan's default calendar for `year`: survey in January, kick-off in February, exams
/// from 1 January to 30 September, catch-up in October, acceptance in November.
pub fn default_phases(year: i32) -> Option<[DateRange; 5]> {
    let d = |m, day| NaiveDate::from_ymd_opt(year, m, day);
    let end_of_february = d(3, 1)?.pred_opt()?;
    Some([
        DateRange {
            from: d(1, 1)?,
            to: d(1, 31)?,
        },
        DateRange {
            from: d(2, 1)?,
            to: end_of_february,
        },
        DateRange {
            from: d(1, 1)?,
            to: d(9, 30)?,
        },
        DateRange {
            from: d(10, 1)?,
            to: d(10, 31)?,
        },
        DateRange {
            from: d(11, 1)?,
            to: d(11, 30)?,
        },
    ])
}

/// A group with an exam-rate target: everyone, a cohort, all 65 and over, or a key group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetGroup {
    All,
    Cohort(Cohort),
    /// 65 and over (65–79 and 80+ together), as the plan states its key target.
    Elderly,
    KeyGroup(KeyGroup),
}

impl TargetGroup {
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        match raw {
            "all" | "全部" => Some(TargetGroup::All),
            "65+" => Some(TargetGroup::Elderly),
            _ => serde_json::from_value::<Cohort>(json!(raw))
                .ok()
                .map(TargetGroup::Cohort)
                .or_else(|| KeyGroup::parse(raw).map(TargetGroup::KeyGroup)),
        }
    }

    pub fn code(&self) -> String {
        match self {
            TargetGroup::All => "all".to_owned(),
            TargetGroup::Elderly => "65+".to_owned(),
            TargetGroup::Cohort(c) => json!(c).as_str().unwrap_or_default().to_owned(),
            TargetGroup::KeyGroup(k) => k.code().to_owned(),
        }
    }
}

/// An exam-rate target in percent for a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `all`, a cohort (`0-6` … `80+`), `65+`, or a key group (`hypertension`, `diabetes`,
    /// `severe_mental_disorder`, `maternal`, `tuberculosis`, or the Chinese name).
    pub group: String,
    /// Exam rate to reach, 0–100.
    pub percent: f64,
}

/// The plan's key targets: 65 and over and chronic patients examined at 95 % or more.
pub fn default_targets() -> Vec<Target> {
    ["65+", "hypertension", "diabetes"]
        .into_iter()
        .map(|group| Target {
            group: group.to_owned(),
            percent: 95.0,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local `HH:MM` from which nothing is sent (default 21:00).
    pub start: String,
    /// Local `HH:MM` until which nothing is sent (default 08:00).
    pub end: String,
}

/// How much documented contact a refusal registration needs ("经多次联系"): at least
/// `min_attempts` attempts on at least `min_days` different days, one of which reached the
/// person or a relative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefusalRule {
    /// Default 3.
    pub min_attempts: u32,
    /// Default 2.
    pub min_days: u32,
}

impl Default for RefusalRule {
    fn default() -> Self {
        Self {
            min_attempts: 3,
            min_days: 2,
        }
    }
}

fn check_refusal_rule(rule: RefusalRule) -> AppResult<(i32, i32)> {
    if !(1..=20).contains(&rule.min_attempts)
        || rule.min_days < 1
        || rule.min_days > rule.min_attempts
    {
        return Err(AppError::validation(
            "invalid_refusal_rule",
            "拒检登记规则：联系次数应在 1–20 之间，联系天数应在 1 到联系次数之间",
        ));
    }
    Ok((rule.min_attempts as i32, rule.min_days as i32))
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub year: i32,
    /// Default `{year}年全民健康体检`.
    pub name: Option<String>,
    /// The date ages are computed on (default 1 January of the year).
    pub reference_date: Option<NaiveDate>,
    /// `Asia/Shanghai` (default) or `Asia/Urumqi`.
    pub timezone: Option<String>,
    pub quiet_hours: Option<QuietHours>,
    /// Cohorts in scope (default all five).
    #[schema(value_type = Option<Vec<String>>)]
    pub cohorts: Option<Vec<Cohort>>,
    /// Default: 65+, hypertension and diabetes at 95 %.
    pub targets: Option<Vec<Target>>,
    #[serde(default)]
    pub phases: PhaseDates,
    /// Default: 3 attempts on 2 different days.
    pub refusal_rule: Option<RefusalRule>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignChanges {
    pub name: Option<String>,
    /// Only before the campaign is opened.
    pub reference_date: Option<NaiveDate>,
    pub timezone: Option<String>,
    pub quiet_hours: Option<QuietHours>,
    /// Only before the campaign is opened.
    #[schema(value_type = Option<Vec<String>>)]
    pub cohorts: Option<Vec<Cohort>>,
    pub targets: Option<Vec<Target>>,
    #[serde(default)]
    pub phases: PhaseDates,
    pub refusal_rule: Option<RefusalRule>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PhaseView {
    pub phase: Phase,
    /// The phase's Chinese name.
    pub label: &'static str,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    pub id: i32,
    pub year: i32,
    pub name: String,
    pub reference_date: NaiveDate,
    pub timezone: String,
    pub quiet_hours: QuietHours,
    #[schema(value_type = Vec<String>)]
    pub cohorts: Vec<Cohort>,
    pub targets: Vec<Target>,
    pub phases: Vec<PhaseView>,
    /// The phases today (in the campaign's time zone) falls in; exams overlap the first two.
    pub current_phases: Vec<Phase>,
    pub refusal_rule: RefusalRule,
    /// `draft`, `open` or `closed`.
    pub status: String,
    pub opened_at: Option<chrono::DateTime<Utc>>,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

/// A campaign read from its row; the stored text fields parsed.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub model: campaigns::Model,
    pub timezone: Tz,
    pub cohorts: Vec<Cohort>,
    pub quiet_start: NaiveTime,
    pub quiet_end: NaiveTime,
}

impl Campaign {
    pub fn from_model(model: campaigns::Model) -> AppResult<Self> {
        let timezone = Tz::from_str(&model.timezone)
            .map_err(|e| anyhow::anyhow!("campaign {} has a bad time zone: {e}", model.id))?;
        let cohorts = parse_cohorts(&model.cohorts)
            .ok_or_else(|| anyhow::anyhow!("campaign {} has bad cohorts", model.id))?;
        let time = |raw: &str| {
            NaiveTime::parse_from_str(raw, "%H:%M")
                .map_err(|e| anyhow::anyhow!("campaign {} has a bad quiet hour: {e}", model.id))
        };
        Ok(Self {
            quiet_start: time(&model.quiet_start)?,
            quiet_end: time(&model.quiet_end)?,
            timezone,
            cohorts,
            model,
        })
    }

    pub fn id(&self) -> i32 {
        self.model.id
    }

    pub fn is_open(&self) -> bool {
        self.model.status == "open"
    }

    /// Today in the campaign's time zone.
    pub fn today(&self) -> NaiveDate {
        crate::time::today_in(self.timezone)
    }

    pub fn phases(&self) -> [(Phase, DateRange); 5] {
        let m = &self.model;
        let r = |from, to| DateRange { from, to };
        [
            (Phase::Survey, r(m.survey_from, m.survey_to)),
            (Phase::Kickoff, r(m.kickoff_from, m.kickoff_to)),
            (Phase::Exams, r(m.exams_from, m.exams_to)),
            (Phase::CatchUp, r(m.catch_up_from, m.catch_up_to)),
            (Phase::Acceptance, r(m.acceptance_from, m.acceptance_to)),
        ]
    }

    /// The phases `day` falls in.
    pub fn phases_on(&self, day: NaiveDate) -> Vec<Phase> {
        self.phases()
            .into_iter()
            .filter(|(_, r)| r.from <= day && day <= r.to)
            .map(|(p, _)| p)
            .collect()
    }

    /// Exams may be booked from the first exam day to the end of the catch-up.
    pub fn exam_window(&self) -> DateRange {
        DateRange {
            from: self.model.exams_from,
            to: self.model.catch_up_to.max(self.model.exams_to),
        }
    }

    pub fn refusal_rule(&self) -> RefusalRule {
        RefusalRule {
            min_attempts: self.model.refusal_min_attempts.max(1) as u32,
            min_days: self.model.refusal_min_days.max(1) as u32,
        }
    }

    pub fn view(&self) -> CampaignView {
        let m = &self.model;
        CampaignView {
            id: m.id,
            year: m.year,
            name: m.name.clone(),
            reference_date: m.reference_date,
            timezone: m.timezone.clone(),
            quiet_hours: QuietHours {
                start: m.quiet_start.clone(),
                end: m.quiet_end.clone(),
            },
            cohorts: self.cohorts.clone(),
            targets: serde_json::from_str(&m.targets).unwrap_or_default(),
            phases: self
                .phases()
                .into_iter()
                .map(|(phase, r)| PhaseView {
                    phase,
                    label: phase.label(),
                    from: r.from,
                    to: r.to,
                })
                .collect(),
            current_phases: self.phases_on(self.today()),
            refusal_rule: self.refusal_rule(),
            status: m.status.clone(),
            opened_at: m.opened_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

fn parse_cohorts(raw: &str) -> Option<Vec<Cohort>> {
    raw.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| serde_json::from_value(json!(c)).ok())
        .collect()
}

fn cohorts_text(cohorts: &[Cohort]) -> AppResult<String> {
    if cohorts.is_empty() {
        return Err(AppError::validation(
            "invalid_cohorts",
            "至少需要一个年龄组",
        ));
    }
    let mut codes: Vec<String> = Cohort::ALL
        .into_iter()
        .filter(|c| cohorts.contains(c))
        .map(|c| json!(c).as_str().unwrap_or_default().to_owned())
        .collect();
    codes.dedup();
    Ok(codes.join(","))
}

fn check_timezone(raw: &str) -> AppResult<String> {
    let raw = raw.trim();
    // The county is in China: Beijing time, or the Xinjiang time many residents keep.
    match raw {
        "Asia/Shanghai" | "Asia/Urumqi" => Ok(raw.to_owned()),
        _ => Err(AppError::validation(
            "invalid_timezone",
            format!("时区 {raw} 不可用：可选 Asia/Shanghai、Asia/Urumqi"),
        )),
    }
}

fn check_quiet_hours(quiet: &QuietHours) -> AppResult<(String, String)> {
    let parse = |raw: &str| {
        NaiveTime::parse_from_str(raw.trim(), "%H:%M")
            .map(|t| t.format("%H:%M").to_string())
            .map_err(|_| {
                AppError::validation(
                    "invalid_quiet_hours",
                    format!("免打扰时间 {raw} 应为 HH:MM"),
                )
            })
    };
    let (start, end) = (parse(&quiet.start)?, parse(&quiet.end)?);
    if start == end {
        return Err(AppError::validation(
            "invalid_quiet_hours",
            "免打扰开始与结束时间不能相同",
        ));
    }
    Ok((start, end))
}

fn check_targets(targets: &[Target]) -> AppResult<String> {
    let mut normalised: Vec<Target> = Vec::with_capacity(targets.len());
    for target in targets {
        let group = TargetGroup::parse(&target.group).ok_or_else(|| {
            AppError::validation("invalid_target", format!("未知的目标人群 {}", target.group))
        })?;
        if !(0.0..=100.0).contains(&target.percent) || target.percent.is_nan() {
            return Err(AppError::validation(
                "invalid_target",
                format!("{} 的目标应在 0–100 之间", target.group),
            ));
        }
        let group = group.code();
        if normalised.iter().any(|t| t.group == group) {
            return Err(AppError::validation(
                "invalid_target",
                format!("目标人群 {group} 重复"),
            ));
        }
        normalised.push(Target {
            group,
            percent: target.percent,
        });
    }
    Ok(serde_json::to_string(&normalised).expect("targets serialise"))
}

/// Each phase must not end before it starts, start in the campaign's year (and end by the
/// next), and exams, catch-up and acceptance follow one another.
fn check_phases(year: i32, phases: &[(Phase, DateRange); 5]) -> AppResult<()> {
    for (phase, range) in phases {
        if range.from > range.to {
            return Err(AppError::validation(
                "invalid_phase",
                format!("{}的结束日期早于开始日期", phase.label()),
            ));
        }
        // A late catch-up or acceptance may run into the next year; nothing starts before.
        if range.from.year() < year || range.to.year() > year + 1 {
            return Err(AppError::validation(
                "invalid_phase",
                format!("{}应在 {year} 年至 {} 年之间", phase.label(), year + 1),
            ));
        }
    }
    let [_, _, exams, catch_up, acceptance] = phases.map(|(_, r)| r);
    if catch_up.from <= exams.to || acceptance.from <= catch_up.to {
        return Err(AppError::validation(
            "invalid_phase",
            "体检实施、查漏补检、验收总结三个阶段应依次进行，不能重叠",
        ));
    }
    Ok(())
}

fn apply_phases(model: &mut campaigns::Model, dates: &PhaseDates) {
    let set = |from: &mut NaiveDate, to: &mut NaiveDate, range: Option<DateRange>| {
        if let Some(r) = range {
            *from = r.from;
            *to = r.to;
        }
    };
    set(&mut model.survey_from, &mut model.survey_to, dates.survey);
    set(
        &mut model.kickoff_from,
        &mut model.kickoff_to,
        dates.kickoff,
    );
    set(&mut model.exams_from, &mut model.exams_to, dates.exams);
    set(
        &mut model.catch_up_from,
        &mut model.catch_up_to,
        dates.catch_up,
    );
    set(
        &mut model.acceptance_from,
        &mut model.acceptance_to,
        dates.acceptance,
    );
}

fn check_model(model: &campaigns::Model) -> AppResult<()> {
    let campaign = Campaign::from_model(model.clone())?;
    check_phases(model.year, &campaign.phases())?;
    if model.reference_date.year() != model.year {
        return Err(AppError::validation(
            "invalid_reference_date",
            format!("年龄计算基准日应在 {} 年内", model.year),
        ));
    }
    Ok(())
}

/// Creates a campaign in `draft`; it enrols nobody until opened.
pub async fn create<C>(db: &C, actor: &Actor, new: NewCampaign) -> AppResult<Campaign>
where
    C: ConnectionTrait + TransactionTrait,
{
    if !(2000..=2100).contains(&new.year) {
        return Err(AppError::validation(
            "invalid_year",
            "年度应在 2000–2100 之间",
        ));
    }
    let phases = default_phases(new.year).expect("a valid year has its default phases");
    let name = match new.name.as_deref() {
        Some(name) => crate::registry::check_name(name, "名称", 100)?,
        None => format!("{}年全民健康体检", new.year),
    };
    let (quiet_start, quiet_end) = check_quiet_hours(&new.quiet_hours.unwrap_or(QuietHours {
        start: "21:00".to_owned(),
        end: "08:00".to_owned(),
    }))?;
    let (refusal_min_attempts, refusal_min_days) =
        check_refusal_rule(new.refusal_rule.unwrap_or_default())?;
    let now = Utc::now();
    let mut model = campaigns::Model {
        id: 0,
        year: new.year,
        name,
        reference_date: new
            .reference_date
            .unwrap_or_else(|| NaiveDate::from_ymd_opt(new.year, 1, 1).expect("valid year")),
        timezone: check_timezone(new.timezone.as_deref().unwrap_or("Asia/Shanghai"))?,
        quiet_start,
        quiet_end,
        status: "draft".to_owned(),
        cohorts: cohorts_text(&new.cohorts.unwrap_or_else(|| Cohort::ALL.to_vec()))?,
        targets: check_targets(&new.targets.unwrap_or_else(default_targets))?,
        survey_from: phases[0].from,
        survey_to: phases[0].to,
        kickoff_from: phases[1].from,
        kickoff_to: phases[1].to,
        exams_from: phases[2].from,
        exams_to: phases[2].to,
        catch_up_from: phases[3].from,
        catch_up_to: phases[3].to,
        acceptance_from: phases[4].from,
        acceptance_to: phases[4].to,
        opened_at: None,
        refusal_min_attempts,
        refusal_min_days,
        created_at: now,
        updated_at: now,
    };
    apply_phases(&mut model, &new.phases);
    check_model(&model)?;
    let txn = crate::db::begin_write(db).await?;
    if campaigns::Entity::find()
        .filter(campaigns::Column::Year.eq(new.year))
        .one(&txn)
        .await?
        .is_some()
    {
        return Err(AppError::Conflict(format!(
            "{} 年的体检工作已经建立",
            new.year
        )));
    }
    let mut active: campaigns::ActiveModel = model.into();
    active.id = sea_orm::ActiveValue::NotSet;
    let saved = active.insert(&txn).await?;
    audit::record(
        &txn,
        actor,
        AuditEvent {
            action: "campaign.create",
            entity: "campaign",
            entity_id: Some(saved.id.to_string()),
            area_code: None,
            summary: json!({"year": saved.year, "name": saved.name}),
        },
    )
    .await?;
    txn.commit().await?;
    Campaign::from_model(saved)
}

pub async fn list(db: &impl ConnectionTrait) -> AppResult<Vec<Campaign>> {
    campaigns::Entity::find()
        .order_by_desc(campaigns::Column::Year)
        .all(db)
        .await?
        .into_iter()
        .map(Campaign::from_model)
        .collect()
}

pub async fn get(db: &impl ConnectionTrait, id: i32) -> AppResult<Campaign> {
    let model = campaigns::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("体检工作 {id} 不存在")))?;
    Campaign::from_model(model)
}

/// A campaign that is open (bookings, exams and worklists need one).
pub async fn get_open(db: &impl ConnectionTrait, id: i32) -> AppResult<Campaign> {
    let campaign = get(db, id).await?;
    if !campaign.is_open() {
        return Err(AppError::Conflict(format!(
            "体检工作「{}」未开启或已结束",
            campaign.model.name
        )));
    }
    Ok(campaign)
}

/// The open campaign, read inside a writing transaction so that a close cannot slip in
/// before it commits (a shared row lock on PostgreSQL; SQLite's write lock already holds).
pub async fn get_open_locked(db: &impl ConnectionTrait, id: i32) -> AppResult<Campaign> {
    use sea_orm::QuerySelect;
    let model = campaigns::Entity::find_by_id(id)
        .lock_shared()
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("体检工作 {id} 不存在")))?;
    let campaign = Campaign::from_model(model)?;
    if !campaign.is_open() {
        return Err(AppError::Conflict(format!(
            "体检工作「{}」未开启或已结束",
            campaign.model.name
        )));
    }
    Ok(campaign)
}

/// Changes a campaign. The reference date and cohorts decide who is enrolled, so they are
/// fixed once the campaign is open.
pub async fn update<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    changes: CampaignChanges,
) -> AppResult<Campaign>
where
    C: ConnectionTrait + TransactionTrait,
{
    let txn = crate::db::begin_write(db).await?;
    let current = get(&txn, id).await?.model;
    if current.status != "draft" && (changes.reference_date.is_some() || changes.cohorts.is_some())
    {
        return Err(AppError::Conflict(
            "体检工作已开启，不能再修改年龄计算基准日和年龄组".to_owned(),
        ));
    }
    let mut model = current.clone();
    if let Some(name) = &changes.name {
        model.name = crate::registry::check_name(name, "名称", 100)?;
    }
    if let Some(date) = changes.reference_date {
        model.reference_date = date;
    }
    if let Some(tz) = &changes.timezone {
        model.timezone = check_timezone(tz)?;
    }
    if let Some(quiet) = &changes.quiet_hours {
        (model.quiet_start, model.quiet_end) = check_quiet_hours(quiet)?;
    }
    if let Some(cohorts) = &changes.cohorts {
        model.cohorts = cohorts_text(cohorts)?;
    }
    if let Some(targets) = &changes.targets {
        model.targets = check_targets(targets)?;
    }
    if let Some(rule) = changes.refusal_rule {
        (model.refusal_min_attempts, model.refusal_min_days) = check_refusal_rule(rule)?;
    }
    apply_phases(&mut model, &changes.phases);
    check_model(&model)?;
    model.updated_at = Utc::now();
    let active: campaigns::ActiveModel = model.clone().into();
    let saved = active.reset_all().update(&txn).await?;
    audit::record(
        &txn,
        actor,
        AuditEvent {
            action: "campaign.update",
            entity: "campaign",
            entity_id: Some(id.to_string()),
            area_code: None,
            summary: json!({"from": view_json(&current), "to": view_json(&saved)}),
        },
    )
    .await?;
    txn.commit().await?;
    Campaign::from_model(saved)
}

fn view_json(model: &campaigns::Model) -> serde_json::Value {
    Campaign::from_model(model.clone())
        .map(|c| json!(c.view()))
        .unwrap_or_default()
}

/// What opening a campaign did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Opened {
    pub campaign: CampaignView,
    /// Residents enrolled (exempt ones included, as `exempt`).
    pub enrolled: u64,
}

/// Opens a draft campaign and enrols every resident of its cohorts, in one transaction.
pub async fn open<C>(db: &C, actor: &Actor, id: i32) -> AppResult<Opened>
where
    C: ConnectionTrait + TransactionTrait,
{
    let txn = crate::db::begin_write(db).await?;
    let campaign = get(&txn, id).await?;
    if campaign.model.status != "draft" {
        return Err(AppError::Conflict(format!(
            "体检工作「{}」已经开启过",
            campaign.model.name
        )));
    }
    // A campaign nobody can book into any more is refused here, with its dates, rather than
    // at the first booking (typically the plan's default calendar of a campaign set up late
    // in its own year).
    let window = campaign.exam_window();
    if campaign.today() > window.to {
        return Err(AppError::Refused {
            code: "exam_window_over",
            message: format!(
                "体检工作「{}」的体检时段（{} 至 {}，含查漏补检）已经结束，不能开启：请先修改体检实施和查漏补检阶段的日期，或建立下一年度的体检工作",
                campaign.model.name, window.from, window.to
            ),
            details: Some(json!({"exams_from": window.from, "bookable_until": window.to})),
        });
    }
    let now = Utc::now();
    let mut active: campaigns::ActiveModel = campaign.model.clone().into();
    active.status = Set("open".to_owned());
    active.opened_at = Set(Some(now));
    active.updated_at = Set(now);
    let saved = active.update(&txn).await?;
    let campaign = Campaign::from_model(saved)?;
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        // A resident registered while the campaign opens would be missed by both this
        // statement and their own enrolment (which still sees a draft): hold new
        // registrations until the campaign is open. SQLite's write lock already does.
        txn.execute_unprepared("LOCK TABLE residents IN SHARE MODE")
            .await?;
    }
    let enrolled = enrol::enrol(&txn, &campaign, None).await?;
    audit::record(
        &txn,
        actor,
        AuditEvent {
            action: "campaign.open",
            entity: "campaign",
            entity_id: Some(id.to_string()),
            area_code: None,
            summary: json!({"year": campaign.model.year, "enrolled": enrolled}),
        },
    )
    .await?;
    txn.commit().await?;
    crate::db::analyze_if_bulk(db, "enrolments", enrolled).await;
    Ok(Opened {
        campaign: campaign.view(),
        enrolled,
    })
}

/// Closes an open campaign: no more bookings or exam records; its figures stay. Bookings of
/// past days become no-shows, later ones are cancelled.
pub async fn close<C>(db: &C, actor: &Actor, id: i32) -> AppResult<Campaign>
where
    C: ConnectionTrait + TransactionTrait,
{
    let txn = crate::db::begin_write(db).await?;
    let campaign = get_open(&txn, id).await?;
    // The status first, conditionally: bookings that hold the campaign row wait for it, and
    // any that committed before are settled below.
    let closed = campaigns::Entity::update_many()
        .col_expr(
            campaigns::Column::Status,
            sea_orm::sea_query::Expr::value("closed"),
        )
        .col_expr(
            campaigns::Column::UpdatedAt,
            sea_orm::sea_query::Expr::value(Utc::now()),
        )
        .filter(campaigns::Column::Id.eq(id))
        .filter(campaigns::Column::Status.eq("open"))
        .exec(&txn)
        .await?;
    if closed.rows_affected != 1 {
        return Err(AppError::Conflict(format!(
            "体检工作「{}」已经结束",
            campaign.model.name
        )));
    }
    crate::flows::booking::settle_for_close(&txn, id, campaign.today()).await?;
    let saved = get(&txn, id).await?.model;
    audit::record(
        &txn,
        actor,
        AuditEvent {
            action: "campaign.close",
            entity: "campaign",
            entity_id: Some(id.to_string()),
            area_code: None,
            summary: json!({"year": saved.year}),
        },
    )
    .await?;
    txn.commit().await?;
    Campaign::from_model(saved)
}

/// Every open campaign (normally one).
pub async fn open_campaigns(db: &impl ConnectionTrait) -> AppResult<Vec<Campaign>> {
    campaigns::Entity::find()
        .filter(campaigns::Column::Status.eq("open"))
        .all(db)
        .await?
        .into_iter()
        .map(Campaign::from_model)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn default_phases_follow_the_plan() {
        let [survey, kickoff, exams, catch_up, acceptance] = default_phases(2028).unwrap();
        assert_eq!((survey.from, survey.to), (d(2028, 1, 1), d(2028, 1, 31)));
        assert_eq!(kickoff.to, d(2028, 2, 29), "2028 is a leap year");
        assert_eq!(default_phases(2027).unwrap()[1].to, d(2027, 2, 28));
        assert_eq!((exams.from, exams.to), (d(2028, 1, 1), d(2028, 9, 30)));
        assert_eq!(
            (catch_up.from, catch_up.to),
            (d(2028, 10, 1), d(2028, 10, 31))
        );
        assert_eq!(
            (acceptance.from, acceptance.to),
            (d(2028, 11, 1), d(2028, 11, 30))
        );
        let phases: Vec<_> = Phase::ALL
            .into_iter()
            .zip(default_phases(2028).unwrap())
            .collect();
        assert!(check_phases(2028, &phases.try_into().unwrap()).is_ok());
    }

    #[test]
    fn overlapping_or_reversed_phases_are_refused() {
        let mut phases: [(Phase, DateRange); 5] = Phase::ALL
            .into_iter()
            .zip(default_phases(2027).unwrap())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        phases[3].1.from = d(2027, 9, 30);
        assert!(check_phases(2027, &phases).is_err());
        phases[3].1.from = d(2027, 10, 31);
        phases[3].1.to = d(2027, 10, 1);
        assert!(check_phases(2027, &phases).is_err());
        phases[3].1 = DateRange {
            from: d(2027, 10, 1),
            to: d(2027, 10, 31),
        };
        phases[4].1.to = d(2028, 1, 10);
        assert!(
            check_phases(2027, &phases).is_ok(),
            "acceptance may end next year"
        );
        phases[4].1.to = d(2029, 1, 10);
        assert!(check_phases(2027, &phases).is_err());
        phases[4].1.to = d(2027, 11, 30);
        phases[0].1.from = d(2026, 12, 1);
        assert!(check_phases(2027, &phases).is_err());
    }

    #[test]
    fn target_groups() {
        assert_eq!(TargetGroup::parse("65+"), Some(TargetGroup::Elderly));
        assert_eq!(
            TargetGroup::parse("80+"),
            Some(TargetGroup::Cohort(Cohort::Oldest))
        );
        assert_eq!(
            TargetGroup::parse("高血压"),
            Some(TargetGroup::KeyGroup(KeyGroup::Hypertension))
        );
        assert_eq!(TargetGroup::parse("everyone"), None);
        assert!(
            check_targets(&[Target {
                group: "糖尿病".into(),
                percent: 101.0
            }])
            .is_err()
        );
        let stored = check_targets(&[Target {
            group: "糖尿病".into(),
            percent: 95.0,
        }])
        .unwrap();
        assert_eq!(stored, r#"[{"group":"diabetes","percent":95.0}]"#);
    }
}
