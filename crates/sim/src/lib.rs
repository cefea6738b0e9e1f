//! Deterministic simulation of the pgherd HA engine.
//!
//! The real engine (`pgherd_ha::Engine`) runs unchanged inside simulated agents that follow
//! crates/agent's semantics (action order and "stop at the first failure", background tasks,
//! lock confirmation on the send time, the independent fence timer, the REST snapshot that
//! peers probe, watch wake-ups, the etcd client's retries). Around them: a simulated etcd
//! with leases in simulated time, simulated PostgreSQL servers with WAL histories and
//! timelines, a client that commits on whatever is writable, and seeded random faults.
//! The checker runs after every event: no two writable primaries; a writable node is the one
//! the leader key names; a promotion is never behind an eligible peer it could know about; in
//! synchronous mode no acknowledged commit is missing from a new primary; no two data
//! directories disagree under one timeline id; and once faults stop, one leader with every
//! other member streaming from it within a bound (see [`Invariant`]).
//!
//! Open defects of the real system are reported, each with a test (ignored until fixed);
//! bulk runs may work around them by modelling the proposed fix ([`Workarounds`]), so that
//! they keep looking for other problems. Fixed defects have no workaround: the simulator
//! runs the real fix (the engine's election, sync and restart rules, and
//! `pgherd_ha::diverged`, which the agent shares), and a `regression_*` test replays the seed
//! that found each of them.
//!
//! Modules: `world` (event loop), `events`, `dcs` (etcd model), `pg` + `wal` (PostgreSQL
//! model), `replication` (streaming, synchronous commit, the client), `agent` (HA loop and
//! fence), `calls` (DCS client), `observe`, `actions`, `tasks`, `shutdown`, `faults`,
//! `checker`, `prebuilt`, `log`, `rng`.
//!
//! A run is a pure function of its seed (own splitmix64 PRNG, no clocks, no hashing order):
//! `PGHERD_SIM_SEED=<seed> cargo test -p pgherd-sim replay -- --nocapture` replays one.
//!
//! Modelling assumptions worth knowing (each marks a place where reality is fuzzier):
//! - A paused node's overdue fence fires at the instant it resumes, before a client commit
//!   reaches PostgreSQL. On real hardware both resume together and a commit can slip into the
//!   few milliseconds before `pg_ctl stop -m immediate` lands; only a watchdog (or synchronous
//!   replication) closes that window. `Options::resume_fence_latency` models it.
//! - A stop makes PostgreSQL refuse writes at once; the postmaster exits after a delay.
//! - A lease keepalive and the write that follows it reach etcd as one request.
//! - A replica streams only from an upstream whose WAL history contains all of its own; a
//!   standby that cannot (diverged) keeps running and retrying, as PostgreSQL does.
//! - A node crash during pg_basebackup/initdb leaves a data directory without pg_control
//!   (the engine then refuses to touch it); a crash during pg_rewind leaves it as it was.
//! - Agent-only crashes (PostgreSQL left running without agent or fence) are opt-in: no agent
//!   design survives them without a watchdog.

mod actions;
mod agent;
mod calls;
mod checker;
mod config;
mod dcs;
mod events;
mod faults;
mod log;
mod observe;
mod pg;
mod prebuilt;
mod replication;
mod rng;
mod shutdown;
mod tasks;
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
    world::World::new(schedule, opts).run()
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
