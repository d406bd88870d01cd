//! Cursor pagination shared by every list endpoint: one row more than the page is fetched to
//! know whether another page follows; the cursor is the id of the page's last row.

use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QuerySelect, Select};

use crate::error::{AppError, AppResult};

/// The largest page any list endpoint returns.
pub const MAX_SIZE: u64 = 500;
/// The page size when none is asked for.
pub const DEFAULT_SIZE: u64 = 100;

/// The page size asked for, 1–500 (default 100). Every list endpoint follows the same rule:
/// a `limit` outside that range is refused, never silently changed, so a client that asks
/// for more rows than it gets is told so.
pub fn size(requested: Option<u64>) -> AppResult<u64> {
    match requested {
        None => Ok(DEFAULT_SIZE),
        Some(n @ 1..=MAX_SIZE) => Ok(n),
        Some(_) => Err(AppError::validation(
            "invalid_limit",
            format!("limit 应为 1 到 {MAX_SIZE} 之间的整数"),
        )),
    }
}

/// One page of `query` (already filtered and ordered by id) and the cursor of the next page.
pub async fn fetch<E: EntityTrait>(
    db: &impl ConnectionTrait,
    query: Select<E>,
    size: u64,
    id: impl Fn(&E::Model) -> i32,
) -> Result<(Vec<E::Model>, Option<i32>), DbErr> {
    let mut rows = query.limit(size + 1).all(db).await?;
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);
    let next = if more { rows.last().map(id) } else { None };
    Ok((rows, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_outside_the_range_is_refused_not_clamped() {
        assert_eq!(size(None).unwrap(), DEFAULT_SIZE);
        assert_eq!(size(Some(1)).unwrap(), 1);
        assert_eq!(size(Some(MAX_SIZE)).unwrap(), MAX_SIZE);
        for bad in [0, MAX_SIZE + 1, u64::MAX] {
            let err = size(Some(bad)).unwrap_err();
            assert_eq!(err.code(), "invalid_limit", "{bad}");
        }
    }
}
