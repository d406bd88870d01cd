//! A refusal is registered by a cadre and reviewed by the office. A confirmed refusal ends the
//! resident's appointment and everything still waiting to be sent to them in the campaign.

use chrono::Utc;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, IsolationLevel, TransactionTrait,
};

use serde_json::json;

use super::write;
use crate::audit::{self, AuditEvent};
use crate::auth::{Actor, Scope};
use crate::config::SignatureSettings;
use crate::db::begin_write;
use crate::error::AppResult;
use crate::refusal::chain::{self, ChainReport};
use crate::refusal::{self, Decision, NewRegistration, Registered, Registration, Review};

/// Registers a refusal after its checks; one sent again under its client key is answered
/// with the registration made the first time.
pub async fn register<C>(
    db: &C,
    signatures: &SignatureSettings,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    new: NewRegistration,
) -> AppResult<Registration>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let checked = refusal::check(new).await?;
    let txn = begin_write(db).await?;
    let id = match refusal::register(&txn, signatures, actor, campaign_id, resident_id, checked)
        .await?
    {
        Registered::Earlier(id) => {
            txn.rollback().await?;
            id
        }
        Registered::Now(id) => {
            txn.commit().await?;
            tracing::info!(registration = id, "refusal registered");
            id
        }
    };
    refusal::get(db, actor, id).await
}

/// The office confirms a pending registration: the resident counts as refused, their
/// appointment is cancelled and nothing more waiting in the campaign is sent to them.
pub async fn confirm<C>(db: &C, actor: &Actor, id: i32, review: Review) -> AppResult<Registration>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    decide(db, actor, id, Decision::Confirm, review).await
}

/// The office returns a pending registration with the reason; the cadre registers it anew.
pub async fn return_for_correction<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    review: Review,
) -> AppResult<Registration>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    decide(db, actor, id, Decision::Return, review).await
}

async fn decide<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    decision: Decision,
    review: Review,
) -> AppResult<Registration>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let note = refusal::review_note(decision, review)?;
    write(db, async |txn| {
        let registration = refusal::review(txn, actor, id, decision, note).await?;
        if decision == Decision::Confirm {
            super::steps::cancel_for_refusal(
                txn,
                registration.campaign_id,
                registration.resident_id,
                Utc::now(),
            )
            .await?;
        }
        Ok(())
    })
    .await?;
    refusal::get(db, actor, id).await
}

/// Checks the refusal chains in `scope` against their hashes and the audit log, reading
/// records and audit log in one read-only snapshot (on SQLite a transaction is a snapshot).
pub async fn verify_chains<C>(db: &C, scope: &Scope) -> AppResult<ChainReport>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let txn = match db.get_database_backend() {
        DbBackend::Postgres => {
            db.begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await?
        }
        _ => db.begin().await?,
    };
    let report = chain::verify(&txn, scope).await?;
    txn.commit().await?;
    Ok(report)
}

/// Checks the refusal chains in the actor's scope, as [`verify_chains`] does, and records the
/// outcome in the audit log (`refusal.verify`), so that the office's review page can say
/// when the chains were last checked and what was found. The command line's check (the whole
/// tree) is recorded under each topmost area, so the county's office and auditors see it.
#[tracing::instrument(skip_all, fields(user = %actor.username), err)]
pub async fn verify_and_record<C>(db: &C, actor: &Actor) -> AppResult<ChainReport>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let report = verify_chains(db, &actor.scope).await?;
    let areas = match &actor.scope {
        Scope::Within(area) => vec![Some(area.clone())],
        Scope::All => {
            let roots: Vec<_> = crate::area::tree(db, &Scope::All)
                .await?
                .into_iter()
                .filter_map(|root| crate::area::AreaCode::parse(&root.code).ok())
                .map(Some)
                .collect();
            if roots.is_empty() { vec![None] } else { roots }
        }
    };
    let summary = verification_summary(&report, &actor.scope);
    write(db, async |txn| {
        for area_code in areas {
            audit::record(
                txn,
                actor,
                AuditEvent {
                    action: "refusal.verify",
                    entity: "refusal_chain",
                    entity_id: None,
                    area_code,
                    summary: summary.clone(),
                },
            )
            .await?;
        }
        Ok(())
    })
    .await?;
    if !report.ok {
        tracing::warn!(breaks = report.breaks.len(), "refusal chains do not hold");
    }
    Ok(report)
}

/// The most breaks an audit entry of a check lists one by one (all are counted).
const LISTED_BREAKS: usize = 20;

/// What the audit entry of a check says: the outcome, what was checked and where it broke.
fn verification_summary(report: &ChainReport, scope: &Scope) -> serde_json::Value {
    let mut problems = std::collections::BTreeMap::<&str, usize>::new();
    for b in &report.breaks {
        *problems.entry(b.problem).or_default() += 1;
    }
    let listed: Vec<_> = report
        .breaks
        .iter()
        .take(LISTED_BREAKS)
        .map(|b| {
            json!({
                "resident_id": b.resident_id,
                "record_id": b.record_id,
                "problem": b.problem,
            })
        })
        .collect();
    json!({
        "ok": report.ok,
        "scope": scope.area().map_or("all".to_owned(), |a| a.to_string()),
        "residents": report.residents,
        "records": report.records,
        "breaks": report.breaks.len(),
        "problems": problems,
        "listed_breaks": listed,
    })
}
