//! DCS calls of one agent process, as crates/dcs/src/etcd.rs makes them: every operation
//! has a budget of `retry_timeout`; each try has its own deadline (`request_timeout`); a lost
//! request or reply costs the whole try, then a backoff. etcd applies a request atomically
//! when it arrives, whatever became of the client meanwhile.

use crate::agent::{after_read, after_touch, agent, Phase};
use crate::dcs::{DcsOp, DcsReply};
use crate::world::{Ev, Host, World};
use crate::{actions, shutdown, Time};

/// The etcd client's first and longest pause between two tries of one operation.
const FIRST_BACKOFF: Time = 50;
const MAX_BACKOFF: Time = 500;
/// Below this much remaining budget the etcd client gives up.
const MIN_RETRY_WINDOW: Time = 100;
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
        Some(d) => {
            w.after(
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
            );
            if now + d > timeout_at {
                // The client gives up before the request even reaches etcd (which may still
                // apply it).
                w.at(
                    timeout_at,
                    Host::Node(n),
                    Ev::CallTimeout {
                        ae,
                        call: id,
                        attempt,
                    },
                );
            }
        }
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
    // Arrived after the client's deadline: its timeout is already scheduled (send_attempt).
    let late = w.now > timeout_at;
    if !w.dcs_reachable(n) {
        if !late {
            w.at(
                timeout_at,
                Host::Node(n),
                Ev::CallTimeout { ae, call, attempt },
            );
        }
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
        _ if late => {}
        _ => w.at(
            timeout_at,
            Host::Node(n),
            Ev::CallTimeout { ae, call, attempt },
        ),
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
        Owner::Task(task) => crate::tasks::task_call_done(w, n, task, result),
        Owner::Shutdown => shutdown::next_step(w, n),
    }
}
