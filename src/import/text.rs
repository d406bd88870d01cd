//! Character-set detection for uploaded text files: UTF-8 (with or without BOM) or GB18030
//! (which covers GBK and GB2312, as Excel saves "CSV" on Chinese Windows), for files read whole
//! and for the import stream alike. Detected from the bytes, never guessed from a file name.

use encoding_rs::{GB18030, UTF_8, UTF_16BE, UTF_16LE};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("文件为空")]
    Empty,
    #[error("文件不是文本文件（含有二进制内容）")]
    Binary,
    #[error("无法识别文件编码，请另存为 UTF-8 或 GB18030 编码的 CSV")]
    UnknownEncoding,
}

/// The character set of a text file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Gb18030,
    /// With a byte-order mark, as Excel saves "Unicode 文本" (tab-separated); told by that
    /// mark before anything is sniffed.
    Utf16Le,
    Utf16Be,
}

impl Encoding {
    /// The character set to decode with (without BOM handling: a BOM is dropped before).
    pub fn charset(self) -> &'static encoding_rs::Encoding {
        match self {
            Encoding::Utf8 => UTF_8,
            Encoding::Gb18030 => GB18030,
            Encoding::Utf16Le => UTF_16LE,
            Encoding::Utf16Be => UTF_16BE,
        }
    }
}

/// The UTF-8 byte-order mark Excel writes before "CSV UTF-8".
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decides between UTF-8 (a BOM is passed over) and GB18030 from the first bytes of a text
/// file, or from all of it when `whole_file`: UTF-8 when they are valid UTF-8, else GB18030
/// when that decodes without error into text; anything else is refused rather than
/// half-read.
pub fn sniff_text(sample: &[u8], whole_file: bool) -> Result<Encoding, TextError> {
    let body = sample.strip_prefix(UTF8_BOM).unwrap_or(sample);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(TextError::Empty);
    }
    if body.contains(&0) {
        return Err(TextError::Binary);
    }
    match std::str::from_utf8(body) {
        Ok(_) => return Ok(Encoding::Utf8),
        // A multi-byte character cut by the end of the sample is still UTF-8.
        Err(e) if e.error_len().is_none() && !whole_file => return Ok(Encoding::Utf8),
        Err(_) => {}
    }
    // Drop a possibly cut character at the end of the sample before trying GB18030.
    let trimmed = if whole_file {
        body
    } else {
        &body[..body.len().saturating_sub(4)]
    };
    match GB18030.decode_without_bom_handling_and_without_replacement(trimmed) {
        // GB18030 maps almost any byte sequence; control characters other than line breaks
        // and tabs mean the file was not text in the first place.
        Some(text)
            if !text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
        {
            Ok(Encoding::Gb18030)
        }
        Some(_) => Err(TextError::Binary),
        None => Err(TextError::UnknownEncoding),
    }
}

/// Decodes a whole file read into memory, in the encoding [`sniff_text`] finds (a BOM is
/// dropped).
pub fn decode_text(bytes: &[u8]) -> Result<String, TextError> {
    let encoding = sniff_text(bytes, true)?;
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    Ok(encoding
        .charset()
        .decode_without_bom_handling(body)
        .0
        .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_with_and_without_bom_and_gb18030_decode_to_the_same_text() {
        let text = "区划代码,名称\n654025100000,新源镇\n";
        let (gbk, _, _) = GB18030.encode(text);
        let mut with_bom = b"\xEF\xBB\xBF".to_vec();
        with_bom.extend_from_slice(text.as_bytes());
        assert_eq!(decode_text(text.as_bytes()).unwrap(), text);
        assert_eq!(decode_text(&with_bom).unwrap(), text);
        assert_eq!(decode_text(&gbk).unwrap(), text);
    }

    #[test]
    fn empty_binary_and_undecodable_input_is_refused() {
        assert_eq!(decode_text(b""), Err(TextError::Empty));
        assert_eq!(decode_text(b"\xEF\xBB\xBF \n"), Err(TextError::Empty));
        assert_eq!(
            decode_text(b"PK\x03\x04\x00\x00junk"),
            Err(TextError::Binary)
        );
        assert_eq!(
            decode_text(b"\x81\x30\xff\xfe"),
            Err(TextError::UnknownEncoding)
        );
        assert_eq!(
            decode_text(b"ab\x81\x30\x81\x01cd"),
            Err(TextError::UnknownEncoding)
        );
    }
}
