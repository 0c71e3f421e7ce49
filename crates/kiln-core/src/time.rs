//! Time, one way: instants are `i64` microseconds since the Unix epoch in UTC, durations are
//! whole seconds.
//!
//! Parquet sources may carry seconds, milliseconds, microseconds or nanoseconds with or without
//! a time zone; they are all normalised to UTC microseconds before any comparison, so the
//! point-in-time join, materialization windows and online TTL checks compare like with like.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

use crate::CoreError;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// The current instant.
pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

/// Parses a duration such as `"0"`, `"90s"`, `"15m"`, `"2h"`, `"1d"`, `"1w"` or `"1d12h30m"`
/// into whole seconds.
///
/// A bare number other than `0` is rejected: `ttl = "3600"` is ambiguous, so the user is asked
/// to write the unit.
pub fn parse_duration(input: &str) -> Result<u64, CoreError> {
    let err = |reason: &str| CoreError::InvalidDuration {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s == "0" {
        return Ok(0);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            ' ' => continue,
            '-' => return Err(err("durations cannot be negative")),
            _ => return Err(err(&format!("unknown unit {c:?}"))),
        };
        if digits.is_empty() {
            return Err(err(&format!("unit {c:?} has no number before it")));
        }
        let n: u64 = digits.parse().map_err(|_| err("number too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too large"))?;
        digits.clear();
        saw_unit = true;
    }
    if !digits.is_empty() {
        return Err(err(if saw_unit {
            "trailing number has no unit"
        } else {
            "a number needs a unit"
        }));
    }
    Ok(total)
}

/// Formats seconds the way [`parse_duration`] reads them, largest units first (`"1d12h"`).
pub fn format_duration(mut secs: u64) -> String {
    if secs == 0 {
        return "0".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3_600),
        ("m", 60),
        ("s", 1),
    ] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Parses an instant: RFC 3339 (`2026-01-31T12:00:00Z`, any offset), a naive date-time
/// (`2026-01-31T12:00:00` or with a space, read as UTC), a date (`2026-01-31`, midnight UTC),
/// integer seconds since the epoch, or `now`.
pub fn parse_timestamp(input: &str) -> Result<Micros, CoreError> {
    let s = input.trim();
    let err = || CoreError::InvalidTimestamp {
        input: input.to_string(),
    };
    if s.eq_ignore_ascii_case("now") {
        return Ok(now_micros());
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|dt| dt.and_utc().timestamp_micros())
            .ok_or_else(err);
    }
    if let Ok(secs) = s.parse::<i64>() {
        return secs.checked_mul(MICROS_PER_SECOND).ok_or_else(err);
    }
    Err(err())
}

/// RFC 3339 in UTC with a `Z`, with as many fractional digits as needed (none for whole
/// seconds), e.g. `2026-01-31T12:00:00Z`.
pub fn format_timestamp(micros: Micros) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("{micros}us"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("1d12h"), Ok(129_600));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        for secs in [0, 1, 59, 60, 3_601, 86_400, 129_600, 1_209_661] {
            assert_eq!(parse_duration(&format_duration(secs)), Ok(secs));
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for bad in [
            "",
            "3600",
            "1x",
            "h",
            "-1h",
            "1h30",
            "99999999999999999999d",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2026-01-31T12:00:00Z").expect("rfc3339");
        assert_eq!(parse_timestamp("2026-01-31T13:00:00+01:00"), Ok(t));
        assert_eq!(parse_timestamp("2026-01-31 12:00:00"), Ok(t));
        assert_eq!(parse_timestamp("2026-01-31T12:00:00"), Ok(t));
        assert_eq!(
            parse_timestamp("2026-01-31"),
            Ok(t - 12 * 3_600 * MICROS_PER_SECOND)
        );
        assert_eq!(parse_timestamp(&(t / MICROS_PER_SECOND).to_string()), Ok(t));
        assert_eq!(format_timestamp(t), "2026-01-31T12:00:00Z");
        assert_eq!(parse_timestamp(&format_timestamp(t + 1)), Ok(t + 1));
        assert!(parse_timestamp("yesterday").is_err());
    }
}
