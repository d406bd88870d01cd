//! An exam is recorded — by a clinic for a walk-in, by a cadre for an exam elsewhere, from
//! the checkup system's list, or when a clinic marks a booked resident as come. The record,
//! the progress row, the resident's appointment and any refusal registration change together.

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use super::{steps, write};
use crate::auth::Actor;
use crate::db::{begin_write, savepoint};
use crate::error::{AppError, AppResult};
use crate::exam::{self, ElsewhereExam, ExamImport, ExamView, InstitutionExam, NewRecord};
use crate::privacy::Privacy;

/// An institution records an exam it did (without an appointment, or for a walk-in). An
/// active appointment of the resident is closed as attended (same institution) or cancelled.
pub async fn record_at_institution<C>(
    db: &C,
    actor: &Actor,
    campaign_id: i32,
    request: InstitutionExam,
) -> AppResult<ExamView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let institution_id = exam::examining_institution(actor, request.institution_id)?;
    write(db, async |txn| {
        let site =
            exam::check_at_institution(txn, actor, campaign_id, institution_id, &request).await?;
        let appointment = steps::close_for_exam(
            txn,
            campaign_id,
            site.resident_id,
            site.institution_id,
            Utc::now(),
        )
        .await?;
        let saved = steps::examined(
            txn,
            actor,
            NewRecord {
                campaign_id,
                resident_id: site.resident_id,
                examined_on: request.examined_on,
                institution_id: site.institution_id,
                source: "institution",
                appointment_id: appointment,
                ..Default::default()
            },
        )
        .await?;
        exam::audit_at_institution(txn, actor, &saved, site).await?;
        Ok(saved.into())
    })
    .await
}

/// A cadre records that a resident (usually a migrant) was examined elsewhere, with evidence;
/// it counts as examined for the home village and is reported by its examining place.
pub async fn record_elsewhere<C>(
    db: &C,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    request: ElsewhereExam,
) -> AppResult<ExamView>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let elsewhere = exam::check_elsewhere(actor, request)?;
    write(db, async |txn| {
        let site =
            exam::check_elsewhere_site(txn, actor, campaign_id, resident_id, &elsewhere).await?;
        steps::close_for_exam(txn, campaign_id, resident_id, None, Utc::now()).await?;
        let record = exam::elsewhere_record(campaign_id, resident_id, elsewhere);
        let saved = steps::examined(txn, actor, record).await?;
        exam::audit_elsewhere(txn, actor, &saved, site).await?;
        Ok(saved.into())
    })
    .await
}

/// Imports the checkup system's exam list into a campaign in one transaction: good rows are
/// recorded, bad rows and duplicates rejected with their reasons.
pub async fn import<C>(
    db: &C,
    privacy: &Privacy,
    actor: &Actor,
    campaign_id: i32,
    bytes: &[u8],
) -> AppResult<ExamImport>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let table = exam::read_exam_list(actor, bytes)?;
    let txn = begin_write(db).await?;
    let list = exam::check_exam_list(&txn, privacy, actor, campaign_id, table).await?;
    let mut import = list.import;
    for row in list.rows {
        // Each exam on its own: one refused (a duplicate recorded meanwhile, an appointment
        // changed) leaves the others.
        let one = savepoint(&txn).await?;
        let mut record = row.record(campaign_id);
        let recorded = async {
            record.appointment_id = steps::close_for_exam(
                &one,
                campaign_id,
                row.resident_id,
                Some(row.institution_id),
                Utc::now(),
            )
            .await?;
            steps::examined(&one, actor, record).await
        }
        .await;
        match recorded {
            Ok(_) => {
                one.commit().await?;
                import.summary.imported += 1;
            }
            Err(e @ AppError::Refused { .. }) => {
                one.rollback().await?;
                if e.code() == "duplicate_exam" {
                    import.summary.duplicates += 1;
                }
                import.rejected_rows.push(row.rejected(&e));
            }
            Err(e) => return Err(e),
        }
    }
    // In the order of the file, whichever step refused them.
    import.rejected_rows.sort_by_key(|r| r.line);
    import.summary.rejected = import.rejected_rows.len() as u64;
    exam::audit_import(&txn, actor, campaign_id, &import.summary).await?;
    txn.commit().await?;
    crate::telemetry::metrics::import_rows_by_result(
        "exams",
        &[
            ("imported", import.summary.imported),
            ("rejected", import.summary.rejected),
        ],
    );
    Ok(import)
}
