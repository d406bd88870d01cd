//! Checks on what people type and files hold, shared by every domain module that takes it in:
//! names and short texts, dates as registers write them, area codes. Each answers with the
//! validation error the API shows.

use chrono::NaiveDate;

use crate::area::AreaCode;
use crate::error::{AppError, AppResult};

/// A required name or short text: trimmed, not empty, at most `max` characters, no control
/// characters. `field` names it in the error (zh-CN).
pub fn check_name(raw: &str, field: &str, max: usize) -> AppResult<String> {
    let value = raw.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(AppError::validation(
            "invalid_value",
            format!("{field} 不能为空，且不超过 {max} 个字"),
        ));
    }
    Ok(value.to_owned())
}

/// An optional name or short text: absent or blank is `None`, anything else as [`check_name`].
pub fn optional_name(raw: Option<&str>, field: &str, max: usize) -> AppResult<Option<String>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => check_name(value, field, max).map(Some),
    }
}

/// A date as registers write it. Only years 1900 to 9999: chrono's `%Y` also reads year 0
/// and signed years, which no register means and which PostgreSQL would refuse as text.
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    use chrono::Datelike;
    let raw = raw.trim();
    ["%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日"]
        .iter()
        .find_map(|format| NaiveDate::parse_from_str(raw, format).ok())
        .filter(|date| (1900..=9999).contains(&date.year()))
}

/// An area code given as a filter or a field (12 digits).
pub fn parse_area(raw: &str) -> AppResult<AreaCode> {
    AreaCode::parse(raw).map_err(|e| AppError::validation("invalid_area_code", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(check_name("  张三 ", "姓名", 50).unwrap(), "张三");
        assert!(check_name("   ", "姓名", 50).is_err());
        assert!(check_name("张\n三", "姓名", 50).is_err());
        assert!(check_name("一二三", "姓名", 2).is_err());
        assert_eq!(optional_name(Some(" "), "地址", 200).unwrap(), None);
        assert_eq!(optional_name(None, "地址", 200).unwrap(), None);
        assert_eq!(
            optional_name(Some(" 北京路 "), "地址", 200).unwrap(),
            Some("北京路".to_owned())
        );
    }

    #[test]
    fn dates_are_read_in_the_registers_formats_and_only_in_plausible_years() {
        for raw in [
            "2023-05-06",
            "2023/5/6",
            "2023.05.06",
            "20230506",
            "2023年5月6日",
            " 2023-05-06 ",
        ] {
            assert_eq!(
                parse_date(raw).map(|d| d.to_string()).as_deref(),
                Some("2023-05-06"),
                "{raw}"
            );
        }
        assert!(parse_date("1900-01-01").is_some());
        for raw in [
            "",
            "2023-02-29",
            "1899-12-31",
            "0000-01-01",
            "00000101",
            "-0001-01-01",
            "+12345-01-01",
            "2023-13-01",
            "六月",
        ] {
            assert_eq!(parse_date(raw), None, "{raw}");
        }
    }
}
