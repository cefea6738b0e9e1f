//! Invariants, checked after every event (and at lock acquisitions and at the end).
//!
//! 1. Split brain: never two writable primaries (running, accepting connections, not in
//!    recovery, not paused) at the same instant.
//!
//!    1b. Lease safety (the promise behind 1): a writable node is the one the leader key
//!    names. Only a bootstrapping node (which takes the key at the end of its bootstrap) is
//!    exempt.
//!
//! 2. Promotion: when a node wins the leader key in order to promote, no peer that answered
//!    its probe was an eligible replica (running, in recovery, not nofailover, within
//!    maximum_lag_on_failover of the DCS optime the engine saw) with more WAL at the time it
//!    answered; and the winner itself was within maximum_lag_on_failover. This is "what the
//!    engine could know": unreachable peers are not counted, a peer whose answer was stale is.
//!    In synchronous mode with a `sync` key naming a leader, only that leader and the standbys
//!    the key lists are eligible.
//! 3. Synchronous mode: no acknowledged commit lost: a node that becomes primary holds every
//!    commit acknowledged so far. (In asynchronous mode losses are expected and only measured,
//!    `Stats::lost_acked_commits`.)
//! 4. Convergence: once faults stop, within `Schedule::converge_bound`: one leader holding the
//!    key, writable, and every other member running as a standby of it, on its timeline, with
//!    a WAL history it can continue. Members the engine deliberately leaves to an operator
//!    (its reason says so) are reported, not failed.
//! 5. Timeline identity: no two data directories hold different WAL under the same timeline at
//!    the same position (PostgreSQL decides streaming and pg_rewind on timeline ids).

use crate::log::fmt_time;
use crate::wal::Ack;
use crate::world::World;
use crate::Time;
use pgherd_ha::{Action, DataDir, StartRole};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    SplitBrain,
    LeaseSafety,
    PromotionBehind,
    LostAckedCommit,
    Convergence,
    TimelineIdentity,
    UnexpectedFatal,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: Invariant,
    pub seed: u64,
    pub step: u64,
    pub at: Time,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} violated {:?} at {} (step {}): {}",
            self.seed,
            self.invariant,
            fmt_time(self.at),
            self.step,
            self.message
        )
    }
}

pub(crate) fn violate(w: &mut World, invariant: Invariant, message: String) {
    if w.violation.is_some() {
        return;
    }
    let m = message.clone();
    w.say_world(|| format!("VIOLATION {invariant:?}: {m}"));
    w.violation = Some(Violation {
        invariant,
        seed: w.schedule.seed,
        step: w.step,
        at: w.now,
        message,
    });
}

fn describe(w: &World, n: usize) -> String {
    let node = &w.nodes[n];
    let pg = &node.pg;
    format!(
        "{}(timeline {}, lsn {}{}{})",
        node.name,
        pg.wal.timeline(),
        pg.wal.end,
        if node.agent.is_none() {
            ", no agent"
        } else {
            ""
        },
        node.agent
            .as_ref()
            .and_then(|a| a.lock_confirmed_at)
            .map(|t| format!(", lease confirmed at {}", fmt_time(t)))
            .unwrap_or_default()
    )
}

pub(crate) fn after_event(w: &mut World) {
    for i in 0..w.nodes.len() {
        let now = !w.frozen(i) && w.nodes[i].pg.writable();
        if w.was_writable[i] && !now {
            let name = w.nodes[i].name.clone();
            w.stats.stopped_writing.push((w.now, name));
        }
        w.was_writable[i] = now;
    }
    let writable_now = |i: usize| !w.frozen(i) && w.nodes[i].pg.writable();
    let count = (0..w.nodes.len()).filter(|&i| writable_now(i)).count();
    let leader_ok = |i: usize| {
        w.dcs
            .leader
            .as_ref()
            .is_some_and(|l| l.name == w.nodes[i].name)
    };
    // Fast path (most events): nothing to report and no WAL identity to re-check.
    let quiet =
        count == 0 || (count == 1 && (0..w.nodes.len()).all(|i| !writable_now(i) || leader_ok(i)));
    if quiet && w.wal_dirty.is_empty() {
        return;
    }
    let writable: Vec<usize> = (0..w.nodes.len()).filter(|&i| writable_now(i)).collect();
    if writable.len() >= 2 {
        let who: Vec<String> = writable.iter().map(|&i| describe(w, i)).collect();
        violate(
            w,
            Invariant::SplitBrain,
            format!("two writable primaries: {}", who.join(" and ")),
        );
    }
    let leader = w.dcs.leader.as_ref().map(|l| l.name.clone());
    for &i in &writable {
        let bootstrapping = w.nodes[i]
            .agent
            .as_ref()
            .and_then(|a| a.task.as_ref())
            .is_some_and(|t| t.kind == pgherd_ha::AsyncAction::Bootstrap);
        if leader.as_deref() != Some(w.nodes[i].name.as_str()) && !bootstrapping {
            let d = describe(w, i);
            violate(
                w,
                Invariant::LeaseSafety,
                format!("{d} is writable but the leader key names {leader:?}"),
            );
        }
    }
    if !w.wal_dirty.is_empty() {
        let mut dirty = std::mem::take(&mut w.wal_dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for n in dirty {
            for m in 0..w.nodes.len() {
                if m == n || !w.nodes[m].pg.initialized() {
                    continue;
                }
                if let Some((tl, lsn)) =
                    w.nodes[n].pg.wal.same_timeline_conflict(&w.nodes[m].pg.wal)
                {
                    let (a, b) = (w.nodes[n].name.clone(), w.nodes[m].name.clone());
                    violate(
                        w,
                        Invariant::TimelineIdentity,
                        format!(
                            "{a} and {b} hold different WAL on timeline {tl} from lsn {lsn}: one of them wrote on a timeline it did not create"
                        ),
                    );
                }
            }
        }
    }
}

/// Invariant 2, when `n` just won the leader key in order to become primary.
pub(crate) fn on_lock_won(w: &mut World, n: usize) {
    let Some(a) = w.nodes[n].agent.as_ref() else {
        return;
    };
    let Some(cy) = a.cycle.as_deref() else {
        return;
    };
    let promotes = matches!(
        cy.decision.actions.get(cy.idx + 1),
        Some(Action::Promote | Action::StartPostgres(StartRole::Primary))
    );
    let Some(e) = cy.election.clone().filter(|_| promotes) else {
        return;
    };
    let reason = cy.decision.reason.clone();
    w.stats.promotions_checked += 1;
    let max_lag = w.nodes[n].settings.maximum_lag_on_failover;
    let me = w.nodes[n].name.clone();
    w.say(n, || {
        format!("won the leader key to become primary (WAL {})", e.wal)
    });
    if let (true, Some(optime)) = (e.in_recovery, e.optime) {
        let lag = optime.saturating_sub(e.wal);
        if lag > max_lag {
            violate(
                w,
                Invariant::PromotionBehind,
                format!("{me} promotes lagging {lag} B behind the last leader optime ({optime}), more than maximum_lag_on_failover {max_lag}; decision: {reason}"),
            );
            return;
        }
    }
    if !e.probed {
        // No probes (PostgreSQL was not running): the member keys are what it could know.
        for (name, xlog, nofailover) in &e.members {
            let within = e.optime.is_none_or(|o| o.saturating_sub(*xlog) <= max_lag);
            let listed = e.sync_members.as_ref().is_none_or(|l| l.contains(name));
            if *name != me && !nofailover && within && listed && *xlog > e.wal {
                violate(
                    w,
                    Invariant::PromotionBehind,
                    format!(
                        "{me} takes the lock to become primary at WAL {} although the member key of {name}, a running replica, showed WAL {xlog}; decision: {reason}",
                        e.wal
                    ),
                );
                return;
            }
        }
    }
    for (peer, reply, truth) in &e.answered {
        let within = e
            .optime
            .is_none_or(|o| o.saturating_sub(truth.wal) <= max_lag);
        let listed = e
            .sync_members
            .as_ref()
            .is_none_or(|l| l.contains(&w.nodes[*peer].name));
        let eligible = truth.running_replica && !truth.nofailover && within && listed;
        if eligible && truth.wal > e.wal {
            let p = w.nodes[*peer].name.clone();
            violate(
                w,
                Invariant::PromotionBehind,
                format!(
                    "{me} promotes at WAL {} although {p}, an eligible replica that answered its probe, had WAL {} (its REST answer said {:?}); decision: {reason}",
                    e.wal, truth.wal, reply.wal_position
                ),
            );
            return;
        }
    }
}

/// Invariant 3: in synchronous mode, a node that becomes a primary (promotion, or a start
/// as primary) holds every commit acknowledged so far.
pub(crate) fn on_new_primary(w: &mut World, n: usize) {
    if !w.nodes[n].settings.synchronous_mode {
        return;
    }
    let wal = &w.nodes[n].pg.wal;
    let lost: Vec<Ack> = w.acks.iter().filter(|a| !a.is_in(wal)).copied().collect();
    let Some(first) = lost.first() else {
        return;
    };
    let msg = format!(
        "{} became primary (timeline {}, lsn {}) without {} acknowledged commit(s); the first was acknowledged by {} at {} (timeline {}, lsn {})",
        w.nodes[n].name,
        wal.timeline(),
        wal.end,
        lost.len(),
        w.nodes[first.node].name,
        fmt_time(first.at),
        first.timeline,
        first.lsn
    );
    violate(w, Invariant::LostAckedCommit, msg);
}

/// Members the engine deliberately leaves to an operator, with its reason.
pub(crate) fn needs_intervention(w: &World, n: usize) -> Option<String> {
    let node = &w.nodes[n];
    if let DataDir::Invalid(why) = &node.pg.data {
        return Some(format!("{}: {why}", node.name));
    }
    let a = node.agent.as_ref()?;
    if node.pg.running {
        return None;
    }
    let r = &a.last_reason;
    if r.contains("intervention needed") || a.rewind_failures >= crate::agent::MAX_REWIND_ATTEMPTS {
        return Some(format!("{}: {r}", node.name));
    }
    None
}

/// Invariant 4's target state; `Err` says what is still missing.
pub(crate) fn converged(w: &World) -> Result<usize, String> {
    let Some(name) = w.dcs.leader.as_ref().map(|l| l.name.clone()) else {
        return Err("no leader key".into());
    };
    let l = w
        .index_of(&name)
        .ok_or("leader key names an unknown member")?;
    let leader = &w.nodes[l];
    if w.frozen(l) || !leader.pg.writable() {
        return Err(format!("leader {name} is not a writable primary"));
    }
    if leader
        .agent
        .as_ref()
        .and_then(|a| a.lock_confirmed_at)
        .is_none()
    {
        return Err(format!("leader {name} does not know it holds the lock"));
    }
    for m in 0..w.nodes.len() {
        if m == l || needs_intervention(w, m).is_some() {
            continue;
        }
        let node = &w.nodes[m];
        let pg = &node.pg;
        let why = if node.agent.is_none() {
            "agent not running"
        } else if w.frozen(m) {
            "paused"
        } else if !(pg.running && pg.accepting && pg.in_recovery) {
            "not a running standby"
        } else if pg.upstream.as_deref() != Some(name.as_str()) {
            "not following the leader"
        } else if !pg.wal.is_prefix_of(&leader.pg.wal) {
            "WAL diverged from the leader's history (cannot stream)"
        } else if pg.wal.timeline() != leader.pg.wal.timeline() {
            "not on the leader's timeline yet"
        } else {
            continue;
        };
        let last = node
            .agent
            .as_ref()
            .map(|a| a.last_reason.clone())
            .unwrap_or_default();
        return Err(format!(
            "{}: {why} (timeline {}, lsn {}, upstream {:?}; last decision: {last})",
            node.name,
            pg.wal.timeline(),
            pg.wal.end,
            pg.upstream
        ));
    }
    Ok(l)
}

pub(crate) fn at_end(w: &mut World) {
    let leader = converged(w).ok();
    w.stats.final_leader = leader.map(|l| w.nodes[l].name.clone());
    w.stats.needs_intervention = (0..w.nodes.len())
        .filter_map(|m| needs_intervention(w, m))
        .collect();
    if let Some(l) = leader {
        let wal = &w.nodes[l].pg.wal;
        w.stats.lost_acked_commits = w.acks.iter().filter(|a| !a.is_in(wal)).count() as u64;
    }
}
