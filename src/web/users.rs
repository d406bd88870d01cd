//! User accounts for the office: add, deactivate, reset a password, change role or area.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use entities::users::Role;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::campaigns::{FormError, form_error};
use super::institutions::{AreaOption, area_names, area_options};
use super::pages::{Nothing, PageError, local_time, role_title, ser};
use super::render::{page, templates};
use super::{Form, Session};
use crate::auth::role_name;
use crate::error::AppError;
use crate::flows;
use crate::http::guard::OfficeOnly;
use crate::institution::{self, InstitutionView};
use crate::state::AppState;
use crate::users::{self, NewUser, UserChanges, UserFilter, UserView, parse_role};

pub(super) const TEMPLATES: &[(&str, &str)] = templates!["app/users.html", "app/user.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/users", get(list).post(create))
        .route("/app/users/{id}", get(show).post(update))
        .route("/app/users/{id}/active", post(set_active))
        .route("/app/users/{id}/reset", post(reset))
}

/// Users listed per page.
const PAGE_SIZE: u64 = 100;

const ROLES: [Role; 5] = [
    Role::Cadre,
    Role::Township,
    Role::Institution,
    Role::Office,
    Role::Auditor,
];

/// The form field a user error code is about.
fn user_field(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_username" | "conflict" => "username",
        "invalid_display_name" => "display_name",
        "invalid_role" => "role",
        "invalid_area_code" | "unknown_area" | "role_area_mismatch" | "out_of_scope" => "area_code",
        "institution_required" | "unknown_institution" | "institution_not_allowed" => "institution",
        "weak_password" | "password_too_long" => "password",
        _ => return None,
    })
}

/// A user form as typed (adding or changing).
#[derive(Deserialize, Serialize, Default)]
pub struct UserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    area_code: String,
    #[serde(default)]
    institution: String,
    /// Left out to have one generated; never shown again.
    #[serde(default, skip_serializing)]
    password: String,
}

impl UserForm {
    fn role(&self) -> Result<Role, AppError> {
        if self.role.trim().is_empty() {
            return Err(AppError::validation("invalid_role", "请选择角色"));
        }
        parse_role(&self.role)
    }

    /// The institution's code when the role is clinic staff; nobody else has one.
    fn institution(&self, role: Role) -> Option<String> {
        Some(self.institution.trim().to_owned())
            .filter(|c| role == Role::Institution && !c.is_empty())
    }

    fn new_user(&self) -> Result<NewUser, AppError> {
        let role = self.role()?;
        Ok(NewUser {
            username: self.username.clone(),
            display_name: Some(self.display_name.clone()),
            role,
            area_code: self.area_code.trim().to_owned(),
            password: Some(self.password.clone()).filter(|p| !p.is_empty()),
            institution: self.institution(role),
        })
    }

    /// What changed against `user`, as the API's body.
    fn changes(&self, user: &UserView) -> Result<UserChanges, AppError> {
        let role = self.role()?;
        let area = self.area_code.trim();
        Ok(UserChanges {
            display_name: Some(self.display_name.clone()),
            role: Some(role).filter(|r| *r != user.role),
            area_code: Some(area.to_owned())
                .filter(|a| !a.is_empty() && user.area_code.as_deref() != Some(a)),
            active: None,
            institution: self.institution(role),
        })
    }
}

fn role_options() -> Vec<minijinja::Value> {
    ROLES
        .into_iter()
        .map(|r| context! { code => role_name(r), label => role_title(r) })
        .collect()
}

/// The institutions a clinic user may work for, as the select offers them.
fn institution_options(all: &[InstitutionView]) -> Vec<minijinja::Value> {
    all.iter()
        .map(|i| context! { code => i.code.clone(), name => i.name.clone() })
        .collect()
}

/// Institution names by id, for naming a clinic user's.
fn institution_names(all: &[InstitutionView]) -> HashMap<i32, String> {
    all.iter().map(|i| (i.id, i.name.clone())).collect()
}

#[derive(Serialize)]
struct Row {
    id: i32,
    username: String,
    display_name: Option<String>,
    role: &'static str,
    role_code: &'static str,
    area: String,
    institution: Option<String>,
    active: bool,
    created: String,
}

fn rows(
    users: Vec<UserView>,
    names: &HashMap<&str, &str>,
    places: &HashMap<i32, String>,
) -> Vec<Row> {
    users
        .into_iter()
        .map(|u| Row {
            id: u.id,
            role: role_title(u.role),
            role_code: role_name(u.role),
            area: match u.area_code.as_deref() {
                Some(code) => names
                    .get(code)
                    .map_or(code.to_owned(), |n| format!("{n}（{code}）")),
                None => "全部".to_owned(),
            },
            institution: u.institution_id.and_then(|id| places.get(&id).cloned()),
            active: u.active,
            created: local_time(None, u.created_at),
            username: u.username,
            display_name: u.display_name,
        })
        .collect()
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    role: Option<String>,
    after: Option<String>,
}

/// What the list page shows besides the users: the add form's state and what was done.
#[derive(Default)]
struct ListExtra {
    status: Option<StatusCode>,
    form: Option<UserForm>,
    error: Option<FormError>,
    /// The user just added and their one-time password.
    created: Option<(String, Option<String>)>,
}

async fn list_page(
    state: &AppState,
    session: &Session<OfficeOnly>,
    query: ListQuery,
    extra: ListExtra,
) -> Result<Response, PageError> {
    let q = query
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_owned);
    let role = query
        .role
        .as_deref()
        .filter(|r| parse_role(r).is_ok())
        .map(str::to_owned);
    let listed = users::list(
        &state.db,
        &session.actor.scope,
        UserFilter {
            role: role.clone(),
            q: q.clone(),
            limit: Some(PAGE_SIZE),
            after: query.after.as_deref().and_then(|a| a.parse().ok()),
            ..Default::default()
        },
    )
    .await?;
    let areas = area_options(state, &session.actor.scope).await?;
    let names = area_names(&areas);
    let all = institution::list(&state.db).await?;
    let next = listed.next_after.map(|after| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(q) = &q {
            query.append_pair("q", q);
        }
        if let Some(role) = &role {
            query.append_pair("role", role);
        }
        query.append_pair("after", &after.to_string());
        query.finish()
    });
    let form = extra.form.unwrap_or_else(|| UserForm {
        role: "cadre".to_owned(),
        ..Default::default()
    });
    let created = extra
        .created
        .map(|(username, password)| context! { username, password });
    Ok(page(
        extra.status.unwrap_or(StatusCode::OK),
        "app/users.html",
        context! {
            section => "users",
            rows => ser(rows(listed.users, &names, &institution_names(&all))),
            next,
            q,
            role_filter => role,
            roles => role_options(),
            areas => ser(&areas),
            institutions => institution_options(&all),
            form => ser(&form),
            error => extra.error.map(ser),
            created,
            ..session.frame()
        },
    ))
}

/// `GET /app/users[?q=…&role=…]`: the users of the office's scope with role, area,
/// institution and whether active, and the form that adds one.
pub async fn list(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    list_page(&state, &session, query, ListExtra::default()).await
}

/// `POST /app/users`: adds a user as the API does and shows the generated password once; a
/// refused value (a role that does not fit the area's level, a username taken) shows the
/// form again with the message and what was entered.
pub async fn create(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Form(form): Form<UserForm>,
) -> Result<Response, PageError> {
    let created = match form.new_user() {
        Ok(new) => flows::accounts::create(&state.db, &session.actor, new).await,
        Err(error) => Err(error),
    };
    let extra = match created {
        Ok(created) => ListExtra {
            created: Some((created.user.username, created.generated_password)),
            ..Default::default()
        },
        Err(error) => {
            let (status, error) = form_error(error, user_field)?;
            ListExtra {
                status: Some(status),
                form: Some(form),
                error: Some(error),
                ..Default::default()
            }
        }
    };
    list_page(&state, &session, ListQuery::default(), extra).await
}

#[derive(Deserialize)]
pub struct ShowQuery {
    done: Option<String>,
}

/// What the user page shows besides the user.
#[derive(Default)]
struct UserExtra {
    status: Option<StatusCode>,
    form: Option<UserForm>,
    error: Option<FormError>,
    notice: Option<&'static str>,
    /// A password just set, shown this once.
    password: Option<String>,
}

async fn user_page(
    state: &AppState,
    session: &Session<OfficeOnly>,
    id: i32,
    extra: UserExtra,
) -> Result<Response, PageError> {
    let user: UserView = users::get(&state.db, &session.actor.scope, id)
        .await?
        .into();
    let areas: Vec<AreaOption> = area_options(state, &session.actor.scope).await?;
    let names = area_names(&areas);
    let all = institution::list(&state.db).await?;
    let form = extra.form.unwrap_or_else(|| UserForm {
        username: user.username.clone(),
        display_name: user.display_name.clone().unwrap_or_default(),
        role: role_name(user.role).to_owned(),
        area_code: user.area_code.clone().unwrap_or_default(),
        institution: all
            .iter()
            .find(|i| Some(i.id) == user.institution_id)
            .map(|i| i.code.clone())
            .unwrap_or_default(),
        password: String::new(),
    });
    let is_self = session.actor.user_id == Some(user.id);
    let row = rows(vec![user.clone()], &names, &institution_names(&all))
        .pop()
        .map(ser);
    Ok(page(
        extra.status.unwrap_or(StatusCode::OK),
        "app/user.html",
        context! {
            section => "users",
            account => row,
            whole_tree => user.area_code.is_none(),
            is_self,
            roles => role_options(),
            areas => ser(&areas),
            institutions => institution_options(&all),
            form => ser(&form),
            error => extra.error.map(ser),
            notice => extra.notice,
            password => extra.password,
            ..session.frame()
        },
    ))
}

/// `GET /app/users/{id}`: one user of the office's scope: change name, role, area or
/// institution; reset the password; deactivate or reactivate.
pub async fn show(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Query(query): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let notice = match query.done.as_deref() {
        Some("saved") => Some("已保存。角色、区划或机构有变化时，该用户需要重新登录。"),
        Some("deactivated") => Some("已停用：该用户已被退出登录，不能再登录。"),
        Some("reactivated") => Some("已重新启用。"),
        _ => None,
    };
    let extra = UserExtra {
        notice,
        ..Default::default()
    };
    user_page(&state, &session, id, extra).await
}

/// `POST /app/users/{id}`: changes name, role, area or institution as the API does; a
/// refused value shows the form again with the message and what was entered.
pub async fn update(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(mut form): Form<UserForm>,
) -> Result<Response, PageError> {
    let user: UserView = users::get(&state.db, &session.actor.scope, id)
        .await?
        .into();
    form.username = user.username.clone();
    let updated = match form.changes(&user) {
        Ok(changes) => flows::accounts::update(&state.db, &session.actor, id, changes).await,
        Err(error) => Err(error),
    };
    match updated {
        Ok(_) => Ok(Redirect::to(&format!("/app/users/{id}?done=saved")).into_response()),
        Err(error) => {
            let (status, error) = form_error(error, user_field)?;
            let extra = UserExtra {
                status: Some(status),
                form: Some(form),
                error: Some(error),
                ..Default::default()
            };
            user_page(&state, &session, id, extra).await
        }
    }
}

#[derive(Deserialize)]
pub struct ActiveForm {
    active: String,
}

/// `POST /app/users/{id}/active`: deactivates a user (signed out everywhere) or reactivates
/// one, as the API's change of `active` does.
pub async fn set_active(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(form): Form<ActiveForm>,
) -> Result<Response, PageError> {
    let active = form.active == "true";
    let changes = UserChanges {
        active: Some(active),
        ..Default::default()
    };
    match flows::accounts::update(&state.db, &session.actor, id, changes).await {
        Ok(_) => {
            let done = if active { "reactivated" } else { "deactivated" };
            Ok(Redirect::to(&format!("/app/users/{id}?done={done}")).into_response())
        }
        Err(error) => {
            let (status, error) = form_error(error, |_| None)?;
            let extra = UserExtra {
                status: Some(status),
                error: Some(error),
                ..Default::default()
            };
            user_page(&state, &session, id, extra).await
        }
    }
}

/// `POST /app/users/{id}/reset`: sets a generated password as the API does (the user is
/// signed out everywhere) and shows it this once.
pub async fn reset(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(Nothing {}): Form<Nothing>,
) -> Result<Response, PageError> {
    let password = flows::accounts::reset_password(&state.db, &session.actor, id).await?;
    let extra = UserExtra {
        password: Some(password),
        ..Default::default()
    };
    user_page(&state, &session, id, extra).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(role: &str, institution: &str) -> UserForm {
        UserForm {
            username: "cadre.new".into(),
            display_name: "新干部".into(),
            role: role.into(),
            area_code: "654025100201".into(),
            institution: institution.into(),
            password: String::new(),
        }
    }

    #[test]
    fn a_new_user_gets_a_generated_password_and_an_institution_only_as_clinic_staff() {
        let new = form("cadre", "XY-WSY").new_user().unwrap();
        assert_eq!(new.role, Role::Cadre);
        assert_eq!(new.password, None);
        assert_eq!(new.institution, None);
        let new = form("institution", "XY-WSY").new_user().unwrap();
        assert_eq!(new.institution.as_deref(), Some("XY-WSY"));
        assert_eq!(
            user_field(form("", "").new_user().unwrap_err().code()),
            Some("role")
        );
    }

    #[test]
    fn only_what_changed_is_sent() {
        let now = chrono::Utc::now();
        let user = UserView {
            id: 7,
            username: "cadre.new".into(),
            display_name: None,
            role: Role::Cadre,
            area_code: Some("654025100201".into()),
            active: true,
            institution_id: None,
            created_at: now,
            updated_at: now,
        };
        let same = form("cadre", "").changes(&user).unwrap();
        assert_eq!((same.role, same.area_code), (None, None));
        let mut moved = form("township", "");
        moved.area_code = "654025100000".into();
        let changes = moved.changes(&user).unwrap();
        assert_eq!(changes.role, Some(Role::Township));
        assert_eq!(changes.area_code.as_deref(), Some("654025100000"));
    }
}
