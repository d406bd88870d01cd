//! Changes to the registry and what follows from them in the same transaction: a resident
//! registered, changed, marked deceased or moved out, moved to another village, or a file of
//! them imported brings every open campaign's progress rows in line (`enrol::refresh`), and
//! residents who became exempt there lose their bookings (`steps::cancel_for_exempt`).
//! Key-group tags, and the audited views of full ID and phone numbers, are written here too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use entities::residents;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};

use super::write;
use crate::area::AreaCode;
use crate::audit;
use crate::auth::Actor;
use crate::campaign::{self, enrol, tags};
use crate::error::AppResult;
use crate::privacy::Privacy;
use crate::registry::{
    self, HouseholdMove, MigrantBook, NewResident, Progress, ResidentChanges, ResidentDetail,
    ResidentImport, Special, StatusChange,
};

/// Brings every open campaign in line with a registry change (all residents, or only
/// `residents`), campaign by campaign: the progress rows first, then the bookings of those
/// who became exempt are cancelled and their places given back.
async fn refresh_campaigns(txn: &impl ConnectionTrait, residents: Option<&[i32]>) -> AppResult<()> {
    for campaign in campaign::open_campaigns(txn).await? {
        let now = Utc::now();
        if enrol::refresh(txn, &campaign, residents, now).await? > 0 {
            super::steps::cancel_for_exempt(txn, campaign.id(), now).await?;
        }
    }
    Ok(())
}

/// The detail of one resident. With `reveal`, a role allowed to see them gets the full ID and
/// phone numbers, and the view is written to the audit log first.
pub async fn detail<C>(
    db: &C,
    privacy: &Privacy,
    actor: &Actor,
    id: i32,
    reveal: bool,
) -> AppResult<ResidentDetail>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let (detail, viewed) = registry::detail(db, privacy, actor, id, reveal).await?;
    if let Some(event) = viewed {
        write(db, async |txn| Ok(audit::record(txn, actor, event).await?)).await?;
    }
    Ok(detail)
}

/// The migrant book for `area` (default: the caller's whole scope). With `reveal`, a role
/// allowed to see personal numbers gets them in full, and the export is audited first.
pub async fn migrant_book<C>(
    db: &C,
    privacy: &Privacy,
    actor: &Actor,
    area: Option<AreaCode>,
    reveal: bool,
) -> AppResult<MigrantBook>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let (book, exported) = registry::migrant_book(db, privacy, actor, area, reveal).await?;
    if let Some(event) = exported {
        write(db, async |txn| Ok(audit::record(txn, actor, event).await?)).await?;
    }
    Ok(book)
}

/// Registers one resident and enrols them into the open campaigns. An ID already registered
/// anywhere in the county is a conflict that names the village.
pub async fn create<C>(
    db: &C,
    privacy: &Privacy,
    actor: &Actor,
    new: NewResident,
) -> AppResult<residents::Model>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let registration = registry::prepare_create(db, privacy, actor, new).await?;
    write(db, async |txn| {
        let created = registry::create(txn, privacy, actor, registration).await?;
        refresh_campaigns(txn, Some(&[created.id])).await?;
        Ok(created)
    })
    .await
}

/// Applies `changes` to a resident in scope (every changed field audited); a change brings
/// their progress rows in line.
pub async fn update<C>(
    db: &C,
    privacy: &Privacy,
    actor: &Actor,
    id: i32,
    changes: ResidentChanges,
) -> AppResult<residents::Model>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| {
        let (updated, changed) = registry::update(txn, privacy, actor, id, changes).await?;
        if changed {
            refresh_campaigns(txn, Some(&[id])).await?;
        }
        Ok(updated)
    })
    .await
}

/// Marks a resident deceased or moved out of the county: they leave every denominator and
/// their bookings are cancelled.
pub async fn mark<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    special: Special,
    change: StatusChange,
) -> AppResult<residents::Model>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let marking = registry::prepare_mark(change)?;
    write(db, async |txn| {
        let marked = registry::mark(txn, actor, id, special, marking).await?;
        refresh_campaigns(txn, Some(&[id])).await?;
        Ok(marked)
    })
    .await
}

/// Moves a resident's household registration to another village of the county; their
/// progress rows follow.
pub async fn move_household<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    request: HouseholdMove,
) -> AppResult<residents::Model>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let request = registry::prepare_move(db, actor, request).await?;
    write(db, async |txn| {
        let moved = registry::move_household(txn, actor, id, request).await?;
        refresh_campaigns(txn, Some(&[id])).await?;
        Ok(moved)
    })
    .await
}

/// Imports a residents file for `actor` in one transaction, all or nothing: the rows, then
/// the open campaigns brought in line and the import audited. With `rejected_file`, every
/// rejected row is written there.
pub async fn import_residents(
    db: &DatabaseConnection,
    privacy: Arc<Privacy>,
    actor: &Actor,
    path: &Path,
    rejected_file: Option<PathBuf>,
    progress: Progress,
) -> AppResult<ResidentImport> {
    let mut run =
        registry::ImportRun::start(db, privacy, actor, path, rejected_file, progress).await?;
    let written = async {
        let txn = crate::db::begin_write(db).await?;
        if run.write(&txn, actor).await? > 0 {
            refresh_campaigns(&txn, None).await?;
            run.record(&txn, actor).await?;
        }
        txn.commit().await?;
        let summary = run.summary();
        let written = summary.imported + summary.updated;
        crate::db::analyze_if_bulk(db, "residents", written).await;
        // New residents were enrolled into the open campaigns.
        crate::db::analyze_if_bulk(db, "enrolments", summary.imported).await;
        Ok(())
    }
    .await;
    let imported = run.finish(written).await?;
    crate::telemetry::metrics::import_rows("residents", &imported.summary);
    Ok(imported)
}

/// Replaces a resident's key groups; the change is audited.
pub async fn set_tags<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    request: tags::TagSet,
) -> AppResult<tags::ResidentTags>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let choice = tags::prepare_set(&request)?;
    write(db, async |txn| tags::set(txn, actor, id, choice).await).await
}

/// Loads key-group tags from a file, read first, then applied in one transaction (each
/// changed resident audited).
pub async fn import_tags<C>(
    db: &C,
    privacy: Arc<Privacy>,
    actor: &Actor,
    path: &Path,
) -> AppResult<tags::TagImport>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let file = tags::read_import(privacy, path).await?;
    let imported = write(db, async |txn| tags::import(txn, actor, file).await).await?;
    let summary = &imported.summary;
    crate::telemetry::metrics::import_rows_by_result(
        "tags",
        &[
            ("added", summary.added),
            ("removed", summary.removed),
            ("unchanged", summary.unchanged),
            ("rejected", summary.rejected),
        ],
    );
    Ok(imported)
}
