//! Invariants, checked after every event (and at lock acquisitions and at the end).
//!
//! 1. Split brain: never two writable primaries (running, accepting connections, not in
//!    recovery, not paused) at the same instant.
//!
//!    1b. Lease safety (the promise behind 1): a writable node is the one the leader key
//!    names. Only a bootstrapping node (which takes the key at the end of its bootstrap) is
//!    exempt, and, with failsafe mode, a leader that every member acknowledged while it could
//!    not reach the DCS, while no leader key exists, for one ttl after the acknowledged pings
//!    were sent (the same bound its leader key would have had); and nobody while the cluster is
//!    in maintenance mode and one ttl after (nothing is fenced then, as in Patroni).
//!
//! 2. Promotion: when a node wins the leader key in order to promote, no peer that answered
//!    its probe as a running member was an eligible replica (running, in recovery, not
//!    nofailover, within maximum_lag_on_failover of the DCS optime the engine saw) with more
//!    WAL while it answered; and the winner itself was within maximum_lag_on_failover. This is
//!    "what the engine could know": unreachable peers are not counted, a peer whose answer was
//!    stale is.
//!    In synchronous mode with a `sync` key naming a leader, only that leader and the standbys
//!    the key lists are eligible; with failsafe mode and a failsafe topology, only its members.
//! 3. Synchronous mode: no acknowledged commit lost: a node that becomes primary holds every
//!    commit acknowledged so far. (In asynchronous mode losses are expected and only measured,
//!    `Stats::lost_acked_commits`.)
//! 4. Convergence: once faults stop, within `Schedule::converge_bound`: one leader holding the
//!    key, writable, and every other member running as a standby of it, on its timeline, with
//!    a WAL history it can continue. Members the engine deliberately leaves to an operator
//!    (its reason says so) are reported, not failed.
//! 5. Timeline identity: no two data directories hold different WAL under the same timeline at
//!    the same position (PostgreSQL decides streaming and pg_rewind on timeline ids).
//! 6. Lease keeping: a leader whose agent is alive, not paused, and has reached the DCS over a
//!    healthy network for the whole last ttl never loses its lease (nothing the agent does —
//!    a slow restart, a slow stop, waiting for proxies — may stop it renewing).
//! 7. Commands keep their word: a REST command answered as successful left the member in the
//!    state it promised (a restart: PostgreSQL running; a switchover: another leader).
//! 8. Switchovers: the former leader named in a standing switchover request never promotes
//!    while another registered, running standby could take over (it may resume on its own
//!    timeline, without a promotion, when nobody else can).
//! 9. Proxy fencing: a member promotes while a live proxy still routes writes to another
//!    member only after waiting `proxy_fencing_timeout` since it decided to promote.
//! 11. Virtual IP: a node (not paused) holds the `vip:` address only while the leader key
//!     names it (or, with failsafe mode, while every member acknowledged it as leader). An
//!     address whose lifetime ran out is gone (the kernel removed it).
//! 10. Callbacks: a converged leader that promoted during the run ran `on_role_change` with
//!     the primary role after its last promotion (if the same agent process still runs).

use crate::log::fmt_time;
use crate::wal::Ack;
use crate::world::{Truth, World};
use crate::Time;
use pgherd_ha::{Action, DataDir, Decision, Observation, PeerReply, Replication};
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
    LeaseLost,
    CommandBrokeItsWord,
    FormerLeaderPromoted,
    ProxyNotFenced,
    CallbackMissing,
    VipMisplaced,
}

/// What an agent knew when it decided to take the leader key in order to become primary.
#[derive(Debug, Clone)]
pub(crate) struct Election {
    pub reason: String,
    pub wal: u64,
    pub in_recovery: bool,
    pub optime: Option<u64>,
    /// Peers were probed (PostgreSQL was running); unreachable ones are not counted.
    pub probed: bool,
    /// Peers that answered: `(node, their answer, the truth when they answered)`.
    pub answered: Vec<(usize, PeerReply, Truth)>,
    /// Running members per the DCS: `(name, xlog_location, nofailover)`.
    pub members: Vec<(String, u64, bool)>,
    /// In synchronous mode, the members the `sync` key allows to be promoted.
    pub sync_members: Option<Vec<String>>,
    /// With failsafe mode, the members of the failsafe topology (only they may race, and
    /// only they are compared).
    pub failsafe_members: Option<Vec<String>>,
    /// A manual failover/switchover request: its former leader and (unfit) candidate left the
    /// race, and the lag limit does not apply (the operator asked for the change).
    pub manual: Option<Vec<String>>,
    /// It promotes to a new timeline while a switchover request names it as the leader to
    /// move away from (invariant 8; resuming on the same timeline after an abandoned
    /// switchover is allowed).
    pub former_leader_promotes: bool,
}

/// Some other member could take over from node `n`: its agent runs, it is registered in the
/// DCS, not tagged nofailover, not paused, and its PostgreSQL runs as a standby.
fn another_could_take_over(w: &World, n: usize) -> bool {
    (0..w.nodes.len()).filter(|&m| m != n).any(|m| {
        let node = &w.nodes[m];
        node.agent.is_some()
            && !node.settings.nofailover
            && !w.frozen(m)
            && node.pg.running
            && node.pg.accepting
            && node.pg.in_recovery
            && w.store.get(&w.layout.member(&node.name)).is_some()
    })
}

impl Election {
    /// The facts of `decision` if it takes the lock to become primary.
    pub(crate) fn record(
        w: &World,
        n: usize,
        obs: &Observation<'_>,
        decision: &Decision,
    ) -> Option<Election> {
        let acquire = decision
            .actions
            .iter()
            .position(|a| *a == Action::AcquireLock)?;
        let promotes = decision.actions[acquire..].iter().any(|a| {
            matches!(
                a,
                Action::Promote | Action::StartPostgres(Replication::Primary)
            )
        });
        if !promotes {
            return None;
        }
        let cluster = obs.cluster?;
        let answered = obs
            .peers
            .iter()
            .filter_map(|p| {
                let i = w.index_of(&p.name)?;
                let truth = w.nodes[n].probe_truth[i]?;
                Some((i, p.reply.clone()?, truth))
            })
            .collect();
        let sync_members = if obs.settings.synchronous_mode {
            cluster
                .sync_state()
                .filter(|st| st.leader.is_some())
                .map(|st| {
                    let mut m = st.standbys();
                    m.extend(st.leader.clone());
                    m
                })
        } else {
            None
        };
        let failsafe_members = cluster
            .failsafe
            .as_ref()
            .filter(|t| obs.settings.failsafe_mode && !t.is_empty())
            .map(|t| t.0.keys().cloned().collect());
        let me = &w.nodes[n].name;
        let former_leader_promotes = decision.actions.contains(&Action::Promote)
            && cluster
                .failover_request()
                .is_some_and(|f| f.leader.as_deref() == Some(me.as_str()))
            && another_could_take_over(w, n);
        let manual = cluster.failover_request().map(|f| {
            f.leader
                .iter()
                .chain(f.member.iter())
                .cloned()
                .collect::<Vec<_>>()
        });
        Some(Election {
            reason: decision.reason.clone(),
            wal: obs.pg.wal_position,
            in_recovery: obs.pg.in_recovery,
            optime: cluster.optime(),
            probed: !obs.peers.is_empty(),
            answered,
            members: cluster
                .members
                .values()
                .filter(|m| m.data.is_running())
                .filter_map(|m| Some((m.name.clone(), m.data.xlog_location?, m.data.nofailover())))
                .collect(),
            sync_members,
            failsafe_members,
            former_leader_promotes,
            manual,
        })
    }
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
        at: w.now(),
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
            .and_then(|a| a.leader_until())
            .map(|_| ", counts itself leader".to_string())
            .unwrap_or_default()
    )
}

pub(crate) fn after_event(w: &mut World) {
    let t = w.now();
    for i in 0..w.nodes.len() {
        let now = w.writable(i);
        if w.was_writable[i] && !now {
            let name = w.nodes[i].name.clone();
            w.stats.stopped_writing.push((t, name));
        }
        w.was_writable[i] = now;
    }
    // Invariant 11. A paused node keeps its addresses (its fence releases the VIP the instant
    // it resumes); a failsafe leader acknowledged by every member holds it without the key.
    let leader_name = w.leader_name();
    let misplaced = (0..w.nodes.len()).find(|&i| {
        let node = &w.nodes[i];
        node.holds_vip
            && t < node.vip_until
            && leader_name.as_deref() != Some(node.name.as_str())
            && !w.frozen(i)
            && node.resumed_at != Some(t)
            && !(leader_name.is_none() && node.failsafe_until.is_some_and(|u| t < u))
    });
    if let Some(i) = misplaced {
        let (name, leader) = (w.nodes[i].name.clone(), leader_name.clone());
        violate(
            w,
            Invariant::VipMisplaced,
            format!("{name} holds the virtual IP while the leader key names {leader:?}"),
        );
    }
    let writable_now = |i: usize| w.writable(i);
    let count = (0..w.nodes.len()).filter(|&i| writable_now(i)).count();
    let leader_ok = |i: usize| leader_name.as_deref() == Some(w.nodes[i].name.as_str());
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
    let leader = leader_name.clone();
    for &i in &writable {
        let bootstrapping = w.nodes[i].agent.is_some()
            && w.nodes[i].task == Some(pgherd_ha::AsyncAction::Bootstrap);
        let failsafe = leader.is_none() && w.nodes[i].failsafe_until.is_some_and(|u| t < u);
        // In maintenance mode nothing is fenced (Patroni's pause): a primary that lost its key
        // keeps running until a cycle after the resume; split brain (invariant 1) still may
        // not happen.
        let paused = w
            .maintenance
            .is_some_and(|(from, until)| from <= t && t < until);
        if leader.as_deref() != Some(w.nodes[i].name.as_str())
            && !bootstrapping
            && !failsafe
            && !paused
        {
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
    let Some(e) = w.nodes[n].election.take() else {
        return;
    };
    let reason = e.reason.clone();
    w.stats.promotions_checked += 1;
    let max_lag = w.nodes[n].settings.maximum_lag_on_failover;
    let me = w.nodes[n].name.clone();
    w.say(n, || {
        format!("won the leader key to become primary (WAL {})", e.wal)
    });
    if e.former_leader_promotes {
        w.violate(
            Invariant::FormerLeaderPromoted,
            format!("{me} won the lock to promote while a switchover request names it as the leader to move away from; decision: {reason}"),
        );
        return;
    }
    let excluded = e.manual.clone().unwrap_or_default();
    let lag_limit = e.manual.is_none();
    if let (true, true, Some(optime)) = (lag_limit, e.in_recovery, e.optime) {
        let lag = optime.saturating_sub(e.wal);
        if lag > max_lag {
            w.violate(
                Invariant::PromotionBehind,
                format!("{me} promotes lagging {lag} B behind the last leader optime ({optime}), more than maximum_lag_on_failover {max_lag}; decision: {reason}"),
            );
            return;
        }
    }
    let within = |wal: u64| !lag_limit || e.optime.is_none_or(|o| o.saturating_sub(wal) <= max_lag);
    if !e.probed {
        // No probes (PostgreSQL was not running): the member keys are what it could know.
        for (name, xlog, nofailover) in &e.members {
            let listed = e.sync_members.as_ref().is_none_or(|l| l.contains(name))
                && e.failsafe_members.as_ref().is_none_or(|l| l.contains(name));
            if *name != me
                && !excluded.contains(name)
                && !nofailover
                && within(*xlog)
                && listed
                && *xlog > e.wal
            {
                w.violate(
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
        let name = w.nodes[*peer].name.clone();
        let listed = e.sync_members.as_ref().is_none_or(|l| l.contains(&name))
            && e.failsafe_members
                .as_ref()
                .is_none_or(|l| l.contains(&name));
        // Eligible: a running replica throughout its answer, which it reported as running
        // (a member still finishing its start reports `starting` and is not compared, by
        // design; see the engine's election).
        let eligible = truth.running_replica
            && reply.running
            && !truth.nofailover
            && within(truth.wal)
            && listed
            && !excluded.contains(&name);
        if eligible && truth.wal > e.wal {
            w.violate(
                Invariant::PromotionBehind,
                format!(
                    "{me} promotes at WAL {} although {name}, an eligible replica that answered its probe, had WAL {} (its REST answer said {:?}); decision: {reason}",
                    e.wal, truth.wal, reply.wal_position
                ),
            );
            return;
        }
    }
}

/// Invariant 3: in synchronous mode, a node that becomes a primary (promotion, or a start
/// as primary while it holds the leader key) holds every commit acknowledged so far.
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
    w.violate(Invariant::LostAckedCommit, msg);
}

/// Members the engine deliberately leaves to an operator, with its reason.
pub(crate) fn needs_intervention(w: &World, n: usize) -> Option<String> {
    let node = &w.nodes[n];
    if let DataDir::Invalid(why) = &node.pg.data {
        return Some(format!("{}: {why}", node.name));
    }
    node.agent.as_ref()?;
    if node.pg.running {
        return None;
    }
    let r = &node.last_reason;
    if r.contains("intervention needed") || r.contains("staying stopped") {
        return Some(format!("{}: {r}", node.name));
    }
    None
}

/// Invariant 4's target state; `Err` says what is still missing.
pub(crate) fn converged(w: &World) -> Result<usize, String> {
    let Some(name) = w.leader_name() else {
        return Err("no leader key".into());
    };
    let l = w
        .index_of(&name)
        .ok_or("leader key names an unknown member")?;
    let leader = &w.nodes[l];
    if !w.writable(l) {
        return Err(format!("leader {name} is not a writable primary"));
    }
    if leader
        .agent
        .as_ref()
        .and_then(|a| a.leader_until())
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
        let last = node.last_reason.clone();
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
        callbacks_ran(w, l);
    }
}

/// Invariant 9, when `n` has just promoted.
pub(crate) fn on_promoted(w: &mut World, n: usize) {
    let now = w.now();
    w.nodes[n].promoted_at = Some((now, w.nodes[n].agent_epoch));
    let key = w
        .layout
        .key(&pgherd_dcs::proxy_key(crate::faults::SIM_PROXY));
    let Some(routes) = w
        .store
        .get(&key)
        .and_then(|raw| pgherd_dcs::ProxyRegistration::parse(&raw).ok())
        .and_then(|r| r.routing_leader)
    else {
        return;
    };
    let me = w.nodes[n].name.clone();
    if routes == me {
        return;
    }
    let waited = now.saturating_sub(w.nodes[n].promote_decided_at.unwrap_or(0));
    let limit = DEFAULT_PROXY_FENCING_TIMEOUT;
    if waited < limit {
        w.violate(
            Invariant::ProxyNotFenced,
            format!("{me} promoted {waited} ms after deciding to, while a live proxy still routed writes to {routes} (proxy_fencing_timeout {limit} ms)"),
        );
    }
}

/// `proxy_fencing_timeout` of every simulated cluster (pgherd's default).
const DEFAULT_PROXY_FENCING_TIMEOUT: Time = 5_000;

/// Invariant 10, on a converged leader `l` at the end.
fn callbacks_ran(w: &mut World, l: usize) {
    let node = &w.nodes[l];
    // Only the agent process that promoted knows the role changed (a new one finds a primary).
    let Some(promoted) = node
        .promoted_at
        .filter(|&(_, epoch)| epoch == node.agent_epoch)
        .map(|(at, _)| at)
    else {
        return;
    };
    let told = node
        .callbacks
        .iter()
        .any(|(at, action, role)| *at >= promoted && action == "OnRoleChange" && role == "master");
    if !told {
        let (name, last) = (node.name.clone(), node.callbacks.last().cloned());
        w.violate(
            Invariant::CallbackMissing,
            format!("{name} promoted at {} and leads, but ran no on_role_change callback with role master since; last callback: {last:?}", fmt_time(promoted)),
        );
    }
}

/// Invariant 6, when the leader key of `leader` vanished because its lease expired.
pub(crate) fn on_leader_lease_expired(w: &mut World, leader: &str) {
    let Some(n) = w.index_of(leader) else {
        return;
    };
    let now = w.now();
    let ttl = w.nodes[n].settings.ttl;
    let node = &w.nodes[n];
    let agent_alive_long = node.agent.is_some() && now.saturating_sub(node.agent_started_at) > ttl;
    let healthy_long = node
        .healthy_dcs_since
        .is_some_and(|since| now.saturating_sub(since) > ttl);
    if agent_alive_long && healthy_long {
        let last = node.last_reason.clone();
        w.violate(
            Invariant::LeaseLost,
            format!(
                "the lease of leader {leader} expired although its agent was alive, not paused, and reached the DCS over a healthy network for the whole ttl ({ttl} ms); its last decision: {last}"
            ),
        );
    }
}
