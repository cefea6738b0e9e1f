//! Timestamps of scheduled switchovers and restarts, read the way Patroni's
//! `dateutil.parser.parse` reads the common forms, and written the way Python's
//! `datetime.isoformat()` writes them (what Patroni stores in the DCS and member keys).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// Why a schedule was refused; the messages and codes are Patroni's (`parse_schedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// 400: the timestamp has no offset.
    NoTimezone,
    /// 422: the timestamp is earlier than now.
    InThePast,
    /// 422: not a timestamp.
    Unparsable,
}

impl ScheduleError {
    pub fn status(&self) -> u16 {
        match self {
            ScheduleError::NoTimezone => 400,
            ScheduleError::InThePast | ScheduleError::Unparsable => 422,
        }
    }

    /// `action` is `restart`, `switchover` or `failover`.
    pub fn message(&self, action: &str) -> String {
        match self {
            ScheduleError::NoTimezone => {
                format!("Timezone information is mandatory for the scheduled {action}")
            }
            ScheduleError::InThePast => format!("Cannot schedule {action} in the past"),
            ScheduleError::Unparsable => "Unable to parse scheduled timestamp. It should be in an \
                                          unambiguous format, e.g. ISO 8601"
                .to_string(),
        }
    }
}

/// A parsed timestamp: with its offset, or naive (no offset was given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamp {
    Aware(DateTime<FixedOffset>),
    Naive(NaiveDateTime),
}

/// Validates a schedule like Patroni: parsable, with an offset, not in the past (`now`).
pub fn parse_schedule(
    text: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<FixedOffset>, ScheduleError> {
    match parse_timestamp(text) {
        None => Err(ScheduleError::Unparsable),
        Some(Timestamp::Naive(_)) => Err(ScheduleError::NoTimezone),
        Some(Timestamp::Aware(at)) if at < now => Err(ScheduleError::InThePast),
        Some(Timestamp::Aware(at)) => Ok(at),
    }
}

/// Reads ISO 8601 / RFC 3339 timestamps and their usual relatives: `T` or a space between
/// date and time, optional seconds and fractions, an offset as `Z`, `UTC`, `GMT`, `+HH:MM`,
/// `+HHMM` or `+HH` (with or without a space before it), or no offset at all. A bare date
/// means midnight.
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (local, offset) = split_offset(text)?;
    let naive = parse_naive(local.trim_end())?;
    Some(match offset {
        Some(offset) => Timestamp::Aware(naive.and_local_timezone(offset).single()?),
        None => Timestamp::Naive(naive),
    })
}

/// Splits `2030-01-01T10:00+02:00` into the local part and the offset (if any).
fn split_offset(text: &str) -> Option<(&str, Option<FixedOffset>)> {
    for zone in ["Z", "UTC", "GMT", "z"] {
        if let Some(local) = text.strip_suffix(zone) {
            if local.ends_with(|c: char| c.is_ascii_digit() || c == ' ') {
                return Some((local, FixedOffset::east_opt(0)));
            }
        }
    }
    // The offset sign must come after the time: skip the date's dashes.
    let Some(time_start) = text.find(['T', 't', ' ']).map(|i| i + 1) else {
        return Some((text, None));
    };
    let Some(sign_at) = text[time_start..].rfind(['+', '-']).map(|i| i + time_start) else {
        return Some((text, None));
    };
    let sign = if text.as_bytes()[sign_at] == b'-' {
        -1
    } else {
        1
    };
    let digits: String = text[sign_at + 1..].chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    let offset = FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))?;
    Some((&text[..sign_at], Some(offset)))
}

fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0);
    }
    let split = text.find(['T', 't', ' '])?;
    let date = NaiveDate::parse_from_str(&text[..split], "%Y-%m-%d").ok()?;
    let time_text = text[split + 1..].trim();
    let time = ["%H:%M:%S%.f", "%H:%M"]
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(time_text, f).ok())?;
    Some(date.and_time(time))
}

/// Python's `datetime.isoformat()` for an aware timestamp: `2030-01-01T00:00:00+00:00`,
/// with `.ffffff` only when there are microseconds.
pub fn python_isoformat(at: &DateTime<FixedOffset>) -> String {
    if at.timestamp_subsec_micros() == 0 {
        at.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn accepts_common_forms() {
        for text in [
            "2030-01-01T10:00:00+02:00",
            "2030-01-01 10:00:00+02:00",
            "2030-01-01T10:00+02:00",
            "2030-01-01T10:00:00.000000+0200",
            "2030-01-01T10:00:00 +02",
            "2030-01-01T08:00:00Z",
            "2030-01-01T08:00:00 UTC",
        ] {
            let at = parse_schedule(text, now()).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(
                at.with_timezone(&Utc).to_rfc3339(),
                "2030-01-01T08:00:00+00:00"
            );
        }
        let negative = parse_schedule("2030-01-01T03:00:00-05:00", now()).unwrap();
        assert_eq!(
            negative.with_timezone(&Utc).to_rfc3339(),
            "2030-01-01T08:00:00+00:00"
        );
    }

    #[test]
    fn patroni_errors() {
        assert_eq!(
            parse_schedule("2030-01-01T10:00:00", now()),
            Err(ScheduleError::NoTimezone)
        );
        assert_eq!(
            parse_schedule("2020-01-01T10:00:00+00:00", now()),
            Err(ScheduleError::InThePast)
        );
        for bad in [
            "tomorrow",
            "",
            "2030-13-01T00:00:00+00:00",
            "2030-01-01T10:00:00+99:00",
        ] {
            assert_eq!(
                parse_schedule(bad, now()),
                Err(ScheduleError::Unparsable),
                "{bad}"
            );
        }
        assert_eq!(ScheduleError::NoTimezone.status(), 400);
        assert_eq!(
            ScheduleError::InThePast.message("switchover"),
            "Cannot schedule switchover in the past"
        );
    }

    #[test]
    fn isoformat_like_python() {
        let at = DateTime::parse_from_rfc3339("2030-01-01T00:00:00+00:00").unwrap();
        assert_eq!(python_isoformat(&at), "2030-01-01T00:00:00+00:00");
        let at = DateTime::parse_from_rfc3339("2030-01-01T00:00:00.5+02:00").unwrap();
        assert_eq!(python_isoformat(&at), "2030-01-01T00:00:00.500000+02:00");
    }
}
