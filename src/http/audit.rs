//! Reading the audit log (office and auditors, within their scope).

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Query};
use crate::area::AreaCode;
use crate::audit::{self, AuditFilter, AuditPage};
use crate::error::{AppError, AppResult, ErrorEnvelope};
use crate::http::guard::{Auth, ReadAudit};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Audit records, newest first.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    security(("bearer" = [])),
    params(AuditFilter),
    responses(
        (status = 200, body = AuditPage),
        (status = 403, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    )
)]
async fn list_audit(
    State(state): State<AppState>,
    actor: Auth<ReadAudit>,
    Query(filter): Query<AuditFilter>,
) -> AppResult<Json<AuditPage>> {
    let area = match filter.area.as_deref() {
        Some(raw) => {
            let code = AreaCode::parse(raw)
                .map_err(|e| AppError::validation("invalid_area_code", e.to_string()))?;
            if !actor.scope.contains(&code) {
                return Err(AppError::out_of_scope());
            }
            Some(code)
        }
        None => None,
    };
    Ok(Json(
        audit::list(&state.db, &actor.scope, filter, area).await?,
    ))
}
