//! The refusal register as a download: CSV (UTF-8 with BOM, for Excel) or XLSX, one row per
//! registration, in the order of the register (by village).

use rust_xlsxwriter::{Format, Workbook};

use super::{Register, Registration};
use crate::error::{AppError, AppResult};

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
    "登记时间",
    "状态",
    "审核时间",
    "审核意见",
    "签名 SHA-256",
];

fn cells(r: &Registration) -> [String; 19] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let beijing = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    [
        r.id.to_string(),
        opt(&r.township_name),
        r.village_name
            .clone()
            .unwrap_or_else(|| r.village_code.clone()),
        r.resident_name.clone(),
        if r.sex == "M" { "男" } else { "女" }.to_owned(),
        r.birth_date.to_string(),
        r.id_number.clone(),
        r.reason_label.clone(),
        opt(&r.reason_text),
        r.signer_name.clone(),
        r.signer_relation_label.clone(),
        r.witness_name.clone(),
        r.attempt_ids.len().to_string(),
        r.registered_by_name.clone(),
        beijing(r.registered_at),
        r.status_label.clone(),
        r.reviewed_at.map(beijing).unwrap_or_default(),
        opt(&r.review_note),
        r.signature_sha256.clone(),
    ]
}

/// Free text a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading
/// apostrophe, which Excel shows as text.
fn inert(value: String) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value
    }
}

/// The register as CSV: UTF-8 with a BOM so that Excel shows the Chinese correctly; text that
/// would start a formula is made inert.
pub fn register_csv(register: &Register) -> AppResult<Vec<u8>> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    {
        let mut writer = csv::Writer::from_writer(&mut out);
        let fail = |e: csv::Error| AppError::from(anyhow::anyhow!("csv: {e}"));
        writer.write_record(HEADERS).map_err(fail)?;
        for registration in &register.items {
            writer
                .write_record(cells(registration).map(inert))
                .map_err(fail)?;
        }
        writer
            .flush()
            .map_err(|e| AppError::from(anyhow::anyhow!("csv: {e}")))?;
    }
    Ok(out)
}

/// The register as XLSX: one sheet 拒检登记, bold frozen header row.
pub fn register_xlsx(register: &Register) -> AppResult<Vec<u8>> {
    let xlsx = |e: rust_xlsxwriter::XlsxError| AppError::from(anyhow::anyhow!("xlsx: {e}"));
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    let sheet = workbook.add_worksheet();
    sheet.set_name("拒检登记").map_err(xlsx)?;
    for (col, header) in HEADERS.iter().enumerate() {
        sheet
            .write_string_with_format(0, col as u16, *header, &bold)
            .map_err(xlsx)?;
        let width = match col {
            6 | 14 | 16 => 20,
            18 => 66,
            _ => 12,
        };
        sheet.set_column_width(col as u16, width).map_err(xlsx)?;
    }
    sheet.set_freeze_panes(1, 0).map_err(xlsx)?;
    for (row, registration) in register.items.iter().enumerate() {
        for (col, value) in cells(registration).iter().enumerate() {
            sheet
                .write_string((row + 1) as u32, col as u16, value)
                .map_err(xlsx)?;
        }
    }
    workbook.save_to_buffer().map_err(xlsx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_made_inert() {
        assert_eq!(inert("=HYPERLINK(\"x\")".into()), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("@SUM(A1)".into()), "'@SUM(A1)");
        assert_eq!(inert("王某某".into()), "王某某");
        assert_eq!(inert("2026-11-29".into()), "2026-11-29");
        assert_eq!(inert(String::new()), "");
    }
}
