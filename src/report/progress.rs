//! One resident's progress in a campaign, as the cadre's and the clinic's screens show it:
//! the progress row, the appointments and the exam, read together.

use chrono::Utc;
use entities::enrolments;
use entities::users::Role;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::Serialize;

use crate::appointment::{self, AppointmentView};
use crate::auth::Actor;
use crate::campaign::Stage;
use crate::error::{AppError, AppResult};
use crate::exam::{self, ExamView};
use crate::registry;

/// One resident's progress in a campaign: the row, the appointments and the exam.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ResidentProgress)]
pub struct Progress {
    pub resident_id: i32,
    pub name: String,
    pub stage: Stage,
    pub stage_label: &'static str,
    pub cohort: String,
    pub village_code: String,
    /// Absent for institution staff, as is `special`: a clinic is not told who is a migrant
    /// or detained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrant_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub special: Option<Option<String>>,
    pub route: String,
    pub notified_at: Option<chrono::DateTime<Utc>>,
    pub reached_at: Option<chrono::DateTime<Utc>>,
    pub appointed_at: Option<chrono::DateTime<Utc>>,
    pub examined_at: Option<chrono::DateTime<Utc>>,
    pub refused_at: Option<chrono::DateTime<Utc>>,
    pub exempt_at: Option<chrono::DateTime<Utc>>,
    pub appointments: Vec<AppointmentView>,
    pub exam: Option<ExamView>,
}

pub async fn progress(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<Progress> {
    // Institution staff see only the residents their institution examines.
    let resident = registry::find_visible(db, actor, resident_id).await?;
    let clinic = actor.role == Role::Institution;
    let row = enrolments::Entity::find()
        .filter(enrolments::Column::CampaignId.eq(campaign_id))
        .filter(enrolments::Column::ResidentId.eq(resident_id))
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound("该居民不在本次体检对象范围内".to_owned()))?;
    let stage = Stage::parse(&row.stage).unwrap_or(Stage::Target);
    let appointments = appointment::of_resident(db, campaign_id, &resident).await?;
    Ok(Progress {
        resident_id,
        name: resident.name,
        stage,
        stage_label: stage.label(),
        cohort: row.cohort,
        village_code: row.village_code,
        migrant_type: (!clinic).then_some(row.migrant_type),
        special: (!clinic).then_some(row.special),
        route: row.route,
        notified_at: row.notified_at,
        reached_at: row.reached_at,
        appointed_at: row.appointed_at,
        examined_at: row.examined_at,
        refused_at: row.refused_at,
        exempt_at: row.exempt_at,
        appointments,
        exam: exam::existing(db, campaign_id, resident_id)
            .await?
            .map(Into::into),
    })
}
