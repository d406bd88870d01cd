//! Bounds on what a workbook may make the reader allocate. Every XML part of an XLSX file is
//! decompressed once and scanned before calamine opens it: a file is refused when a cell
//! reference lies beyond the columns or rows a register can have, when a cell or a shared
//! string is longer than Excel itself allows, when one XML token (a text, a tag, a comment)
//! is absurdly long, or when the parts decompress to more than a register could hold.
//! calamine reserves memory from counts and references it reads, so none may reach it
//! unchecked.

use std::cell::{Cell, RefCell};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::rc::Rc;

use quick_xml::events::Event;

/// Columns a resident file may use (a register needs a few dozen).
pub const MAX_COLUMNS: u32 = 256;
/// Rows of a worksheet (Excel's own limit).
pub const MAX_ROWS: u32 = 1_048_576;
/// Characters in one cell (Excel's own limit).
pub const MAX_CELL_CHARS: usize = 32_767;
/// Distinct shared strings: calamine reserves room for the count the file declares.
const MAX_SHARED_STRINGS: u64 = 10_000_000;
/// Parts in the archive.
const MAX_PARTS: usize = 10_000;
/// One XML token (text between tags, a tag with its attributes, a comment): a cell of
/// 32,767 characters written as character references is below 300 KiB.
const MAX_TOKEN_BYTES: u64 = 1024 * 1024;
/// Everything decompressed (the first worksheet is streamed, but scanned here first).
const MAX_TOTAL_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The shared strings, which calamine holds in memory.
const MAX_SHARED_STRINGS_BYTES: u64 = 512 * 1024 * 1024;
/// Any other part (styles, workbook, relationships), also held in memory.
const MAX_OTHER_PART_BYTES: u64 = 64 * 1024 * 1024;
/// Decompressed ÷ compressed bytes (of the part, so far) beyond which a part is a zip bomb;
/// spreadsheet XML compresses about ten to one, very repetitive sheets a few times more.
const MAX_RATIO: u64 = 200;
/// A part may decompress this much before its ratio is looked at.
const RATIO_ALLOWANCE: u64 = 2 * 1024 * 1024;

/// Why a workbook was refused (zh-CN, shown to the user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("表格使用了第 {0} 列，超过上限 {MAX_COLUMNS} 列，请删除多余的列后重新上传")]
    TooManyColumns(String),
    #[error("工作表超过 {MAX_ROWS} 行（Excel 的上限），请拆分文件")]
    TooManyRows,
    #[error("工作表中的单元格引用无效：{0}")]
    BadReference(String),
    #[error("有单元格的内容超过 {MAX_CELL_CHARS} 个字符（Excel 的上限）")]
    CellTooLong,
    #[error("共享字符串超过 {MAX_SHARED_STRINGS} 个")]
    TooManySharedStrings,
    #[error("文件中含有超长的内容（单段超过 1 MiB），不是正常的表格文件")]
    TokenTooLong,
    #[error("文件解压后过大（{0}），请拆分文件")]
    TooLarge(&'static str),
    #[error("文件的压缩比异常（疑似压缩炸弹），已拒绝")]
    Bomb,
    #[error("压缩包中的文件过多（上限 {MAX_PARTS} 个），不是正常的 Excel 文件")]
    TooManyParts,
    #[error("文件含有不允许的 XML 声明（DOCTYPE 等），不是正常的 Excel 文件")]
    Declaration,
    #[error("Excel 文件已损坏，或使用了加密或不支持的压缩方式：{0}")]
    Corrupt(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Worksheet,
    SharedStrings,
    Other,
}

/// Scans every XML part of the XLSX archive `reader` against the limits above.
pub fn check_xlsx<R: Read + Seek>(reader: R) -> Result<(), LimitError> {
    // The compressed bytes taken from the file, so that a bomb is told by what it has
    // produced from what it has consumed, long before its whole declared size.
    let consumed = Rc::new(Cell::new(0u64));
    let reader = Consumed {
        inner: reader,
        count: consumed.clone(),
    };
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|_| LimitError::Corrupt("无法读取压缩目录"))?;
    if archive.len() > MAX_PARTS {
        return Err(LimitError::TooManyParts);
    }
    let mut total = 0u64;
    for index in 0..archive.len() {
        let entry = archive
            .by_index(index)
            .map_err(|_| LimitError::Corrupt("无法打开其中的文件"))?;
        let name = entry
            .name()
            .map_err(|_| LimitError::Corrupt("文件名无效"))?
            .to_ascii_lowercase();
        // calamine reads only XML parts; pictures and embedded objects are never opened.
        if !(name.ends_with(".xml") || name.ends_with(".rels")) {
            continue;
        }
        let part = if name.contains("worksheets/") {
            Part::Worksheet
        } else if name.ends_with("sharedstrings.xml") {
            Part::SharedStrings
        } else {
            Part::Other
        };
        let (cap, what) = match part {
            Part::Worksheet => (MAX_TOTAL_BYTES, "超过 4 GiB"),
            Part::SharedStrings => (MAX_SHARED_STRINGS_BYTES, "共享字符串超过 512 MiB"),
            Part::Other => (MAX_OTHER_PART_BYTES, "样式或工作簿部分超过 64 MiB"),
        };
        if entry.size() > cap {
            return Err(LimitError::TooLarge(what));
        }
        let violation = Rc::new(RefCell::new(None));
        let guard = Guard {
            consumed: consumed.clone(),
            consumed_before: consumed.get(),
            inner: entry,
            read: 0,
            total_before: total,
            cap,
            what,
            lexer: Lexer::default(),
            violation: violation.clone(),
        };
        let read = scan_part(guard, part, &violation)?;
        total += read;
    }
    Ok(())
}

/// Parses one part, checking what calamine would allocate from; returns its size.
fn scan_part<R: Read>(
    guard: Guard<R>,
    part: Part,
    violation: &Rc<RefCell<Option<LimitError>>>,
) -> Result<u64, LimitError> {
    let counted = Rc::new(RefCell::new(0u64));
    let mut reader = quick_xml::Reader::from_reader(BufReader::with_capacity(
        64 * 1024,
        Counted {
            inner: guard,
            count: counted.clone(),
        },
    ));
    let mut buf = Vec::new();
    let mut cell_chars: Option<usize> = None;
    let mut string_chars: Option<usize> = None;
    let mut strings = 0u64;
    loop {
        buf.clear();
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(_) => {
                return Err(violation
                    .borrow_mut()
                    .take()
                    .unwrap_or(LimitError::Corrupt("XML 格式错误")));
            }
        };
        let add = |open: &mut Option<usize>, chars: usize| -> Result<(), LimitError> {
            if let Some(count) = open {
                *count += chars;
                if *count > MAX_CELL_CHARS {
                    return Err(LimitError::CellTooLong);
                }
            }
            Ok(())
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let open = matches!(event, Event::Start(_));
                match (part, e.local_name().as_ref()) {
                    (Part::Worksheet, "c") => {
                        if let Some(r) = attribute(e, "r")? {
                            check_cell(&r)?;
                        }
                        if open {
                            cell_chars = Some(0);
                        }
                    }
                    (Part::Worksheet, "row") => {
                        if let Some(r) = attribute(e, "r")? {
                            check_row(&r)?;
                        }
                    }
                    (Part::Worksheet, "dimension") => {
                        if let Some(r) = attribute(e, "ref")? {
                            check_dimension(&r)?;
                        }
                    }
                    (Part::SharedStrings, "sst") => {
                        for name in ["count", "uniqueCount"] {
                            if let Some(n) = attribute(e, name)?
                                && !matches!(n.parse::<u64>(), Ok(n) if n <= MAX_SHARED_STRINGS)
                            {
                                return Err(LimitError::TooManySharedStrings);
                            }
                        }
                    }
                    (Part::SharedStrings, "si") => {
                        strings += 1;
                        if strings > MAX_SHARED_STRINGS {
                            return Err(LimitError::TooManySharedStrings);
                        }
                        if open {
                            string_chars = Some(0);
                        }
                    }
                    _ => {}
                }
            }
            Event::End(ref e) => match e.local_name().as_ref() {
                "c" => cell_chars = None,
                "si" => string_chars = None,
                _ => {}
            },
            Event::Text(ref t) => {
                let chars = t.chars().count();
                add(&mut cell_chars, chars)?;
                add(&mut string_chars, chars)?;
            }
            Event::CData(ref t) => {
                let chars = t.chars().count();
                add(&mut cell_chars, chars)?;
                add(&mut string_chars, chars)?;
            }
            Event::GeneralRef(_) => {
                add(&mut cell_chars, 1)?;
                add(&mut string_chars, 1)?;
            }
            Event::DocType(_) => return Err(LimitError::Declaration),
            Event::Eof => break,
            _ => {}
        }
    }
    let read = *counted.borrow();
    Ok(read)
}

fn attribute(
    e: &quick_xml::events::BytesStart<'_>,
    name: &str,
) -> Result<Option<String>, LimitError> {
    match e.try_get_attribute(name) {
        Ok(Some(a)) => Ok(Some(a.value.into_owned())),
        Ok(None) => Ok(None),
        Err(_) => Err(LimitError::Corrupt("XML 属性格式错误")),
    }
}

fn shown(reference: &str) -> String {
    reference.chars().take(20).collect()
}

/// An `A1` reference split into its 1-based column and row, each within Excel's limits
/// (XFD, 1,048,576).
fn position(reference: &str) -> Result<(u32, u32), LimitError> {
    let bad = || LimitError::BadReference(shown(reference));
    let letters = reference
        .bytes()
        .take_while(u8::is_ascii_alphabetic)
        .count();
    let digits = &reference[letters..];
    if letters == 0 || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if letters > 3 {
        return Err(LimitError::TooManyColumns(shown(&reference[..letters])));
    }
    let column = reference[..letters].bytes().fold(0u32, |column, b| {
        column * 26 + u32::from(b.to_ascii_uppercase() - b'A') + 1
    });
    if column > 16_384 {
        return Err(LimitError::TooManyColumns(shown(&reference[..letters])));
    }
    let row = parse_row(digits).ok_or_else(bad)?;
    Ok((column, row))
}

fn parse_row(digits: &str) -> Option<u32> {
    if digits.len() > 7 {
        return None;
    }
    digits.parse::<u32>().ok().filter(|row| *row >= 1)
}

fn check_cell(reference: &str) -> Result<(), LimitError> {
    let (column, row) = position(reference)?;
    if column > MAX_COLUMNS {
        let letters: String = reference
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        return Err(LimitError::TooManyColumns(letters));
    }
    if row > MAX_ROWS {
        return Err(LimitError::TooManyRows);
    }
    Ok(())
}

fn check_row(reference: &str) -> Result<(), LimitError> {
    if reference.len() > 7 {
        return Err(LimitError::TooManyRows);
    }
    match parse_row(reference) {
        Some(row) if row <= MAX_ROWS => Ok(()),
        Some(_) => Err(LimitError::TooManyRows),
        None => Err(LimitError::BadReference(shown(reference))),
    }
}

/// The declared used range need not be tight, but it must be a valid Excel range whose end
/// is not before its start (calamine subtracts one from the other).
fn check_dimension(reference: &str) -> Result<(), LimitError> {
    let mut parts = reference.split(':');
    let start = position(parts.next().unwrap_or(""))?;
    if let Some(end) = parts.next() {
        let end = position(end)?;
        if end.0 < start.0 || end.1 < start.1 || parts.next().is_some() {
            return Err(LimitError::BadReference(shown(reference)));
        }
    }
    Ok(())
}

/// Counts the bytes read from the archive file.
struct Consumed<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Consumed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for Consumed<R> {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        self.inner.seek(position)
    }
}

/// Counts the bytes handed on.
struct Counted<R> {
    inner: R,
    count: Rc<RefCell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.count.borrow_mut() += n as u64;
        Ok(n)
    }
}

/// A decompressing part, stopped as soon as it breaks a limit (the reason is kept in
/// `violation`, since the XML reader only passes on that reading failed).
struct Guard<R> {
    inner: R,
    consumed: Rc<Cell<u64>>,
    consumed_before: u64,
    read: u64,
    total_before: u64,
    cap: u64,
    what: &'static str,
    lexer: Lexer,
    violation: Rc<RefCell<Option<LimitError>>>,
}

impl<R: Read> Guard<R> {
    fn check(&mut self, bytes: &[u8]) -> Result<(), LimitError> {
        self.read += bytes.len() as u64;
        if self.read > self.cap {
            return Err(LimitError::TooLarge(self.what));
        }
        if self.total_before + self.read > MAX_TOTAL_BYTES {
            return Err(LimitError::TooLarge("超过 4 GiB"));
        }
        let compressed = self.consumed.get().saturating_sub(self.consumed_before);
        if self.read > RATIO_ALLOWANCE && self.read / compressed.max(1) > MAX_RATIO {
            return Err(LimitError::Bomb);
        }
        self.lexer.feed(bytes)
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(limit) = self.check(&buf[..n]) {
            *self.violation.borrow_mut() = Some(limit);
            return Err(io::Error::other("workbook limit"));
        }
        Ok(n)
    }
}

#[derive(Default, Clone, Copy)]
enum State {
    #[default]
    Text,
    /// After `<`, before it is known what follows.
    Open,
    Tag {
        quote: u8,
    },
    Comment {
        tail: [u8; 2],
    },
    CData {
        tail: [u8; 2],
    },
    Instruction {
        last: u8,
    },
}

/// Splits XML bytes into tokens just enough to bound the length of each: the XML reader
/// buffers a whole token (a text, a tag with its attributes, a comment) before it returns.
#[derive(Default)]
struct Lexer {
    state: State,
    run: u64,
    prefix: [u8; 8],
    prefix_len: usize,
}

impl Lexer {
    fn feed(&mut self, bytes: &[u8]) -> Result<(), LimitError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if let State::Text = self.state {
                // Fast path: skip to the next tag.
                match rest.iter().position(|b| *b == b'<') {
                    Some(at) => {
                        self.grow(at as u64)?;
                        self.state = State::Open;
                        self.prefix_len = 0;
                        self.run = 1;
                        rest = &rest[at + 1..];
                    }
                    None => {
                        self.grow(rest.len() as u64)?;
                        rest = &[];
                    }
                }
                continue;
            }
            let b = rest[0];
            rest = &rest[1..];
            self.grow(1)?;
            self.state = match self.state {
                State::Text => unreachable!("handled above"),
                State::Open => self.open(b)?,
                State::Tag { quote: 0 } => match b {
                    b'"' | b'\'' => State::Tag { quote: b },
                    b'>' => self.end(),
                    _ => State::Tag { quote: 0 },
                },
                State::Tag { quote } => State::Tag {
                    quote: if b == quote { 0 } else { quote },
                },
                State::Comment { tail } if tail == *b"--" && b == b'>' => self.end(),
                State::Comment { tail } => State::Comment { tail: [tail[1], b] },
                State::CData { tail } if tail == *b"]]" && b == b'>' => self.end(),
                State::CData { tail } => State::CData { tail: [tail[1], b] },
                State::Instruction { last } if last == b'?' && b == b'>' => self.end(),
                State::Instruction { .. } => State::Instruction { last: b },
            };
        }
        Ok(())
    }

    fn grow(&mut self, by: u64) -> Result<(), LimitError> {
        self.run += by;
        if self.run > MAX_TOKEN_BYTES {
            return Err(LimitError::TokenTooLong);
        }
        Ok(())
    }

    fn end(&mut self) -> State {
        self.run = 0;
        State::Text
    }

    /// The bytes after `<`: a comment, a CDATA section, a processing instruction or a tag.
    /// Any other declaration (a DOCTYPE, with its entities) has no place in a workbook.
    fn open(&mut self, b: u8) -> Result<State, LimitError> {
        if self.prefix_len == 0 && b != b'!' {
            return Ok(match b {
                b'?' => State::Instruction { last: 0 },
                b'>' => self.end(),
                b'"' | b'\'' => State::Tag { quote: b },
                _ => State::Tag { quote: 0 },
            });
        }
        self.prefix[self.prefix_len] = b;
        self.prefix_len += 1;
        let prefix = &self.prefix[..self.prefix_len];
        Ok(if prefix == b"!--" {
            State::Comment { tail: [0, 0] }
        } else if prefix == b"![CDATA[" {
            State::CData { tail: [0, 0] }
        } else if b"!--".starts_with(prefix) || b"![CDATA[".starts_with(prefix) {
            State::Open
        } else {
            return Err(LimitError::Declaration);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(xml: &[u8]) -> Result<(), LimitError> {
        let mut lexer = Lexer::default();
        for chunk in xml.chunks(7) {
            lexer.feed(chunk)?;
        }
        Ok(())
    }

    #[test]
    fn references_are_read_within_excels_limits() {
        assert_eq!(position("A1"), Ok((1, 1)));
        assert_eq!(position("xfd1048576"), Ok((16_384, 1_048_576)));
        assert!(matches!(
            position("FXSHRXW2"),
            Err(LimitError::TooManyColumns(_))
        ));
        assert!(matches!(
            position("XFE1"),
            Err(LimitError::TooManyColumns(_))
        ));
        for bad in ["", "A", "12", "A0", "A12345678", "A1B", "$A$1"] {
            assert!(
                matches!(position(bad), Err(LimitError::BadReference(_))),
                "{bad}"
            );
        }
        assert!(check_cell("IV5").is_ok());
        assert!(matches!(
            check_cell("IW5"),
            Err(LimitError::TooManyColumns(_))
        ));
        assert_eq!(check_cell("A1048577"), Err(LimitError::TooManyRows));
        assert!(check_dimension("A1:XFD1048576").is_ok());
        assert!(check_dimension("B2:A1").is_err());
        assert!(check_row("99999999999").is_err());
    }

    #[test]
    fn tokens_are_bounded_wherever_they_occur() {
        assert!(
            lex(b"<?xml version=\"1.0\"?><a b='x>y'><!-- <c> --><![CDATA[<d>]]>text</a>").is_ok()
        );
        let long = vec![b'x'; MAX_TOKEN_BYTES as usize + 1];
        let mut text = b"<t>".to_vec();
        text.extend(&long);
        assert_eq!(lex(&text), Err(LimitError::TokenTooLong));
        let mut attribute = b"<c r=\"".to_vec();
        attribute.extend(long.iter().map(|_| b'<'));
        assert_eq!(lex(&attribute), Err(LimitError::TokenTooLong));
        let mut comment = b"<!--".to_vec();
        comment.extend(std::iter::repeat_n(&b"<a>"[..], 400_000).flatten());
        assert_eq!(lex(&comment), Err(LimitError::TokenTooLong));
        assert_eq!(
            lex(b"<!DOCTYPE x [<!ENTITY a \"b\">]>"),
            Err(LimitError::Declaration)
        );
    }
}
