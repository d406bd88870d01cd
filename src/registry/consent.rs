//! A resident's opt-outs: a number that answered TD leaves SMS wherever it is (own phone or
//! a relative's); 退订 on the resident's own link leaves every channel.

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use entities::residents;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::db::Sql;
use crate::error::AppResult;
use crate::outreach::channel::Route;

/// The number with this blind index leaves SMS, as the resident's own phone and as a
/// relative's phone, for every resident who has it.
pub async fn opt_out_number(
    db: &impl ConnectionTrait,
    index: &[u8],
    now: DateTime<Utc>,
) -> AppResult<()> {
    let statements: [(&'static str, &'static str); 2] = [
        (
            "UPDATE residents SET phone_opt_out = ",
            " WHERE phone_index = ",
        ),
        (
            "UPDATE residents SET relative_opt_out = ",
            " WHERE relative_phone_index = ",
        ),
    ];
    for (set, filter) in statements {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push(set)
            .bind(true)
            .push(", updated_at = ")
            .bind(now)
            .push(filter)
            .bind(index.to_vec());
        db.execute_raw(sql.build()).await?;
    }
    Ok(())
}

/// Takes a resident out of every channel at once: own phone, a relative's phone, WeChat and
/// e-mail. Returns whether anything changed.
pub async fn opt_out_resident(
    db: &impl ConnectionTrait,
    resident_id: i32,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("UPDATE residents SET phone_opt_out = ")
        .bind(true)
        .push(", relative_opt_out = ")
        .bind(true)
        .push(", wechat_opt_out = ")
        .bind(true)
        .push(", email_opt_out = ")
        .bind(true)
        .push(", updated_at = ")
        .bind(now)
        .push(" WHERE id = ")
        .bind(resident_id)
        .push(" AND NOT (phone_opt_out AND relative_opt_out AND wechat_opt_out AND email_opt_out)");
    Ok(db.execute_raw(sql.build()).await?.rows_affected() > 0)
}

/// A provider refused a message because the resident opted out there (a WeChat user who
/// blocked the account, a number on the operator's block list): that channel is flagged.
pub async fn opt_out_route(
    db: &impl ConnectionTrait,
    resident_id: i32,
    route: Route,
) -> AppResult<()> {
    let column = match route {
        Route::WeChat => residents::Column::WechatOptOut,
        Route::Phone => residents::Column::PhoneOptOut,
        Route::Relative => residents::Column::RelativeOptOut,
        Route::Email => return Ok(()),
    };
    residents::Entity::update_many()
        .col_expr(column, sea_orm::sea_query::Expr::value(true))
        .filter(residents::Column::Id.eq(resident_id))
        .exec(db)
        .await?;
    Ok(())
}
