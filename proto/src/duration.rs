//! The duration syntax shared by the client's `--for`, the CA's profiles and `policy explain`.
//!
//! A duration is one or more `<number><unit>` parts with units `d`, `h`, `m` and `s`, largest
//! first, for example `30m`, `1h30m` or `8h`. A bare number is seconds. Zero, signs, spaces,
//! repeated or out-of-order units and values past 366 days are refused.

use std::time::Duration;

/// The longest duration this syntax accepts: a grant longer than a year is not "just in time".
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string was empty.
    #[error("duration is empty")]
    Empty,
    /// A character other than a digit or a unit appeared.
    #[error("duration `{0}` is not of the form 30m, 1h30m, 8h or 90s")]
    Malformed(String),
    /// The duration was zero.
    #[error("duration must be longer than zero")]
    Zero,
    /// The duration exceeds [`MAX_DURATION`] or overflows.
    #[error("duration `{0}` is longer than the 366-day maximum")]
    TooLong(String),
}

/// Parses a duration such as `30m` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.chars().take(32).collect());
    if text.len() > 32 {
        return Err(malformed());
    }

    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        let seconds: u64 = text
            .parse()
            .map_err(|_| DurationError::TooLong(text.into()))?;
        return checked(seconds, text);
    }

    let mut total: u64 = 0;
    let mut digits = String::new();
    // Units must appear largest first, each at most once.
    let mut last_unit_rank = usize::MAX;
    for character in text.chars() {
        if character.is_ascii_digit() {
            digits.push(character);
            continue;
        }
        let (rank, unit_seconds) = match character {
            'd' => (3, 86_400),
            'h' => (2, 3_600),
            'm' => (1, 60),
            's' => (0, 1),
            _ => return Err(malformed()),
        };
        if digits.is_empty() || rank >= last_unit_rank {
            return Err(malformed());
        }
        last_unit_rank = rank;
        let value: u64 = digits
            .parse()
            .map_err(|_| DurationError::TooLong(text.into()))?;
        let part = value
            .checked_mul(unit_seconds)
            .ok_or_else(|| DurationError::TooLong(text.into()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| DurationError::TooLong(text.into()))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(malformed());
    }
    checked(total, text)
}

fn checked(seconds: u64, text: &str) -> Result<Duration, DurationError> {
    if seconds == 0 {
        return Err(DurationError::Zero);
    }
    let duration = Duration::from_secs(seconds);
    if duration > MAX_DURATION {
        return Err(DurationError::TooLong(text.chars().take(32).collect()));
    }
    Ok(duration)
}

/// Formats a duration in the same syntax, largest units first (`1h30m`); zero is `0s`.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".into();
    }
    let mut text = String::new();
    for (unit, unit_seconds) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        let count = seconds / unit_seconds;
        if count > 0 {
            text.push_str(&format!("{count}{unit}"));
            seconds -= count * unit_seconds;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("8h"), Ok(Duration::from_secs(28_800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn refuses_zero_signs_garbage_and_overflow() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("0m"), Err(DurationError::Zero));
        assert_eq!(parse_duration("0"), Err(DurationError::Zero));
        for bad in [
            "-5m", "+5m", "5 m", "m", "5", "5x", "30m1h", "1h1h", "1.5h", "١h",
        ] {
            if bad == "5" {
                continue;
            }
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::TooLong(_)) | Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("18446744073709551615"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration("367d"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn formats_largest_units_first() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(59)), "59s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
