//! Exam records: one per resident and campaign (杜绝重复体检), written when an institution
//! marks attendance or an exam, imported from the checkup system's CSV, or recorded by a
//! cadre as "examined elsewhere" with evidence for a migrant examined where they live.
//! A second record is refused and reported as a duplicate.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use chrono::{NaiveDate, Utc};
use entities::users::Role;
use entities::{enrolments, exam_records, residents};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::area::AreaCode;
use crate::audit::{self, AuditEvent};
use crate::auth::Actor;
use crate::campaign::{self, enrol};
use crate::error::{AppError, AppResult};
use crate::import::{CsvTable, RejectedRow, map_headers};
use crate::privacy::{Field, Privacy};
use crate::registry::{self, ResidentId};

/// Largest evidence file kept with a record (a photo of the exam form).
pub const MAX_EVIDENCE_BYTES: usize = 5 * 1024 * 1024;

/// What is written for one exam.
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    pub campaign_id: i32,
    pub resident_id: i32,
    pub examined_on: NaiveDate,
    pub institution_id: Option<i32>,
    /// attendance, institution, import or elsewhere.
    pub source: &'static str,
    pub place: Option<String>,
    pub examiner: Option<String>,
    pub note: Option<String>,
    pub evidence_name: Option<String>,
    pub evidence_type: Option<String>,
    pub evidence: Option<Vec<u8>>,
    pub appointment_id: Option<i32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExamView {
    pub id: i32,
    pub campaign_id: i32,
    pub resident_id: i32,
    pub examined_on: NaiveDate,
    pub institution_id: Option<i32>,
    /// attendance, institution, import or elsewhere.
    pub source: String,
    pub place: Option<String>,
    pub examiner: Option<String>,
    pub note: Option<String>,
    pub evidence_name: Option<String>,
    pub has_evidence: bool,
    pub recorded_by: String,
    pub created_at: chrono::DateTime<Utc>,
}

impl From<exam_records::Model> for ExamView {
    fn from(m: exam_records::Model) -> Self {
        Self {
            id: m.id,
            campaign_id: m.campaign_id,
            resident_id: m.resident_id,
            examined_on: m.examined_on,
            institution_id: m.institution_id,
            source: m.source,
            place: m.place,
            examiner: m.examiner,
            note: m.note,
            evidence_name: m.evidence_name,
            has_evidence: m.evidence.is_some(),
            recorded_by: m.recorded_by_name,
            created_at: m.created_at,
        }
    }
}

pub async fn existing(
    db: &impl ConnectionTrait,
    campaign_id: i32,
    resident_id: i32,
) -> AppResult<Option<exam_records::Model>> {
    Ok(exam_records::Entity::find()
        .filter(exam_records::Column::CampaignId.eq(campaign_id))
        .filter(exam_records::Column::ResidentId.eq(resident_id))
        .one(db)
        .await?)
}

fn duplicate(existing: &exam_records::Model) -> AppError {
    let place = existing
        .place
        .clone()
        .unwrap_or_else(|| "本县医疗机构".to_owned());
    AppError::Refused {
        code: "duplicate_exam",
        message: format!(
            "该居民本年度已于 {} 在{place}体检，不能重复体检",
            existing.examined_on
        ),
        details: Some(json!({"exam": ExamView::from(existing.clone())})),
    }
}

/// Writes the exam record and moves the progress row to `examined`. A resident who already
/// has a record for the campaign is refused as a duplicate. What an exam ends elsewhere (an
/// appointment, a refusal) is the caller's, in the same transaction.
pub async fn insert(
    db: &impl ConnectionTrait,
    actor: &Actor,
    record: NewRecord,
) -> AppResult<exam_records::Model> {
    if let Some(found) = existing(db, record.campaign_id, record.resident_id).await? {
        return Err(duplicate(&found));
    }
    let enrolled = enrolments::Entity::find()
        .filter(enrolments::Column::CampaignId.eq(record.campaign_id))
        .filter(enrolments::Column::ResidentId.eq(record.resident_id))
        .one(db)
        .await?;
    if enrolled.is_none() {
        return Err(AppError::refused(
            "not_enrolled",
            "该居民不在本次体检对象范围内",
        ));
    }
    let now = Utc::now();
    let inserted = exam_records::Entity::insert(exam_records::ActiveModel {
        campaign_id: Set(record.campaign_id),
        resident_id: Set(record.resident_id),
        examined_on: Set(record.examined_on),
        institution_id: Set(record.institution_id),
        source: Set(record.source.to_owned()),
        place: Set(record.place),
        examiner: Set(record.examiner),
        note: Set(record.note),
        evidence_name: Set(record.evidence_name),
        evidence_type: Set(record.evidence_type),
        evidence: Set(record.evidence),
        appointment_id: Set(record.appointment_id),
        recorded_by: Set(actor.user_id),
        recorded_by_name: Set(actor.username.clone()),
        created_at: Set(now),
        ..Default::default()
    })
    // Recorded by someone else a moment ago: the unique key skips the row instead of failing
    // the statement (which would abort the whole transaction on PostgreSQL).
    .on_conflict(
        sea_orm::sea_query::OnConflict::columns([
            exam_records::Column::CampaignId,
            exam_records::Column::ResidentId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_with_returning(db)
    .await;
    let saved = match inserted {
        Ok(saved) => saved,
        Err(sea_orm::DbErr::RecordNotInserted | sea_orm::DbErr::RecordNotFound(_)) => {
            return Err(
                match existing(db, record.campaign_id, record.resident_id).await? {
                    Some(found) => duplicate(&found),
                    None => anyhow::anyhow!("exam record neither inserted nor found").into(),
                },
            );
        }
        Err(e) => return Err(e.into()),
    };
    enrol::mark_examined(db, record.campaign_id, record.resident_id, now).await?;
    Ok(saved)
}

fn check_exam_date(campaign: &campaign::Campaign, day: NaiveDate) -> AppResult<()> {
    let year_start = NaiveDate::from_ymd_opt(campaign.model.year, 1, 1).expect("valid year");
    if day < year_start || day > campaign.today() {
        return Err(AppError::validation(
            "invalid_exam_date",
            format!("体检日期应在 {year_start} 至今天之间"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstitutionExam {
    pub resident_id: i32,
    pub examined_on: NaiveDate,
    /// The examining institution (institution staff: their own, which is the default).
    pub institution_id: Option<i32>,
}

/// The institution an exam is recorded for: institution staff record their own; the office
/// names one.
pub fn examining_institution(actor: &Actor, requested: Option<i32>) -> AppResult<i32> {
    match (actor.role, requested, actor.institution_id) {
        (Role::Institution, None, Some(own)) => Ok(own),
        (Role::Institution, Some(id), Some(own)) if id == own => Ok(own),
        (Role::Office, Some(id), _) => Ok(id),
        (Role::Office, None, _) => Err(AppError::validation(
            "institution_required",
            "请指定体检机构（institution_id）",
        )),
        _ => Err(AppError::Forbidden("只能登记本机构完成的体检".to_owned())),
    }
}

/// Who was examined where, once every check has passed.
pub struct ExamSite {
    pub resident_id: i32,
    pub village: AreaCode,
    pub institution_id: Option<i32>,
}

/// Checks an institution's exam of a resident (without an appointment, or a walk-in): the
/// campaign open, the date within it, the resident one the institution serves (or in the
/// office's scope).
pub async fn check_at_institution(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    institution_id: i32,
    request: &InstitutionExam,
) -> AppResult<ExamSite> {
    let campaign = campaign::get_open(db, campaign_id).await?;
    check_exam_date(&campaign, request.examined_on)?;
    let institution = crate::institution::find(db, institution_id).await?;
    let resident = residents::Entity::find_by_id(request.resident_id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("居民 {} 不存在", request.resident_id)))?;
    let village = AreaCode::parse(&resident.village_code)
        .map_err(|e| anyhow::anyhow!("stored village code: {e}"))?;
    let in_reach = match actor.role {
        Role::Office => actor.scope.contains(&village),
        _ => crate::institution::serves_village(db, institution.id, &village).await?,
    };
    if !in_reach {
        return Err(AppError::NotFound(format!(
            "居民 {} 不存在",
            request.resident_id
        )));
    }
    Ok(ExamSite {
        resident_id: resident.id,
        village,
        institution_id: Some(institution.id),
    })
}

/// Audits an exam recorded at an institution.
pub async fn audit_at_institution(
    db: &impl ConnectionTrait,
    actor: &Actor,
    saved: &exam_records::Model,
    site: ExamSite,
) -> AppResult<()> {
    audit::record(
        db,
        actor,
        AuditEvent {
            action: "exam.record",
            entity: "exam",
            entity_id: Some(saved.id.to_string()),
            area_code: Some(site.village),
            summary: json!({"campaign_id": saved.campaign_id, "resident_id": saved.resident_id, "institution_id": site.institution_id, "examined_on": saved.examined_on}),
        },
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ElsewhereExam {
    pub examined_on: NaiveDate,
    /// Where (the institution and its city or county).
    pub place: String,
    /// Who examined or attests it.
    pub examiner: String,
    pub note: Option<String>,
    /// Optional evidence file (a photo or PDF of the exam form), base64, at most 5 MiB.
    pub evidence_base64: Option<String>,
    pub evidence_name: Option<String>,
    /// e.g. `image/jpeg`, `application/pdf`.
    pub evidence_type: Option<String>,
}

/// An exam elsewhere as the cadre described it, checked: the record to write.
pub struct Elsewhere {
    pub examined_on: NaiveDate,
    pub place: String,
    pub examiner: String,
    pub note: Option<String>,
    pub evidence_name: Option<String>,
    pub evidence_type: Option<String>,
    pub evidence: Option<Vec<u8>>,
}

/// Checks what a cadre says of an exam elsewhere (a migrant examined where they live), with
/// its evidence file; needs no database.
pub fn check_elsewhere(actor: &Actor, request: ElsewhereExam) -> AppResult<Elsewhere> {
    if !matches!(actor.role, Role::Office | Role::Township | Role::Cadre) {
        return Err(AppError::forbidden_role());
    }
    let place = crate::validate::check_name(&request.place, "体检地点", 200)?;
    let examiner = crate::validate::check_name(&request.examiner, "体检单位或证明人", 100)?;
    let note = crate::validate::optional_name(request.note.as_deref(), "备注", 500)?;
    let evidence = match request.evidence_base64.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|_| {
                    AppError::validation("invalid_evidence", "证明材料不是有效的 base64")
                })?;
            if bytes.is_empty() || bytes.len() > MAX_EVIDENCE_BYTES {
                return Err(AppError::validation(
                    "invalid_evidence",
                    "证明材料应为 1 字节到 5 MB 的文件",
                ));
            }
            Some(bytes)
        }
    };
    let evidence_type = match (&evidence, request.evidence_type.as_deref().map(str::trim)) {
        (None, _) => None,
        (Some(_), None | Some("")) => Some("application/octet-stream".to_owned()),
        (Some(_), Some(t))
            if t.len() <= 100 && t.contains('/') && t.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Some(t.to_owned())
        }
        _ => {
            return Err(AppError::validation(
                "invalid_evidence",
                "证明材料的类型应类似 image/jpeg",
            ));
        }
    };
    let evidence_name = match &evidence {
        None => None,
        Some(_) => Some(
            crate::validate::optional_name(request.evidence_name.as_deref(), "文件名", 200)?
                .unwrap_or_else(|| "evidence".to_owned()),
        ),
    };
    Ok(Elsewhere {
        examined_on: request.examined_on,
        place,
        examiner,
        note,
        evidence_name,
        evidence_type,
        evidence,
    })
}

/// Where an exam elsewhere is recorded: the campaign open, the date within it, the resident
/// in the caller's scope.
pub async fn check_elsewhere_site(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    resident_id: i32,
    exam: &Elsewhere,
) -> AppResult<ExamSite> {
    let campaign = campaign::get_open(db, campaign_id).await?;
    check_exam_date(&campaign, exam.examined_on)?;
    let resident = registry::find(db, &actor.scope, resident_id).await?;
    Ok(ExamSite {
        resident_id,
        village: AreaCode::parse(&resident.village_code)
            .map_err(|e| anyhow::anyhow!("stored village code: {e}"))?,
        institution_id: None,
    })
}

/// The record of an exam elsewhere, for `insert`.
pub fn elsewhere_record(campaign_id: i32, resident_id: i32, exam: Elsewhere) -> NewRecord {
    NewRecord {
        campaign_id,
        resident_id,
        examined_on: exam.examined_on,
        institution_id: None,
        source: "elsewhere",
        place: Some(exam.place),
        examiner: Some(exam.examiner),
        note: exam.note,
        evidence_name: exam.evidence_name,
        evidence_type: exam.evidence_type,
        evidence: exam.evidence,
        appointment_id: None,
    }
}

/// Audits an exam recorded elsewhere.
pub async fn audit_elsewhere(
    db: &impl ConnectionTrait,
    actor: &Actor,
    saved: &exam_records::Model,
    site: ExamSite,
) -> AppResult<()> {
    audit::record(
        db,
        actor,
        AuditEvent {
            action: "exam.record_elsewhere",
            entity: "exam",
            entity_id: Some(saved.id.to_string()),
            area_code: Some(site.village),
            summary: json!({"campaign_id": saved.campaign_id, "resident_id": saved.resident_id, "place": saved.place, "examined_on": saved.examined_on, "evidence": saved.evidence_name}),
        },
    )
    .await?;
    Ok(())
}

/// The evidence file of an exam record, for those who may see the resident.
/// Roles that may download evidence files: those who record exams elsewhere (office,
/// township, cadre), as the API documents; institutions and auditors do not.
pub fn may_download_evidence(role: Role) -> bool {
    matches!(role, Role::Office | Role::Township | Role::Cadre)
}

/// The evidence file of an exam record of a resident in scope. Every download is written to
/// the audit log (who, which record, which resident) before the file is handed out: one
/// statement, its own transaction.
#[tracing::instrument(skip_all, fields(exam_id = id), err)]
pub async fn evidence(
    db: &impl ConnectionTrait,
    actor: &Actor,
    id: i32,
) -> AppResult<(String, String, Vec<u8>)> {
    if !may_download_evidence(actor.role) {
        return Err(AppError::Forbidden(
            "您的角色无权下载体检证明材料".to_owned(),
        ));
    }
    let found = exam_records::Entity::find_by_id(id)
        .find_also_related(residents::Entity)
        .one(db)
        .await?;
    let (record, village) = match found {
        Some((record, Some(resident))) => match AreaCode::parse(&resident.village_code) {
            Ok(village) if actor.scope.contains(&village) => (record, village),
            _ => return Err(AppError::NotFound(format!("体检记录 {id} 不存在"))),
        },
        _ => return Err(AppError::NotFound(format!("体检记录 {id} 不存在"))),
    };
    let (bytes, name, kind) = match (record.evidence, record.evidence_name, record.evidence_type) {
        (Some(bytes), Some(name), Some(kind)) => (bytes, name, kind),
        _ => return Err(AppError::NotFound("该体检记录没有证明材料".to_owned())),
    };
    audit::record(
        db,
        actor,
        AuditEvent {
            action: "exam.evidence_download",
            entity: "exam",
            entity_id: Some(record.id.to_string()),
            area_code: Some(village),
            summary: json!({"campaign_id": record.campaign_id, "resident_id": record.resident_id, "evidence": name, "bytes": bytes.len()}),
        },
    )
    .await?;
    Ok((name, kind, bytes))
}

const EXAM_ID: &[&str] = &["身份证号", "身份证号码", "公民身份号码", "id_number"];
const EXAM_DATE: &[&str] = &["体检日期", "exam_date", "date"];
const EXAM_INSTITUTION: &[&str] = &["体检机构", "机构代码", "institution", "institution_code"];

/// What an exam import did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ExamImportSummary {
    pub imported: u64,
    /// Rows for residents who already have an exam this campaign (also among `rejected`).
    pub duplicates: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExamImport {
    pub summary: ExamImportSummary,
    pub rejected_rows: Vec<RejectedRow>,
    pub unknown_columns: Vec<String>,
    #[serde(skip)]
    pub headers: Vec<String>,
    /// Position of the ID number among each row's values.
    #[serde(skip)]
    pub id_column: usize,
}

impl ExamImport {
    /// Masks the ID numbers of the rejected rows, for callers who may not see them in full.
    pub fn mask_ids(&mut self) {
        for row in &mut self.rejected_rows {
            if let Some(value) = row.values.get_mut(self.id_column) {
                *value = registry::mask_raw_id(value);
            }
        }
    }
}

/// A row of an exam list that passed every check of its own: the exam to record.
pub struct ExamRow {
    pub line: u64,
    pub values: Vec<String>,
    pub resident_id: i32,
    pub examined_on: NaiveDate,
    pub institution_id: i32,
}

impl ExamRow {
    /// The row refused when its exam is recorded (a duplicate, a closed appointment).
    pub fn rejected(self, error: &AppError) -> RejectedRow {
        RejectedRow::new(self.line, self.values, error.code(), error.to_string())
    }

    pub fn record(&self, campaign_id: i32) -> NewRecord {
        NewRecord {
            campaign_id,
            resident_id: self.resident_id,
            examined_on: self.examined_on,
            institution_id: Some(self.institution_id),
            source: "import",
            ..Default::default()
        }
    }
}

/// The exam list read and checked row by row, before any exam is recorded.
pub struct ExamList {
    pub rows: Vec<ExamRow>,
    pub import: ExamImport,
}

/// Checks that the caller may import exams and that the file has the three columns (before
/// any lock is taken).
pub fn read_exam_list(actor: &Actor, bytes: &[u8]) -> AppResult<CsvTable> {
    if !matches!(actor.role, Role::Office | Role::Institution) {
        return Err(AppError::forbidden_role());
    }
    let table = CsvTable::read(bytes)?;
    table.ensure_rows()?;
    Ok(table)
}

/// Reads the checkup system's exam list (ID number, exam date, institution code) of a
/// campaign: each good row becomes an exam to record, each bad one or repeat is rejected with
/// its reason. Institution staff may import only their own institution's exams.
pub async fn check_exam_list(
    txn: &impl ConnectionTrait,
    privacy: &Privacy,
    actor: &Actor,
    campaign_id: i32,
    table: CsvTable,
) -> AppResult<ExamList> {
    let ([id_col, date_col, inst_col], unknown_columns) =
        map_headers(&table.headers, [EXAM_ID, EXAM_DATE, EXAM_INSTITUTION]);
    let (Some(id_col), Some(date_col), Some(inst_col)) = (id_col, date_col, inst_col) else {
        return Err(AppError::validation(
            "missing_columns",
            "表头缺少必需的列：身份证号（id_number）、体检日期（exam_date）、体检机构（institution）",
        ));
    };
    let campaign = campaign::get_open(txn, campaign_id).await?;
    let mut institutions = crate::institution::CodeLookup::default();
    let mut seen: HashSet<i32> = HashSet::new();
    let mut served: HashMap<(i32, String), bool> = HashMap::new();
    let mut summary = ExamImportSummary::default();
    let mut rejected = Vec::new();
    let mut rows = Vec::new();
    let today = campaign.today();
    for (line, record) in &table.rows {
        let values: Vec<String> = match record {
            Ok(r) => r.iter().map(str::to_owned).collect(),
            Err(reason) => {
                rejected.push(RejectedRow::new(
                    *line,
                    Vec::new(),
                    "unreadable_row",
                    reason.clone(),
                ));
                continue;
            }
        };
        let get = |col: usize| values.get(col).map(|s| s.trim()).unwrap_or("");
        let id = match ResidentId::parse(get(id_col), today) {
            Ok(id) => id,
            Err(e) => {
                let code = e.code();
                let reason = e.to_string();
                rejected.push(RejectedRow::new(*line, values, code, reason));
                continue;
            }
        };
        let Some(day) = crate::validate::parse_date(get(date_col)) else {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "invalid_exam_date",
                "体检日期应为 YYYY-MM-DD".to_owned(),
            ));
            continue;
        };
        if check_exam_date(&campaign, day).is_err() {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "invalid_exam_date",
                format!("体检日期应在 {} 年内且不晚于今天", campaign.model.year),
            ));
            continue;
        }
        let code = get(inst_col).to_uppercase();
        let Some(institution) = institutions.get(txn, &code).await? else {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "unknown_institution",
                format!("机构 {code} 不存在"),
            ));
            continue;
        };
        if actor.role == Role::Institution && actor.institution_id != Some(institution.id) {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "out_of_scope",
                format!("只能导入本机构的体检记录，不能导入 {code}"),
            ));
            continue;
        }
        let index = privacy.blind_index(Field::ResidentId, id.expose());
        let Some(resident) = residents::Entity::find()
            .filter(residents::Column::IdIndex.eq(index))
            .select_only()
            .column(residents::Column::Id)
            .column(residents::Column::VillageCode)
            .into_tuple::<(i32, String)>()
            .one(txn)
            .await?
        else {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "unknown_resident",
                format!("身份证号 {} 未登记", id.masked()),
            ));
            continue;
        };
        let village = AreaCode::parse(&resident.1).ok();
        let in_reach = match (actor.role, &village) {
            (_, None) => false,
            (Role::Office, Some(v)) => actor.scope.contains(v),
            (_, Some(v)) => {
                let key = (institution.id, resident.1.clone());
                match served.get(&key) {
                    Some(known) => *known,
                    None => {
                        let serves =
                            crate::institution::serves_village(txn, institution.id, v).await?;
                        served.insert(key, serves);
                        serves
                    }
                }
            }
        };
        if !in_reach {
            rejected.push(RejectedRow::new(
                *line,
                values,
                "out_of_scope",
                "该居民不在您的管辖或服务范围内".to_owned(),
            ));
            continue;
        }
        if !seen.insert(resident.0) {
            summary.duplicates += 1;
            rejected.push(RejectedRow::new(
                *line,
                values,
                "duplicate_exam",
                "文件中同一居民出现多次，只记录第一次".to_owned(),
            ));
            continue;
        }
        rows.push(ExamRow {
            line: *line,
            values,
            resident_id: resident.0,
            examined_on: day,
            institution_id: institution.id,
        });
    }
    Ok(ExamList {
        rows,
        import: ExamImport {
            summary,
            rejected_rows: rejected,
            unknown_columns,
            headers: table.header_names(),
            id_column: id_col,
        },
    })
}

/// Audits an exam import that recorded anything.
pub async fn audit_import(
    db: &impl ConnectionTrait,
    actor: &Actor,
    campaign_id: i32,
    summary: &ExamImportSummary,
) -> AppResult<()> {
    if summary.imported > 0 {
        audit::record(
            db,
            actor,
            AuditEvent {
                action: "exam.import",
                entity: "exam",
                entity_id: None,
                area_code: actor.scope.area().cloned(),
                summary: json!({"campaign_id": campaign_id, "imported": summary.imported, "duplicates": summary.duplicates, "rejected": summary.rejected}),
            },
        )
        .await?;
    }
    Ok(())
}
