//! The refusal register as a download: CSV or XLSX, one row per registration, in the order of
//! the register (by village). Times are in the campaign's time zone, named in their headers,
//! as in every other export.

use chrono_tz::Tz;
use rust_xlsxwriter::Workbook;

use super::{Register, Registration};
use crate::error::AppResult;

const HEADERS: [&str; 19] = [
    "登记编号",
    "乡镇",
    "村（社区）",
    "姓名",
    "性别",
    "出生日期",
    "身份证号",
    "拒检原因",
    "原因说明",
    "签字人",
    "与本人关系",
    "见证干部",
    "联系次数",
    "登记人",
    "登记时间（{zone}）",
    "状态",
    "审核时间（{zone}）",
    "审核意见",
    "签名 SHA-256",
];

/// The headers, the times' zone named.
fn headers(zone: Tz) -> Vec<String> {
    HEADERS
        .iter()
        .map(|h| h.replace("{zone}", crate::export::zone_name(zone)))
        .collect()
}

fn cells(r: &Registration, zone: Tz) -> [String; 19] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let local = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string()
    };
    [
        r.id.to_string(),
        opt(&r.township_name),
        r.village_name
            .clone()
            .unwrap_or_else(|| r.village_code.clone()),
        r.resident_name.clone(),
        crate::registry::sex_label(&r.sex).to_owned(),
        r.birth_date.to_string(),
        r.id_number.clone(),
        r.reason_label.clone(),
        opt(&r.reason_text),
        r.signer_name.clone(),
        r.signer_relation_label.clone(),
        r.witness_name.clone(),
        r.attempt_ids.len().to_string(),
        r.registered_by_name.clone(),
        local(r.registered_at),
        r.status_label.clone(),
        r.reviewed_at.map(local).unwrap_or_default(),
        opt(&r.review_note),
        r.signature_sha256.clone(),
    ]
}

/// The register as CSV for Excel, times in `zone` (the campaign's).
pub fn register_csv(register: &Register, zone: Tz) -> AppResult<Vec<u8>> {
    let headers = headers(zone);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    crate::export::csv(&headers, register.items.iter().map(|r| cells(r, zone)))
}

/// The register as XLSX: one sheet 拒检登记, times in `zone` (the campaign's).
pub fn register_xlsx(register: &Register, zone: Tz) -> AppResult<Vec<u8>> {
    let headers = headers(zone);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut workbook = Workbook::new();
    let width = |col| match col {
        6 | 14 | 16 => 20.0,
        18 => 66.0,
        _ => 12.0,
    };
    crate::export::add_sheet(
        &mut workbook,
        "拒检登记",
        &headers,
        width,
        register.items.iter().map(|r| cells(r, zone)),
    )?;
    workbook.save_to_buffer().map_err(crate::export::xlsx_error)
}
