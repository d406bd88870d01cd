//! Campaign set-up for the office: create and edit a campaign with its phases, cohorts,
//! targets, refusal rule and quiet hours; open and close it.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::pages::{PageError, local_time, ser};
use super::render::{page, templates};
use super::{Form, Session};
use crate::campaign::{
    self, CampaignChanges, CampaignView, DateRange, NewCampaign, Phase, PhaseDates, QuietHours,
    RefusalRule, Target, TargetGroup,
};
use crate::error::AppError;
use crate::flows;
use crate::http::guard::OfficeOnly;
use crate::registry::{Cohort, KeyGroup};
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates!["app/campaigns.html", "app/campaign.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/campaigns", get(list))
        .route("/app/campaigns/new", get(new).post(create))
        .route("/app/campaigns/{id}", get(show).post(update))
        .route("/app/campaigns/{id}/open", post(open))
        .route("/app/campaigns/{id}/close", post(close))
}

/// The fields of a posted form in their order, names repeated for lists (checkboxes, rows).
pub(super) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(super) fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub(super) fn get(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    }

    /// Every value of `name`, trimmed, in the order sent.
    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// Whether a checkbox named `name` was ticked.
    pub(super) fn ticked(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
}

/// What went wrong with a posted form, shown above it and beside `field`.
#[derive(Serialize)]
pub(super) struct FormError {
    pub field: Option<&'static str>,
    pub message: String,
}

/// A domain error a form can be corrected for (a value refused, a conflict, an area outside
/// the caller's scope), with the status to answer; anything else is the error page's.
pub(super) fn form_error(
    error: AppError,
    field_of: fn(&str) -> Option<&'static str>,
) -> Result<(StatusCode, FormError), PageError> {
    match error {
        AppError::Validation { .. }
        | AppError::Refused { .. }
        | AppError::Conflict(_)
        | AppError::OutOfScope { .. } => {
            let field = field_of(error.code());
            let (status, message) = error.status_and_message();
            Ok((status, FormError { field, message }))
        }
        other => Err(other.into()),
    }
}

/// The form field a campaign error code is about.
fn campaign_field(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_year" | "conflict" => "year",
        "invalid_value" => "name",
        "invalid_reference_date" => "reference_date",
        "invalid_timezone" => "timezone",
        "invalid_quiet_hours" => "quiet_hours",
        "invalid_cohorts" => "cohorts",
        "invalid_target" => "targets",
        "invalid_phase" => "phases",
        "invalid_refusal_rule" => "refusal_rule",
        _ => return None,
    })
}

const TIMEZONES: [(&str, &str); 2] = [
    ("Asia/Shanghai", "北京时间（Asia/Shanghai）"),
    ("Asia/Urumqi", "新疆时间（Asia/Urumqi）"),
];

fn cohort_label(cohort: Cohort) -> &'static str {
    match cohort {
        Cohort::Children => "0–6 岁",
        Cohort::Students => "7–14 岁",
        Cohort::Adults => "15–64 岁",
        Cohort::Elderly => "65–79 岁",
        Cohort::Oldest => "80 岁及以上",
    }
}

fn cohort_code(cohort: Cohort) -> String {
    TargetGroup::Cohort(cohort).code()
}

/// The groups a target may name, as the select offers them.
fn target_groups() -> Vec<minijinja::Value> {
    let mut groups = vec![
        context! { code => "all", label => "全部居民" },
        context! { code => "65+", label => "65 岁及以上" },
    ];
    groups.extend(
        Cohort::ALL
            .into_iter()
            .map(|c| context! { code => cohort_code(c), label => cohort_label(c) }),
    );
    groups.extend(
        KeyGroup::ALL
            .iter()
            .map(|k| context! { code => k.code(), label => k.label() }),
    );
    groups
}

fn status_label(status: &str) -> &'static str {
    match status {
        "open" => "进行中",
        "closed" => "已结束",
        _ => "未开启",
    }
}

fn phase_code(phase: Phase) -> &'static str {
    match phase {
        Phase::Survey => "survey",
        Phase::Kickoff => "kickoff",
        Phase::Exams => "exams",
        Phase::CatchUp => "catch_up",
        Phase::Acceptance => "acceptance",
    }
}

#[derive(Serialize)]
struct PhaseRow {
    code: &'static str,
    label: &'static str,
    from: String,
    to: String,
}

#[derive(Serialize)]
struct TargetRow {
    group: String,
    percent: String,
}

/// A campaign form as typed: every field text, so that what was entered is shown again
/// when it is refused.
#[derive(Serialize)]
struct CampaignForm {
    year: String,
    name: String,
    reference_date: String,
    timezone: String,
    quiet_start: String,
    quiet_end: String,
    cohorts: Vec<String>,
    phases: Vec<PhaseRow>,
    targets: Vec<TargetRow>,
    min_attempts: String,
    min_days: String,
}

/// Empty target rows offered below the set ones, for adding groups.
const SPARE_TARGET_ROWS: usize = 2;
/// Target rows read from a form at most (more than there are groups is never valid).
const MAX_TARGET_ROWS: usize = 32;

impl CampaignForm {
    /// A new campaign of `year` as the plan sets it up: its default calendar, every cohort,
    /// the key targets, quiet hours 21:00–08:00, three attempts on two days.
    fn defaults(year: i32) -> Self {
        let phases = campaign::default_phases(year);
        let rule = RefusalRule::default();
        Self {
            year: year.to_string(),
            name: String::new(),
            reference_date: format!("{year}-01-01"),
            timezone: "Asia/Shanghai".to_owned(),
            quiet_start: "21:00".to_owned(),
            quiet_end: "08:00".to_owned(),
            cohorts: Cohort::ALL.into_iter().map(cohort_code).collect(),
            phases: Phase::ALL
                .into_iter()
                .enumerate()
                .map(|(i, phase)| PhaseRow {
                    code: phase_code(phase),
                    label: phase.label(),
                    from: phases.map(|p| p[i].from.to_string()).unwrap_or_default(),
                    to: phases.map(|p| p[i].to.to_string()).unwrap_or_default(),
                })
                .collect(),
            targets: campaign::default_targets()
                .into_iter()
                .map(|t| TargetRow {
                    group: t.group,
                    percent: t.percent.to_string(),
                })
                .collect(),
            min_attempts: rule.min_attempts.to_string(),
            min_days: rule.min_days.to_string(),
        }
    }

    fn of(view: &CampaignView) -> Self {
        Self {
            year: view.year.to_string(),
            name: view.name.clone(),
            reference_date: view.reference_date.to_string(),
            timezone: view.timezone.clone(),
            quiet_start: view.quiet_hours.start.clone(),
            quiet_end: view.quiet_hours.end.clone(),
            cohorts: view.cohorts.iter().copied().map(cohort_code).collect(),
            phases: view
                .phases
                .iter()
                .map(|p| PhaseRow {
                    code: phase_code(p.phase),
                    label: p.label,
                    from: p.from.to_string(),
                    to: p.to.to_string(),
                })
                .collect(),
            targets: view
                .targets
                .iter()
                .map(|t| TargetRow {
                    group: t.group.clone(),
                    percent: t.percent.to_string(),
                })
                .collect(),
            min_attempts: view.refusal_rule.min_attempts.to_string(),
            min_days: view.refusal_rule.min_days.to_string(),
        }
    }

    fn posted(fields: &Fields) -> Self {
        let groups = fields.all("target_group");
        let percents = fields.all("target_percent");
        Self {
            year: fields.get("year"),
            name: fields.get("name"),
            reference_date: fields.get("reference_date"),
            timezone: fields.get("timezone"),
            quiet_start: fields.get("quiet_start"),
            quiet_end: fields.get("quiet_end"),
            cohorts: fields.all("cohort"),
            phases: Phase::ALL
                .into_iter()
                .map(|phase| {
                    let code = phase_code(phase);
                    PhaseRow {
                        code,
                        label: phase.label(),
                        from: fields.get(&format!("{code}_from")),
                        to: fields.get(&format!("{code}_to")),
                    }
                })
                .collect(),
            targets: groups
                .into_iter()
                .zip(percents)
                .filter(|(group, percent)| !group.is_empty() || !percent.is_empty())
                .take(MAX_TARGET_ROWS)
                .map(|(group, percent)| TargetRow { group, percent })
                .collect(),
            min_attempts: fields.get("min_attempts"),
            min_days: fields.get("min_days"),
        }
    }

    /// The form's rows as the template shows them: the set targets and a few empty ones.
    fn shown(&self) -> minijinja::Value {
        let spare = (0..SPARE_TARGET_ROWS).map(|_| TargetRow {
            group: String::new(),
            percent: String::new(),
        });
        let rows: Vec<TargetRow> = self
            .targets
            .iter()
            .map(|t| TargetRow {
                group: t.group.clone(),
                percent: t.percent.clone(),
            })
            .chain(spare)
            .collect();
        context! { target_rows => ser(&rows), ..ser(self) }
    }

    fn year(&self) -> Result<i32, AppError> {
        self.year
            .parse()
            .map_err(|_| AppError::validation("invalid_year", "年度应为四位数字，如 2027"))
    }

    fn reference_date(&self) -> Result<Option<chrono::NaiveDate>, AppError> {
        if self.reference_date.is_empty() {
            return Ok(None);
        }
        crate::validate::parse_date(&self.reference_date)
            .map(Some)
            .ok_or_else(|| {
                AppError::validation(
                    "invalid_reference_date",
                    "年龄计算基准日应为日期（YYYY-MM-DD）",
                )
            })
    }

    fn cohorts(&self) -> Result<Vec<Cohort>, AppError> {
        self.cohorts
            .iter()
            .map(|code| {
                Cohort::ALL
                    .into_iter()
                    .find(|c| cohort_code(*c) == *code)
                    .ok_or_else(|| {
                        AppError::validation("invalid_cohorts", format!("未知的年龄组 {code}"))
                    })
            })
            .collect()
    }

    fn phases(&self) -> Result<PhaseDates, AppError> {
        let mut ranges = Vec::with_capacity(self.phases.len());
        for row in &self.phases {
            let date = |raw: &str, end: &str| {
                crate::validate::parse_date(raw).ok_or_else(|| {
                    AppError::validation("invalid_phase", format!("请填写{}的{end}日期", row.label))
                })
            };
            ranges.push(DateRange {
                from: date(&row.from, "开始")?,
                to: date(&row.to, "结束")?,
            });
        }
        let [survey, kickoff, exams, catch_up, acceptance] = ranges[..] else {
            return Err(AppError::validation("invalid_phase", "阶段不完整"));
        };
        Ok(PhaseDates {
            survey: Some(survey),
            kickoff: Some(kickoff),
            exams: Some(exams),
            catch_up: Some(catch_up),
            acceptance: Some(acceptance),
        })
    }

    fn targets(&self) -> Result<Vec<Target>, AppError> {
        self.targets
            .iter()
            .map(|row| {
                if row.group.is_empty() {
                    return Err(AppError::validation(
                        "invalid_target",
                        format!("目标 {}% 没有选择人群", row.percent),
                    ));
                }
                let percent = row.percent.parse::<f64>().map_err(|_| {
                    AppError::validation(
                        "invalid_target",
                        format!("{} 的目标应为 0–100 之间的数", row.group),
                    )
                })?;
                Ok(Target {
                    group: row.group.clone(),
                    percent,
                })
            })
            .collect()
    }

    fn refusal_rule(&self) -> Result<RefusalRule, AppError> {
        let number = |raw: &str| {
            raw.parse::<u32>().map_err(|_| {
                AppError::validation(
                    "invalid_refusal_rule",
                    "拒检登记规则：联系次数和天数应为正整数",
                )
            })
        };
        Ok(RefusalRule {
            min_attempts: number(&self.min_attempts)?,
            min_days: number(&self.min_days)?,
        })
    }

    fn quiet_hours(&self) -> QuietHours {
        QuietHours {
            start: self.quiet_start.clone(),
            end: self.quiet_end.clone(),
        }
    }

    /// The API's body for a new campaign.
    fn new_campaign(&self) -> Result<NewCampaign, AppError> {
        Ok(NewCampaign {
            year: self.year()?,
            name: Some(self.name.clone()).filter(|n| !n.is_empty()),
            reference_date: self.reference_date()?,
            timezone: Some(self.timezone.clone()),
            quiet_hours: Some(self.quiet_hours()),
            cohorts: Some(self.cohorts()?),
            targets: Some(self.targets()?),
            phases: self.phases()?,
            refusal_rule: Some(self.refusal_rule()?),
        })
    }

    /// The API's body for changing `current`: the reference date and cohorts only when they
    /// changed (an open campaign refuses them), everything else as entered.
    fn changes(&self, current: &CampaignView) -> Result<CampaignChanges, AppError> {
        let reference_date = self
            .reference_date()?
            .filter(|d| *d != current.reference_date);
        // Past its draft, the page shows the cohorts without sending them.
        let cohorts = if self.cohorts.is_empty() && current.status != "draft" {
            None
        } else {
            let mut cohorts = self.cohorts()?;
            cohorts.sort_by_key(|c| Cohort::ALL.iter().position(|a| a == c));
            cohorts.dedup();
            Some(cohorts).filter(|c| *c != current.cohorts)
        };
        Ok(CampaignChanges {
            name: Some(self.name.clone()),
            reference_date,
            timezone: Some(self.timezone.clone()),
            quiet_hours: Some(self.quiet_hours()),
            cohorts,
            targets: Some(self.targets()?),
            phases: self.phases()?,
            refusal_rule: Some(self.refusal_rule()?),
        })
    }
}

#[derive(Serialize)]
struct Row {
    id: i32,
    year: i32,
    name: String,
    status: String,
    status_label: &'static str,
    exams: String,
    catch_up: String,
    opened_at: Option<String>,
}

/// `GET /app/campaigns`: every campaign, newest year first, with its status and exam dates.
pub async fn list(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
) -> Result<Response, PageError> {
    let campaigns = campaign::list(&state.db).await?;
    let rows: Vec<Row> = campaigns
        .iter()
        .map(|c| {
            let view = c.view();
            let range = |phase: Phase| {
                view.phases
                    .iter()
                    .find(|p| p.phase == phase)
                    .map(|p| format!("{} 至 {}", p.from, p.to))
                    .unwrap_or_default()
            };
            Row {
                id: view.id,
                year: view.year,
                status_label: status_label(&view.status),
                exams: range(Phase::Exams),
                catch_up: range(Phase::CatchUp),
                opened_at: view.opened_at.map(|at| local_time(Some(c), at)),
                name: view.name,
                status: view.status,
            }
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "app/campaigns.html",
        context! { section => "campaigns", rows => ser(&rows), ..session.frame() },
    ))
}

#[derive(Deserialize)]
pub struct NewQuery {
    year: Option<String>,
}

/// The campaign form page: a new campaign (`campaign` absent) or one to change.
fn form_page(
    session: &Session<OfficeOnly>,
    status: StatusCode,
    campaign: Option<&CampaignView>,
    form: &CampaignForm,
    error: Option<FormError>,
    notice: Option<String>,
) -> Response {
    let cohorts: Vec<_> = Cohort::ALL
        .into_iter()
        .map(|c| context! { code => cohort_code(c), label => cohort_label(c) })
        .collect();
    let timezones: Vec<_> = TIMEZONES
        .into_iter()
        .map(|(code, label)| context! { code, label })
        .collect();
    let campaign = campaign.map(|c| {
        context! {
            id => c.id,
            status => c.status.clone(),
            status_label => status_label(&c.status),
            name => c.name.clone(),
            opened_at => c.opened_at.map(|at| {
                let zone = c.timezone.parse().unwrap_or(crate::time::DEFAULT_ZONE);
                at.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string()
            }),
            reference_date => c.reference_date.to_string(),
            cohorts => c.cohorts.iter().map(|c| cohort_label(*c)).collect::<Vec<_>>().join("、"),
        }
    });
    page(
        status,
        "app/campaign.html",
        context! {
            section => "campaigns",
            campaign,
            form => form.shown(),
            error => error.map(ser),
            notice,
            cohort_options => cohorts,
            group_options => target_groups(),
            timezones,
            ..session.frame()
        },
    )
}

/// `GET /app/campaigns/new[?year=…]`: the form for a new campaign, filled in with the plan's
/// defaults for the year after the latest campaign (or this year, or the next once this
/// year's catch-up is over).
pub async fn new(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Query(query): Query<NewQuery>,
) -> Result<Response, PageError> {
    let today = crate::time::today();
    // Late in a year whose plan calendar has run out, the next year is the one to set up.
    let this_year = chrono::Datelike::year(&today);
    let first = match campaign::default_phases(this_year) {
        Some([.., catch_up, _]) if today > catch_up.to => this_year + 1,
        _ => this_year,
    };
    let year = match query.year.as_deref().and_then(|y| y.parse::<i32>().ok()) {
        Some(year) if (2000..=2100).contains(&year) => year,
        _ => campaign::list(&state.db)
            .await?
            .iter()
            .map(|c| c.model.year + 1)
            .max()
            .map_or(first, |next| next.max(first)),
    };
    let form = CampaignForm::defaults(year);
    Ok(form_page(&session, StatusCode::OK, None, &form, None, None))
}

/// `POST /app/campaigns/new`: creates the campaign as the API does; a value the campaign
/// refuses shows the form again with the message and what was entered.
pub async fn create(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let form = CampaignForm::posted(&Fields::new(pairs));
    let created = match form.new_campaign() {
        Ok(new) => flows::campaigns::create(&state.db, &session.actor, new).await,
        Err(error) => Err(error),
    };
    match created {
        Ok(created) => {
            Ok(Redirect::to(&format!("/app/campaigns/{}?saved=1", created.id())).into_response())
        }
        Err(error) => {
            let (status, error) = form_error(error, campaign_field)?;
            Ok(form_page(&session, status, None, &form, Some(error), None))
        }
    }
}

#[derive(Deserialize)]
pub struct ShowQuery {
    saved: Option<String>,
    opened: Option<String>,
    closed: Option<String>,
}

/// `GET /app/campaigns/{id}`: one campaign's settings to change, and the step that opens or
/// closes it; after a change, what it did.
pub async fn show(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Query(query): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let view = campaign::get(&state.db, id).await?.view();
    let notice = if let Some(n) = query.opened.and_then(|n| n.parse::<u64>().ok()) {
        Some(format!("体检工作已开启，登记居民 {n} 人。"))
    } else if query.closed.is_some() {
        Some("体检工作已结束：不再接受预约和体检记录，未到期的预约已取消。".to_owned())
    } else {
        query.saved.map(|_| "已保存。".to_owned())
    };
    Ok(form_page(
        &session,
        StatusCode::OK,
        Some(&view),
        &CampaignForm::of(&view),
        None,
        notice,
    ))
}

/// `POST /app/campaigns/{id}`: changes the campaign as the API does; a refused value shows
/// the form again with the message and what was entered.
pub async fn update(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let current = campaign::get(&state.db, id).await?.view();
    let mut form = CampaignForm::posted(&Fields::new(pairs));
    // The year is the campaign's own; the form shows it without sending it.
    form.year = current.year.to_string();
    let updated = match form.changes(&current) {
        Ok(changes) => flows::campaigns::update(&state.db, &session.actor, id, changes).await,
        Err(error) => Err(error),
    };
    match updated {
        Ok(_) => Ok(Redirect::to(&format!("/app/campaigns/{id}?saved=1")).into_response()),
        Err(error) => {
            let (status, error) = form_error(error, campaign_field)?;
            Ok(form_page(
                &session,
                status,
                Some(&current),
                &form,
                Some(error),
                None,
            ))
        }
    }
}

#[derive(Deserialize)]
pub struct Confirm {
    #[serde(default)]
    confirm: Option<String>,
}

/// The campaign page again with what stopped an open or close.
async fn refused_step(
    state: &AppState,
    session: &Session<OfficeOnly>,
    id: i32,
    error: AppError,
) -> Result<Response, PageError> {
    let view = campaign::get(&state.db, id).await?.view();
    let (status, error) = form_error(error, |_| Some("status"))?;
    Ok(form_page(
        session,
        status,
        Some(&view),
        &CampaignForm::of(&view),
        Some(error),
        None,
    ))
}

fn unconfirmed(what: &str) -> AppError {
    AppError::validation("not_confirmed", format!("请先勾选确认，再{what}体检工作"))
}

/// `POST /app/campaigns/{id}/open`: once confirmed, opens the campaign as the API does —
/// every resident of its cohorts is enrolled — and tells how many.
pub async fn open(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(confirm): Form<Confirm>,
) -> Result<Response, PageError> {
    if confirm.confirm.is_none() {
        return refused_step(&state, &session, id, unconfirmed("开启")).await;
    }
    match flows::campaigns::open(&state.db, &session.actor, id).await {
        Ok(opened) => Ok(
            Redirect::to(&format!("/app/campaigns/{id}?opened={}", opened.enrolled))
                .into_response(),
        ),
        Err(error) => refused_step(&state, &session, id, error).await,
    }
}

/// `POST /app/campaigns/{id}/close`: once confirmed, closes the campaign as the API does
/// (later bookings cancelled, past ones marked missed).
pub async fn close(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(confirm): Form<Confirm>,
) -> Result<Response, PageError> {
    if confirm.confirm.is_none() {
        return refused_step(&state, &session, id, unconfirmed("结束")).await;
    }
    match flows::campaigns::close(&state.db, &session.actor, id).await {
        Ok(_) => Ok(Redirect::to(&format!("/app/campaigns/{id}?closed=1")).into_response()),
        Err(error) => refused_step(&state, &session, id, error).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(pairs: &[(&str, &str)]) -> CampaignForm {
        CampaignForm::posted(&Fields::new(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        ))
    }

    #[test]
    fn a_posted_form_becomes_the_apis_body() {
        let mut pairs = vec![
            ("year", "2031"),
            ("name", " "),
            ("reference_date", "2031-01-01"),
            ("timezone", "Asia/Urumqi"),
            ("quiet_start", "22:00"),
            ("quiet_end", "08:30"),
            ("cohort", "65-79"),
            ("cohort", "80+"),
            ("target_group", "65+"),
            ("target_percent", "96.5"),
            ("target_group", ""),
            ("target_percent", ""),
            ("min_attempts", "4"),
            ("min_days", "2"),
        ];
        let dates = [
            ("survey_from", "2031-01-01"),
            ("survey_to", "2031-01-31"),
            ("kickoff_from", "2031-02-01"),
            ("kickoff_to", "2031-02-28"),
            ("exams_from", "2031-01-01"),
            ("exams_to", "2031-09-30"),
            ("catch_up_from", "2031-10-01"),
            ("catch_up_to", "2031-10-31"),
            ("acceptance_from", "2031-11-01"),
            ("acceptance_to", "2031-11-30"),
        ];
        pairs.extend(dates);
        let new = posted(&pairs).new_campaign().unwrap();
        assert_eq!(new.year, 2031);
        assert_eq!(new.name, None, "a blank name takes the default");
        assert_eq!(new.cohorts, Some(vec![Cohort::Elderly, Cohort::Oldest]));
        assert_eq!(
            new.targets,
            Some(vec![Target {
                group: "65+".into(),
                percent: 96.5
            }])
        );
        assert_eq!(
            new.refusal_rule,
            Some(RefusalRule {
                min_attempts: 4,
                min_days: 2
            })
        );
        assert_eq!(new.phases.exams.unwrap().to.to_string(), "2031-09-30");
        assert!(campaign::prepare_create(new).is_ok());
    }

    #[test]
    fn unreadable_values_are_refused_with_their_field() {
        let form = posted(&[("year", "20x1"), ("min_attempts", "-1")]);
        let error = form.new_campaign().unwrap_err();
        assert_eq!(campaign_field(error.code()), Some("year"));
        let form = posted(&[("year", "2031"), ("survey_from", "")]);
        let error = form.new_campaign().unwrap_err();
        assert_eq!(campaign_field(error.code()), Some("phases"));
        let form = posted(&[("target_group", "65+"), ("target_percent", "lots")]);
        assert_eq!(form.targets().unwrap_err().code(), "invalid_target");
    }

    #[test]
    fn the_defaults_follow_the_plan() {
        let form = CampaignForm::defaults(2028);
        assert_eq!(form.phases[1].to, "2028-02-29");
        assert_eq!(form.cohorts.len(), 5);
        assert_eq!(form.targets.len(), 3);
    }
}
