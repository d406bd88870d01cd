//! Institutions for the office: the villages each serves and its day calendar with capacity.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::NaiveDate;
use entities::areas::AreaLevel;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::campaigns::{Fields, FormError, form_error};
use super::pages::{PageError, ser};
use super::render::{page, templates};
use super::{Form, Session};
use crate::area::{self, AreaNode};
use crate::auth::Scope;
use crate::error::AppError;
use crate::flows;
use crate::http::guard::OfficeOnly;
use crate::institution::{
    self, CalendarImport, DayChange, InstitutionChanges, InstitutionView, Kind, NewInstitution,
};
use crate::state::AppState;

pub(super) const TEMPLATES: &[(&str, &str)] = templates![
    "app/institutions.html",
    "app/institution.html",
    "app/institution_form.html",
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/institutions", get(list))
        .route("/app/institutions/new", get(new).post(create))
        .route("/app/institutions/{id}", get(calendar))
        .route("/app/institutions/{id}/edit", get(edit).post(update))
        .route("/app/institutions/{id}/days/{day}", post(set_day))
        .route("/app/institutions/{id}/import", post(import))
}

/// Days the calendar page shows at once.
const DAYS_SHOWN: u64 = 31;

/// One area of the caller's scope as a select or checkbox offers it.
#[derive(Serialize)]
pub(super) struct AreaOption {
    pub code: String,
    pub name: String,
    /// `county`, `township` or `village`.
    pub level: &'static str,
    pub depth: usize,
}

fn level_code(level: AreaLevel) -> &'static str {
    match level {
        AreaLevel::County => "county",
        AreaLevel::Township => "township",
        AreaLevel::Village => "village",
    }
}

/// The areas of `scope`, the tree read depth first (a township followed by its villages).
pub(super) async fn area_options(
    state: &AppState,
    scope: &Scope,
) -> Result<Vec<AreaOption>, AppError> {
    fn walk(nodes: &[AreaNode], depth: usize, out: &mut Vec<AreaOption>) {
        for node in nodes {
            out.push(AreaOption {
                code: node.code.clone(),
                name: node.name.clone(),
                level: level_code(node.level),
                depth,
            });
            walk(&node.children, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(&area::tree(&state.db, scope).await?, 0, &mut out);
    Ok(out)
}

/// Area names by code.
pub(super) fn area_names(options: &[AreaOption]) -> HashMap<&str, &str> {
    options
        .iter()
        .map(|a| (a.code.as_str(), a.name.as_str()))
        .collect()
}

const KINDS: [Kind; 3] = [Kind::TownshipCentre, Kind::CountyHospital, Kind::Other];

fn kind_code(kind: Kind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

const WEEKDAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];

fn weekdays_text(days: &[u32]) -> String {
    days.iter()
        .filter_map(|d| WEEKDAYS.get((*d as usize).wrapping_sub(1)))
        .map(|d| format!("周{d}"))
        .collect::<Vec<_>>()
        .join("、")
}

/// The form field an institution error code is about.
fn institution_field(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_institution_code" | "conflict" => "code",
        "invalid_value" => "name",
        "invalid_kind" => "kind",
        "invalid_area_code" | "out_of_scope" => "area_code",
        "invalid_capacity" => "daily_capacity",
        "invalid_weekday" => "closed_weekdays",
        "invalid_serves" | "unknown_area" => "serves",
        _ => return None,
    })
}

/// An institution form as typed.
#[derive(Serialize, Default)]
struct InstitutionForm {
    code: String,
    name: String,
    kind: String,
    area_code: String,
    daily_capacity: String,
    closed_weekdays: Vec<String>,
    serves: Vec<String>,
    address: String,
    active: bool,
}

impl InstitutionForm {
    fn of(view: &InstitutionView) -> Self {
        Self {
            code: view.code.clone(),
            name: view.name.clone(),
            kind: kind_code(view.kind),
            area_code: view.area_code.clone(),
            daily_capacity: view.daily_capacity.to_string(),
            closed_weekdays: view.closed_weekdays.iter().map(u32::to_string).collect(),
            serves: view.serves.clone(),
            address: view.address.clone().unwrap_or_default(),
            active: view.active,
        }
    }

    fn posted(fields: &Fields) -> Self {
        Self {
            code: fields.get("code"),
            name: fields.get("name"),
            kind: fields.get("kind"),
            area_code: fields.get("area_code"),
            daily_capacity: fields.get("daily_capacity"),
            closed_weekdays: fields.all("closed"),
            serves: fields.all("serves"),
            address: fields.get("address"),
            active: fields.ticked("active"),
        }
    }

    fn capacity(&self) -> Result<i32, AppError> {
        self.daily_capacity
            .parse()
            .map_err(|_| AppError::validation("invalid_capacity", "每日容量应为整数（人）"))
    }

    fn closed_weekdays(&self) -> Result<Vec<u32>, AppError> {
        self.closed_weekdays
            .iter()
            .map(|d| {
                d.parse()
                    .map_err(|_| AppError::validation("invalid_weekday", "休息日应为周一到周日"))
            })
            .collect()
    }

    fn new_institution(&self) -> Result<NewInstitution, AppError> {
        let kind = serde_json::from_value(serde_json::json!(self.kind))
            .map_err(|_| AppError::validation("invalid_kind", "请选择机构类型"))?;
        Ok(NewInstitution {
            code: self.code.clone(),
            name: self.name.clone(),
            kind,
            area_code: self.area_code.clone(),
            daily_capacity: self.capacity()?,
            closed_weekdays: self.closed_weekdays()?,
            serves: self.serves.clone(),
            address: Some(self.address.clone()).filter(|a| !a.is_empty()),
        })
    }

    fn changes(&self) -> Result<InstitutionChanges, AppError> {
        Ok(InstitutionChanges {
            name: Some(self.name.clone()),
            address: Some(self.address.clone()),
            daily_capacity: Some(self.capacity()?),
            closed_weekdays: Some(self.closed_weekdays()?),
            serves: Some(self.serves.clone()),
            active: Some(self.active),
        })
    }
}

#[derive(Serialize)]
struct Row {
    id: i32,
    code: String,
    name: String,
    kind: &'static str,
    area: String,
    daily_capacity: i32,
    closed_weekdays: String,
    serves: String,
    address: Option<String>,
    active: bool,
}

/// `GET /app/institutions`: every institution with its kind, place, daily capacity and the
/// areas it serves.
pub async fn list(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
) -> Result<Response, PageError> {
    let institutions = institution::list(&state.db).await?;
    let areas = area_options(&state, &Scope::All).await?;
    let names = area_names(&areas);
    let name_of = |code: &str| names.get(code).map_or(code.to_owned(), |n| (*n).to_owned());
    let rows: Vec<Row> = institutions
        .into_iter()
        .map(|i| Row {
            id: i.id,
            kind: i.kind_label,
            area: name_of(&i.area_code),
            daily_capacity: i.daily_capacity,
            closed_weekdays: weekdays_text(&i.closed_weekdays),
            serves: i
                .serves
                .iter()
                .map(|s| name_of(s))
                .collect::<Vec<_>>()
                .join("、"),
            address: i.address,
            active: i.active,
            code: i.code,
            name: i.name,
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        "app/institutions.html",
        context! { section => "institutions", rows => ser(&rows), ..session.frame() },
    ))
}

/// The institution form page: a new institution (`current` absent) or one to change.
async fn form_page(
    state: &AppState,
    session: &Session<OfficeOnly>,
    status: StatusCode,
    current: Option<&InstitutionView>,
    form: &InstitutionForm,
    error: Option<FormError>,
) -> Result<Response, PageError> {
    let areas = area_options(state, &session.actor.scope).await?;
    let kinds: Vec<_> = KINDS
        .into_iter()
        .map(|k| context! { code => kind_code(k), label => k.label() })
        .collect();
    let weekdays: Vec<_> = WEEKDAYS
        .iter()
        .enumerate()
        .map(|(i, d)| context! { code => (i + 1).to_string(), label => format!("周{d}") })
        .collect();
    let current = current.map(|i| {
        let names = area_names(&areas);
        context! {
            id => i.id,
            kind => i.kind_label,
            area => names.get(i.area_code.as_str()).copied().unwrap_or(i.area_code.as_str()),
        }
    });
    Ok(page(
        status,
        "app/institution_form.html",
        context! {
            section => "institutions",
            institution => current,
            form => ser(form),
            error => error.map(ser),
            kinds,
            weekdays,
            areas => ser(&areas),
            ..session.frame()
        },
    ))
}

/// `GET /app/institutions/new`: the form for a new institution.
pub async fn new(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
) -> Result<Response, PageError> {
    let form = InstitutionForm {
        kind: kind_code(Kind::TownshipCentre),
        active: true,
        ..Default::default()
    };
    form_page(&state, &session, StatusCode::OK, None, &form, None).await
}

/// `POST /app/institutions/new`: registers the institution as the API does, then shows its
/// calendar; a refused value shows the form again with the message and what was entered.
pub async fn create(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let form = InstitutionForm::posted(&Fields::new(pairs));
    let created = match form.new_institution() {
        Ok(new) => flows::institutions::create(&state.db, &session.actor, new).await,
        Err(error) => Err(error),
    };
    match created {
        Ok(created) => {
            Ok(Redirect::to(&format!("/app/institutions/{}?saved=1", created.id)).into_response())
        }
        Err(error) => {
            let (status, error) = form_error(error, institution_field)?;
            form_page(&state, &session, status, None, &form, Some(error)).await
        }
    }
}

/// `GET /app/institutions/{id}/edit`: the form to change an institution.
pub async fn edit(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
) -> Result<Response, PageError> {
    let current = institution::get(&state.db, id).await?;
    let form = InstitutionForm::of(&current);
    form_page(
        &state,
        &session,
        StatusCode::OK,
        Some(&current),
        &form,
        None,
    )
    .await
}

/// `POST /app/institutions/{id}/edit`: changes the institution as the API does.
pub async fn update(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let current = institution::get(&state.db, id).await?;
    let mut form = InstitutionForm::posted(&Fields::new(pairs));
    // What the form shows but does not change.
    form.code = current.code.clone();
    form.kind = kind_code(current.kind);
    form.area_code = current.area_code.clone();
    let updated = match form.changes() {
        Ok(changes) => flows::institutions::update(&state.db, &session.actor, id, changes).await,
        Err(error) => Err(error),
    };
    match updated {
        Ok(_) => Ok(Redirect::to(&format!("/app/institutions/{id}?saved=1")).into_response()),
        Err(error) => {
            let (status, error) = form_error(error, institution_field)?;
            form_page(&state, &session, status, Some(&current), &form, Some(error)).await
        }
    }
}

#[derive(Deserialize)]
pub struct CalendarQuery {
    from: Option<String>,
    saved: Option<String>,
    day: Option<String>,
}

fn first_day(raw: Option<&str>) -> NaiveDate {
    raw.and_then(crate::validate::parse_date)
        .filter(|d| institution::check_date(*d).is_ok())
        .unwrap_or_else(crate::time::today)
}

/// A day's change as typed, kept when it is refused.
#[derive(Deserialize, Serialize, Default)]
pub struct DayForm {
    #[serde(default)]
    capacity: String,
    #[serde(default)]
    closed: Option<String>,
    #[serde(default)]
    note: String,
    #[serde(default)]
    from: String,
}

/// What else the calendar page shows: a day's change refused, or an upload's outcome.
#[derive(Default)]
struct CalendarExtra {
    status: Option<StatusCode>,
    notice: Option<String>,
    /// The day refused, its input and why.
    refused: Option<(NaiveDate, DayForm, FormError)>,
    imported: Option<CalendarImport>,
    import_error: Option<String>,
}

async fn calendar_page(
    state: &AppState,
    session: &Session<OfficeOnly>,
    id: i32,
    from: NaiveDate,
    extra: CalendarExtra,
) -> Result<Response, PageError> {
    let view = institution::get(&state.db, id).await?;
    let model = institution::find(&state.db, id).await?;
    let to = from + chrono::Days::new(DAYS_SHOWN - 1);
    let days = institution::calendar(&state.db, &model, from, to).await?;
    let today = crate::time::today();
    let (refused_day, refused_form, refused_error) = match extra.refused {
        Some((day, form, error)) => (Some(day), Some(form), Some(error)),
        None => (None, None, None),
    };
    let days: Vec<_> = days
        .iter()
        .map(|d| {
            let refused = refused_day == Some(d.day);
            context! {
                day => d.day.to_string(),
                label => crate::time::month_day(d.day),
                week => crate::time::weekday(d.day),
                past => d.day < today,
                capacity => if refused { refused_form.as_ref().map(|f| f.capacity.clone()) } else { Some(d.capacity.to_string()) },
                closed => if refused { refused_form.as_ref().is_some_and(|f| f.closed.is_some()) } else { d.closed },
                note => if refused { refused_form.as_ref().map(|f| f.note.clone()) } else { d.note.clone() },
                booked => d.booked,
                remaining => d.remaining,
                was_closed => d.closed,
                error => if refused { refused_error.as_ref().map(|e| e.message.clone()) } else { None },
            }
        })
        .collect();
    let areas = area_options(state, &Scope::All).await?;
    let names = area_names(&areas);
    let serves: Vec<_> = view
        .serves
        .iter()
        .map(|s| names.get(s.as_str()).map_or(s.clone(), |n| (*n).to_owned()))
        .collect();
    let imported = extra.imported.map(|result| {
        let rejected: Vec<_> = result
            .rejected_rows
            .iter()
            .map(|r| context! { line => r.line, values => r.values.join(","), reason => r.reason.clone() })
            .collect();
        context! {
            updated => result.summary.updated,
            unchanged => result.summary.unchanged,
            rejected_count => result.summary.rejected,
            rejected,
            unknown_columns => result.unknown_columns.join("、"),
        }
    });
    let step = chrono::Days::new(DAYS_SHOWN);
    Ok(page(
        extra.status.unwrap_or(StatusCode::OK),
        "app/institution.html",
        context! {
            section => "institutions",
            institution => ser(&view),
            area => names.get(view.area_code.as_str()).copied(),
            serves => serves.join("、"),
            closed_weekdays => weekdays_text(&view.closed_weekdays),
            days,
            from => from.to_string(),
            to => to.to_string(),
            prev => from.checked_sub_days(step).map(|d| d.to_string()),
            next => (to + chrono::Days::new(1)).to_string(),
            today => today.to_string(),
            notice => extra.notice,
            error => refused_error.map(ser),
            imported,
            import_error => extra.import_error,
            ..session.frame()
        },
    ))
}

/// `GET /app/institutions/{id}[?from=YYYY-MM-DD]`: the institution's day calendar from
/// `from` (today by default): each day's capacity, places booked and left, closed days,
/// each changed in place; and the calendar upload.
pub async fn calendar(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Query(query): Query<CalendarQuery>,
) -> Result<Response, PageError> {
    let from = first_day(query.from.as_deref());
    let notice = match (query.saved, query.day) {
        (_, Some(day)) => crate::validate::parse_date(&day).map(|d| format!("{d} 已保存。")),
        (Some(_), None) => Some("已保存。".to_owned()),
        (None, None) => None,
    };
    let extra = CalendarExtra {
        notice,
        ..Default::default()
    };
    calendar_page(&state, &session, id, from, extra).await
}

/// `POST /app/institutions/{id}/days/{day}`: changes one day's capacity, closes or opens it,
/// as the API does; a change refused (below the places booked) is shown at that day.
pub async fn set_day(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path((id, day)): Path<(i32, NaiveDate)>,
    Form(form): Form<DayForm>,
) -> Result<Response, PageError> {
    let from = first_day(Some(&form.from));
    let capacity = match form.capacity.trim() {
        "" => Ok(None),
        raw => raw
            .parse::<i32>()
            .map(Some)
            .map_err(|_| AppError::validation("invalid_capacity", "容量应为整数（人）")),
    };
    let changed = match capacity {
        Ok(capacity) => {
            let change = DayChange {
                capacity,
                closed: Some(form.closed.is_some()),
                note: Some(form.note.trim().to_owned()).filter(|n| !n.is_empty()),
            };
            flows::institutions::set_day(&state.db, &session.actor, id, day, change).await
        }
        Err(error) => Err(error),
    };
    match changed {
        Ok(_) => Ok(Redirect::to(&format!(
            "/app/institutions/{id}?from={from}&day={day}#day-{day}"
        ))
        .into_response()),
        Err(error) => {
            let (status, error) = form_error(error, |_| None)?;
            let extra = CalendarExtra {
                status: Some(status),
                refused: Some((day, form, error)),
                ..Default::default()
            };
            calendar_page(&state, &session, id, from, extra).await
        }
    }
}

#[derive(Deserialize)]
pub struct ImportForm {
    /// The chosen file's bytes, base64 (the page's script reads the file).
    #[serde(default)]
    csv_base64: String,
    /// Or the file's text pasted.
    #[serde(default)]
    csv_text: String,
    #[serde(default)]
    from: String,
}

fn upload_bytes(form: &ImportForm) -> Result<Vec<u8>, AppError> {
    let encoded = form.csv_base64.trim();
    if !encoded.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| AppError::validation("unreadable_file", "文件读取失败，请重新选择"));
    }
    if form.csv_text.trim().is_empty() {
        return Err(AppError::validation(
            "missing_file",
            "请选择日历 CSV 文件，或粘贴其内容",
        ));
    }
    Ok(form.csv_text.as_bytes().to_vec())
}

/// `POST /app/institutions/{id}/import`: applies a calendar CSV (机构代码, 日期, 容量, 休息,
/// 备注) as the API's upload does and shows what it did: days changed, rows refused with
/// their reasons; a file that cannot be used is refused whole, nothing written.
pub async fn import(
    State(state): State<AppState>,
    session: Session<OfficeOnly>,
    Path(id): Path<i32>,
    Form(form): Form<ImportForm>,
) -> Result<Response, PageError> {
    let from = first_day(Some(&form.from));
    let result = match upload_bytes(&form) {
        Ok(bytes) => flows::institutions::import_calendar(&state.db, &session.actor, &bytes).await,
        Err(error) => Err(error),
    };
    let extra = match result {
        Ok(imported) => CalendarExtra {
            imported: Some(imported),
            ..Default::default()
        },
        Err(error) => {
            let (status, error) = form_error(error, |_| None)?;
            CalendarExtra {
                status: Some(status),
                import_error: Some(error.message),
                ..Default::default()
            }
        }
    };
    calendar_page(&state, &session, id, from, extra).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_form_becomes_the_apis_body() {
        let pairs = [
            ("code", "xy-wsy"),
            ("name", "新源镇卫生院"),
            ("kind", "township_centre"),
            ("area_code", "654025100000"),
            ("daily_capacity", "40"),
            ("closed", "6"),
            ("closed", "7"),
            ("serves", "654025100201"),
            ("serves", "654025100202"),
            ("address", ""),
        ];
        let fields = Fields::new(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let new = InstitutionForm::posted(&fields).new_institution().unwrap();
        assert_eq!(new.kind, Kind::TownshipCentre);
        assert_eq!(new.daily_capacity, 40);
        assert_eq!(new.closed_weekdays, vec![6, 7]);
        assert_eq!(new.serves.len(), 2);
        assert_eq!(new.address, None);
        let mut form = InstitutionForm::posted(&fields);
        form.daily_capacity = "forty".into();
        assert_eq!(
            institution_field(form.new_institution().unwrap_err().code()),
            Some("daily_capacity")
        );
    }

    #[test]
    fn closed_weekdays_read_in_chinese() {
        assert_eq!(weekdays_text(&[6, 7]), "周六、周日");
        assert_eq!(weekdays_text(&[0, 8]), "");
    }

    #[test]
    fn an_upload_is_the_file_or_the_pasted_text() {
        let form = |b64: &str, text: &str| ImportForm {
            csv_base64: b64.into(),
            csv_text: text.into(),
            from: String::new(),
        };
        assert_eq!(upload_bytes(&form("YSxi", "")).unwrap(), b"a,b");
        assert_eq!(upload_bytes(&form("", "x,y")).unwrap(), b"x,y");
        assert!(upload_bytes(&form("!!", "")).is_err());
        assert!(upload_bytes(&form("", " ")).is_err());
    }
}
