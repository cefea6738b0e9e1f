//! What one simulation run is made of: options (test-only switches), the cluster's settings,
//! and the fault schedule, all derived from the seed for random runs.

use crate::rng::Rng;
use crate::Time;

/// Bugs planted to prove that the simulator finds them: in the simulated world, or defects
/// of earlier agent designs put back into the real agent (`pgherd_agent::PlantedBug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// The simulated REST API answers WAL position 0 for every member, so the election ranks
    /// on priority and name only: a wrong election rule that invariant 2 must catch.
    ProbesHideWal,
    /// The agent's independent fence task is gone.
    NoFence,
    /// A REST restart is awaited inside the HA loop (the first design).
    InlineRestart,
    /// The former leader of a switchover races for the lock like any member (the first
    /// design, which re-promoted the old leader).
    FormerLeaderRaces,
}

impl PlantedBug {
    /// The defect to put into the real agent, if it is one of the agent's.
    pub(crate) fn in_agent(self) -> Option<pgherd_agent::PlantedBug> {
        match self {
            PlantedBug::ProbesHideWal => None,
            PlantedBug::NoFence => Some(pgherd_agent::PlantedBug::NoFence),
            PlantedBug::InlineRestart => Some(pgherd_agent::PlantedBug::InlineRestart),
            PlantedBug::FormerLeaderRaces => Some(pgherd_agent::PlantedBug::FormerLeaderRaces),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub planted: Option<PlantedBug>,
    /// Keep the event log (bulk runs turn it off and re-run a failing seed with it on).
    pub log: bool,
    /// Time between a paused node resuming and its overdue fence taking effect. 0 models the
    /// fence winning the race against the first client commit after SIGCONT (see lib docs).
    pub resume_fence_latency: Time,
    /// Also inject agent-only crashes (PostgreSQL keeps running with no agent and no fence).
    /// Off by default: without a watchdog no agent design survives them (see lib docs).
    pub agent_crashes: bool,
    /// Stop at the first violation (bulk runs) or keep the first and run to the end.
    pub stop_at_violation: bool,
    pub workarounds: Workarounds,
}

/// Open defects of the real system that a bulk run may work around, each by modelling its
/// proposed fix, so that the run keeps looking for *other* problems. All off by default
/// (faithful); dedicated tests show each defect with its minimal seed. Defects that have been
/// fixed in the engine or the agent have no flag here any more: the simulator runs the real
/// fix, and a `regression_*` test replays the seed that found the defect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workarounds {
    /// Defect: a node that dies right after promotion (before anyone streamed its new timeline
    /// or it published `history`) leaves its timeline id unknown; the next promotion from the
    /// same parent reuses the id for different WAL, which no timeline-based check
    /// (`pgherd_ha::diverged`, pg_rewind) can detect. Fix modelled: timeline ids are unique
    /// cluster-wide (a shared WAL archive, or reserving the id in the DCS before
    /// `pg_ctl promote`).
    pub unique_timeline_ids: bool,
}

impl Workarounds {
    pub const NAMES: [&'static str; 1] = ["unique_timeline_ids"];

    fn flag(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "unique_timeline_ids" => &mut self.unique_timeline_ids,
            _ => return None,
        })
    }

    /// Every workaround except the named ones; `Err` names an unknown one.
    pub fn all_except(names: &[&str]) -> Result<Workarounds, String> {
        let mut w = Workarounds::all();
        for name in names {
            *w.flag(name).ok_or_else(|| {
                format!(
                    "unknown workaround {name:?}; known: {}",
                    Self::NAMES.join(", ")
                )
            })? = false;
        }
        Ok(w)
    }

    /// Names of the workarounds that are off.
    pub fn disabled(&self) -> Vec<&'static str> {
        let mut copy = *self;
        Self::NAMES
            .into_iter()
            .filter(|n| copy.flag(n).is_some_and(|f| !*f))
            .collect()
    }

    /// Every open defect worked around (what the 10,000-schedule run uses).
    pub fn all() -> Workarounds {
        Workarounds {
            unique_timeline_ids: true,
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            planted: None,
            log: false,
            resume_fence_latency: 0,
            agent_crashes: false,
            stop_at_violation: true,
            workarounds: Workarounds::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    pub nofailover: bool,
    pub failover_priority: i64,
}

/// Dynamic configuration shared by every member (what the DCS `config` would hold).
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub ttl: Time,
    pub loop_wait: Time,
    pub retry_timeout: Time,
    pub primary_start_timeout: Time,
    pub maximum_lag_on_failover: u64,
    pub use_pg_rewind: bool,
    pub remove_data_directory_on_rewind_failure: bool,
    pub remove_data_directory_on_diverged_timelines: bool,
    pub synchronous_mode: bool,
    pub synchronous_mode_strict: bool,
    pub synchronous_node_count: usize,
    pub failsafe_mode: bool,
}

impl ClusterSpec {
    /// pgherd's defaults (README "Timing defaults").
    pub fn pgherd_defaults() -> ClusterSpec {
        ClusterSpec {
            ttl: 10_000,
            loop_wait: 1_000,
            retry_timeout: 3_000,
            primary_start_timeout: 300_000,
            maximum_lag_on_failover: 1_048_576,
            use_pg_rewind: true,
            remove_data_directory_on_rewind_failure: false,
            remove_data_directory_on_diverged_timelines: false,
            synchronous_mode: false,
            synchronous_mode_strict: false,
            synchronous_node_count: 1,
            failsafe_mode: false,
        }
    }

    /// The engine settings of a member (what the checker judges decisions against).
    pub fn engine_settings(&self, name: &str, spec: &NodeSpec) -> pgherd_ha::Settings {
        let mut s = pgherd_ha::Settings::for_member(name);
        s.ttl = self.ttl;
        s.loop_wait = self.loop_wait;
        s.retry_timeout = self.retry_timeout;
        s.maximum_lag_on_failover = self.maximum_lag_on_failover;
        s.primary_start_timeout = self.primary_start_timeout;
        s.use_pg_rewind = self.use_pg_rewind;
        s.remove_data_directory_on_rewind_failure = self.remove_data_directory_on_rewind_failure;
        s.remove_data_directory_on_diverged_timelines =
            self.remove_data_directory_on_diverged_timelines;
        s.synchronous_mode = self.synchronous_mode;
        s.synchronous_mode_strict = self.synchronous_mode_strict;
        s.synchronous_node_count = self.synchronous_node_count;
        s.failsafe_mode = self.failsafe_mode;
        s.nofailover = spec.nofailover;
        s.failover_priority = spec.failover_priority;
        s
    }
}

/// Whom a fault hits, resolved when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The member named in the leader key (else the writable node, else node 0).
    Leader,
    /// The k-th (modulo) member that is not the leader.
    Replica(usize),
    Node(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// kill -9 of the postmaster only; the agent lives on.
    PgCrash(Who),
    /// Power loss: agent and PostgreSQL die; the node boots again after `down_for`.
    NodeCrash { who: Who, down_for: Time },
    /// SIGTERM to the agent (clean shutdown, docs/compat.md#shutdown), started again after `down_for`.
    NodeRestart { who: Who, down_for: Time },
    /// SIGSTOP of agent and PostgreSQL together (or a VM pause) for `dur`, then SIGCONT.
    Pause { who: Who, dur: Time },
    /// etcd unreachable for everyone. `leases_survive`: etcd itself was down and extends every
    /// lease when it returns; otherwise (a partition) leases expire meanwhile.
    DcsOutage { dur: Time, leases_survive: bool },
    /// etcd unreachable for one node only.
    DcsCut { who: Who, dur: Time },
    /// Every message to/from the node takes up to `max_delay` and some are lost.
    SlowNet {
        who: Who,
        dur: Time,
        max_delay: Time,
        loss_permille: u64,
    },
    /// WAL streaming to the node is slow (lag beyond maximum_lag_on_failover).
    ReplicaLag { who: Who, dur: Time },
    /// The agent dies, PostgreSQL keeps running (opt-in: see [`Options::agent_crashes`]).
    AgentCrash { who: Who, down_for: Time },
    /// An operator's `pgherd switchover --force` (`POST /switchover` on the leader), to a
    /// candidate or not.
    Switchover { candidate: Option<Who> },
    /// Maintenance mode (`PATCH /config {"pause": true}`) for `dur`, then resumed, with a
    /// switchover to a named candidate `switchover_at` ms into it when given.
    Maintenance {
        dur: Time,
        switchover_at: Option<Time>,
    },
    /// An operator's `pgherd restart <member> --force` (`POST /restart`).
    Restart(Who),
    /// An operator's `pgherd reinit <member> --force` (`POST /reinitialize`).
    Reinit(Who),
    /// PostgreSQL's stops take `extra` longer for `dur` (a slow checkpointer, SIGSTOPped).
    SlowStop { who: Who, extra: Time, dur: Time },
    /// PostgreSQL's starts take `extra` longer for `dur` (long crash recovery; a start that
    /// outlasts the agent's patience looks hung).
    SlowStart { who: Who, extra: Time, dur: Time },
    /// An operator's `pgherd failover --candidate X --force` (`POST /failover` on the leader).
    Failover { candidate: Who },
    /// An operator's `pgherd edit-config` of the timing (`PATCH /config` with ttl, loop_wait,
    /// retry_timeout): every agent re-times its lease, fence and loop.
    EditTiming {
        ttl: Time,
        loop_wait: Time,
        retry_timeout: Time,
    },
    /// `PATCH /config` of `maximum_lag_on_failover` (bytes).
    EditMaxLag(u64),
    /// An operator's `pgherd reload` (`POST /reload`).
    Reload(Who),
    /// The node's `pre_promote` script takes `delay` ms and, if `refuse`, exits 1, for `dur`.
    PrePromote {
        who: Who,
        delay: Time,
        refuse: bool,
        dur: Time,
    },
    /// A `pgherd proxy` registered in the DCS (`proxies/<name>`, `ProxyRegistration`) that
    /// names the leader as its write target and follows a change of leader only `lag` ms
    /// late (slow health checks, a session it must close first), for `dur`; then it exits
    /// and its key expires.
    Proxy { lag: Time, dur: Time },
}

impl FaultKind {
    /// How long after its start the fault is over (node back, outage ended).
    pub fn span(&self) -> Time {
        match self {
            FaultKind::PgCrash(_)
            | FaultKind::Switchover { .. }
            | FaultKind::Failover { .. }
            | FaultKind::EditTiming { .. }
            | FaultKind::EditMaxLag(_)
            | FaultKind::Reload(_)
            | FaultKind::Restart(_)
            | FaultKind::Reinit(_) => 0,
            FaultKind::NodeCrash { down_for, .. }
            | FaultKind::NodeRestart { down_for, .. }
            | FaultKind::AgentCrash { down_for, .. } => *down_for,
            FaultKind::Pause { dur, .. }
            | FaultKind::DcsOutage { dur, .. }
            | FaultKind::DcsCut { dur, .. }
            | FaultKind::SlowNet { dur, .. }
            | FaultKind::ReplicaLag { dur, .. }
            | FaultKind::SlowStop { dur, .. }
            | FaultKind::SlowStart { dur, .. }
            | FaultKind::PrePromote { dur, .. }
            | FaultKind::Proxy { dur, .. }
            | FaultKind::Maintenance { dur, .. } => *dur,
        }
    }
}

/// A fault, `at` ms after the freshly bootstrapped cluster first converged.
#[derive(Debug, Clone)]
pub struct Fault {
    pub at: Time,
    pub kind: FaultKind,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub seed: u64,
    pub nodes: Vec<NodeSpec>,
    pub cluster: ClusterSpec,
    pub faults: Vec<Fault>,
    /// After the last fault ends, the cluster must converge within this long.
    pub converge_bound: Time,
    /// Start from a bootstrapped cluster (leader and streaming replicas, DCS keys written)
    /// rather than from empty data directories; saves ~10 simulated seconds per run.
    pub prebuilt: bool,
}

impl Schedule {
    /// `n` plain members with pgherd's defaults and no faults (hand-written scenarios add theirs).
    pub fn quiet(seed: u64, n: usize) -> Schedule {
        Schedule {
            seed,
            nodes: vec![
                NodeSpec {
                    nofailover: false,
                    failover_priority: 1
                };
                n
            ],
            cluster: ClusterSpec::pgherd_defaults(),
            faults: Vec::new(),
            converge_bound: 60_000,
            prebuilt: false,
        }
    }

    pub fn with_fault(mut self, at: Time, kind: FaultKind) -> Schedule {
        self.faults.push(Fault { at, kind });
        self
    }

    /// A random schedule: 3–5 members, randomised settings and 1–5 overlapping faults within
    /// a few tens of seconds. Kept short so that 10,000 of them run quickly.
    pub fn random(seed: u64, opts: &Options) -> Schedule {
        let mut rng = Rng::new(seed).fork(1);
        let n = 3 + rng.index(3);
        let mut s = Schedule::quiet(seed, n);
        // Every tenth run bootstraps from empty data directories.
        s.prebuilt = !seed.is_multiple_of(10);
        if rng.chance(100) {
            let i = rng.index(n);
            s.nodes[i].nofailover = true;
        }
        if rng.chance(150) {
            let i = rng.index(n);
            s.nodes[i].failover_priority = 2;
        }
        let c = &mut s.cluster;
        c.primary_start_timeout = match rng.below(4) {
            0 => 0,
            1 => 3_000,
            _ => 300_000,
        };
        if rng.chance(300) {
            c.maximum_lag_on_failover = 16_384;
        }
        c.use_pg_rewind = rng.chance(900);
        c.remove_data_directory_on_rewind_failure = rng.chance(500);
        c.remove_data_directory_on_diverged_timelines = rng.chance(300);
        c.synchronous_mode = rng.chance(400);
        c.synchronous_mode_strict = c.synchronous_mode && rng.chance(300);
        if c.synchronous_mode && n >= 4 && rng.chance(200) {
            c.synchronous_node_count = 2;
        }
        // Drawn from a stream of its own, so that every other choice of a seed stays as it
        // was before failsafe mode was simulated (the regression seeds keep their meaning).
        c.failsafe_mode = Rng::new(seed).fork(3).chance(250);

        let phase = rng.range(3_000, 30_000);
        let count = 1 + rng.index(5);
        for _ in 0..count {
            let at = rng.range(0, phase);
            let who = match rng.below(10) {
                0..=4 => Who::Leader,
                5..=7 => Who::Replica(rng.index(4)),
                _ => Who::Node(rng.index(n)),
            };
            let kinds = if opts.agent_crashes { 125 } else { 120 };
            let kind = match rng.below(kinds) {
                0..=14 => FaultKind::PgCrash(who),
                15..=34 => FaultKind::NodeCrash {
                    who,
                    down_for: rng.range(200, 25_000),
                },
                35..=42 => FaultKind::NodeRestart {
                    who,
                    down_for: rng.range(500, 10_000),
                },
                43..=62 => FaultKind::Pause {
                    who,
                    dur: rng.range(300, 25_000),
                },
                63..=70 => FaultKind::DcsOutage {
                    dur: rng.range(1_000, 20_000),
                    leases_survive: rng.chance(500),
                },
                71..=80 => FaultKind::DcsCut {
                    who,
                    dur: rng.range(1_000, 20_000),
                },
                81..=90 => FaultKind::SlowNet {
                    who,
                    dur: rng.range(1_000, 15_000),
                    max_delay: rng.range(100, 3_000),
                    loss_permille: rng.range(0, 300),
                },
                91..=99 => FaultKind::ReplicaLag {
                    who,
                    dur: rng.range(2_000, 20_000),
                },
                100..=105 => FaultKind::Switchover {
                    candidate: rng.chance(500).then(|| Who::Replica(rng.index(4))),
                },
                106..=110 => FaultKind::Restart(who),
                111..=112 => FaultKind::Reinit(Who::Replica(rng.index(4))),
                113..=119 => FaultKind::SlowStop {
                    who,
                    extra: rng.range(2_000, 12_000),
                    dur: rng.range(5_000, 20_000),
                },
                _ => FaultKind::AgentCrash {
                    who,
                    down_for: rng.range(500, 15_000),
                },
            };
            s.faults.push(Fault { at, kind });
        }
        // Maintenance mode, drawn from a stream of its own so that every other choice of a
        // seed stays as it was (the regression seeds keep their meaning).
        let mut m = Rng::new(seed).fork(4);
        if m.chance(150) {
            let dur = m.range(2_000, 20_000);
            let switchover_at = m.chance(500).then(|| m.range(0, dur));
            s.faults.push(Fault {
                at: m.range(0, phase),
                kind: FaultKind::Maintenance { dur, switchover_at },
            });
        }
        // What else users do (commands, config edits, hooks, proxies), also from a stream of
        // its own.
        let mut u = Rng::new(seed).fork(5);
        if u.chance(400) {
            let at = u.range(0, phase);
            let who = if u.chance(500) {
                Who::Leader
            } else {
                Who::Replica(u.index(4))
            };
            let kind = match u.below(7) {
                0 => FaultKind::Failover {
                    candidate: Who::Replica(u.index(4)),
                },
                1 => {
                    let ttl = u.range(6_000, 20_000);
                    let loop_wait = u.range(500, 2_000);
                    // Patroni's rule: loop_wait + 2 * retry_timeout <= ttl.
                    let retry_timeout = u.range(1_000, (ttl - loop_wait) / 2);
                    FaultKind::EditTiming {
                        ttl,
                        loop_wait,
                        retry_timeout,
                    }
                }
                2 => FaultKind::EditMaxLag(if u.chance(500) { 0 } else { 16_384 }),
                3 => FaultKind::Reload(who),
                4 => FaultKind::SlowStart {
                    who,
                    extra: u.range(2_000, 40_000),
                    dur: u.range(5_000, 30_000),
                },
                5 => FaultKind::PrePromote {
                    who,
                    delay: u.range(0, 15_000),
                    refuse: u.chance(300),
                    dur: u.range(5_000, 30_000),
                },
                _ => FaultKind::Proxy {
                    lag: u.range(0, 8_000),
                    dur: u.range(5_000, 40_000),
                },
            };
            s.faults.push(Fault { at, kind });
        }
        s.faults.sort_by_key(|f| f.at);
        s
    }
}
