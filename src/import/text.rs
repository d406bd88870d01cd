//! Character-set detection for uploaded text files: UTF-8 (with or without BOM) or GB18030
//! (which covers GBK and GB2312, as Excel saves "CSV" on Chinese Windows). Detected from the
//! bytes, never guessed from a file name.

use encoding_rs::{GB18030, UTF_8};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("文件为空")]
    Empty,
    #[error("文件不是文本文件（含有二进制内容）")]
    Binary,
    #[error("无法识别文件编码，请另存为 UTF-8 或 GB18030 编码的 CSV")]
    UnknownEncoding,
}

/// Decodes `bytes` as UTF-8 when they are valid UTF-8 (a BOM is dropped), else as GB18030
/// when that decodes without error; anything else is refused rather than half-read.
pub fn decode_text(bytes: &[u8]) -> Result<String, TextError> {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(TextError::Empty);
    }
    if body.contains(&0) {
        return Err(TextError::Binary);
    }
    if let Some(text) = UTF_8.decode_without_bom_handling_and_without_replacement(body) {
        return Ok(text.into_owned());
    }
    if let Some(text) = GB18030.decode_without_bom_handling_and_without_replacement(body) {
        // GB18030 maps almost any byte sequence; control characters other than line breaks
        // and tabs mean the file was not text in the first place.
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(TextError::Binary);
        }
        return Ok(text.into_owned());
    }
    Err(TextError::UnknownEncoding)
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
