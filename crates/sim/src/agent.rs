//! The simulated agent process: the HA loop of crates/agent/src/agent.rs + lib.rs as a state
//! machine in simulated time. Each cycle: read the cluster (DCS call with retries), observe
//! PostgreSQL, probe peers when the leader key is free, ask the real engine, execute its
//! actions (crate::actions), observe again, touch the member key, publish the REST snapshot,
//! sleep until `started + loop_wait` or an earlier watch wake-up. Also the independent fence
//! timer (fence.rs) and the SIGTERM shutdown (shutdown.rs).

use crate::actions::{self, Task};
use crate::config::PlantedBug;
use crate::dcs::{fingerprint, DcsOp, DcsReply, Fingerprint};
use crate::pg::{Control, StopMode};
use crate::world::{Ev, Host, Truth, World};
use crate::Time;
use pgherd_dcs::{Cluster, MemberData, Role};
use pgherd_ha::{
    parse_standby_names, AsyncAction, DataDir, Decision, Engine, LocalPg, Observation, PeerProbe,
    PeerReply, StandbyLink,
};
use std::collections::BTreeMap;
use std::rc::Rc;

/// The etcd client's first and longest pause between two tries of one operation.
const FIRST_BACKOFF: Time = 50;
const MAX_BACKOFF: Time = 500;
/// Below this much remaining budget the etcd client gives up.
const MIN_RETRY_WINDOW: Time = 100;
/// peers.rs PROBE_TIMEOUT.
const PROBE_TIMEOUT: Time = 1_500;
/// The simulated wall clock starts here (2026-01-01T00:00:00Z); only scheduled switchovers
/// read it.
const WALL_CLOCK_EPOCH: i64 = 1_767_225_600_000;
/// agent.rs MAX_REWIND_ATTEMPTS: pg_rewind attempts before the node stays stopped.
pub(crate) const MAX_REWIND_ATTEMPTS: u32 = 3;
/// run_loop polls a finished background task this often.
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
    /// Synchronous mode with a non-empty `sync` key: only these standbys may be promoted.
    pub sync_standbys: Option<Vec<String>>,
    /// Running members' keys as the engine saw them: `(name, xlog_location, nofailover)`.
    pub members: Vec<(String, u64, bool)>,
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

#[derive(Debug, Clone)]
pub(crate) enum Owner {
    Cycle,
    Task(u64),
    Shutdown,
}

pub(crate) struct Call {
    pub owner: Owner,
    pub op: DcsOp,
    pub deadline: Time,
    pub attempt: u32,
    pub backoff: Time,
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
}

/// The `synchronous_standby_names` the agent writes into postgresql.conf (agent.rs
/// `parameters`): its managed value in synchronous mode, else nothing (= asynchronous).
pub(crate) fn sync_param(w: &World, n: usize) -> String {
    let node = &w.nodes[n];
    if !node.settings.synchronous_mode {
        return String::new();
    }
    node.agent
        .as_ref()
        .and_then(|a| a.sync_standby_names.clone())
        .unwrap_or_default()
}

fn agent(w: &mut World, n: usize) -> Option<&mut Agent> {
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
            is_primary: false,
            wal_position: None,
            timeline: None,
            nofailover: node.settings.nofailover,
            failover_priority: node.settings.failover_priority,
        },
        phase: Phase::Sleeping { until: w.now + delay },
        cycle: None,
        calls: BTreeMap::new(),
        shutdown_requested: false,
        shutdown_token: 0,
        shutdown_stage: 0,
        holds_lock_at_shutdown: false,
        sync_standby_names: None,
        last_known_leader: None,
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
    actions::reap_task(w, n);
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
    start_call(w, n, Owner::Cycle, DcsOp::GetCluster);
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

// ---------------------------------------------------------------------------------------
// DCS calls: every operation has a budget of retry_timeout; each try has its own deadline
// (request_timeout); a lost request or reply costs the whole try (crates/dcs/src/etcd.rs).

pub(crate) fn start_call(w: &mut World, n: usize, owner: Owner, op: DcsOp) -> u64 {
    let id = w.id();
    let deadline = w.now + w.schedule.cluster.retry_timeout;
    if let Some(a) = agent(w, n) {
        a.calls.insert(
            id,
            Call {
                owner,
                op,
                deadline,
                attempt: 0,
                backoff: FIRST_BACKOFF,
            },
        );
    }
    send_attempt(w, n, id);
    id
}

pub(crate) fn send_attempt(w: &mut World, n: usize, id: u64) {
    let now = w.now;
    let request_timeout = w.schedule.cluster.request_timeout();
    let ae = w.nodes[n].ae;
    let Some(call) = agent(w, n).and_then(|a| a.calls.get_mut(&id)) else {
        return;
    };
    let remaining = call.deadline.saturating_sub(now);
    if remaining < MIN_RETRY_WINDOW {
        finish_call(w, n, id, None);
        return;
    }
    call.attempt += 1;
    let attempt = call.attempt;
    let op = call.op.clone();
    let timeout_at = now + remaining.min(request_timeout);
    let delay = if w.dcs_reachable(n) {
        w.net_delay(n)
    } else {
        None
    };
    match delay {
        Some(d) => w.after(
            d,
            Host::Global,
            Ev::DcsArrive {
                node: n,
                ae,
                call: id,
                attempt,
                op: Box::new(op),
                timeout_at,
            },
        ),
        None => w.at(
            timeout_at,
            Host::Node(n),
            Ev::CallTimeout {
                ae,
                call: id,
                attempt,
            },
        ),
    }
}

/// A request reaches etcd: applied atomically, then the reply travels back (or is lost).
pub(crate) fn dcs_arrive(
    w: &mut World,
    n: usize,
    ae: u64,
    call: u64,
    attempt: u32,
    op: DcsOp,
    timeout_at: Time,
) {
    if !w.dcs_reachable(n) {
        w.at(timeout_at, Host::Node(n), Ev::CallTimeout { ae, call, attempt });
        return;
    }
    let alive = w.nodes[n].ae == ae && w.nodes[n].agent.is_some();
    // The lease mutex serialises lease use in one process: use the client's current lease.
    let lease = if alive {
        w.nodes[n].agent.as_ref().and_then(|a| a.lease)
    } else {
        None
    };
    let before = w.dcs.fingerprint();
    let name = w.nodes[n].name.clone();
    let ttl = w.schedule.cluster.ttl;
    let applied = w.dcs.apply(&op, &name, lease, w.now, ttl);
    if alive {
        if let Some(a) = agent(w, n) {
            a.lease = applied.lease;
        }
    }
    if let Some((id, at)) = applied.touched_lease {
        if w.dcs.needs_check(id) {
            w.schedule_lease_check(id, at);
        }
    }
    match (&op, &applied.reply) {
        (DcsOp::AcquireLeader, DcsReply::Bool(won)) => {
            let won = *won;
            w.say(n, || format!("DCS: acquire leader key -> {won}"));
        }
        (DcsOp::UpdateLeader, DcsReply::Bool(false)) => {
            w.say(n, || "DCS: update leader key -> not ours".into())
        }
        (DcsOp::DeleteLeader, _) => w.say(n, || "DCS: delete leader key (if ours)".into()),
        (DcsOp::InitializeCreate, DcsReply::Bool(won)) => {
            let won = *won;
            w.say(n, || format!("DCS: create initialize -> {won}"));
        }
        (DcsOp::BootstrapTail { .. }, _) => {
            w.say(n, || "DCS: initialize=sysid, config, leader key".into())
        }
        _ => {}
    }
    if w.dcs.fingerprint() != before {
        let leader = w.dcs.leader.as_ref().map(|l| l.name.clone());
        if leader != before.0 {
            if let Some(l) = &leader {
                w.stats.leaders.push((w.now, l.clone()));
            }
            w.say_world(|| format!("DCS: leader key is now {leader:?}"));
        }
        w.notify_watchers();
    }
    match w.net_delay(n) {
        Some(d) if w.now + d <= timeout_at => w.after(
            d,
            Host::Node(n),
            Ev::CallReply {
                ae,
                call,
                attempt,
                reply: applied.reply,
            },
        ),
        _ => w.at(timeout_at, Host::Node(n), Ev::CallTimeout { ae, call, attempt }),
    }
}

pub(crate) fn on_call_reply(w: &mut World, n: usize, id: u64, attempt: u32, reply: DcsReply) {
    let current = agent(w, n)
        .and_then(|a| a.calls.get(&id))
        .is_some_and(|c| c.attempt == attempt);
    if current {
        finish_call(w, n, id, Some(reply));
    }
}

pub(crate) fn on_call_timeout(w: &mut World, n: usize, id: u64, attempt: u32) {
    let now = w.now;
    let ae = w.nodes[n].ae;
    let Some(call) = agent(w, n).and_then(|a| a.calls.get_mut(&id)) else {
        return;
    };
    if call.attempt != attempt {
        return;
    }
    let remaining = call.deadline.saturating_sub(now);
    let pause = call.backoff.min(remaining);
    call.backoff = (call.backoff * 2).min(MAX_BACKOFF);
    w.after(pause, Host::Node(n), Ev::CallRetry { ae, call: id });
}

/// `None`: the DCS did not answer within retry_timeout.
fn finish_call(w: &mut World, n: usize, id: u64, result: Option<DcsReply>) {
    let Some(call) = agent(w, n).and_then(|a| a.calls.remove(&id)) else {
        return;
    };
    match call.owner {
        Owner::Cycle => {
            let Some(a) = agent(w, n) else { return };
            match a.phase {
                Phase::Reading => after_read(w, n, result),
                Phase::Acting => actions::on_call_done(w, n, id, result),
                Phase::Touching => after_touch(w, n),
                _ => {}
            }
        }
        Owner::Task(task) => actions::task_call_done(w, n, task, result),
        Owner::Shutdown => shutdown_continue(w, n),
    }
}

// ---------------------------------------------------------------------------------------
// The cycle.

fn after_read(w: &mut World, n: usize, result: Option<DcsReply>) {
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
    let local = observe(w, n, cluster.as_deref());
    let nofailover = w.nodes[n].settings.nofailover;
    let probe = cluster
        .as_ref()
        .is_some_and(|c| c.leader.is_none() && local.running && !nofailover);
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
            if w.opts.workarounds.live_rest_status && pg.running && pg.accepting {
                reply.running = true;
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
    d.actions.iter().all(|a| matches!(a, RenewLock | PublishLeaderState))
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
    let gate = w.opts.workarounds.sync_gate_without_standbys;
    // The patched election compares only members the sync key matches (plus any peer that
    // still claims to be primary).
    let matching = |p: &PeerProbe| {
        let sync = cy
            .cluster
            .as_ref()
            .and_then(|c| c.sync_state())
            .filter(|st| settings.synchronous_mode && st.leader.is_some());
        sync.is_none_or(|st| st.leader.as_deref() == Some(p.name.as_str()) || st.is_sync_standby(&p.name))
            || p.reply.as_ref().is_some_and(|r| r.is_primary)
    };
    let peers: Vec<PeerProbe> = if gate {
        cy.peers.iter().filter(|p| matching(p)).cloned().collect()
    } else {
        cy.peers.clone()
    };
    let obs = Observation {
        now,
        settings: &settings,
        cluster: cy.cluster.as_deref(),
        pg: &cy.local,
        peers: &peers,
        in_progress: a.task.as_ref().map(|t| t.kind),
        lock_confirmed_at: a.lock_confirmed_at,
        // No pre_promote script in the simulation.
        promotion_blocked_until: None,
        wall_clock_ms: WALL_CLOCK_EPOCH + now as i64,
    };
    let mut decision = a.engine.step(&obs);
    if gate {
        if let Some(vetoed) = patched_sync_gate(&settings, cy.cluster.as_deref(), &decision) {
            decision = vetoed;
        }
    }
    if w.opts.workarounds.former_primary_checks_members {
        if let Some(patched) = patched_former_primary(&settings, cy.cluster.as_deref(), &cy.local, &decision) {
            decision = patched;
        }
    }
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
            sync_standbys: cy
                .cluster
                .as_ref()
                .and_then(|c| c.sync_state())
                .filter(|_| settings.synchronous_mode)
                .map(|st| st.standbys())
                .filter(|v| !v.is_empty()),
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

/// The proposed election fix (see `Workarounds::sync_gate_without_standbys`): a race for the
/// lock in synchronous mode is only for the standbys listed in `sync`, or for its leader.
fn patched_sync_gate(
    s: &pgherd_ha::Settings,
    cluster: Option<&Cluster>,
    d: &Decision,
) -> Option<Decision> {
    if !s.synchronous_mode || !d.reason.starts_with("promoted self to leader by acquiring session lock: I am the healthiest") {
        return None;
    }
    let sync = cluster?.sync_state()?;
    let leader = sync.leader.as_deref()?;
    if leader == s.name || sync.is_sync_standby(&s.name) {
        return None;
    }
    Some(Decision::idle(format!(
        "no leader, not racing: synchronous mode: only {leader} may take over (sim: patched sync gate)"
    )))
}

/// The proposed fix of `Workarounds::former_primary_checks_members`.
fn patched_former_primary(
    s: &pgherd_ha::Settings,
    cluster: Option<&Cluster>,
    pg: &LocalPg,
    d: &Decision,
) -> Option<Decision> {
    if !d.reason.starts_with("no leader: I was the primary at shutdown") {
        return None;
    }
    let ahead = cluster?.members.values().find(|m| {
        m.name != s.name
            && m.data.is_running()
            && (m.data.timeline.unwrap_or(0) > pg.timeline
                || m.data.xlog_location.unwrap_or(0) > pg.wal_position)
    })?;
    Some(Decision::act(
        vec![pgherd_ha::Action::StartPostgres(pgherd_ha::StartRole::Replica { upstream: None })],
        format!(
            "no leader: starting as a secondary to join the election ({} may be ahead of me) (sim: patched former-primary shortcut)",
            ahead.name
        ),
    ))
}

/// After the actions: observe again, publish the member key, then the REST snapshot.
pub(crate) fn after_actions(w: &mut World, n: usize) {
    let cluster = cycle(w, n).and_then(|c| c.cluster.clone());
    let local = observe(w, n, cluster.as_deref());
    let data = member_data(w, n, &local, cluster.as_deref());
    if let Some(cy) = cycle(w, n) {
        cy.local_after = Some(local);
        cy.wait = Wait::None;
    }
    if cluster.is_some() {
        if let Some(a) = agent(w, n) {
            a.phase = Phase::Touching;
        }
        start_call(w, n, Owner::Cycle, DcsOp::TouchMember(Box::new(data)));
    } else {
        after_touch(w, n);
    }
}

fn after_touch(w: &mut World, n: usize) {
    let now = w.now;
    let loop_wait = w.nodes[n].settings.loop_wait;
    let ae = w.nodes[n].ae;
    let jitter = w.rng.range(0, 5);
    let Some(a) = agent(w, n) else { return };
    let Some(cy) = a.cycle.take() else { return };
    a.last_cluster = cy.cluster.clone().or(a.last_cluster.take());
    if let Some(local) = &cy.local_after {
        publish_snapshot(a, local);
    }
    if a.shutdown_requested {
        begin_shutdown(w, n);
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

// ---------------------------------------------------------------------------------------
// Observation and reporting (observe.rs, report.rs).

pub(crate) fn observe(w: &mut World, n: usize, cluster: Option<&Cluster>) -> LocalPg {
    let links: Vec<StandbyLink> = if w.nodes[n].pg.running && w.nodes[n].pg.accepting {
        w.walsenders(n)
            .into_iter()
            .map(|(m, lsn, streaming, synchronous)| StandbyLink {
                name: w.nodes[m].name.clone(),
                streaming,
                synchronous,
                lsn,
            })
            .collect()
    } else {
        Vec::new()
    };
    let fixes = (
        w.opts.workarounds.orphan_timeline_is_diverged,
        w.opts.workarounds.higher_timeline_is_diverged,
    );
    let node = &mut w.nodes[n];
    let pg = &node.pg;
    let name = node.name.as_str();
    let sync_mode = node.settings.synchronous_mode;
    let Some(a) = node.agent.as_mut() else {
        return LocalPg::stopped(pg.data.clone());
    };
    let mut local = LocalPg::stopped(pg.data.clone());
    local.running = pg.running;
    if pg.running {
        if pg.accepting {
            local.queryable = true;
            local.in_recovery = pg.in_recovery;
            local.wal_position = pg.wal.end;
            local.timeline = pg.wal.timeline();
            local.replication = links;
            local.sync_standby_names = parse_standby_names(&pg.sync_active);
            // After an agent restart, keep what the running primary waits for.
            if sync_mode && a.sync_standby_names.is_none() && !pg.in_recovery {
                a.sync_standby_names = Some(pg.sync_active.clone());
            }
            a.pg_state = Some((pg.in_recovery, pg.wal.end, pg.wal.timeline()));
        } else {
            a.pg_state = None;
        }
        if local.in_recovery || !local.queryable {
            local.following = a.upstream.clone();
        }
        if local.queryable && local.in_recovery {
            local.diverged = cluster.and_then(|c| {
                diverged(c, name, local.timeline, local.wal_position, false, false, fixes)
            });
        }
        a.crashed = false;
    } else {
        a.pg_state = None;
        if a.was_running && a.task.is_none() {
            a.crashed = true;
        }
        if pg.initialized() {
            local.timeline = pg.wal.timeline();
            local.wal_position = pg.wal.end;
            local.shutdown_as_primary = pg.control == Control::ShutDown;
            let crashed_primary = pg.control == Control::InProduction;
            let clean_primary = pg.control == Control::ShutDown;
            let (tl, lsn) = (local.timeline, local.wal_position);
            local.diverged = cluster.and_then(|c| {
                diverged(c, name, tl, lsn, clean_primary, crashed_primary, fixes)
            });
        }
    }
    a.was_running = pg.running;
    local
}

/// observe.rs `diverged`: whether our WAL went past where the leader's timeline forked from
/// ours, judged from the DCS `history`; `None` without a leader.
fn diverged(
    c: &Cluster,
    me: &str,
    our_tl: u64,
    our_lsn: u64,
    clean_primary: bool,
    crashed_primary: bool,
    (orphan_fix, higher_fix): (bool, bool),
) -> Option<bool> {
    let leader = c.leader_member().filter(|l| l.name != me)?;
    let leader_tl = leader.data.timeline.unwrap_or(0).max(c.timeline());
    if higher_fix && leader_tl < our_tl && leader.data.timeline.is_some() {
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
    // The leader published its own history (its newest line names it) and our timeline is
    // not in it: ours is not an ancestor of the leader's. (Skipped timeline ids make
    // "last entry + 1" unreliable, so the author is what tells a current history.)
    let current = c
        .history
        .as_ref()
        .and_then(|h| h.value.last())
        .is_some_and(|e| e.new_leader.as_deref() == Some(leader.name.as_str()));
    Some(match switch {
        Some(fork) => our_lsn > fork || (clean_primary && our_lsn >= fork),
        None if orphan_fix && current => true,
        None => clean_primary,
    })
}

fn state_string(a: &Agent, pg: &LocalPg) -> &'static str {
    if pg.running {
        return if pg.queryable { "running" } else { "starting" };
    }
    match a.task.as_ref().map(|t| t.kind) {
        Some(AsyncAction::Bootstrap) => "initializing new cluster",
        Some(AsyncAction::Clone | AsyncAction::Reinitialize) => "creating replica",
        Some(AsyncAction::Start | AsyncAction::Restart | AsyncAction::Promote) => "starting",
        Some(AsyncAction::Stop) => "stopping",
        Some(AsyncAction::Rewind) => "stopped",
        None if a.crashed => "crashed",
        None => "stopped",
    }
}

fn role(a: &mut Agent, pg: &LocalPg) -> Role {
    if matches!(pg.data_dir, DataDir::Empty) {
        a.role = Role::Uninitialized;
    } else if pg.queryable {
        a.role = if pg.in_recovery {
            Role::Replica
        } else {
            Role::Primary
        };
    } else if a.role == Role::Uninitialized {
        a.role = Role::Replica;
    }
    a.role
}

fn member_data(w: &mut World, n: usize, pg: &LocalPg, cluster: Option<&Cluster>) -> MemberData {
    let node = &mut w.nodes[n];
    let name = node.name.clone();
    let mut tags = serde_json::Map::new();
    if node.settings.nofailover {
        tags.insert("nofailover".into(), true.into());
    }
    if node.settings.failover_priority != 1 {
        tags.insert(
            "failover_priority".into(),
            node.settings.failover_priority.into(),
        );
    }
    let Some(a) = node.agent.as_mut() else {
        return MemberData::default();
    };
    MemberData {
        conn_url: format!("postgres://{name}:5432/postgres"),
        api_url: format!("http://{name}:8008/patroni"),
        state: state_string(a, pg).to_string(),
        role: Some(role(a, pg)),
        version: "3.0.2".into(),
        xlog_location: pg.queryable.then_some(pg.wal_position),
        timeline: pg.queryable.then_some(pg.timeline),
        tags,
        pause: cluster.is_some_and(Cluster::is_paused),
        ..MemberData::default()
    }
}

fn publish_snapshot(a: &mut Agent, pg: &LocalPg) {
    let running = state_string(a, pg) == "running";
    let (is_primary, wal, tl) = match a.pg_state {
        Some((in_recovery, wal, tl)) => (!in_recovery, Some(wal), Some(tl)),
        None => (false, None, None),
    };
    a.snapshot.running = running;
    a.snapshot.is_primary = is_primary;
    a.snapshot.wal_position = wal;
    a.snapshot.timeline = tl;
}

// ---------------------------------------------------------------------------------------
// SIGTERM (shutdown.rs): the signal is only seen while the loop sleeps. Stop PostgreSQL
// (fast); if we held the lock, write the checkpoint optime and delete the leader key; publish
// the member as stopped; exit.

pub(crate) fn request_shutdown(w: &mut World, n: usize) {
    let Some(a) = agent(w, n) else { return };
    a.shutdown_requested = true;
    if matches!(a.phase, Phase::Sleeping { .. }) {
        begin_shutdown(w, n);
    }
}

fn begin_shutdown(w: &mut World, n: usize) {
    w.say(n, || "agent: SIGTERM, shutting down".into());
    let paused = agent(w, n)
        .and_then(|a| a.last_cluster.as_ref())
        .is_some_and(|c| c.is_paused());
    if let Some(task) = agent(w, n).and_then(|a| a.task.take()) {
        actions::abandon_task(w, n, &task);
    }
    let Some(a) = agent(w, n) else { return };
    a.phase = Phase::ShuttingDown;
    a.shutdown_stage = 0;
    a.holds_lock_at_shutdown = a.lock_confirmed_at.is_some();
    if paused {
        exit_agent(w, n);
        return;
    }
    match w.stop_pg(n, StopMode::Fast) {
        Some(exit) => {
            let ae = w.nodes[n].ae;
            let token = w.id();
            if let Some(a) = agent(w, n) {
                a.shutdown_token = token;
            }
            w.at(exit, Host::Node(n), Ev::Cont { ae, token });
        }
        None => shutdown_continue(w, n),
    }
}

/// The next shutdown step, after PostgreSQL stopped or a DCS call finished (sequential, as
/// shutdown.rs awaits each one).
pub(crate) fn shutdown_continue(w: &mut World, n: usize) {
    let Some(a) = agent(w, n) else { return };
    if a.phase != Phase::ShuttingDown {
        return;
    }
    let holds = a.holds_lock_at_shutdown;
    a.shutdown_stage += 1;
    if !holds && a.shutdown_stage < 3 {
        a.shutdown_stage = 3;
    }
    match a.shutdown_stage {
        1 => {
            let optime = w.nodes[n].pg.wal.end;
            start_call(w, n, Owner::Shutdown, DcsOp::WriteStatus(optime));
        }
        2 => {
            start_call(w, n, Owner::Shutdown, DcsOp::DeleteLeader);
        }
        3 => {
            if holds {
                set_lock_confirmed(w, n, None);
            }
            let local = LocalPg::stopped(DataDir::Empty);
            let mut data = member_data(w, n, &local, None);
            data.state = "stopped".into();
            start_call(w, n, Owner::Shutdown, DcsOp::TouchMember(Box::new(data)));
        }
        _ => exit_agent(w, n),
    }
}

pub(crate) fn is_shutdown_token(w: &World, n: usize, token: u64) -> bool {
    w.nodes[n]
        .agent
        .as_ref()
        .is_some_and(|a| a.phase == Phase::ShuttingDown && a.shutdown_token == token)
}

fn exit_agent(w: &mut World, n: usize) {
    w.say(n, || "agent: exited".into());
    w.nodes[n].agent = None;
    w.nodes[n].ae += 1;
}
