//! Executing a decision (crates/agent/src/execute.rs). Actions run in order; an action that
//! fails, or a lock operation answering "no", skips the rest of the decision. Quick actions
//! finish within the cycle; DCS calls and the PostgreSQL operations the agent awaits (promote,
//! stop) suspend the cycle until they finish; long ones become background tasks (tasks.rs).

use crate::agent::{self, Wait};
use crate::calls::Owner;
use crate::checker;
use crate::dcs::{DcsOp, DcsReply};
use crate::pg::StopMode;
use crate::tasks::{spawn, Plan};
use crate::wal::Wal;
use crate::world::{Ev, Host, PgStep, World};
use crate::Time;
use pgherd_dcs::{Failover, HistoryEntry, Role, SyncState};
use pgherd_ha::{Action, AsyncAction, DataDir, DemoteMode, StartRole};

enum Step {
    Next,
    Stop,
    Wait,
}

pub(crate) fn run(w: &mut World, n: usize) {
    loop {
        let Some(cy) = agent::cycle(w, n) else { return };
        let Some(action) = cy.decision.actions.get(cy.idx).cloned() else {
            agent::after_actions(w, n);
            return;
        };
        let step = begin(w, n, &action);
        if !advance(w, n, step) {
            return;
        }
    }
}

/// Applies a step's verdict; `true` when the next action should start now.
fn advance(w: &mut World, n: usize, step: Step) -> bool {
    match step {
        Step::Next => {
            let Some(cy) = agent::cycle(w, n) else {
                return false;
            };
            cy.idx += 1;
            cy.sub = 0;
            cy.wait = Wait::None;
            true
        }
        Step::Stop => {
            agent::after_actions(w, n);
            false
        }
        Step::Wait => false,
    }
}

fn resume(w: &mut World, n: usize, step: Step) {
    if advance(w, n, step) {
        run(w, n);
    }
}

fn wait_call(w: &mut World, n: usize, op: DcsOp) -> Step {
    let id = crate::calls::start_call(w, n, Owner::Cycle, op);
    if let Some(cy) = agent::cycle(w, n) {
        cy.wait = Wait::Call(id);
    }
    Step::Wait
}

fn wait_until(w: &mut World, n: usize, at: Time) -> Step {
    let token = w.id();
    let ae = w.nodes[n].ae;
    if let Some(cy) = agent::cycle(w, n) {
        cy.wait = Wait::Cont(token);
    }
    w.at(at, Host::Node(n), Ev::Cont { ae, token });
    Step::Wait
}

fn current(w: &mut World, n: usize) -> Option<Action> {
    let cy = agent::cycle(w, n)?;
    cy.decision.actions.get(cy.idx).cloned()
}

fn begin(w: &mut World, n: usize, action: &Action) -> Step {
    match action {
        Action::Bootstrap => wait_call(w, n, DcsOp::InitializeCreate),
        Action::WriteInitialize { sysid } => wait_call(w, n, DcsOp::InitializePut(sysid.clone())),
        Action::Clone { source, upstream } => {
            spawn(
                w,
                n,
                AsyncAction::Clone,
                Plan::Clone {
                    source: source.clone(),
                    upstream: upstream.clone(),
                },
            );
            Step::Next
        }
        Action::AcquireLock | Action::RenewLock => {
            let now = w.now;
            if let Some(cy) = agent::cycle(w, n) {
                cy.sent = now;
            }
            let op = if *action == Action::AcquireLock {
                DcsOp::AcquireLeader
            } else {
                DcsOp::UpdateLeader
            };
            wait_call(w, n, op)
        }
        Action::ReleaseLock => wait_call(w, n, DcsOp::DeleteLeader),
        Action::StartPostgres(role) => {
            let upstream = match role {
                StartRole::Primary => None,
                StartRole::Replica { upstream } => Some(upstream.clone().unwrap_or_default()),
            };
            spawn(w, n, AsyncAction::Start, Plan::Start { upstream });
            Step::Next
        }
        Action::Promote => {
            // proxy_fence::wait reads the DCS once (no proxies here) when a former leader is
            // known; on a DCS error it gives up after retry_timeout and promotes anyway.
            let known = w.nodes[n]
                .agent
                .as_ref()
                .is_some_and(|a| a.last_known_leader.is_some());
            if known {
                return wait_call(w, n, DcsOp::GetCluster);
            }
            promote_now(w, n)
        }
        Action::Demote(mode) => demote(w, n, *mode),
        Action::Follow { upstream } => {
            // Rewrite primary_conninfo and reload (a reload needs a running server).
            let sync = crate::observe::sync_param(w, n);
            let pg = &mut w.nodes[n].pg;
            if pg.upstream.as_deref() != Some(upstream.as_str()) {
                pg.streaming_from = None;
            }
            pg.upstream = Some(upstream.clone());
            pg.sync_conf = sync;
            if !pg.running {
                return Step::Stop;
            }
            pg.reload_sync();
            if let Some(a) = w.nodes[n].agent.as_mut() {
                a.upstream = Some(upstream.clone());
            }
            Step::Next
        }
        Action::Rewind { source } => {
            spawn(
                w,
                n,
                AsyncAction::Rewind,
                Plan::Rewind {
                    source: source.clone(),
                },
            );
            Step::Next
        }
        Action::Reinitialize { source } => {
            let upstream = agent::cycle(w, n)
                .and_then(|c| c.cluster.as_ref())
                .and_then(|c| c.leader_name().map(str::to_string))
                .unwrap_or_else(|| source.clone());
            let pg = &mut w.nodes[n].pg;
            pg.data = DataDir::Empty;
            pg.wal = Wal::default();
            spawn(
                w,
                n,
                AsyncAction::Reinitialize,
                Plan::Clone {
                    source: source.clone(),
                    upstream,
                },
            );
            Step::Next
        }
        Action::PublishLeaderState => publish(w, n, None),
        Action::ClearFailover { index } => wait_call(
            w,
            n,
            DcsOp::SetFailover {
                value: Failover::default(),
                index: Some(*index),
            },
        ),
        Action::SetSynchronousStandbys { names, strict } => {
            let count = w.nodes[n].settings.synchronous_node_count;
            let value = standby_names_value(names, *strict, count);
            if let Some(a) = w.nodes[n].agent.as_mut() {
                a.sync_standby_names = Some(value.clone());
            }
            let conf = crate::observe::sync_param(w, n);
            let pg = &mut w.nodes[n].pg;
            let changed = pg.sync_conf != conf;
            pg.sync_conf = conf;
            if changed {
                if !pg.running {
                    return Step::Stop;
                }
                pg.reload_sync();
                w.say(n, || format!("synchronous_standby_names = '{value}'"));
                w.release(n);
            }
            Step::Next
        }
        Action::WriteSync { standbys, index } => {
            let value = SyncState::new(&w.nodes[n].name, standbys);
            wait_call(
                w,
                n,
                DcsOp::SetSync {
                    value,
                    index: *index,
                },
            )
        }
        Action::DeleteSync { index } => wait_call(w, n, DcsOp::DeleteSync { index: *index }),
        Action::Fatal { message } => {
            let message = message.clone();
            checker::violate(
                w,
                checker::Invariant::UnexpectedFatal,
                format!("{} stopped with a fatal error: {message}", w.nodes[n].name),
            );
            Step::Stop
        }
    }
}

/// A DCS call the cycle waited for has finished (`None`: not within retry_timeout).
pub(crate) fn on_call_done(w: &mut World, n: usize, id: u64, result: Option<DcsReply>) {
    if agent::cycle(w, n).map(|c| c.wait) != Some(Wait::Call(id)) {
        return;
    }
    let Some(action) = current(w, n) else { return };
    let step = match action {
        Action::Bootstrap => match result {
            Some(DcsReply::Bool(true)) => {
                spawn(w, n, AsyncAction::Bootstrap, Plan::Bootstrap);
                Step::Next
            }
            _ => Step::Stop,
        },
        Action::AcquireLock => match result {
            Some(DcsReply::Bool(true)) => {
                let sent = agent::cycle(w, n).map_or(0, |c| c.sent);
                agent::set_lock_confirmed(w, n, Some(sent));
                checker::on_lock_won(w, n);
                Step::Next
            }
            _ => Step::Stop,
        },
        Action::RenewLock => match result {
            Some(DcsReply::Bool(true)) => {
                let sent = agent::cycle(w, n).map_or(0, |c| c.sent);
                agent::set_lock_confirmed(w, n, Some(sent));
                Step::Next
            }
            Some(DcsReply::Bool(false)) => {
                agent::set_lock_confirmed(w, n, None);
                w.say(n, || "the leader lock is no longer ours".into());
                Step::Stop
            }
            _ => Step::Stop,
        },
        Action::ReleaseLock => match result {
            Some(_) => {
                agent::set_lock_confirmed(w, n, None);
                Step::Next
            }
            None => Step::Stop,
        },
        Action::Demote(mode) => {
            if result.is_none() {
                Step::Stop
            } else {
                demote(w, n, mode)
            }
        }
        Action::PublishLeaderState => publish(w, n, Some(result.is_some())),
        Action::Promote => promote_now(w, n),
        Action::WriteSync { .. } => match result {
            Some(DcsReply::Bool(true)) => Step::Next,
            _ => Step::Stop,
        },
        Action::DeleteSync { .. } => {
            if result.is_some() {
                Step::Next
            } else {
                Step::Stop
            }
        }
        Action::ClearFailover { .. } | Action::WriteInitialize { .. } => {
            if result.is_some() {
                Step::Next
            } else {
                Step::Stop
            }
        }
        _ => Step::Stop,
    };
    resume(w, n, step);
}

/// A PostgreSQL operation the cycle awaited should be done (or a shutdown step).
pub(crate) fn on_cont(w: &mut World, n: usize, token: u64) {
    if crate::shutdown::is_token(w, n, token) {
        crate::shutdown::next_step(w, n);
        return;
    }
    if agent::cycle(w, n).map(|c| c.wait) != Some(Wait::Cont(token)) {
        return;
    }
    let Some(action) = current(w, n) else { return };
    let step = match action {
        Action::Promote => {
            let sync = crate::observe::sync_param(w, n);
            let pg = &mut w.nodes[n].pg;
            if pg.running && pg.accepting && !pg.in_recovery {
                // The configuration is rewritten as a primary (no reload).
                pg.sync_conf = sync;
                if let Some(a) = w.nodes[n].agent.as_mut() {
                    a.upstream = None;
                    a.role = Role::Primary;
                }
                Step::Next
            } else {
                w.say(n, || "pg_ctl promote failed".into());
                Step::Stop
            }
        }
        Action::Demote(mode) => demote(w, n, mode),
        _ => Step::Stop,
    };
    resume(w, n, step);
}

/// `pg_ctl promote -W`: wait until the server left recovery.
fn promote_now(w: &mut World, n: usize) -> Step {
    if !w.nodes[n].pg.begin_promote() {
        w.say(n, || "pg_ctl promote failed: not a running standby".into());
        return Step::Stop;
    }
    let at = w.now + w.rng.range(100, 600);
    let epoch = w.nodes[n].pg.epoch;
    w.at(
        at,
        Host::Node(n),
        Ev::Pg {
            epoch,
            step: PgStep::Promoted,
        },
    );
    wait_until(w, n, at)
}

/// execute.rs `standby_names_value`.
fn standby_names_value(names: &[String], strict: bool, count: usize) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    match quoted.len() {
        0 if strict => "*".to_string(),
        0 => String::new(),
        1 => quoted[0].clone(),
        k => format!("{} ({})", count.clamp(1, k), quoted.join(",")),
    }
}

/// Demotion (execute.rs `demote`): stop, then release the key for the modes that do, then
/// (Offline) start again as a standby without upstream. `sub` counts the steps done.
fn demote(w: &mut World, n: usize, mode: DemoteMode) -> Step {
    let Some(sub) = agent::cycle(w, n).map(|c| c.sub) else {
        return Step::Stop;
    };
    if let Some(cy) = agent::cycle(w, n) {
        cy.sub += 1;
    }
    match sub {
        0 => {
            let stop = if mode.fast_stop() {
                StopMode::Fast
            } else {
                StopMode::Immediate
            };
            match w.stop_pg(n, stop) {
                Some(exit) => wait_until(w, n, exit),
                None => demote(w, n, mode),
            }
        }
        1 if mode.releases_lock() => wait_call(w, n, DcsOp::DeleteLeader),
        1 if mode == DemoteMode::Offline => {
            agent::set_lock_confirmed(w, n, None);
            spawn(
                w,
                n,
                AsyncAction::Start,
                Plan::Start {
                    upstream: Some(String::new()),
                },
            );
            demoted(w, n, mode)
        }
        _ => demoted(w, n, mode),
    }
}

fn demoted(w: &mut World, n: usize, mode: DemoteMode) -> Step {
    if mode != DemoteMode::Offline {
        agent::set_lock_confirmed(w, n, None);
    }
    if let Some(a) = w.nodes[n].agent.as_mut() {
        a.was_running = false;
        a.role = Role::Demoted;
    }
    w.say(n, || format!("demoted ({mode:?})"));
    Step::Next
}

/// leader.rs `publish`: `status` if changed (an error fails the action), then `history`
/// after a promotion (errors only logged). `done`: the previous call finished (ok or not).
fn publish(w: &mut World, n: usize, done: Option<bool>) -> Step {
    let Some(sub) = agent::cycle(w, n).map(|c| c.sub) else {
        return Step::Stop;
    };
    if let Some(cy) = agent::cycle(w, n) {
        cy.sub += 1;
    }
    let Some((cluster, local)) = agent::cycle(w, n).and_then(|c| {
        let cluster = c.cluster.clone()?;
        Some((cluster, c.local.clone()))
    }) else {
        return Step::Stop;
    };
    match sub {
        0 => {
            if cluster.optime() != Some(local.wal_position) {
                return wait_call(w, n, DcsOp::WriteStatus(local.wal_position));
            }
            publish(w, n, Some(true))
        }
        1 => {
            if done == Some(false) {
                return Step::Stop;
            }
            let stored: Vec<HistoryEntry> = cluster
                .history
                .as_ref()
                .map(|h| h.value.clone())
                .unwrap_or_default();
            if local.timeline <= 1 {
                if !stored.is_empty() {
                    return wait_call(w, n, DcsOp::SetHistory(Vec::new()));
                }
                return Step::Next;
            }
            if stored
                .last()
                .is_some_and(|e| e.timeline + 1 >= local.timeline)
            {
                return Step::Next;
            }
            let name = w.nodes[n].name.clone();
            let switches = w.nodes[n].pg.wal.switches();
            let count = switches.len();
            let entries = switches
                .into_iter()
                .enumerate()
                .map(|(i, (timeline, switch_lsn))| {
                    let known = stored.iter().find(|s| s.timeline == timeline);
                    let newest = i + 1 == count;
                    HistoryEntry {
                        timeline,
                        switch_lsn,
                        reason: "no recovery target specified".into(),
                        timestamp: if newest {
                            Some(format!("t={}", w.now))
                        } else {
                            known.and_then(|k| k.timestamp.clone())
                        },
                        new_leader: if newest {
                            Some(name.clone())
                        } else {
                            known.and_then(|k| k.new_leader.clone())
                        },
                    }
                })
                .collect();
            wait_call(w, n, DcsOp::SetHistory(entries))
        }
        _ => Step::Next,
    }
}
