//! The migrant book (单独登记造册): for an area, every resident living away from the household
//! village, grouped by migrant type, with the contacts a cadre needs to reach them — as JSON,
//! CSV (UTF-8 with BOM, for Excel) or XLSX (one sheet per type).

use chrono::NaiveDate;
use entities::residents;
use rust_xlsxwriter::Workbook;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;
use serde_json::json;

use super::{MigrantType, Special, in_area, may_reveal};
use crate::area::AreaCode;
use crate::audit::AuditEvent;
use crate::auth::Actor;
use crate::error::{AppError, AppResult};
use crate::privacy::{Field, Privacy};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BookEntry {
    pub id: i32,
    pub village_code: String,
    pub name: String,
    pub sex: String,
    pub birth_date: NaiveDate,
    pub id_number: String,
    pub phone: Option<String>,
    pub relative_name: Option<String>,
    pub relative_relation: Option<String>,
    pub relative_phone: Option<String>,
    pub current_address: Option<String>,
    pub permit_since: Option<NaiveDate>,
    pub special: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BookGroup {
    pub migrant_type: MigrantType,
    /// The type in Chinese, e.g. 疆外.
    pub label: String,
    pub count: usize,
    pub residents: Vec<BookEntry>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MigrantBook {
    pub area_code: Option<String>,
    /// Whether ID and phone numbers are shown in full.
    pub revealed: bool,
    pub groups: Vec<BookGroup>,
}

/// The book for `area` (default: the caller's whole scope). With `reveal`, a role allowed to
/// see personal numbers gets them in full, and with them the audit entry the export must
/// leave: the caller writes it before it hands the book out.
pub async fn migrant_book(
    db: &impl ConnectionTrait,
    privacy: &Privacy,
    actor: &Actor,
    area: Option<AreaCode>,
    reveal: bool,
) -> AppResult<(MigrantBook, Option<AuditEvent>)> {
    if reveal && !may_reveal(actor.role) {
        return Err(AppError::Forbidden(
            "您的角色无权查看完整的身份证号和电话".to_owned(),
        ));
    }
    let condition = in_area(&actor.scope, area.as_ref())?;
    let mut groups = Vec::new();
    let mut total = 0;
    for migrant_type in MigrantType::ALL
        .iter()
        .copied()
        .filter(|t| *t != MigrantType::Local)
    {
        let rows = residents::Entity::find()
            .filter(condition.clone())
            .filter(residents::Column::MigrantType.eq(migrant_type.code()))
            .order_by_asc(residents::Column::VillageCode)
            .order_by_asc(residents::Column::Name)
            .order_by_asc(residents::Column::Id)
            .all(db)
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            let (id_number, phone, relative_phone) = if reveal {
                (
                    privacy.decrypt(Field::ResidentId, &r.id_cipher)?,
                    r.phone_cipher
                        .as_deref()
                        .map(|c| privacy.decrypt(Field::Phone, c))
                        .transpose()?,
                    r.relative_phone_cipher
                        .as_deref()
                        .map(|c| privacy.decrypt(Field::Phone, c))
                        .transpose()?,
                )
            } else {
                (r.id_masked, r.phone_masked, r.relative_phone_masked)
            };
            entries.push(BookEntry {
                id: r.id,
                village_code: r.village_code,
                name: r.name,
                sex: r.sex,
                birth_date: r.birth_date,
                id_number,
                phone,
                relative_name: r.relative_name,
                relative_relation: r.relative_relation,
                relative_phone,
                current_address: r.current_address,
                permit_since: r.permit_since,
                special: r.special,
            });
        }
        total += entries.len();
        groups.push(BookGroup {
            migrant_type,
            label: migrant_type.label().to_owned(),
            count: entries.len(),
            residents: entries,
        });
    }
    let exported = reveal.then(|| AuditEvent {
        action: "resident.export_pii",
        entity: "migrant_book",
        entity_id: None,
        area_code: area.clone().or_else(|| actor.scope.area().cloned()),
        summary: json!({"residents": total}),
    });
    let book = MigrantBook {
        area_code: area.map(String::from),
        revealed: reveal,
        groups,
    };
    Ok((book, exported))
}

const HEADERS: [&str; 13] = [
    "流动类型",
    "户籍村（社区）代码",
    "姓名",
    "性别",
    "出生日期",
    "身份证号",
    "联系电话",
    "亲属姓名",
    "亲属关系",
    "亲属电话",
    "现居住地",
    "居住证起始日期",
    "特殊情况",
];

fn cells(group: &BookGroup, e: &BookEntry) -> [String; 13] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        group.label.clone(),
        e.village_code.clone(),
        e.name.clone(),
        super::sex_label(&e.sex).to_owned(),
        e.birth_date.to_string(),
        e.id_number.clone(),
        opt(&e.phone),
        opt(&e.relative_name),
        opt(&e.relative_relation),
        opt(&e.relative_phone),
        opt(&e.current_address),
        e.permit_since.map(|d| d.to_string()).unwrap_or_default(),
        e.special
            .as_deref()
            .and_then(Special::parse)
            .map(|s| s.label().to_owned())
            .unwrap_or_default(),
    ]
}

/// The book as CSV for Excel, the migrant type in the first column.
pub fn migrant_book_csv(book: &MigrantBook) -> AppResult<Vec<u8>> {
    crate::export::csv(
        &HEADERS,
        book.groups
            .iter()
            .flat_map(|group| group.residents.iter().map(|entry| cells(group, entry))),
    )
}

/// The book as XLSX: one sheet per migrant type (which the sheet's name gives).
pub fn migrant_book_xlsx(book: &MigrantBook) -> AppResult<Vec<u8>> {
    let mut workbook = Workbook::new();
    // Columns after the type: the ID number and the address are wide.
    let width = |col| if col == 4 || col == 9 { 22.0 } else { 14.0 };
    for group in &book.groups {
        crate::export::add_sheet(
            &mut workbook,
            &group.label,
            &HEADERS[1..],
            width,
            group
                .residents
                .iter()
                .map(|entry| cells(group, entry)[1..].to_vec()),
        )?;
    }
    workbook.save_to_buffer().map_err(crate::export::xlsx_error)
}
