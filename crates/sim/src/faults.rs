//! Applying the fault schedule: crashes, restarts, pauses, DCS outages, slow networks.

use crate::agent;
use crate::config::{FaultKind, Who};
use crate::world::{Ev, Host, Phase, Queued, World};

#[derive(Debug, Clone, Copy)]
pub(crate) enum FaultEvent {
    Start(usize),
    End { fault: usize, node: Option<usize> },
}

/// The cluster converged after bootstrap: queue every fault relative to now.
pub(crate) fn begin(w: &mut World) {
    let t0 = w.now;
    let mut end = t0;
    for i in 0..w.schedule.faults.len() {
        let f = &w.schedule.faults[i];
        end = end.max(t0 + f.at + f.kind.span());
        let at = t0 + f.at;
        w.at(at, Host::Global, Ev::Fault(FaultEvent::Start(i)));
    }
    w.phase = Phase::Faults { end };
}

fn resolve(w: &World, who: Who) -> usize {
    let leader = w
        .dcs
        .leader
        .as_ref()
        .and_then(|l| w.index_of(&l.name))
        .or_else(|| (0..w.nodes.len()).find(|&i| w.nodes[i].pg.writable()))
        .unwrap_or(0);
    match who {
        Who::Leader => leader,
        Who::Node(i) => i % w.nodes.len(),
        Who::Replica(k) => {
            let others: Vec<usize> = (0..w.nodes.len()).filter(|&i| i != leader).collect();
            others.get(k % others.len().max(1)).copied().unwrap_or(0)
        }
    }
}

pub(crate) fn apply(w: &mut World, ev: FaultEvent) {
    match ev {
        FaultEvent::Start(i) => start(w, i),
        FaultEvent::End { fault, node } => end(w, fault, node),
    }
}

fn end_at(w: &mut World, fault: usize, node: Option<usize>, after: u64) {
    w.after(
        after,
        Host::Global,
        Ev::Fault(FaultEvent::End { fault, node }),
    );
}

fn start(w: &mut World, i: usize) {
    let kind = w.schedule.faults[i].kind.clone();
    w.stats.faults_applied += 1;
    match kind {
        FaultKind::PgCrash(who) => {
            let n = resolve(w, who);
            if !w.frozen(n) && w.nodes[n].pg.running {
                w.say(n, || "FAULT: postgres killed (kill -9)".into());
                w.nodes[n].pg.crash();
                w.release(n);
            }
        }
        FaultKind::NodeCrash { who, down_for } => {
            let n = resolve(w, who);
            if w.nodes[n].down_by.is_none() {
                w.say(n, || {
                    format!("FAULT: node crashed (down for {down_for} ms)")
                });
                crash_node(w, n);
                w.nodes[n].down_by = Some(i);
                end_at(w, i, Some(n), down_for);
            }
        }
        FaultKind::NodeRestart { who, down_for } => {
            let n = resolve(w, who);
            let node = &w.nodes[n];
            if node.down_by.is_none() && node.agent.is_some() && node.frozen_by.is_none() {
                w.say(n, || {
                    format!("FAULT: agent stopped with SIGTERM (restart in {down_for} ms)")
                });
                w.nodes[n].down_by = Some(i);
                crate::shutdown::request(w, n);
                end_at(w, i, Some(n), down_for);
            }
        }
        FaultKind::Pause { who, dur } => {
            let n = resolve(w, who);
            let node = &w.nodes[n];
            if node.frozen_by.is_none() && node.down_by.is_none() {
                w.say(n, || format!("FAULT: node paused (SIGSTOP) for {dur} ms"));
                w.nodes[n].frozen_by = Some(i);
                end_at(w, i, Some(n), dur);
            }
        }
        FaultKind::DcsOutage {
            dur,
            leases_survive,
        } => {
            w.say_world(|| {
                format!("FAULT: DCS unreachable for everyone for {dur} ms (leases survive: {leases_survive})")
            });
            w.dcs_outages += 1;
            if leases_survive {
                w.dcs.leases_frozen = true;
            }
            end_at(w, i, None, dur);
        }
        FaultKind::DcsCut { who, dur } => {
            let n = resolve(w, who);
            w.say(n, || {
                format!("FAULT: DCS unreachable from this node for {dur} ms")
            });
            w.nodes[n].dcs_cut += 1;
            end_at(w, i, Some(n), dur);
        }
        FaultKind::SlowNet {
            who,
            dur,
            max_delay,
            loss_permille,
        } => {
            let n = resolve(w, who);
            w.say(n, || {
                format!("FAULT: slow network for {dur} ms (delays up to {max_delay} ms, {loss_permille}‰ lost)")
            });
            w.nodes[n].slow = Some((max_delay, loss_permille));
            end_at(w, i, Some(n), dur);
        }
        FaultKind::ReplicaLag { who, dur } => {
            let n = resolve(w, who);
            w.say(n, || format!("FAULT: WAL streaming slowed for {dur} ms"));
            w.nodes[n].lagging += 1;
            end_at(w, i, Some(n), dur);
        }
        FaultKind::AgentCrash { who, down_for } => {
            let n = resolve(w, who);
            let node = &w.nodes[n];
            if node.down_by.is_none() && node.agent.is_some() && node.frozen_by.is_none() {
                w.say(n, || "FAULT: agent killed, postgres keeps running".into());
                kill_agent(w, n);
                w.nodes[n].down_by = Some(i);
                end_at(w, i, Some(n), down_for);
            }
        }
    }
}

fn end(w: &mut World, i: usize, node: Option<usize>) {
    let kind = w.schedule.faults[i].kind.clone();
    match (kind, node) {
        (FaultKind::NodeCrash { .. } | FaultKind::AgentCrash { .. }, Some(n))
            if w.nodes[n].down_by == Some(i) =>
        {
            w.nodes[n].down_by = None;
            w.say(n, || "node back: agent starts".into());
            let delay = w.rng.range(100, 500);
            agent::start_agent(w, n, delay);
        }
        (FaultKind::NodeRestart { .. }, Some(n)) if w.nodes[n].down_by == Some(i) => {
            if w.nodes[n].agent.is_some() {
                // Still shutting down.
                end_at(w, i, Some(n), 500);
            } else {
                w.nodes[n].down_by = None;
                agent::start_agent(w, n, 0);
            }
        }
        (FaultKind::Pause { .. }, Some(n)) if w.nodes[n].frozen_by == Some(i) => resume(w, n),
        (FaultKind::DcsOutage { leases_survive, .. }, _) => {
            w.dcs_outages = w.dcs_outages.saturating_sub(1);
            if leases_survive {
                w.dcs.leases_frozen = false;
                let ttl = w.schedule.cluster.ttl;
                w.dcs.refresh_leases(w.now, ttl);
            }
            w.say_world(|| "DCS reachable again".into());
        }
        (FaultKind::DcsCut { .. }, Some(n)) => {
            w.nodes[n].dcs_cut = w.nodes[n].dcs_cut.saturating_sub(1);
        }
        (FaultKind::SlowNet { .. }, Some(n)) => w.nodes[n].slow = None,
        (FaultKind::ReplicaLag { .. }, Some(n)) => {
            w.nodes[n].lagging = w.nodes[n].lagging.saturating_sub(1);
        }
        _ => {}
    }
}

/// Power loss: agent, fence and PostgreSQL die together; queued work is lost.
fn crash_node(w: &mut World, n: usize) {
    kill_agent(w, n);
    w.nodes[n].pg.crash();
    w.release(n);
    w.nodes[n].frozen_by = None;
    // Events of the dead processes are ignored by epoch; the WAL receiver tick must survive.
    for q in std::mem::take(&mut w.nodes[n].deferred) {
        w.requeue(q);
    }
}

fn kill_agent(w: &mut World, n: usize) {
    if let Some(task) = w.nodes[n].agent.as_mut().and_then(|a| a.task.take()) {
        crate::tasks::abandon_task(w, n, &task);
    }
    w.nodes[n].agent = None;
    w.nodes[n].ae += 1;
}

/// SIGCONT. Timers that expired during the pause fire at once; the fence's goes first: it
/// stops PostgreSQL before a client commit is served (see `Options::resume_fence_latency`).
fn resume(w: &mut World, n: usize) {
    w.nodes[n].frozen_by = None;
    let deferred = std::mem::take(&mut w.nodes[n].deferred);
    w.say(n, || {
        format!(
            "node resumed (SIGCONT), {} events were waiting",
            deferred.len()
        )
    });
    let latency = w.opts.resume_fence_latency;
    let mut rest = Vec::new();
    for q in deferred {
        match q.ev {
            Ev::Fence { ae, arm } if latency == 0 => {
                if w.nodes[n].ae == ae && w.nodes[n].agent.is_some() {
                    agent::on_fence(w, n, arm);
                }
            }
            Ev::Fence { ae, arm } => w.after(latency, Host::Node(n), Ev::Fence { ae, arm }),
            ev => rest.push(Queued { ev, ..q }),
        }
    }
    for q in rest {
        w.requeue(q);
    }
}
