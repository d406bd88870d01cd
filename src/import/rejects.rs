//! The `FILE.rejected.csv` written next to an imported file.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// One input row that was not taken, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RejectedRow {
    /// Line number in the input file (the header is line 1).
    pub line: u64,
    /// The row as it was read.
    pub values: Vec<String>,
    /// Machine-readable reason, e.g. `invalid_code`.
    pub code: String,
    /// The reason in words (zh-CN).
    pub reason: String,
}

/// Writes the rejected rows as UTF-8 CSV (with a BOM, so Excel shows the Chinese correctly):
/// the original header plus `reason` and `reason_code`. Returns the path written.
pub fn write_rejected_csv(
    input: &Path,
    headers: &[String],
    rows: &[RejectedRow],
) -> std::io::Result<PathBuf> {
    let mut name = input.as_os_str().to_owned();
    name.push(".rejected.csv");
    let path = PathBuf::from(name);
    let mut file = std::fs::File::create(&path)?;
    std::io::Write::write_all(&mut file, b"\xEF\xBB\xBF")?;
    let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(file);
    let mut header: Vec<&str> = vec!["line"];
    header.extend(headers.iter().map(String::as_str));
    header.extend(["reason", "reason_code"]);
    writer.write_record(&header)?;
    for row in rows {
        let mut record = vec![row.line.to_string()];
        record.extend(row.values.iter().cloned());
        // Pad short rows so that the reason always lands under its header.
        while record.len() < headers.len() + 1 {
            record.push(String::new());
        }
        record.push(row.reason.clone());
        record.push(row.code.clone());
        writer.write_record(&record)?;
    }
    writer.flush()?;
    Ok(path)
}
