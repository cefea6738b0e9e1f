//! Rejoin: has a stopped or standby node's WAL left the leader's history?
//! (docs/compat.md#rejoin)
//!
//! Pure facts in, a verdict out; the agent feeds it `pg_controldata` or the WAL receiver's
//! position and the DCS `history`, the simulator its model.

use pgherd_dcs::Cluster;

/// What we know about the end of our WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalWal {
    /// A running standby: the furthest of its received and replayed positions.
    Running(u64),
    /// Stopped, as `pg_control` records it.
    Stopped {
        /// `Latest checkpoint location` (the start of that record).
        checkpoint: u64,
        /// `Minimum recovery ending location` (0 for a former primary).
        min_recovery: u64,
        /// Stopped uncleanly while primary (`in production`): the end of WAL is unknown.
        crashed_primary: bool,
    },
}

/// Whether our WAL went past the point where the leader's timeline forked from ours, so
/// streaming from it is impossible without pg_rewind. Uses the DCS `history` (the leader's
/// timeline switch points); `None` without a leader.
///
/// A stopped node diverged when PostgreSQL itself would refuse the leader's timeline: its
/// checkpoint record starts at or after the fork (the fork is a record boundary, so a
/// checkpoint that starts before it also ends before or at it), or its minimum recovery
/// point lies past the fork. pg_rewind applies the same test.
pub fn diverged(c: &Cluster, me: &str, our_tl: u64, wal: LocalWal) -> Option<bool> {
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
    let former_primary = match wal {
        LocalWal::Stopped {
            crashed_primary: true,
            ..
        } => return Some(true),
        LocalWal::Stopped { min_recovery, .. } => min_recovery == 0,
        LocalWal::Running(_) => false,
    };
    let switch = c
        .history
        .as_ref()
        .and_then(|h| h.value.iter().find(|e| e.timeline == our_tl))
        .map(|e| e.switch_lsn);
    Some(match switch {
        Some(fork) => match wal {
            LocalWal::Running(position) => position > fork,
            LocalWal::Stopped {
                checkpoint,
                min_recovery,
                ..
            } => checkpoint >= fork || min_recovery > fork,
        },
        // The leader published its own history (its newest line names it) and our timeline
        // is not in it: ours is not an ancestor of the leader's (skipped timeline ids make
        // "last entry + 1" unreliable, the author is what tells a current history).
        None if history_by(c, &leader.name) => true,
        // The leader has not published its history yet: a former primary rewinds to be safe.
        None => former_primary,
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
        let stopped = |checkpoint, min_recovery| LocalWal::Stopped {
            checkpoint,
            min_recovery,
            crashed_primary: false,
        };
        // Former primary stopped cleanly: its shutdown checkpoint record (at 900) was
        // received by the new leader, which forked right after it.
        assert_eq!(diverged(&c, "n1", 1, stopped(900, 0)), Some(false));
        // The new leader forked before our shutdown checkpoint: that record is ours alone.
        assert_eq!(diverged(&c, "n1", 1, stopped(1000, 0)), Some(true));
        // A stopped standby: the checkpoint it restarted from starts at the fork (PostgreSQL
        // refuses with "requested timeline 2 is not a child of this server's history"), or
        // it replayed past the fork.
        assert_eq!(diverged(&c, "n1", 1, stopped(1000, 1000)), Some(true));
        assert_eq!(diverged(&c, "n1", 1, stopped(800, 1200)), Some(true));
        assert_eq!(diverged(&c, "n1", 1, stopped(800, 1000)), Some(false));
        // A running standby that went past the fork.
        assert_eq!(diverged(&c, "n1", 1, LocalWal::Running(1000)), Some(false));
        assert_eq!(diverged(&c, "n1", 1, LocalWal::Running(1200)), Some(true));
        // A crashed primary's end of WAL is unknown: rewind.
        let crashed = LocalWal::Stopped {
            checkpoint: 10,
            min_recovery: 0,
            crashed_primary: true,
        };
        assert_eq!(diverged(&c, "n1", 1, crashed), Some(true));
        // Same timeline: nothing to do; newer than the leader's: rewind.
        assert_eq!(diverged(&c, "n1", 2, LocalWal::Running(5000)), Some(false));
        assert_eq!(diverged(&c, "n1", 3, LocalWal::Running(5000)), Some(true));
        // Our timeline is not in the history the leader published: not its ancestor.
        assert_eq!(diverged(&c, "n1", 7, LocalWal::Running(10)), Some(true));
        // No leader, no verdict.
        assert_eq!(
            diverged(&Cluster::default(), "n1", 1, LocalWal::Running(10)),
            None
        );
    }
}
