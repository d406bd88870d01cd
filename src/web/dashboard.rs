//! The county office's, townships' and auditors' dashboard at `/app/`: the campaign's funnel,
//! the ranking, key groups, the daily series, the migrant books and message figures, with
//! filters and a drill-down to the residents of one stage.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use entities::users::Role;
use minijinja::context;

use super::Session;
use super::pages::{error_page, ser};
use super::render::{page, templates};
use crate::campaign;
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates!["app/dashboard.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}

/// `GET /app/`: the dashboard, or for clinic staff their appointments.
pub async fn home(State(state): State<AppState>, session: Session) -> Response {
    if session.actor.role == Role::Institution {
        return super::clinic::home(state, session).await;
    }
    let actor = &session.actor;
    let campaigns = match campaign::list(&state.db).await {
        Ok(campaigns) => campaigns,
        Err(error) => return error_page(&error),
    };
    let campaigns: Vec<_> = campaigns.iter().map(|c| ser(c.view())).collect();
    page(
        StatusCode::OK,
        "app/dashboard.html",
        context! {
            section => "dashboard",
            campaigns,
            field_pages => matches!(actor.role, Role::Office | Role::Township),
            reports => actor.role != Role::Institution,
            ..session.frame()
        },
    )
}
