//! Scheduled actions (a switchover's `scheduled_at`, a restart's `schedule`): wait until the
//! time (the agent wakes up at that instant), act when due, drop when more than 1.5 loop_wait
//! late (Patroni's rule: a cycle that late means the node is in no state for it), with one
//! second of slack for the agent's own wake-up.

/// Where a scheduled action stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    Waiting,
    Due,
    Missed,
}

/// `at_ms` and `now_ms`: wall-clock milliseconds since the Unix epoch.
pub fn scheduled(at_ms: i64, now_ms: i64, loop_wait_ms: u64) -> Scheduled {
    let late = now_ms - at_ms;
    let allowed = i64::try_from(loop_wait_ms.saturating_mul(3) / 2).unwrap_or(i64::MAX);
    if late < 0 {
        Scheduled::Waiting
    } else if late > allowed.saturating_add(1000) {
        Scheduled::Missed
    } else {
        Scheduled::Due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_fires_and_drops_when_too_late() {
        assert_eq!(scheduled(10_000, 9_999, 1_000), Scheduled::Waiting);
        assert_eq!(scheduled(10_000, 10_000, 1_000), Scheduled::Due);
        assert_eq!(scheduled(10_000, 12_500, 1_000), Scheduled::Due);
        assert_eq!(scheduled(10_000, 12_501, 1_000), Scheduled::Missed);
    }
}
