//! The controller: the only writer of the routing table. It merges the DCS topology, the health
//! reports and the operator's admin states, publishes a new [`Table`], then closes the sessions
//! that must not go on (publish first, kill second: see [`crate::backend::Backend::enter`]).

use crate::backend::Backend;
use crate::config::{ListenerRole, ProxyConfig};
use crate::health::{Checker, MemberHealth, Report};
use crate::routing::{self, AdminState, Entry, ListenerTable, Readiness, RouteState, Table};
use crate::topology::Topology;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

/// How long transactions already running on a retired server of a pooled read rotation may
/// go on before they are cut.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// Ends a retirement after [`RETIRE_GRACE`]: the sessions still on the server are closed
/// unless the server is back in its rotation.
async fn end_retirement(
    backend: Arc<Backend>,
    table: watch::Receiver<Arc<Table>>,
    listener: String,
) {
    tokio::time::sleep(RETIRE_GRACE).await;
    let still_out = {
        let t = table.borrow();
        t.listeners
            .iter()
            .flat_map(|lt| std::iter::once(lt).chain(lt.replicas.as_deref()))
            .flat_map(|lt| lt.entries.iter().map(move |e| (lt.role, e)))
            .find(|(_, e)| Arc::ptr_eq(&e.backend, &backend))
            .is_none_or(|(role, e)| e.state.closes_sessions(role))
    };
    if still_out && backend.active() > 0 {
        let n = backend.kill_all();
        warn!(listener = %listener, member = %backend.member, sessions = n,
            "closing sessions still running {RETIRE_GRACE:?} after the server left the rotation");
    }
    backend.end_retirement();
}

/// An operator request from the stats API.
pub struct AdminCommand {
    pub member: String,
    pub state: AdminState,
    pub reply: oneshot::Sender<Result<(), String>>,
}

pub struct Controller {
    cfg: Arc<ProxyConfig>,
    topo: Arc<Topology>,
    discovered: bool,
    health: BTreeMap<String, MemberHealth>,
    admin: BTreeMap<String, AdminState>,
    checkers: BTreeMap<String, Checker>,
    /// Per rotation: member -> backend (kept while the member is known or has sessions).
    /// Rotation `i` is listener `i`'s own; `n + i` is auto listener `i`'s replicas.
    backends: Vec<BTreeMap<String, Arc<Backend>>>,
    since: Vec<BTreeMap<String, (RouteState, Instant)>>,
    counters: Vec<Arc<AtomicU64>>,
    generation: u64,
    table_tx: watch::Sender<Arc<Table>>,
    report_tx: mpsc::Sender<Report>,
    client: reqwest::Client,
    closed: Arc<Notify>,
}

/// The channels the controller listens on.
pub struct Inputs {
    pub topology: watch::Receiver<Option<Arc<Topology>>>,
    pub reports: mpsc::Receiver<Report>,
    pub recheck: mpsc::Receiver<String>,
    pub admin: mpsc::Receiver<AdminCommand>,
}

/// The table before the first DCS read: every listener holds.
pub fn initial_table(cfg: &ProxyConfig) -> Table {
    Table {
        generation: 0,
        topology: Arc::new(Topology::default()),
        health: BTreeMap::new(),
        admin: BTreeMap::new(),
        listeners: cfg
            .listeners
            .iter()
            .map(|l| {
                let empty = |role| ListenerTable {
                    readiness: if l.hold_timeout.is_zero() {
                        Readiness::FailFast
                    } else {
                        Readiness::Holding
                    },
                    entries: Vec::new(),
                    balance: l.balance,
                    role,
                    counter: Arc::new(AtomicU64::new(0)),
                    replicas: None,
                };
                ListenerTable {
                    replicas: (l.role == ListenerRole::Auto)
                        .then(|| Box::new(empty(ListenerRole::Replica))),
                    ..empty(l.role.rotation())
                }
            })
            .collect(),
        discovered: false,
    }
}

impl Controller {
    pub fn new(
        cfg: Arc<ProxyConfig>,
        table_tx: watch::Sender<Arc<Table>>,
        report_tx: mpsc::Sender<Report>,
        client: reqwest::Client,
        closed: Arc<Notify>,
    ) -> Controller {
        let n = cfg.listeners.len();
        let counters = {
            let table = table_tx.borrow();
            let own = table.listeners.iter().map(|l| l.counter.clone());
            let replicas = table.listeners.iter().map(|l| match &l.replicas {
                Some(r) => r.counter.clone(),
                None => Arc::new(AtomicU64::new(0)),
            });
            own.chain(replicas).collect()
        };
        Controller {
            cfg,
            topo: Arc::new(Topology::default()),
            discovered: false,
            health: BTreeMap::new(),
            admin: BTreeMap::new(),
            checkers: BTreeMap::new(),
            backends: vec![BTreeMap::new(); 2 * n],
            since: vec![BTreeMap::new(); 2 * n],
            counters,
            generation: 0,
            table_tx,
            report_tx,
            client,
            closed,
        }
    }

    pub async fn run(mut self, mut inputs: Inputs) {
        loop {
            tokio::select! {
                r = inputs.topology.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let topo = inputs.topology.borrow_and_update().clone();
                    if let Some(topo) = topo {
                        self.set_topology(topo);
                    }
                }
                Some(report) = inputs.reports.recv() => self.apply(report),
                Some(member) = inputs.recheck.recv() => {
                    if let Some(c) = self.checkers.get(&member) {
                        c.poke();
                    }
                    continue;
                }
                Some(cmd) = inputs.admin.recv() => {
                    let ok = self.topo.members.contains_key(&cmd.member);
                    let result = if ok {
                        info!(member = %cmd.member, state = ?cmd.state, "admin state set by an operator");
                        match cmd.state {
                            AdminState::Ready => self.admin.remove(&cmd.member),
                            s => self.admin.insert(cmd.member.clone(), s),
                        };
                        Ok(())
                    } else {
                        Err(format!("unknown server {:?}", cmd.member))
                    };
                    let _ = cmd.reply.send(result);
                }
                else => return,
            }
            self.publish();
        }
    }

    fn set_topology(&mut self, topo: Arc<Topology>) {
        if self.topo.leader != topo.leader {
            info!(
                from = self.topo.leader.as_deref().unwrap_or("none"),
                to = topo.leader.as_deref().unwrap_or("none"),
                "DCS leader changed"
            );
        }
        self.topo = topo;
        self.discovered = true;
        // Start, restart or stop health checkers to match the members.
        let lags: Vec<u64> = self.cfg.lag_limits().into_iter().flatten().collect();
        let members = self.topo.members.clone();
        self.checkers.retain(|name, c| {
            members
                .get(name)
                .and_then(|m| m.api_base.as_deref())
                .is_some_and(|base| base == c.api_base)
        });
        self.health.retain(|name, _| members.contains_key(name));
        self.admin.retain(|name, _| members.contains_key(name));
        for (name, m) in &members {
            if let (false, Some(base)) = (self.checkers.contains_key(name), m.api_base.clone()) {
                let checker = Checker::spawn(
                    name.clone(),
                    base,
                    lags.clone(),
                    self.cfg.health.clone(),
                    self.client.clone(),
                    self.report_tx.clone(),
                );
                self.checkers.insert(name.clone(), checker);
            }
        }
        // A new leader: check it now rather than at the next interval.
        if let Some(c) = self.topo.leader.as_ref().and_then(|l| self.checkers.get(l)) {
            c.poke();
        }
    }

    fn apply(&mut self, r: Report) {
        if !self.topo.members.contains_key(&r.member) {
            return;
        }
        let h = &self.cfg.health;
        let is_leader = self.topo.leader.as_deref() == Some(r.member.as_str());
        let mh = self.health.entry(r.member.clone()).or_default();
        // The DCS already names it leader: one confirming answer is enough. An explicit "not
        // primary" answer takes it out at once once the DCS no longer names it; while it still
        // does, `fall` applies (a leader under load may miss one live-status deadline and answer
        // 503 once: closing every write session for that was seen in a 15-minute soak).
        mh.primary = mh.primary.observe(&r.primary, h, is_leader, !is_leader);
        // A replica that fails a check leaves the read rotation at once (see observe_read).
        mh.replica = mh.replica.observe_read(&r.replica, h);
        for (lag, answer) in &r.replica_lag {
            let v = mh.replica_lag.entry(*lag).or_default();
            *v = v.observe_read(answer, h);
        }
        mh.last_checked = Some(r.at);
        mh.last_result = r.summary();
        mh.last_latency_ms = r.latency.as_secs_f64() * 1000.0;
    }

    /// The routing of one rotation: listener `i`'s members in `role`, with the backends and
    /// state-change times of rotation `slot`.
    fn rotation(
        &mut self,
        i: usize,
        slot: usize,
        role: ListenerRole,
        now: Instant,
    ) -> ListenerTable {
        let l = &self.cfg.listeners[i];
        let decisions = routing::decide_rotation(l, role, &self.topo, &self.health, &self.admin);
        let rotation = if slot == i {
            l.name.clone()
        } else {
            format!("{}/replicas", l.name)
        };
        let mut entries = Vec::with_capacity(decisions.len());
        for d in decisions {
            let backend = self.backends[slot]
                .entry(d.member.clone())
                .or_insert_with(|| Backend::new(&d.member, i, self.closed.clone()))
                .clone();
            let since = match self.since[slot].get(&d.member) {
                Some((state, at)) if *state == d.state => *at,
                previous => {
                    if let Some((old, _)) = previous {
                        info!(listener = %rotation, member = %d.member, from = old.as_str(), to = d.state.as_str(), "routing: {}", d.reason);
                    } else if d.state == RouteState::Up {
                        info!(listener = %rotation, member = %d.member, to = d.state.as_str(), "routing: {}", d.reason);
                    }
                    self.since[slot].insert(d.member.clone(), (d.state, now));
                    now
                }
            };
            let m = &self.topo.members[&d.member];
            entries.push(Entry {
                addr: m.pg_addr.clone(),
                weight: m.weight,
                member: d.member,
                state: d.state,
                reason: d.reason,
                since,
                backend,
            });
        }
        // Members that left the DCS: kept (down) while they still carry sessions.
        let topo = &self.topo;
        self.backends[slot].retain(|name, b| topo.members.contains_key(name) || b.active() > 0);
        self.since[slot].retain(|name, _| topo.members.contains_key(name));
        for (name, b) in &self.backends[slot] {
            if !self.topo.members.contains_key(name) {
                entries.push(Entry {
                    member: name.clone(),
                    addr: None,
                    weight: 0,
                    state: RouteState::Down,
                    reason: "no longer in the DCS".into(),
                    since: now,
                    backend: b.clone(),
                });
            }
        }
        let readiness = if self.discovered {
            let up = entries.iter().any(|e| e.state == RouteState::Up);
            match (up, l.hold_timeout.is_zero()) {
                (true, _) => Readiness::Open,
                (false, true) => Readiness::FailFast,
                (false, false) => Readiness::Holding,
            }
        } else {
            initial_table(&self.cfg).listeners[i].readiness
        };
        ListenerTable {
            readiness,
            entries,
            balance: l.balance,
            role,
            counter: self.counters[slot].clone(),
            replicas: None,
        }
    }

    fn publish(&mut self) {
        self.generation += 1;
        let now = Instant::now();
        let n = self.cfg.listeners.len();
        let mut listeners = Vec::with_capacity(n);
        for i in 0..n {
            let role = self.cfg.listeners[i].role;
            let mut table = self.rotation(i, i, role.rotation(), now);
            if role == ListenerRole::Auto {
                table.replicas = Some(Box::new(self.rotation(
                    i,
                    n + i,
                    ListenerRole::Replica,
                    now,
                )));
            }
            listeners.push(table);
        }
        let table = Arc::new(Table {
            generation: self.generation,
            topology: self.topo.clone(),
            health: self.health.clone(),
            admin: self.admin.clone(),
            listeners,
            discovered: self.discovered,
        });
        self.table_tx.send_replace(table.clone());

        // Kill second.
        let rotations = table.listeners.iter().enumerate().flat_map(|(i, lt)| {
            std::iter::once((i, lt)).chain(lt.replicas.as_deref().map(|r| (i, r)))
        });
        for (i, lt) in rotations {
            let role = lt.role;
            // A pooled read rotation retires instead: a replica that answers 503 under load
            // (its stream silent for a moment) need not fail the reads running on it; a server
            // that is really gone fails them itself, or the kill after the grace period does.
            let gentle =
                role.rotation() == ListenerRole::Replica && self.cfg.listeners[i].pool.is_some();
            for e in &lt.entries {
                if gentle && e.state.closes_sessions(role) {
                    if e.backend.retire_all() {
                        info!(listener = %self.cfg.listeners[i].name, member = %e.member,
                            state = e.state.as_str(),
                            "retiring pooled connections: running transactions get {RETIRE_GRACE:?}: {}",
                            e.reason);
                        tokio::spawn(end_retirement(
                            e.backend.clone(),
                            self.table_tx.subscribe(),
                            self.cfg.listeners[i].name.clone(),
                        ));
                    }
                    continue;
                }
                if e.state.closes_sessions(role) && e.backend.active() > 0 {
                    let n = e.backend.kill_all();
                    let what = if role == ListenerRole::Primary {
                        "writes must stop"
                    } else {
                        "server down"
                    };
                    warn!(listener = %self.cfg.listeners[i].name, member = %e.member, sessions = n,
                        state = e.state.as_str(), "closing sessions ({what}): {}", e.reason);
                }
            }
        }

        // Check fast a member the DCS names but its own answer has not confirmed yet (a
        // promotion in progress): clients may be held for it.
        for (name, c) in &self.checkers {
            let pending = table.listeners.iter().any(|l| {
                l.entries
                    .iter()
                    .any(|e| &e.member == name && e.state == RouteState::Hold)
            });
            c.set_fast(pending);
        }
    }
}
