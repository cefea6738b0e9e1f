//! A node's agent process: the real `pgherd_agent::Agent`, configured from a Patroni-style
//! YAML file through the real configuration loader, in the simulated world (PostgreSQL, DCS,
//! peers), with its REST API answering in-process through the real router. Starting,
//! SIGTERM and kill -9 of the process.

use crate::sim_dcs::SimDcs;
use crate::sim_peers::{ApiPeers, SimPeers};
use crate::sim_pg::SimPg;
use crate::world::{lock, Shared};
use crate::Time;
use pgherd_agent::{Agent, ConfigSource, Hooks, LiveStatus, Trace, WallClock, World as AgentWorld};
use pgherd_api::{ApiContext, NodeSnapshot};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub(crate) const SCOPE: &str = "sim";

/// A running agent process.
pub(crate) struct AgentProc {
    /// The process (its loop); aborted (kill -9) or awaited (SIGTERM).
    task: JoinHandle<()>,
    /// Its REST API, answering in-process.
    pub router: axum::Router,
    pub snapshot: watch::Receiver<Arc<NodeSnapshot>>,
    /// SIGTERM.
    stop: Option<oneshot::Sender<()>>,
    epoch: u64,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgentProc {
    /// Until when the agent counts itself leader (its REST snapshot), if it does.
    pub fn leader_until(&self) -> Option<tokio::time::Instant> {
        self.snapshot.borrow().leader_until
    }
}

/// The node's configuration file, as an operator would write it for `pgherd agent`.
fn yaml(w: &crate::world::World, n: usize) -> String {
    let c = &w.schedule.cluster;
    let spec = &w.schedule.nodes[n];
    let name = &w.nodes[n].name;
    format!(
        r#"scope: {SCOPE}
namespace: /service/
name: {name}
restapi:
  listen: 127.0.0.1:8008
  connect_address: {name}:8008
etcd3:
  hosts: 127.0.0.1:2379
bootstrap:
  dcs:
    ttl: {ttl}ms
    loop_wait: {loop_wait}ms
    retry_timeout: {retry}ms
    maximum_lag_on_failover: {lag}
    primary_start_timeout: {pst}ms
    synchronous_mode: {sync}
    synchronous_mode_strict: {strict}
    synchronous_node_count: {count}
    failsafe_mode: {failsafe}
    postgresql:
      use_pg_rewind: {rewind}
      use_slots: true
      remove_data_directory_on_rewind_failure: {rm_rewind}
      remove_data_directory_on_diverged_timelines: {rm_diverged}
  initdb:
  - encoding: UTF8
postgresql:
  listen: 127.0.0.1:5432
  connect_address: {name}:5432
  data_dir: /sim/{name}/data
  bin_dir: /sim/bin
  authentication:
    replication: {{username: replicator, password: rep-pass}}
    superuser: {{username: postgres, password: secret}}
  pre_promote: /sim/bin/pre_promote
  callbacks:
    on_start: /sim/bin/callback
    on_stop: /sim/bin/callback
    on_restart: /sim/bin/callback
    on_role_change: /sim/bin/callback
vip:
  ip: 10.0.0.100
  netmask: 24
  interface: sim0
tags:
  nofailover: {nofailover}
  failover_priority: {prio}
"#,
        ttl = c.ttl,
        loop_wait = c.loop_wait,
        retry = c.retry_timeout,
        lag = c.maximum_lag_on_failover,
        pst = c.primary_start_timeout,
        sync = c.synchronous_mode,
        strict = c.synchronous_mode_strict,
        count = c.synchronous_node_count,
        failsafe = c.failsafe_mode,
        rewind = c.use_pg_rewind,
        rm_rewind = c.remove_data_directory_on_rewind_failure,
        rm_diverged = c.remove_data_directory_on_diverged_timelines,
        nofailover = spec.nofailover,
        prio = spec.failover_priority,
    )
}

/// `bootstrap.dcs` of node `n`'s file, as the bootstrapping agent writes it into `config`.
pub(crate) fn bootstrap_dcs_json(w: &crate::world::World, n: usize) -> String {
    pgherd_config::load_str(&yaml(w, n), "prebuilt.yml", &Default::default())
        .ok()
        .and_then(|l| l.config.bootstrap)
        .and_then(|b| serde_json::to_string(&b.dcs).ok())
        .unwrap_or_else(|| "{}".into())
}

/// The configuration as the real loader reads the file.
struct SimConfig {
    yaml: String,
    file: String,
}

impl ConfigSource for SimConfig {
    fn load(&self) -> anyhow::Result<pgherd_config::Loaded> {
        Ok(pgherd_config::load_str(
            &self.yaml,
            &self.file,
            &Default::default(),
        )?)
    }
}

/// Virtual wall clock: a fixed epoch plus the run's virtual time.
pub(crate) struct SimClock(pub Shared);

/// 2030-01-01T00:00:00Z: the wall-clock time at which every run begins.
pub(crate) const EPOCH_MS: i64 = 1_893_456_000_000;

impl WallClock for SimClock {
    fn now_ms(&self) -> i64 {
        EPOCH_MS + lock(&self.0).now() as i64
    }
}

/// Callbacks are recorded for the checker; `pre_promote` answers as a `PrePromote` fault
/// says (at once and yes otherwise). Both are configured in every node's file.
struct SimHooks {
    world: Shared,
    node: usize,
}

#[async_trait::async_trait]
impl Hooks for SimHooks {
    fn callback(&self, _command: &str, action: pgherd_postgres::CallbackAction, role: &str) {
        let mut w = lock(&self.world);
        let now = w.now();
        w.nodes[self.node]
            .callbacks
            .push((now, format!("{action:?}"), role.to_string()));
    }
    async fn pre_promote(&self, _command: &str) -> anyhow::Result<bool> {
        let fault = lock(&self.world).nodes[self.node].pre_promote;
        let Some((delay, refuse)) = fault else {
            return Ok(true);
        };
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        crate::world::thawed(&self.world, self.node).await;
        let mut w = lock(&self.world);
        w.say(self.node, || {
            format!(
                "pre_promote took {delay} ms and {}",
                if refuse { "refused (exit 1)" } else { "agreed" }
            )
        });
        Ok(!refuse)
    }
    async fn post_bootstrap(&self, _command: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What the agent decides and does, recorded for the checker.
struct SimTrace {
    world: Shared,
    node: usize,
}

impl Trace for SimTrace {
    fn decided(&self, obs: &pgherd_ha::Observation<'_>, decision: &pgherd_ha::Decision) {
        let mut w = lock(&self.world);
        w.stats.decisions += 1;
        let election = crate::checker::Election::record(&w, self.node, obs, decision);
        let now = w.now();
        let node = &mut w.nodes[self.node];
        if obs.failsafe_confirmed {
            // The lease clock's confirmation time, in simulated time.
            let sent = obs.lock_confirmed_at.map_or(obs.now, |at| at.min(obs.now));
            node.failsafe_until = Some(now - (obs.now - sent) + obs.settings.ttl);
        }
        node.election = election;
        node.task = obs.in_progress;
        if decision.actions.contains(&pgherd_ha::Action::Promote) {
            node.promote_decided_at = Some(now);
        }
        if node.last_reason != decision.reason {
            node.last_reason = decision.reason.clone();
            let (reason, actions) = (decision.reason.clone(), decision.actions.clone());
            w.say(self.node, || format!("{reason} {actions:?}"));
        }
    }

    fn action_done(&self, action: &pgherd_ha::Action, ok: bool) {
        let mut w = lock(&self.world);
        if ok && *action == pgherd_ha::Action::AcquireLock {
            crate::checker::on_lock_won(&mut w, self.node);
        }
        if !ok {
            let action = format!("{action:?}");
            w.say(self.node, || format!("{action} did not succeed"));
        }
    }

    fn task_ended(&self, kind: pgherd_ha::AsyncAction, ok: bool) {
        let mut w = lock(&self.world);
        w.nodes[self.node].task = None;
        w.say(self.node, || {
            format!(
                "{} {}",
                kind.describe(),
                if ok { "finished" } else { "failed" }
            )
        });
    }
}

/// The node's interface for the virtual IP: who holds it is recorded for the checker.
struct SimAddresses {
    world: Shared,
    node: usize,
}

#[async_trait::async_trait]
impl pgherd_agent::world::Addresses for SimAddresses {
    async fn unusable(&self, _vip: &pgherd_config::Vip) -> Option<String> {
        None
    }
    async fn add(
        &self,
        _vip: &pgherd_config::Vip,
        lifetime: std::time::Duration,
        _announce: bool,
    ) -> anyhow::Result<()> {
        crate::world::thawed(&self.world, self.node).await;
        let mut w = lock(&self.world);
        // Whole seconds, as iproute2 sets them.
        let until = w.now() + lifetime.as_secs() * 1_000;
        w.nodes[self.node].vip_until = until;
        if !w.nodes[self.node].holds_vip {
            w.nodes[self.node].holds_vip = true;
            w.say(self.node, || "vip: added".into());
            w.changed();
        }
        Ok(())
    }
    async fn remove(&self, _vip: &pgherd_config::Vip) -> anyhow::Result<()> {
        crate::world::thawed(&self.world, self.node).await;
        let mut w = lock(&self.world);
        if w.nodes[self.node].holds_vip {
            w.nodes[self.node].holds_vip = false;
            w.say(self.node, || "vip: removed".into());
            w.changed();
        }
        Ok(())
    }
}

/// Simulated nodes have no watchdog device (Patroni's null watchdog).
struct NoWatchdog;

impl pgherd_agent::WatchdogDevices for NoWatchdog {
    fn device(
        &self,
        _cfg: &pgherd_config::Watchdog,
    ) -> Option<Box<dyn pgherd_agent::WatchdogDevice>> {
        None
    }
}

/// Starts the agent process of node `n` after `delay`.
pub(crate) fn start_agent(world: &Shared, n: usize, delay: Time) {
    let w2 = world.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        launch(&w2, n);
    });
}

fn launch(world: &Shared, n: usize) {
    let (name, config, epoch) = {
        let mut w = lock(world);
        if w.nodes[n].agent.is_some() {
            return;
        }
        w.nodes[n].agent_epoch += 1;
        w.nodes[n].agent_started_at = w.now();
        let name = w.nodes[n].name.clone();
        let config = SimConfig {
            yaml: yaml(&w, n),
            file: format!("{name}.yml"),
        };
        (name, config, w.nodes[n].agent_epoch)
    };
    let refuse = |what: &str, e: anyhow::Error| {
        let message = format!("{name}: {what}: {e:#}");
        lock(world).violate(crate::Invariant::UnexpectedFatal, message);
    };
    let loaded = match config.load() {
        Ok(l) => l,
        Err(e) => return refuse("the generated configuration is rejected", e),
    };
    // The DCS client's lease and retries, as `pgherd agent` opens it: from bootstrap.dcs.
    let bootstrap_dynamic = loaded
        .config
        .bootstrap
        .as_ref()
        .map(|b| pgherd_config::DynamicConfig::from_value(&b.dcs).0)
        .unwrap_or_default();
    let settings =
        pgherd_agent::settings::engine_settings(&loaded.config, &name, &bootstrap_dynamic);
    let pg = Arc::new(SimPg::new(world.clone(), n, &loaded.config));
    let dcs = Arc::new(SimDcs::member(world.clone(), n, &settings));
    let api_dcs = Arc::new(SimDcs::operator(world.clone(), Some(n)));
    let agent_world = AgentWorld {
        pg: pg.clone(),
        dcs,
        peers: Arc::new(SimPeers {
            world: world.clone(),
            me: n,
        }),
        hooks: Arc::new(SimHooks {
            world: world.clone(),
            node: n,
        }),
        clock: Arc::new(SimClock(world.clone())),
        config: Arc::new(config),
        trace: Arc::new(SimTrace {
            world: world.clone(),
            node: n,
        }),
        watchdogs: Arc::new(NoWatchdog),
        addresses: Arc::new(SimAddresses {
            world: world.clone(),
            node: n,
        }),
    };
    let (mut agent, handles) = match Agent::new(loaded.config, agent_world) {
        Ok(a) => a,
        Err(e) => return refuse("the agent refused its configuration", e),
    };
    if let Some(bug) = lock(world).opts.planted.and_then(|p| p.in_agent()) {
        agent = agent.plant(bug);
    }
    let ctx = ApiContext::new(handles.snapshot.clone(), api_dcs)
        .with_commands(handles.commands)
        .with_live_status(Arc::new(LiveStatus(pg)))
        .with_failsafe(handles.failsafe)
        .with_peers(Arc::new(ApiPeers {
            world: world.clone(),
            me: n,
        }));
    let router = pgherd_api::router(ctx);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let w2 = world.clone();
    let task = tokio::spawn(async move {
        let result = agent
            .run(async move {
                let _ = stop_rx.await;
            })
            .await;
        let mut w = lock(&w2);
        if let Err(e) = result {
            let e = format!("{e:#}");
            w.say(n, || format!("agent exited: {e}"));
            if !e.contains("belongs to another cluster") {
                let message = format!("{}'s agent exited with an error: {e}", w.nodes[n].name);
                w.violate(crate::Invariant::UnexpectedFatal, message);
            }
        } else {
            w.say(n, || "agent exited".into());
        }
        // The process is gone (aborting our own handle is harmless: nothing awaits after).
        if w.nodes[n].agent.as_ref().is_some_and(|a| a.epoch == epoch) {
            kill(&mut w, n);
        }
        w.changed();
    });
    let mut w = lock(world);
    w.nodes[n].agent = Some(AgentProc {
        task,
        router,
        snapshot: handles.snapshot,
        stop: Some(stop_tx),
        epoch,
    });
    w.say(n, || format!("agent process {epoch} started"));
    w.changed();
}

/// SIGTERM: the agent stops PostgreSQL, releases its keys and exits (bounded).
pub(crate) fn sigterm(world: &Shared, n: usize) {
    let mut w = lock(world);
    if let Some(stop) = w.nodes[n].agent.as_mut().and_then(|a| a.stop.take()) {
        let _ = stop.send(());
    }
}

/// kill -9 of the agent (its fence and background tasks die with it).
pub(crate) fn kill(w: &mut crate::world::World, n: usize) {
    w.nodes[n].agent = None;
    w.nodes[n].task = None;
    w.nodes[n].election = None;
}
