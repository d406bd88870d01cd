//! Streaming sources of rows for large imports: CSV as UTF-8 or GB18030 (sniffed from the
//! first megabyte, then decoded as a stream that fails on any malformed byte rather than
//! guessing), or the first sheet of an XLSX workbook read cell by cell. Memory stays flat
//! however long the file is.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use calamine::{DataRef, Reader, Xlsx};
use encoding_rs::{Decoder, DecoderResult};

use super::TextError;
use super::text::{Encoding, UTF8_BOM, sniff_text};
use super::workbook::{self, LimitError, MAX_CELL_CHARS, MAX_COLUMNS, MAX_ROWS};

const SNIFF_BYTES: usize = 1024 * 1024;

/// One data row: its line (the header is line 1), its cells as text, and for XLSX which cells
/// held numbers (an 18-digit ID stored as a number has already lost its last digits).
#[derive(Debug, Clone)]
pub struct RawRow {
    pub line: u64,
    pub values: Vec<String>,
    pub numeric: Vec<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("文件第 {line} 行附近的编码与文件开头不一致，请整体另存为 UTF-8 或 GB18030")]
    MixedEncoding { line: u64 },
    #[error("无法读取 Excel 文件：{0}")]
    Xlsx(String),
    #[error("这是旧版 Excel 文件（.xls），请在 Excel 中另存为 .xlsx 或 CSV 后重新导入")]
    OldExcel,
    #[error("无法读取文件：{0}")]
    Io(#[from] io::Error),
    #[error("CSV 格式错误（第 {line} 行）：{message}")]
    Csv { line: u64, message: String },
    /// The file is beyond what a register can be: refused before anything large is allocated.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Counts the bytes read from the file, for a progress bar.
#[derive(Clone, Default)]
pub struct BytesRead(Arc<AtomicU64>);

impl BytesRead {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Counting<R> {
    inner: R,
    count: BytesRead,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// GB18030 or UTF-16 → UTF-8 as a `Read`, refusing malformed input instead of replacing it.
struct DecodeStream<R> {
    inner: R,
    decoder: Decoder,
    input: Vec<u8>,
    output: Vec<u8>,
    output_pos: usize,
    done: bool,
}

impl<R: Read> Read for DecodeStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.output_pos < self.output.len() {
                let n = buf.len().min(self.output.len() - self.output_pos);
                buf[..n].copy_from_slice(&self.output[self.output_pos..self.output_pos + n]);
                self.output_pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            self.input.resize(64 * 1024, 0);
            let read = self.inner.read(&mut self.input)?;
            let last = read == 0;
            // The decoder's own worst case (it may hold bytes of a character cut by the last
            // read), so every byte read is decoded in this one call.
            let needed = self
                .decoder
                .max_utf8_buffer_length_without_replacement(read)
                .ok_or_else(|| io::Error::other("input too large to decode"))?;
            self.output.resize(needed, 0);
            let (result, consumed, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.input[..read],
                &mut self.output,
                last,
            );
            match result {
                DecoderResult::Malformed(_, _) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed text"));
                }
                DecoderResult::OutputFull => {
                    return Err(io::Error::other("decoder output buffer too small"));
                }
                DecoderResult::InputEmpty => {}
            }
            debug_assert_eq!(consumed, read);
            self.output.truncate(written);
            self.output_pos = 0;
            self.done = last;
        }
    }
}

/// Reads `path` row by row and hands each non-blank row to `visit`, the header row first.
/// `visit` returns `false` to stop early. CSV or XLSX is decided from the first bytes, never
/// from the file name.
pub fn read_rows(
    path: &Path,
    counter: &BytesRead,
    mut visit: impl FnMut(RawRow) -> bool,
) -> Result<(), SourceError> {
    let mut file = File::open(path)?;
    let mut sample = vec![0u8; SNIFF_BYTES];
    let mut filled = 0;
    while filled < sample.len() {
        let n = file.read(&mut sample[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    sample.truncate(filled);
    if sample.starts_with(b"PK\x03\x04") {
        drop(file);
        return read_xlsx(path, counter, visit);
    }
    if sample.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
        return Err(SourceError::OldExcel);
    }
    let encoding = if sample.starts_with(b"\xFF\xFE") {
        Encoding::Utf16Le
    } else if sample.starts_with(b"\xFE\xFF") {
        Encoding::Utf16Be
    } else {
        sniff_text(&sample, filled < SNIFF_BYTES)?
    };
    counter.0.fetch_add(filled as u64, Ordering::Relaxed);
    let skip_bom = match encoding {
        Encoding::Utf16Le | Encoding::Utf16Be => 2,
        _ if sample.starts_with(UTF8_BOM) => UTF8_BOM.len(),
        _ => 0,
    };
    sample.drain(..skip_bom);
    let delimiter = delimiter(&sample, encoding);
    let bytes = io::Cursor::new(sample).chain(Counting {
        inner: file,
        count: counter.clone(),
    });
    // UTF-8 is read as it is; the CSV reader refuses malformed UTF-8 itself.
    let decoder =
        (encoding != Encoding::Utf8).then(|| encoding.charset().new_decoder_without_bom_handling());
    let text: Box<dyn Read> = match decoder {
        None => Box::new(bytes),
        Some(decoder) => Box::new(DecodeStream {
            inner: bytes,
            decoder,
            input: Vec::new(),
            output: Vec::new(),
            output_pos: 0,
            done: false,
        }),
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .delimiter(delimiter)
        .has_headers(false)
        .buffer_capacity(256 * 1024)
        .from_reader(text);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                if record.iter().all(|v| v.trim().is_empty()) {
                    continue;
                }
                if record.len() > MAX_COLUMNS as usize {
                    return Err(LimitError::TooManyColumns(record.len().to_string()).into());
                }
                if record
                    .iter()
                    .any(|v| v.len() > MAX_CELL_CHARS && v.chars().count() > MAX_CELL_CHARS)
                {
                    return Err(LimitError::CellTooLong.into());
                }
                let row = RawRow {
                    line: record.position().map_or(0, |p| p.line()),
                    values: record.iter().map(|v| v.trim().to_owned()).collect(),
                    numeric: Vec::new(),
                };
                if !visit(row) {
                    return Ok(());
                }
            }
            Err(e) => return Err(csv_error(e, encoding)),
        }
    }
}

/// A tab when the header line has tabs and no commas (Excel's "文本文件（制表符分隔）" and
/// "Unicode 文本"), else a comma.
fn delimiter(sample: &[u8], encoding: Encoding) -> u8 {
    let text = encoding.charset().decode_without_bom_handling(sample).0;
    let header = text.lines().next().unwrap_or("");
    if header.contains('\t') && !header.contains(',') {
        b'\t'
    } else {
        b','
    }
}

fn csv_error(e: csv::Error, encoding: Encoding) -> SourceError {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => SourceError::MixedEncoding { line },
        csv::ErrorKind::Io(io)
            if io.kind() == io::ErrorKind::InvalidData && encoding == Encoding::Gb18030 =>
        {
            SourceError::MixedEncoding { line }
        }
        _ => SourceError::Csv {
            line,
            message: e.to_string(),
        },
    }
}

/// The first worksheet, cell by cell; a row is handed on when the next one starts.
fn read_xlsx(
    path: &Path,
    counter: &BytesRead,
    visit: impl FnMut(RawRow) -> bool,
) -> Result<(), SourceError> {
    workbook::check_xlsx(BufReader::new(File::open(path)?))?;
    // The scan above bounds what calamine reads; should a file still trip it, the import
    // fails with a message instead of taking the process down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_checked_xlsx(path, counter, visit)
    }))
    .unwrap_or_else(|_| Err(SourceError::Xlsx("文件内容异常，无法读取".to_owned())))
}

fn read_checked_xlsx(
    path: &Path,
    counter: &BytesRead,
    mut visit: impl FnMut(RawRow) -> bool,
) -> Result<(), SourceError> {
    let xlsx_error = |e: calamine::XlsxError| SourceError::Xlsx(e.to_string());
    let file = BufReader::new(File::open(path)?);
    let mut workbook: Xlsx<_> = Xlsx::new(file).map_err(xlsx_error)?;
    let sheet = workbook
        .sheet_names()
        .first()
        .cloned()
        .ok_or_else(|| SourceError::Xlsx("工作簿中没有工作表".to_owned()))?;
    let mut cells = workbook
        .worksheet_cells_reader(&sheet)
        .map_err(xlsx_error)?;
    counter.0.store(
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        Ordering::Relaxed,
    );
    let mut current: Option<RawRow> = None;
    let mut hand_on = |row: RawRow| -> bool {
        if row.values.iter().all(String::is_empty) {
            return true;
        }
        visit(row)
    };
    while let Some(cell) = cells.next_cell().map_err(xlsx_error)? {
        let (row, col) = cell.get_position();
        if col >= MAX_COLUMNS {
            return Err(LimitError::TooManyColumns((col + 1).to_string()).into());
        }
        if row >= MAX_ROWS {
            return Err(LimitError::TooManyRows.into());
        }
        let line = u64::from(row) + 1;
        if current.as_ref().is_none_or(|r| r.line != line) {
            if let Some(done) = current.take()
                && !hand_on(done)
            {
                return Ok(());
            }
            current = Some(RawRow {
                line,
                values: Vec::new(),
                numeric: Vec::new(),
            });
        }
        let target = current.as_mut().expect("set above");
        let col = col as usize;
        if target.values.len() <= col {
            target.values.resize(col + 1, String::new());
            target.numeric.resize(col + 1, false);
        }
        let (text, numeric) = cell_text(cell.get_value());
        target.values[col] = text;
        target.numeric[col] = numeric;
    }
    if let Some(done) = current.take() {
        hand_on(done);
    }
    Ok(())
}

fn cell_text(value: &DataRef<'_>) -> (String, bool) {
    match value {
        DataRef::Empty => (String::new(), false),
        DataRef::String(s) => (s.trim().to_owned(), false),
        DataRef::SharedString(s) => (s.trim().to_owned(), false),
        DataRef::Int(i) => (i.to_string(), true),
        DataRef::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                (format!("{}", *f as i64), true)
            } else {
                (f.to_string(), true)
            }
        }
        DataRef::Bool(b) => (b.to_string(), false),
        DataRef::DateTime(dt) => match dt.as_datetime() {
            Some(d) => (d.date().format("%Y-%m-%d").to_string(), false),
            None => (String::new(), false),
        },
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => (s.clone(), false),
        DataRef::Error(e) => (format!("#{e}"), false),
    }
}
