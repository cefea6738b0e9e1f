//! An auto listener's routing decisions, counted by target and reason for the stats page and
//! `/metrics` (`pgherd_proxy_routing_decisions_total`).

use super::reason::{Reason, Target};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

const REASONS: usize = Reason::ALL.len();

/// One counter per (target, reason); lock-free, shared by the listener's sessions.
#[derive(Debug)]
pub struct RoutingCounters {
    primary: [AtomicU64; REASONS],
    replica: [AtomicU64; REASONS],
}

impl Default for RoutingCounters {
    fn default() -> Self {
        RoutingCounters {
            primary: std::array::from_fn(|_| AtomicU64::new(0)),
            replica: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RoutingCounters {
    /// Counts one message or transaction sent to `target` for `reason`.
    pub fn record(&self, target: Target, reason: Reason) {
        let Some(i) = Reason::ALL.iter().position(|r| *r == reason) else {
            return;
        };
        let row = match target {
            Target::Primary => &self.primary,
            Target::Replica => &self.replica,
        };
        row[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far: `{"primary": {"write": 3, ...}, "replica": {"read_only": 9}}`, each
    /// reason listed once it has been counted.
    pub fn to_json(&self) -> Value {
        let row = |counters: &[AtomicU64; REASONS]| {
            let mut map = Map::new();
            for (reason, counter) in Reason::ALL.iter().zip(counters) {
                let n = counter.load(Ordering::Relaxed);
                if n > 0 {
                    map.insert(reason.label().to_string(), Value::from(n));
                }
            }
            Value::Object(map)
        };
        let mut map = Map::new();
        map.insert(Target::Primary.label().to_string(), row(&self.primary));
        map.insert(Target::Replica.label().to_string(), row(&self.replica));
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::reason::PinCause;
    use serde_json::json;

    #[test]
    fn counts_by_target_and_reason() {
        let c = RoutingCounters::default();
        c.record(Target::Replica, Reason::ReadOnly);
        c.record(Target::Replica, Reason::ReadOnly);
        c.record(Target::Primary, Reason::Write);
        c.record(Target::Primary, Reason::Pinned(PinCause::Listen));
        assert_eq!(
            c.to_json(),
            json!({
                "primary": {"write": 1, "pinned_listen": 1},
                "replica": {"read_only": 2},
            })
        );
    }
}
