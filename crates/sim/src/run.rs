//! One run: a single-threaded tokio runtime with paused time (it jumps to the next timer
//! whenever every task waits, so a run takes milliseconds of real time and is a pure function
//! of its seed), the world's processes as tasks, and the phases: bootstrap, faults, quiet.

use crate::checker::{self, Invariant};
use crate::config::{Options, Schedule};
use crate::world::{lock, Outcome, Phase, Shared, World};
use crate::{faults, node, replication, Time};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the converged state must hold before a run counts as settled.
const STABLE_FOR: Time = 3_000;
/// A run that has not ended by then is stuck.
const MAX_RUN: Time = 900_000;

pub fn run(schedule: Schedule, opts: Options) -> Outcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("the simulation needs a tokio runtime: {e}"),
    };
    // The world's clock starts inside the runtime, on its virtual time.
    let world: Shared =
        runtime.block_on(async { Arc::new(Mutex::new(World::new(schedule, opts))) });
    lock(&world).me = Arc::downgrade(&world);
    runtime.block_on(drive(&world));
    // The end time on the virtual clock, read inside the runtime.
    let end = runtime.block_on(async { lock(&world).now() });
    // Every task (agents, PostgreSQL, network) ends with the runtime.
    drop(runtime);
    let outcome = lock(&world).finish(end);
    outcome
}

async fn drive(world: &Shared) {
    let (nodes, prebuilt) = {
        let w = lock(world);
        (w.nodes.len(), w.schedule.prebuilt)
    };
    if prebuilt {
        crate::prebuilt::prebuild(world).await;
    }
    for n in 0..nodes {
        let delay = lock(world).rng.range(0, 300);
        node::start_agent(world, n, delay);
        replication::spawn_streaming(world, n);
    }
    replication::spawn_client(world);
    spawn_lease_expiry(world);
    spawn_convergence(world);
    let done = lock(world).done.clone();
    tokio::select! {
        biased;
        () = done.notified() => {}
        () = tokio::time::sleep(Duration::from_millis(MAX_RUN)) => {
            let mut w = lock(world);
            w.violate(
                Invariant::Convergence,
                format!("the run did not end within {} s", MAX_RUN / 1000),
            );
        }
    }
}

/// etcd counts down leases: keys of a lease not kept alive within its ttl vanish.
fn spawn_lease_expiry(world: &Shared) {
    let world = world.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut w = lock(&world);
            if w.leases_frozen {
                continue;
            }
            let leader = w.leader_name();
            let expired = w.store.expire_due(tokio::time::Instant::now());
            if expired.is_empty() {
                continue;
            }
            for member in &expired {
                let m = member.clone();
                w.say_world(|| format!("DCS: a lease of {m} expired; its keys are gone"));
            }
            w.notify_watchers();
            if let Some(l) = leader.filter(|_| w.leader_name().is_none()) {
                let now = w.now();
                w.stats.leader_key_expired.push((now, l.clone()));
                checker::on_leader_lease_expired(&mut w, &l);
            }
            w.changed();
        }
    });
}

/// Every 500 ms: has the cluster converged (one leader, every member streaming from it)?
/// Bootstrap converged -> the faults begin; quiet after the faults and converged -> done.
fn spawn_convergence(world: &Shared) {
    let world = world.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let begin_faults = converge_step(&mut lock(&world));
            if begin_faults {
                faults::begin(&world);
            }
        }
    });
}

/// One convergence check; returns whether the faults must begin now.
fn converge_step(w: &mut World) -> bool {
    let now = w.now();
    let mut verdict = checker::converged(w);
    if let (Phase::Bootstrap { .. }, Ok(l)) = (w.phase, &verdict) {
        let l = *l;
        let sync_ready = !w.nodes[l].settings.synchronous_mode
            || w.store
                .get(&w.layout.sync())
                .and_then(|v: String| serde_json::from_str::<pgherd_dcs::SyncState>(&v).ok())
                .is_some_and(|s| {
                    s.leader.as_deref() == Some(w.nodes[l].name.as_str())
                        && !s.standbys().is_empty()
                });
        if !sync_ready {
            verdict = Err("synchronous replication not established yet".into());
        }
    }
    let mut begin_faults = false;
    match verdict {
        Ok(_) => {
            let since = *w.converged_since.get_or_insert(now);
            let stable_for = if matches!(w.phase, Phase::Bootstrap { .. }) {
                STABLE_FOR / 2
            } else {
                STABLE_FOR
            };
            if now - since >= stable_for {
                match w.phase {
                    Phase::Bootstrap { .. } => {
                        w.stats.bootstrapped_at = since;
                        w.say_world(|| "cluster bootstrapped and converged: faults begin".into());
                        w.converged_since = None;
                        begin_faults = true;
                    }
                    Phase::Quiet { since: quiet, .. } => {
                        let after = since.saturating_sub(quiet);
                        w.stats.converged_after_faults = Some(after);
                        w.say_world(|| {
                            format!(
                                "converged {} after the last fault",
                                crate::log::fmt_time(after)
                            )
                        });
                        w.phase = Phase::Done;
                        w.done.notify_one();
                    }
                    Phase::Faults { .. } | Phase::Done => {}
                }
            }
        }
        Err(why) => {
            w.converged_since = None;
            match w.phase {
                Phase::Bootstrap { deadline } if now >= deadline => {
                    w.violate(
                        Invariant::Convergence,
                        format!(
                            "the new cluster did not bootstrap within {} s: {why}",
                            deadline / 1000
                        ),
                    );
                }
                Phase::Quiet { since, deadline } if now >= deadline => {
                    w.violate(
                        Invariant::Convergence,
                        format!(
                            "not converged {} s after the last fault ended (at {}): {why}",
                            (deadline - since) / 1000,
                            crate::log::fmt_time(since)
                        ),
                    );
                    w.phase = Phase::Done;
                    w.done.notify_one();
                }
                _ => {}
            }
        }
    }
    if let Phase::Faults { end } = w.phase {
        if now >= end {
            let deadline = now + w.schedule.converge_bound;
            w.phase = Phase::Quiet {
                since: now,
                deadline,
            };
            w.converged_since = None;
            w.say_world(|| "all faults are over".into());
        }
    }
    begin_faults
}
