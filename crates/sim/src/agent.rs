//! The simulated agent process: the HA loop of crates/agent/src/agent.rs + lib.rs as a state
//! machine in simulated time. Each cycle: read the cluster (DCS call with retries), observe
//! PostgreSQL, probe peers when the leader key is free, ask the real engine, execute its
//! actions (crate::actions), observe again, touch the member key, publish the REST snapshot,
//! sleep until `started + loop_wait`, an earlier watch wake-up or the end of a background
//! task. Also the independent fence timer (fence.rs). DCS calls, observation and shutdown
//! live in their own modules.

use crate::actions;
use crate::calls::{self, Call, Owner};
use crate::config::PlantedBug;
use crate::dcs::{fingerprint, DcsOp, DcsReply, Fingerprint};
use crate::pg::StopMode;
use crate::tasks::Task;
use crate::world::{Ev, Host, Truth, World};
use crate::{observe, shutdown, Time};
use pgherd_dcs::{Cluster, Role};
use pgherd_ha::{DataDir, Decision, Engine, LocalPg, Observation, PeerProbe, PeerReply};
use std::collections::BTreeMap;
use std::rc::Rc;

/// peers.rs PROBE_TIMEOUT.
const PROBE_TIMEOUT: Time = 1_500;
/// The simulated wall clock starts here (2026-01-01T00:00:00Z); only scheduled switchovers
/// read it.
const WALL_CLOCK_EPOCH: i64 = 1_767_225_600_000;
/// agent.rs MAX_REWIND_ATTEMPTS: pg_rewind attempts before the node stays stopped.
pub(crate) const MAX_REWIND_ATTEMPTS: u32 = 3;
/// While a background task runs, run_loop checks this often whether it finished.
const TASK_POLL: Time = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Sleeping { until: Time },
    Reading,
    Probing,
    Acting,
    Touching,
    ShuttingDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    None,
    Call(u64),
    Cont(u64),
}

/// What the engine could know when it decided to race for the lock (for invariant 2).
#[derive(Debug, Clone)]
pub(crate) struct Election {
    pub wal: u64,
    pub in_recovery: bool,
    pub optime: Option<u64>,
    /// Peers that answered the probe: the answer, and the truth when it was given.
    pub answered: Vec<(usize, PeerReply, Truth)>,
    /// Synchronous mode with a `sync` key naming a leader: only that leader and the standbys
    /// the key lists may be promoted (Patroni; none else is known to hold every acknowledged
    /// commit).
    pub sync_members: Option<Vec<String>>,
    /// Running members' keys as the engine saw them: `(name, xlog_location, nofailover)`.
    pub members: Vec<(String, u64, bool)>,
    /// Peers were probed (PostgreSQL was running); unreachable ones are not counted.
    pub probed: bool,
}

/// One HA cycle in progress.
pub(crate) struct Cycle {
    pub started: Time,
    pub cluster: Option<Rc<Cluster>>,
    pub local: LocalPg,
    pub probe_round: u64,
    pub probe_targets: Vec<Option<usize>>,
    pub peers: Vec<PeerProbe>,
    pub truths: Vec<Option<Truth>>,
    pub pending_probes: usize,
    pub decision: Decision,
    pub election: Option<Election>,
    pub idx: usize,
    pub wait: Wait,
    /// Sent-at time of the lock operation in flight (lock_confirmed_at is the send time).
    pub sent: Time,
    /// Sub-step of a multi-step action (demote: stop, then release).
    pub sub: u8,
    pub local_after: Option<LocalPg>,
}

pub(crate) struct Agent {
    pub engine: Engine,
    pub lock_confirmed_at: Option<Time>,
    pub fence_arm: u64,
    pub task: Option<Task>,
    pub upstream: Option<String>,
    /// Consecutive pg_rewind failures; reset when the data directory changes.
    pub rewind_failures: u32,
    pub crashed: bool,
    pub was_running: bool,
    pub role: Role,
    /// The etcd client's lease (one per process).
    pub lease: Option<i64>,
    pub last_reason: String,
    pub last_cluster: Option<Rc<Cluster>>,
    pub fingerprint: Option<Fingerprint>,
    /// `(in_recovery, wal, timeline)` of the last successful status query.
    pub pg_state: Option<(bool, u64, u64)>,
    /// What `GET /patroni` answers: published at the end of each cycle (crates/api serves
    /// the agent's snapshot, it does not query PostgreSQL per request).
    pub snapshot: PeerReply,
    pub phase: Phase,
    pub cycle: Option<Box<Cycle>>,
    pub calls: BTreeMap<u64, Call>,
    pub shutdown_requested: bool,
    pub shutdown_token: u64,
    pub shutdown_stage: u8,
    pub holds_lock_at_shutdown: bool,
    /// `synchronous_standby_names` as set for synchronous mode (`None`: not managed yet).
    pub sync_standby_names: Option<String>,
    /// The last other member seen holding the leader key (proxy fencing before promotion).
    pub last_known_leader: Option<String>,
    /// Since when our standby's WAL receiver has not been streaming (observe.rs).
    pub not_streaming_since: Option<Time>,
}

pub(crate) fn agent(w: &mut World, n: usize) -> Option<&mut Agent> {
    w.nodes[n].agent.as_mut()
}

pub(crate) fn cycle(w: &mut World, n: usize) -> Option<&mut Cycle> {
    w.nodes[n].agent.as_mut()?.cycle.as_deref_mut()
}

/// A new agent process (boot, restart). `standby.signal` tells it PostgreSQL was a standby.
pub(crate) fn start_agent(w: &mut World, n: usize, delay: Time) {
    let node = &mut w.nodes[n];
    node.ae += 1;
    let standby = node.pg.initialized() && node.pg.upstream.is_some();
    node.agent = Some(Agent {
        engine: Engine::new(),
        lock_confirmed_at: None,
        fence_arm: 0,
        task: None,
        upstream: standby.then(String::new),
        rewind_failures: 0,
        crashed: false,
        was_running: false,
        role: Role::Uninitialized,
        lease: None,
        last_reason: String::new(),
        last_cluster: None,
        fingerprint: None,
        pg_state: None,
        snapshot: PeerReply {
            running: false,
            starting: false,
            is_primary: false,
            wal_position: None,
            timeline: None,
            nofailover: node.settings.nofailover,
            failover_priority: node.settings.failover_priority,
        },
        phase: Phase::Sleeping {
            until: w.now + delay,
        },
        cycle: None,
        calls: BTreeMap::new(),
        shutdown_requested: false,
        shutdown_token: 0,
        shutdown_stage: 0,
        holds_lock_at_shutdown: false,
        sync_standby_names: None,
        last_known_leader: None,
        not_streaming_since: None,
    });
    let ae = node.ae;
    w.say(n, || "agent: started".into());
    w.after(delay, Host::Node(n), Ev::Cycle { ae });
}

pub(crate) fn on_cycle_timer(w: &mut World, n: usize) {
    let now = w.now;
    let Some(a) = agent(w, n) else { return };
    match a.phase {
        Phase::Sleeping { until } if until <= now => begin_cycle(w, n),
        _ => {}
    }
}

fn begin_cycle(w: &mut World, n: usize) {
    crate::tasks::reap_task(w, n);
    let now = w.now;
    let Some(a) = agent(w, n) else { return };
    a.cycle = Some(Box::new(Cycle {
        started: now,
        cluster: None,
        local: LocalPg::stopped(DataDir::Empty),
        probe_round: 0,
        probe_targets: Vec::new(),
        peers: Vec::new(),
        truths: Vec::new(),
        pending_probes: 0,
        decision: Decision::idle(""),
        election: None,
        idx: 0,
        wait: Wait::None,
        sent: 0,
        sub: 0,
        local_after: None,
    }));
    a.phase = Phase::Reading;
    calls::start_call(w, n, Owner::Cycle, DcsOp::GetCluster);
}

/// A DCS watch event: wake up when the leader, failover, config, sync or initialize changed.
pub(crate) fn on_watch(w: &mut World, n: usize) {
    let current = w.dcs.fingerprint();
    let now = w.now;
    let ae = w.nodes[n].ae;
    let Some(a) = agent(w, n) else { return };
    let Phase::Sleeping { until } = a.phase else {
        return;
    };
    let wake = if a.fingerprint.as_ref() != Some(&current) {
        now
    } else if a.task.as_ref().is_some_and(|t| t.finished.is_some()) {
        // The select! re-evaluates its "task finished" branch after any wake-up.
        now + TASK_POLL
    } else {
        return;
    };
    if wake < until {
        a.phase = Phase::Sleeping { until: wake };
        w.at(wake, Host::Node(n), Ev::Cycle { ae });
    }
}

/// A background task finished: a sleeping run_loop notices at its next poll and starts a
/// cycle at once rather than at `loop_wait`.
pub(crate) fn on_task_finished(w: &mut World, n: usize) {
    let wake = w.now + TASK_POLL;
    let ae = w.nodes[n].ae;
    let Some(a) = agent(w, n) else { return };
    if let Phase::Sleeping { until } = a.phase {
        if wake < until {
            a.phase = Phase::Sleeping { until: wake };
            w.at(wake, Host::Node(n), Ev::Cycle { ae });
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cycle.

pub(crate) fn after_read(w: &mut World, n: usize, result: Option<DcsReply>) {
    let cluster = match result {
        Some(DcsReply::Cluster(c)) => Some(c),
        _ => None,
    };
    if cluster.is_none() {
        w.say(n, || "DCS is not accessible".into());
    }
    let me = w.nodes[n].name.clone();
    if let Some(c) = &cluster {
        if let Some(l) = c.leader_name().filter(|l| *l != me) {
            if let Some(a) = agent(w, n) {
                a.last_known_leader = Some(l.to_string());
            }
        }
        if c.leader_name() != Some(me.as_str()) {
            set_lock_confirmed(w, n, None);
        }
    }
    let local = observe::observe(w, n, cluster.as_deref());
    let probe = cluster
        .as_ref()
        .is_some_and(|c| pgherd_ha::wants_peer_probes(c, &w.nodes[n].settings, &local));
    let Some(cy) = cycle(w, n) else { return };
    cy.cluster = cluster;
    cy.local = local;
    if probe {
        start_probes(w, n);
    } else {
        decide(w, n);
    }
}

fn start_probes(w: &mut World, n: usize) {
    let me = w.nodes[n].name.clone();
    let ae = w.nodes[n].ae;
    let Some(cluster) = cycle(w, n).and_then(|c| c.cluster.clone()) else {
        return;
    };
    let names: Vec<String> = cluster
        .members
        .values()
        .filter(|m| m.name != me && !m.data.api_url.is_empty())
        .map(|m| m.name.clone())
        .collect();
    let targets: Vec<Option<usize>> = names.iter().map(|m| w.index_of(m)).collect();
    let round = w.id();
    let deadline = w.now + PROBE_TIMEOUT;
    let pending = targets.iter().filter(|t| t.is_some()).count();
    if let Some(cy) = cycle(w, n) {
        cy.probe_round = round;
        cy.peers = names
            .iter()
            .map(|name| PeerProbe {
                name: name.clone(),
                reply: None,
            })
            .collect();
        cy.truths = vec![None; names.len()];
        cy.probe_targets = targets.clone();
        cy.pending_probes = pending;
    }
    if let Some(a) = agent(w, n) {
        a.phase = Phase::Probing;
    }
    if pending == 0 {
        decide(w, n);
        return;
    }
    for t in targets.into_iter().flatten() {
        if let Some(d) = w.net_delay(n) {
            w.after(
                d,
                Host::Node(t),
                Ev::ProbeArrive {
                    from: n,
                    from_ae: ae,
                    round,
                    deadline,
                },
            );
        }
    }
    w.at(deadline, Host::Node(n), Ev::ProbeDeadline { ae, round });
}

/// `GET /patroni` on node `t`, answered from its agent's last snapshot.
pub(crate) fn answer_probe(
    w: &mut World,
    t: usize,
    from: usize,
    from_ae: u64,
    round: u64,
    deadline: Time,
) {
    let (reply, truth) = match &w.nodes[t].agent {
        // Connection refused: the prober sees "unreachable".
        None => (None, None),
        Some(a) => {
            let mut reply = a.snapshot.clone();
            let pg = &w.nodes[t].pg;
            // The agent answers `GET /patroni` with PostgreSQL's state at request time.
            if pg.running && pg.accepting {
                reply.running = true;
                reply.starting = false;
                reply.is_primary = !pg.in_recovery;
                reply.wal_position = Some(pg.wal.end);
                reply.timeline = Some(pg.wal.timeline());
            }
            if w.opts.planted == Some(PlantedBug::ProbesHideWal) && reply.wal_position.is_some() {
                reply.wal_position = Some(0);
            }
            (Some(reply), Some(w.truth(t)))
        }
    };
    let Some(d) = w.net_delay(t) else { return };
    if w.now + d > deadline {
        return;
    }
    w.after(
        d,
        Host::Node(from),
        Ev::ProbeReply {
            ae: from_ae,
            round,
            peer: t,
            reply,
            truth,
        },
    );
}

pub(crate) fn on_probe_reply(
    w: &mut World,
    n: usize,
    round: u64,
    peer: usize,
    reply: Option<PeerReply>,
    truth: Option<Truth>,
) {
    if agent(w, n).map(|a| a.phase) != Some(Phase::Probing) {
        return;
    }
    let Some(cy) = cycle(w, n) else { return };
    if cy.probe_round != round {
        return;
    }
    if let Some(i) = cy.probe_targets.iter().position(|t| *t == Some(peer)) {
        cy.peers[i].reply = reply;
        cy.truths[i] = truth;
        cy.pending_probes = cy.pending_probes.saturating_sub(1);
    }
    if cy.pending_probes == 0 {
        decide(w, n);
    }
}

pub(crate) fn on_probe_deadline(w: &mut World, n: usize, round: u64) {
    if agent(w, n).map(|a| a.phase) != Some(Phase::Probing) {
        return;
    }
    if cycle(w, n).is_some_and(|c| c.probe_round == round) {
        decide(w, n);
    }
}

fn routine(d: &Decision) -> bool {
    use pgherd_ha::Action::{PublishLeaderState, RenewLock};
    d.actions
        .iter()
        .all(|a| matches!(a, RenewLock | PublishLeaderState))
}

fn decide(w: &mut World, n: usize) {
    let now = w.now;
    let node = &mut w.nodes[n];
    let mut settings = node.settings.clone();
    let Some(a) = node.agent.as_mut() else { return };
    let Some(cy) = a.cycle.as_deref_mut() else {
        return;
    };
    if a.rewind_failures >= MAX_REWIND_ATTEMPTS {
        settings.use_pg_rewind = false;
    }
    let obs = Observation {
        now,
        settings: &settings,
        cluster: cy.cluster.as_deref(),
        pg: &cy.local,
        peers: &cy.peers,
        in_progress: a.task.as_ref().map(|t| t.kind),
        lock_confirmed_at: a.lock_confirmed_at,
        // No pre_promote script in the simulation.
        promotion_blocked_until: None,
        wall_clock_ms: WALL_CLOCK_EPOCH + now as i64,
    };
    let decision = a.engine.step(&obs);
    if cy.cluster.as_ref().is_some_and(|c| c.leader.is_none()) {
        cy.election = Some(Election {
            wal: cy.local.wal_position,
            in_recovery: cy.local.in_recovery,
            optime: cy.cluster.as_ref().and_then(|c| c.optime()),
            answered: cy
                .probe_targets
                .iter()
                .zip(cy.peers.iter().zip(cy.truths.iter()))
                .filter_map(|(t, (p, tr))| Some(((*t)?, p.reply.clone()?, (*tr)?)))
                .collect(),
            sync_members: cy
                .cluster
                .as_ref()
                .and_then(|c| c.sync_state())
                .filter(|_| settings.synchronous_mode)
                .and_then(|st| {
                    let mut members = st.standbys();
                    members.push(st.leader.clone()?);
                    Some(members)
                }),
            members: cy
                .cluster
                .as_ref()
                .map(|c| {
                    c.members
                        .values()
                        .filter(|m| m.data.is_running() && m.data.role == Some(Role::Replica))
                        .filter_map(|m| {
                            Some((m.name.clone(), m.data.xlog_location?, m.data.nofailover()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            probed: cy.probe_round != 0,
        });
    }
    let changed = decision.reason != a.last_reason || !routine(&decision);
    a.last_reason = decision.reason.clone();
    let line = (changed && w.log.enabled)
        .then(|| format!("decide: {} {:?}", decision.reason, decision.actions));
    cy.decision = decision;
    cy.idx = 0;
    a.phase = Phase::Acting;
    w.stats.decisions += 1;
    if let Some(line) = line {
        w.say(n, || line);
    }
    actions::run(w, n);
}

/// After the actions: observe again, publish the member key, then the REST snapshot.
pub(crate) fn after_actions(w: &mut World, n: usize) {
    let cluster = cycle(w, n).and_then(|c| c.cluster.clone());
    let local = observe::observe(w, n, cluster.as_deref());
    let data = observe::member_data(w, n, &local, cluster.as_deref());
    if let Some(cy) = cycle(w, n) {
        cy.local_after = Some(local);
        cy.wait = Wait::None;
    }
    if cluster.is_some() {
        if let Some(a) = agent(w, n) {
            a.phase = Phase::Touching;
        }
        calls::start_call(w, n, Owner::Cycle, DcsOp::TouchMember(Box::new(data)));
    } else {
        after_touch(w, n);
    }
}

pub(crate) fn after_touch(w: &mut World, n: usize) {
    let now = w.now;
    let loop_wait = w.nodes[n].settings.loop_wait;
    let ae = w.nodes[n].ae;
    let jitter = w.rng.range(0, 5);
    let Some(a) = agent(w, n) else { return };
    let Some(cy) = a.cycle.take() else { return };
    a.last_cluster = cy.cluster.clone().or(a.last_cluster.take());
    if let Some(local) = &cy.local_after {
        observe::publish_snapshot(a, local);
    }
    if a.shutdown_requested {
        shutdown::begin(w, n);
        return;
    }
    a.fingerprint = a.last_cluster.as_deref().map(fingerprint);
    let mut until = (cy.started + loop_wait + jitter).max(now);
    if a.task.as_ref().is_some_and(|t| t.finished.is_some()) {
        until = until.min(now + TASK_POLL);
    }
    a.phase = Phase::Sleeping { until };
    w.at(until, Host::Node(n), Ev::Cycle { ae });
}

// ---------------------------------------------------------------------------------------
// Lock confirmation and the fence.

pub(crate) fn set_lock_confirmed(w: &mut World, n: usize, at: Option<Time>) {
    let fence = w.opts.fence;
    let s = &w.nodes[n].settings;
    let window = s.ttl.saturating_sub(s.fencing_margin);
    let now = w.now;
    let ae = w.nodes[n].ae;
    let Some(a) = agent(w, n) else { return };
    a.lock_confirmed_at = at;
    // Any send on the watch channel wakes the fence task, which then re-reads the deadline.
    a.fence_arm += 1;
    let arm = a.fence_arm;
    if let (true, Some(t)) = (fence, at) {
        w.at((t + window).max(now), Host::Node(n), Ev::Fence { ae, arm });
    }
}

/// The fence task's deadline passed: stop PostgreSQL at once if it runs (any role: it does
/// not look), then stay disarmed until the HA loop confirms a lease again.
pub(crate) fn on_fence(w: &mut World, n: usize, arm: u64) {
    if agent(w, n).map(|a| a.fence_arm) != Some(arm) {
        return;
    }
    if !w.nodes[n].pg.running {
        return;
    }
    let confirmed = agent(w, n).and_then(|a| a.lock_confirmed_at).unwrap_or(0);
    let ago = w.now.saturating_sub(confirmed);
    w.say(n, || {
        format!("FENCE: lease last confirmed {ago} ms ago; stopping postgres immediately")
    });
    w.stop_pg(n, StopMode::Immediate);
}
