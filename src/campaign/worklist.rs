//! Cadres' worklists, read from the progress rows: residents not yet appointed, no-shows to
//! follow up, migrants to contact, home visits due, hospital records to collect, herders to
//! examine in their season. Scoped, sortable, paginated.

use chrono::NaiveDate;
use entities::{enrolments, residents};
use sea_orm::sea_query::{CaseStatement, Expr, Func};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Select,
};
use serde::{Deserialize, Serialize};

use crate::auth::{Actor, Scope};
use crate::error::{AppError, AppResult};
use crate::registry::{MigrantType, Special, age_on};

use super::{Campaign, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Worklist {
    /// Residents to book (clinic route, living at home) with no appointment yet.
    NotAppointed,
    /// Residents whose appointment passed without them and who are not booked again.
    NoShows,
    /// Migrants (any non-local type) not yet examined, refused or booked.
    Migrants,
    /// Mobility-impaired residents to examine at home.
    HomeVisits,
    /// Residents in hospital whose records are to be collected instead of an exam visit.
    HospitalRecords,
    /// Residents on remote pastures, examined in a seasonal window when they come down.
    Seasonal,
}

impl Worklist {
    pub const ALL: [Worklist; 6] = [
        Worklist::NotAppointed,
        Worklist::NoShows,
        Worklist::Migrants,
        Worklist::HomeVisits,
        Worklist::HospitalRecords,
        Worklist::Seasonal,
    ];

    /// The name in URLs and JSON.
    pub fn code(self) -> &'static str {
        match self {
            Worklist::NotAppointed => "not_appointed",
            Worklist::NoShows => "no_shows",
            Worklist::Migrants => "migrants",
            Worklist::HomeVisits => "home_visits",
            Worklist::HospitalRecords => "hospital_records",
            Worklist::Seasonal => "seasonal",
        }
    }

    pub fn parse(raw: &str) -> AppResult<Self> {
        serde_json::from_value(serde_json::json!(raw)).map_err(|_| {
            AppError::NotFound(format!(
                "没有名为 {raw} 的工作清单：可选 not_appointed、no_shows、migrants、home_visits、hospital_records、seasonal"
            ))
        })
    }

    fn route_due(route: &str) -> Condition {
        Condition::all()
            .add(enrolments::Column::Route.eq(route))
            .add(enrolments::Column::Stage.is_not_in(["examined", "refused", "exempt"]))
    }

    fn condition(self) -> Condition {
        let open = enrolments::Column::Stage.is_in(["target", "notified", "reached"]);
        match self {
            Worklist::NotAppointed => Condition::all()
                .add(open)
                .add(enrolments::Column::Route.eq("clinic"))
                .add(enrolments::Column::MigrantType.eq("local")),
            Worklist::NoShows => Condition::all().add(open).add(Expr::cust(
                "EXISTS (SELECT 1 FROM appointments a WHERE a.campaign_id = enrolments.campaign_id \
                 AND a.resident_id = enrolments.resident_id AND a.status = 'no_show')",
            )),
            Worklist::Migrants => Condition::all()
                .add(open)
                .add(enrolments::Column::MigrantType.ne("local")),
            Worklist::HomeVisits => Self::route_due("home_visit"),
            Worklist::HospitalRecords => Self::route_due("records"),
            Worklist::Seasonal => Self::route_due("seasonal"),
        }
    }
}

/// Far beyond any village's list; keeps the offset arithmetic in range.
const MAX_PAGE: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    Name,
    /// Oldest first.
    Age,
    Village,
    Stage,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorklistParams {
    /// Only residents under this area (village or township).
    pub area: Option<String>,
    /// `name`, `age` (oldest first), `village` or `stage`; default `village`.
    pub sort: Option<String>,
    /// Page number from 1.
    pub page: Option<u64>,
    /// Page size, 1–500 (default 100).
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkItem {
    pub resident_id: i32,
    pub name: String,
    /// Masked ID number.
    pub id_number: String,
    pub sex: String,
    /// Age on the campaign's reference date.
    pub age: u32,
    pub cohort: String,
    pub village_code: String,
    pub stage: Stage,
    pub migrant_type: String,
    pub migrant_type_label: &'static str,
    pub special: Option<String>,
    pub route: String,
    pub current_address: Option<String>,
    pub phone: Option<String>,
    pub relative_name: Option<String>,
    pub relative_phone: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorklistPage {
    pub worklist: Worklist,
    pub total: u64,
    pub page: u64,
    pub pages: u64,
    pub items: Vec<WorkItem>,
}

/// A campaign's progress rows in `scope`. An open campaign's rows keep their residents'
/// village (`enrol::refresh` runs in each registry change's own transaction), so they are
/// read by it through `idx_enrolments_campaign_village`; a closed campaign's rows keep the
/// village of its time, so its lists go by where the residents live now (through the join).
/// Returns the rows and whether they are joined to their residents already.
fn scoped(campaign: &Campaign, scope: &Scope) -> (Select<enrolments::Entity>, bool) {
    let rows = enrolments::Entity::find().filter(enrolments::Column::CampaignId.eq(campaign.id()));
    if campaign.is_open() {
        (
            rows.filter(scope.filter_char(enrolments::Column::VillageCode)),
            false,
        )
    } else {
        let rows = rows
            .filter(scope.filter_char(residents::Column::VillageCode))
            .inner_join(residents::Entity);
        (rows, true)
    }
}

/// How many residents of the caller's scope are on each worklist (the totals [`list`] gives),
/// counted in one pass over the scope's progress rows instead of one query per list.
pub async fn counts(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
) -> AppResult<Vec<(Worklist, u64)>> {
    let campaign = super::get(db, campaign_id).await?;
    let (rows, _) = scoped(&campaign, &actor.scope);
    let mut query = rows.select_only();
    for list in Worklist::ALL {
        // COUNT of a CASE without ELSE: the rows on the list (0, never NULL, when none are).
        let on_list = CaseStatement::new().case(list.condition(), Expr::val(1));
        query = query.expr_as(Func::count(on_list), list.code());
    }
    let counts = query
        .into_model::<Counts>()
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the worklist counts returned no row"))?;
    Ok(Worklist::ALL
        .into_iter()
        .map(|list| (list, u64::try_from(counts.of(list)).unwrap_or(0)))
        .collect())
}

/// The row [`counts`] reads: one column per worklist, named by its [`Worklist::code`].
#[derive(FromQueryResult)]
struct Counts {
    not_appointed: i64,
    no_shows: i64,
    migrants: i64,
    home_visits: i64,
    hospital_records: i64,
    seasonal: i64,
}

impl Counts {
    fn of(&self, list: Worklist) -> i64 {
        match list {
            Worklist::NotAppointed => self.not_appointed,
            Worklist::NoShows => self.no_shows,
            Worklist::Migrants => self.migrants,
            Worklist::HomeVisits => self.home_visits,
            Worklist::HospitalRecords => self.hospital_records,
            Worklist::Seasonal => self.seasonal,
        }
    }
}

/// One page of a worklist for the caller's scope.
pub async fn list(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    worklist: Worklist,
    params: WorklistParams,
) -> AppResult<WorklistPage> {
    let campaign = super::get(db, campaign_id).await?;
    let size = crate::paging::size(params.limit)?;
    let page = params.page.unwrap_or(1).max(1);
    if page > MAX_PAGE {
        return Err(AppError::validation(
            "invalid_page",
            format!("page 不能超过 {MAX_PAGE}"),
        ));
    }
    let sort = match params.sort.as_deref() {
        None => Sort::Village,
        Some(raw) => serde_json::from_value(serde_json::json!(raw)).map_err(|_| {
            AppError::validation("invalid_sort", "sort 可选 name、age、village、stage")
        })?,
    };
    // An area asked for lies within the caller's scope: it is the narrower of the two.
    let scope = match params.area.as_deref() {
        None => actor.scope.clone(),
        Some(area) => {
            let area = crate::validate::parse_area(area)?;
            if !actor.scope.contains(&area) {
                return Err(AppError::out_of_scope());
            }
            Scope::Within(area)
        }
    };
    let (query, joined) = scoped(&campaign, &scope);
    let query = query.filter(worklist.condition());
    let total = query.clone().count(db).await?;
    let query = if joined {
        query
    } else {
        query.inner_join(residents::Entity)
    };
    let mut query = query.select_also(residents::Entity);
    query = match sort {
        Sort::Name => query.order_by_asc(residents::Column::Name),
        Sort::Age => query.order_by_asc(residents::Column::BirthDate),
        Sort::Village => query.order_by_asc(enrolments::Column::VillageCode),
        Sort::Stage => query.order_by_asc(enrolments::Column::Stage),
    };
    let rows = query
        .order_by_asc(enrolments::Column::ResidentId)
        .offset((page - 1) * size)
        .limit(size)
        .all(db)
        .await?;
    let on: NaiveDate = campaign.model.reference_date;
    let items = rows
        .into_iter()
        .filter_map(|(e, r)| r.map(|r| (e, r)))
        .map(|(e, r)| WorkItem {
            resident_id: r.id,
            name: r.name,
            id_number: r.id_masked,
            sex: r.sex,
            age: age_on(r.birth_date, on),
            cohort: e.cohort,
            village_code: e.village_code,
            stage: Stage::parse(&e.stage).unwrap_or(Stage::Target),
            migrant_type_label: MigrantType::parse(&e.migrant_type).map_or("", MigrantType::label),
            migrant_type: e.migrant_type,
            special: e.special.filter(|s| Special::parse(s).is_some()),
            route: e.route,
            current_address: r.current_address,
            phone: r.phone_masked,
            relative_name: r.relative_name,
            relative_phone: r.relative_phone_masked,
        })
        .collect();
    Ok(WorklistPage {
        worklist,
        total,
        page,
        pages: total.div_ceil(size),
        items,
    })
}
