//! The `FILE.rejected.csv` written next to an imported file: the original columns of each
//! rejected row, preceded by its line number and followed by the reason (zh-CN) and a code,
//! UTF-8 with a BOM so that Excel shows the Chinese correctly. Fix the rows and import the
//! file again: the extra columns are ignored as unknown.

use std::fs::File;
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

impl RejectedRow {
    pub fn new(line: u64, values: Vec<String>, code: &str, reason: impl Into<String>) -> Self {
        Self {
            line,
            values,
            code: code.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Characters of one value an answer repeats; a longer one is cut with `…`.
pub const ECHO_VALUE_CHARS: usize = 200;
/// Characters of all of a row's values an answer repeats; later values are left empty.
pub const ECHO_ROW_CHARS: usize = 2000;

impl RejectedRow {
    /// Cuts the values (and the reason) to what an answer may repeat: the rejected file keeps
    /// them whole, an answer only needs enough to find the row.
    pub fn shorten(&mut self) {
        let mut budget = ECHO_ROW_CHARS;
        for value in &mut self.values {
            let limit = ECHO_VALUE_CHARS.min(budget);
            let length = value.chars().count();
            if length > limit {
                let mut cut: String = value.chars().take(limit).collect();
                cut.push('…');
                *value = cut;
            }
            budget -= length.min(limit);
        }
        if self.reason.chars().count() > ECHO_VALUE_CHARS {
            let mut cut: String = self.reason.chars().take(ECHO_VALUE_CHARS).collect();
            cut.push('…');
            self.reason = cut;
        }
    }
}

/// `input` + `.rejected.csv`.
pub fn rejected_path(input: &Path) -> PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(".rejected.csv");
    PathBuf::from(name)
}

/// A rejected-rows file being written. Rows go to `TARGET.partial`; `finish` renames it into
/// place, so a reader never sees the file of an import that did not complete.
pub struct RejectedFile {
    target: PathBuf,
    header_len: usize,
    writer: csv::Writer<File>,
}

impl RejectedFile {
    fn partial(target: &Path) -> PathBuf {
        let mut name = target.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    }

    pub fn create(target: &Path, header: &[String]) -> std::io::Result<Self> {
        let mut file = File::create(Self::partial(target))?;
        std::io::Write::write_all(&mut file, b"\xEF\xBB\xBF")?;
        let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(file);
        let mut record: Vec<&str> = vec!["line"];
        record.extend(header.iter().map(String::as_str));
        record.extend(["reason", "reason_code"]);
        writer.write_record(&record)?;
        Ok(Self {
            target: target.to_owned(),
            header_len: header.len(),
            writer,
        })
    }

    pub fn push(&mut self, row: &RejectedRow) -> std::io::Result<()> {
        let mut record = vec![row.line.to_string()];
        record.extend(row.values.iter().cloned());
        // Pad short rows so that the reason always lands under its header.
        while record.len() < self.header_len + 1 {
            record.push(String::new());
        }
        record.push(row.reason.clone());
        record.push(row.code.clone());
        self.writer.write_record(&record)?;
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        self.writer.flush()?;
        std::fs::rename(Self::partial(&self.target), &self.target)?;
        Ok(self.target)
    }

    pub fn abandon(self) {
        let _ = std::fs::remove_file(Self::partial(&self.target));
    }
}

/// Writes all of `rows` at once (for imports small enough to keep their rejects in memory).
pub fn write_rejected_csv(
    input: &Path,
    header: &[String],
    rows: &[RejectedRow],
) -> std::io::Result<PathBuf> {
    let mut file = RejectedFile::create(&rejected_path(input), header)?;
    for row in rows {
        file.push(row)?;
    }
    file.finish()
}
