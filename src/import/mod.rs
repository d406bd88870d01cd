//! Reading tabular files people bring (CSV as Excel writes it in China, UTF-8 or GB18030)
//! and writing back the rows that could not be taken, each with its reason.

mod rejects;
pub mod stream;
mod text;

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
