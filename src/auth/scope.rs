//! The area scope of a user and the one filter every scoped query goes through.

use sea_orm::{ColumnTrait, Condition};

use crate::area::AreaCode;

/// What part of the area tree a user may see and change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole tree (the bootstrap administrator, the command line).
    All,
    /// This area and everything under it.
    Within(AreaCode),
}

impl Scope {
    pub fn from_area(area: Option<AreaCode>) -> Self {
        area.map_or(Scope::All, Scope::Within)
    }

    /// Whether `code` is inside the scope.
    pub fn contains(&self, code: &AreaCode) -> bool {
        match self {
            Scope::All => true,
            Scope::Within(area) => area.contains(code),
        }
    }

    /// Whether everything under `other` is also under this scope.
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, _) => true,
            (Scope::Within(_), Scope::All) => false,
            (Scope::Within(mine), Scope::Within(theirs)) => mine.contains(theirs),
        }
    }

    /// The condition that keeps rows whose area code column `column` lies in the scope.
    /// Rows with no area belong to the whole tree and are seen only with `Scope::All`.
    pub fn filter<C: ColumnTrait>(&self, column: C) -> Condition {
        match self {
            Scope::All => Condition::all(),
            Scope::Within(area) => {
                let (low, high) = area.code_range();
                Condition::all().add(column.between(low, high))
            }
        }
    }

    /// [`Scope::filter`] for a `char(12)` code column (the residents' and the progress rows'
    /// village codes): the bounds cast to the column's type, or PostgreSQL would compare each
    /// row's code as text, outside the column's index.
    pub fn filter_char<C: ColumnTrait>(&self, column: C) -> Condition {
        match self {
            Scope::All => Condition::all(),
            Scope::Within(area) => {
                use sea_orm::sea_query::{Expr, ExprTrait};
                let (low, high) = area.code_range();
                let bound = |code: String| Expr::val(code).cast_as("CHAR(12)");
                Condition::all()
                    .add(Expr::col(column.as_column_ref()).between(bound(low), bound(high)))
            }
        }
    }

    pub fn area(&self) -> Option<&AreaCode> {
        match self {
            Scope::All => None,
            Scope::Within(area) => Some(area),
        }
    }
}
