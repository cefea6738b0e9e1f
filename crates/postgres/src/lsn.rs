//! WAL positions. Patroni publishes LSNs as byte offsets from `0/0`; PostgreSQL prints them
//! as two hex halves (`0/4000060` = 67108960).

/// Parses `X/Y` (hex halves of a 64-bit position) into a byte offset.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let valid =
        |half: &str| (1..=8).contains(&half.len()) && half.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid(hi) || !valid(lo) {
        return None;
    }
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Formats a byte offset the way PostgreSQL does (`0/4000060`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_patroni_example() {
        assert_eq!(parse_lsn("0/4000060"), Some(67_108_960));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_lsn(" 16/B374D848\n"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("a/b"), Some(0xA_0000_000B));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "0",
            "/1",
            "1/",
            "x/1",
            "1/2/3",
            "100000000/0",
            "-1/0",
            "0/+1",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for lsn in [0, 1, 67_108_960, 1 << 32, 0x16_B374_D848, u64::MAX] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
        assert_eq!(format_lsn(67_108_960), "0/4000060");
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }
}
