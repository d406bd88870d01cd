//! The resident registry (户籍底数): the household population every rate is computed against.
//! One row per ID number county-wide; ID and phone numbers encrypted, shown masked unless a
//! role that may see them asks for one resident's detail, which is audited.

mod book;
pub mod consent;
pub mod fields;
mod import;
mod resident_id;

pub use book::{
    BookEntry, BookGroup, MigrantBook, migrant_book, migrant_book_csv, migrant_book_xlsx,
};
pub use fields::{KeyGroup, Language, MigrantType, MobilePhone, Special};
pub use import::{
    ImportRun, Progress, ProtectedPhone, ReadProgress, ResidentImport, valid_email, valid_openid,
};
pub use resident_id::{ResidentId, ResidentIdError, Sex, mask_raw_id};

use std::collections::HashMap;

use chrono::{Datelike, Months, NaiveDate, Utc};
use entities::areas::{self, AreaLevel};
use entities::residents;
use entities::users::Role;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait,
    QueryFilter, QueryOrder,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use crate::area::{self, AreaCode};
use crate::audit::{self, AuditEvent};
use crate::auth::{Actor, Scope};
use crate::error::{AppError, AppResult};
use crate::privacy::{Field, Privacy};
use crate::validate::{check_name, optional_name, parse_area};

/// Kept under the registry's name for the tests that read it from here.
pub use crate::time::today;

/// Code → name of every village and community.
pub async fn village_names(db: &impl ConnectionTrait) -> AppResult<HashMap<String, String>> {
    Ok(areas::Entity::find()
        .filter(areas::Column::Level.eq(AreaLevel::Village))
        .all(db)
        .await?
        .into_iter()
        .map(|a| (a.code, a.name))
        .collect())
}

/// Age groups the plan organises exams by, on a reference date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Cohort {
    #[serde(rename = "0-6")]
    Children,
    #[serde(rename = "7-14")]
    Students,
    #[serde(rename = "15-64")]
    Adults,
    #[serde(rename = "65-79")]
    Elderly,
    #[serde(rename = "80+")]
    Oldest,
}

impl Cohort {
    pub const ALL: [Cohort; 5] = [
        Cohort::Children,
        Cohort::Students,
        Cohort::Adults,
        Cohort::Elderly,
        Cohort::Oldest,
    ];

    /// Inclusive age bounds in whole years.
    pub fn ages(self) -> (u32, Option<u32>) {
        match self {
            Cohort::Children => (0, Some(6)),
            Cohort::Students => (7, Some(14)),
            Cohort::Adults => (15, Some(64)),
            Cohort::Elderly => (65, Some(79)),
            Cohort::Oldest => (80, None),
        }
    }

    pub fn of_age(age: u32) -> Cohort {
        Cohort::ALL
            .into_iter()
            .find(|c| {
                let (low, high) = c.ages();
                age >= low && high.is_none_or(|h| age <= h)
            })
            .unwrap_or(Cohort::Oldest)
    }

    /// Birth dates `(after, up_to)`: born after the first (exclusive) and on or before the
    /// second means the age on `on` is in this cohort.
    pub fn birth_range(self, on: NaiveDate) -> (Option<NaiveDate>, NaiveDate) {
        let (low, high) = self.ages();
        let up_to = years_before(on, low);
        let after = high.map(|h| years_before(on, h + 1));
        (after, up_to)
    }
}

/// `on` minus `years` calendar years; 29 February falls back to the 28th.
fn years_before(on: NaiveDate, years: u32) -> NaiveDate {
    on.checked_sub_months(Months::new(years * 12))
        .unwrap_or(NaiveDate::MIN)
}

/// The stored sex (`M` or `F`, from the ID number) as it is written in Chinese.
pub fn sex_label(code: &str) -> &'static str {
    if code == "M" { "男" } else { "女" }
}

/// Completed years of age on `on`.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> u32 {
    let mut age = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age.max(0) as u32
}

/// Roles that may see full ID and phone numbers (the people who contact residents).
pub fn may_reveal(role: Role) -> bool {
    matches!(role, Role::Office | Role::Township | Role::Cadre)
}

/// A resident as listed: personal numbers masked.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResidentSummary {
    pub id: i32,
    pub name: String,
    /// `M` or `F`.
    pub sex: String,
    pub birth_date: NaiveDate,
    /// Age in completed years today.
    pub age: u32,
    pub village_code: String,
    /// Masked, e.g. `6540**********123X`.
    pub id_number: String,
    /// Masked, e.g. `138****5678`.
    pub phone: Option<String>,
    /// Absent for institution staff, as is `special`: a clinic is not told who is a
    /// migrant or detained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrant_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub special: Option<Option<String>>,
    pub language: String,
}

impl From<residents::Model> for ResidentSummary {
    fn from(r: residents::Model) -> Self {
        Self {
            age: age_on(r.birth_date, today()),
            id: r.id,
            name: r.name,
            sex: r.sex,
            birth_date: r.birth_date,
            village_code: r.village_code,
            id_number: r.id_masked,
            phone: r.phone_masked,
            migrant_type: Some(r.migrant_type),
            special: Some(r.special),
            language: r.language,
        }
    }
}

impl ResidentSummary {
    /// What a clinic needs: who the person is and how to reach them (masked); not their
    /// migrant type or special situation.
    fn for_clinic(self) -> Self {
        Self {
            migrant_type: None,
            special: None,
            ..self
        }
    }
}

/// One resident in full. Numbers are masked unless `revealed` is true.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResidentDetail {
    pub id: i32,
    pub name: String,
    pub sex: String,
    pub birth_date: NaiveDate,
    pub age: u32,
    pub village_code: String,
    pub village_name: Option<String>,
    pub id_number: String,
    pub language: String,
    /// Absent for institution staff, who see what a clinic needs (name, sex, birth date,
    /// village, masked numbers, language) and not the migrant book's fields, the special
    /// situation, the address, the relative or the WeChat and e-mail contacts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrant_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<NaiveDate>)]
    pub permit_since: Option<Option<NaiveDate>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub special: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub current_address: Option<Option<String>>,
    pub phone: Option<String>,
    pub phone_opt_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub relative_name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub relative_relation: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub relative_phone: Option<Option<String>>,
    pub relative_opt_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub wechat_openid: Option<Option<String>>,
    pub wechat_opt_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    pub email_opt_out: bool,
    /// Whether the ID and phone numbers above are shown in full.
    pub revealed: bool,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResidentFilter {
    /// Only residents under this area (village, township or county code).
    pub area: Option<String>,
    /// Age group on `on`: `0-6`, `7-14`, `15-64`, `65-79` or `80+`.
    pub cohort: Option<String>,
    /// Reference date for `cohort` (YYYY-MM-DD, default today).
    pub on: Option<NaiveDate>,
    pub migrant_type: Option<String>,
    pub special: Option<String>,
    pub has_phone: Option<bool>,
    /// Part of the name (the `·` between the parts of a Uyghur or Kazakh name may be left
    /// out or typed as `•` or `.`), or the last 1–4 characters of the ID number.
    pub q: Option<String>,
    /// Exact ID number (found through the blind index).
    pub id_number: Option<String>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<u64>,
    /// Cursor: only residents with a larger id (the `next_after` of the previous page).
    pub after: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResidentPage {
    pub residents: Vec<ResidentSummary>,
    pub next_after: Option<i32>,
}

fn parse_cohort(raw: &str) -> AppResult<Cohort> {
    serde_json::from_value(json!(raw.trim())).map_err(|_| {
        AppError::validation(
            "invalid_cohort",
            format!("未知的年龄组 {raw}：可选 0-6、7-14、15-64、65-79、80+"),
        )
    })
}

fn vocabulary_error(field: &str, raw: &str) -> AppError {
    AppError::validation("invalid_value", format!("{field} 的取值 {raw} 无效"))
}

/// The stored name without the marks between its parts (see [`fields::name_key`]), as SQL
/// that SQLite and PostgreSQL both run.
const NAME_KEY_SQL: &str = "REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(REPLACE(\
     REPLACE(REPLACE(REPLACE(REPLACE(\"residents\".\"name\", '·', ''), '•', ''), '.', ''), \
     '・', ''), '‧', ''), '･', ''), '．', ''), '∙', ''), '⋅', ''), '‐', ''), ' ', ''), '\u{3000}', '')";

/// Names containing `key` (already without separators); `%` and `_` in it are literal.
/// A search for the end of an ID number: 1–4 digits (the last may be the check character X),
/// the part the masked number shows.
fn id_tail(q: &str) -> Option<String> {
    let q = q.trim();
    let valid = (1..=4).contains(&q.len())
        && q.char_indices()
            .all(|(i, c)| c.is_ascii_digit() || (i == q.len() - 1 && matches!(c, 'x' | 'X')));
    valid.then(|| q.to_ascii_uppercase())
}

/// Residents whose masked ID number (`6540**********1234`) ends in `tail`.
fn id_ends_with(tail: &str) -> sea_orm::sea_query::SimpleExpr {
    residents::Column::IdMasked.like(format!("%{tail}"))
}

fn name_matches(key: &str) -> sea_orm::sea_query::SimpleExpr {
    let mut pattern = String::with_capacity(key.len() + 2);
    pattern.push('%');
    for c in key.chars() {
        if matches!(c, '%' | '_' | '!') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
    // The pattern is bound (sea-query writes the placeholder each database wants).
    Expr::cust(NAME_KEY_SQL).like(LikeExpr::new(pattern).escape('!'))
}

/// The residents `actor` may see: those in their scope; for institution staff, of those only
/// the ones booked with their institution or living in the areas it serves.
pub async fn visible(db: &impl ConnectionTrait, actor: &Actor) -> AppResult<Condition> {
    let mut condition = actor.scope.filter_char(residents::Column::VillageCode);
    if actor.role == Role::Institution {
        condition = condition.add(clinic_residents(db, actor.institution_id).await?);
    }
    Ok(condition)
}

/// The residents an institution's staff may see: those booked with the institution (an
/// appointment not cancelled) and those living in the areas it serves. Staff without an
/// institution see nobody.
async fn clinic_residents(
    db: &impl ConnectionTrait,
    institution_id: Option<i32>,
) -> AppResult<sea_orm::Condition> {
    use entities::{appointments, institution_areas};
    use sea_orm::sea_query::Query;
    let Some(id) = institution_id else {
        // Ids are never null: a condition no row meets.
        return Ok(sea_orm::Condition::all().add(residents::Column::Id.is_null()));
    };
    let mut visible = sea_orm::Condition::any().add(
        residents::Column::Id.in_subquery(
            Query::select()
                .column(appointments::Column::ResidentId)
                .from(appointments::Entity)
                .and_where(appointments::Column::InstitutionId.eq(id))
                .and_where(appointments::Column::Status.ne("cancelled"))
                .to_owned(),
        ),
    );
    for row in institution_areas::Entity::find()
        .filter(institution_areas::Column::InstitutionId.eq(id))
        .all(db)
        .await?
    {
        if let Ok(area) = AreaCode::parse(&row.area_code) {
            visible = visible.add(Scope::Within(area).filter(residents::Column::VillageCode));
        }
    }
    Ok(visible)
}

/// One resident `actor` may see (see [`visible`]); any other does not exist for them.
pub async fn find_visible(
    db: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
) -> AppResult<residents::Model> {
    residents::Entity::find_by_id(id)
        .filter(visible(db, actor).await?)
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("居民 {id} 不存在")))
}

/// Residents `actor` may see, filtered, one page at a time in id order.
pub async fn list(
    db: &impl ConnectionTrait,
    privacy: &Privacy,
    actor: &Actor,
    filter: ResidentFilter,
) -> AppResult<ResidentPage> {
    let scope = &actor.scope;
    let size = crate::paging::size(filter.limit)?;
    let mut query = residents::Entity::find().filter(visible(db, actor).await?);
    if let Some(area) = filter.area.as_deref() {
        let area = parse_area(area)?;
        if !scope.contains(&area) {
            return Err(AppError::out_of_scope());
        }
        query = query.filter(Scope::Within(area).filter(residents::Column::VillageCode));
    }
    if let Some(cohort) = filter.cohort.as_deref() {
        let (after, up_to) = parse_cohort(cohort)?.birth_range(filter.on.unwrap_or_else(today));
        query = query.filter(residents::Column::BirthDate.lte(up_to));
        if let Some(after) = after {
            query = query.filter(residents::Column::BirthDate.gt(after));
        }
    }
    if let Some(raw) = filter.migrant_type.as_deref() {
        let value = MigrantType::parse(raw).ok_or_else(|| vocabulary_error("migrant_type", raw))?;
        query = query.filter(residents::Column::MigrantType.eq(value.code()));
    }
    if let Some(raw) = filter.special.as_deref() {
        query = match raw.trim() {
            "none" => query.filter(residents::Column::Special.is_null()),
            raw => {
                let value = Special::parse(raw).ok_or_else(|| vocabulary_error("special", raw))?;
                query.filter(residents::Column::Special.eq(value.code()))
            }
        };
    }
    if let Some(has_phone) = filter.has_phone {
        query = query.filter(if has_phone {
            residents::Column::PhoneIndex.is_not_null()
        } else {
            residents::Column::PhoneIndex.is_null()
        });
    }
    if let Some(tail) = filter.q.as_deref().and_then(id_tail) {
        query = query.filter(id_ends_with(&tail));
    } else if let Some(q) = filter
        .q
        .as_deref()
        .map(fields::name_key)
        .filter(|q| !q.is_empty())
    {
        query = query.filter(name_matches(&q));
    }
    if let Some(raw) = filter.id_number.as_deref() {
        let id = ResidentId::parse(raw, today())
            .map_err(|e| AppError::validation("invalid_id_number", e.to_string()))?;
        query = query.filter(
            residents::Column::IdIndex.eq(privacy.blind_index(Field::ResidentId, id.expose())),
        );
    }
    if let Some(after) = filter.after {
        query = query.filter(residents::Column::Id.gt(after));
    }
    let (rows, next_after) =
        crate::paging::fetch(db, query.order_by_asc(residents::Column::Id), size, |r| {
            r.id
        })
        .await?;
    Ok(ResidentPage {
        residents: rows
            .into_iter()
            .map(ResidentSummary::from)
            .map(|r| {
                if actor.role == Role::Institution {
                    r.for_clinic()
                } else {
                    r
                }
            })
            .collect(),
        next_after,
    })
}

/// Whether `privacy` opens the registry's encrypted ID numbers, tried on the first resident;
/// `None` when the registry is empty. A restore asks it before it puts a backup in place.
pub async fn key_opens(db: &impl ConnectionTrait, privacy: &Privacy) -> AppResult<Option<bool>> {
    let first = residents::Entity::find()
        .order_by_asc(residents::Column::Id)
        .one(db)
        .await?;
    Ok(first.map(|r| privacy.decrypt(Field::ResidentId, &r.id_cipher).is_ok()))
}

/// One resident in scope; outside the scope it does not exist.
pub async fn find(
    db: &impl ConnectionTrait,
    scope: &Scope,
    id: i32,
) -> AppResult<residents::Model> {
    residents::Entity::find_by_id(id)
        .filter(scope.filter(residents::Column::VillageCode))
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("居民 {id} 不存在")))
}

/// The detail of one resident. With `reveal`, a role allowed to see them gets the full ID and
/// phone numbers, and with them the audit entry the view must leave: the caller writes it
/// before it shows them.
pub async fn detail(
    db: &impl ConnectionTrait,
    privacy: &Privacy,
    actor: &Actor,
    id: i32,
    reveal: bool,
) -> AppResult<(ResidentDetail, Option<AuditEvent>)> {
    if reveal && !may_reveal(actor.role) {
        return Err(AppError::Forbidden(
            "您的角色无权查看完整的身份证号和电话".to_owned(),
        ));
    }
    let row = find_visible(db, actor, id).await?;
    let village_name = areas::Entity::find_by_id(row.village_code.as_str())
        .one(db)
        .await?
        .map(|a| a.name);
    let mut detail = ResidentDetail {
        age: age_on(row.birth_date, today()),
        id: row.id,
        name: row.name.clone(),
        sex: row.sex.clone(),
        birth_date: row.birth_date,
        village_code: row.village_code.clone(),
        village_name,
        id_number: row.id_masked.clone(),
        language: row.language.clone(),
        migrant_type: Some(row.migrant_type.clone()),
        permit_since: Some(row.permit_since),
        special: Some(row.special.clone()),
        current_address: Some(row.current_address.clone()),
        phone: row.phone_masked.clone(),
        phone_opt_out: row.phone_opt_out,
        relative_name: Some(row.relative_name.clone()),
        relative_relation: Some(row.relative_relation.clone()),
        relative_phone: Some(row.relative_phone_masked.clone()),
        relative_opt_out: row.relative_opt_out,
        wechat_openid: Some(row.wechat_openid.clone()),
        wechat_opt_out: row.wechat_opt_out,
        email: Some(row.email.clone()),
        email_opt_out: row.email_opt_out,
        revealed: false,
        created_at: row.created_at,
        updated_at: row.updated_at,
    };
    if actor.role == Role::Institution {
        detail = ResidentDetail {
            migrant_type: None,
            permit_since: None,
            special: None,
            current_address: None,
            relative_name: None,
            relative_relation: None,
            relative_phone: None,
            wechat_openid: None,
            email: None,
            ..detail
        };
    }
    if reveal {
        detail.id_number = privacy.decrypt(Field::ResidentId, &row.id_cipher)?;
        let mut shown = vec!["id_number"];
        if let Some(cipher) = &row.phone_cipher {
            detail.phone = Some(privacy.decrypt(Field::Phone, cipher)?);
            shown.push("phone");
        }
        if let Some(cipher) = &row.relative_phone_cipher {
            detail.relative_phone = Some(Some(privacy.decrypt(Field::Phone, cipher)?));
            shown.push("relative_phone");
        }
        detail.revealed = true;
        let viewed = AuditEvent {
            action: "resident.view_pii",
            entity: "resident",
            entity_id: Some(row.id.to_string()),
            area_code: AreaCode::parse(&row.village_code).ok(),
            summary: json!({"fields": shown}),
        };
        return Ok((detail, Some(viewed)));
    }
    Ok((detail, None))
}

/// `null` in JSON clears a field; leaving the key out keeps it.
fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResident {
    pub name: String,
    pub id_number: String,
    pub village_code: String,
    pub phone: Option<String>,
    pub relative_name: Option<String>,
    pub relative_relation: Option<String>,
    pub relative_phone: Option<String>,
    pub migrant_type: Option<MigrantType>,
    pub permit_since: Option<NaiveDate>,
    pub special: Option<Special>,
    pub current_address: Option<String>,
    pub wechat_openid: Option<String>,
    pub email: Option<String>,
    pub language: Option<Language>,
}

/// Changes to a resident; a key left out is kept, `null` clears an optional field.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResidentChanges {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub relative_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub relative_relation: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub relative_phone: Option<Option<String>>,
    pub migrant_type: Option<MigrantType>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    pub permit_since: Option<Option<NaiveDate>>,
    /// mobility, hospitalized, remote_pastoral, detained, or null. Deceased and moved out
    /// have their own actions.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Special>)]
    pub special: Option<Option<Special>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub current_address: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub wechat_openid: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    pub language: Option<Language>,
    pub phone_opt_out: Option<bool>,
    pub relative_opt_out: Option<bool>,
    pub wechat_opt_out: Option<bool>,
    pub email_opt_out: Option<bool>,
}

fn phone(privacy: &Privacy, raw: Option<&str>, field: &str) -> AppResult<Option<ProtectedPhone>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => MobilePhone::parse(value)
            .map(|p| Some(ProtectedPhone::new(privacy, &p)))
            .ok_or_else(|| {
                AppError::validation("invalid_phone", format!("{field}应为 11 位手机号"))
            }),
    }
}

fn openid(raw: Option<&str>) -> AppResult<Option<String>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if valid_openid(v) => Ok(Some(v.to_owned())),
        Some(_) => Err(AppError::validation(
            "invalid_wechat_openid",
            "微信 openid 格式不正确",
        )),
    }
}

fn email(raw: Option<&str>) -> AppResult<Option<String>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if valid_email(v) => Ok(Some(v.to_lowercase())),
        Some(_) => Err(AppError::validation("invalid_email", "电子邮箱格式不正确")),
    }
}

/// A village in the caller's scope that is registered.
async fn scoped_village(
    db: &impl ConnectionTrait,
    scope: &Scope,
    raw: &str,
) -> AppResult<AreaCode> {
    let code = area::existing(db, raw).await?;
    if code.level() != AreaLevel::Village {
        return Err(AppError::validation(
            "not_a_village",
            format!("{code} 不是村（社区）级区划"),
        ));
    }
    if !scope.contains(&code) {
        return Err(AppError::out_of_scope());
    }
    Ok(code)
}

/// A new resident checked against the caller's scope, the numbers encrypted: made by
/// [`prepare_create`], written by [`create`].
pub struct Registration {
    new: NewResident,
    name: String,
    id: ResidentId,
    village: AreaCode,
    own_phone: Option<ProtectedPhone>,
    relative_phone: Option<ProtectedPhone>,
    id_index: Vec<u8>,
}

/// Checks a new resident: name, ID number, a registered village in the caller's scope,
/// phones (encrypted here, before the write).
pub async fn prepare_create(
    db: &impl ConnectionTrait,
    privacy: &Privacy,
    actor: &Actor,
    new: NewResident,
) -> AppResult<Registration> {
    let name = check_name(&new.name, "姓名", 50)?;
    let id = ResidentId::parse(&new.id_number, today())
        .map_err(|e| AppError::validation("invalid_id_number", e.to_string()))?;
    let village = scoped_village(db, &actor.scope, &new.village_code).await?;
    if new.special.is_some_and(Special::is_exempt) {
        return Err(AppError::validation(
            "invalid_special",
            "死亡、迁出请在登记后使用相应的操作",
        ));
    }
    let own_phone = phone(privacy, new.phone.as_deref(), "联系电话")?;
    let relative_phone = phone(privacy, new.relative_phone.as_deref(), "亲属电话")?;
    let id_index = privacy.blind_index(Field::ResidentId, id.expose());
    Ok(Registration {
        new,
        name,
        id,
        village,
        own_phone,
        relative_phone,
        id_index,
    })
}

/// Registers a resident checked by [`prepare_create`]. An ID already registered anywhere in
/// the county is a conflict that names the village.
pub async fn create(
    txn: &impl ConnectionTrait,
    privacy: &Privacy,
    actor: &Actor,
    registration: Registration,
) -> AppResult<residents::Model> {
    let Registration {
        new,
        name,
        id,
        village,
        own_phone,
        relative_phone,
        id_index,
    } = registration;
    if let Some(existing) = residents::Entity::find()
        .filter(residents::Column::IdIndex.eq(id_index.clone()))
        .one(txn)
        .await?
    {
        let place = areas::Entity::find_by_id(existing.village_code.as_str())
            .one(txn)
            .await?
            .map_or(existing.village_code.clone(), |a| {
                format!("{}（{}）", a.name, a.code)
            });
        return Err(AppError::Conflict(format!("该身份证号已在{place}登记")));
    }
    let now = Utc::now();
    let (phone_cipher, phone_index, phone_masked) = split(own_phone);
    let (rel_cipher, rel_index, rel_masked) = split(relative_phone);
    let model = residents::ActiveModel {
        id_index: Set(id_index),
        id_cipher: Set(privacy.encrypt(Field::ResidentId, id.expose())),
        id_masked: Set(id.masked()),
        name: Set(name),
        sex: Set(id.sex().code().to_owned()),
        birth_date: Set(id.birth_date()),
        village_code: Set(village.as_str().to_owned()),
        language: Set(new.language.unwrap_or(Language::Zh).code().to_owned()),
        migrant_type: Set(new
            .migrant_type
            .unwrap_or(MigrantType::Local)
            .code()
            .to_owned()),
        permit_since: Set(new.permit_since),
        special: Set(new.special.map(|s| s.code().to_owned())),
        current_address: Set(optional_name(
            new.current_address.as_deref(),
            "现居住地",
            200,
        )?),
        phone_cipher: Set(phone_cipher),
        phone_index: Set(phone_index),
        phone_masked: Set(phone_masked),
        phone_opt_out: Set(false),
        relative_name: Set(optional_name(new.relative_name.as_deref(), "亲属姓名", 50)?),
        relative_relation: Set(optional_name(
            new.relative_relation.as_deref(),
            "亲属关系",
            20,
        )?),
        relative_phone_cipher: Set(rel_cipher),
        relative_phone_index: Set(rel_index),
        relative_phone_masked: Set(rel_masked),
        relative_opt_out: Set(false),
        wechat_openid: Set(openid(new.wechat_openid.as_deref())?),
        wechat_opt_out: Set(false),
        email: Set(email(new.email.as_deref())?),
        email_opt_out: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "resident.create",
            entity: "resident",
            entity_id: Some(model.id.to_string()),
            area_code: Some(village),
            summary: json!({"name": model.name, "id_number": model.id_masked, "village_code": model.village_code}),
        },
    )
    .await?;
    Ok(model)
}

fn split(phone: Option<ProtectedPhone>) -> (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>) {
    match phone {
        Some(p) => (Some(p.cipher), Some(p.index), Some(p.masked)),
        None => (None, None, None),
    }
}

/// Applies `changes` to a resident in scope; every changed field is audited (phones masked).
/// Returns the resident and whether anything changed.
pub async fn update(
    txn: &impl ConnectionTrait,
    privacy: &Privacy,
    actor: &Actor,
    id: i32,
    changes: ResidentChanges,
) -> AppResult<(residents::Model, bool)> {
    let current = find(txn, &actor.scope, id).await?;
    let mut model: residents::ActiveModel = current.clone().into();
    let mut diff = serde_json::Map::new();
    let mut note = |field: &str, from: serde_json::Value, to: serde_json::Value| {
        if from != to {
            diff.insert(field.to_owned(), json!({"from": from, "to": to}));
        }
    };
    if let Some(name) = &changes.name {
        let name = check_name(name, "姓名", 50)?;
        note("name", json!(current.name), json!(name));
        model.name = Set(name);
    }
    for (field, value, is_relative) in [
        ("phone", &changes.phone, false),
        ("relative_phone", &changes.relative_phone, true),
    ] {
        let Some(value) = value else { continue };
        let protected = phone(
            privacy,
            value.as_deref(),
            if is_relative {
                "亲属电话"
            } else {
                "联系电话"
            },
        )?;
        let (cipher, index, masked) = split(protected);
        let old = if is_relative {
            &current.relative_phone_index
        } else {
            &current.phone_index
        };
        if *old != index {
            let old_masked = if is_relative {
                &current.relative_phone_masked
            } else {
                &current.phone_masked
            };
            note(field, json!(old_masked), json!(masked));
        }
        if is_relative {
            model.relative_phone_cipher = Set(cipher);
            model.relative_phone_index = Set(index);
            model.relative_phone_masked = Set(masked);
        } else {
            model.phone_cipher = Set(cipher);
            model.phone_index = Set(index);
            model.phone_masked = Set(masked);
        }
    }
    if let Some(value) = &changes.relative_name {
        let value = optional_name(value.as_deref(), "亲属姓名", 50)?;
        note("relative_name", json!(current.relative_name), json!(value));
        model.relative_name = Set(value);
    }
    if let Some(value) = &changes.relative_relation {
        let value = optional_name(value.as_deref(), "亲属关系", 20)?;
        note(
            "relative_relation",
            json!(current.relative_relation),
            json!(value),
        );
        model.relative_relation = Set(value);
    }
    if let Some(value) = changes.migrant_type {
        note(
            "migrant_type",
            json!(current.migrant_type),
            json!(value.code()),
        );
        model.migrant_type = Set(value.code().to_owned());
    }
    if let Some(value) = changes.permit_since {
        if value.is_some_and(|d| d > today()) {
            return Err(AppError::validation(
                "invalid_permit_since",
                "居住证起始日期不能晚于今天",
            ));
        }
        note("permit_since", json!(current.permit_since), json!(value));
        model.permit_since = Set(value);
    }
    if let Some(value) = changes.special {
        if value.is_some_and(Special::is_exempt) {
            return Err(AppError::validation(
                "invalid_special",
                "死亡、迁出请使用相应的操作登记",
            ));
        }
        note(
            "special",
            json!(current.special),
            json!(value.map(Special::code)),
        );
        model.special = Set(value.map(|s| s.code().to_owned()));
    }
    if let Some(value) = &changes.current_address {
        let value = optional_name(value.as_deref(), "现居住地", 200)?;
        note(
            "current_address",
            json!(current.current_address),
            json!(value),
        );
        model.current_address = Set(value);
    }
    if let Some(value) = &changes.wechat_openid {
        let value = openid(value.as_deref())?;
        note("wechat_openid", json!(current.wechat_openid), json!(value));
        model.wechat_openid = Set(value);
    }
    if let Some(value) = &changes.email {
        let value = email(value.as_deref())?;
        note("email", json!(current.email), json!(value));
        model.email = Set(value);
    }
    if let Some(value) = changes.language {
        note("language", json!(current.language), json!(value.code()));
        model.language = Set(value.code().to_owned());
    }
    for (field, value, old) in [
        (
            "phone_opt_out",
            changes.phone_opt_out,
            current.phone_opt_out,
        ),
        (
            "relative_opt_out",
            changes.relative_opt_out,
            current.relative_opt_out,
        ),
        (
            "wechat_opt_out",
            changes.wechat_opt_out,
            current.wechat_opt_out,
        ),
        (
            "email_opt_out",
            changes.email_opt_out,
            current.email_opt_out,
        ),
    ] {
        let Some(value) = value else { continue };
        note(field, json!(old), json!(value));
        match field {
            "phone_opt_out" => model.phone_opt_out = Set(value),
            "relative_opt_out" => model.relative_opt_out = Set(value),
            "wechat_opt_out" => model.wechat_opt_out = Set(value),
            _ => model.email_opt_out = Set(value),
        }
    }
    if diff.is_empty() {
        return Ok((current, false));
    }
    model.updated_at = Set(Utc::now());
    let updated = model.update(txn).await?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: "resident.update",
            entity: "resident",
            entity_id: Some(updated.id.to_string()),
            area_code: AreaCode::parse(&updated.village_code).ok(),
            summary: serde_json::Value::Object(diff),
        },
    )
    .await?;
    Ok((updated, true))
}

/// Why a status changes: a reason, and optionally when it happened.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub reason: String,
    /// When it happened (YYYY-MM-DD), if known.
    pub date: Option<NaiveDate>,
}

/// A status change checked by [`prepare_mark`]: the reason, and the date if known.
pub struct Marking {
    reason: String,
    date: Option<NaiveDate>,
}

/// Checks why and when a status changes: a reason, and no date after today.
pub fn prepare_mark(change: StatusChange) -> AppResult<Marking> {
    let reason = check_name(&change.reason, "原因", 200)?;
    if change.date.is_some_and(|d| d > today()) {
        return Err(AppError::validation("invalid_date", "日期不能晚于今天"));
    }
    Ok(Marking {
        reason,
        date: change.date,
    })
}

/// Marks a resident deceased or moved out of the county; they leave every denominator.
pub async fn mark(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    special: Special,
    marking: Marking,
) -> AppResult<residents::Model> {
    debug_assert!(special.is_exempt());
    let Marking { reason, date } = marking;
    let current = find(txn, &actor.scope, id).await?;
    if current.special.as_deref() == Some(special.code()) {
        return Err(AppError::Conflict(format!(
            "该居民已登记为{}",
            special.label()
        )));
    }
    let mut model: residents::ActiveModel = current.clone().into();
    model.special = Set(Some(special.code().to_owned()));
    model.updated_at = Set(Utc::now());
    let updated = model.update(txn).await?;
    audit::record(
        txn,
        actor,
        AuditEvent {
            action: match special {
                Special::Deceased => "resident.mark_deceased",
                _ => "resident.mark_moved_out",
            },
            entity: "resident",
            entity_id: Some(id.to_string()),
            area_code: AreaCode::parse(&current.village_code).ok(),
            summary: json!({"from": current.special, "to": special.code(), "reason": reason, "date": date}),
        },
    )
    .await?;
    Ok(updated)
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HouseholdMove {
    /// The new household village (both villages must be in the caller's scope).
    pub village_code: String,
    pub reason: String,
}

/// A household move checked by [`prepare_move`]: the reason and a registered village in the
/// caller's scope.
pub struct Move {
    reason: String,
    target: AreaCode,
}

/// Checks a household move: a reason, and a registered village in the caller's scope.
pub async fn prepare_move(
    db: &impl ConnectionTrait,
    actor: &Actor,
    request: HouseholdMove,
) -> AppResult<Move> {
    let reason = check_name(&request.reason, "原因", 200)?;
    let target = scoped_village(db, &actor.scope, &request.village_code).await?;
    Ok(Move { reason, target })
}

/// Moves a resident's household registration to another village of the county.
pub async fn move_household(
    txn: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
    request: Move,
) -> AppResult<residents::Model> {
    let Move { reason, target } = request;
    let current = find(txn, &actor.scope, id).await?;
    if current.village_code == target.as_str() {
        return Err(AppError::validation(
            "same_village",
            "该居民已在此村（社区）登记",
        ));
    }
    let mut model: residents::ActiveModel = current.clone().into();
    model.village_code = Set(target.as_str().to_owned());
    model.updated_at = Set(Utc::now());
    let updated = model.update(txn).await?;
    let summary = json!({"from": current.village_code, "to": target.as_str(), "reason": reason});
    for area in [AreaCode::parse(&current.village_code).ok(), Some(target)] {
        audit::record(
            txn,
            actor,
            AuditEvent {
                action: "resident.move_household",
                entity: "resident",
                entity_id: Some(id.to_string()),
                area_code: area,
                summary: summary.clone(),
            },
        )
        .await?;
    }
    Ok(updated)
}

/// Residents of one village or community, for the migrant book and other exports.
pub(crate) fn in_area(scope: &Scope, area: Option<&AreaCode>) -> AppResult<Condition> {
    let mut condition = scope.filter(residents::Column::VillageCode);
    if let Some(area) = area {
        if !scope.contains(area) {
            return Err(AppError::out_of_scope());
        }
        condition =
            condition.add(Scope::Within(area.clone()).filter(residents::Column::VillageCode));
    }
    Ok(condition)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn a_search_of_up_to_four_digits_is_for_the_end_of_an_id_number() {
        assert_eq!(id_tail("1234").as_deref(), Some("1234"));
        assert_eq!(id_tail(" 23x ").as_deref(), Some("23X"));
        assert_eq!(id_tail("7").as_deref(), Some("7"));
        assert_eq!(id_tail("12345"), None);
        assert_eq!(id_tail("x123"), None);
        assert_eq!(id_tail("张伟"), None);
        assert_eq!(id_tail(""), None);
    }

    #[test]
    fn ages_and_cohorts_on_a_reference_date() {
        let on = d(2026, 1, 1);
        assert_eq!(age_on(d(2019, 1, 1), on), 7);
        assert_eq!(age_on(d(2019, 1, 2), on), 6);
        assert_eq!(Cohort::of_age(6), Cohort::Children);
        assert_eq!(Cohort::of_age(7), Cohort::Students);
        assert_eq!(Cohort::of_age(65), Cohort::Elderly);
        assert_eq!(Cohort::of_age(80), Cohort::Oldest);
        // 7-14 on 2026-01-01: born after 2011-01-01 and on or before 2019-01-01.
        assert_eq!(
            Cohort::Students.birth_range(on),
            (Some(d(2011, 1, 1)), d(2019, 1, 1))
        );
        assert_eq!(Cohort::Oldest.birth_range(on), (None, d(1946, 1, 1)));
    }

    #[test]
    fn a_leap_day_birthday_counts_from_the_28th() {
        let born = d(2000, 2, 29);
        assert_eq!(age_on(born, d(2018, 2, 28)), 17);
        assert_eq!(age_on(born, d(2018, 3, 1)), 18);
        let (after, up_to) = Cohort::Adults.birth_range(d(2015, 2, 28));
        assert_eq!(up_to, d(2000, 2, 28));
        assert!(born > up_to, "14 on 2015-02-28, not yet 15");
        assert!(after.unwrap() < born);
    }
}
