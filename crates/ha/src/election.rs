//! Leader election: am I the best candidate to take the free leader key?
//! (docs/compat.md#election)

use crate::observation::{Observation, PeerProbe};
use std::cmp::Ordering;

/// Ordering of candidates: more WAL first, then higher `failover_priority`, then the
/// lexicographically smaller name. Total, so every node that sees the same facts picks the
/// same winner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateRank {
    pub wal_position: u64,
    pub failover_priority: i64,
    pub name: String,
}

impl Ord for CandidateRank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.wal_position
            .cmp(&other.wal_position)
            .then(self.failover_priority.cmp(&other.failover_priority))
            .then_with(|| other.name.cmp(&self.name))
    }
}

impl PartialOrd for CandidateRank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The verdict with its reason, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    Best { rivals: usize },
    Ineligible(String),
    Behind(String),
}

/// How a race is run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaceRules {
    /// A member whose PostgreSQL is still starting holds back the race (its WAL position is
    /// unknown).
    pub wait_for_starting: bool,
    /// Members left out of the comparison (a manual request's former leader, or its unfit
    /// candidate).
    pub excluded: Vec<String>,
    /// Skip `maximum_lag_on_failover` (a manual failover: the operator asked for the change).
    pub ignore_lag: bool,
}

/// Decides whether this node should race for the leader key.
pub fn evaluate(obs: &Observation<'_>, rules: &RaceRules) -> Candidate {
    let s = obs.settings;
    let pg = obs.pg;
    if s.nofailover {
        return Candidate::Ineligible("tagged nofailover".into());
    }
    if obs
        .promotion_blocked_until
        .is_some_and(|until| obs.now < until)
    {
        return Candidate::Ineligible(
            "pre_promote refused the last promotion; waiting one ttl".into(),
        );
    }
    if !pg.running || !pg.queryable {
        return Candidate::Ineligible("postgres is not running".into());
    }
    let Some(cluster) = obs.cluster else {
        return Candidate::Ineligible("DCS is not accessible".into());
    };
    if let Some(optime) = cluster.optime() {
        let lag = optime.saturating_sub(pg.wal_position);
        if pg.in_recovery && !rules.ignore_lag && lag > s.maximum_lag_on_failover {
            return Candidate::Ineligible(format!(
                "my WAL position lags {lag} B behind the last leader position, more than maximum_lag_on_failover {} B",
                s.maximum_lag_on_failover
            ));
        }
    }
    if s.check_timeline && pg.in_recovery && pg.timeline < cluster.timeline() {
        return Candidate::Ineligible(format!(
            "my timeline {} is behind the cluster timeline {}",
            pg.timeline,
            cluster.timeline()
        ));
    }
    let sync_members = if s.synchronous_mode {
        cluster
            .sync_state()
            .map(|st| (st.leader.clone(), st.standbys()))
    } else {
        None
    };
    // A sync key with a leader (Patroni: not `sync.is_empty`) restricts the race to that
    // leader and the standbys it lists, also when it lists none: the leader then ran without
    // a synchronous standby and nobody else is known to hold its acknowledged commits.
    if let Some((Some(leader), standbys)) = &sync_members {
        let listed = *leader == s.name || standbys.contains(&s.name);
        if !listed {
            return Candidate::Ineligible(
                "synchronous mode: I am not a synchronous standby".into(),
            );
        }
    }

    let me = CandidateRank {
        wal_position: pg.wal_position,
        failover_priority: s.failover_priority,
        name: s.name.clone(),
    };
    let failsafe_topology = obs
        .cluster
        .and_then(|c| c.failsafe.as_ref())
        .filter(|t| s.failsafe_mode && !t.is_empty());
    let mut rivals = 0;
    for PeerProbe { name, reply } in obs.peers {
        if *name == s.name || rules.excluded.contains(name) {
            continue;
        }
        let Some(reply) = reply else { continue };
        // Only members the sync key matches are compared (Patroni), or nobody could win
        // when the key names the former leader alone. Likewise with failsafe mode, members
        // outside the failsafe topology, who may not race (Patroni compares them, and then
        // no member may lead while one of them is ahead: docs/compat.md#failsafe-mode).
        let comparable = match &sync_members {
            Some((Some(leader), standbys)) => leader == name || standbys.contains(name),
            _ => true,
        } && failsafe_topology.is_none_or(|t| t.contains(name));
        if reply.starting && !reply.nofailover && comparable && rules.wait_for_starting {
            return Candidate::Behind(format!(
                "{name} is still starting PostgreSQL; waiting for its WAL position"
            ));
        }
        if !reply.running {
            continue;
        }
        if reply.is_primary {
            return Candidate::Behind(format!("primary ({name}) is still alive"));
        }
        if reply.nofailover || !comparable {
            continue;
        }
        let Some(wal) = reply.wal_position else {
            continue;
        };
        rivals += 1;
        let them = CandidateRank {
            wal_position: wal,
            failover_priority: reply.failover_priority,
            name: name.clone(),
        };
        if them > me {
            return Candidate::Behind(if wal > me.wal_position {
                format!(
                    "WAL position of {name} ({wal}) is ahead of mine ({})",
                    me.wal_position
                )
            } else {
                format!("{name} has the same WAL position and wins the tie")
            });
        }
    }
    Candidate::Best { rivals }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(wal: u64, prio: i64, name: &str) -> CandidateRank {
        CandidateRank {
            wal_position: wal,
            failover_priority: prio,
            name: name.into(),
        }
    }

    #[test]
    fn ranks_by_wal_then_priority_then_name() {
        assert!(rank(10, 1, "b") > rank(9, 9, "a"));
        assert!(rank(10, 2, "b") > rank(10, 1, "a"));
        assert!(rank(10, 1, "a") > rank(10, 1, "b"));
    }
}
