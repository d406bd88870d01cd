//! User accounts: creation (command line, API, first start), listing and changes within the
//! caller's scope, password resets. Every change is audited in its own transaction.

use chrono::Utc;
use entities::areas::AreaLevel;
use entities::users::{self, Role};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, TransactionSession, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::area::{self, AreaCode};
use crate::audit::{self, AuditEvent};
use crate::auth::{self, Actor, Scope, password};
use crate::error::{AppError, AppResult};
use crate::paging;

pub const ADMIN_USERNAME: &str = "admin";

/// A user as shown to office staff (never the password hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: i32,
    pub username: String,
    pub display_name: Option<String>,
    #[schema(value_type = String, example = "cadre")]
    pub role: Role,
    /// Scope: this area and everything under it; `null` is the whole tree.
    pub area_code: Option<String>,
    pub active: bool,
    /// The institution an `institution` user works for.
    pub institution_id: Option<i32>,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<users::Model> for UserView {
    fn from(u: users::Model) -> Self {
        Self {
            id: u.id,
            username: u.username,
            display_name: u.display_name,
            role: u.role,
            area_code: u.area_code,
            active: u.active,
            institution_id: u.institution_id,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub display_name: Option<String>,
    #[schema(value_type = String, example = "cadre")]
    pub role: Role,
    /// 12-digit area code of the user's scope.
    pub area_code: String,
    /// Leave out to have a password generated and returned once.
    pub password: Option<String>,
    /// Code of the institution an `institution` user works for (required for that role).
    #[serde(default)]
    pub institution: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChanges {
    pub display_name: Option<String>,
    #[schema(value_type = Option<String>, example = "township")]
    pub role: Option<Role>,
    pub area_code: Option<String>,
    pub active: Option<bool>,
    /// Code of the institution an `institution` user works for (needed when the role becomes
    /// `institution`; dropped when it becomes another).
    pub institution: Option<String>,
}

/// A created user and, when it was generated, the one-time password.
pub struct Created {
    pub user: users::Model,
    pub generated_password: Option<String>,
}

fn normalise_username(raw: &str) -> AppResult<String> {
    let username = raw.trim().to_lowercase();
    let valid = (3..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@'));
    if valid {
        Ok(username)
    } else {
        Err(AppError::validation(
            "invalid_username",
            "用户名应为 3–64 个字符，只能包含字母、数字和 _ . - @",
        ))
    }
}

fn check_display_name(name: &Option<String>) -> AppResult<Option<String>> {
    match name.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) if n.chars().count() > 100 => Err(AppError::validation(
            "invalid_display_name",
            "姓名不能超过 100 个字",
        )),
        Some(n) if !crate::text::is_clean_name(n) => Err(AppError::validation(
            "invalid_display_name",
            crate::text::CONTROL_REASON,
        )),
        Some(n) => Ok(Some(n.to_owned())),
    }
}

/// The level a role's scope must have: a cadre works in one village, a township officer in
/// one township, the office in one county. Institutions and auditors may have any scope.
fn check_role_fits_area(role: Role, area: &AreaCode) -> AppResult<()> {
    let required = match role {
        Role::Office => Some((AreaLevel::County, "县级")),
        Role::Township => Some((AreaLevel::Township, "乡镇级")),
        Role::Cadre => Some((AreaLevel::Village, "村（社区）级")),
        Role::Institution | Role::Auditor => None,
    };
    match required {
        Some((level, label)) if area.level() != level => Err(AppError::validation(
            "role_area_mismatch",
            format!("该角色的管辖区划必须是{label}区划，{area} 不是"),
        )),
        _ => Ok(()),
    }
}

/// Institution staff act for exactly one institution; no other role has one.
async fn institution_of(
    db: &impl ConnectionTrait,
    role: Role,
    code: Option<&str>,
) -> AppResult<Option<i32>> {
    let code = code.map(str::trim).filter(|c| !c.is_empty());
    match (role, code) {
        (Role::Institution, None) => Err(AppError::validation(
            "institution_required",
            "医疗机构用户必须指定所属机构（institution）",
        )),
        (Role::Institution, Some(code)) => entities::institutions::Entity::find()
            .filter(entities::institutions::Column::Code.eq(code.to_uppercase()))
            .one(db)
            .await?
            .map(|i| Some(i.id))
            .ok_or_else(|| {
                AppError::validation("unknown_institution", format!("机构 {code} 不存在"))
            }),
        (_, None) => Ok(None),
        (_, Some(_)) => Err(AppError::validation(
            "institution_not_allowed",
            "只有医疗机构用户可以指定所属机构",
        )),
    }
}

/// Creates a user inside `actor`'s scope. The command line and the API both come here.
pub async fn create<C>(db: &C, actor: &Actor, new: NewUser) -> AppResult<Created>
where
    C: ConnectionTrait + TransactionTrait,
{
    let username = normalise_username(&new.username)?;
    let display_name = check_display_name(&new.display_name)?;
    let area = area::existing(db, &new.area_code).await?;
    if !actor.scope.contains(&area) {
        return Err(AppError::out_of_scope());
    }
    check_role_fits_area(new.role, &area)?;
    let institution_id = institution_of(db, new.role, new.institution.as_deref()).await?;
    let (password, generated) = match new.password {
        Some(p) => {
            password::check_policy(&p)?;
            (p, false)
        }
        None => (password::generate(), true),
    };
    let hash = password::hash(password.clone()).await?;
    let txn = db.begin().await?;
    if users::Entity::find()
        .filter(users::Column::Username.eq(&username))
        .count(&txn)
        .await?
        > 0
    {
        return Err(AppError::Conflict(format!("用户名 {username} 已被使用")));
    }
    let now = Utc::now();
    let user = users::ActiveModel {
        username: Set(username),
        display_name: Set(display_name),
        password_hash: Set(hash),
        role: Set(new.role),
        area_code: Set(Some(area.as_str().to_owned())),
        active: Set(true),
        institution_id: Set(institution_id),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        actor,
        AuditEvent {
            action: "user.create",
            entity: "user",
            entity_id: Some(user.id.to_string()),
            area_code: Some(area),
            summary: json!({
                "username": user.username,
                "role": auth::role_name(user.role),
                "area_code": user.area_code,
                "institution_id": user.institution_id,
                "password": if generated { "generated" } else { "set" },
            }),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Created {
        user,
        generated_password: generated.then_some(password),
    })
}

/// On a database with no users at all, creates `admin` (office role, whole tree) and returns
/// its generated password. Returns `None` when any user exists — or when another instance
/// sharing the database won the race to create it.
pub async fn ensure_admin<C>(db: &C) -> AppResult<Option<String>>
where
    C: ConnectionTrait + TransactionTrait,
{
    if users::Entity::find().count(db).await? > 0 {
        return Ok(None);
    }
    let password = password::generate();
    let hash = password::hash(password.clone()).await?;
    let txn = db.begin().await?;
    let now = Utc::now();
    let inserted = users::Entity::insert(users::ActiveModel {
        username: Set(ADMIN_USERNAME.to_owned()),
        display_name: Set(Some("系统管理员".to_owned())),
        password_hash: Set(hash),
        role: Set(Role::Office),
        area_code: Set(None),
        active: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::column(users::Column::Username)
            .do_nothing()
            .to_owned(),
    )
    .exec(&txn)
    .await;
    let user_id = match inserted {
        Ok(result) => result.last_insert_id,
        Err(sea_orm::DbErr::RecordNotInserted) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    audit::record(
        &txn,
        &Actor::cli(),
        AuditEvent {
            action: "user.bootstrap_admin",
            entity: "user",
            entity_id: Some(user_id.to_string()),
            area_code: None,
            summary: json!({"username": ADMIN_USERNAME, "role": "office", "scope": "all"}),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Some(password))
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// office, township, cadre, institution or auditor
    pub role: Option<String>,
    /// Only users whose scope lies under this area.
    pub area: Option<String>,
    pub active: Option<bool>,
    /// Part of the username or display name.
    pub q: Option<String>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<u64>,
    /// Cursor: only users with a larger id (the `next_after` of the previous page).
    pub after: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    pub users: Vec<UserView>,
    pub next_after: Option<i32>,
}

pub fn parse_role(raw: &str) -> AppResult<Role> {
    match raw.trim() {
        "office" => Ok(Role::Office),
        "township" => Ok(Role::Township),
        "cadre" => Ok(Role::Cadre),
        "institution" => Ok(Role::Institution),
        "auditor" => Ok(Role::Auditor),
        other => Err(AppError::validation(
            "invalid_role",
            format!("未知角色 {other}：可选 office、township、cadre、institution、auditor"),
        )),
    }
}

/// Users whose scope lies inside `scope`.
pub async fn list(
    db: &impl ConnectionTrait,
    scope: &Scope,
    filter: UserFilter,
) -> AppResult<UserPage> {
    let size = paging::size(filter.limit)?;
    let mut query = users::Entity::find().filter(scope.filter(users::Column::AreaCode));
    if let Some(role) = filter.role.as_deref() {
        query = query.filter(users::Column::Role.eq(parse_role(role)?));
    }
    if let Some(area) = filter.area.as_deref() {
        let area = AreaCode::parse(area)
            .map_err(|e| AppError::validation("invalid_area_code", e.to_string()))?;
        query = query.filter(Scope::Within(area).filter(users::Column::AreaCode));
    }
    if let Some(active) = filter.active {
        query = query.filter(users::Column::Active.eq(active));
    }
    if let Some(q) = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        query = query.filter(
            sea_orm::Condition::any()
                .add(users::Column::Username.contains(q.to_lowercase()))
                .add(users::Column::DisplayName.contains(q)),
        );
    }
    if let Some(after) = filter.after {
        query = query.filter(users::Column::Id.gt(after));
    }
    let (rows, next_after) =
        paging::fetch(db, query.order_by_asc(users::Column::Id), size, |u| u.id).await?;
    Ok(UserPage {
        users: rows.into_iter().map(UserView::from).collect(),
        next_after,
    })
}

/// One user inside `scope`; a user outside it is reported as not found.
pub async fn get(db: &impl ConnectionTrait, scope: &Scope, id: i32) -> AppResult<users::Model> {
    users::Entity::find_by_id(id)
        .filter(scope.filter(users::Column::AreaCode))
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("用户 {id} 不存在")))
}

/// Applies `changes` to a user in `actor`'s scope. A role or scope change, or deactivation,
/// signs the user out everywhere.
pub async fn update<C>(
    db: &C,
    actor: &Actor,
    id: i32,
    changes: UserChanges,
) -> AppResult<users::Model>
where
    C: ConnectionTrait + TransactionTrait,
{
    let txn = db.begin().await?;
    let user = get(&txn, &actor.scope, id).await?;
    let is_self = actor.user_id == Some(user.id);
    let mut diff = serde_json::Map::new();
    let mut model: users::ActiveModel = user.clone().into();
    let mut sign_out = false;

    if let Some(name) = &changes.display_name {
        let name = check_display_name(&Some(name.clone()))?;
        if name != user.display_name {
            diff.insert(
                "display_name".into(),
                json!({"from": user.display_name, "to": name}),
            );
            model.display_name = Set(name);
        }
    }
    let role = changes.role.unwrap_or(user.role);
    let area = match &changes.area_code {
        Some(raw) => {
            let area = area::existing(&txn, raw).await?;
            if !actor.scope.contains(&area) {
                return Err(AppError::out_of_scope());
            }
            Some(area)
        }
        None => user
            .area_code
            .as_deref()
            .and_then(|c| AreaCode::parse(c).ok()),
    };
    if role != user.role || area.as_ref().map(AreaCode::as_str) != user.area_code.as_deref() {
        if is_self {
            return Err(AppError::validation(
                "cannot_change_self",
                "不能修改自己的角色或管辖区划",
            ));
        }
        match &area {
            Some(area) => check_role_fits_area(role, area)?,
            None => {
                return Err(AppError::validation(
                    "role_area_mismatch",
                    "全县范围的账户不能修改角色",
                ));
            }
        }
        if role != user.role {
            diff.insert(
                "role".into(),
                json!({"from": auth::role_name(user.role), "to": auth::role_name(role)}),
            );
            model.role = Set(role);
        }
        let new_area = area.as_ref().map(|a| a.as_str().to_owned());
        if new_area != user.area_code {
            diff.insert(
                "area_code".into(),
                json!({"from": user.area_code, "to": new_area}),
            );
            model.area_code = Set(new_area);
        }
        sign_out = true;
    }
    // Institution staff work for exactly one institution, and nobody else has one.
    let institution_id = match (role, changes.institution.as_deref()) {
        (Role::Institution, None) if user.institution_id.is_some() => user.institution_id,
        (role, code) => institution_of(&txn, role, code).await?,
    };
    if institution_id != user.institution_id {
        if is_self {
            return Err(AppError::validation(
                "cannot_change_self",
                "不能修改自己所属的机构",
            ));
        }
        diff.insert(
            "institution_id".into(),
            json!({"from": user.institution_id, "to": institution_id}),
        );
        model.institution_id = Set(institution_id);
        sign_out = true;
    }
    if let Some(active) = changes.active
        && active != user.active
    {
        if is_self && !active {
            return Err(AppError::validation(
                "cannot_change_self",
                "不能停用自己的账户",
            ));
        }
        diff.insert("active".into(), json!({"from": user.active, "to": active}));
        model.active = Set(active);
        sign_out |= !active;
    }
    if diff.is_empty() {
        return Ok(user);
    }
    model.updated_at = Set(Utc::now());
    let updated = model.update(&txn).await?;
    if sign_out {
        auth::revoke_all(&txn, updated.id).await?;
    }
    audit::record(
        &txn,
        actor,
        AuditEvent {
            action: "user.update",
            entity: "user",
            entity_id: Some(updated.id.to_string()),
            area_code: area,
            summary: serde_json::Value::Object(diff),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(updated)
}

/// Sets a new generated password for a user in scope, signs them out, returns the password once.
pub async fn reset_password<C>(db: &C, actor: &Actor, id: i32) -> AppResult<String>
where
    C: ConnectionTrait + TransactionTrait,
{
    let user = get(db, &actor.scope, id).await?;
    let password = password::generate();
    let hash = password::hash(password.clone()).await?;
    let txn = db.begin().await?;
    set_password(&txn, actor, &user, hash, "user.reset_password").await?;
    txn.commit().await?;
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
    C: ConnectionTrait + TransactionTrait,
{
    let id = actor.user_id.ok_or_else(AppError::forbidden_role)?;
    let user = users::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound("用户不存在".to_owned()))?;
    if !password::verify(current, user.password_hash.clone()).await? {
        return Err(AppError::validation("wrong_password", "当前密码不正确"));
    }
    password::check_policy(&new)?;
    let hash = password::hash(new).await?;
    let txn = db.begin().await?;
    set_password(&txn, actor, &user, hash, "user.change_password").await?;
    txn.commit().await?;
    Ok(())
}

async fn set_password(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    user: &users::Model,
    hash: String,
    action: &'static str,
) -> AppResult<()> {
    let mut model: users::ActiveModel = user.clone().into();
    model.password_hash = Set(hash);
    model.updated_at = Set(Utc::now());
    model.update(txn).await?;
    auth::revoke_all(txn, user.id).await?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action,
            entity: "user",
            entity_id: Some(user.id.to_string()),
            area_code: user
                .area_code
                .as_deref()
                .and_then(|c| AreaCode::parse(c).ok()),
            summary: json!({"username": user.username}),
        },
    )
    .await?;
    Ok(())
}
