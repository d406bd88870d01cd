//! The county office's, townships' and auditors' dashboard at `/app/`: the campaign's funnel,
//! the ranking, key groups, the daily series, the migrant books and message figures, with
//! filters and a drill-down to the residents of one stage.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::NaiveDate;
use entities::areas::AreaLevel;
use entities::users::Role;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::Session;
use super::pages::{PageError, local_time, ser};
use super::render::{page, templates};
use crate::area::{self, AreaCode, AreaNode};
use crate::auth::Actor;
use crate::campaign::worklist::{self, Worklist, WorklistParams};
use crate::campaign::{self, Campaign};
use crate::error::AppError;
use crate::http::guard::FieldWork;
use crate::registry::{self, Cohort, MigrantType, Special};
use crate::report::{
    self, Contacts, ContactsQuery, Figures, Progress, RankingQuery, Rankings, Series, SeriesQuery,
    SliceQuery,
};
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates!["app/dashboard.html", "app/stage.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/app/stage", get(stage))
}

/// The dashboard's filters as the GET form sends them: every field text, an empty one unset.
#[derive(Debug, Default, Deserialize)]
pub struct DashboardQuery {
    campaign: Option<String>,
    area: Option<String>,
    cohort: Option<String>,
    migrant_type: Option<String>,
    special: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// day, week or month: what the ranking's changes are measured against.
    period: Option<String>,
}

/// A form field's value: trimmed, and `None` when left empty.
fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The filters in force, as the form shows them again and the links carry them on.
#[derive(Debug, Clone, Default, Serialize)]
struct Filters {
    area: Option<String>,
    cohort: Option<String>,
    migrant_type: Option<String>,
    special: Option<String>,
    from: Option<String>,
    to: Option<String>,
    period: String,
}

impl Filters {
    fn of(q: &DashboardQuery) -> Self {
        Filters {
            area: given(&q.area),
            cohort: given(&q.cohort),
            migrant_type: given(&q.migrant_type),
            special: given(&q.special),
            from: given(&q.from),
            to: given(&q.to),
            period: given(&q.period).unwrap_or_else(|| "week".to_owned()),
        }
    }

    /// Whether a filter beyond the area narrows the figures (the ranking, series and message
    /// figures are then of everyone in the area).
    fn narrowed(&self) -> bool {
        self.cohort.is_some()
            || self.migrant_type.is_some()
            || self.special.is_some()
            || self.from.is_some()
    }

    /// The dashboard of `area` with the other filters kept.
    fn link(&self, campaign: i32, area: Option<&str>) -> String {
        let id = campaign.to_string();
        let mut pairs = vec![("campaign", Some(id.as_str())), ("area", area)];
        pairs.extend(self.slice_pairs());
        if self.period != "week" {
            pairs.push(("period", Some(self.period.as_str())));
        }
        format!("/app/?{}", query_string(&pairs))
    }

    fn slice_pairs(&self) -> Vec<(&'static str, Option<&str>)> {
        vec![
            ("cohort", self.cohort.as_deref()),
            ("migrant_type", self.migrant_type.as_deref()),
            ("special", self.special.as_deref()),
            ("from", self.from.as_deref()),
            ("to", self.to.as_deref()),
        ]
    }
}

/// `a=1&b=2` of the pairs that have a value, encoded.
fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            out.append_pair(name, value);
        }
    }
    out.finish()
}

/// A `YYYY-MM-DD` day of the form.
fn parse_day(raw: Option<&str>, field: &str) -> Result<Option<NaiveDate>, AppError> {
    raw.map(|raw| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
            AppError::validation(
                "invalid_date",
                format!("{field}应为日期（YYYY-MM-DD），而不是 {raw}"),
            )
        })
    })
    .transpose()
}

/// The campaign a page shows: the one asked for, else the open one of the latest year, else
/// the latest that is not a draft.
fn pick(campaigns: &[Campaign], asked: Option<&str>) -> Result<Option<Campaign>, AppError> {
    if let Some(raw) = asked {
        let id: i32 = raw
            .parse()
            .map_err(|_| AppError::NotFound(format!("体检工作 {raw} 不存在")))?;
        return campaigns
            .iter()
            .find(|c| c.id() == id)
            .cloned()
            .map(Some)
            .ok_or_else(|| AppError::NotFound(format!("体检工作 {id} 不存在")));
    }
    let latest = |open: bool| {
        campaigns
            .iter()
            .filter(|c| c.model.status != "draft" && (!open || c.is_open()))
            .max_by_key(|c| (c.model.year, c.id()))
            .cloned()
    };
    Ok(latest(true).or_else(|| latest(false)))
}

/// A domain error the page answers next to its form (a value the domain does not accept, 422);
/// any other error (out of scope, not found) is the error page with the API's status.
fn form_error(error: AppError) -> Result<String, PageError> {
    match error {
        AppError::Validation { message, .. } => Ok(message),
        other => Err(other.into()),
    }
}

/// The areas of the caller's tree as the area select lists them, indented by level.
fn area_options(nodes: &[AreaNode], depth: usize, out: &mut Vec<minijinja::Value>) {
    for node in nodes {
        out.push(context! {
            code => node.code.clone(),
            label => format!("{}{}", "\u{3000}".repeat(depth), node.name),
        });
        area_options(&node.children, depth + 1, out);
    }
}

/// The areas from the top of the caller's tree down to `code` (the breadcrumb).
fn path_to<'a>(nodes: &'a [AreaNode], code: &str, path: &mut Vec<&'a AreaNode>) -> bool {
    for node in nodes {
        path.push(node);
        if node.code == code || path_to(&node.children, code, path) {
            return true;
        }
        path.pop();
    }
    false
}

/// A fraction as a percentage with one decimal (`12.3%`), or `—`.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// A rate as the API's JSON writes it (the shortest text that reads back the same number),
/// for the `data-*` attributes tests compare; empty when there is none.
fn raw_rate(rate: Option<f64>) -> String {
    rate.map(|r| r.to_string()).unwrap_or_default()
}

fn fraction(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// A change of a rate in percentage points (`+1.2`), or `—`.
fn points(change: Option<f64>) -> String {
    match change {
        Some(c) if c.abs() < 0.0005 => "±0.0".to_owned(),
        Some(c) => format!("{:+.1}", c * 100.0),
        None => "—".to_owned(),
    }
}

/// A change of rank: `↑2` (moved up), `↓1`, `持平`, or nothing without an earlier rank.
fn places(change: Option<i64>) -> String {
    match change {
        Some(n) if n > 0 => format!("↑{n}"),
        Some(n) if n < 0 => format!("↓{}", -n),
        Some(_) => "持平".to_owned(),
        None => String::new(),
    }
}

/// The figure columns of a progress row.
fn figure_row(key: &str, name: &str, f: &Figures, href: Option<String>) -> minijinja::Value {
    context! {
        key, name, href,
        population => f.population,
        target => f.target,
        notified => f.notified,
        reached => f.reached,
        appointed => f.appointed,
        examined => f.examined,
        examined_elsewhere => f.examined_elsewhere,
        refused => f.refused,
        exempt => f.exempt,
        reach => percent(f.reach_rate),
        exam => percent(f.exam_rate),
        refusal => percent(f.refusal_rate),
    }
}

const PERIODS: [(&str, &str); 3] = [("day", "比昨日"), ("week", "比上周"), ("month", "比上月")];

const WORKLISTS: [(Worklist, &str); 6] = [
    (Worklist::NotAppointed, "未预约"),
    (Worklist::NoShows, "爽约"),
    (Worklist::Migrants, "外出人员"),
    (Worklist::HomeVisits, "上门体检"),
    (Worklist::HospitalRecords, "住院记录"),
    (Worklist::Seasonal, "季节性（牧区）"),
];

fn worklist_label(list: Worklist) -> &'static str {
    WORKLISTS
        .iter()
        .find(|(l, _)| *l == list)
        .map_or("", |(_, label)| label)
}

/// The township a ranking of `area` ranks the villages of (`None`: the caller's townships,
/// or the villages of a township officer's township).
fn ranked_township(area: Option<&str>) -> Option<String> {
    let code = AreaCode::parse(area?).ok()?;
    match code.level() {
        AreaLevel::Township => Some(code.to_string()),
        AreaLevel::Village => code.parent().map(|p| p.to_string()),
        AreaLevel::County => None,
    }
}

/// What the report functions answer for one campaign and set of filters.
struct Figured {
    progress: Progress,
    rankings: Rankings,
    series: Series,
    contacts: Contacts,
    /// How many days back the series goes.
    days: u32,
}

/// The four reports behind the dashboard, as the API's report endpoints compute them. The
/// message figures go first: the first report of a campaign builds its live figures, and the
/// other three then read them side by side on connections of their own.
async fn figures(
    state: &AppState,
    actor: &Actor,
    campaign: &Campaign,
    filters: &Filters,
) -> Result<Result<Figured, String>, PageError> {
    let (from, to) = match (
        parse_day(filters.from.as_deref(), "开始日期"),
        parse_day(filters.to.as_deref(), "结束日期"),
    ) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(error), _) | (_, Err(error)) => return form_error(error).map(Err),
    };
    let db = &state.db;
    let id = campaign.id();
    let contacts = match report::contacts(
        db,
        actor,
        id,
        &ContactsQuery {
            area: filters.area.clone(),
            format: None,
        },
    )
    .await
    {
        Ok(contacts) => contacts,
        Err(error) => return form_error(error).map(Err),
    };
    let slice = SliceQuery {
        area: filters.area.clone(),
        cohort: filters.cohort.clone(),
        migrant_type: filters.migrant_type.clone(),
        special: filters.special.clone(),
        from,
        to,
        ..SliceQuery::default()
    };
    let ranking = RankingQuery {
        township: ranked_township(filters.area.as_deref()),
        period: Some(filters.period.clone()),
        to,
        format: None,
    };
    let days = series_days(campaign, from);
    let series = SeriesQuery {
        area: filters.area.clone(),
        days: Some(days),
        ..SeriesQuery::default()
    };
    let (progress, rankings, series) = tokio::join!(
        report::progress(db, actor, id, &slice),
        report::rankings(db, actor, id, &ranking),
        report::series(db, actor, id, &series),
    );
    let figured = progress.and_then(|progress| {
        Ok(Figured {
            progress,
            rankings: rankings?,
            series: series?,
            contacts,
            days,
        })
    });
    match figured {
        Ok(figured) => Ok(Ok(figured)),
        Err(error) => form_error(error).map(Err),
    }
}

/// Days of the series: from `from` to today, else the last 30.
fn series_days(campaign: &Campaign, from: Option<NaiveDate>) -> u32 {
    match from {
        Some(from) => (campaign.today() - from).num_days().clamp(0, 365) as u32 + 1,
        None => 30,
    }
}

/// `GET /app/`: the dashboard of the signed-in user's area — funnel, ranking, key groups,
/// daily series, migrant book and message figures, filtered — or for clinic staff their
/// appointments; cadres go to their phone pages.
pub async fn home(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<DashboardQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    match session.actor.role {
        Role::Institution => return Ok(super::clinic::home(state, session).await),
        Role::Cadre => return Ok(Redirect::to(super::home_of(Role::Cadre)).into_response()),
        Role::Office | Role::Township | Role::Auditor => {}
    }
    let Query(query) = query
        .map_err(|e| AppError::bad_request("invalid_query", format!("链接中的参数有误：{e}")))?;
    let actor = &session.actor;
    let campaigns = campaign::list(&state.db).await?;
    let campaign = pick(&campaigns, given(&query.campaign).as_deref())?;
    let filters = Filters::of(&query);
    // The area tree (for the select and the breadcrumb) is read beside the reports.
    let (tree, figured) = tokio::join!(area::tree(&state.db, &actor.scope), async {
        match &campaign {
            Some(campaign) => Some(figures(&state, actor, campaign, &filters).await),
            None => None,
        }
    });
    let tree = tree?;

    let mut areas = Vec::new();
    area_options(&tree, 0, &mut areas);
    let picker: Vec<_> = campaigns
        .iter()
        .filter(|c| c.model.status != "draft")
        .map(|c| {
            context! {
                id => c.id(),
                name => c.model.name.clone(),
                open => c.is_open(),
            }
        })
        .collect();
    let options = context! {
        areas,
        cohorts => Cohort::ALL.iter().map(|c| {
            let code = ser(c).to_string();
            context! { label => format!("{code}岁"), code }
        }).collect::<Vec<_>>(),
        migrant_types => MigrantType::ALL.iter().map(|m| context! { code => m.code(), label => m.label() }).collect::<Vec<_>>(),
        specials => std::iter::once(context! { code => "none", label => "无特殊情况" })
            .chain(Special::ALL.iter().map(|s| context! { code => s.code(), label => s.label() }))
            .collect::<Vec<_>>(),
        periods => PERIODS.iter().map(|&(code, label)| context! { code, label }).collect::<Vec<_>>(),
    };
    let base = context! {
        section => "dashboard",
        campaigns => picker,
        options,
        filters => ser(&filters),
        field_work => matches!(actor.role, Role::Office | Role::Township),
        ..session.frame()
    };
    let (Some(campaign), Some(figured)) = (campaign, figured) else {
        return Ok(page(StatusCode::OK, "app/dashboard.html", base));
    };
    let campaign_ctx = context! {
        id => campaign.id(),
        name => campaign.model.name.clone(),
        open => campaign.is_open(),
    };
    let figured = match figured? {
        Ok(figured) => figured,
        Err(message) => {
            return Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "app/dashboard.html",
                context! { campaign => campaign_ctx, form_error => message, ..base },
            ));
        }
    };
    let view = view(&campaign, &filters, &tree, &figured);
    Ok(page(
        StatusCode::OK,
        "app/dashboard.html",
        context! { campaign => campaign_ctx, ..minijinja::value::merge_maps([view, base]) },
    ))
}

/// The figures as the template shows them.
fn view(
    campaign: &Campaign,
    filters: &Filters,
    tree: &[AreaNode],
    figured: &Figured,
) -> minijinja::Value {
    let Figured {
        progress,
        rankings,
        series,
        contacts,
        days,
    } = figured;
    let id = campaign.id();
    let area = progress.area_code.clone();
    let link = |code: &str| filters.link(id, Some(code));

    let mut path = Vec::new();
    if let Some(code) = &area {
        path_to(tree, code, &mut path);
    }
    let breadcrumb: Vec<_> = path
        .iter()
        .map(|node| context! { name => node.name.clone(), href => link(&node.code) })
        .collect();

    let t = &progress.total;
    let funnel: Vec<_> = [
        ("target", "应检", t.target, None, "户籍人口减豁免"),
        (
            "notified",
            "已通知",
            t.notified,
            fraction(t.notified, t.target),
            "通知率",
        ),
        ("reached", "已触达", t.reached, t.reach_rate, "触达率"),
        (
            "appointed",
            "已预约",
            t.appointed,
            fraction(t.appointed, t.target),
            "预约率",
        ),
        ("examined", "已体检", t.examined, t.exam_rate, "体检率"),
    ]
    .into_iter()
    .map(|(code, label, count, rate, rate_name)| {
        let width = fraction(count, t.target).map_or(0.0, |r| (r * 100.0).clamp(0.0, 100.0));
        context! {
            code, label, count, rate_name,
            rate => percent(rate),
            width => format!("{width:.1}"),
        }
    })
    .collect();
    let aside: Vec<_> = [
        ("refused", "拒检", t.refused, t.refusal_rate, "拒检率"),
        (
            "exempt",
            "豁免（死亡、迁出）",
            t.exempt,
            fraction(t.exempt, t.population),
            "占户籍人口",
        ),
    ]
    .into_iter()
    .map(|(code, label, count, rate, rate_name)| {
        context! { code, label, count, rate_name, rate => percent(rate) }
    })
    .collect();

    let area_rows = matches!(
        progress.by,
        report::Dimension::Township | report::Dimension::Village
    );
    let rows: Vec<_> = progress
        .rows
        .iter()
        .map(|r| figure_row(&r.key, &r.name, &r.figures, area_rows.then(|| link(&r.key))))
        .chain([figure_row("", "合计", &progress.total, None)])
        .collect();

    let ranking: Vec<_> = rankings
        .areas
        .iter()
        .map(|r| {
            context! {
                code => r.code.clone(),
                name => r.name.clone(),
                href => link(&r.code),
                current => area.as_deref() == Some(r.code.as_str()),
                target => r.target,
                examined => r.examined,
                reached => r.reached,
                exam_rate => raw_rate(r.exam.rate),
                reach_rate => raw_rate(r.reach.rate),
                exam => percent(r.exam.rate),
                reach => percent(r.reach.rate),
                exam_rank => r.exam.rank,
                reach_rank => r.reach.rank,
                exam_bottom => r.exam.bottom_three,
                reach_bottom => r.reach.bottom_three,
                exam_change => points(r.exam.rate_change),
                reach_change => points(r.reach.rate_change),
                exam_moved => places(r.exam.rank_change),
                reach_moved => places(r.reach.rank_change),
            }
        })
        .collect();
    let ranking_level = match rankings.level {
        report::Dimension::Village => "村（社区）",
        _ => "乡镇（场）",
    };

    let targets: Vec<_> = progress
        .targets
        .iter()
        .map(|t| {
            let width = t.exam_rate.map_or(0.0, |r| (r * 100.0).clamp(0.0, 100.0));
            context! {
                name => t.name.clone(),
                goal => format!("{}%", t.goal_percent),
                goal_width => format!("{:.1}", t.goal_percent.clamp(0.0, 100.0)),
                target => t.target,
                examined => t.examined,
                exam => percent(t.exam_rate),
                width => format!("{width:.1}"),
                status => ser(t.status),
                status_label => t.status_label.clone(),
                gap => (t.goal_percent / 100.0 * t.target as f64).ceil() as i64 - t.examined,
            }
        })
        .collect();

    let migrants: Vec<_> = progress
        .migrants
        .iter()
        .map(|r| figure_row(&r.key, &r.name, &r.figures, None))
        .chain([figure_row(
            "",
            "流动人口合计",
            &progress.migrants_total,
            None,
        )])
        .collect();

    let points_rows: Vec<_> = series
        .points
        .iter()
        .map(|p| {
            let day = p.day.to_string();
            context! { day => day.clone(), ..figure_row(&p.key, &day, &p.figures, None) }
        })
        .collect();
    let chart = chart_json(series);

    let channels: Vec<_> = contacts
        .channels
        .iter()
        .chain([&contacts.messages])
        .map(|c| {
            context! {
                channel => c.channel.clone(),
                name => c.channel_name.clone(),
                provider => c.provider.clone(),
                sent => c.sent,
                delivered => c.delivered,
                failed => c.failed,
                unconfirmed => c.unconfirmed,
                rate => percent(c.delivery_rate),
                total => c.channel == "all",
            }
        })
        .collect();
    let attempts: Vec<_> = contacts
        .attempts
        .iter()
        .map(|a| {
            context! {
                name => a.channel_name.clone(),
                attempts => a.attempts,
                reached => a.reached,
                rate => percent(fraction(a.reached, a.attempts)),
            }
        })
        .collect();
    let replies: Vec<_> = contacts
        .replies
        .iter()
        .map(|r| context! { action => r.action.clone(), name => r.name.clone(), replies => r.replies })
        .collect();

    let downloads = downloads(id, filters, area.as_deref(), &rankings.period, *days);
    let stage_area = area.clone().unwrap_or_default();
    let stage_link = |list: Worklist| {
        format!(
            "/app/stage?{}",
            query_string(&[
                ("campaign", Some(&id.to_string())),
                ("area", area.as_deref()),
                ("stage", Some(list.code())),
            ])
        )
    };
    let as_of = match (&progress.as_of.day, progress.as_of.refreshed_at) {
        (Some(day), _) => format!("{day} 日终"),
        (None, Some(at)) => format!("{} 更新", local_time(Some(campaign), at)),
        (None, None) => "尚未生成".to_owned(),
    };
    context! {
        figures => true,
        area_code => area.clone(),
        area_name => progress.area_name.clone(),
        stage_area,
        breadcrumb,
        as_of,
        range_from => progress.as_of.from.map(|d| d.to_string()),
        narrowed => filters.narrowed(),
        funnel,
        aside,
        not_appointed => stage_link(Worklist::NotAppointed),
        migrant_list => stage_link(Worklist::Migrants),
        by_header => progress.by.header(),
        rows,
        ranking,
        ranking_level,
        ranking_previous => rankings.previous_day.to_string(),
        period_label => PERIODS.iter().find(|(c, _)| *c == rankings.period).map_or("", |(_, l)| l),
        targets,
        migrants,
        series_rows => points_rows,
        series_days => days,
        pending_days => series.pending_days.len(),
        chart => minijinja::Value::from_safe_string(chart),
        channels,
        attempts,
        replies,
        contacts_note => contacts.note.clone(),
        downloads,
    }
}

/// The series as the chart reads it: days and one list of counts per stage, as JSON that is
/// safe inside a `<script>` element.
fn chart_json(series: &Series) -> String {
    let pick = |f: fn(&Figures) -> i64| -> Vec<i64> {
        series.points.iter().map(|p| f(&p.figures)).collect()
    };
    let data = serde_json::json!({
        "days": series.points.iter().map(|p| p.day.to_string()).collect::<Vec<_>>(),
        "lines": [
            {"label": "应检", "values": pick(|f| f.target)},
            {"label": "已通知", "values": pick(|f| f.notified)},
            {"label": "已触达", "values": pick(|f| f.reached)},
            {"label": "已预约", "values": pick(|f| f.appointed)},
            {"label": "已体检", "values": pick(|f| f.examined)},
            {"label": "拒检", "values": pick(|f| f.refused)},
        ],
    });
    // `<`, `>` and `&` escaped, so no text in it can end the script element.
    data.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The API's XLSX and CSV of each table, with the same filters.
fn downloads(
    id: i32,
    filters: &Filters,
    area: Option<&str>,
    period: &str,
    days: u32,
) -> minijinja::Value {
    let base = format!("/api/v1/campaigns/{id}/reports");
    let mut progress = vec![("area", area)];
    progress.extend(filters.slice_pairs());
    let township = ranked_township(area);
    let ranking = [
        ("township", township.as_deref()),
        ("period", Some(period)),
        ("to", filters.to.as_deref()),
    ];
    let days = days.to_string();
    let series = [("area", area), ("days", Some(days.as_str()))];
    let contacts = [("area", area)];
    let file = |report: &str, pairs: &[(&str, Option<&str>)], format: &str| {
        let mut pairs = pairs.to_vec();
        pairs.push(("format", Some(format)));
        format!("{base}/{report}?{}", query_string(&pairs))
    };
    let both = |report: &str, pairs: &[(&str, Option<&str>)]| {
        context! { xlsx => file(report, pairs, "xlsx"), csv => file(report, pairs, "csv") }
    };
    context! {
        progress => both("progress", &progress),
        rankings => both("rankings", &ranking),
        series => both("series", &series),
        contacts => both("contacts", &contacts),
    }
}

/// The stage list's query: the campaign, the area, which list (`stage`), the page.
#[derive(Debug, Default, Deserialize)]
pub struct StageQuery {
    campaign: Option<String>,
    area: Option<String>,
    stage: Option<String>,
    page: Option<String>,
}

const STAGE_PAGE_SIZE: u64 = 50;

/// `GET /app/stage?campaign=&area=&stage=`: the residents of one area on one of the field
/// worklists (not appointed, no-shows, migrants, home visits, hospital records, seasonal) —
/// masked numbers, with a button that asks the API for the full ones (audited).
pub async fn stage(
    State(state): State<AppState>,
    session: Session<FieldWork>,
    query: Result<Query<StageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query
        .map_err(|e| AppError::bad_request("invalid_query", format!("链接中的参数有误：{e}")))?;
    let actor = &session.actor;
    let campaigns = campaign::list(&state.db).await?;
    let Some(campaign) = pick(&campaigns, given(&query.campaign).as_deref())? else {
        return Err(AppError::NotFound("还没有体检工作".to_owned()).into());
    };
    let list = Worklist::parse(given(&query.stage).as_deref().unwrap_or("not_appointed"))?;
    let page_no = match given(&query.page) {
        None => 1,
        Some(raw) => raw
            .parse::<u64>()
            .map_err(|_| AppError::validation("invalid_page", "页码应为正整数"))?,
    };
    let area = given(&query.area);
    let listed = worklist::list(
        &state.db,
        actor,
        campaign.id(),
        list,
        WorklistParams {
            area: area.clone(),
            page: Some(page_no),
            limit: Some(STAGE_PAGE_SIZE),
            sort: None,
        },
    )
    .await?;
    let area_name = match &area {
        Some(code) => Some(
            area::get(&state.db, &actor.scope, &crate::validate::parse_area(code)?)
                .await?
                .name,
        ),
        None => None,
    };
    let villages = registry::village_names(&state.db).await?;
    let rows: Vec<_> = listed
        .items
        .iter()
        .map(|item| {
            context! {
                resident_id => item.resident_id,
                name => item.name.clone(),
                id_number => item.id_number.clone(),
                phone => item.phone.clone(),
                age => item.age,
                village => villages.get(&item.village_code).cloned().unwrap_or_else(|| item.village_code.clone()),
                stage => item.stage.label(),
                migrant => (item.migrant_type != MigrantType::Local.code()).then_some(item.migrant_type_label),
            }
        })
        .collect();
    let id = campaign.id().to_string();
    let link = |list: Worklist, page: Option<u64>| {
        let page = page.map(|p| p.to_string());
        format!(
            "/app/stage?{}",
            query_string(&[
                ("campaign", Some(id.as_str())),
                ("area", area.as_deref()),
                ("stage", Some(list.code())),
                ("page", page.as_deref()),
            ])
        )
    };
    let tabs: Vec<_> = WORKLISTS
        .iter()
        .map(|&(l, label)| context! { code => l.code(), label, href => link(l, None), active => l == list })
        .collect();
    let back = format!(
        "/app/?{}",
        query_string(&[("campaign", Some(id.as_str())), ("area", area.as_deref())])
    );
    Ok(page(
        StatusCode::OK,
        "app/stage.html",
        context! {
            section => "dashboard",
            campaign => campaign.model.name.clone(),
            area_name,
            list => list.code(),
            list_label => worklist_label(list),
            tabs,
            rows,
            total => listed.total,
            page => listed.page,
            pages => listed.pages,
            previous => (listed.page > 1).then(|| link(list, Some(listed.page - 1))),
            next => (listed.page < listed.pages).then(|| link(list, Some(listed.page + 1))),
            back,
            ..session.frame()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_filters_encoded() {
        let filters = Filters {
            cohort: Some("80+".to_owned()),
            period: "week".to_owned(),
            ..Filters::default()
        };
        assert_eq!(
            filters.link(3, Some("654025100000")),
            "/app/?campaign=3&area=654025100000&cohort=80%2B"
        );
    }

    #[test]
    fn a_village_is_ranked_among_its_townships_villages() {
        assert_eq!(
            ranked_township(Some("654025100201")).as_deref(),
            Some("654025100000")
        );
        assert_eq!(
            ranked_township(Some("654025100000")).as_deref(),
            Some("654025100000")
        );
        assert_eq!(ranked_township(Some("654025000000")), None);
        assert_eq!(ranked_township(Some("not a code")), None);
        assert_eq!(ranked_township(None), None);
    }

    #[test]
    fn rates_keep_the_json_number() {
        let rate = 1.0 / 3.0;
        assert_eq!(raw_rate(Some(rate)).parse::<f64>().unwrap(), rate);
        assert_eq!(raw_rate(None), "");
        assert_eq!(percent(Some(0.956)), "95.6%");
        assert_eq!(points(Some(0.012)), "+1.2");
        assert_eq!(places(Some(-2)), "↓2");
    }

    #[test]
    fn the_chart_data_cannot_end_its_script_element() {
        let series = Series {
            campaign_id: 1,
            area_code: None,
            by: report::Dimension::None,
            interval: "day".to_owned(),
            refreshed_at: None,
            points: Vec::new(),
            pending_days: Vec::new(),
        };
        let json = chart_json(&series);
        assert!(!json.contains('<'));
        assert!(json.contains("\"days\":[]"));
    }
}
