//! The one place the demo writes times itself. The service stamps what it records with the
//! present moment: a campaign is opened now, its progress rows are created now, and an exam
//! moves its row to `examined` now even when the exam's date (which the service does take)
//! lies weeks back. Contact attempts already carry their own time. To show a campaign six
//! weeks into its work — closed days, changes since last week and last month — the demo moves
//! those stamps to the days they stand for, and nothing else: every row was written by the
//! service's own functions first, and the refusal register (a hash chain) is left as it is.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

use crate::campaign::Campaign;
use crate::db::Sql;
use crate::time::at_local;

/// Moves the campaign's opening to `opened_on`, its progress rows' creation (and the
/// exemptions found at opening) with it, each exam to its exam date, and each booking to the
/// call on which the resident agreed to it.
pub async fn backdate(
    db: &DatabaseConnection,
    campaign: &Campaign,
    opened_on: NaiveDate,
) -> anyhow::Result<()> {
    let id = campaign.id();
    let tz = campaign.timezone;
    let opened_at = at_local(
        tz,
        opened_on,
        NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
    );
    let today = crate::time::today();
    let backend = db.get_database_backend();
    let txn = db.begin().await?;

    let mut sql = Sql::new(backend);
    sql.push("UPDATE campaigns SET created_at = ")
        .bind(opened_at - Duration::days(2))
        .push(", opened_at = ")
        .bind(opened_at)
        .push(" WHERE id = ")
        .bind(id);
    txn.execute_raw(sql.build()).await?;

    let mut sql = Sql::new(backend);
    sql.push("UPDATE enrolments SET created_at = ")
        .bind(opened_at)
        .push(", exempt_at = CASE WHEN exempt_at IS NULL THEN NULL ELSE ")
        .bind(opened_at)
        .push(" END WHERE campaign_id = ")
        .bind(id);
    txn.execute_raw(sql.build()).await?;

    // An exam counts from late morning of its exam date (today's stay as recorded).
    let mut sql = Sql::new(backend);
    sql.push("SELECT DISTINCT examined_on FROM exam_records WHERE campaign_id = ")
        .bind(id)
        .push(" AND examined_on < ")
        .bind(today);
    let days: Vec<NaiveDate> = txn
        .query_all_raw(sql.build())
        .await?
        .iter()
        .map(|row| row.try_get::<NaiveDate>("", "examined_on"))
        .collect::<Result<_, _>>()?;
    for day in days {
        let at: DateTime<Utc> = at_local(
            tz,
            day,
            NaiveTime::from_hms_opt(11, 0, 0).unwrap_or_default(),
        );
        let mut sql = Sql::new(backend);
        sql.push("UPDATE enrolments SET examined_at = ")
            .bind(at)
            .push(" WHERE campaign_id = ")
            .bind(id)
            .push(" AND examined_at IS NOT NULL AND resident_id IN (SELECT resident_id FROM exam_records WHERE campaign_id = ")
            .bind(id)
            .push(" AND examined_on = ")
            .bind(day)
            .push(")");
        txn.execute_raw(sql.build()).await?;
    }

    // A booking was made on the call where the resident agreed to come.
    let mut sql = Sql::new(backend);
    sql.push(
        "UPDATE enrolments SET appointed_at = reached_at WHERE appointed_at IS NOT NULL \
         AND reached_at IS NOT NULL AND reached_at < appointed_at AND campaign_id = ",
    )
    .bind(id);
    txn.execute_raw(sql.build()).await?;
    let mut sql = Sql::new(backend);
    sql.push(
        "UPDATE appointments SET created_at = COALESCE((SELECT e.appointed_at FROM enrolments e \
         WHERE e.campaign_id = appointments.campaign_id \
         AND e.resident_id = appointments.resident_id), created_at) WHERE campaign_id = ",
    )
    .bind(id);
    txn.execute_raw(sql.build()).await?;
    txn.commit().await?;
    Ok(())
}

/// A booking can only be made for a day to come, so the demo books last week's missed
/// appointments for today and then moves them, with the places they hold, to `day` (booked
/// at `booked_at`). `appointment::mark_no_shows` then finds them missed, as it would have.
pub async fn move_bookings_back(
    db: &DatabaseConnection,
    campaign_id: i32,
    institution: &entities::institutions::Model,
    residents: &[i32],
    day: NaiveDate,
    booked_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let today = crate::time::today();
    let backend = db.get_database_backend();
    let txn = db.begin().await?;
    crate::institution::ensure_day(&txn, institution, day)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sql = Sql::new(backend);
    sql.push("UPDATE appointments SET day = ")
        .bind(day)
        .push(", created_at = ")
        .bind(booked_at)
        .push(" WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND institution_id = ")
        .bind(institution.id)
        .push(" AND status = 'booked' AND day = ")
        .bind(today)
        .push(" AND resident_id IN ")
        .bind_list(residents.iter().copied());
    let moved = txn.execute_raw(sql.build()).await?.rows_affected() as i32;
    for (on, change) in [(today, -moved), (day, moved)] {
        let mut sql = Sql::new(backend);
        sql.push("UPDATE institution_days SET booked = booked + ")
            .bind(change)
            .push(" WHERE institution_id = ")
            .bind(institution.id)
            .push(" AND day = ")
            .bind(on);
        txn.execute_raw(sql.build()).await?;
    }
    let mut sql = Sql::new(backend);
    sql.push("UPDATE enrolments SET appointed_at = ")
        .bind(booked_at)
        .push(" WHERE campaign_id = ")
        .bind(campaign_id)
        .push(" AND resident_id IN ")
        .bind_list(residents.iter().copied());
    txn.execute_raw(sql.build()).await?;
    txn.commit().await?;
    Ok(())
}
