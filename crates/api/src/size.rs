//! `?lag=` values, parsed like Patroni's `parse_int(value, 'B')` (PostgreSQL's GUC rules):
//! `1048576`, `16MB`, `1GB`, `0x100kB`, `1.5GB`. Units are case-sensitive (`B`, `kB`, `MB`,
//! `GB`, `TB`, powers of 1024).

/// Bytes, or `None` when the value is not a size (Patroni then treats the lag as unlimited).
pub(crate) fn parse_bytes(value: &str) -> Option<i64> {
    let value = value.trim();
    let (mut number, mut unit) = strtol(value);
    // A fraction or exponent after the integer part: re-read the whole value as a float.
    if (number.is_none() && unit.starts_with('.')) || unit.starts_with(['.', 'e', 'E']) {
        (number, unit) = strtod(value);
    }
    let number = number?;
    let (multiplier, round_to): (f64, Option<f64>) = match unit.trim() {
        "" => return Some(rint(number) as i64),
        "B" => (1.0, None),
        "kB" => (1024.0, Some(1.0)),
        "MB" => (1048576.0, Some(1024.0)),
        "GB" => (1073741824.0, Some(1048576.0)),
        "TB" => (1099511627776.0, Some(1073741824.0)),
        _ => return None,
    };
    let mut bytes = number * multiplier;
    if let Some(step) = round_to {
        bytes = rint(bytes / step) * step;
    }
    // `as` saturates: an absurd size is simply "very large".
    Some(rint(bytes) as i64)
}

/// PostgreSQL rounds half to even.
fn rint(value: f64) -> f64 {
    value.round_ties_even()
}

/// `strtol(value, base=0)`: hex `0x..`, octal `0..`, or decimal, with an optional sign.
/// Returns the number and the unparsed rest (the whole input if nothing was read).
fn strtol(value: &str) -> (Option<f64>, &str) {
    let (sign, body) = split_sign(value);
    if let Some(hex) = body.strip_prefix("0x") {
        let n = hex.bytes().take_while(u8::is_ascii_hexdigit).count();
        if n > 0 {
            return (Some(sign * radix_value(&hex[..n], 16)), &hex[n..]);
        }
    }
    if let Some(octal) = body.strip_prefix('0') {
        let n = octal
            .bytes()
            .take_while(|b| (b'0'..=b'7').contains(b))
            .count();
        return (Some(sign * radix_value(&octal[..n], 8)), &octal[n..]);
    }
    let n = body.bytes().take_while(u8::is_ascii_digit).count();
    if n > 0 {
        return (Some(sign * radix_value(&body[..n], 10)), &body[n..]);
    }
    (None, value)
}

/// `strtod`: `[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?`.
fn strtod(value: &str) -> (Option<f64>, &str) {
    let bytes = value.as_bytes();
    let digits_from = |i: usize| bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut end = usize::from(matches!(bytes.first(), Some(b'-' | b'+')));
    let int_digits = digits_from(end);
    end += int_digits;
    let frac_digits = if bytes.get(end) == Some(&b'.') {
        digits_from(end + 1)
    } else {
        0
    };
    if frac_digits > 0 {
        end += 1 + frac_digits;
    } else if int_digits == 0 {
        return (None, value);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'-' | b'+')));
        let exp_digits = digits_from(end + 1 + sign);
        if exp_digits > 0 {
            end += 1 + sign + exp_digits;
        }
    }
    (value[..end].parse().ok(), &value[end..])
}

fn split_sign(value: &str) -> (f64, &str) {
    match value.as_bytes().first() {
        Some(b'-') => (-1.0, &value[1..]),
        Some(b'+') => (1.0, &value[1..]),
        _ => (1.0, value),
    }
}

/// Digits already validated for `radix`; folded in f64 so that long inputs cannot overflow.
fn radix_value(digits: &str, radix: u32) -> f64 {
    digits
        .chars()
        .filter_map(|c| c.to_digit(radix))
        .fold(0.0, |acc, d| acc * f64::from(radix) + f64::from(d))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_like_patroni() {
        assert_eq!(parse_bytes("1048576"), Some(1048576));
        assert_eq!(parse_bytes("16MB"), Some(16 * 1024 * 1024));
        assert_eq!(parse_bytes("1GB"), Some(1 << 30));
        assert_eq!(parse_bytes(" 1 kB "), Some(1024));
        assert_eq!(parse_bytes("0x10"), Some(16));
        assert_eq!(parse_bytes("010"), Some(8));
        assert_eq!(parse_bytes("0"), Some(0));
        assert_eq!(parse_bytes("1.5GB"), Some(1610612736));
        assert_eq!(parse_bytes("0.5MB"), Some(524288));
        assert_eq!(parse_bytes("1e3"), Some(1000));
        assert_eq!(parse_bytes(".5kB"), Some(512));
        assert_eq!(parse_bytes("-1MB"), Some(-1048576));
        assert_eq!(parse_bytes("2.5"), Some(2));
    }

    #[test]
    fn invalid_sizes() {
        assert_eq!(parse_bytes("abc"), None);
        assert_eq!(parse_bytes("16mb"), None);
        assert_eq!(parse_bytes("1.MB"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("5 s"), None);
    }
}
