//! The area tree (county → township → village/community): reading it within a scope and
//! importing it from the statistical code list.

mod code;
mod import;

pub use code::{AreaCode, AreaCodeError};
pub use import::{AreaFile, AreaImport, import_areas, read_areas};

use std::collections::HashMap;

use entities::areas::{self, AreaLevel};
use sea_orm::{ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use crate::auth::Scope;
use crate::error::{AppError, AppResult};

/// One area with the areas under it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AreaNode {
    pub code: String,
    pub name: String,
    #[schema(value_type = String, example = "township")]
    pub level: AreaLevel,
    pub parent_code: Option<String>,
    #[schema(no_recursion)]
    pub children: Vec<AreaNode>,
}

/// The part of the tree inside `scope`, as a forest whose roots are the topmost areas visible.
pub async fn tree(db: &impl ConnectionTrait, scope: &Scope) -> AppResult<Vec<AreaNode>> {
    let rows = areas::Entity::find()
        .filter(scope.filter(areas::Column::Code))
        .order_by_asc(areas::Column::Code)
        .all(db)
        .await?;
    Ok(build_forest(rows))
}

fn build_forest(rows: Vec<areas::Model>) -> Vec<AreaNode> {
    let present: std::collections::HashSet<String> = rows.iter().map(|r| r.code.clone()).collect();
    let mut children: HashMap<String, Vec<areas::Model>> = HashMap::new();
    let mut roots = Vec::new();
    for row in rows {
        match &row.parent_code {
            Some(parent) if present.contains(parent) => {
                children.entry(parent.clone()).or_default().push(row)
            }
            _ => roots.push(row),
        }
    }
    fn attach(row: areas::Model, children: &mut HashMap<String, Vec<areas::Model>>) -> AreaNode {
        let below = children.remove(&row.code).unwrap_or_default();
        AreaNode {
            children: below.into_iter().map(|c| attach(c, children)).collect(),
            code: row.code,
            name: row.name,
            level: row.level,
            parent_code: row.parent_code,
        }
    }
    roots
        .into_iter()
        .map(|row| attach(row, &mut children))
        .collect()
}

/// One area by code, if it exists and lies in `scope`.
pub async fn get(
    db: &impl ConnectionTrait,
    scope: &Scope,
    code: &AreaCode,
) -> AppResult<areas::Model> {
    if !scope.contains(code) {
        return Err(AppError::out_of_scope());
    }
    areas::Entity::find_by_id(code.as_str())
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("区划 {code} 不存在")))
}

/// Parses `raw` and checks that the area is registered; the error names the code.
pub async fn existing(db: &impl ConnectionTrait, raw: &str) -> AppResult<AreaCode> {
    let code = AreaCode::parse(raw)
        .map_err(|e| AppError::validation("invalid_area_code", e.to_string()))?;
    let found = areas::Entity::find_by_id(code.as_str()).one(db).await?;
    if found.is_none() {
        return Err(AppError::validation(
            "unknown_area",
            format!("区划代码 {code} 不存在，请先导入区划"),
        ));
    }
    Ok(code)
}
