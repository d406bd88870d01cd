//! `ResidentId`: the 18-character citizen ID number (GB 11643) with its check digit verified,
//! and what it says about its holder (birth date, sex).

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// A valid resident ID number, normalised (ASCII digits, upper-case `X`).
/// Deliberately no `Display`: the full number must be asked for with [`ResidentId::expose`],
/// and `Debug` shows it masked, so it cannot slip into a log line by accident.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResidentId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResidentIdError {
    #[error("身份证号应为 18 位")]
    Length,
    #[error("身份证号前 17 位应为数字，最后一位为数字或 X")]
    Characters,
    #[error("身份证号中的出生日期无效")]
    BirthDate,
    #[error("身份证号中的出生日期晚于今天")]
    FutureBirthDate,
    #[error("身份证号校验位错误")]
    CheckDigit,
}

impl ResidentIdError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Length => "id_length",
            Self::Characters => "id_characters",
            Self::BirthDate => "id_birth_date",
            Self::FutureBirthDate => "id_future_birth_date",
            Self::CheckDigit => "id_check_digit",
        }
    }
}

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [u8; 11] = *b"10X98765432";

/// The masked form of an ID number as typed (valid or not): the first and last four
/// characters of an 18-character value, nothing of anything else.
pub fn mask_raw_id(raw: &str) -> String {
    let chars: Vec<char> = raw.trim().chars().collect();
    if chars.len() == 18 {
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[14..].iter().collect();
        format!("{head}**********{tail}")
    } else {
        "******".to_owned()
    }
}

/// The ISO 7064 MOD 11-2 check character of the first 17 digits.
pub fn check_char(first17: &[u8]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(digit, weight)| u32::from(digit - b'0') * weight)
        .sum();
    CHECK[(sum % 11) as usize]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "M",
            Sex::Female => "F",
        }
    }
}

impl ResidentId {
    /// Parses an ID as people type it: surrounding spaces, full-width digits and a lower-case or
    /// full-width `x` are accepted. `today` bounds the birth date.
    pub fn parse(raw: &str, today: NaiveDate) -> Result<Self, ResidentIdError> {
        let mut normalised = String::with_capacity(18);
        for c in raw.trim().chars() {
            let c = match c {
                '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
                'x' | 'Ｘ' | 'ｘ' => 'X',
                other => other,
            };
            normalised.push(c);
        }
        let bytes = normalised.as_bytes();
        if normalised.chars().count() != 18 {
            return Err(ResidentIdError::Length);
        }
        if bytes.len() != 18
            || !bytes[..17].iter().all(u8::is_ascii_digit)
            || !(bytes[17].is_ascii_digit() || bytes[17] == b'X')
        {
            return Err(ResidentIdError::Characters);
        }
        let number = |range: std::ops::Range<usize>| -> u32 {
            bytes[range]
                .iter()
                .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
        };
        let birth = NaiveDate::from_ymd_opt(number(6..10) as i32, number(10..12), number(12..14))
            .filter(|d| d.year_ce().1 >= 1880)
            .ok_or(ResidentIdError::BirthDate)?;
        if birth > today {
            return Err(ResidentIdError::FutureBirthDate);
        }
        if check_char(&bytes[..17]) != bytes[17] {
            return Err(ResidentIdError::CheckDigit);
        }
        Ok(Self(normalised))
    }

    /// The full number, for encryption and the blind index only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn birth_date(&self) -> NaiveDate {
        let b = self.0.as_bytes();
        let n =
            |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
        NaiveDate::from_ymd_opt(n(6..10) as i32, n(10..12), n(12..14)).expect("checked at parse")
    }

    /// The 17th digit is odd for men and even for women.
    pub fn sex(&self) -> Sex {
        if (self.0.as_bytes()[16] - b'0') % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// `6540**********123X`: the region prefix and the last four characters.
    pub fn masked(&self) -> String {
        mask_raw_id(&self.0)
    }
}

impl fmt::Debug for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResidentId({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
    }

    /// Builds a valid ID from 17 digits by appending the right check character.
    fn with_check(first17: &str) -> String {
        let c = check_char(first17.as_bytes()) as char;
        format!("{first17}{c}")
    }

    #[test]
    fn the_published_standard_example_is_valid() {
        let id = ResidentId::parse("11010519491231002X", today()).unwrap();
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
        assert_eq!(id.sex(), Sex::Female);
        assert_eq!(id.masked(), "1101**********002X");
        assert!(!format!("{id:?}").contains("19491231"));
    }

    #[test]
    fn known_check_digits() {
        // Vectors computed by hand with the MOD 11-2 weights.
        assert_eq!(check_char(b"11010519491231002"), b'X');
        assert_eq!(check_char(b"44052418800101001"), b'4');
        assert_eq!(check_char(b"65402519800101001"), b'5');
        for tampered in [
            "110105194912310021",
            "11010519491231003X",
            "440524188001010015",
        ] {
            assert_eq!(
                ResidentId::parse(tampered, today()),
                Err(ResidentIdError::CheckDigit),
                "{tampered}"
            );
        }
        let valid = ResidentId::parse("440524188001010014", today()).unwrap();
        assert_eq!(valid.sex(), Sex::Male);
    }

    #[test]
    fn full_width_and_lower_case_x_are_normalised() {
        let id = ResidentId::parse(" １１０１０５１９４９１２３１００２ｘ ", today()).unwrap();
        assert_eq!(id.expose(), "11010519491231002X");
        assert_eq!(
            ResidentId::parse("11010519491231002x", today()).unwrap(),
            id
        );
        assert_eq!(
            ResidentId::parse("11010519491231002Ｘ", today()).unwrap(),
            id
        );
    }

    #[test]
    fn leap_days_are_valid_only_in_leap_years() {
        assert!(ResidentId::parse(&with_check("65402520000229001"), today()).is_ok());
        assert!(ResidentId::parse(&with_check("65402519960229001"), today()).is_ok());
        assert_eq!(
            ResidentId::parse(&with_check("65402519000229001"), today()),
            Err(ResidentIdError::BirthDate),
            "1900 is not a leap year"
        );
        assert_eq!(
            ResidentId::parse(&with_check("65402520010229001"), today()),
            Err(ResidentIdError::BirthDate)
        );
        assert_eq!(
            ResidentId::parse(&with_check("65402520011301001"), today()),
            Err(ResidentIdError::BirthDate)
        );
    }

    #[test]
    fn birth_dates_after_today_are_refused() {
        assert_eq!(
            ResidentId::parse(&with_check("65402520261123001"), today()),
            Err(ResidentIdError::FutureBirthDate)
        );
        assert!(ResidentId::parse(&with_check("65402520261122001"), today()).is_ok());
    }

    #[test]
    fn length_and_characters_are_checked() {
        assert_eq!(ResidentId::parse("", today()), Err(ResidentIdError::Length));
        assert_eq!(
            ResidentId::parse("11010519491231002", today()),
            Err(ResidentIdError::Length)
        );
        assert_eq!(
            ResidentId::parse("11010519491231002X1", today()),
            Err(ResidentIdError::Length)
        );
        assert_eq!(
            ResidentId::parse("1101051949123100XX", today()),
            Err(ResidentIdError::Characters)
        );
        assert_eq!(
            ResidentId::parse("11010519491231002Y", today()),
            Err(ResidentIdError::Characters)
        );
        assert_eq!(
            ResidentId::parse("11010519491231002é", today()),
            Err(ResidentIdError::Characters)
        );
    }
}
