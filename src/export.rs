//! Lists as files people open in Excel: CSV in UTF-8 with a BOM (so that Excel shows the
//! Chinese correctly) with text that would start a formula made inert, and XLSX sheets with a
//! bold, frozen header row, numbers as numbers and rates as percentages.

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

/// A typed cell: text, a whole number, or a fraction shown as a percentage.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// A fraction (0.9076), written as a number with a percent format in XLSX and as
    /// `90.76%` in CSV; empty when there is no rate.
    Percent(Option<f64>),
}

impl Cell {
    fn csv_text(&self) -> String {
        match self {
            Cell::Text(text) => inert(text),
            Cell::Int(n) => n.to_string(),
            Cell::Percent(Some(rate)) => format!("{:.2}%", rate * 100.0),
            Cell::Percent(None) => String::new(),
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::Text(text.to_owned())
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::Text(text)
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Self {
        Cell::Int(n)
    }
}

impl From<Option<f64>> for Cell {
    fn from(rate: Option<f64>) -> Self {
        Cell::Percent(rate)
    }
}

/// `headers` and typed `rows` as CSV for Excel.
pub fn csv_cells<R: AsRef<[Cell]>>(
    headers: &[&str],
    rows: impl IntoIterator<Item = R>,
) -> AppResult<Vec<u8>> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    {
        let mut writer = csv::Writer::from_writer(&mut out);
        writer.write_record(headers).map_err(csv_error)?;
        for row in rows {
            writer
                .write_record(row.as_ref().iter().map(Cell::csv_text))
                .map_err(csv_error)?;
        }
        writer
            .flush()
            .map_err(|e| AppError::from(anyhow::anyhow!("csv: {e}")))?;
    }
    Ok(out)
}

/// `headers` and `rows` (all text) as CSV for Excel.
pub fn csv<R: AsRef<[String]>>(
    headers: &[&str],
    rows: impl IntoIterator<Item = R>,
) -> AppResult<Vec<u8>> {
    csv_cells(headers, rows.into_iter().map(text_cells))
}

fn text_cells<R: AsRef<[String]>>(row: R) -> Vec<Cell> {
    row.as_ref().iter().map(|t| Cell::Text(t.clone())).collect()
}

/// A sheet `name` of `headers` and typed `rows` under a bold, frozen header row; `width`
/// gives each column's width. Numbers stay numbers; rates get a `0.00%` format.
pub fn add_table<R: AsRef<[Cell]>>(
    workbook: &mut Workbook,
    name: &str,
    headers: &[&str],
    width: impl Fn(usize) -> f64,
    rows: impl IntoIterator<Item = R>,
) -> AppResult<()> {
    let bold = Format::new().set_bold();
    let percent = Format::new().set_num_format("0.00%");
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
        let row = (row + 1) as u32;
        for (col, cell) in cells.as_ref().iter().enumerate() {
            let col = col as u16;
            match cell {
                Cell::Text(text) => sheet.write_string(row, col, text),
                Cell::Int(n) => sheet.write_number(row, col, *n as f64),
                Cell::Percent(Some(rate)) => {
                    sheet.write_number_with_format(row, col, *rate, &percent)
                }
                Cell::Percent(None) => continue,
            }
            .map_err(xlsx_error)?;
        }
    }
    Ok(())
}

/// A sheet `name` of `headers` and `rows`, all as text; `width` gives each column's width.
pub fn add_sheet<R: AsRef<[String]>>(
    workbook: &mut Workbook,
    name: &str,
    headers: &[&str],
    width: impl Fn(usize) -> f64,
    rows: impl IntoIterator<Item = R>,
) -> AppResult<()> {
    add_table(
        workbook,
        name,
        headers,
        width,
        rows.into_iter().map(text_cells),
    )
}

/// The Chinese name of a campaign's time zone, for labelling the times of an export.
pub fn zone_name(zone: chrono_tz::Tz) -> &'static str {
    match zone {
        chrono_tz::Asia::Shanghai => "北京时间",
        chrono_tz::Asia::Urumqi => "新疆时间",
        _ => "当地时间",
    }
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
