//! Deterministic simulation of pgherd: the agent that ships, in a simulated world.
//!
//! Each node runs the real `pgherd_agent::Agent` — its loop, observation, the pure engine,
//! execution of actions, background tasks, fencing, lease renewal, REST command handling —
//! configured from a Patroni-style YAML file by the real configuration loader, with its real
//! REST router answering peers and the operator in-process. Only its world is simulated,
//! through the agent's own interfaces (`pgherd_agent::world`): PostgreSQL servers with WAL
//! histories, timelines and replication slots (`pg`, `wal`, `sim_pg`), pgherd's in-memory
//! DCS with etcd's semantics and leases counted in virtual time behind a network that delays,
//! loses and cuts (`sim_dcs`), the members' REST APIs across that network (`sim_peers`), a
//! client committing on whatever is writable (`replication`), and seeded random faults and
//! what users do (`faults`): REST commands (switchover, failover, restart, reinitialize,
//! reload), maintenance mode with a switchover in it, `PATCH /config` edits of the timing and
//! of `maximum_lag_on_failover`, slow or refusing `pre_promote` scripts, callbacks (recorded),
//! slow PostgreSQL stops and starts, and a `pgherd proxy` registration that follows the
//! leader late (the agents' proxy fencing). Everything runs as tasks of one single-threaded tokio runtime
//! with paused time (`run`), so a run is a pure function of its seed and takes milliseconds.
//!
//! The checker (`checker`) runs after every change: no two writable primaries; a writable node
//! is the one the leader key names; a promotion is never behind an eligible peer it could know
//! about; in synchronous mode no acknowledged commit is missing from a new primary; no two
//! data directories disagree under one timeline id; a leader that is alive and reaches the
//! DCS keeps its lease; a command answered as successful did what it promised; the former
//! leader of a switchover never promotes while another member could take over; a member
//! promotes while a proxy still routes writes elsewhere only after `proxy_fencing_timeout`;
//! a leader that promoted ran `on_role_change`; and once faults stop, one leader with every
//! other member streaming from it within a bound (see [`Invariant`]).
//!
//! Open defects of the real system are reported, each with a test (ignored until fixed);
//! bulk runs may work around them by modelling the proposed fix ([`Workarounds`]), so that
//! they keep looking for other problems. Fixed defects have no workaround: a `regression_*`
//! test replays the seed that found each of them.
//!
//! `PGHERD_SIM_SEED=<seed> cargo test -p pgherd-sim --test schedules replay -- --nocapture`
//! replays one run with its event log.
//!
//! Modelling assumptions worth knowing (each marks a place where reality is fuzzier):
//! - A paused node's overdue fence fires at the instant it resumes, before a client commit
//!   reaches PostgreSQL. On real hardware both resume together and a commit can slip into the
//!   few milliseconds before `pg_ctl stop -m immediate` lands; only a watchdog (or synchronous
//!   replication) closes that window. `Options::resume_fence_latency` models it.
//! - A stop makes PostgreSQL refuse writes at once; the postmaster exits after a delay. A fast
//!   stop of a primary first sends all its WAL to the standbys streaming from it (the WAL
//!   senders drain before exiting); an immediate stop or a kill sends nothing more.
//! - A replica streams only from an upstream whose WAL history contains all of its own and
//!   that has the slot it asks for; a standby that cannot keeps running and retrying, as
//!   PostgreSQL does.
//! - A node crash during pg_basebackup/initdb leaves a data directory without pg_control
//!   (the engine then refuses to touch it); a crash during pg_rewind leaves it as it was.
//! - Agent-only crashes (PostgreSQL left running without agent or fence) are opt-in: no agent
//!   design survives them without a watchdog.

#![forbid(unsafe_code)]

mod checker;
mod config;
mod faults;
mod log;
mod node;
mod pg;
mod prebuilt;
mod replication;
mod rng;
mod run;
mod sim_dcs;
mod sim_peers;
mod sim_pg;
mod wal;
mod world;

pub use checker::{Invariant, Violation};
pub use config::{
    ClusterSpec, Fault, FaultKind, NodeSpec, Options, PlantedBug, Schedule, Who, Workarounds,
};
pub use log::{fmt_time, Log};
pub use world::{Outcome, Stats};

/// Simulated milliseconds.
pub type Time = u64;

/// Runs one schedule to the end (convergence after the faults, or the first violation).
pub fn run(schedule: Schedule, opts: Options) -> Outcome {
    run::run(schedule, opts)
}

/// Runs the random schedule of `seed`.
pub fn run_seed(seed: u64, opts: &Options) -> Outcome {
    run(Schedule::random(seed, opts), opts.clone())
}

/// The command that replays `seed` with its full event log, with the same [`Workarounds`].
pub fn replay_command(seed: u64, workarounds: &Workarounds) -> String {
    let off = workarounds.disabled();
    let env = if off.is_empty() {
        String::new()
    } else {
        format!("PGHERD_SIM_WITHOUT={} ", off.join(","))
    };
    format!("{env}PGHERD_SIM_SEED={seed} cargo test -p pgherd-sim --test schedules replay -- --nocapture")
}

/// A failing seed, re-run with the event log for the report.
pub fn failure_report(seed: u64, opts: &Options, log_lines: usize) -> String {
    let mut opts = opts.clone();
    opts.log = true;
    let outcome = run_seed(seed, &opts);
    let verdict = outcome.violation.as_ref().map_or_else(
        || "no violation on replay?!".to_string(),
        ToString::to_string,
    );
    format!(
        "{verdict}\nreplay: {}\nschedule: {:?}\n--- last {log_lines} events ---\n{}",
        replay_command(seed, &opts.workarounds),
        Schedule::random(seed, &opts).faults,
        outcome.log.tail(log_lines)
    )
}
