//! Message waves for the office: audience and template, a preview with its SMS segments,
//! schedule, progress, cancel. A wave is what the API's `create_wave` takes — a name, an
//! audience, a holiday window and a send time; its text is the `migrant_wave` template,
//! rendered and counted in segments by the templates the dispatcher sends with.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{NaiveDate, NaiveDateTime};
use entities::areas::AreaLevel;
use minijinja::context;
use serde::Serialize;

use super::pages::{Nothing, PageError, current_campaign, local_time};
use super::render::{page, templates};
use super::{Form, Session};
use crate::area::{self, AreaNode};
use crate::auth::Actor;
use crate::campaign::{self, Campaign, Stage};
use crate::error::AppError;
use crate::flows;
use crate::http::guard::OfficeOnly;
use crate::outreach::outbox::MessageState;
use crate::outreach::waves::{self, Audience, NewWave, WaveView};
use crate::outreach::{Locale, MessageContext, MessageKind};
use crate::registry::{self, Language, MigrantType, ResidentFilter};
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] =
    templates!["app/waves.html", "app/wave_new.html", "app/wave.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/waves", get(list).post(create))
        .route("/app/waves/new", get(new))
        .route("/app/waves/preview", get(preview))
        .route("/app/waves/{id}", get(show))
        .route("/app/waves/{id}/cancel", post(cancel))
}

/// Stages a wave may go to (the domain refuses examined, refused and exempt residents).
const STAGES: [Stage; 4] = [
    Stage::Target,
    Stage::Notified,
    Stage::Reached,
    Stage::Appointed,
];
/// The audience's stages when none is ticked (as the domain defaults them).
const DEFAULT_STAGES: [Stage; 3] = [Stage::Target, Stage::Notified, Stage::Reached];
/// States of a message that has not gone yet.
const WAITING: [MessageState; 3] = [
    MessageState::Scheduled,
    MessageState::Queued,
    MessageState::Sending,
];

fn status_label(status: &str) -> &'static str {
    match status {
        "planned" => "未开始",
        "sending" => "发送中",
        "done" => "已完成",
        "cancelled" => "已取消",
        _ => "未知",
    }
}

/// The wave form as typed: kept as text so that a refused form is shown again as it was.
#[derive(Debug, Clone, Default, Serialize)]
struct WaveInput {
    campaign: Option<i32>,
    name: String,
    area: String,
    migrant: Vec<String>,
    stage: Vec<String>,
    window_from: String,
    window_to: String,
    send_at: String,
    /// The language the preview is rendered in (empty: the sample resident's).
    lang: String,
}

impl WaveInput {
    /// The fields of a form or query string. On a first visit (no `filled` field, which the
    /// form carries), the defaults: the domain's default audience and a month's window from
    /// today.
    fn from_pairs(pairs: Vec<(String, String)>, today: NaiveDate) -> Self {
        if !pairs.iter().any(|(key, _)| key == "filled") {
            return Self {
                campaign: pairs
                    .iter()
                    .find(|(key, _)| key == "campaign")
                    .and_then(|(_, value)| value.trim().parse().ok()),
                migrant: MigrantType::ALL
                    .iter()
                    .filter(|t| **t != MigrantType::Local)
                    .map(|t| t.code().to_owned())
                    .collect(),
                stage: DEFAULT_STAGES.iter().map(|s| s.code().to_owned()).collect(),
                window_from: today.to_string(),
                window_to: (today + chrono::Duration::days(30)).to_string(),
                ..Default::default()
            };
        }
        let mut input = Self::default();
        for (key, value) in pairs {
            let value = value.trim().to_owned();
            match key.as_str() {
                "campaign" => input.campaign = value.parse().ok(),
                "name" => input.name = value,
                "area" => input.area = value,
                "migrant" => input.migrant.push(value),
                "stage" => input.stage.push(value),
                "window_from" => input.window_from = value,
                "window_to" => input.window_to = value,
                "send_at" => input.send_at = value,
                "lang" => input.lang = value,
                _ => {}
            }
        }
        input
    }

    fn migrant_types(&self) -> Result<Vec<MigrantType>, AppError> {
        self.migrant
            .iter()
            .map(|raw| {
                MigrantType::parse(raw)
                    .ok_or_else(|| AppError::validation("invalid_migrant_type", "流动类型无效"))
            })
            .collect()
    }

    fn stages(&self) -> Result<Vec<Stage>, AppError> {
        self.stage
            .iter()
            .map(|raw| {
                Stage::parse(raw)
                    .ok_or_else(|| AppError::validation("invalid_stage", "居民阶段无效"))
            })
            .collect()
    }

    fn date(raw: &str, what: &str) -> Result<NaiveDate, AppError> {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
            AppError::validation("invalid_window", format!("请填写{what}（年-月-日）"))
        })
    }

    /// The wave as `create_wave` takes it; the send time is read in the campaign's zone.
    fn wave(&self, campaign: &Campaign) -> Result<NewWave, AppError> {
        let send_at = match self.send_at.as_str() {
            "" => None,
            raw => {
                let local = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
                    .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
                    .map_err(|_| AppError::validation("invalid_send_at", "发送时间格式无效"))?;
                Some(crate::time::at_local(
                    campaign.timezone,
                    local.date(),
                    local.time(),
                ))
            }
        };
        Ok(NewWave {
            name: self.name.clone(),
            audience: Audience {
                area: Some(self.area.clone()).filter(|a| !a.is_empty()),
                migrant_types: self.migrant_types()?,
                stages: self.stages()?,
            },
            window_from: Self::date(&self.window_from, "回乡体检开始日期")?,
            window_to: Self::date(&self.window_to, "回乡体检结束日期")?,
            send_at,
        })
    }
}

/// The campaign a wave page is about: the one named, or the open one of the latest year.
async fn campaign_of(state: &AppState, id: Option<i32>) -> Result<Option<Campaign>, AppError> {
    match id {
        Some(id) => Ok(Some(campaign::get(&state.db, id).await?)),
        None => current_campaign(state).await,
    }
}

/// A wave's messages counted as the list shows them.
fn counts(wave: &WaveView) -> minijinja::Value {
    let n = |states: &[MessageState]| -> i64 {
        states
            .iter()
            .filter_map(|s| wave.states.get(s.code()))
            .sum()
    };
    context! {
        waiting => n(&WAITING),
        sent => n(&[MessageState::Sent, MessageState::Unconfirmed]),
        delivered => n(&[MessageState::Delivered]),
        failed => n(&[MessageState::Failed, MessageState::Expired]),
        stopped => n(&[MessageState::Cancelled, MessageState::Suppressed]),
    }
}

/// A wave as its pages show it.
fn shown(wave: &WaveView, campaign: &Campaign, villages: &AreaNames) -> minijinja::Value {
    let audience = &wave.audience;
    let area = match audience.area.as_deref() {
        Some(code) => villages.name(code),
        None => "全县".to_owned(),
    };
    let migrants: Vec<&str> = audience.migrant_types.iter().map(|t| t.label()).collect();
    let stages: Vec<&str> = audience.stages.iter().map(|s| s.label()).collect();
    let waiting: i64 = WAITING
        .iter()
        .filter_map(|s| wave.states.get(s.code()))
        .sum();
    let states: Vec<_> = MessageState::ALL
        .iter()
        .map(|s| {
            context! {
                code => s.code(),
                label => s.label(),
                n => wave.states.get(s.code()).copied().unwrap_or(0),
            }
        })
        .collect();
    context! {
        id => wave.id,
        name => wave.name.clone(),
        status => wave.status.clone(),
        status_label => status_label(&wave.status),
        cancellable => wave.status != "cancelled",
        area,
        migrants => migrants.join("、"),
        stages => stages.join("、"),
        window => format!("{} 至 {}", wave.window_from, wave.window_to),
        send_at => local_time(Some(campaign), wave.send_at),
        created_at => local_time(Some(campaign), wave.created_at),
        cancelled_at => wave.cancelled_at.map(|at| local_time(Some(campaign), at)),
        planned => wave.planned,
        handled => i64::from(wave.planned) - waiting,
        states,
        counts => counts(wave),
    }
}

/// Area names of the caller's part of the tree, for the audience.
struct AreaNames(Vec<(String, String, AreaLevel, usize)>);

impl AreaNames {
    async fn of(state: &AppState, actor: &Actor) -> Result<Self, AppError> {
        fn walk(
            nodes: &[AreaNode],
            depth: usize,
            out: &mut Vec<(String, String, AreaLevel, usize)>,
        ) {
            for node in nodes {
                out.push((node.code.clone(), node.name.clone(), node.level, depth));
                walk(&node.children, depth + 1, out);
            }
        }
        let mut out = Vec::new();
        walk(&area::tree(&state.db, &actor.scope).await?, 0, &mut out);
        Ok(Self(out))
    }

    fn name(&self, code: &str) -> String {
        self.0
            .iter()
            .find(|(c, ..)| c == code)
            .map(|(_, name, ..)| name.clone())
            .unwrap_or_else(|| code.to_owned())
    }

    /// The townships and villages an audience may be narrowed to.
    fn options(&self, chosen: &str) -> Vec<minijinja::Value> {
        self.0
            .iter()
            .filter(|(_, _, level, _)| *level != AreaLevel::County)
            .map(|(code, name, level, depth)| {
                let indent = "\u{3000}".repeat(depth.saturating_sub(1));
                let kind = if *level == AreaLevel::Township {
                    "乡镇"
                } else {
                    "村"
                };
                context! {
                    code,
                    label => format!("{indent}{name}（{kind}）"),
                    selected => code == chosen,
                }
            })
            .collect()
    }
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    campaign: Option<i32>,
}

/// `GET /app/waves`: a campaign's waves, newest first, with their state and their messages
/// by state (queued, sent, delivered, failed).
pub async fn list(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let campaigns: Vec<_> = campaign::list(&state.db)
        .await?
        .into_iter()
        .filter(|c| c.model.status != "draft")
        .collect();
    let Some(campaign) = campaign_of(&state, query.campaign).await? else {
        return Ok(page(
            StatusCode::OK,
            "app/waves.html",
            context! { section => "waves", ..session.frame() },
        ));
    };
    let names = AreaNames::of(&state, actor).await?;
    let rows: Vec<_> = waves::list(&state.db, actor, campaign.id())
        .await?
        .iter()
        .map(|w| shown(w, &campaign, &names))
        .collect();
    let choices: Vec<_> = campaigns
        .iter()
        .map(|c| context! { id => c.id(), name => c.model.name.clone(), selected => c.id() == campaign.id() })
        .collect();
    Ok(page(
        StatusCode::OK,
        "app/waves.html",
        context! {
            section => "waves",
            campaign => context! { id => campaign.id(), name => campaign.model.name.clone(), open => campaign.is_open() },
            campaigns => choices,
            rows,
            ..session.frame()
        },
    ))
}

/// The rendered text of a wave's message for a sample resident of its audience, with the
/// SMS segments it is billed as.
#[derive(Serialize)]
struct Preview {
    text: String,
    segments: usize,
    /// Most segments the template may take (checked when the templates load).
    max_segments: usize,
    resident: Option<String>,
    locale: &'static str,
}

/// Renders the `migrant_wave` SMS as the dispatcher would for the first resident the
/// registry lists for the audience (or the templates' sample data when none is found).
async fn render_preview(
    state: &AppState,
    actor: &Actor,
    campaign: &Campaign,
    input: &WaveInput,
) -> Result<Preview, AppError> {
    let area = Some(input.area.clone()).filter(|a| !a.is_empty());
    let mut types = input.migrant_types().unwrap_or_default();
    if types.is_empty() {
        types = MigrantType::ALL
            .iter()
            .copied()
            .filter(|t| *t != MigrantType::Local)
            .collect();
    }
    let mut sample = None;
    for kind in types {
        let found = registry::list(
            &state.db,
            &state.privacy,
            actor,
            ResidentFilter {
                area: area.clone(),
                migrant_type: Some(kind.code().to_owned()),
                limit: Some(1),
                ..Default::default()
            },
        )
        .await?;
        if let Some(first) = found.residents.into_iter().next() {
            sample = Some(first);
            break;
        }
    }
    let locale = Locale::ALL
        .into_iter()
        .find(|l| l.code() == input.lang)
        .or_else(|| {
            sample
                .as_ref()
                .and_then(|r| Language::parse(&r.language))
                .map(Locale::of)
        })
        .unwrap_or(Locale::ZhCn);
    let day = |raw: &str, missing: &str| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map(crate::time::month_day)
            .unwrap_or_else(|_| missing.to_owned())
    };
    let outbox = &state.settings.messaging.outbox;
    let values = MessageContext {
        resident_name: sample
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_else(|| MessageContext::sample().resident_name),
        campaign_name: campaign.model.name.clone(),
        time: outbox.exam_time.clone(),
        cadre_phone: outbox.hotline.clone(),
        window_from: day(&input.window_from, "（开始日期）"),
        window_to: day(&input.window_to, "（结束日期）"),
        ..Default::default()
    };
    let sms = state
        .templates
        .render_sms(MessageKind::MigrantWave, locale, &values)
        .map_err(|e| anyhow::anyhow!("the wave's template: {e}"))?;
    let villages = registry::village_names(&state.db).await?;
    Ok(Preview {
        text: sms.text,
        segments: sms.segments,
        max_segments: MessageKind::MigrantWave.max_segments(locale),
        resident: sample.map(|r| {
            let village = villages.get(&r.village_code).cloned().unwrap_or_default();
            format!("{} · {village}", r.name)
        }),
        locale: locale.code(),
    })
}

/// The new-wave form with `input`, its preview and, when refused, why.
async fn form_page(
    state: &AppState,
    session: &Session<OfficeOnly>,
    campaign: &Campaign,
    input: &WaveInput,
    error: Option<(StatusCode, String)>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let preview = render_preview(state, actor, campaign, input).await?;
    let names = AreaNames::of(state, actor).await?;
    let migrants: Vec<_> = MigrantType::ALL
        .iter()
        .map(|t| context! { code => t.code(), label => t.label(), checked => input.migrant.iter().any(|m| m == t.code()) })
        .collect();
    let stages: Vec<_> = STAGES
        .iter()
        .map(|s| context! { code => s.code(), label => s.label(), checked => input.stage.iter().any(|m| m == s.code()) })
        .collect();
    let locales: Vec<_> = [
        (Locale::ZhCn, "中文"),
        (Locale::Ug, "维吾尔文"),
        (Locale::Kk, "哈萨克文"),
    ]
    .into_iter()
    .map(|(l, label)| context! { code => l.code(), label, selected => l.code() == input.lang })
    .collect();
    let (status, message) = match error {
        Some((status, message)) => (status, Some(message)),
        None => (StatusCode::OK, None),
    };
    Ok(page(
        status,
        "app/wave_new.html",
        context! {
            section => "waves",
            campaign => context! { id => campaign.id(), name => campaign.model.name.clone(), timezone => campaign.timezone.name() },
            input => super::pages::ser(input),
            areas => names.options(&input.area),
            migrants,
            stages,
            locales,
            preview => super::pages::ser(&preview),
            error => message,
            ..session.frame()
        },
    ))
}

/// `GET /app/waves/new[?…]`: the form for a new wave (audience, holiday window, send time)
/// with its message rendered for a sample resident and the SMS segments it takes; the
/// form's fields in the query show it again with their preview.
pub async fn new(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let (campaign, input) = form_of(&state, pairs).await?;
    form_page(&state, &session, &campaign, &input, None).await
}

/// The campaign the query's `campaign` names (else the current one) and the form's fields.
async fn form_of(
    state: &AppState,
    pairs: Vec<(String, String)>,
) -> Result<(Campaign, WaveInput), PageError> {
    let campaign_id = pairs
        .iter()
        .find(|(k, _)| k == "campaign")
        .and_then(|(_, v)| v.parse().ok());
    let Some(campaign) = campaign_of(state, campaign_id).await? else {
        return Err(AppError::NotFound("当前没有进行中的体检工作".to_owned()).into());
    };
    let input = WaveInput::from_pairs(pairs, campaign.today());
    Ok((campaign, input))
}

/// `GET /app/waves/preview?…`: the preview of the form's fields as JSON (`text`,
/// `segments`, `max_segments`, `resident`, `locale`), for the form's script.
pub async fn preview(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let (campaign, input) = form_of(&state, pairs).await?;
    let preview = render_preview(&state, &session.actor, &campaign, &input).await?;
    Ok(Json(preview).into_response())
}

/// `POST /app/waves`: creates the wave as the API's `create_wave` does (its messages are
/// planned at once) and opens its page; a refused form is shown again with the reason.
pub async fn create(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let pairs: Vec<_> = pairs.into_iter().filter(|(k, _)| k != "_csrf").collect();
    let campaign_id = pairs
        .iter()
        .find(|(k, _)| k == "campaign")
        .and_then(|(_, v)| v.parse().ok());
    let Some(campaign) = campaign_of(&state, campaign_id).await? else {
        return Err(AppError::NotFound("当前没有进行中的体检工作".to_owned()).into());
    };
    let input = WaveInput::from_pairs(pairs, campaign.today());
    let created = match input.wave(&campaign) {
        Ok(new) => {
            flows::messaging::waves::create(&state.db, &session.actor, campaign.id(), new).await
        }
        Err(error) => Err(error),
    };
    match created {
        Ok(wave) => Ok(Redirect::to(&format!("/app/waves/{}", wave.id)).into_response()),
        Err(error) => {
            let (status, message) = error.status_and_message();
            if status.is_server_error() {
                return Err(error.into());
            }
            form_page(&state, &session, &campaign, &input, Some((status, message))).await
        }
    }
}

/// `GET /app/waves/{id}`: one wave — audience, window, send time, its messages by state —
/// refreshed by the page's script from the API while it is under way; cancel.
pub async fn show(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let wave = waves::get(&state.db, actor, id).await?;
    let campaign = campaign::get(&state.db, wave.campaign_id).await?;
    let names = AreaNames::of(&state, actor).await?;
    Ok(page(
        StatusCode::OK,
        "app/wave.html",
        context! {
            section => "waves",
            campaign => context! { id => campaign.id(), name => campaign.model.name.clone() },
            wave => shown(&wave, &campaign, &names),
            ..session.frame()
        },
    ))
}

/// `POST /app/waves/{id}/cancel`: cancels the wave and its messages not yet sent (the
/// API's `cancel_wave`), then shows it again.
pub async fn cancel(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(Nothing {}): Form<Nothing>,
) -> Result<Response, PageError> {
    flows::messaging::waves::cancel(&state.db, &session.actor, id).await?;
    Ok(Redirect::to(&format!("/app/waves/{id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_first_visit_starts_from_the_domains_default_audience() {
        let today = NaiveDate::from_ymd_opt(2027, 1, 10).unwrap();
        let input = WaveInput::from_pairs(pairs(&[("campaign", "3")]), today);
        assert_eq!(input.campaign, Some(3));
        assert_eq!(input.stage, ["target", "notified", "reached"]);
        assert!(!input.migrant.iter().any(|m| m == "local"));
        assert_eq!(input.migrant.len(), MigrantType::ALL.len() - 1);
        assert_eq!(input.window_from, "2027-01-10");
        assert_eq!(input.window_to, "2027-02-09");
    }

    #[test]
    fn the_form_is_read_with_its_repeated_boxes_and_refused_when_a_value_is_unknown() {
        let today = NaiveDate::from_ymd_opt(2027, 1, 10).unwrap();
        let input = WaveInput::from_pairs(
            pairs(&[
                ("filled", "1"),
                ("name", " 春节回乡 "),
                ("migrant", "out_of_region"),
                ("migrant", "student_away"),
                ("stage", "target"),
                ("window_from", "2027-01-20"),
                ("window_to", "2027-02-20"),
            ]),
            today,
        );
        assert_eq!(input.name, "春节回乡");
        assert_eq!(
            input.migrant_types().unwrap(),
            [MigrantType::OutOfRegion, MigrantType::StudentAway]
        );
        assert_eq!(input.stages().unwrap(), [Stage::Target]);
        let bad = WaveInput::from_pairs(pairs(&[("filled", "1"), ("migrant", "nowhere")]), today);
        assert!(bad.migrant_types().is_err());
        let no_window = WaveInput::from_pairs(pairs(&[("filled", "1"), ("name", "x")]), today);
        assert!(WaveInput::date(&no_window.window_from, "开始日期").is_err());
    }
}
