//! Cursor pagination shared by every list endpoint: one row more than the page is fetched to
//! know whether another page follows; the cursor is the id of the page's last row.

use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QuerySelect, Select};

/// The page size asked for, 1–500 (default 100).
pub fn size(requested: Option<u64>) -> u64 {
    requested.unwrap_or(100).clamp(1, 500)
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
