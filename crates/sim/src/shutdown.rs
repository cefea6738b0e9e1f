//! SIGTERM (shutdown.rs): the signal is only seen while the loop sleeps. Stop PostgreSQL
//! (fast); if we held the lock, write the checkpoint optime and delete the leader key; publish
//! the member as stopped; exit.

use crate::agent::{agent, set_lock_confirmed, Phase};
use crate::calls::{start_call, Owner};
use crate::dcs::DcsOp;
use crate::observe::member_data;
use crate::pg::StopMode;
use crate::world::{Ev, Host, World};
use pgherd_ha::{DataDir, LocalPg};

pub(crate) fn request(w: &mut World, n: usize) {
    let Some(a) = agent(w, n) else { return };
    a.shutdown_requested = true;
    if matches!(a.phase, Phase::Sleeping { .. }) {
        begin(w, n);
    }
}

pub(crate) fn begin(w: &mut World, n: usize) {
    w.say(n, || "agent: SIGTERM, shutting down".into());
    let paused = agent(w, n)
        .and_then(|a| a.last_cluster.as_ref())
        .is_some_and(|c| c.is_paused());
    if let Some(task) = agent(w, n).and_then(|a| a.task.take()) {
        crate::tasks::abandon_task(w, n, &task);
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
        None => next_step(w, n),
    }
}

/// The next shutdown step, after PostgreSQL stopped or a DCS call finished (sequential, as
/// shutdown.rs awaits each one).
pub(crate) fn next_step(w: &mut World, n: usize) {
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

pub(crate) fn is_token(w: &World, n: usize, token: u64) -> bool {
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
