//! Bulletins (每日数据、每周进度通报、每月专题调度): the report of a closed period e-mailed to the
//! office with the XLSX attached. Each (campaign, kind, period) is a row claimed before the
//! e-mail goes out, so a period is sent once however often the job runs or the service
//! restarts; a failed send is tried again up to `max_attempts`; a send cut off mid-way
//! (`sending` left behind) is not repeated by itself — the office may send it again.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use cron::Schedule;
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::export::{
    Table, about_progress, contacts_tables, progress_tables, rankings_table, workbook,
};
use super::{ContactsQuery, KeepFigures, Progress, RankingQuery, SliceQuery, TargetStatus, cube};
use crate::auth::Actor;
use crate::campaign::{self, Campaign};
use crate::config::{BulletinSettings, Settings};
use crate::db::Sql;
use crate::error::{AppError, AppResult};
use crate::outreach::{EmailChannel, SendError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Daily,
    Weekly,
    Monthly,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Daily, Kind::Weekly, Kind::Monthly];

    pub fn code(self) -> &'static str {
        match self {
            Kind::Daily => "daily",
            Kind::Weekly => "weekly",
            Kind::Monthly => "monthly",
        }
    }

    pub fn parse(raw: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.code() == raw)
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Daily => "每日数据",
            Kind::Weekly => "每周进度通报",
            Kind::Monthly => "每月专题调度",
        }
    }

    fn ranking_period(self) -> &'static str {
        match self {
            Kind::Daily => "day",
            Kind::Weekly => "week",
            Kind::Monthly => "month",
        }
    }

    fn schedule(self, settings: &BulletinSettings) -> Option<&String> {
        match self {
            Kind::Daily => settings.daily.as_ref(),
            Kind::Weekly => settings.weekly.as_ref(),
            Kind::Monthly => settings.monthly.as_ref(),
        }
    }

    /// How far back a firing is still sent (a service down over a firing catches up).
    fn lookback(self) -> Duration {
        match self {
            Kind::Daily => Duration::days(1),
            Kind::Weekly => Duration::days(7),
            Kind::Monthly => Duration::days(28),
        }
    }
}

/// A closed period: its key (`2026-11-28`, `2026-W48`, `2026-11`), first and last day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub key: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl Period {
    /// The last whole period of `kind` that ended before `day` (a firing's local date, or
    /// today): yesterday; the Monday-to-Sunday week before this one; last month.
    pub fn before(kind: Kind, day: NaiveDate) -> Period {
        match kind {
            Kind::Daily => {
                let last = day - Duration::days(1);
                Period {
                    key: last.to_string(),
                    start: last,
                    end: last,
                }
            }
            Kind::Weekly => {
                let end = day - Duration::days(i64::from(day.weekday().num_days_from_monday()) + 1);
                let start = end - Duration::days(6);
                let week = start.iso_week();
                Period {
                    key: format!("{}-W{:02}", week.year(), week.week()),
                    start,
                    end,
                }
            }
            Kind::Monthly => {
                let end = day.with_day(1).unwrap_or(day) - Duration::days(1);
                let start = end.with_day(1).unwrap_or(end);
                Period {
                    key: format!("{}-{:02}", start.year(), start.month()),
                    start,
                    end,
                }
            }
        }
    }
}

/// A bulletin's run record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Bulletin {
    pub id: i32,
    pub campaign_id: i32,
    pub kind: String,
    pub period: String,
    pub period_end: NaiveDate,
    /// building (the workbook; a run cut off here is built again), sending (handed to the
    /// mail server), sent or failed.
    pub status: String,
    /// A send still `sending` long after it started was cut off (the service stopped while
    /// talking to the mail server); whether it arrived is unknown, so it is not repeated by
    /// itself.
    pub interrupted: bool,
    pub recipients: Vec<String>,
    pub attempts: i32,
    pub message_id: Option<String>,
    pub error: Option<String>,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A bulletin still `building` this long after its claim was cut off and is built again.
const STALE_BUILD_MINUTES: i64 = 10;

const COLUMNS: &str = "id, campaign_id, kind, period, period_end, status, recipients, attempts, \
     message_id, error, requested_by, created_at, started_at, finished_at";

/// A `bulletins` row: the [`COLUMNS`].
#[derive(FromQueryResult)]
struct BulletinRow {
    id: i32,
    campaign_id: i32,
    kind: String,
    period: String,
    period_end: NaiveDate,
    status: String,
    recipients: String,
    attempts: i32,
    message_id: Option<String>,
    error: Option<String>,
    requested_by: String,
    created_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl BulletinRow {
    fn view(self) -> Bulletin {
        Bulletin {
            id: self.id,
            campaign_id: self.campaign_id,
            kind: self.kind,
            period: self.period,
            period_end: self.period_end,
            interrupted: self.status == "sending"
                && Utc::now() - self.started_at > Duration::minutes(30),
            status: self.status,
            recipients: self
                .recipients
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            attempts: self.attempts,
            message_id: self.message_id,
            error: self.error,
            requested_by: self.requested_by,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// The run history of a campaign's bulletins, newest first.
pub async fn history(db: &impl ConnectionTrait, campaign_id: i32) -> AppResult<Vec<Bulletin>> {
    campaign::get(db, campaign_id).await?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT ")
        .push(COLUMNS)
        .push(" FROM bulletins WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" ORDER BY started_at DESC, id DESC");
    Ok(BulletinRow::find_by_statement(sql.build())
        .all(db)
        .await?
        .into_iter()
        .map(BulletinRow::view)
        .collect())
}

async fn find(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    kind: Kind,
    period: &str,
) -> AppResult<Option<Bulletin>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT ")
        .push(COLUMNS)
        .push(" FROM bulletins WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND kind = ")
        .bind(kind.code())
        .push(" AND period = ")
        .bind(period.to_owned());
    Ok(BulletinRow::find_by_statement(sql.build())
        .one(db)
        .await?
        .map(BulletinRow::view))
}

/// Checks the recipients and the schedules (at start-up).
pub fn check_settings(settings: &BulletinSettings) -> anyhow::Result<()> {
    for recipient in &settings.recipients {
        recipient
            .parse::<Mailbox>()
            .map_err(|e| anyhow::anyhow!("reports.bulletins.recipients {recipient:?}: {e}"))?;
    }
    for kind in Kind::ALL {
        if let Some(expression) = kind.schedule(settings) {
            Schedule::from_str(expression).map_err(|e| {
                anyhow::anyhow!(
                    "reports.bulletins.{}: bad cron expression {expression:?}: {e}",
                    kind.code()
                )
            })?;
        }
    }
    Ok(())
}

/// The latest firing of `expression` at or before `now` (within the kind's look-back), read
/// in the campaign's time zone, as a local date.
fn latest_firing(
    kind: Kind,
    expression: &str,
    campaign: &Campaign,
    now: DateTime<Utc>,
) -> Option<NaiveDate> {
    let schedule = Schedule::from_str(expression).ok()?;
    let from = (now - kind.lookback()).with_timezone(&campaign.timezone);
    schedule
        .after(&from)
        .take_while(|at| at.with_timezone(&Utc) <= now)
        .last()
        .map(|at| at.date_naive())
}

/// The job: for each open campaign and each configured kind, the period its latest firing
/// reports, sent unless it was already.
pub async fn send_due(
    db: &DatabaseConnection,
    config: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let settings = &config.reports.bulletins;
    if settings.recipients.is_empty() {
        return Ok("no bulletin recipients configured".to_owned());
    }
    let Some(smtp) = &config.messaging.smtp else {
        return Ok("no SMTP server configured (messaging.smtp)".to_owned());
    };
    let mailer = EmailChannel::new(smtp)?;
    let mut lines = Vec::new();
    for campaign in campaign::list(db).await? {
        // Open campaigns, and closed ones for the periods they were open in.
        let closed_on = match campaign.model.status.as_str() {
            "open" => None,
            "closed" if now - campaign.model.updated_at < Duration::days(35) => {
                Some(cube::local_day(&campaign, campaign.model.updated_at))
            }
            _ => continue,
        };
        for kind in Kind::ALL {
            let Some(expression) = kind.schedule(settings) else {
                continue;
            };
            let Some(fired) = latest_firing(kind, expression, &campaign, now) else {
                continue;
            };
            let period = Period::before(kind, fired);
            if period.end < cube::first_day(&campaign)
                || closed_on.is_some_and(|closed| period.start > closed)
            {
                continue;
            }
            match send(
                db,
                &mailer,
                settings,
                &campaign,
                kind,
                &period,
                "scheduler",
                false,
            )
            .await
            {
                Ok(Some(b)) => lines.push(format!(
                    "{} {} {}: {}",
                    campaign.id(),
                    kind.code(),
                    period.key,
                    b.status
                )),
                Ok(None) => {}
                Err(e) => lines.push(format!(
                    "{} {} {}: {e}",
                    campaign.id(),
                    kind.code(),
                    period.key
                )),
            }
        }
    }
    Ok(if lines.is_empty() {
        "nothing due".to_owned()
    } else {
        lines.join("; ")
    })
}

/// Claims the period: a new row, or a failed one with tries left (or any, when `force`).
/// `None` when it is sent, being sent, or out of tries.
async fn claim(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    kind: Kind,
    period: &Period,
    settings: &BulletinSettings,
    requested_by: &str,
    force: bool,
) -> AppResult<Option<i32>> {
    let now = Utc::now();
    let recipients = &settings.recipients;
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO bulletins (campaign_id, kind, period, period_end, status, recipients, \
         attempts, requested_by, created_at, started_at) VALUES (",
    )
    .bind(campaign_id)
    .push(", ")
    .bind(kind.code())
    .push(", ")
    .bind(period.key.clone())
    .push(", ")
    .bind(period.end)
    .push(", 'building', ")
    .bind(recipients.join(","))
    .push(", 1, ")
    .bind(requested_by.to_owned())
    .push(", ")
    .bind(now)
    .push(", ")
    .bind(now)
    .push(") ON CONFLICT (campaign_id, kind, period) DO NOTHING");
    if db.execute_raw(sql.build()).await?.rows_affected() == 1 {
        return Ok(find(db, campaign_id, kind, &period.key)
            .await?
            .map(|b| b.id));
    }
    let mut sql = Sql::new(backend);
    sql.push("UPDATE bulletins SET status = 'building', attempts = attempts + 1, error = NULL, recipients = ")
        .bind(recipients.join(","))
        .push(", requested_by = ")
        .bind(requested_by.to_owned())
        .push(", started_at = ")
        .bind(now)
        .push(", finished_at = NULL WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND kind = ")
        .bind(kind.code())
        .push(" AND period = ")
        .bind(period.key.clone());
    if !force {
        // A failed send with tries left, or a build cut off (nothing reached the server).
        sql.push(" AND ((status = 'failed' AND attempts < ")
            .bind(settings.max_attempts as i32)
            .push(") OR (status = 'building' AND started_at < ")
            .bind(now - Duration::minutes(STALE_BUILD_MINUTES))
            .push("))");
    }
    if db.execute_raw(sql.build()).await?.rows_affected() == 1 {
        return Ok(find(db, campaign_id, kind, &period.key)
            .await?
            .map(|b| b.id));
    }
    Ok(None)
}

async fn mark_sending(db: &impl ConnectionTrait, id: i32) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE bulletins SET status = 'sending', started_at = ")
        .bind(Utc::now())
        .push(" WHERE id = ")
        .bind(id);
    db.execute_raw(sql.build()).await?;
    Ok(())
}

async fn finish(
    db: &impl ConnectionTrait,
    id: i32,
    status: &str,
    message_id: Option<String>,
    error: Option<String>,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE bulletins SET status = ")
        .bind(status.to_owned())
        .push(", message_id = ")
        .bind(message_id)
        .push(", error = ")
        .bind(error)
        .push(", finished_at = ")
        .bind(Utc::now())
        .push(" WHERE id = ")
        .bind(id);
    db.execute_raw(sql.build()).await?;
    Ok(())
}

/// What a bulletin holds: the text of the e-mail and the workbook.
pub struct Built {
    pub subject: String,
    pub text: String,
    pub filename: String,
    pub xlsx: Vec<u8>,
}

fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "—".to_owned())
}

/// Builds the bulletin of `period`: county progress by township at its end (and, for a week
/// or a month, what the period added), the rankings with the change since the period
/// before, the migrant book, the targets and the reach figures.
pub async fn build<C>(db: &C, campaign: &Campaign, kind: Kind, period: &Period) -> AppResult<Built>
where
    C: KeepFigures,
{
    let actor = Actor::system();
    let id = campaign.id();
    let at_end = SliceQuery {
        to: Some(period.end),
        ..SliceQuery::default()
    };
    let progress: Progress = super::progress(db, &actor, id, &at_end).await?;
    let rankings = super::rankings(
        db,
        &actor,
        id,
        &RankingQuery {
            period: Some(kind.ranking_period().to_owned()),
            to: Some(period.end),
            ..RankingQuery::default()
        },
    )
    .await?;
    let contacts = super::contacts(db, &actor, id, &ContactsQuery::default()).await?;

    let mut tables: Vec<Table> = progress_tables(&progress);
    if kind != Kind::Daily {
        let added = super::progress(
            db,
            &actor,
            id,
            &SliceQuery {
                from: Some(period.start),
                to: Some(period.end),
                ..SliceQuery::default()
            },
        )
        .await?;
        let mut table = progress_tables(&added).remove(0);
        table.name = "本期净增".to_owned();
        tables.insert(1, table);
    }
    tables.insert(1, rankings_table(&rankings));
    tables.extend(contacts_tables(&contacts));

    let mut about = about_progress(&progress);
    about.insert(1, ("通报", format!("{}（{}）", kind.title(), period.key)));
    about.insert(2, ("统计期", format!("{} 至 {}", period.start, period.end)));
    about.push(("消息口径", contacts.note.clone()));
    let xlsx = workbook(&about, &tables)?;

    let total = &progress.total;
    let exam_bottom: Vec<&str> = rankings
        .areas
        .iter()
        .filter(|a| a.exam.bottom_three)
        .map(|a| a.name.as_str())
        .collect();
    let reach_bottom: Vec<&str> = rankings
        .areas
        .iter()
        .filter(|a| a.reach.bottom_three)
        .map(|a| a.name.as_str())
        .collect();
    let mut text = format!(
        "{name}{title}（{key}）\n\n截至 {end} 日终：应检 {target} 人，已通知 {notified} 人，已触达 {reached} 人\
         （触达率 {reach}），已预约 {appointed} 人，已体检 {examined} 人（体检率 {exam}），拒检 {refused} 人\
         （拒检率 {refusal}）。\n流动人口（单独登记造册）：应检 {m_target} 人，已体检 {m_examined} 人\
         （体检率 {m_exam}）。\n",
        name = campaign.model.name,
        title = kind.title(),
        key = period.key,
        end = period.end,
        target = total.target,
        notified = total.notified,
        reached = total.reached,
        reach = percent(total.reach_rate),
        appointed = total.appointed,
        examined = total.examined,
        exam = percent(total.exam_rate),
        refused = total.refused,
        refusal = percent(total.refusal_rate),
        m_target = progress.migrants_total.target,
        m_examined = progress.migrants_total.examined,
        m_exam = percent(progress.migrants_total.exam_rate),
    );
    if !exam_bottom.is_empty() {
        text.push_str(&format!("体检率后三名：{}。\n", exam_bottom.join("、")));
    }
    if !reach_bottom.is_empty() {
        text.push_str(&format!("触达率后三名：{}。\n", reach_bottom.join("、")));
    }
    for target in progress
        .targets
        .iter()
        .filter(|t| t.status == TargetStatus::Missed)
    {
        text.push_str(&format!(
            "{}体检率 {}，未达到 {}% 的目标。\n",
            target.name,
            percent(target.exam_rate),
            target.goal_percent
        ));
    }
    let no_data: Vec<&str> = progress
        .targets
        .iter()
        .filter(|t| t.status == TargetStatus::NoData)
        .map(|t| t.name.as_str())
        .collect();
    if !no_data.is_empty() {
        text.push_str(&format!(
            "{}：暂无数据（尚无居民登记或标记为该人群）。\n",
            no_data.join("、")
        ));
    }
    text.push_str("\n详见附件。本邮件由系统自动发送。\n");
    Ok(Built {
        subject: format!("{}{}（{}）", campaign.model.name, kind.title(), period.key),
        text,
        filename: format!("{}-{}-{}.xlsx", kind.title(), id, period.key),
        xlsx,
    })
}

/// Claims, builds and sends one period's bulletin; `None` when there was nothing to do
/// (already sent, being sent, out of tries).
#[allow(clippy::too_many_arguments)]
pub async fn send<C>(
    db: &C,
    mailer: &EmailChannel,
    settings: &BulletinSettings,
    campaign: &Campaign,
    kind: Kind,
    period: &Period,
    requested_by: &str,
    force: bool,
) -> AppResult<Option<Bulletin>>
where
    C: KeepFigures,
{
    let Some(id) = claim(
        db,
        campaign.id(),
        kind,
        period,
        settings,
        requested_by,
        force,
    )
    .await?
    else {
        return Ok(None);
    };
    let attempts = find(db, campaign.id(), kind, &period.key)
        .await?
        .map_or(1, |b| b.attempts);
    let domain = mailer.sender().email.domain().to_owned();
    // A later attempt gets its own Message-ID, so that a server that has seen the first one
    // does not drop it as a duplicate.
    let message_id = match attempts {
        1 => format!(
            "<bulletin.{}.{}.{}@{domain}>",
            campaign.id(),
            kind.code(),
            period.key
        ),
        n => format!(
            "<bulletin.{}.{}.{}.{n}@{domain}>",
            campaign.id(),
            kind.code(),
            period.key
        ),
    };
    let outcome = async {
        let built = build(db, campaign, kind, period)
            .await
            .map_err(|e| anyhow::anyhow!("生成通报失败：{e}"))?;
        let mut email = Message::builder()
            .from(mailer.sender().clone())
            .subject(built.subject)
            .message_id(Some(message_id.clone()));
        for recipient in &settings.recipients {
            let to: Mailbox = recipient
                .parse()
                .map_err(|e| anyhow::anyhow!("bad recipient {recipient:?}: {e}"))?;
            email = email.to(to);
        }
        let xlsx_type =
            ContentType::parse("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
                .map_err(|e| anyhow::anyhow!("content type: {e}"))?;
        let email = email
            .multipart(
                MultiPart::mixed()
                    .singlepart(SinglePart::plain(built.text))
                    .singlepart(Attachment::new(built.filename).body(built.xlsx, xlsx_type)),
            )
            .map_err(|e| anyhow::anyhow!("生成邮件失败：{e}"))?;
        // From here on a cut-off run cannot tell whether the server took it.
        mark_sending(db, id).await?;
        mailer.deliver(email).await.map_err(|e| match e {
            SendError::Permanent(e) => anyhow::anyhow!("邮件服务器拒收：{e}"),
            SendError::Transient(e) => anyhow::anyhow!("无法连接邮件服务器：{e}"),
            SendError::Unknown(e) => anyhow::anyhow!("邮件服务器未应答：{e}"),
        })?;
        Ok::<(), AppError>(())
    }
    .await;
    match outcome {
        Ok(()) => finish(db, id, "sent", Some(message_id), None).await?,
        Err(e) => {
            tracing::warn!(campaign = campaign.id(), kind = kind.code(), period = %period.key, error = %e, "bulletin not sent");
            finish(db, id, "failed", None, Some(e.to_string())).await?
        }
    }
    find(db, campaign.id(), kind, &period.key).await
}

/// Sends a campaign's bulletin of `kind` for the last closed period now (office), again
/// when `resend` even if it went out before.
pub async fn send_now(
    db: &DatabaseConnection,
    config: &Settings,
    actor: &Actor,
    campaign_id: i32,
    kind: Kind,
    resend: bool,
) -> AppResult<Bulletin> {
    let settings = &config.reports.bulletins;
    if settings.recipients.is_empty() {
        return Err(AppError::Conflict(
            "未配置通报收件人（reports.bulletins.recipients）".to_owned(),
        ));
    }
    let Some(smtp) = &config.messaging.smtp else {
        return Err(AppError::Conflict(
            "未配置邮件服务器（messaging.smtp）".to_owned(),
        ));
    };
    let mailer = EmailChannel::new(smtp)?;
    let campaign = campaign::get(db, campaign_id).await?;
    let today = cube::local_day(&campaign, Utc::now());
    let period = Period::before(kind, today);
    if period.end < cube::first_day(&campaign) {
        return Err(AppError::Conflict(
            "体检工作开始后还没有完整的统计期".to_owned(),
        ));
    }
    let sent = send(
        db,
        &mailer,
        settings,
        &campaign,
        kind,
        &period,
        &actor.username,
        resend,
    )
    .await?;
    match sent {
        Some(bulletin) => Ok(bulletin),
        None => Err(AppError::Conflict(format!(
            "{}（{}）已发送或正在发送；如需重发请注明 resend",
            kind.title(),
            period.key
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn each_kind_reports_the_period_that_ended_before_its_firing() {
        // Monday 30 Nov 2026, 08:00.
        let daily = Period::before(Kind::Daily, d(2026, 11, 30));
        assert_eq!(
            (daily.key.as_str(), daily.start, daily.end),
            ("2026-11-29", d(2026, 11, 29), d(2026, 11, 29))
        );
        let weekly = Period::before(Kind::Weekly, d(2026, 11, 30));
        assert_eq!(
            (weekly.key.as_str(), weekly.start, weekly.end),
            ("2026-W48", d(2026, 11, 23), d(2026, 11, 29))
        );
        let monthly = Period::before(Kind::Monthly, d(2026, 12, 1));
        assert_eq!(
            (monthly.key.as_str(), monthly.start, monthly.end),
            ("2026-11", d(2026, 11, 1), d(2026, 11, 30))
        );
        // Across a year: the first week of 2027 (ISO) ends on Sunday 10 Jan.
        let weekly = Period::before(Kind::Weekly, d(2027, 1, 11));
        assert_eq!(weekly.key, "2027-W01");
        // Sent by hand on a Sunday or mid-month: the last whole week or month, never the
        // one still running.
        let weekly = Period::before(Kind::Weekly, d(2026, 11, 29));
        assert_eq!(
            (weekly.key.as_str(), weekly.end),
            ("2026-W47", d(2026, 11, 22))
        );
        let monthly = Period::before(Kind::Monthly, d(2026, 11, 20));
        assert_eq!(
            (monthly.key.as_str(), monthly.start, monthly.end),
            ("2026-10", d(2026, 10, 1), d(2026, 10, 31))
        );
    }

    #[test]
    fn bad_recipients_and_schedules_are_refused() {
        let mut settings = BulletinSettings::default();
        assert!(check_settings(&settings).is_ok());
        settings.recipients = vec!["not an address".into()];
        assert!(check_settings(&settings).is_err());
        settings.recipients = vec!["卫健委 <office@example.org>".into()];
        settings.weekly = Some("every monday".into());
        assert!(check_settings(&settings).is_err());
    }
}
