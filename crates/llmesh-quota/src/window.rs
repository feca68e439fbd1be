//! Fixed windows aligned to the UTC clock: every sidecar computes the same
//! window from its own clock, so the shared counter of "this minute" is one
//! key for all of them without any coordination.

use std::time::{SystemTime, UNIX_EPOCH};

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// The length of a rate window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// `[hh:mm:ss, hh:mm:ss+1)`.
    Second,
    /// `[hh:mm:00, hh:mm+1:00)`.
    Minute,
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl Window {
    /// Start and end (exclusive) of the window holding `now_ms`, both in
    /// milliseconds since the Unix epoch.
    pub fn bounds(self, now_ms: u64) -> (u64, u64) {
        let fixed = |len: u64| {
            let start = now_ms - now_ms % len;
            (start, start + len)
        };
        match self {
            Window::Second => fixed(SECOND_MS),
            Window::Minute => fixed(MINUTE_MS),
            Window::Day => fixed(DAY_MS),
            Window::Month => {
                let days = (now_ms / DAY_MS) as i64;
                let (y, m, _) = civil_from_days(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let start = days_from_civil(y, m, 1) as u64 * DAY_MS;
                let end = days_from_civil(ny, nm, 1) as u64 * DAY_MS;
                (start, end)
            }
        }
    }
}

/// Milliseconds since the Unix epoch (0 for a clock before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// Proleptic Gregorian calendar conversions on day numbers counted from
// 1970-01-01, using 400-year eras of 146097 days so the arithmetic needs
// no tables and no loops.

/// (year, month 1-12, day 1-31) of day `z` since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day number since 1970-01-01 of (year, month 1-12, day).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for z in -800_000..800_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2024 is a leap year.
        assert_eq!(
            civil_from_days(days_from_civil(2024, 2, 28) + 1),
            (2024, 2, 29)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2023, 2, 28) + 1),
            (2023, 3, 1)
        );
    }

    #[test]
    fn windows_align() {
        // 2026-11-22T01:39:20.250Z
        let now = days_from_civil(2026, 11, 22) as u64 * DAY_MS + 5_960_250;
        assert_eq!(Window::Second.bounds(now), (now - 250, now + 750));
        let (s, e) = Window::Minute.bounds(now);
        assert_eq!((s % MINUTE_MS, e - s), (0, MINUTE_MS));
        assert!(s <= now && now < e);
        let (s, e) = Window::Month.bounds(now);
        assert_eq!(s, days_from_civil(2026, 11, 1) as u64 * DAY_MS);
        assert_eq!(e, days_from_civil(2026, 12, 1) as u64 * DAY_MS);
        let dec = days_from_civil(2026, 12, 31) as u64 * DAY_MS;
        assert_eq!(
            Window::Month.bounds(dec).1,
            days_from_civil(2027, 1, 1) as u64 * DAY_MS
        );
    }
}
