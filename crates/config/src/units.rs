//! Duration and size values: Patroni's plain numbers, plus unit suffixes.

use serde_json::Value;
use std::time::Duration;

/// What a duration value should look like (used in error messages).
pub(crate) const DURATION_EXPECTED: &str = r#"a duration (seconds, or e.g. "30s", "500ms")"#;
/// What a size value should look like (used in error messages).
pub(crate) const SIZE_EXPECTED: &str = r#"a size (bytes, or e.g. "16kB", "64MB", "1GB")"#;

/// Parses a duration: plain seconds as Patroni writes them (`"10"`, `"0.5"`) or a number with
/// a unit: `ms`, `s`, `m`/`min`, `h`, `d` (`"500ms"`, `"3s"`, `"1m"`, `"1h"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let fail = || format!("expected {DURATION_EXPECTED}, found {text:?}");
    let (number, unit) = split_number(text).ok_or_else(fail)?;
    let per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(fail()),
    };
    let seconds: f64 = number.parse().map_err(|_| fail())?;
    Duration::try_from_secs_f64(seconds * per_unit).map_err(|_| fail())
}

/// Parses a size in bytes: a plain number of bytes or a number with a 1024-based unit in
/// PostgreSQL style (`"16kB"`, `"64MB"`, `"1GB"`, `"1TB"`); `B`, `KiB`/`MiB`/... and any
/// letter case are accepted too.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let fail = || format!("expected {SIZE_EXPECTED}, found {text:?}");
    let (number, unit) = split_number(text).ok_or_else(fail)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(fail()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(1u64 << shift).ok_or_else(fail);
    }
    let bytes = number.parse::<f64>().map_err(|_| fail())? * (1u64 << shift) as f64;
    // u64::MAX as f64 rounds up to 2^64, so `<` keeps the cast in range.
    if bytes < u64::MAX as f64 {
        Ok(bytes.round() as u64)
    } else {
        Err(fail())
    }
}

/// Splits `" 12.5 ms "` into `("12.5", "ms")`; `None` when there is no leading number.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number = &text[..end];
    let dots = number.matches('.').count();
    if dots > 1 || !number.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((number, text[end..].trim_start()))
}

/// A duration from a configuration value: a number of seconds or a string for
/// [`parse_duration`]. `Err` carries the expectation for the error message.
pub(crate) fn duration_from_value(value: &Value) -> Result<Duration, String> {
    let fail = || DURATION_EXPECTED.to_string();
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(secs) => Ok(Duration::from_secs(secs)),
            None => n
                .as_f64()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .ok_or_else(fail),
        },
        Value::String(s) => parse_duration(s).map_err(|_| fail()),
        _ => Err(fail()),
    }
}

/// A size from a configuration value: a number of bytes or a string for [`parse_size`].
pub(crate) fn size_from_value(value: &Value) -> Result<u64, String> {
    let fail = || SIZE_EXPECTED.to_string();
    match value {
        // Whole floats too: Patroni's `int()` reads 1048576.0 as 1048576.
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..9e15).contains(f))
                    .map(|f| f as u64)
            })
            .ok_or_else(fail),
        Value::String(s) => parse_size(s).map_err(|_| fail()),
        _ => Err(fail()),
    }
}

/// Seconds as Patroni's readers expect them (they apply `int()`): an integer when whole,
/// else a float.
pub(crate) fn duration_to_json(duration: Duration) -> Value {
    if duration.subsec_nanos() == 0 {
        Value::from(duration.as_secs())
    } else {
        Value::from(duration.as_secs_f64())
    }
}

/// Serializes a [`Duration`] field like [`duration_to_json`].
pub(crate) fn serialize_duration<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&duration_to_json(*duration), serializer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        let ok =
            |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        ok("10", 10_000);
        ok("0.5", 500);
        ok("500ms", 500);
        ok("3s", 3_000);
        ok("1m", 60_000);
        ok("2min", 120_000);
        ok("1h", 3_600_000);
        ok("1d", 86_400_000);
        ok(" 1.5 s ", 1_500);
        ok("0", 0);
        for bad in ["", "abc", "s", "1.2.3", "-1", "5 parsecs", "1e3", "1S"] {
            assert_eq!(
                parse_duration(bad),
                Err(format!(
                    r#"expected a duration (seconds, or e.g. "30s", "500ms"), found {bad:?}"#
                )),
            );
        }
    }

    #[test]
    fn sizes() {
        let ok = |s: &str, n: u64| assert_eq!(parse_size(s), Ok(n), "{s}");
        ok("1048576", 1_048_576);
        ok("16kB", 16 * 1024);
        ok("64MB", 64 << 20);
        ok("1GB", 1 << 30);
        ok("2TB", 2 << 40);
        ok("16MiB", 16 << 20);
        ok("10 B", 10);
        ok("1.5GB", 3 << 29);
        ok("0", 0);
        for bad in [
            "",
            "MB",
            "-1",
            "12 parsecs",
            "99999999999999999999",
            "20000000TB",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(format!(
                    r#"expected a size (bytes, or e.g. "16kB", "64MB", "1GB"), found {bad:?}"#
                )),
            );
        }
    }

    #[test]
    fn values() {
        assert_eq!(duration_from_value(&json!(30)), Ok(Duration::from_secs(30)));
        assert_eq!(
            duration_from_value(&json!(0.25)),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            duration_from_value(&json!("30")),
            Ok(Duration::from_secs(30))
        );
        assert!(duration_from_value(&json!(-3)).is_err());
        assert!(duration_from_value(&json!(true)).is_err());
        assert_eq!(size_from_value(&json!(1024)), Ok(1024));
        assert_eq!(size_from_value(&json!("1MB")), Ok(1 << 20));
        assert!(size_from_value(&json!(-1)).is_err());
        assert_eq!(size_from_value(&json!(1048576.0)), Ok(1 << 20));
        assert!(size_from_value(&json!(1.5)).is_err());
        assert_eq!(duration_to_json(Duration::from_secs(10)), json!(10));
        assert_eq!(duration_to_json(Duration::from_millis(500)), json!(0.5));
    }
}
