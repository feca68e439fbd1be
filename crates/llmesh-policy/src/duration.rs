//! Durations written as `250ms`, `10s`, `5m`, `1h`, or a combination (`1m30s`).

use std::time::Duration;

/// Why a text is not a duration. Each variant but `Empty` holds the text
/// as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing (or only spaces) was written.
    #[error("empty duration")]
    Empty,
    /// A number without a unit after it.
    #[error("{0:?}: missing unit (ms, s, m or h)")]
    MissingUnit(String),
    /// A unit without a number before it.
    #[error("{0:?}: expected a number")]
    ExpectedNumber(String),
    /// Digits and dots that are not a number (`1..2s`).
    #[error("{0:?}: bad number")]
    BadNumber(String),
    /// A unit other than `ms`, `s`, `m` or `h`.
    #[error("{text:?}: unknown unit {unit:?} (ms, s, m or h)")]
    UnknownUnit {
        /// The text as written.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// More than a `Duration` holds.
    #[error("{0:?}: too long")]
    TooLong(String),
}

/// Parses a duration such as `300ms`, `10s`, `1m30s` or `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let owned = || text.to_string();
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| DurationError::MissingUnit(owned()))?;
        if digits == 0 {
            return Err(DurationError::ExpectedNumber(owned()));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::BadNumber(owned()))?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| i + digits);
        let per_unit = match &rest[digits..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(DurationError::UnknownUnit {
                    text: owned(),
                    unit: other.to_string(),
                })
            }
        };
        // `from_secs_f64` and `+=` panic past `Duration::MAX`.
        total = Duration::try_from_secs_f64(value * per_unit)
            .ok()
            .and_then(|d| total.checked_add(d))
            .ok_or_else(|| DurationError::TooLong(owned()))?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10", "s", "10x", "ms10", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let huge = format!("{}h", "9".repeat(30));
        assert_eq!(
            parse_duration(&huge),
            Err(DurationError::TooLong(huge.clone()))
        );
        assert_eq!(
            parse_duration("10x").unwrap_err().to_string(),
            r#""10x": unknown unit "x" (ms, s, m or h)"#
        );
    }
}
