//! Wall-clock helpers: timestamps are stored as milliseconds since the Unix epoch and shown
//! as RFC 3339 UTC strings.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The date (`YYYY-MM-DD`, UTC) of day number `days` since 1970-01-01.
pub fn date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Epoch milliseconds of the first instant of the calendar month (UTC) that `ms` falls in,
/// and of the next month's.
pub fn month_of(ms: i64) -> (i64, i64) {
    let (year, month, _) = civil_from_days(ms.div_euclid(86_400_000));
    let next = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let start = days_from_civil(year, month, 1) * 86_400_000;
    (start, days_from_civil(next.0, next.1, 1) * 86_400_000)
}

/// Epoch milliseconds of a date (`YYYY-MM-DD`, midnight UTC) or of an RFC 3339 instant
/// (`YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`).
pub fn parse(text: &str) -> Option<i64> {
    let text = text.trim();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if text.get(4..5)? != "-" || text.get(7..8)? != "-" {
        return None;
    }
    let month = u32::try_from(month).ok().filter(|m| (1..=12).contains(m))?;
    let day = u32::try_from(day).ok().filter(|d| (1..=31).contains(d))?;
    let days = days_from_civil(year, month, day);
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    let midnight = days * 86_400_000;
    if text.len() == 10 {
        return Some(midnight);
    }
    if !matches!(text.get(10..11)?, "T" | "t" | " ") || text.get(13..14)? != ":" {
        return None;
    }
    let (hour, minute) = (number(11..13)?, number(14..16)?);
    if text.get(16..17)? != ":" {
        return None;
    }
    let second = number(17..19)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            if rest.len() != 6 || rest.get(3..4)? != ":" || hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes) * 60_000
        }
    };
    Some(midnight + ((hour * 60 + minute) * 60 + second) * 1000 + millis - offset)
}

/// A proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn parses_dates_and_instants() {
        assert_eq!(parse("1970-01-01"), Some(0));
        assert_eq!(parse("2000-02-29T00:00:00.123Z"), Some(951_782_400_123));
        assert_eq!(parse("2026-11-18T12:06:40+01:00"), Some(1_795_000_000_000));
        assert_eq!(parse("2026-11-18T11:06:40.5Z"), Some(1_795_000_000_500));
        for bad in ["2026-02-30", "2026-13-01", "26-11-18", "2026-11-18T25:00:00Z", "yesterday"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(parse("2026-11-18T11:06:40"), None, "an instant needs its offset");
    }

    #[test]
    fn months_and_days() {
        let (start, end) = month_of(parse("2026-12-15T10:00:00Z").unwrap());
        assert_eq!(
            (rfc3339(start), rfc3339(end)),
            ("2026-12-01T00:00:00.000Z".to_owned(), "2027-01-01T00:00:00.000Z".to_owned())
        );
        assert_eq!(date(parse("2024-02-29").unwrap() / 86_400_000), "2024-02-29");
    }
}
