//! The vocabularies of the registry: mobile numbers, languages, migrant types, special
//! situations. Each parses the Chinese and the English words of the import contract.

use std::fmt;

pub use crate::vocabulary::Language;
use crate::vocabulary::vocabulary;

/// A mainland mobile number, 11 digits starting with 1[3-9]; `+86`/`86`, spaces and dashes
/// are accepted on input. `Debug` masks it; [`MobilePhone::expose`] gives the digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MobilePhone(String);

impl MobilePhone {
    pub fn parse(raw: &str) -> Option<Self> {
        let digits: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .map(|c| match c {
                '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
                other => other,
            })
            .collect();
        let digits = digits
            .strip_prefix("+86")
            .or_else(|| digits.strip_prefix("0086"))
            .or_else(|| {
                (digits.len() == 13)
                    .then(|| digits.strip_prefix("86"))
                    .flatten()
            })
            .unwrap_or(&digits);
        let b = digits.as_bytes();
        let valid = b.len() == 11
            && b.iter().all(u8::is_ascii_digit)
            && b[0] == b'1'
            && (b'3'..=b'9').contains(&b[1]);
        valid.then(|| Self(digits.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `138****5678`
    pub fn masked(&self) -> String {
        format!("{}****{}", &self.0[..3], &self.0[7..])
    }
}

/// Marks written between the parts of a Uyghur or Kazakh name in Chinese script (玛依拉·胡安):
/// the middle dot and what people type for it.
pub const NAME_SEPARATORS: &[char] = &[
    '·', '•', '.', '・', '‧', '･', '．', '∙', '⋅', '‐', ' ', '\u{3000}',
];

/// A name's parts without the separators between them, so `玛依拉胡安`, `玛依拉•胡安` and
/// `玛依拉.胡安` all find `玛依拉·胡安`.
pub fn name_key(name: &str) -> String {
    name.chars()
        .filter(|c| !NAME_SEPARATORS.contains(c))
        .collect()
}

/// A name as stored: the dots people type between the parts of a name become the middle dot
/// (`玛依拉•胡安` → `玛依拉·胡安`), so one person is written one way whatever the file used.
pub fn canonical_name(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '•' | '.' | '・' | '‧' | '･' | '．' | '∙' | '⋅' => '·',
            other => other,
        })
        .collect()
}

/// The masked form of a phone number as typed (valid or not): the first three and last four
/// digits when there are at least eleven, nothing of anything else.
pub fn mask_raw_phone(raw: &str) -> String {
    match MobilePhone::parse(raw) {
        Some(phone) => phone.masked(),
        None if raw.is_empty() => String::new(),
        None => {
            let digits: Vec<char> = raw.chars().filter(char::is_ascii_digit).collect();
            if digits.len() >= 11 {
                let head: String = digits[..3].iter().collect();
                let tail: String = digits[digits.len() - 4..].iter().collect();
                format!("{head}****{tail}")
            } else {
                "****".to_owned()
            }
        }
    }
}

impl fmt::Debug for MobilePhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MobilePhone({})", self.masked())
    }
}

vocabulary!(
    /// Where a resident lives relative to the household village; each non-local type is kept in
    /// its own book (单独登记造册).
    MigrantType by words {
        Local => "local", "本地";
        InRegionPermit => "in_region_permit", "疆内有居住证";
        InRegionNoPermit => "in_region_no_permit", "疆内无居住证";
        OutOfRegion => "out_of_region", "疆外";
        StudentAway => "student_away", "外出上学";
        OfficialAway => "official_away", "外地公职";
    }
);

vocabulary!(
    /// A situation that changes how (or whether) the resident is examined.
    Special by words {
        Mobility => "mobility", "行动不便";
        Hospitalized => "hospitalized", "住院";
        RemotePastoral => "remote_pastoral", "偏远牧区";
        Detained => "detained", "羁押服刑";
        Deceased => "deceased", "死亡";
        MovedOut => "moved_out", "迁出";
    }
);

vocabulary!(
    /// Key groups (重点人群) a resident may belong to; each carries its own exam-rate target and
    /// is a report dimension.
    KeyGroup by words {
        Hypertension => "hypertension", "高血压";
        Diabetes => "diabetes", "糖尿病";
        SevereMentalDisorder => "severe_mental_disorder", "严重精神障碍";
        Maternal => "maternal", "孕产妇";
        Tuberculosis => "tuberculosis", "肺结核";
    }
);

impl Special {
    /// Deceased and moved-out residents leave the denominator.
    pub fn is_exempt(self) -> bool {
        matches!(self, Special::Deceased | Special::MovedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised_and_masked() {
        for raw in [
            "13812345678",
            "+86 138 1234 5678",
            "8613812345678",
            "138-1234-5678",
            "１３８１２３４５６７８",
        ] {
            assert_eq!(
                MobilePhone::parse(raw).unwrap().expose(),
                "13812345678",
                "{raw}"
            );
        }
        assert_eq!(
            MobilePhone::parse("13812345678").unwrap().masked(),
            "138****5678"
        );
        for bad in [
            "",
            "1381234567",
            "23812345678",
            "12812345678",
            "138123456789",
            "0991-1234567",
            "abc",
        ] {
            assert!(MobilePhone::parse(bad).is_none(), "{bad}");
        }
        assert!(!format!("{:?}", MobilePhone::parse("13812345678").unwrap()).contains("1234"));
    }

    #[test]
    fn names_compare_without_the_marks_between_their_parts() {
        for typed in [
            "玛依拉胡安",
            "玛依拉•胡安",
            "玛依拉.胡安",
            "玛依拉 胡安",
            "玛依拉・胡安",
        ] {
            assert_eq!(name_key(typed), "玛依拉胡安", "{typed}");
        }
        assert_eq!(canonical_name(" 玛依拉•胡安 "), "玛依拉·胡安");
        assert_eq!(canonical_name("张三"), "张三");
    }

    #[test]
    fn vocabularies_read_chinese_and_english() {
        assert_eq!(
            MigrantType::parse("疆内有居住证"),
            Some(MigrantType::InRegionPermit)
        );
        assert_eq!(
            MigrantType::parse("OUT_OF_REGION"),
            Some(MigrantType::OutOfRegion)
        );
        assert_eq!(Special::parse(" 偏远牧区 "), Some(Special::RemotePastoral));
        assert_eq!(Language::parse("哈萨克语"), Some(Language::Kk));
        assert_eq!(Language::parse("fr"), None);
        assert!(Special::MovedOut.is_exempt() && !Special::Mobility.is_exempt());
    }
}
