//! User accounts: creation, the first administrator, changes and passwords. Each change and
//! its audit entry commit together; password hashing happens before the write begins.

use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use super::write;
use crate::auth::Actor;
use crate::error::AppResult;
use crate::users::{self, Created, NewUser, UserChanges};

/// Creates a user inside `actor`'s scope (command line, API, demo).
pub async fn create<C>(db: &C, actor: &Actor, new: NewUser) -> AppResult<Created>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let new = users::prepare_create(db, actor, new).await?;
    write(db, async |txn| users::create(txn, actor, new).await).await
}

/// On a database with no users at all, creates `admin` (office role, whole tree) and returns
/// its generated password. Returns `None` when any user exists — or when another instance
/// sharing the database won the race to create it.
pub async fn ensure_admin<C>(db: &C) -> AppResult<Option<String>>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let Some(admin) = users::prepare_admin(db).await? else {
        return Ok(None);
    };
    let created = write(db, async |txn| users::create_admin(txn, &admin).await).await?;
    Ok(created.then_some(admin.password))
}

/// Applies `changes` to a user in `actor`'s scope. A role or scope change, or deactivation,
/// signs the user out everywhere.
pub async fn update<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    changes: UserChanges,
) -> AppResult<entities::users::Model>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    write(db, async |txn| users::update(txn, actor, id, changes).await).await
}

/// Sets a new generated password for a user in scope, signs them out, returns the password once.
pub async fn reset_password<C>(db: &C, actor: &Actor, id: i32) -> AppResult<String>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let (new, password) = users::prepare_reset(db, actor, id).await?;
    write(db, async |txn| users::set_password(txn, actor, &new).await).await?;
    Ok(password)
}

/// A user changes their own password after proving they know the current one.
pub async fn change_own_password<C>(
    db: &C,
    actor: &Actor,
    current: String,
    new: String,
) -> AppResult<()>
where
    C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let new = users::prepare_own_change(db, actor, current, new).await?;
    write(db, async |txn| users::set_password(txn, actor, &new).await).await
}
