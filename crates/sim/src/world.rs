//! The world: nodes (simulated PostgreSQL, the real agent), the DCS (pgherd's in-memory
//! store with leases in virtual time), the client, the fault schedule and the checker, all in
//! one single-threaded tokio runtime with paused, auto-advancing time. Every process of the
//! world is a tokio task; the checker runs after every change of the world's state.

use crate::checker::{self, Invariant, Violation};
use crate::config::{Options, Schedule};
use crate::log::Log;
use crate::node::AgentProc;
use crate::pg::Pg;
use crate::rng::Rng;
use crate::wal::Ack;
use crate::Time;
use pgherd_dcs::memory::MemoryStore;
use pgherd_dcs::KeyLayout;
use pgherd_ha::Settings;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{oneshot, watch, Notify};

/// The world, shared by every task of the run (one thread: the mutex is never contended and
/// never held across an await).
pub(crate) type Shared = Arc<Mutex<World>>;

pub(crate) fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ground truth about a node at one instant (for the checker, never shown to the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truth {
    pub running_replica: bool,
    /// PostgreSQL runs and accepts connections.
    pub running: bool,
    /// The leader key names the node.
    pub leader: bool,
    pub wal: u64,
    pub timeline: u64,
    pub nofailover: bool,
}

pub(crate) struct Node {
    pub name: String,
    /// The engine settings the cluster was configured with (for the checker).
    pub settings: Settings,
    pub pg: Pg,
    /// `None` while the agent process is not running.
    pub agent: Option<AgentProc>,
    /// Agent processes started so far on this node (a new process gets a new number).
    pub agent_epoch: u64,
    /// While the node is paused (SIGSTOP), everything of the node waits here, and goes on in
    /// the order it began to wait when the node resumes. (tokio's `watch` wakes its receivers
    /// in a random order, which would make runs irreproducible.)
    pub thaw_waiters: Vec<oneshot::Sender<()>>,
    /// The node's view of etcd's changes (its agent's watch), fed by `World::notify_watchers`.
    pub watch: watch::Sender<u64>,
    pub frozen_by: Option<usize>,
    /// When the node last resumed (SIGCONT).
    pub resumed_at: Option<Time>,
    pub down_by: Option<usize>,
    pub dcs_cut: u32,
    pub slow: Option<(Time, u64)>,
    pub lagging: u32,
    /// PostgreSQL stops take this much longer (a slow checkpointer).
    pub slow_stop: Time,
    /// PostgreSQL starts take this much longer (long recovery).
    pub slow_start: Time,
    /// `pre_promote` takes this long and, if `true`, refuses (a `PrePromote` fault).
    pub pre_promote: Option<(Time, bool)>,
    /// When the agent last decided to promote (the proxy-fencing invariant).
    pub promote_decided_at: Option<Time>,
    /// When PostgreSQL last finished a promotion, and the agent process (epoch) then.
    pub promoted_at: Option<(Time, u64)>,
    /// The virtual IP is on this node's interface, until `vip_until` (its lifetime: the
    /// kernel removes it then unless renewed).
    pub holds_vip: bool,
    pub vip_until: Time,
    /// Callbacks the agent ran: `(at, action, role)`.
    pub callbacks: Vec<(Time, String, String)>,
    /// What the agent reported last (through its trace).
    pub last_reason: String,
    pub task: Option<pgherd_ha::AsyncAction>,
    /// The election facts of the agent's last decision (invariant 2).
    pub election: Option<crate::checker::Election>,
    /// Each peer's truth when it last answered this node's probe.
    pub probe_truth: Vec<Option<Truth>>,
    /// Since when the node has been running, not paused, with a healthy network to the DCS
    /// (invariant 6).
    pub healthy_dcs_since: Option<Time>,
    /// When the current agent process started.
    pub agent_started_at: Time,
    /// Failsafe mode: every member acknowledged this node as leader, which lets it stay
    /// primary without a leader key until then (invariant 1b).
    pub failsafe_until: Option<Time>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Bootstrapping from empty data directories, no faults yet.
    Bootstrap {
        deadline: Time,
    },
    Faults {
        end: Time,
    },
    /// All faults are over: converge by `deadline`.
    Quiet {
        since: Time,
        deadline: Time,
    },
    Done,
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub events: u64,
    pub decisions: u64,
    pub promotions: u64,
    pub faults_applied: u64,
    pub commands_run: u64,
    pub acked_commits: u64,
    /// Commits whose primary went away before acknowledging them (neither success nor loss).
    pub indeterminate_commits: u64,
    /// Acknowledged commits missing from the final leader (expected in asynchronous mode).
    pub lost_acked_commits: u64,
    /// Members left in a state that needs an operator, by design (reported, not failed).
    pub needs_intervention: Vec<String>,
    pub bootstrapped_at: Time,
    pub converged_after_faults: Option<Time>,
    pub end: Time,
    pub final_leader: Option<String>,
    /// Every new holder of the leader key, with the time.
    pub leaders: Vec<(Time, String)>,
    /// Leader keys that vanished because their lease expired: `(time, former holder)`.
    pub leader_key_expired: Vec<(Time, String)>,
    /// Nodes that stopped being writable primaries: `(time, node)`.
    pub stopped_writing: Vec<(Time, String)>,
    /// Lock acquisitions for a promotion that invariant 2 examined.
    pub promotions_checked: u64,
    /// Answers of the REST commands the operator gave: `(time, command, answer)`.
    pub command_answers: Vec<(Time, String, String)>,
}

pub struct Outcome {
    pub seed: u64,
    pub violation: Option<Violation>,
    pub stats: Stats,
    pub log: Log,
}

pub struct World {
    base: tokio::time::Instant,
    pub(crate) step: u64,
    pub(crate) rng: Rng,
    pub(crate) nodes: Vec<Node>,
    pub(crate) store: MemoryStore,
    pub(crate) layout: KeyLayout,
    pub(crate) dcs_outages: u32,
    /// Maintenance mode (a `Maintenance` fault): from when it was asked for until one ttl
    /// after it was resumed (invariant 1b; `Time::MAX` while on).
    pub(crate) maintenance: Option<(Time, Time)>,
    /// etcd itself is down (not just unreachable): no lease expires meanwhile, and every
    /// lease is extended when it comes back.
    pub(crate) leases_frozen: bool,
    pub(crate) log: Log,
    pub(crate) opts: Options,
    pub(crate) schedule: Schedule,
    pub(crate) acks: Vec<Ack>,
    /// Commits written on a primary, waiting for synchronous standbys to acknowledge them.
    pub(crate) pending: Vec<(u64, Ack)>,
    next_content: u32,
    pub(crate) phase: Phase,
    pub(crate) converged_since: Option<Time>,
    pub(crate) violation: Option<Violation>,
    pub(crate) stats: Stats,
    /// Nodes whose WAL gained a new writer session or bytes since the last identity check.
    pub(crate) wal_dirty: Vec<usize>,
    /// Which nodes were writable after the previous change.
    pub(crate) was_writable: Vec<bool>,
    /// The leader key's holder at the last change.
    last_leader: Option<String>,
    /// Signalled when the run is over (converged after the faults, or a violation).
    pub(crate) done: Arc<Notify>,
    /// The world itself, for the tasks it spawns from inside a locked section.
    pub(crate) me: std::sync::Weak<Mutex<World>>,
}

impl World {
    pub fn new(schedule: Schedule, opts: Options) -> World {
        let mut rng = Rng::new(schedule.seed).fork(2);
        let nodes = schedule
            .nodes
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let name = format!("n{}", i + 1);
                let settings = schedule.cluster.engine_settings(&name, spec);
                Node {
                    name,
                    settings,
                    pg: Pg::empty(),
                    agent: None,
                    agent_epoch: 0,
                    thaw_waiters: Vec::new(),
                    watch: watch::Sender::new(0),
                    frozen_by: None,
                    resumed_at: None,
                    down_by: None,
                    dcs_cut: 0,
                    slow: None,
                    lagging: 0,
                    slow_stop: 0,
                    slow_start: 0,
                    pre_promote: None,
                    promote_decided_at: None,
                    promoted_at: None,
                    holds_vip: false,
                    vip_until: 0,
                    callbacks: Vec::new(),
                    last_reason: String::new(),
                    task: None,
                    election: None,
                    probe_truth: vec![None; schedule.nodes.len()],
                    failsafe_until: None,
                    healthy_dcs_since: Some(0),
                    agent_started_at: 0,
                }
            })
            .collect();
        let n = schedule.nodes.len();
        World {
            base: tokio::time::Instant::now(),
            step: 0,
            rng: rng.fork(3),
            nodes,
            store: MemoryStore::new(),
            layout: KeyLayout::new("/service/", crate::node::SCOPE),
            dcs_outages: 0,
            maintenance: None,
            leases_frozen: false,
            log: Log {
                enabled: opts.log,
                lines: Vec::new(),
            },
            opts,
            schedule,
            acks: Vec::new(),
            pending: Vec::new(),
            next_content: 0,
            phase: Phase::Bootstrap {
                deadline: BOOTSTRAP_BOUND,
            },
            converged_since: None,
            violation: None,
            stats: Stats::default(),
            wal_dirty: Vec::new(),
            was_writable: vec![false; n],
            last_leader: None,
            done: Arc::new(Notify::new()),
            me: std::sync::Weak::new(),
        }
    }

    /// Virtual milliseconds since the run began.
    pub(crate) fn now(&self) -> Time {
        self.base.elapsed().as_millis() as Time
    }

    pub(crate) fn content(&mut self) -> u32 {
        self.next_content += 1;
        self.next_content
    }

    pub(crate) fn say(&mut self, who: usize, msg: impl FnOnce() -> String) {
        let now = self.now();
        let name = self.nodes.get(who).map_or("?", |n| n.name.as_str());
        self.log.push(now, self.step, name, msg);
    }

    pub(crate) fn say_world(&mut self, msg: impl FnOnce() -> String) {
        let now = self.now();
        self.log.push(now, self.step, "--", msg);
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub(crate) fn frozen(&self, n: usize) -> bool {
        self.nodes[n].frozen_by.is_some()
    }

    /// One-way message latency to or from node `n`; `None` when the message is lost.
    pub(crate) fn net_delay(&mut self, n: usize) -> Option<Time> {
        match self.nodes[n].slow {
            Some((max, loss)) => {
                if self.rng.chance(loss) {
                    None
                } else {
                    Some(self.rng.range(20, max))
                }
            }
            None => Some(self.rng.range(1, 8)),
        }
    }

    /// Node `n` takes writes from clients now: a running primary, not paused, and not in the
    /// moment right after a resume, when its own processes (its overdue fence) act first
    /// unless `Options::resume_fence_latency` says they are late.
    pub(crate) fn writable(&self, n: usize) -> bool {
        let settling = self.opts.resume_fence_latency == 0
            && self.nodes[n]
                .resumed_at
                .is_some_and(|at| self.now() < at + RESUME_SETTLE);
        !self.frozen(n) && !settling && self.nodes[n].pg.writable()
    }

    pub(crate) fn dcs_reachable(&self, n: usize) -> bool {
        self.dcs_outages == 0 && self.nodes[n].dcs_cut == 0
    }

    pub(crate) fn truth(&self, n: usize) -> Truth {
        let node = &self.nodes[n];
        Truth {
            running_replica: node.pg.running && node.pg.accepting && node.pg.in_recovery,
            running: node.pg.running && node.pg.accepting,
            leader: self.leader_name().as_deref() == Some(node.name.as_str()),
            wal: node.pg.wal.end,
            timeline: node.pg.wal.timeline(),
            nofailover: node.settings.nofailover,
        }
    }

    /// After a change in etcd: every agent that can reach etcd sees it one trip later (its
    /// watch); one cut off sees nothing until it reads again.
    pub(crate) fn notify_watchers(&mut self) {
        for n in 0..self.nodes.len() {
            if self.nodes[n].agent.is_none() || !self.dcs_reachable(n) {
                continue;
            }
            if let Some(d) = self.net_delay(n) {
                let watch = self.nodes[n].watch.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(d)).await;
                    watch.send_modify(|c| *c = c.wrapping_add(1));
                });
            }
        }
    }

    /// The member the leader key names now.
    pub(crate) fn leader_name(&self) -> Option<String> {
        self.store.get(&self.layout.leader())
    }

    /// After every change of the world's state: bookkeeping, then the checker.
    pub(crate) fn changed(&mut self) {
        self.step += 1;
        self.stats.events += 1;
        let now = self.now();
        for n in 0..self.nodes.len() {
            let healthy = !self.frozen(n) && self.dcs_reachable(n) && self.nodes[n].slow.is_none();
            let since = &mut self.nodes[n].healthy_dcs_since;
            match (healthy, *since) {
                (false, _) => *since = None,
                (true, None) => *since = Some(now),
                (true, Some(_)) => {}
            }
        }
        let leader = self.leader_name();
        if leader != self.last_leader {
            if let Some(l) = &leader {
                let now = self.now();
                self.stats.leaders.push((now, l.clone()));
                let l = l.clone();
                self.say_world(|| format!("DCS: the leader key names {l}"));
            }
            self.last_leader = leader;
        }
        checker::after_event(self);
        if self.violation.is_some() && self.opts.stop_at_violation {
            self.done.notify_one();
        }
    }

    pub(crate) fn violate(&mut self, invariant: Invariant, message: String) {
        checker::violate(self, invariant, message);
        if self.opts.stop_at_violation {
            self.done.notify_one();
        }
    }

    /// The run's outcome (the world stays, for the tasks still holding it).
    pub(crate) fn finish(&mut self, end: Time) -> Outcome {
        self.stats.end = end;
        checker::at_end(self);
        Outcome {
            seed: self.schedule.seed,
            violation: self.violation.take(),
            stats: std::mem::take(&mut self.stats),
            log: std::mem::take(&mut self.log),
        }
    }
}

/// What PostgreSQL finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PgStep {
    Started,
    Stopped,
    Promoted,
}

/// Waits while node `n` is paused; after a resume, the processes of the node continue
/// `resume_fence_latency` later (0: at once, before any client reaches it).
pub(crate) async fn thawed(world: &Shared, n: usize) {
    let waiting = {
        let mut w = lock(world);
        if !w.frozen(n) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        w.nodes[n].thaw_waiters.push(tx);
        rx
    };
    let _ = waiting.await;
    let latency = lock(world).opts.resume_fence_latency;
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
}

/// A PostgreSQL transition of node `n` at world time `at`, for the postmaster of `epoch`
/// (a later postmaster ignores it). It waits while the node is paused.
pub(crate) fn pg_event(world: &Shared, n: usize, epoch: u64, at: Time, step: PgStep) {
    let world = world.clone();
    tokio::spawn(async move {
        let now = lock(&world).now();
        tokio::time::sleep(std::time::Duration::from_millis(at.saturating_sub(now))).await;
        thawed(&world, n).await;
        let mut w = lock(&world);
        w.pg_step(n, epoch, step);
        w.changed();
    });
}

impl World {
    fn pg_step(&mut self, n: usize, epoch: u64, step: PgStep) {
        if self.nodes[n].pg.epoch != epoch {
            return;
        }
        match step {
            PgStep::Started => {
                let content = self.content();
                let pg = &mut self.nodes[n].pg;
                pg.finish_start(content);
                if !pg.accepting {
                    return;
                }
                let (primary, tl, lsn) = (!pg.in_recovery, pg.wal.timeline(), pg.wal.end);
                self.wal_dirty.push(n);
                self.say(n, || {
                    format!(
                        "postgres: started as {} (timeline {tl}, lsn {lsn})",
                        if primary { "PRIMARY" } else { "replica" }
                    )
                });
                // A start as primary without the leader key (a leader whose lease ran out
                // while its start was under way) is a stale primary: invariants 1 and 2
                // judge it, and its fence stops it.
                if primary && self.leader_name().as_deref() == Some(self.nodes[n].name.as_str()) {
                    checker::on_new_primary(self, n);
                }
            }
            PgStep::Stopped => {
                self.flush_to_standbys(n);
                self.nodes[n].pg.finish_stop();
                self.release(n);
                let control = self.nodes[n].pg.control;
                self.say(n, || format!("postgres: stopped ({control:?})"));
            }
            PgStep::Promoted => {
                let content = self.content();
                // PostgreSQL picks the newest timeline it knows of (its own history files;
                // no WAL archive here) + 1.
                let known = if self.opts.workarounds.unique_timeline_ids {
                    self.nodes
                        .iter()
                        .map(|x| x.pg.wal.timeline())
                        .max()
                        .unwrap_or(0)
                } else {
                    self.nodes[n].pg.wal.timeline()
                };
                let now = self.now();
                let pg = &mut self.nodes[n].pg;
                pg.finish_promote(content, known + 1, now);
                if !pg.in_recovery {
                    let (tl, lsn) = (pg.wal.timeline(), pg.wal.end);
                    self.stats.promotions += 1;
                    self.wal_dirty.push(n);
                    self.say(n, || {
                        format!("postgres: promoted to timeline {tl} at lsn {lsn}")
                    });
                    checker::on_new_primary(self, n);
                    checker::on_promoted(self, n);
                }
            }
        }
    }

    /// Begins a PostgreSQL stop; returns when it will have exited (`None`: not running).
    pub(crate) fn stop_pg(&mut self, n: usize, mode: crate::pg::StopMode) -> Option<Time> {
        let dur = match mode {
            crate::pg::StopMode::Immediate => self.rng.range(20, 150),
            crate::pg::StopMode::Fast => self.rng.range(100, 800) + self.nodes[n].slow_stop,
        };
        let before = self.nodes[n].pg.stopping;
        let now = self.now();
        let exit = self.nodes[n].pg.begin_stop(mode, now + dur)?;
        self.release(n);
        if before.map(|(_, at)| at) != Some(exit) {
            let epoch = self.nodes[n].pg.epoch;
            if let Some(world) = self.me.upgrade() {
                pg_event(&world, n, epoch, exit, PgStep::Stopped);
            }
        }
        Some(exit)
    }
}

/// After a resume, the node's own processes run this long before an outside client reaches
/// it (the model of "the overdue fence fires first").
const RESUME_SETTLE: Time = 10;

/// A fresh cluster must bootstrap within this.
pub(crate) const BOOTSTRAP_BOUND: Time = 60_000;
