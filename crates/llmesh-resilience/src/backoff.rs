//! Retry delays: exponential backoff with full jitter, and `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exponential backoff with "full jitter": the delay before retry `n` is
/// uniform in `[0, min(max, base * 2^n)]`.
///
/// Full jitter (rather than a fixed or partly random delay) spreads the
/// retries of many clients that failed together, so they do not hit the
/// upstream again in lock step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay (`retry == 0`).
    pub base: Duration,
    /// Largest ceiling, whatever the retry number.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling `min(max, base * 2^retry)`, saturating instead of
    /// overflowing for large `retry`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        2u32.checked_pow(retry)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before retry number `retry` (0 for the first retry), drawn
    /// uniformly from `[0, ceiling(retry)]` by `roll` (any `u64`, e.g.
    /// `rng.random()`): `roll == 0` gives zero, `roll == u64::MAX` gives
    /// (almost exactly) the ceiling.
    ///
    /// Ceilings above `u64::MAX` nanoseconds (about 584 years) are treated as
    /// that much, which keeps the arithmetic in integers.
    pub fn delay(&self, retry: u32, roll: u64) -> Duration {
        let cap = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        // Multiply-shift maps the roll onto [0, cap] without the bias of a
        // modulo; `cap + 1` makes the ceiling itself reachable.
        let span = u128::from(cap) + 1;
        let nanos = (u128::from(roll) * span) >> 64;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(cap))
    }
}

/// Parses a `Retry-After` header value: delta-seconds (`"120"`, and also the
/// fractional `"1.5"` some providers send) or an IMF-fixdate
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`) taken relative to `now`.
///
/// A date in the past gives `Some(Duration::ZERO)` (retry at once). Anything
/// else (negative or non-numeric seconds, the obsolete RFC 850 and asctime
/// date forms, garbage) gives `None`, so the caller falls back to its own
/// backoff.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(secs) = parse_seconds(value) {
        return Some(secs);
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `1*DIGIT [ "." 1*DIGIT ]`. `f64::from_str` alone would also accept
/// `"inf"`, `"1e3"` or `"-1"`, which are not delta-seconds.
fn parse_seconds(value: &str) -> Option<Duration> {
    let (int, frac) = match value.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (value, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !frac.is_none_or(digits) {
        return None;
    }
    // Huge values saturate (the caller caps waits anyway).
    let secs: f64 = value.parse().ok()?;
    Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// Parses `Www, DD Mon YYYY HH:MM:SS GMT` (RFC 9110 section 5.6.7). The day
/// name is checked for form but not against the date, as a lenient recipient.
fn parse_imf_fixdate(value: &str) -> Option<SystemTime> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = value.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if !DAYS.iter().any(|d| d.as_bytes() == &b[..3]) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = value.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(7, b' ') && sep(11, b' ') && sep(16, b' ') && sep(19, b':') && sep(22, b':')) {
        return None;
    }
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == &b[8..11])? as u32 + 1;
    let year = num(12..16)?;
    let (h, m, s) = (num(17..19)?, num(20..22)?, num(23..25)?);
    // 60 is a leap second, which the format allows.
    if day == 0 || day > days_in_month(year, month) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        // Before 1970: certainly in the past, which is all that matters.
        Err(_) => Some(UNIX_EPOCH),
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`: count in 400-year eras starting in March, so the leap
/// day is the last day of the shifted year).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn b() -> Backoff {
        Backoff {
            base: MS * 100,
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn ceiling_grows_then_caps() {
        let b = b();
        assert_eq!(b.ceiling(0), MS * 100);
        assert_eq!(b.ceiling(1), MS * 200);
        assert_eq!(b.ceiling(3), MS * 800);
        assert_eq!(b.ceiling(7), Duration::from_secs(10));
        for retry in [31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(b.ceiling(retry), Duration::from_secs(10), "retry {retry}");
        }
    }

    #[test]
    fn delay_spans_zero_to_ceiling() {
        let b = b();
        assert_eq!(b.delay(0, 0), Duration::ZERO);
        let top = b.delay(2, u64::MAX);
        assert!(top <= MS * 400 && top > MS * 399, "{top:?}");
        assert_eq!(b.delay(2, u64::MAX / 2), MS * 200);
        for retry in [0, 5, 40, u32::MAX] {
            for roll in [0, 1, 12345, u64::MAX / 3, u64::MAX] {
                assert!(b.delay(retry, roll) <= b.ceiling(retry));
            }
        }
    }

    #[test]
    fn huge_max_does_not_overflow() {
        let b = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
        };
        assert!(b.delay(u32::MAX, u64::MAX) <= Duration::from_nanos(u64::MAX));
        let z = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(z.delay(3, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5", now), Some(MS * 1500));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::MAX)
        );
        for bad in [
            "", "-1", "1e3", "inf", "NaN", "1.", ".5", "1.2.3", "+3", "soon",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_dates() {
        // 2015-10-21T07:28:00Z
        let at = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let v = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(
            parse_retry_after(v, at - Duration::from_secs(90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_retry_after(v, at), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(v, at + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        let leap = "Thu, 29 Feb 2024 00:00:00 GMT"; // 1_709_164_800
        let now = UNIX_EPOCH + Duration::from_secs(1_709_164_800 - 1);
        assert_eq!(parse_retry_after(leap, now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1960 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_bad_dates() {
        let now = SystemTime::now();
        for bad in [
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 29 Feb 2023 07:28:00 GMT",
            "Wed, 21 Foo 2015 07:28:00 GMT",
            "Xyz, 21 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 24:28:00 GMT",
            "Wed, 21 Oct 2015 07:28:0x GMT",
            "Wed, 21 Oct 2015 07-28-00 GMT",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
            "Wed, +1 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 07:28:00 GMTé",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
