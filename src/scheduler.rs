//! Recurring jobs on cron expressions from the configuration, read in the configured time
//! zone. A firing is claimed by inserting `(job, scheduled_for)` into `job_runs`, whose unique
//! index lets exactly one of several instances (or one restarted instance) run it.

use std::str::FromStr;

use anyhow::Context;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cron::Schedule;
use entities::job_runs;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, EntityTrait, QueryFilter, QueryOrder, Statement, TransactionTrait, sea_query::Expr,
};
use tokio_util::sync::CancellationToken;

use crate::config::SchedulerSettings;
use crate::state::AppState;

/// The jobs this build knows; configuration names them to schedule them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Deletes expired and revoked bearer tokens and trims the login throttle.
    PurgeExpiredTokens,
    /// Turns booked appointments whose day has ended into no-shows (and plans their
    /// follow-ups).
    MarkNoShows,
    /// Plans the notices, reminders and follow-ups the booking paths may have missed.
    PlanReminders,
    /// Plans wave messages for residents who joined a wave's audience after it was created.
    PlanWaves,
    /// Rebuilds the report figures of open campaigns and computes closed days.
    RefreshReports,
    /// Sends the daily, weekly and monthly bulletins that are due.
    SendBulletins,
}

impl Job {
    pub const ALL: &'static [Job] = &[
        Job::PurgeExpiredTokens,
        Job::MarkNoShows,
        Job::PlanReminders,
        Job::PlanWaves,
        Job::RefreshReports,
        Job::SendBulletins,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Job::PurgeExpiredTokens => "purge_expired_tokens",
            Job::MarkNoShows => "mark_no_shows",
            Job::PlanReminders => "plan_reminders",
            Job::PlanWaves => "plan_waves",
            Job::RefreshReports => "refresh_reports",
            Job::SendBulletins => "send_bulletins",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|job| job.name() == name)
    }

    async fn execute(self, state: &AppState) -> anyhow::Result<String> {
        match self {
            Job::PurgeExpiredTokens => {
                let purged = crate::auth::purge_expired_tokens(&state.db).await?;
                state.throttle.shrink();
                Ok(format!("purged {purged} tokens"))
            }
            Job::MarkNoShows => {
                let marked = crate::flows::booking::mark_no_shows(
                    &state.db,
                    &state.settings.messaging.outbox.reminders,
                )
                .await?;
                Ok(format!("{marked} appointments marked as no-shows"))
            }
            Job::PlanReminders => {
                let planned = crate::outreach::outbox::plan_reminders(
                    &state.db,
                    &state.settings.messaging.outbox.reminders,
                    Utc::now(),
                )
                .await?;
                Ok(format!("{planned} reminders planned"))
            }
            Job::PlanWaves => {
                let planned = crate::flows::messaging::waves::plan_open(&state.db).await?;
                Ok(format!("{planned} wave messages planned"))
            }
            Job::RefreshReports => {
                let done = crate::flows::reports::refresh_open(
                    &state.db,
                    state.settings.reports.backfill_days_per_run,
                )
                .await?;
                let days: usize = done.iter().map(|r| r.days_computed.len()).sum();
                Ok(format!(
                    "{} campaigns refreshed, {days} closed days computed",
                    done.len()
                ))
            }
            Job::SendBulletins => {
                let sent =
                    crate::report::bulletin::send_due(&state.db, &state.settings, Utc::now())
                        .await?;
                Ok(sent)
            }
        }
    }
}

/// What one attempt at a firing came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ran {
        detail: String,
    },
    Failed {
        error: String,
    },
    /// Another instance (or an earlier run of this one) already has this firing.
    AlreadyClaimed,
}

impl Outcome {
    /// The outcome as a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::Ran { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::AlreadyClaimed => "claimed_elsewhere",
        }
    }
}

pub struct Scheduler {
    enabled: bool,
    timezone: Tz,
    entries: Vec<(Job, Schedule)>,
}

impl Scheduler {
    /// Checks every configured job name, cron expression and the time zone.
    pub fn from_settings(settings: &SchedulerSettings) -> anyhow::Result<Self> {
        let timezone = Tz::from_str(&settings.timezone)
            .map_err(|e| anyhow::anyhow!("scheduler.timezone {:?}: {e}", settings.timezone))?;
        let mut entries = Vec::new();
        for (name, expression) in &settings.jobs {
            let job = Job::from_name(name).with_context(|| {
                let known: Vec<_> = Job::ALL.iter().map(|j| j.name()).collect();
                format!(
                    "scheduler.jobs: unknown job {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
            let schedule = Schedule::from_str(expression).with_context(|| {
                format!("scheduler.jobs.{name}: bad cron expression {expression:?}")
            })?;
            entries.push((job, schedule));
        }
        Ok(Self {
            enabled: settings.enabled,
            timezone,
            entries,
        })
    }

    /// Catches up missed firings once, then sleeps until the next firing of any job, runs
    /// it, repeats; returns on `shutdown`.
    pub async fn run(self, state: AppState, shutdown: CancellationToken) {
        if !self.enabled || self.entries.is_empty() {
            shutdown.cancelled().await;
            return;
        }
        for (job, at) in self.missed(&state.db, Utc::now()).await {
            let outcome = try_execute_once(&state, job, at).await;
            tracing::info!(job = job.name(), ?outcome, "missed job caught up");
        }
        loop {
            let now = Utc::now().with_timezone(&self.timezone);
            let next = self
                .entries
                .iter()
                .filter_map(|(job, schedule)| schedule.after(&now).next().map(|at| (at, *job)))
                .min_by_key(|(at, _)| *at);
            let Some((at, job)) = next else {
                shutdown.cancelled().await;
                return;
            };
            let wait = (at.with_timezone(&Utc) - Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let outcome = try_execute_once(&state, job, at.with_timezone(&Utc)).await;
            tracing::info!(job = job.name(), ?outcome, "scheduled job");
        }
    }
}

impl Scheduler {
    /// For each job, the latest firing between its last recorded run and `now` that never
    /// ran (the service was down): one per job, however many ticks were missed. A job that
    /// never ran at all is not caught up (its first firing comes on schedule).
    pub async fn missed(
        &self,
        db: &impl ConnectionTrait,
        now: DateTime<Utc>,
    ) -> Vec<(Job, DateTime<Utc>)> {
        let mut missed = Vec::new();
        for (job, schedule) in &self.entries {
            let last = job_runs::Entity::find()
                .filter(job_runs::Column::Job.eq(job.name()))
                // A firing skipped because another run held the job's lock still needs one.
                .filter(job_runs::Column::Status.ne("skipped"))
                .order_by_desc(job_runs::Column::ScheduledFor)
                .one(db)
                .await;
            let Ok(Some(last)) = last else {
                continue;
            };
            let from = last.scheduled_for.with_timezone(&self.timezone);
            let latest = schedule
                .after(&from)
                .take_while(|at| at.with_timezone(&Utc) <= now)
                .last();
            if let Some(at) = latest {
                missed.push((*job, at.with_timezone(&Utc)));
            }
        }
        missed
    }
}

/// Claims the firing `(job, scheduled_for)` and runs it if the claim succeeds. On
/// PostgreSQL the run also holds a transaction-level advisory lock named after the job, so
/// two firings of one job (a slow run and the next tick on another instance) never overlap.
pub async fn try_execute_once(state: &AppState, job: Job, scheduled_for: DateTime<Utc>) -> Outcome {
    let started = std::time::Instant::now();
    let outcome = claim_and_run(state, job, scheduled_for).await;
    crate::telemetry::metrics::scheduler_run(job.name(), outcome.code(), started.elapsed());
    outcome
}

async fn claim_and_run(state: &AppState, job: Job, scheduled_for: DateTime<Utc>) -> Outcome {
    let claim = job_runs::Entity::insert(job_runs::ActiveModel {
        job: Set(job.name().to_owned()),
        scheduled_for: Set(scheduled_for),
        started_at: Set(Utc::now()),
        finished_at: Set(None),
        status: Set("running".to_owned()),
        detail: Set(None),
        ..Default::default()
    })
    .exec(&state.db)
    .await;
    let run_id = match claim {
        Ok(inserted) => inserted.last_insert_id,
        Err(e)
            if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            return Outcome::AlreadyClaimed;
        }
        Err(e) => {
            return Outcome::Failed {
                error: format!("cannot record the run: {e}"),
            };
        }
    };
    let guard = match exclusive(&state.db, job).await {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            let detail = "another instance is running this job";
            if let Err(e) = finish(&state.db, run_id, "skipped", detail).await {
                tracing::error!(job = job.name(), error = %e, "cannot record a skipped run");
            }
            return Outcome::AlreadyClaimed;
        }
        Err(e) => {
            return Outcome::Failed {
                error: format!("cannot take the job lock: {e}"),
            };
        }
    };
    let (status, detail, outcome) = match job.execute(state).await {
        Ok(detail) => ("succeeded", detail.clone(), Outcome::Ran { detail }),
        Err(e) => {
            let error = format!("{e:#}");
            ("failed", error.clone(), Outcome::Failed { error })
        }
    };
    if let Err(e) = finish(&state.db, run_id, status, &detail).await {
        tracing::error!(job = job.name(), error = %e, "cannot record the end of a job run");
    }
    if let Some(txn) = guard
        && let Err(e) = txn.commit().await
    {
        tracing::warn!(job = job.name(), error = %e, "cannot release the job lock");
    }
    outcome
}

/// On PostgreSQL, a transaction holding `pg_try_advisory_xact_lock` for the job (`None`
/// when another instance holds it); on SQLite there is one writer and nothing to take.
async fn exclusive(
    db: &DatabaseConnection,
    job: Job,
) -> Result<Option<Option<DatabaseTransaction>>, sea_orm::DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(Some(None));
    }
    let txn = db.begin().await?;
    let key = job_lock_key(job);
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock($1) AS locked",
            [key.into()],
        ))
        .await?;
    let locked = match row {
        Some(row) => row.try_get::<bool>("", "locked")?,
        None => false,
    };
    Ok(locked.then_some(Some(txn)))
}

/// A stable 64-bit lock key per job name (FNV-1a), in a range of its own.
fn job_lock_key(job: Job) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("outreach.job.{}", job.name()).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

async fn finish(
    db: &impl ConnectionTrait,
    id: i32,
    status: &str,
    detail: &str,
) -> Result<(), sea_orm::DbErr> {
    job_runs::Entity::update_many()
        .col_expr(job_runs::Column::FinishedAt, Expr::value(Utc::now()))
        .col_expr(job_runs::Column::Status, Expr::value(status))
        .col_expr(job_runs::Column::Detail, Expr::value(detail))
        .filter(job_runs::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_jobs_bad_expressions_and_zones_are_refused_at_start() {
        let mut settings = SchedulerSettings::default();
        assert!(Scheduler::from_settings(&settings).is_ok());
        settings
            .jobs
            .insert("send_everything".into(), "0 * * * * *".into());
        let err = Scheduler::from_settings(&settings).err().unwrap();
        assert!(err.to_string().contains("send_everything"), "{err}");
        settings.jobs.clear();
        settings
            .jobs
            .insert("purge_expired_tokens".into(), "every day".into());
        assert!(Scheduler::from_settings(&settings).is_err());
        settings.jobs.clear();
        settings.timezone = "Mars/Olympus".into();
        assert!(Scheduler::from_settings(&settings).is_err());
    }
}
