//! Reading tabular files people bring (CSV as Excel writes it in China, UTF-8 or GB18030)
//! and writing back the rows that could not be taken, each with its reason.

mod rejects;
pub mod stream;
mod text;
pub mod workbook;

pub use rejects::{RejectedFile, RejectedRow, rejected_path, write_rejected_csv};
pub use text::{TextError, decode_text};

use serde::Serialize;

/// What an import did, as printed by `--json` and returned by upload endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportSummary {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

/// Finds the column of each wanted field in a header row: Chinese or English names, any
/// order, surrounding spaces and case ignored. Returns the positions and the unknown headers.
pub fn map_headers<const N: usize>(
    headers: &csv::StringRecord,
    fields: [&[&str]; N],
) -> ([Option<usize>; N], Vec<String>) {
    let mut found = [None; N];
    let mut unknown = Vec::new();
    for (position, header) in headers.iter().enumerate() {
        let header = header.trim().trim_start_matches('\u{feff}').to_lowercase();
        match fields
            .iter()
            .position(|names| names.iter().any(|n| n.to_lowercase() == header))
        {
            Some(field) if found[field].is_none() => found[field] = Some(position),
            _ => unknown.push(header),
        }
    }
    (found, unknown)
}

/// A small CSV file read whole (a calendar, an exam list): its header and each data row with
/// its line number, or why the row could not be read.
pub struct CsvTable {
    pub headers: csv::StringRecord,
    pub rows: Vec<(u64, Result<csv::StringRecord, String>)>,
}

impl CsvTable {
    /// Decodes `bytes` (UTF-8 with or without BOM, or GB18030) and splits it into rows; blank
    /// rows are left out. An empty file or binary junk is an error for the whole file.
    pub fn read(bytes: &[u8]) -> crate::error::AppResult<Self> {
        use crate::error::AppError;
        let text = decode_text(bytes)
            .map_err(|e| AppError::validation("unreadable_file", e.to_string()))?;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| AppError::validation("unreadable_file", format!("无法读取表头：{e}")))?
            .clone();
        let rows: Vec<_> = reader
            .records()
            .enumerate()
            .map(|(i, r)| (i as u64 + 2, r.map_err(|e| format!("无法读取此行：{e}"))))
            .filter(|(_, r)| !matches!(r, Ok(r) if r.iter().all(str::is_empty)))
            .collect();
        Ok(Self { headers, rows })
    }

    /// A header with no data rows is an error for the whole file (checked after the columns,
    /// so a file with the wrong columns is told so first).
    pub fn ensure_rows(&self) -> crate::error::AppResult<()> {
        if self.rows.is_empty() {
            return Err(crate::error::AppError::validation(
                "no_rows",
                "文件只有表头，没有数据行",
            ));
        }
        Ok(())
    }

    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(str::to_owned).collect()
    }
}
