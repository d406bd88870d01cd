//! User accounts: creation (command line, API, first start), listing and changes within the
//! caller's scope, password resets. Every change is audited in the transaction that makes it
//! (begun in `flows::accounts`).

use chrono::Utc;
use entities::areas::AreaLevel;
use entities::users::{self, Role};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder,
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

/// A new user checked against the caller's scope, with the password hashed: what
/// [`create`] writes. Made by [`prepare_create`].
pub struct NewAccount {
    username: String,
    display_name: Option<String>,
    role: Role,
    area: AreaCode,
    institution_id: Option<i32>,
    hash: String,
    /// The password, when it was generated (shown once).
    generated: Option<String>,
}

/// Checks a new user inside `actor`'s scope and hashes the password (slow on purpose, so
/// before the write). The command line and the API both come here.
pub async fn prepare_create(
    db: &impl ConnectionTrait,
    actor: &Actor,
    new: NewUser,
) -> AppResult<NewAccount> {
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
    Ok(NewAccount {
        username,
        display_name,
        role: new.role,
        area,
        institution_id,
        hash,
        generated: generated.then_some(password),
    })
}

/// Writes a user made by [`prepare_create`]; a username already taken is a conflict.
pub async fn create(
    db: &impl ConnectionTrait,
    actor: &Actor,
    new: NewAccount,
) -> AppResult<Created> {
    let NewAccount {
        username,
        display_name,
        role,
        area,
        institution_id,
        hash,
        generated,
    } = new;
    if users::Entity::find()
        .filter(users::Column::Username.eq(&username))
        .count(db)
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
        role: Set(role),
        area_code: Set(Some(area.as_str().to_owned())),
        active: Set(true),
        institution_id: Set(institution_id),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await?;
    audit::record(
        db,
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
                "password": if generated.is_some() { "generated" } else { "set" },
            }),
        },
    )
    .await?;
    Ok(Created {
        user,
        generated_password: generated,
    })
}

/// The first administrator's generated password and its hash, made by [`prepare_admin`].
pub struct NewAdmin {
    pub password: String,
    hash: String,
}

/// On a database with no users at all, a generated password (hashed) for `admin`; `None`
/// when any user exists.
pub async fn prepare_admin(db: &impl ConnectionTrait) -> AppResult<Option<NewAdmin>> {
    if users::Entity::find().count(db).await? > 0 {
        return Ok(None);
    }
    let password = password::generate();
    let hash = password::hash(password.clone()).await?;
    Ok(Some(NewAdmin { password, hash }))
}

/// Creates `admin` (office role, whole tree) with the password of [`prepare_admin`].
/// Returns false when `admin` exists already — another instance sharing the database won
/// the race to create it.
pub async fn create_admin(db: &impl ConnectionTrait, admin: &NewAdmin) -> AppResult<bool> {
    let now = Utc::now();
    let inserted = users::Entity::insert(users::ActiveModel {
        username: Set(ADMIN_USERNAME.to_owned()),
        display_name: Set(Some("系统管理员".to_owned())),
        password_hash: Set(admin.hash.clone()),
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
    .exec(db)
    .await;
    let user_id = match inserted {
        Ok(result) => result.last_insert_id,
        Err(sea_orm::DbErr::RecordNotInserted) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    audit::record(
        db,
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
    Ok(true)
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
pub async fn update(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    changes: UserChanges,
) -> AppResult<users::Model> {
    let user = get(txn, &actor.scope, id).await?;
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
            let area = area::existing(txn, raw).await?;
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
        (role, code) => institution_of(txn, role, code).await?,
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
    let updated = model.update(txn).await?;
    if sign_out {
        auth::revoke_all(txn, updated.id).await?;
    }
    audit::record(
        txn,
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
    Ok(updated)
}

/// A user's new password, hashed, and how it came (made by [`prepare_reset`] or
/// [`prepare_own_change`]); [`set_password`] writes it.
pub struct NewPassword {
    user: users::Model,
    hash: String,
    action: &'static str,
}

/// A new generated password for a user in scope, returned once beside what
/// [`set_password`] writes.
pub async fn prepare_reset(
    db: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
) -> AppResult<(NewPassword, String)> {
    let user = get(db, &actor.scope, id).await?;
    let password = password::generate();
    let hash = password::hash(password.clone()).await?;
    Ok((
        NewPassword {
            user,
            hash,
            action: "user.reset_password",
        },
        password,
    ))
}

/// A user's own new password, after they proved they know the current one.
pub async fn prepare_own_change(
    db: &impl ConnectionTrait,
    actor: &Actor,
    current: String,
    new: String,
) -> AppResult<NewPassword> {
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
    Ok(NewPassword {
        user,
        hash,
        action: "user.change_password",
    })
}

/// Stores a new password and signs the user out everywhere.
pub async fn set_password(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    new: &NewPassword,
) -> AppResult<()> {
    let user = &new.user;
    let mut model: users::ActiveModel = user.clone().into();
    model.password_hash = Set(new.hash.clone());
    model.updated_at = Set(Utc::now());
    model.update(txn).await?;
    auth::revoke_all(txn, user.id).await?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: new.action,
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
