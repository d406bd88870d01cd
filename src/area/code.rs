//! `AreaCode`: a 12-digit statistical area code (统计用区划代码) and what its digits say.

use std::fmt;

use entities::areas::AreaLevel;

/// A valid 12-digit area code of a county, township or village. `XXXXXX000000` is a county,
/// `XXXXXXXXX000` a township (乡/镇/场), anything else a village or community under the township
/// named by its first 9 digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AreaCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AreaCodeError {
    #[error("区划代码应为 12 位数字")]
    Format,
    #[error("区划代码 {0} 是省或地州级代码，不是县级及以下区划")]
    AboveCounty(String),
}

impl AreaCode {
    pub fn parse(raw: &str) -> Result<Self, AreaCodeError> {
        let code = raw.trim();
        if code.len() != 12 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AreaCodeError::Format);
        }
        // Digits 5–6 are the county within its prefecture; "00" names the prefecture itself.
        if &code[4..6] == "00" {
            return Err(AreaCodeError::AboveCounty(code.to_owned()));
        }
        Ok(Self(code.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn level(&self) -> AreaLevel {
        if &self.0[6..] == "000000" {
            AreaLevel::County
        } else if &self.0[9..] == "000" {
            AreaLevel::Township
        } else {
            AreaLevel::Village
        }
    }

    /// The area directly above: a village's township, a township's county; none for a county.
    pub fn parent(&self) -> Option<AreaCode> {
        match self.level() {
            AreaLevel::County => None,
            AreaLevel::Township => Some(Self(format!("{}000000", &self.0[..6]))),
            AreaLevel::Village => Some(Self(format!("{}000", &self.0[..9]))),
        }
    }

    /// The digits every code under this area (itself included) starts with.
    pub fn prefix(&self) -> &str {
        match self.level() {
            AreaLevel::County => &self.0[..6],
            AreaLevel::Township => &self.0[..9],
            AreaLevel::Village => &self.0,
        }
    }

    /// Smallest and largest code under this area, for an index range scan.
    pub fn code_range(&self) -> (String, String) {
        let prefix = self.prefix();
        let pad = 12 - prefix.len();
        (
            format!("{prefix}{}", "0".repeat(pad)),
            format!("{prefix}{}", "9".repeat(pad)),
        )
    }

    /// Whether `other` is this area or lies under it.
    pub fn contains(&self, other: &AreaCode) -> bool {
        other.0.starts_with(self.prefix())
    }
}

impl fmt::Display for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<AreaCode> for String {
    fn from(code: AreaCode) -> Self {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_parents_follow_the_digits() {
        let county = AreaCode::parse("654025000000").unwrap();
        let township = AreaCode::parse("654025100000").unwrap();
        let village = AreaCode::parse(" 654025100201 ").unwrap();
        assert_eq!(county.level(), AreaLevel::County);
        assert_eq!(township.level(), AreaLevel::Township);
        assert_eq!(village.level(), AreaLevel::Village);
        assert_eq!(village.as_str(), "654025100201");
        assert_eq!(village.parent(), Some(township.clone()));
        assert_eq!(township.parent(), Some(county.clone()));
        assert_eq!(county.parent(), None);
    }

    #[test]
    fn containment_is_by_prefix_of_the_level() {
        let county = AreaCode::parse("654025000000").unwrap();
        let township = AreaCode::parse("654025100000").unwrap();
        let village = AreaCode::parse("654025100201").unwrap();
        let other_township = AreaCode::parse("654025101000").unwrap();
        assert!(county.contains(&village));
        assert!(township.contains(&village));
        assert!(township.contains(&township));
        assert!(!other_township.contains(&village));
        assert!(!village.contains(&township));
        assert_eq!(
            township.code_range(),
            ("654025100000".to_owned(), "654025100999".to_owned())
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        for bad in [
            "",
            "65402510020",
            "6540251002011",
            "65402510020a",
            "６５４０２５１００２０１",
        ] {
            assert_eq!(AreaCode::parse(bad), Err(AreaCodeError::Format), "{bad}");
        }
        assert!(matches!(
            AreaCode::parse("654000000000"),
            Err(AreaCodeError::AboveCounty(_))
        ));
    }
}
