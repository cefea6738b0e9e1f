//! Long actions the agent runs in the background (crates/agent/src/tasks.rs): bootstrap,
//! basebackup, start, pg_rewind, reinitialize. The HA loop keeps cycling meanwhile and sees
//! them as `in_progress`; a finished task is reaped at the start of the next cycle.

use crate::calls::Owner;
use crate::dcs::{DcsOp, DcsReply};
use crate::pg::Control;
use crate::wal::Wal;
use crate::world::{Ev, Host, World};
use pgherd_ha::{AsyncAction, DataDir};

#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Bootstrap,
    Clone { source: String, upstream: String },
    Start { upstream: Option<String> },
    Rewind { source: String },
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub ok: bool,
    pub message: String,
    pub upstream: Option<Option<String>>,
    pub rewind_failed: bool,
    pub data_changed: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub id: u64,
    pub kind: AsyncAction,
    pub plan: Plan,
    pub stage: u8,
    pub finished: Option<Outcome>,
    /// The parameters a task writes are the agent's at spawn time (`task_context`).
    pub sync_param: String,
}

pub(crate) fn spawn(w: &mut World, n: usize, kind: AsyncAction, plan: Plan) {
    let id = w.id();
    let ae = w.nodes[n].ae;
    let sync_param = crate::observe::sync_param(w, n);
    let Some(a) = w.nodes[n].agent.as_mut() else {
        return;
    };
    a.task = Some(Task {
        id,
        kind,
        plan: plan.clone(),
        stage: 0,
        finished: None,
        sync_param: sync_param.clone(),
    });
    let first = match &plan {
        Plan::Bootstrap => w.rng.range(1_500, 3_000),
        Plan::Clone { .. } => w.rng.range(1_000, 4_000),
        Plan::Rewind { .. } => w.rng.range(500, 2_000),
        Plan::Start { upstream } => {
            if w.nodes[n].pg.running {
                finish(w, n, id, fail("postgres is already running"));
                return;
            }
            w.nodes[n].pg.sync_conf = sync_param;
            let at = w.start_pg(n, upstream.clone());
            set_stage(w, n, 1);
            at - w.now
        }
    };
    w.after(first, Host::Node(n), Ev::TaskStep { ae, task: id });
}

fn set_stage(w: &mut World, n: usize, stage: u8) {
    if let Some(t) = w.nodes[n].agent.as_mut().and_then(|a| a.task.as_mut()) {
        t.stage = stage;
    }
}

fn fail(message: &str) -> Outcome {
    Outcome {
        ok: false,
        message: message.to_string(),
        ..Outcome::default()
    }
}

/// The source of a basebackup or pg_rewind must be up and answering.
fn source_ok(w: &World, name: &str) -> Option<usize> {
    let s = w.index_of(name)?;
    let pg = &w.nodes[s].pg;
    (!w.frozen(s) && pg.running && pg.accepting).then_some(s)
}

pub(crate) fn task_step(w: &mut World, n: usize, id: u64) {
    let Some(task) = w.nodes[n]
        .agent
        .as_ref()
        .and_then(|a| a.task.clone())
        .filter(|t| t.id == id && t.finished.is_none())
    else {
        return;
    };
    let ae = w.nodes[n].ae;
    match (&task.plan, task.stage) {
        (Plan::Bootstrap, 0) => {
            // initdb, then start as a primary.
            let content = w.content();
            let pg = &mut w.nodes[n].pg;
            pg.data = DataDir::Initialized {
                sysid: format!("7{:018}", 1_000_000_000 + w.schedule.seed % 1_000_000_000),
            };
            pg.wal = Wal::new_cluster(content);
            pg.control = Control::ShutDown;
            pg.sync_conf = task.sync_param.clone();
            let at = w.start_pg(n, None);
            set_stage(w, n, 1);
            w.at(at, Host::Node(n), Ev::TaskStep { ae, task: id });
        }
        (Plan::Bootstrap, 1) => {
            if !w.nodes[n].pg.accepting {
                bootstrap_failed(w, n, id);
                return;
            }
            let sysid = match &w.nodes[n].pg.data {
                DataDir::Initialized { sysid } => sysid.clone(),
                _ => String::new(),
            };
            set_stage(w, n, 2);
            crate::calls::start_call(w, n, Owner::Task(id), DcsOp::BootstrapTail { sysid });
        }
        (Plan::Clone { source, upstream }, 0) => {
            let Some(s) = source_ok(w, source) else {
                w.nodes[n].pg.data = DataDir::Empty;
                finish(w, n, id, fail("pg_basebackup failed: source not available"));
                return;
            };
            let (data, wal) = (w.nodes[s].pg.data.clone(), w.nodes[s].pg.wal.clone());
            let pg = &mut w.nodes[n].pg;
            pg.data = data;
            pg.wal = wal;
            pg.control = Control::InRecovery;
            pg.sync_conf = task.sync_param.clone();
            let at = w.start_pg(n, Some(upstream.clone()));
            set_stage(w, n, 1);
            w.at(at, Host::Node(n), Ev::TaskStep { ae, task: id });
        }
        (Plan::Rewind { source }, 0) => {
            let Some(s) = source_ok(w, source) else {
                let remove = w.nodes[n].settings.remove_data_directory_on_rewind_failure;
                let outcome = if remove {
                    let pg = &mut w.nodes[n].pg;
                    pg.data = DataDir::Empty;
                    pg.wal = Wal::default();
                    Outcome {
                        ok: true,
                        message: "pg_rewind failed: data directory removed".into(),
                        data_changed: true,
                        ..Outcome::default()
                    }
                } else {
                    Outcome {
                        ok: true,
                        message: "pg_rewind failed: staying stopped".into(),
                        rewind_failed: true,
                        ..Outcome::default()
                    }
                };
                finish(w, n, id, outcome);
                return;
            };
            if !w.nodes[n].pg.wal.is_prefix_of(&w.nodes[s].pg.wal) {
                // The target replays the source's WAL up to where the source was.
                w.nodes[n].pg.wal = w.nodes[s].pg.wal.clone();
            }
            w.nodes[n].pg.control = Control::InRecovery;
            w.nodes[n].pg.sync_conf = task.sync_param.clone();
            let at = w.start_pg(n, Some(source.clone()));
            set_stage(w, n, 1);
            w.at(at, Host::Node(n), Ev::TaskStep { ae, task: id });
        }
        (plan, 1) => {
            let pg = &w.nodes[n].pg;
            if !(pg.running && pg.accepting) {
                finish(w, n, id, fail("postgres did not start"));
                return;
            }
            let outcome = match plan {
                Plan::Clone { source, upstream } => Outcome {
                    ok: true,
                    message: format!("replica created from {source}, following {upstream}"),
                    upstream: Some(Some(upstream.clone())),
                    data_changed: true,
                    ..Outcome::default()
                },
                Plan::Rewind { source } => Outcome {
                    ok: true,
                    message: format!("rewound from {source} and started following it"),
                    upstream: Some(Some(source.clone())),
                    data_changed: true,
                    ..Outcome::default()
                },
                Plan::Start { upstream } => Outcome {
                    ok: true,
                    message: "started".into(),
                    upstream: Some(upstream.clone()),
                    ..Outcome::default()
                },
                Plan::Bootstrap => return,
            };
            finish(w, n, id, outcome);
        }
        _ => {}
    }
}

pub(crate) fn task_call_done(w: &mut World, n: usize, id: u64, result: Option<DcsReply>) {
    let live = w.nodes[n]
        .agent
        .as_ref()
        .and_then(|a| a.task.as_ref())
        .is_some_and(|t| t.id == id && t.finished.is_none());
    if !live {
        return;
    }
    if result.is_some() {
        let outcome = Outcome {
            ok: true,
            message: "initialized a new cluster".into(),
            upstream: Some(None),
            data_changed: true,
            ..Outcome::default()
        };
        finish(w, n, id, outcome);
    } else {
        bootstrap_failed(w, n, id);
    }
}

/// tasks.rs: give up `initialize`, stop PostgreSQL, keep the data as `<data_dir>.failed`.
fn bootstrap_failed(w: &mut World, n: usize, id: u64) {
    if w.dcs_reachable(n) {
        w.dcs.initialize = None;
    }
    w.nodes[n].pg.crash();
    w.release(n);
    w.nodes[n].pg.data = DataDir::Empty;
    w.nodes[n].pg.wal = Wal::default();
    finish(w, n, id, fail("bootstrap failed"));
}

fn finish(w: &mut World, n: usize, id: u64, outcome: Outcome) {
    let Some(t) = w.nodes[n].agent.as_mut().and_then(|a| a.task.as_mut()) else {
        return;
    };
    if t.id != id {
        return;
    }
    let kind = t.kind;
    let message = outcome.message.clone();
    t.finished = Some(outcome);
    w.say(n, || format!("{} finished: {message}", kind.describe()));
    crate::agent::on_task_finished(w, n);
}

/// At the start of a cycle: collect a finished task (agent.rs `reap_task`).
pub(crate) fn reap_task(w: &mut World, n: usize) {
    let Some(a) = w.nodes[n].agent.as_mut() else {
        return;
    };
    if a.task.as_ref().is_none_or(|t| t.finished.is_none()) {
        return;
    }
    let Some(outcome) = a.task.take().and_then(|t| t.finished) else {
        return;
    };
    if outcome.ok {
        if let Some(u) = outcome.upstream {
            a.upstream = u;
        }
        if outcome.rewind_failed {
            a.rewind_failures += 1;
        }
        if outcome.data_changed {
            a.rewind_failures = 0;
        }
    }
}

/// The agent died (or was told to stop) with `task` running. A half-copied data directory
/// (basebackup, initdb) is left behind without a usable pg_control.
pub(crate) fn abandon_task(w: &mut World, n: usize, task: &Task) {
    if task.finished.is_some() || task.stage != 0 {
        return;
    }
    if matches!(task.plan, Plan::Clone { .. } | Plan::Bootstrap) {
        w.nodes[n].pg.data =
            DataDir::Invalid("partial data directory (interrupted basebackup or initdb)".into());
        w.say(n, || {
            "interrupted task left a partial data directory".into()
        });
    }
}
