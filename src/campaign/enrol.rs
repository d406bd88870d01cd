//! The progress row: one per (campaign, resident), holding the current stage, when each stage
//! was first reached, and the report dimensions. Rows are written set-based (one statement
//! for a whole county) and moved between stages only by conditional updates, so two writers
//! can never take a row backwards or skip the checks of a stage.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend};
use serde::{Deserialize, Serialize};

use super::Campaign;
use crate::db::Sql;
use crate::error::AppResult;
use crate::registry::{Cohort, Special};

/// Where a resident is in a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Target,
    Notified,
    Reached,
    Appointed,
    Examined,
    Refused,
    /// Deceased or moved out of the county: out of the denominator.
    Exempt,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Target,
        Stage::Notified,
        Stage::Reached,
        Stage::Appointed,
        Stage::Examined,
        Stage::Refused,
        Stage::Exempt,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Stage::Target => "target",
            Stage::Notified => "notified",
            Stage::Reached => "reached",
            Stage::Appointed => "appointed",
            Stage::Examined => "examined",
            Stage::Refused => "refused",
            Stage::Exempt => "exempt",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Stage::Target => "待通知",
            Stage::Notified => "已通知",
            Stage::Reached => "已触达",
            Stage::Appointed => "已预约",
            Stage::Examined => "已体检",
            Stage::Refused => "已登记拒检",
            Stage::Exempt => "不计入（死亡或迁出）",
        }
    }

    pub fn parse(raw: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.code() == raw.trim())
    }
}

/// How a special situation routes the resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Booked into an institution with the village's group.
    Clinic,
    /// Mobility-impaired: examined at home (上门).
    HomeVisit,
    /// In hospital: the hospital's records are collected.
    Records,
    /// Remote pastoral: examined in a seasonal window.
    Seasonal,
    /// Detained: counted by the facility.
    Facility,
}

impl Route {
    pub fn code(self) -> &'static str {
        match self {
            Route::Clinic => "clinic",
            Route::HomeVisit => "home_visit",
            Route::Records => "records",
            Route::Seasonal => "seasonal",
            Route::Facility => "facility",
        }
    }

    pub fn of(special: Option<Special>) -> Route {
        match special {
            Some(Special::Mobility) => Route::HomeVisit,
            Some(Special::Hospitalized) => Route::Records,
            Some(Special::RemotePastoral) => Route::Seasonal,
            Some(Special::Detained) => Route::Facility,
            _ => Route::Clinic,
        }
    }
}

const EXEMPT_SPECIALS: &str = "('deceased', 'moved_out')";

/// `route` from the resident's `special` (`r.special`), in SQL: [`Route::of`] (a test keeps
/// the two alike).
const ROUTE_OF_SPECIAL: &str = "CASE WHEN r.special = 'mobility' THEN 'home_visit' \
     WHEN r.special = 'hospitalized' THEN 'records' \
     WHEN r.special = 'remote_pastoral' THEN 'seasonal' \
     WHEN r.special = 'detained' THEN 'facility' ELSE 'clinic' END";

/// The stage a row falls back to when an appointment or an exemption ends.
pub(crate) const NATURAL_STAGE: &str = "CASE WHEN refused_at IS NOT NULL THEN 'refused' \
     WHEN reached_at IS NOT NULL THEN 'reached' \
     WHEN notified_at IS NOT NULL THEN 'notified' ELSE 'target' END";

fn cohort_code(cohort: Cohort) -> String {
    serde_json::json!(cohort)
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `AND resident_id IN (…)` when the work is limited to some residents.
fn limit_to(sql: &mut Sql, column: &'static str, residents: Option<&[i32]>) {
    if let Some(ids) = residents {
        sql.push(" AND ").push(column).push(" IN ");
        sql.bind_list(ids.iter().copied());
    }
}

/// Enrols the residents of the campaign's cohorts (all, or only `residents`) who have no row
/// yet; exempt residents get an `exempt` row. Returns how many rows were written.
pub async fn enrol(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    residents: Option<&[i32]>,
) -> AppResult<u64> {
    if residents.is_some_and(<[i32]>::is_empty) {
        return Ok(0);
    }
    let backend = db.get_database_backend();
    let now = Utc::now();
    let on = campaign.model.reference_date;
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO enrolments (campaign_id, resident_id, stage, village_code, township_code, \
         cohort, migrant_type, special, route, exempt_at, created_at, updated_at) SELECT ",
    );
    sql.bind(campaign.id());
    sql.push(", r.id, CASE WHEN r.special IN ")
        .push(EXEMPT_SPECIALS)
        .push(" THEN 'exempt' ELSE 'target' END, r.village_code, ")
        .push(TOWNSHIP_OF_VILLAGE)
        .push(", CASE");
    let mut in_scope = Vec::new();
    for cohort in Cohort::ALL {
        let (after, up_to) = cohort.birth_range(on);
        sql.push(" WHEN r.birth_date <= ").bind(up_to);
        if let Some(after) = after {
            sql.push(" AND r.birth_date > ").bind(after);
        }
        sql.push(" THEN ").bind(cohort_code(cohort));
        if campaign.cohorts.contains(&cohort) {
            in_scope.push((after, up_to));
        }
    }
    sql.push(" END, r.migrant_type, r.special, ")
        .push(ROUTE_OF_SPECIAL)
        .push(", CASE WHEN r.special IN ")
        .push(EXEMPT_SPECIALS)
        .push(" THEN ");
    sql.bind(now).push(" END, ").bind(now).push(", ").bind(now);
    sql.push(" FROM residents r WHERE (");
    for (i, (after, up_to)) in in_scope.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(r.birth_date <= ").bind(*up_to);
        if let Some(after) = after {
            sql.push(" AND r.birth_date > ").bind(*after);
        }
        sql.push(")");
    }
    sql.push(")");
    limit_to(&mut sql, "r.id", residents);
    if backend == DbBackend::Postgres {
        // PostgreSQL's speculative insertion (ON CONFLICT) costs more per row than the anti-join.
        sql.push(" AND NOT EXISTS (SELECT 1 FROM enrolments e WHERE e.campaign_id = ");
        sql.bind(campaign.id());
        sql.push(" AND e.resident_id = r.id)");
    } else {
        // SQLite materialises a SELECT that reads the table it inserts into, which doubles
        // the cost of opening a campaign; the unique key skips rows already enrolled instead.
        sql.push(" ON CONFLICT (campaign_id, resident_id) DO NOTHING");
    }
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

/// The township code (first nine digits and `000`) of the resident's village code
/// (`r.village_code`); the same SQL on both databases.
const TOWNSHIP_OF_VILLAGE: &str = "(substr(r.village_code, 1, 9) || '000')";

/// Brings a campaign's rows in line with the registry (all residents, or only `residents`):
/// new residents enrolled, moved or changed residents' dimensions updated, deceased and
/// moved-out residents exempted, a corrected exemption undone, each row stamped `now`. Call
/// it in the transaction that changed the registry, for every open campaign. Returns how
/// many rows became exempt: their bookings are then to be cancelled, in the same
/// transaction.
pub async fn refresh(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    residents: Option<&[i32]>,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let backend = db.get_database_backend();
    let id = campaign.id();
    enrol(db, campaign, residents).await?;

    let mut sql = Sql::new(backend);
    sql.push("UPDATE enrolments SET village_code = r.village_code, township_code = ")
        .push(TOWNSHIP_OF_VILLAGE)
        .push(", migrant_type = r.migrant_type, special = r.special, route = ")
        .push(ROUTE_OF_SPECIAL)
        .push(", updated_at = ");
    sql.bind(now);
    sql.push(" FROM residents r WHERE r.id = enrolments.resident_id AND enrolments.campaign_id = ");
    sql.bind(id);
    limit_to(&mut sql, "enrolments.resident_id", residents);
    sql.push(
        " AND (enrolments.village_code <> r.village_code \
         OR enrolments.migrant_type <> r.migrant_type \
         OR enrolments.special IS DISTINCT FROM r.special)",
    );
    db.execute_raw(sql.build()).await?;

    let mut sql = Sql::new(backend);
    sql.push("UPDATE enrolments SET stage = 'exempt', exempt_at = COALESCE(exempt_at, ");
    sql.bind(now).push("), updated_at = ").bind(now);
    sql.push(" WHERE campaign_id = ").bind(id);
    limit_to(&mut sql, "resident_id", residents);
    sql.push(" AND special IN ")
        .push(EXEMPT_SPECIALS)
        .push(" AND stage NOT IN ('exempt', 'examined')");
    let exempted = db.execute_raw(sql.build()).await?.rows_affected();

    let mut sql = Sql::new(backend);
    sql.push("UPDATE enrolments SET stage = ")
        .push(NATURAL_STAGE)
        .push(", exempt_at = NULL, updated_at = ");
    sql.bind(now).push(" WHERE campaign_id = ").bind(id);
    limit_to(&mut sql, "resident_id", residents);
    sql.push(" AND stage = 'exempt' AND (special IS NULL OR special NOT IN ")
        .push(EXEMPT_SPECIALS)
        .push(")");
    db.execute_raw(sql.build()).await?;
    Ok(exempted)
}

/// `, notified_at = COALESCE(notified_at, now), reached_at = COALESCE(reached_at, now)`: the
/// stages are a funnel, so whoever is booked or examined was reached (and notified).
fn reached_too(sql: &mut Sql, now: DateTime<Utc>) {
    sql.push(", notified_at = COALESCE(notified_at, ")
        .bind(now)
        .push("), reached_at = COALESCE(reached_at, ")
        .bind(now)
        .push(")");
}

/// Moves rows to `appointed` (from target, notified or reached); a booking made with a
/// resident also reaches them. Returns rows moved.
pub async fn mark_appointed(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    residents: &[i32],
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE enrolments SET stage = 'appointed', appointed_at = COALESCE(appointed_at, ");
    sql.bind(now).push(")");
    reached_too(&mut sql, now);
    sql.push(", updated_at = ").bind(now);
    sql.push(" WHERE campaign_id = ").bind(campaign_id);
    limit_to(&mut sql, "resident_id", Some(residents));
    sql.push(" AND stage IN ('target', 'notified', 'reached')");
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

/// Moves `appointed` rows back to where they were before (the appointment was cancelled or
/// missed). `appointed_at` keeps the first time.
pub async fn unmark_appointed(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    residents: &[i32],
    now: DateTime<Utc>,
) -> AppResult<u64> {
    if residents.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE enrolments SET stage = ")
        .push(NATURAL_STAGE)
        .push(", updated_at = ");
    sql.bind(now)
        .push(" WHERE campaign_id = ")
        .bind(campaign_id);
    limit_to(&mut sql, "resident_id", Some(residents));
    sql.push(" AND stage = 'appointed'");
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

/// Moves a row to `examined` from any stage: an exam overrides a refusal (which is
/// reversible) and an exemption recorded after the fact. An examined resident was reached.
pub async fn mark_examined(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE enrolments SET stage = 'examined', examined_at = COALESCE(examined_at, ");
    sql.bind(now).push(")");
    reached_too(&mut sql, now);
    sql.push(", updated_at = ").bind(now);
    sql.push(" WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND resident_id = ")
        .bind(resident_id)
        .push(" AND stage <> 'examined'");
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

/// Whether a campaign has rows written before the funnel was kept at every step (or by a
/// path that missed it) — read only, so the writer is taken only when a row needs
/// [`repair_funnel`].
pub async fn needs_repair(db: &impl ConnectionTrait, campaign: &Campaign) -> AppResult<bool> {
    let backend = db.get_database_backend();
    let id = campaign.id();
    let since = campaign
        .model
        .opened_at
        .unwrap_or(campaign.model.created_at);
    let mut sql = Sql::new(backend);
    sql.push("SELECT 1 AS one FROM enrolments WHERE campaign_id = ")
        .bind(id)
        .push(
            " AND ((appointed_at IS NOT NULL AND (reached_at IS NULL OR reached_at > appointed_at)) \
             OR (examined_at IS NOT NULL AND (reached_at IS NULL OR reached_at > examined_at)) \
             OR (reached_at IS NOT NULL AND (notified_at IS NULL OR notified_at > reached_at)) \
             OR (stage IN ('target', 'notified') AND reached_at IS NOT NULL) \
             OR (stage = 'target' AND notified_at IS NOT NULL) \
             OR (reached_at IS NULL AND resident_id IN (SELECT r.resident_id FROM \
             inbound_replies r WHERE r.resident_id IS NOT NULL AND r.received_at >= ",
        )
        .bind(since)
        .push("))) LIMIT 1");
    Ok(db.query_one_raw(sql.build()).await?.is_some())
}

/// Repairs the funnel of a campaign's rows: whoever was booked, examined or replied was
/// reached, at the earliest of those times, and whoever was reached was notified by then;
/// the stage follows (a row waiting at target or notified moves on). Returns the rows
/// changed; a second run changes nothing.
pub async fn repair_funnel(db: &impl ConnectionTrait, campaign: &Campaign) -> AppResult<u64> {
    let backend = db.get_database_backend();
    let id = campaign.id();
    let now = Utc::now();
    let mut changed = 0;
    let mut run = async |sql: Sql| -> AppResult<()> {
        changed += db.execute_raw(sql.build()).await?.rows_affected();
        Ok(())
    };
    for (set, condition) in [
        (
            "UPDATE enrolments SET reached_at = appointed_at, updated_at = ",
            " AND appointed_at IS NOT NULL AND (reached_at IS NULL OR reached_at > appointed_at)",
        ),
        (
            "UPDATE enrolments SET reached_at = examined_at, updated_at = ",
            " AND examined_at IS NOT NULL AND (reached_at IS NULL OR reached_at > examined_at)",
        ),
    ] {
        let mut sql = Sql::new(backend);
        sql.push(set)
            .bind(now)
            .push(" WHERE campaign_id = ")
            .bind(id)
            .push(condition);
        run(sql).await?;
    }
    // A reply from the resident's number while the campaign runs.
    let mut sql = Sql::new(backend);
    sql.push(
        "UPDATE enrolments SET reached_at = (SELECT MIN(r.received_at) FROM inbound_replies r \
         WHERE r.resident_id = enrolments.resident_id AND r.received_at >= ",
    )
    .bind(
        campaign
            .model
            .opened_at
            .unwrap_or(campaign.model.created_at),
    )
    .push("), updated_at = ")
    .bind(now)
    .push(" WHERE campaign_id = ")
    .bind(id)
    .push(
        " AND reached_at IS NULL AND resident_id IN (SELECT r.resident_id FROM \
         inbound_replies r WHERE r.resident_id IS NOT NULL AND r.received_at >= ",
    )
    .bind(
        campaign
            .model
            .opened_at
            .unwrap_or(campaign.model.created_at),
    )
    .push(")");
    run(sql).await?;
    let mut sql = Sql::new(backend);
    sql.push("UPDATE enrolments SET notified_at = reached_at, updated_at = ")
        .bind(now)
        .push(" WHERE campaign_id = ")
        .bind(id)
        .push(" AND reached_at IS NOT NULL AND (notified_at IS NULL OR notified_at > reached_at)");
    run(sql).await?;
    for (set, condition) in [
        (
            "UPDATE enrolments SET stage = 'reached', updated_at = ",
            " AND stage IN ('target', 'notified') AND reached_at IS NOT NULL",
        ),
        (
            "UPDATE enrolments SET stage = 'notified', updated_at = ",
            " AND stage IN ('target') AND notified_at IS NOT NULL",
        ),
    ] {
        let mut sql = Sql::new(backend);
        sql.push(set)
            .bind(now)
            .push(" WHERE campaign_id = ")
            .bind(id)
            .push(condition);
        run(sql).await?;
    }
    Ok(changed)
}

/// The progress row notices a contact (a message sent or delivered, an attempt, a reply):
/// sent → notified, delivered or answered → reached (never backwards, never over
/// appointed/examined/refused/exempt).
pub async fn notice_contact(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    delivered: bool,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let mut sql = progress_statement(db, campaign_id, delivered, now);
    sql.push(" AND resident_id = ").bind(resident_id);
    db.execute_raw(sql.build()).await?;
    Ok(())
}

/// `notice_contact` for many residents of one campaign at once.
pub async fn notice_contact_many(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_ids: &[i32],
    delivered: bool,
    now: DateTime<Utc>,
) -> AppResult<()> {
    for chunk in resident_ids.chunks(500) {
        let mut sql = progress_statement(db, campaign_id, delivered, now);
        sql.push(" AND resident_id IN ")
            .bind_list(chunk.iter().copied());
        db.execute_raw(sql.build()).await?;
    }
    Ok(())
}

/// The update of `notice_contact`, up to the resident.
fn progress_statement(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    delivered: bool,
    now: DateTime<Utc>,
) -> Sql {
    let mut sql = Sql::new(db.get_database_backend());
    if delivered {
        sql.push(
            "UPDATE enrolments SET stage = CASE WHEN stage IN ('target', 'notified') \
             THEN 'reached' ELSE stage END, notified_at = COALESCE(notified_at, ",
        )
        .bind(now)
        .push("), reached_at = COALESCE(reached_at, ")
        .bind(now)
        .push(")");
    } else {
        sql.push(
            "UPDATE enrolments SET stage = CASE WHEN stage = 'target' THEN 'notified' \
             ELSE stage END, notified_at = COALESCE(notified_at, ",
        )
        .bind(now)
        .push(")");
    }
    sql.push(", updated_at = ")
        .bind(now)
        .push(" WHERE campaign_id = ")
        .bind(campaign_id);
    sql
}

/// A confirmed refusal: the row counts as refused (an exam or exemption in between keeps its
/// stage).
pub async fn mark_refused(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE enrolments SET stage = 'refused', refused_at = COALESCE(refused_at, ")
        .bind(now)
        .push("), updated_at = ")
        .bind(now)
        .push(" WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND resident_id = ")
        .bind(resident_id)
        .push(" AND stage NOT IN ('examined', 'exempt')");
    Ok(db.execute_raw(sql.build()).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `route` from a `special` column, in SQL, written out from [`Route::of`].
    fn route_sql(column: &str) -> String {
        let mut sql = String::from("CASE ");
        for special in [
            Special::Mobility,
            Special::Hospitalized,
            Special::RemotePastoral,
            Special::Detained,
        ] {
            sql.push_str(&format!(
                "WHEN {column} = '{}' THEN '{}' ",
                special.code(),
                Route::of(Some(special)).code()
            ));
        }
        sql.push_str("ELSE 'clinic' END");
        sql
    }

    #[test]
    fn routes_follow_the_special_situation() {
        assert_eq!(Route::of(None), Route::Clinic);
        assert_eq!(Route::of(Some(Special::Mobility)), Route::HomeVisit);
        assert_eq!(Route::of(Some(Special::Hospitalized)), Route::Records);
        assert_eq!(Route::of(Some(Special::RemotePastoral)), Route::Seasonal);
        assert_eq!(Route::of(Some(Special::Detained)), Route::Facility);
        assert_eq!(Route::of(Some(Special::Deceased)), Route::Clinic);
        assert!(route_sql("special").contains("WHEN special = 'mobility' THEN 'home_visit'"));
        assert_eq!(ROUTE_OF_SPECIAL, route_sql("r.special"));
    }

    #[test]
    fn stages_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.code()), Some(stage));
        }
        assert_eq!(Stage::parse("done"), None);
    }
}
