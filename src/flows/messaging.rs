//! Messaging the office and the cadres start by hand: a wave created or cancelled, the
//! `plan_waves` job topping up the waves, a cadre's task marked done, a failed message sent
//! again. Each change is one writing transaction; what it shows afterwards is read after the
//! commit. The functions keep the names of the domain functions they wrap, one module per
//! domain module.

/// Waves (`outreach::waves`).
pub mod waves {
    use chrono::Utc;
    use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

    use crate::auth::Actor;
    use crate::campaign;
    use crate::error::AppResult;
    use crate::flows::write;
    use crate::outreach::waves::{self, NewWave, WaveView};

    /// Creates a wave and plans its messages in one transaction (office only); a large wave
    /// refreshes the planner's statistics of `messages` once it is committed.
    pub async fn create<C>(
        db: &C,
        actor: &Actor,
        campaign_id: i32,
        new: NewWave,
    ) -> AppResult<WaveView>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let now = Utc::now();
        let created = write(db, async |txn| {
            waves::create(txn, actor, campaign_id, new, now).await
        })
        .await?;
        crate::db::analyze_if_bulk(db, "messages", created.planned).await;
        waves::get(db, actor, created.id).await
    }

    /// Tops up every planned wave of the open campaigns whose window is still ahead, each
    /// wave in a transaction of its own. Returns how many messages were planned.
    pub async fn plan_open<C>(db: &C) -> AppResult<u64>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let now = Utc::now();
        let mut planned = 0;
        for campaign in campaign::open_campaigns(db).await? {
            for wave in waves::open_waves(db, &campaign, now).await? {
                planned += write(db, async |txn| {
                    waves::plan(txn, &campaign, &wave, now).await
                })
                .await?;
            }
        }
        Ok(planned)
    }

    /// Cancels a wave and its messages not yet sent (office only, audited).
    pub async fn cancel<C>(db: &C, actor: &Actor, id: i32) -> AppResult<WaveView>
    where
        C: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
    {
        let now = Utc::now();
        write(db, async |txn| waves::cancel(txn, actor, id, now).await).await?;
        waves::get(db, actor, id).await
    }
}

/// The cadres' tasks (`outreach::tasks`).
pub mod tasks {
    use sea_orm::{DatabaseTransaction, TransactionTrait};

    use crate::auth::Actor;
    use crate::error::AppResult;
    use crate::flows::write;
    use crate::outreach::tasks;

    /// A cadre marks a task done (audited).
    pub async fn done<C>(db: &C, actor: &Actor, id: i32) -> AppResult<()>
    where
        C: TransactionTrait<Transaction = DatabaseTransaction>,
    {
        write(db, async |txn| tasks::done(txn, actor, id).await).await
    }
}

/// A failed or expired message sent again by hand.
pub mod outbox {
    use sea_orm::{DatabaseTransaction, TransactionTrait};

    use crate::auth::Actor;
    use crate::error::AppResult;
    use crate::flows::write;
    use crate::outreach::outbox::{self, MessageView};

    /// Sends a failed or expired message again: a new row due now, audited.
    pub async fn resend<C>(db: &C, actor: &Actor, id: i32) -> AppResult<MessageView>
    where
        C: TransactionTrait<Transaction = DatabaseTransaction>,
    {
        write(db, async |txn| outbox::resend(txn, actor, id).await).await
    }
}
