//! The world: nodes, the DCS, the client, one event queue in simulated time, and the loop
//! that dispatches events and runs the checker after every one of them.

use crate::agent;
use crate::checker::{self, Invariant, Violation};
use crate::config::{Options, Schedule};
use crate::dcs::Store;
use crate::events::EventQueue;
pub(crate) use crate::events::{Ev, Host, PgStep, Queued};
use crate::faults;
use crate::log::Log;
use crate::pg::Pg;
use crate::rng::Rng;
use crate::wal::Ack;
use crate::{actions, Time};
use pgherd_ha::Settings;

/// Ground truth about a node at one instant (for the checker, never shown to the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truth {
    pub running_replica: bool,
    pub wal: u64,
    pub timeline: u64,
    pub nofailover: bool,
}

pub(crate) struct Node {
    pub name: String,
    pub settings: Settings,
    pub pg: Pg,
    /// `None` while the agent process is not running.
    pub agent: Option<agent::Agent>,
    pub ae: u64,
    /// Paused by this fault (SIGSTOP): its events wait in `deferred`.
    pub frozen_by: Option<usize>,
    pub deferred: Vec<Queued>,
    /// Down (crashed or stopped) because of this fault.
    pub down_by: Option<usize>,
    pub dcs_cut: u32,
    pub slow: Option<(Time, u64)>,
    pub lagging: u32,
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
}

pub struct Outcome {
    pub seed: u64,
    pub violation: Option<Violation>,
    pub stats: Stats,
    pub log: Log,
}

pub struct World {
    pub(crate) now: Time,
    pub(crate) step: u64,
    seq: u64,
    queue: EventQueue,
    pub(crate) rng: Rng,
    pub(crate) nodes: Vec<Node>,
    pub(crate) dcs: Store,
    pub(crate) dcs_outages: u32,
    pub(crate) log: Log,
    pub(crate) opts: Options,
    pub(crate) schedule: Schedule,
    pub(crate) acks: Vec<Ack>,
    /// Commits written on a primary, waiting for synchronous standbys to acknowledge them.
    pub(crate) pending: Vec<(u64, Ack)>,
    next_content: u32,
    next_id: u64,
    pub(crate) phase: Phase,
    converged_since: Option<Time>,
    pub(crate) violation: Option<Violation>,
    pub(crate) stats: Stats,
    /// Nodes whose WAL gained a new writer session or bytes since the last identity check.
    pub(crate) wal_dirty: Vec<usize>,
    /// Which nodes were writable after the previous event.
    pub(crate) was_writable: Vec<bool>,
}

/// How long the converged state must hold before a run counts as settled.
const STABLE_FOR: Time = 3_000;
const BOOTSTRAP_BOUND: Time = 60_000;

impl World {
    pub fn new(schedule: Schedule, opts: Options) -> World {
        let mut rng = Rng::new(schedule.seed).fork(2);
        let nodes = schedule
            .nodes
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let name = format!("n{}", i + 1);
                let c = &schedule.cluster;
                let mut s = Settings::for_member(&name);
                s.ttl = c.ttl;
                s.loop_wait = c.loop_wait;
                s.retry_timeout = c.retry_timeout;
                s.fencing_margin = c.fencing_margin();
                s.maximum_lag_on_failover = c.maximum_lag_on_failover;
                s.primary_start_timeout = c.primary_start_timeout;
                s.use_pg_rewind = c.use_pg_rewind;
                s.remove_data_directory_on_rewind_failure =
                    c.remove_data_directory_on_rewind_failure;
                s.remove_data_directory_on_diverged_timelines =
                    c.remove_data_directory_on_diverged_timelines;
                s.synchronous_mode = c.synchronous_mode;
                s.synchronous_mode_strict = c.synchronous_mode_strict;
                s.synchronous_node_count = c.synchronous_node_count;
                s.nofailover = spec.nofailover;
                s.failover_priority = spec.failover_priority;
                Node {
                    name,
                    settings: s,
                    pg: Pg::empty(),
                    agent: None,
                    ae: 0,
                    frozen_by: None,
                    deferred: Vec::new(),
                    down_by: None,
                    dcs_cut: 0,
                    slow: None,
                    lagging: 0,
                }
            })
            .collect();
        let log = Log {
            enabled: opts.log,
            lines: Vec::new(),
        };
        let mut w = World {
            now: 0,
            step: 0,
            seq: 0,
            queue: EventQueue::default(),
            rng: rng.fork(3),
            nodes,
            dcs: Store::default(),
            dcs_outages: 0,
            log,
            opts,
            schedule,
            acks: Vec::new(),
            pending: Vec::new(),
            next_content: 0,
            next_id: 0,
            phase: Phase::Bootstrap {
                deadline: BOOTSTRAP_BOUND,
            },
            converged_since: None,
            violation: None,
            stats: Stats::default(),
            wal_dirty: Vec::new(),
            was_writable: Vec::new(),
        };
        w.was_writable = vec![false; w.nodes.len()];
        if w.schedule.prebuilt {
            w.prebuild();
        }
        for n in 0..w.nodes.len() {
            let delay = w.rng.range(0, 300);
            let lease = w.dcs.members.get(&w.nodes[n].name).map(|m| m.2);
            agent::start_agent(&mut w, n, delay);
            if let Some(a) = w.nodes[n].agent.as_mut() {
                a.lease = lease;
            }
            let at = w.rng.range(0, 300);
            w.at(at, Host::Node(n), Ev::Stream);
        }
        w.at(1_000, Host::Global, Ev::Client);
        w.at(250, Host::Global, Ev::Converge);
        w
    }

    pub(crate) fn at(&mut self, at: Time, host: Host, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            host,
            ev,
        });
    }

    /// Puts back an event that waited for a paused node: due now, in its original order.
    pub(crate) fn requeue(&mut self, q: Queued) {
        self.queue.push(Queued { at: self.now, ..q });
    }

    pub(crate) fn after(&mut self, delay: Time, host: Host, ev: Ev) {
        self.at(self.now + delay, host, ev);
    }

    pub(crate) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn content(&mut self) -> u32 {
        self.next_content += 1;
        self.next_content
    }

    pub(crate) fn say(&mut self, who: usize, msg: impl FnOnce() -> String) {
        let name = self.nodes.get(who).map_or("?", |n| n.name.as_str());
        self.log.push(self.now, self.step, name, msg);
    }

    pub(crate) fn say_world(&mut self, msg: impl FnOnce() -> String) {
        self.log.push(self.now, self.step, "--", msg);
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

    pub(crate) fn dcs_reachable(&self, n: usize) -> bool {
        self.dcs_outages == 0 && self.nodes[n].dcs_cut == 0
    }

    pub(crate) fn truth(&self, n: usize) -> Truth {
        let node = &self.nodes[n];
        Truth {
            running_replica: node.pg.running && node.pg.accepting && node.pg.in_recovery,
            wal: node.pg.wal.end,
            timeline: node.pg.wal.timeline(),
            nofailover: node.settings.nofailover,
        }
    }

    /// After a DCS change: agents whose watch can see etcd wake up if what they care about
    /// changed (compat §1.4).
    pub(crate) fn notify_watchers(&mut self) {
        for n in 0..self.nodes.len() {
            if self.nodes[n].agent.is_none() || !self.dcs_reachable(n) {
                continue;
            }
            if let Some(d) = self.net_delay(n) {
                let ae = self.nodes[n].ae;
                self.after(d, Host::Node(n), Ev::Watch { ae });
            }
        }
    }

    pub(crate) fn schedule_lease_check(&mut self, lease: i64, at: Time) {
        self.at(at, Host::Global, Ev::LeaseCheck { lease });
    }

    pub fn run(mut self) -> Outcome {
        while let Some(q) = self.queue.pop() {
            if self.phase == Phase::Done {
                break;
            }
            debug_assert!(q.at >= self.now, "event in the past: {:?}", q.ev);
            self.now = q.at;
            if let Host::Node(n) = q.host {
                if self.frozen(n) {
                    self.nodes[n].deferred.push(q);
                    continue;
                }
            }
            self.step += 1;
            self.stats.events += 1;
            self.handle(q.host, q.ev);
            checker::after_event(&mut self);
            if self.violation.is_some() && self.opts.stop_at_violation {
                break;
            }
        }
        self.finish()
    }

    fn handle(&mut self, host: Host, ev: Ev) {
        let n = match host {
            Host::Node(n) => n,
            Host::Global => usize::MAX,
        };
        let agent_ok = |w: &World, ae: u64| {
            n < w.nodes.len() && w.nodes[n].ae == ae && w.nodes[n].agent.is_some()
        };
        match ev {
            Ev::Cycle { ae } if agent_ok(self, ae) => agent::on_cycle_timer(self, n),
            Ev::Watch { ae } if agent_ok(self, ae) => agent::on_watch(self, n),
            Ev::CallReply {
                ae,
                call,
                attempt,
                reply,
            } if agent_ok(self, ae) => crate::calls::on_call_reply(self, n, call, attempt, reply),
            Ev::CallTimeout { ae, call, attempt } if agent_ok(self, ae) => {
                crate::calls::on_call_timeout(self, n, call, attempt)
            }
            Ev::CallRetry { ae, call } if agent_ok(self, ae) => {
                crate::calls::send_attempt(self, n, call)
            }
            Ev::ProbeArrive {
                from,
                from_ae,
                round,
                deadline,
            } => agent::answer_probe(self, n, from, from_ae, round, deadline),
            Ev::ProbeReply {
                ae,
                round,
                peer,
                reply,
                truth,
            } if agent_ok(self, ae) => agent::on_probe_reply(self, n, round, peer, reply, truth),
            Ev::ProbeDeadline { ae, round } if agent_ok(self, ae) => {
                agent::on_probe_deadline(self, n, round)
            }
            Ev::Cont { ae, token } if agent_ok(self, ae) => actions::on_cont(self, n, token),
            Ev::TaskStep { ae, task } if agent_ok(self, ae) => {
                crate::tasks::task_step(self, n, task)
            }
            Ev::Fence { ae, arm } if agent_ok(self, ae) => agent::on_fence(self, n, arm),
            Ev::Pg { epoch, step } => self.pg_step(n, epoch, step),
            Ev::Stream => self.stream(n),
            Ev::DcsArrive {
                node,
                ae,
                call,
                attempt,
                op,
                timeout_at,
            } => crate::calls::dcs_arrive(self, node, ae, call, attempt, *op, timeout_at),
            Ev::LeaseCheck { lease } => {
                let before = self.dcs.leader.as_ref().map(|l| l.name.clone());
                let (gone, again) = self.dcs.expire(lease, self.now);
                if let Some(at) = again {
                    self.schedule_lease_check(lease, at);
                }
                if gone {
                    self.say_world(|| format!("DCS: lease {lease} expired; its keys are gone"));
                    if let (Some(b), None) = (&before, &self.dcs.leader) {
                        self.stats.leader_key_expired.push((self.now, b.clone()));
                        self.say_world(|| format!("DCS: leader key of {b} expired"));
                    }
                    self.notify_watchers();
                }
            }
            Ev::Client => self.client(),
            Ev::Fault(f) => faults::apply(self, f),
            Ev::Converge => self.converge(),
            // Meant for an agent process that is gone.
            _ => {}
        }
    }

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
                if primary {
                    checker::on_new_primary(self, n);
                }
            }
            PgStep::Stopped => {
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
                let pg = &mut self.nodes[n].pg;
                pg.finish_promote(content, known + 1);
                if !pg.in_recovery {
                    let (tl, lsn) = (pg.wal.timeline(), pg.wal.end);
                    self.stats.promotions += 1;
                    self.wal_dirty.push(n);
                    self.say(n, || {
                        format!("postgres: promoted to timeline {tl} at lsn {lsn}")
                    });
                    checker::on_new_primary(self, n);
                }
            }
        }
    }

    /// Begins a PostgreSQL stop; returns when it will have exited (`None`: not running).
    pub(crate) fn stop_pg(&mut self, n: usize, mode: crate::pg::StopMode) -> Option<Time> {
        let dur = match mode {
            crate::pg::StopMode::Immediate => self.rng.range(20, 150),
            crate::pg::StopMode::Fast => self.rng.range(100, 800),
        };
        let before = self.nodes[n].pg.stopping;
        let exit = self.nodes[n].pg.begin_stop(mode, self.now + dur)?;
        if before.map(|(_, at)| at) != Some(exit) {
            let epoch = self.nodes[n].pg.epoch;
            self.at(
                exit,
                Host::Node(n),
                Ev::Pg {
                    epoch,
                    step: PgStep::Stopped,
                },
            );
        }
        Some(exit)
    }

    /// Begins `pg_ctl start`; returns when the server will accept connections.
    pub(crate) fn start_pg(&mut self, n: usize, upstream: Option<String>) -> Time {
        let dur = match (&upstream, self.nodes[n].pg.control) {
            (None, crate::pg::Control::InProduction) => self.rng.range(500, 3_000),
            _ => self.rng.range(300, 1_500),
        };
        let pg = &mut self.nodes[n].pg;
        pg.begin_start(upstream);
        let epoch = pg.epoch;
        let at = self.now + dur;
        self.at(
            at,
            Host::Node(n),
            Ev::Pg {
                epoch,
                step: PgStep::Started,
            },
        );
        at
    }

    fn converge(&mut self) {
        self.after(500, Host::Global, Ev::Converge);
        let mut verdict = checker::converged(self);
        if let (Phase::Bootstrap { .. }, Ok(l)) = (self.phase, &verdict) {
            let l = *l;
            let sync_ready = !self.nodes[l].settings.synchronous_mode
                || self.dcs.sync.as_ref().is_some_and(|k| {
                    k.value.leader.as_deref() == Some(self.nodes[l].name.as_str())
                        && !k.value.standbys().is_empty()
                });
            if !sync_ready {
                verdict = Err("synchronous replication not established yet".into());
            }
        }
        match verdict {
            Ok(_) => {
                let since = *self.converged_since.get_or_insert(self.now);
                let stable_for = if matches!(self.phase, Phase::Bootstrap { .. }) {
                    STABLE_FOR / 2
                } else {
                    STABLE_FOR
                };
                if self.now - since < stable_for {
                    return;
                }
                match self.phase {
                    Phase::Bootstrap { .. } => {
                        self.stats.bootstrapped_at = since;
                        self.say_world(|| {
                            "cluster bootstrapped and converged: faults begin".into()
                        });
                        faults::begin(self);
                        self.converged_since = None;
                    }
                    Phase::Quiet { since: quiet, .. } => {
                        let after = since.saturating_sub(quiet);
                        self.stats.converged_after_faults = Some(after);
                        self.say_world(|| {
                            format!(
                                "converged {} after the last fault",
                                crate::log::fmt_time(after)
                            )
                        });
                        self.phase = Phase::Done;
                    }
                    Phase::Faults { .. } | Phase::Done => {}
                }
            }
            Err(why) => {
                self.converged_since = None;
                match self.phase {
                    Phase::Bootstrap { deadline } if self.now >= deadline => {
                        checker::violate(
                            self,
                            Invariant::Convergence,
                            format!(
                                "the new cluster did not bootstrap within {} s: {why}",
                                deadline / 1000
                            ),
                        );
                    }
                    Phase::Quiet { since, deadline } if self.now >= deadline => {
                        checker::violate(
                            self,
                            Invariant::Convergence,
                            format!(
                                "not converged {} s after the last fault ended (at {}): {why}",
                                (deadline - since) / 1000,
                                crate::log::fmt_time(since)
                            ),
                        );
                        self.phase = Phase::Done;
                    }
                    _ => {}
                }
            }
        }
        if let Phase::Faults { end } = self.phase {
            if self.now >= end {
                let deadline = self.now + self.schedule.converge_bound;
                self.phase = Phase::Quiet {
                    since: self.now,
                    deadline,
                };
                self.converged_since = None;
                self.say_world(|| "all faults are over".into());
            }
        }
    }

    fn finish(mut self) -> Outcome {
        self.stats.end = self.now;
        checker::at_end(&mut self);
        Outcome {
            seed: self.schedule.seed,
            violation: self.violation,
            stats: self.stats,
            log: self.log,
        }
    }
}
