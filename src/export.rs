//! Lists as files people open in Excel: CSV in UTF-8 with a BOM (so that Excel shows the
//! Chinese correctly) with text that would start a formula made inert, and XLSX sheets with a
//! bold, frozen header row.

use rust_xlsxwriter::{Format, Workbook, XlsxError};

use crate::error::{AppError, AppResult};

/// Free text a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading
/// apostrophe, which Excel shows as text.
fn inert(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

fn csv_error(e: csv::Error) -> AppError {
    anyhow::anyhow!("csv: {e}").into()
}

pub fn xlsx_error(e: XlsxError) -> AppError {
    anyhow::anyhow!("xlsx: {e}").into()
}

/// `headers` and `rows` as CSV for Excel.
pub fn csv<R: AsRef<[String]>>(
    headers: &[&str],
    rows: impl IntoIterator<Item = R>,
) -> AppResult<Vec<u8>> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    {
        let mut writer = csv::Writer::from_writer(&mut out);
        writer.write_record(headers).map_err(csv_error)?;
        for row in rows {
            writer
                .write_record(row.as_ref().iter().map(|cell| inert(cell)))
                .map_err(csv_error)?;
        }
        writer
            .flush()
            .map_err(|e| AppError::from(anyhow::anyhow!("csv: {e}")))?;
    }
    Ok(out)
}

/// A sheet `name` of `headers` and `rows`, all as text; `width` gives each column's width.
pub fn add_sheet<R: AsRef<[String]>>(
    workbook: &mut Workbook,
    name: &str,
    headers: &[&str],
    width: impl Fn(usize) -> f64,
    rows: impl IntoIterator<Item = R>,
) -> AppResult<()> {
    let bold = Format::new().set_bold();
    let sheet = workbook.add_worksheet();
    sheet.set_name(name).map_err(xlsx_error)?;
    for (col, header) in headers.iter().enumerate() {
        sheet
            .write_string_with_format(0, col as u16, *header, &bold)
            .map_err(xlsx_error)?;
        sheet
            .set_column_width(col as u16, width(col))
            .map_err(xlsx_error)?;
    }
    sheet.set_freeze_panes(1, 0).map_err(xlsx_error)?;
    for (row, cells) in rows.into_iter().enumerate() {
        for (col, value) in cells.as_ref().iter().enumerate() {
            sheet
                .write_string((row + 1) as u32, col as u16, value)
                .map_err(xlsx_error)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_made_inert() {
        assert_eq!(inert("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(inert("王某某"), "王某某");
        assert_eq!(inert("2026-11-29"), "2026-11-29");
        assert_eq!(inert(""), "");
    }

    #[test]
    fn csv_starts_with_a_bom_and_quotes_as_needed() {
        let rows = [vec!["张三".to_owned(), "a,b".to_owned()]];
        let out = csv(&["姓名", "备注"], rows).unwrap();
        assert!(out.starts_with(b"\xEF\xBB\xBF"));
        assert_eq!(
            String::from_utf8(out[3..].to_vec()).unwrap(),
            "姓名,备注\n张三,\"a,b\"\n"
        );
    }
}
