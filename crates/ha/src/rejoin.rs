//! Rejoin: has a stopped or standby node's WAL left the leader's history? (compat §4.12)
//!
//! Pure facts in, a verdict out; the agent feeds it `pg_controldata` or the WAL receiver's
//! position and the DCS `history`, the simulator its model.

use pgherd_dcs::Cluster;

/// Whether our WAL went past the point where the leader's timeline forked from ours, so
/// streaming from it is impossible without pg_rewind. Uses the DCS `history` (the leader's
/// timeline switch points); `None` without a leader.
pub fn diverged(
    c: &Cluster,
    me: &str,
    our_tl: u64,
    our_lsn: u64,
    clean_primary: bool,
    crashed_primary: bool,
) -> Option<bool> {
    let leader = c.leader_member().filter(|l| l.name != me)?;
    let leader_tl = leader.data.timeline.unwrap_or(0).max(c.timeline());
    // Our timeline is newer than the leader's: it cannot be an ancestor of the leader's
    // (Patroni: local timeline > leader timeline => rewind).
    if leader.data.timeline.is_some() && leader_tl < our_tl {
        return Some(true);
    }
    if leader_tl <= our_tl {
        return Some(false);
    }
    if crashed_primary {
        return Some(true);
    }
    let switch = c
        .history
        .as_ref()
        .and_then(|h| h.value.iter().find(|e| e.timeline == our_tl))
        .map(|e| e.switch_lsn);
    Some(match switch {
        // A clean former primary stops with its shutdown checkpoint, which the promoted
        // standby received: the fork is right after it (switch LSN = end of that record).
        Some(fork) => our_lsn > fork || (clean_primary && our_lsn >= fork),
        // The leader published its own history (its newest line names it) and our timeline
        // is not in it: ours is not an ancestor of the leader's (skipped timeline ids make
        // "last entry + 1" unreliable, the author is what tells a current history).
        None if history_by(c, &leader.name) => true,
        // The leader has not published its history yet: a former primary rewinds to be safe.
        None => clean_primary,
    })
}

fn history_by(c: &Cluster, leader: &str) -> bool {
    c.history
        .as_ref()
        .and_then(|h| h.value.last())
        .is_some_and(|e| e.new_leader.as_deref() == Some(leader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(leader_tl: u64, history: &str) -> Cluster {
        let member = format!(
            r#"{{"conn_url":"postgres://h:5432/postgres","api_url":"http://h:8008/patroni","state":"running","role":"master","version":"3.0.2","timeline":{leader_tl}}}"#
        );
        let rows = [
            ("leader", "n2".to_string()),
            ("members/n2", member),
            ("history", history.to_string()),
        ];
        Cluster::from_rows(rows.iter().map(|(k, v)| (*k, v.as_str(), 1, 0)), 1)
    }

    #[test]
    fn clean_switchover_needs_no_rewind_but_wal_past_the_fork_does() {
        let c = cluster(
            2,
            r#"[[1,1000,"no recovery target specified","2030-01-01T00:00:00+00:00","n2"]]"#,
        );
        // Former primary stopped cleanly at its shutdown checkpoint, before the fork.
        assert_eq!(diverged(&c, "n1", 1, 900, true, false), Some(false));
        assert_eq!(diverged(&c, "n1", 1, 1000, true, false), Some(true));
        assert_eq!(diverged(&c, "n1", 1, 1200, false, false), Some(true));
        // A crashed primary's end of WAL is unknown: rewind.
        assert_eq!(diverged(&c, "n1", 1, 10, false, true), Some(true));
        // Same timeline: nothing to do; newer than the leader's: rewind.
        assert_eq!(diverged(&c, "n1", 2, 5000, false, false), Some(false));
        assert_eq!(diverged(&c, "n1", 3, 5000, false, false), Some(true));
        // Our timeline is not in the history the leader published: not its ancestor.
        assert_eq!(diverged(&c, "n1", 7, 10, false, false), Some(true));
        // No leader, no verdict.
        assert_eq!(
            diverged(&Cluster::default(), "n1", 1, 10, false, false),
            None
        );
    }
}
