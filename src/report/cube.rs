//! The report cube: the progress rows of a campaign counted per village, cohort, migrant
//! type, special situation, route and examining place, kept in `report_cells` — the live
//! figures and each closed day's figures as they stood at its end — plus the key groups and
//! the reach figures (messages, contact attempts, replies). Reports read only these tables;
//! a refresh rebuilds them from `enrolments`, `messages`, `contact_attempts` and
//! `inbound_replies`, reading first and writing in one short transaction (opened by
//! `flows::reports`).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, QueryResult, Statement};

use crate::campaign::Campaign;
use crate::db::Sql;
use crate::error::AppResult;

/// Counts of one cell or of a sum of cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub population: i64,
    pub exempt: i64,
    pub notified: i64,
    pub reached: i64,
    pub appointed: i64,
    pub examined: i64,
    pub refused: i64,
}

impl Counts {
    pub const COLUMNS: [&'static str; 7] = [
        "population",
        "exempt",
        "notified",
        "reached",
        "appointed",
        "examined",
        "refused",
    ];

    /// `, SUM(c) AS c` for each of the [`Counts::COLUMNS`], in order.
    pub const SUMS: &'static str = ", SUM(population) AS population, SUM(exempt) AS exempt, \
        SUM(notified) AS notified, SUM(reached) AS reached, SUM(appointed) AS appointed, \
        SUM(examined) AS examined, SUM(refused) AS refused";

    fn values(&self) -> [i64; 7] {
        [
            self.population,
            self.exempt,
            self.notified,
            self.reached,
            self.appointed,
            self.examined,
            self.refused,
        ]
    }

    fn from_values(v: [i64; 7]) -> Self {
        Self {
            population: v[0],
            exempt: v[1],
            notified: v[2],
            reached: v[3],
            appointed: v[4],
            examined: v[5],
            refused: v[6],
        }
    }

    pub fn add(&mut self, other: &Counts) {
        let (a, b) = (self.values(), other.values());
        *self = Self::from_values(std::array::from_fn(|i| a[i] + b[i]));
    }

    /// `self − earlier` for what happened in between; population and exempt stay `self`'s
    /// (the denominator is the one at the end of the range).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            population: self.population,
            exempt: self.exempt,
            notified: self.notified - earlier.notified,
            reached: self.reached - earlier.reached,
            appointed: self.appointed - earlier.appointed,
            examined: self.examined - earlier.examined,
            refused: self.refused - earlier.refused,
        }
    }

    pub fn target(&self) -> i64 {
        self.population - self.exempt
    }
}

/// `SUM(...)` columns named as in [`Counts::COLUMNS`] (NULL when no row was summed).
#[derive(FromQueryResult)]
struct Sums {
    population: Option<i64>,
    exempt: Option<i64>,
    notified: Option<i64>,
    reached: Option<i64>,
    appointed: Option<i64>,
    examined: Option<i64>,
    refused: Option<i64>,
}

/// Counts read from `SUM(...)` columns named as in [`Counts::COLUMNS`]; nothing summed is 0.
impl FromQueryResult for Counts {
    fn from_query_result(row: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        let sums = Sums::from_query_result(row, pre)?;
        Ok(Counts {
            population: sums.population.unwrap_or(0),
            exempt: sums.exempt.unwrap_or(0),
            notified: sums.notified.unwrap_or(0),
            reached: sums.reached.unwrap_or(0),
            appointed: sums.appointed.unwrap_or(0),
            examined: sums.examined.unwrap_or(0),
            refused: sums.refused.unwrap_or(0),
        })
    }
}

/// One row of the cube.
#[derive(FromQueryResult)]
struct Cell {
    village_code: String,
    township_code: String,
    cohort: String,
    migrant_type: String,
    special: String,
    route: String,
    exam_area: String,
    #[sea_orm(nested)]
    counts: Counts,
}

/// What a refresh did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Refreshed {
    pub campaign_id: i32,
    pub refreshed_at: DateTime<Utc>,
    pub took_ms: i64,
    /// Closed days whose figures were computed in this refresh.
    pub days_computed: Vec<NaiveDate>,
    pub cells: usize,
    /// Rows that could not be read and were left out of the figures (each one logged).
    pub rows_skipped: usize,
}

/// The measures of every progress row as it stood before `until`, per cell:
/// - a row counts from its creation;
/// - exempt rows (deceased, moved out) leave the denominator and every numerator from their
///   exemption on (an exemption later overridden by an exam counted until the exam);
/// - appointed: holding a booking, or examined (with or without one: an exam is past the
///   appointment); a cancelled or missed booking, or one a confirmed refusal cancelled, no
///   longer counts;
/// - the stages are a funnel: a resident booked (even if the booking was cancelled later)
///   or examined was reached and notified by then;
/// - a refusal counts while it stands: until an exam revokes it or an exemption ends it;
/// - the examining place is the area of the institution that examined the resident.
///
/// A day computed after the fact reads today's dimensions (a household that moved since is
/// counted in its new village) and only the changes the rows remember.
fn cells_sql(backend: DbBackend, campaign_id: i32, until: DateTime<Utc>) -> Sql {
    // `{u}` marks where `until` is bound.
    let text = "SELECT village_code, township_code, cohort, migrant_type, special, route, \
         exam_area, COUNT(*) AS population, SUM(is_exempt) AS exempt, \
         SUM(CASE WHEN is_exempt = 0 AND notified_on = 1 THEN 1 ELSE 0 END) AS notified, \
         SUM(CASE WHEN is_exempt = 0 AND reached_on = 1 THEN 1 ELSE 0 END) AS reached, \
         SUM(CASE WHEN is_exempt = 0 AND appointed_on = 1 THEN 1 ELSE 0 END) AS appointed, \
         SUM(examined_on) AS examined, SUM(refused_on) AS refused FROM (SELECT \
         e.village_code, e.township_code, e.cohort, e.migrant_type, \
         COALESCE(e.special, '') AS special, e.route, \
         CASE WHEN e.examined_at < {u} THEN COALESCE(i.area_code, '') ELSE '' END AS exam_area, \
         CASE WHEN e.exempt_at < {u} AND (e.stage = 'exempt' \
         OR (e.stage = 'examined' AND e.examined_at >= {u})) THEN 1 ELSE 0 END AS is_exempt, \
         CASE WHEN e.notified_at < {u} OR e.reached_at < {u} OR e.appointed_at < {u} \
         OR e.examined_at < {u} THEN 1 ELSE 0 END AS notified_on, \
         CASE WHEN e.reached_at < {u} OR e.appointed_at < {u} OR e.examined_at < {u} \
         THEN 1 ELSE 0 END AS reached_on, \
         CASE WHEN (e.appointed_at < {u} AND e.stage IN ('appointed', 'examined')) \
         OR e.examined_at < {u} THEN 1 ELSE 0 END AS appointed_on, \
         CASE WHEN e.examined_at < {u} THEN 1 ELSE 0 END AS examined_on, \
         CASE WHEN e.refused_at < {u} AND (e.stage = 'refused' \
         OR (e.stage = 'examined' AND e.examined_at >= {u}) \
         OR (e.stage = 'exempt' AND e.exempt_at >= {u})) THEN 1 ELSE 0 END AS refused_on \
         FROM enrolments e LEFT JOIN exam_records x ON x.campaign_id = e.campaign_id \
         AND x.resident_id = e.resident_id LEFT JOIN institutions i ON i.id = x.institution_id \
         WHERE e.campaign_id = {c} AND e.created_at < {u}) c \
         GROUP BY village_code, township_code, cohort, migrant_type, special, route, exam_area";
    let mut sql = Sql::new(backend);
    let mut rest: &'static str = text;
    while let Some(at) = rest.find('{') {
        let (head, marker) = rest.split_at(at);
        sql.push(head);
        match &marker[..3] {
            "{u}" => sql.bind(until),
            _ => sql.bind(campaign_id),
        };
        rest = &marker[3..];
    }
    sql.push(rest);
    sql
}

/// Reads the rows of `statement`; a row that cannot be read is logged and left out, so one
/// bad row never stops a report. Returns the rows read and how many were left out.
async fn read_rows<T: FromQueryResult>(
    db: &impl ConnectionTrait,
    statement: Statement,
    campaign_id: i32,
    what: &'static str,
) -> AppResult<(Vec<T>, usize)> {
    let rows = db.query_all_raw(statement).await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut skipped = 0;
    for row in &rows {
        match T::from_query_result(row, "") {
            Ok(item) => out.push(item),
            Err(e) => {
                skipped += 1;
                tracing::warn!(campaign = campaign_id, what, error = %e, "a report row cannot be read: left out");
            }
        }
    }
    Ok((out, skipped))
}

async fn read_cells(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    until: DateTime<Utc>,
) -> AppResult<(Vec<Cell>, usize)> {
    let sql = cells_sql(db.get_database_backend(), campaign_id, until);
    read_rows(db, sql.build(), campaign_id, "progress cell").await
}

/// Rows per multi-row INSERT (well under SQLite's limit on bound values).
const CHUNK: usize = 400;

/// Inserts `rows` with multi-row statements of [`CHUNK`] rows: `head` is the statement up to
/// `VALUES `, `row` binds one row's values (separated by `, `) inside its parentheses.
async fn insert_rows<T>(
    db: &impl ConnectionTrait,
    head: &'static str,
    rows: &[T],
    row: impl Fn(&mut Sql, &T),
) -> AppResult<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push(head);
        for (i, item) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(");
            row(&mut sql, item);
            sql.push(")");
        }
        db.execute_raw(sql.build()).await?;
    }
    Ok(())
}

async fn write_cells(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    day: Option<NaiveDate>,
    cells: &[Cell],
) -> AppResult<()> {
    let backend = db.get_database_backend();
    let mut sql = Sql::new(backend);
    sql.push("DELETE FROM report_cells WHERE campaign_id = ")
        .bind(campaign_id);
    match day {
        Some(day) => sql.push(" AND day = ").bind(day),
        None => sql.push(" AND day IS NULL"),
    };
    db.execute_raw(sql.build()).await?;
    insert_rows(
        db,
        "INSERT INTO report_cells (campaign_id, day, village_code, township_code, cohort, \
         migrant_type, special, route, exam_area, population, exempt, notified, reached, \
         appointed, examined, refused) VALUES ",
        cells,
        |sql, cell| {
            sql.bind(campaign_id).push(", ").bind(day);
            for text in [
                &cell.village_code,
                &cell.township_code,
                &cell.cohort,
                &cell.migrant_type,
                &cell.special,
                &cell.route,
                &cell.exam_area,
            ] {
                sql.push(", ").bind(text.clone());
            }
            for value in cell.counts.values() {
                sql.push(", ").bind(value);
            }
        },
    )
    .await?;
    Ok(())
}

/// A key group's live figures per village.
struct KeyGroupRow {
    village_code: String,
    tag: String,
    target: i64,
    examined: i64,
}

/// A [`KeyGroupRow`] as summed (NULL when no row was summed).
#[derive(FromQueryResult)]
struct KeyGroupSums {
    village_code: String,
    tag: String,
    target: Option<i64>,
    examined: Option<i64>,
}

async fn read_key_groups(
    db: &impl ConnectionTrait,
    campaign_id: i32,
) -> AppResult<(Vec<KeyGroupRow>, usize)> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "SELECT e.village_code, t.tag, \
         SUM(CASE WHEN e.stage <> 'exempt' THEN 1 ELSE 0 END) AS target, \
         SUM(CASE WHEN e.stage = 'examined' THEN 1 ELSE 0 END) AS examined \
         FROM resident_tags t JOIN enrolments e ON e.resident_id = t.resident_id \
         WHERE e.campaign_id = ",
    );
    sql.bind(campaign_id)
        .push(" GROUP BY e.village_code, t.tag");
    let (sums, skipped) =
        read_rows::<KeyGroupSums>(db, sql.build(), campaign_id, "key group").await?;
    let groups = sums
        .into_iter()
        .map(|g| KeyGroupRow {
            village_code: g.village_code,
            tag: g.tag,
            target: g.target.unwrap_or(0),
            examined: g.examined.unwrap_or(0),
        })
        .collect();
    Ok((groups, skipped))
}

/// One line of reach figures: `source` is `message` (total = sent, succeeded = delivered),
/// `attempt` (a cadre's own contact; total = made, succeeded = reached the person or a
/// relative) or `reply` (`channel` = the keyword's action; total = replies).
struct ContactRow {
    village_code: String,
    source: &'static str,
    channel: String,
    provider: String,
    total: i64,
    succeeded: i64,
    failed: i64,
    /// Messages sent whose delivery receipt did not come in time.
    unconfirmed: i64,
}

/// A [`ContactRow`] as summed (NULL when no row was summed), before its source is named.
#[derive(FromQueryResult)]
struct ContactSums {
    village_code: String,
    channel: String,
    provider: String,
    total: Option<i64>,
    succeeded: Option<i64>,
    failed: Option<i64>,
    unconfirmed: Option<i64>,
}

/// A message's line: its route, or `none` when no channel took it (no provider, no channel).
const NO_CHANNEL_KEY: &str = "CASE WHEN m.provider IS NULL AND m.channel IS NULL THEN 'none' \
     ELSE COALESCE(m.route, 'none') END";

async fn read_contacts(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
) -> AppResult<(Vec<ContactRow>, usize)> {
    let backend = db.get_database_backend();
    let id = campaign.id();
    let mut out = Vec::new();
    let mut skipped = 0;

    // A message counts once it went to a provider (sent), or when it failed for lack of any
    // channel: then it has neither a channel nor a provider and is counted on a line of its
    // own (`none`, 无可用渠道). E-mail has no delivery receipt: a message the mail server
    // accepted counts as delivered. Messages never sent (suppressed, cancelled, waiting)
    // have no line.
    let mut sql = Sql::new(backend);
    sql.push("SELECT e.village_code, ")
        .push(NO_CHANNEL_KEY)
        .push(
            " AS channel, \
         COALESCE(m.provider, m.channel, '') AS provider, \
         SUM(CASE WHEN m.sent_at IS NOT NULL THEN 1 ELSE 0 END) AS total, \
         SUM(CASE WHEN m.delivered_at IS NOT NULL \
         OR (m.route = 'email' AND m.sent_at IS NOT NULL) THEN 1 ELSE 0 END) AS succeeded, \
         SUM(CASE WHEN m.state = 'failed' THEN 1 ELSE 0 END) AS failed, \
         SUM(CASE WHEN m.state = 'unconfirmed' THEN 1 ELSE 0 END) AS unconfirmed \
         FROM messages m JOIN enrolments e ON e.campaign_id = m.campaign_id \
         AND e.resident_id = m.resident_id WHERE m.campaign_id = ",
        );
    sql.bind(id)
        .push(" AND (m.sent_at IS NOT NULL OR m.state = 'failed') GROUP BY e.village_code, ")
        .push(NO_CHANNEL_KEY)
        .push(", COALESCE(m.provider, m.channel, '')");
    skipped += push_contacts(&mut out, db, id, &sql, "message").await?;

    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT village_code, channel, '' AS provider, COUNT(*) AS total, \
         SUM(CASE WHEN reached THEN 1 ELSE 0 END) AS succeeded, CAST(0 AS BIGINT) AS failed, \
         CAST(0 AS BIGINT) AS unconfirmed FROM contact_attempts WHERE message_id IS NULL AND campaign_id = ",
    );
    sql.bind(id).push(" GROUP BY village_code, channel");
    skipped += push_contacts(&mut out, db, id, &sql, "attempt").await?;

    // Replies received while the campaign runs (a reply names its sender's village when the
    // number is a resident's; unknown numbers have none).
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT COALESCE(village_code, '') AS village_code, action AS channel, provider, \
         COUNT(*) AS total, CAST(0 AS BIGINT) AS succeeded, CAST(0 AS BIGINT) AS failed, \
         CAST(0 AS BIGINT) AS unconfirmed FROM inbound_replies WHERE received_at >= ",
    );
    sql.bind(
        campaign
            .model
            .opened_at
            .unwrap_or(campaign.model.created_at),
    );
    if campaign.model.status == "closed" {
        sql.push(" AND received_at <= ")
            .bind(campaign.model.updated_at);
    }
    sql.push(" GROUP BY COALESCE(village_code, ''), action, provider");
    skipped += push_contacts(&mut out, db, id, &sql, "reply").await?;
    Ok((out, skipped))
}

async fn push_contacts(
    out: &mut Vec<ContactRow>,
    db: &impl ConnectionTrait,
    campaign_id: i32,
    sql: &Sql,
    source: &'static str,
) -> AppResult<usize> {
    let (read, skipped) = read_rows::<ContactSums>(db, sql.build(), campaign_id, source).await?;
    out.extend(read.into_iter().map(|c| ContactRow {
        village_code: c.village_code,
        source,
        channel: c.channel,
        provider: c.provider,
        total: c.total.unwrap_or(0),
        succeeded: c.succeeded.unwrap_or(0),
        failed: c.failed.unwrap_or(0),
        unconfirmed: c.unconfirmed.unwrap_or(0),
    }));
    Ok(skipped)
}

/// Serialises refreshes of one campaign: on PostgreSQL a transaction-level advisory lock
/// (two instances refreshing at once would each keep their rows); SQLite has one writer.
async fn lock_campaign(db: &impl ConnectionTrait, campaign_id: i32) -> AppResult<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        let mut sql = Sql::new(DbBackend::Postgres);
        sql.push("SELECT pg_advisory_xact_lock(")
            .bind(0x7265_706f_i64 << 32 | i64::from(campaign_id))
            .push(")");
        db.execute_raw(sql.build()).await?;
    }
    Ok(())
}

/// The end of a local day: the first instant of the next one.
pub fn end_of_day(campaign: &Campaign, day: NaiveDate) -> DateTime<Utc> {
    crate::time::at_local(
        campaign.timezone,
        day + Duration::days(1),
        chrono::NaiveTime::MIN,
    )
}

/// The local date of an instant in the campaign's time zone.
pub fn local_day(campaign: &Campaign, at: DateTime<Utc>) -> NaiveDate {
    crate::time::local_day(campaign.timezone, at)
}

/// How long after midnight a day is taken as closed: a change stamped just before midnight
/// may commit a little after it.
const CLOSING_GRACE_MINUTES: i64 = 15;

/// The last local day whose figures are final at `now`.
pub fn last_closed_day(campaign: &Campaign, now: DateTime<Utc>) -> NaiveDate {
    local_day(campaign, now - Duration::minutes(CLOSING_GRACE_MINUTES)) - Duration::days(1)
}

/// The first day the campaign has figures for: the day it opened (or was created).
pub fn first_day(campaign: &Campaign) -> NaiveDate {
    local_day(
        campaign,
        campaign
            .model
            .opened_at
            .unwrap_or(campaign.model.created_at),
    )
}

/// A closed day's figures as they stood at its end, read by [`read_day`] for [`write_day`].
pub struct Day {
    day: NaiveDate,
    cells: Vec<Cell>,
    /// Sums per (village, township), and the examined elsewhere.
    villages: Vec<((String, String), (Counts, i64))>,
}

/// Reads the figures of closed day `day` as they stood at its end: the cells, and their sums
/// per village for the daily series. Reading only; [`write_day`] keeps them.
pub async fn read_day(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    day: NaiveDate,
) -> AppResult<Day> {
    let (cells, _) = read_cells(db, campaign.id(), end_of_day(campaign, day)).await?;
    let mut villages: BTreeMap<(&str, &str), (Counts, i64)> = BTreeMap::new();
    for cell in &cells {
        let entry = villages
            .entry((cell.village_code.as_str(), cell.township_code.as_str()))
            .or_default();
        entry.0.add(&cell.counts);
        if cell.exam_area.is_empty() {
            entry.1 += cell.counts.examined;
        }
    }
    let villages = villages
        .into_iter()
        .map(|((village, township), sums)| ((village.to_owned(), township.to_owned()), sums))
        .collect();
    Ok(Day {
        day,
        cells,
        villages,
    })
}

/// Keeps the figures of a closed day read by [`read_day`], in the caller's transaction
/// (replacing what was kept of that day). Returns how many cells were written.
pub async fn write_day(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    figures: &Day,
) -> AppResult<usize> {
    let id = campaign.id();
    let day = figures.day;
    lock_campaign(db, id).await?;
    write_cells(db, id, Some(day), &figures.cells).await?;
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("DELETE FROM report_days WHERE campaign_id = ")
        .bind(id)
        .push(" AND day = ")
        .bind(day);
    db.execute_raw(sql.build()).await?;
    insert_rows(
        db,
        "INSERT INTO report_days (campaign_id, day, village_code, township_code, population, \
         exempt, notified, reached, appointed, examined, refused, elsewhere) VALUES ",
        &figures.villages,
        |sql, ((village, township), (counts, elsewhere))| {
            sql.bind(id).push(", ").bind(day);
            sql.push(", ").bind(village.clone());
            sql.push(", ").bind(township.clone());
            for value in counts.values() {
                sql.push(", ").bind(value);
            }
            sql.push(", ").bind(*elsewhere);
        },
    )
    .await?;
    Ok(figures.cells.len())
}

/// A campaign's live figures, the key groups and the reach figures as read at one instant,
/// by [`read_live`] for [`write_live`].
pub struct Live {
    now: DateTime<Utc>,
    cells: Vec<Cell>,
    groups: Vec<KeyGroupRow>,
    contacts: Vec<ContactRow>,
    /// Rows that could not be read and were left out (each one logged).
    pub rows_skipped: usize,
}

impl Live {
    /// How many cells the live figures have.
    pub fn cells(&self) -> usize {
        self.cells.len()
    }
}

/// Reads the live figures, the key groups and the reach figures of `campaign` at `now`.
/// Reading only; [`write_live`] keeps them.
pub async fn read_live(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    now: DateTime<Utc>,
) -> AppResult<Live> {
    let id = campaign.id();
    // A second past now: rows written this very instant are in.
    let (cells, skipped_cells) = read_cells(db, id, now + Duration::seconds(1)).await?;
    let (groups, skipped_groups) = read_key_groups(db, id).await?;
    let (contacts, skipped_contacts) = read_contacts(db, campaign).await?;
    Ok(Live {
        now,
        cells,
        groups,
        contacts,
        rows_skipped: skipped_cells + skipped_groups + skipped_contacts,
    })
}

/// What keeping the live figures came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveWritten {
    /// Another refresh that read later than this one had written already: its figures stay.
    Superseded,
    /// Kept; the closed days are kept through this day (none yet: `None`).
    Kept { days_through: Option<NaiveDate> },
}

/// Keeps the live figures read by [`read_live`] in the caller's transaction, unless a refresh
/// that read later has written already, and records the refresh (`started`: when it began,
/// for how long it took).
pub async fn write_live(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    live: &Live,
    started: Instant,
) -> AppResult<LiveWritten> {
    let id = campaign_id;
    lock_campaign(db, id).await?;
    let backend = db.get_database_backend();
    if refreshed_at(db, id).await?.is_some_and(|at| at >= live.now) {
        return Ok(LiveWritten::Superseded);
    }
    write_cells(db, id, None, &live.cells).await?;
    for delete in [
        "DELETE FROM report_key_groups WHERE campaign_id = ",
        "DELETE FROM report_contacts WHERE campaign_id = ",
    ] {
        let mut sql = Sql::new(backend);
        sql.push(delete).bind(id);
        db.execute_raw(sql.build()).await?;
    }
    insert_rows(
        db,
        "INSERT INTO report_key_groups (campaign_id, village_code, tag, target, examined) \
         VALUES ",
        &live.groups,
        |sql, g| {
            sql.bind(id).push(", ").bind(g.village_code.clone());
            sql.push(", ").bind(g.tag.clone()).push(", ").bind(g.target);
            sql.push(", ").bind(g.examined);
        },
    )
    .await?;
    insert_rows(
        db,
        "INSERT INTO report_contacts (campaign_id, village_code, source, channel, provider, \
         total, succeeded, failed, unconfirmed) VALUES ",
        &live.contacts,
        |sql, c| {
            sql.bind(id).push(", ").bind(c.village_code.clone());
            sql.push(", ")
                .bind(c.source)
                .push(", ")
                .bind(c.channel.clone());
            sql.push(", ")
                .bind(c.provider.clone())
                .push(", ")
                .bind(c.total);
            sql.push(", ").bind(c.succeeded).push(", ").bind(c.failed);
            sql.push(", ").bind(c.unconfirmed);
        },
    )
    .await?;
    let days_through = kept_through(db, id).await?;
    let took_ms = started.elapsed().as_millis() as i64;
    record_refresh(db, id, live.now, took_ms, days_through).await?;
    Ok(LiveWritten::Kept { days_through })
}

/// The closed days a refresh at `now` computes after the live figures, oldest first: from
/// the day after `days_through` (or the day the campaign opened) to the last closed day, at
/// most `backfill_days` of them.
pub fn days_to_compute(
    campaign: &Campaign,
    days_through: Option<NaiveDate>,
    now: DateTime<Utc>,
    backfill_days: u32,
) -> Vec<NaiveDate> {
    let last_closed = last_closed_day(campaign, now);
    let first = days_through
        .map(|d| d + Duration::days(1))
        .unwrap_or_else(|| first_day(campaign))
        .max(first_day(campaign));
    first
        .iter_days()
        .take_while(|day| *day <= last_closed)
        .take(backfill_days as usize)
        .collect()
}

/// Records that the closed days are kept through `day`, in the caller's transaction (a
/// later day recorded already stays).
pub async fn mark_kept(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    day: NaiveDate,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE report_refreshes SET days_through = ")
        .bind(day)
        .push(" WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND (days_through IS NULL OR days_through < ")
        .bind(day)
        .push(")");
    db.execute_raw(sql.build()).await?;
    Ok(())
}

async fn kept_through(db: &impl ConnectionTrait, campaign_id: i32) -> AppResult<Option<NaiveDate>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT days_through FROM report_refreshes WHERE campaign_id = ")
        .bind(campaign_id);
    Ok(Kept::find_by_statement(sql.build())
        .one(db)
        .await?
        .and_then(|kept| kept.days_through))
}

/// How far a campaign's closed days are kept (`report_refreshes.days_through`).
#[derive(FromQueryResult)]
struct Kept {
    days_through: Option<NaiveDate>,
}

/// When a campaign's live figures were rebuilt (`report_refreshes.refreshed_at`).
#[derive(FromQueryResult)]
struct Refreshes {
    refreshed_at: DateTime<Utc>,
}

async fn record_refresh(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    at: DateTime<Utc>,
    took_ms: i64,
    days_through: Option<NaiveDate>,
) -> AppResult<()> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push(
        "INSERT INTO report_refreshes (campaign_id, refreshed_at, took_ms, days_through) VALUES (",
    )
    .bind(campaign_id)
    .push(", ")
    .bind(at)
    .push(", ")
    .bind(took_ms)
    .push(", ")
    .bind(days_through)
    .push(
        ") ON CONFLICT (campaign_id) DO UPDATE SET refreshed_at = excluded.refreshed_at, \
             took_ms = excluded.took_ms",
    );
    db.execute_raw(sql.build()).await?;
    Ok(())
}

/// When the live figures of a campaign were last rebuilt.
pub async fn refreshed_at(
    db: &impl ConnectionTrait,
    campaign_id: i32,
) -> AppResult<Option<DateTime<Utc>>> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT refreshed_at FROM report_refreshes WHERE campaign_id = ")
        .bind(campaign_id);
    Ok(Refreshes::find_by_statement(sql.build())
        .one(db)
        .await?
        .map(|r| r.refreshed_at))
}

/// Whether the figures of closed day `day` are kept.
pub async fn has_day(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    day: NaiveDate,
) -> AppResult<bool> {
    if kept_through(db, campaign_id)
        .await?
        .is_some_and(|t| t >= day)
    {
        return Ok(true);
    }
    // Computed on demand (a report or a bulletin asked for it) ahead of the backfill.
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT 1 AS one FROM report_cells WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND day = ")
        .bind(day)
        .push(" LIMIT 1");
    Ok(db.query_one_raw(sql.build()).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sums_are_of_the_columns_in_order() {
        let sums: String = Counts::COLUMNS
            .iter()
            .map(|c| format!(", SUM({c}) AS {c}"))
            .collect();
        assert_eq!(Counts::SUMS, sums);
    }
}
