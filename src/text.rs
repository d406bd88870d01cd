//! Checks on text taken in from people and files, shared by every module that stores it:
//! PostgreSQL cannot store U+0000 at all, and a name never holds a control character.

/// The reason (zh-CN) a value holding U+0000 is refused.
pub const NUL_REASON: &str = "内容含有空字符（U+0000），请删除后重试";

/// The reason (zh-CN) a name holding a control character is refused.
pub const CONTROL_REASON: &str = "名称不能含有换行、制表符等控制字符";

/// Whether `value` holds U+0000, which PostgreSQL refuses to store in text.
pub fn has_nul(value: &str) -> bool {
    value.contains('\0')
}

/// Whether `value` may be stored as a name (of a person, a user, an area): no control
/// characters at all (line breaks, tabs, NUL, escape sequences).
pub fn is_clean_name(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

/// For a cell of an imported file: the reason to reject it when it holds U+0000.
pub fn nul_in_cell(value: &str) -> Option<&'static str> {
    has_nul(value).then_some(NUL_REASON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_control_characters_are_found() {
        assert!(has_nul("a\0b"));
        assert!(!has_nul("玛依拉·胡安"));
        assert!(is_clean_name("玛依拉·胡安"));
        assert!(!is_clean_name("张\u{1b}[31m三"));
        assert!(!is_clean_name("张\n三"));
        assert_eq!(nul_in_cell("x\0"), Some(NUL_REASON));
        assert_eq!(nul_in_cell("x"), None);
    }
}
