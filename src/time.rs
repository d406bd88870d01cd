//! Time in the campaign's zone, in one place: the local day of an instant, the instant of a
//! local wall-clock time, quiet hours, and dates as residents read them. A campaign carries
//! its own zone; [`DEFAULT_ZONE`] is for what has no campaign (Beijing time, which the
//! county's offices keep).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The zone of dates read without a campaign.
pub const DEFAULT_ZONE: Tz = chrono_tz::Asia::Shanghai;

/// Today's date where nothing names a zone: in [`DEFAULT_ZONE`].
pub fn today() -> NaiveDate {
    today_in(DEFAULT_ZONE)
}

/// Today's date in `tz`.
pub fn today_in(tz: Tz) -> NaiveDate {
    local_day(tz, Utc::now())
}

/// The local date of an instant in `tz`.
pub fn local_day(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// The UTC instant of a local wall-clock time in `tz` (the earlier one if a clock change
/// makes it ambiguous; an hour later if it falls into a gap).
pub fn at_local(tz: Tz, day: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let local = day.and_time(time);
    tz.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(local + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&local))
}

/// Whether `at` falls into the quiet hours `[start, end)` of `tz`; a window may cross
/// midnight (22:00–08:00). Returns when the quiet hours end, if they hold.
pub fn quiet_until(
    tz: Tz,
    start: NaiveTime,
    end: NaiveTime,
    at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let local = at.with_timezone(&tz);
    let time = local.time();
    let today = local.date_naive();
    if start == end {
        return None;
    }
    if start < end {
        (time >= start && time < end).then(|| at_local(tz, today, end))
    } else if time >= start {
        Some(at_local(tz, today.succ_opt()?, end))
    } else if time < end {
        Some(at_local(tz, today, end))
    } else {
        None
    }
}

/// `12月31日`
pub fn month_day(day: NaiveDate) -> String {
    format!("{}月{}日", day.month(), day.day())
}

/// The day of the week as written after 周 or 星期: `一` … `日`.
pub fn weekday(day: NaiveDate) -> &'static str {
    const DAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
    DAYS[day.weekday().num_days_from_monday() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(raw: &str) -> DateTime<Utc> {
        raw.parse().unwrap()
    }

    #[test]
    fn quiet_hours_cross_midnight_in_the_campaigns_zone() {
        let shanghai: Tz = "Asia/Shanghai".parse().unwrap();
        let (start, end) = (t(22, 0), t(8, 0));
        // 22:00 Beijing time is 14:00 UTC: held to 08:00 the next morning (00:00 UTC).
        assert_eq!(
            quiet_until(shanghai, start, end, utc("2026-12-01T14:00:00Z")),
            Some(utc("2026-12-02T00:00:00Z"))
        );
        // 03:00 Beijing: held to 08:00 the same morning.
        assert_eq!(
            quiet_until(shanghai, start, end, utc("2026-12-01T19:00:00Z")),
            Some(utc("2026-12-02T00:00:00Z"))
        );
        // 08:00 sharp and 21:59 are not quiet.
        assert_eq!(
            quiet_until(shanghai, start, end, utc("2026-12-02T00:00:00Z")),
            None
        );
        assert_eq!(
            quiet_until(shanghai, start, end, utc("2026-12-01T13:59:00Z")),
            None
        );
        // The same instant is 20:00 in Urumqi (UTC+6): not quiet there.
        let urumqi: Tz = "Asia/Urumqi".parse().unwrap();
        assert_eq!(
            quiet_until(urumqi, start, end, utc("2026-12-01T14:00:00Z")),
            None
        );
        // A window inside one day, and an empty one.
        assert_eq!(
            quiet_until(shanghai, t(12, 0), t(14, 0), utc("2026-12-01T05:00:00Z")),
            Some(utc("2026-12-01T06:00:00Z"))
        );
        assert_eq!(
            quiet_until(shanghai, t(8, 0), t(8, 0), utc("2026-12-01T05:00:00Z")),
            None
        );
    }

    #[test]
    fn a_local_day_is_read_in_its_zone() {
        // 23:30 UTC is the next morning in Beijing and still evening in London.
        let at = utc("2026-12-01T23:30:00Z");
        assert_eq!(
            local_day(DEFAULT_ZONE, at),
            NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
        );
        assert_eq!(
            local_day(chrono_tz::Europe::London, at),
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
        );
        assert_eq!(
            month_day(NaiveDate::from_ymd_opt(2026, 3, 5).unwrap()),
            "3月5日"
        );
        assert_eq!(weekday(NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()), "一");
        assert_eq!(
            weekday(NaiveDate::from_ymd_opt(2026, 12, 13).unwrap()),
            "日"
        );
    }
}
