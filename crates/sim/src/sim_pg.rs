//! The agent's [`PgControl`] over the simulated PostgreSQL of one node (`crate::pg`): each
//! operation takes simulated time, waits while the node is paused, and acts on the model.
//! Transitions (start, stop, promote) are world events that run even if the agent dies.

use crate::pg::{Control, StopMode as SimStop};
use crate::world::{lock, PgStep, Shared};
use crate::Time;
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use pgherd_agent::PgControl;
use pgherd_ha::{DataDir, Replication};
use pgherd_postgres::{
    AllowRemoval, CliOption, ClusterState, ControlData, DataDirState, HistoryEntry, PgOptions,
    PgState, PostmasterInfo, RecoveryConf, RemovalMode, ReplicationRow, SlotDrop, SlotInfo,
    StopMode, StopOutcome, TimelineHistory, Upstream, WalReceiver,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) struct SimPg {
    world: Shared,
    n: usize,
    options: PgOptions,
}

impl SimPg {
    pub fn new(world: Shared, n: usize, cfg: &pgherd_config::Config) -> SimPg {
        let options = pgherd_agent::settings::pg_options(cfg)
            .unwrap_or_else(|_| PgOptions::new("/sim/bin", "/sim/data", 5432));
        SimPg { world, n, options }
    }

    /// A paused node does nothing; a resumed one continues after the resume latency.
    async fn thawed(&self) {
        crate::world::thawed(&self.world, self.n).await;
    }

    /// Takes `lo..=hi` ms of simulated time (and waits while paused, before and after).
    async fn takes(&self, lo: Time, hi: Time) {
        self.thawed().await;
        let ms = lock(&self.world).rng.range(lo, hi);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.thawed().await;
    }

    fn with<T>(&self, f: impl FnOnce(&mut crate::world::World, usize) -> T) -> T {
        let mut w = lock(&self.world);
        let out = f(&mut w, self.n);
        w.changed();
        out
    }

    /// Waits until world time `at` has passed (the transition event runs first), then a
    /// little more if the node is paused.
    async fn until(&self, at: Time) {
        let now = lock(&self.world).now();
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now) + 1)).await;
        self.thawed().await;
    }

    fn sysid(w: &crate::world::World, n: usize) -> Option<String> {
        match &w.nodes[n].pg.data {
            DataDir::Initialized { sysid } => Some(sysid.clone()),
            _ => None,
        }
    }
}

/// `pg_postmaster_start_time()` as PostgreSQL prints it.
fn wall_time(at: Time) -> String {
    chrono::DateTime::from_timestamp_millis(crate::node::EPOCH_MS + at as i64)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        .to_string()
}

#[async_trait]
impl PgControl for SimPg {
    fn options(&self) -> &PgOptions {
        &self.options
    }

    fn data_dir_state(&self) -> DataDirState {
        match &lock(&self.world).nodes[self.n].pg.data {
            DataDir::Empty => DataDirState::Empty,
            DataDir::Initialized { sysid } => DataDirState::Initialized {
                sysid: sysid.clone(),
            },
            DataDir::Invalid(why) => DataDirState::Invalid(why.clone()),
        }
    }

    fn major_version(&self) -> Option<u32> {
        Some(15)
    }

    fn postmaster(&self) -> Option<PostmasterInfo> {
        let w = lock(&self.world);
        let pg = &w.nodes[self.n].pg;
        pg.running.then(|| PostmasterInfo {
            pid: i32::try_from(pg.epoch).unwrap_or(i32::MAX),
            single_user: false,
            start_time: pg.started_at as i64 / 1000,
            port: Some(5432),
            status: None,
        })
    }

    fn configured_as_standby(&self) -> bool {
        lock(&self.world).nodes[self.n].pg.conf.is_standby()
    }

    async fn wait_stale_postmaster_gone(&self, _limit: Duration) {}

    async fn query_state(&self) -> Result<PgState> {
        self.takes(1, 3).await;
        let w = lock(&self.world);
        let n = self.n;
        let pg = &w.nodes[n].pg;
        if !pg.running || !pg.accepting {
            bail!("could not connect: the database system is not accepting connections");
        }
        let replication = if pg.in_recovery {
            Vec::new()
        } else {
            w.walsenders(n)
                .into_iter()
                .map(|(m, lsn, streaming, synchronous)| ReplicationRow {
                    pid: 0,
                    usename: "replicator".into(),
                    application_name: w.nodes[m].name.clone(),
                    client_addr: None,
                    state: if streaming { "streaming" } else { "catchup" }.into(),
                    sync_state: if synchronous { "sync" } else { "async" }.into(),
                    sync_priority: 0,
                    write_lsn: Some(lsn),
                    flush_lsn: Some(lsn),
                    replay_lsn: Some(lsn),
                })
                .collect()
        };
        let wal_receiver = pg.upstream.as_ref().filter(|_| pg.in_recovery).map(|up| {
            let streaming = w.wal_receiver_streaming(n);
            WalReceiver {
                status: if streaming { "streaming" } else { "waiting" }.into(),
                sender_host: Some(up.clone()),
                sender_port: Some(5432),
                slot_name: pg.slot.clone(),
                received_tli: streaming.then(|| pg.wal.timeline()),
                conninfo: None,
                silent_ms: None,
                timeout_ms: None,
            }
        });
        Ok(PgState {
            in_recovery: pg.in_recovery,
            timeline: pg.wal.timeline(),
            wal_lsn: pg.wal.end,
            received_lsn: pg.in_recovery.then_some(pg.wal.end),
            replayed_lsn: pg.in_recovery.then_some(pg.wal.end),
            replayed_timestamp: None,
            replay_paused: false,
            postmaster_start_time: wall_time(pg.started_at),
            server_version: 150_018,
            pending_restart: false,
            synchronous_standby_names: pg.sync_active.clone(),
            synchronous_commit: "on".into(),
            replication,
            wal_receiver,
        })
    }

    async fn controldata(&self) -> Result<ControlData> {
        self.takes(5, 20).await;
        let w = lock(&self.world);
        let pg = &w.nodes[self.n].pg;
        let sysid = Self::sysid(&w, self.n).context("no pg_control")?;
        let end = pg.wal.end;
        // The model knows the true end of WAL: a clean former primary's ends with its
        // shutdown checkpoint, a standby's is where it replayed to.
        let (state, checkpoint, min_recovery) = match pg.control {
            Control::ShutDown => (ClusterState::ShutDown, end, 0),
            Control::InProduction => (ClusterState::InProduction, 0, end),
            Control::InRecovery => (ClusterState::ShutDownInRecovery, 0, end),
        };
        Ok(ControlData {
            system_identifier: sysid,
            state,
            checkpoint_lsn: checkpoint,
            redo_lsn: checkpoint,
            timeline: pg.wal.timeline(),
            prev_timeline: pg.wal.timeline(),
            min_recovery_lsn: min_recovery,
            min_recovery_timeline: 0,
            data_checksum_version: 1,
            wal_log_hints: true,
            raw: BTreeMap::new(),
        })
    }

    async fn read_timeline_history(&self, timeline: u64) -> Result<Option<TimelineHistory>> {
        let w = lock(&self.world);
        let pg = &w.nodes[self.n].pg;
        if timeline <= 1 || pg.wal.timeline() != timeline {
            return Ok(None);
        }
        let since = pg.promoted_at;
        Ok(Some(TimelineHistory {
            timeline,
            entries: pg
                .wal
                .switches()
                .into_iter()
                .map(|(parent, lsn)| HistoryEntry {
                    timeline: parent,
                    switch_lsn: lsn,
                    reason: "no recovery target specified".into(),
                })
                .collect(),
            modified: std::time::UNIX_EPOCH
                + Duration::from_millis((crate::node::EPOCH_MS as u64) + since),
        }))
    }

    async fn sysid(&self) -> Result<String> {
        Self::sysid(&lock(&self.world), self.n).context("no data directory")
    }

    async fn write_config(
        &self,
        params: &BTreeMap<String, String>,
        recovery: Option<&RecoveryConf>,
    ) -> Result<bool> {
        let conf = match recovery {
            None => Replication::Primary,
            Some(rc) => match &rc.upstream {
                None => Replication::Detached,
                Some(up) => Replication::From(up.host.clone()),
            },
        };
        let slot = recovery.and_then(|r| r.primary_slot_name.clone());
        let sync = params
            .get("synchronous_standby_names")
            .cloned()
            .unwrap_or_default();
        Ok(self.with(|w, n| {
            let pg = &mut w.nodes[n].pg;
            let changed = pg.conf != conf || pg.conf_slot != slot || pg.sync_conf != sync;
            if changed {
                let what = format!("postgresql.conf written: {conf:?}, slot {slot:?}, synchronous_standby_names '{sync}'");
                pg.conf = conf;
                pg.conf_slot = slot;
                pg.sync_conf = sync;
                w.say(n, || what);
            }
            changed
        }))
    }

    async fn write_pg_hba(&self, _lines: &[String]) -> Result<bool> {
        Ok(false)
    }

    async fn append_pg_hba(&self, _lines: &[String]) -> Result<()> {
        Ok(())
    }

    async fn write_pg_ident(&self, _lines: &[String]) -> Result<bool> {
        Ok(false)
    }

    async fn start(&self) -> Result<()> {
        self.thawed().await;
        let at = self.with(|w, n| -> Result<Time> {
            let pg = &w.nodes[n].pg;
            if pg.running {
                bail!("another server might be running");
            }
            if !pg.initialized() {
                bail!("no data directory to start");
            }
            let dur = match (&pg.conf, pg.control) {
                (Replication::Primary, Control::InProduction) => w.rng.range(500, 3_000),
                _ => w.rng.range(300, 1_500),
            } + w.nodes[n].slow_start;
            let now = w.now();
            w.nodes[n].pg.begin_start(now);
            let epoch = w.nodes[n].pg.epoch;
            crate::world::pg_event(&self.world, n, epoch, now + dur, PgStep::Started);
            Ok(now + dur)
        })?;
        self.until(at).await;
        let w = lock(&self.world);
        let pg = &w.nodes[self.n].pg;
        if pg.running && pg.accepting {
            Ok(())
        } else {
            bail!("the postmaster exited during start-up")
        }
    }

    async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome> {
        self.thawed().await;
        let mode = match mode {
            StopMode::Immediate => SimStop::Immediate,
            _ => SimStop::Fast,
        };
        let Some(exit) = self.with(|w, n| w.stop_pg(n, mode)) else {
            return Ok(StopOutcome::NotRunning);
        };
        let limit = lock(&self.world).now() + timeout.as_millis() as Time;
        self.until(exit.min(limit)).await;
        if lock(&self.world).nodes[self.n].pg.running && exit > limit {
            // pg_ctl gave up: escalate to an immediate shutdown, as pgherd_postgres does.
            if let Some(exit) = self.with(|w, n| w.stop_pg(n, SimStop::Immediate)) {
                self.until(exit).await;
            }
            return Ok(StopOutcome::Stopped(StopMode::Immediate));
        }
        Ok(StopOutcome::Stopped(match mode {
            SimStop::Immediate => StopMode::Immediate,
            SimStop::Fast => StopMode::Fast,
        }))
    }

    async fn restart(&self) -> Result<()> {
        let timeout = self.options.pg_ctl_timeout;
        self.stop(StopMode::Fast, timeout).await?;
        self.start().await
    }

    async fn promote(&self, _wait: bool) -> Result<()> {
        self.thawed().await;
        let at = self.with(|w, n| -> Result<Time> {
            if !w.nodes[n].pg.begin_promote() {
                bail!("server is not in standby mode");
            }
            let now = w.now();
            let at = now + w.rng.range(50, 500);
            let epoch = w.nodes[n].pg.epoch;
            crate::world::pg_event(&self.world, n, epoch, at, PgStep::Promoted);
            Ok(at)
        })?;
        self.until(at).await;
        let w = lock(&self.world);
        let pg = &w.nodes[self.n].pg;
        if pg.running && !pg.in_recovery {
            Ok(())
        } else {
            bail!("the promotion did not complete")
        }
    }

    async fn reload(&self) -> Result<()> {
        self.takes(1, 5).await;
        self.with(|w, n| {
            if !w.nodes[n].pg.running {
                bail!("no server running");
            }
            w.nodes[n].pg.reload();
            w.release(n);
            Ok(())
        })
    }

    async fn checkpoint(&self) -> Result<()> {
        self.takes(10, 100).await;
        let w = lock(&self.world);
        let pg = &w.nodes[self.n].pg;
        if pg.running && pg.accepting {
            Ok(())
        } else {
            bail!("could not connect to run CHECKPOINT")
        }
    }

    async fn initdb(&self, _options: &[CliOption]) -> Result<()> {
        self.with(|w, n| {
            w.nodes[n].pg.data = DataDir::Invalid("initdb did not finish: no pg_control".into())
        });
        self.takes(500, 1_500).await;
        self.with(|w, n| {
            let content = w.content();
            let sysid = format!("7{:018}", 1_000_000_000 + w.schedule.seed % 1_000_000_000);
            let pg = &mut w.nodes[n].pg;
            pg.data = DataDir::Initialized { sysid };
            pg.wal = crate::wal::Wal::new_cluster(content);
            pg.control = Control::ShutDown;
            pg.slots.clear();
            w.wal_dirty.push(n);
        });
        Ok(())
    }

    async fn pg_basebackup(&self, from: &Upstream, _options: &[CliOption]) -> Result<()> {
        self.thawed().await;
        let source = lock(&self.world).index_of(&from.host);
        let alive = |w: &crate::world::World, s: usize| {
            !w.frozen(s) && w.nodes[s].pg.running && w.nodes[s].pg.accepting
        };
        let Some(s) = source.filter(|&s| alive(&lock(&self.world), s)) else {
            bail!("pg_basebackup: could not connect to {}", from.host);
        };
        self.with(|w, n| {
            w.nodes[n].pg.data =
                DataDir::Invalid("pg_basebackup did not finish: no pg_control".into())
        });
        self.takes(1_000, 4_000).await;
        self.with(|w, n| {
            if !alive(w, s) {
                w.nodes[n].pg.data = DataDir::Empty;
                bail!(
                    "pg_basebackup: the connection to {} was lost",
                    w.nodes[s].name
                );
            }
            let (data, wal) = (w.nodes[s].pg.data.clone(), w.nodes[s].pg.wal.clone());
            let pg = &mut w.nodes[n].pg;
            pg.data = data;
            pg.wal = wal;
            pg.control = Control::InRecovery;
            pg.slots.clear();
            w.wal_dirty.push(n);
            Ok(())
        })
    }

    async fn pg_rewind(&self, from: &Upstream) -> Result<()> {
        self.takes(500, 2_000).await;
        self.with(|w, n| {
            let source = w
                .index_of(&from.host)
                .filter(|&s| !w.frozen(s) && w.nodes[s].pg.running && w.nodes[s].pg.accepting);
            let Some(s) = source else {
                bail!("pg_rewind: could not connect to {}", from.host);
            };
            if !w.nodes[n].pg.wal.is_prefix_of(&w.nodes[s].pg.wal) {
                w.nodes[n].pg.wal = w.nodes[s].pg.wal.clone();
            }
            w.nodes[n].pg.control = Control::InRecovery;
            w.wal_dirty.push(n);
            Ok(())
        })
    }

    async fn remove_data_dir(
        &self,
        allow: AllowRemoval,
        mode: RemovalMode,
    ) -> Result<Option<PathBuf>> {
        let reason = allow.reason().to_string();
        self.with(|w, n| {
            w.say(n, || format!("data directory removed ({reason})"));
            let pg = &mut w.nodes[n].pg;
            pg.data = DataDir::Empty;
            pg.wal = crate::wal::Wal::default();
            pg.slots.clear();
        });
        Ok(matches!(mode, RemovalMode::RenameToFailed)
            .then(|| self.options.data_dir.with_extension("failed")))
    }

    async fn set_superuser_password(&self) -> Result<()> {
        Ok(())
    }

    async fn create_or_update_role(
        &self,
        _name: &str,
        _password: Option<&str>,
        _options: &[String],
    ) -> Result<()> {
        Ok(())
    }

    async fn grant_rewind_privileges(&self, _role: &str) -> Result<()> {
        Ok(())
    }

    async fn list_slots(&self) -> Result<Vec<SlotInfo>> {
        self.takes(1, 3).await;
        let w = lock(&self.world);
        let pg = &w.nodes[self.n].pg;
        if !(pg.running && pg.accepting) {
            bail!("could not connect to list slots");
        }
        let used = w.slots_in_use(self.n);
        Ok(pg
            .slots
            .iter()
            .map(|s| SlotInfo {
                name: s.clone(),
                active: used.contains(s),
                restart_lsn: None,
                logical: None,
                confirmed_flush_lsn: None,
            })
            .collect())
    }

    async fn create_physical_slot(&self, name: &str) -> Result<bool> {
        self.takes(1, 3).await;
        self.with(|w, n| {
            let pg = &mut w.nodes[n].pg;
            if !(pg.running && pg.accepting) {
                bail!("could not connect to create a slot");
            }
            let created = pg.slots.insert(name.to_string());
            let name = name.to_string();
            w.say(n, || format!("postgres: slot {name} created"));
            Ok(created)
        })
    }

    /// The simulated clusters configure no permanent slots: never asked for.
    async fn create_logical_slot(
        &self,
        name: &str,
        _database: &str,
        _plugin: &str,
    ) -> Result<bool> {
        bail!("the simulator has no logical replication slots (asked for {name})")
    }

    async fn drop_slot(&self, name: &str) -> Result<SlotDrop> {
        self.takes(1, 3).await;
        self.with(|w, n| {
            if w.slots_in_use(n).iter().any(|s| s == name) {
                return Ok(SlotDrop::Active);
            }
            let dropped = w.nodes[n].pg.slots.remove(name);
            let name = name.to_string();
            w.say(n, || format!("postgres: slot {name} dropped"));
            Ok(if dropped {
                SlotDrop::Dropped
            } else {
                SlotDrop::Missing
            })
        })
    }

    // Logical slots are not simulated (no permanent slots in generated schedules).
    async fn read_logical_slots(
        &self,
        _from: &pgherd_postgres::Upstream,
        _names: &[String],
    ) -> Result<Vec<pgherd_postgres::CopiedSlot>> {
        Ok(Vec::new())
    }
    async fn install_logical_slots(&self, _slots: Vec<pgherd_postgres::CopiedSlot>) -> Result<()> {
        Ok(())
    }
    async fn advance_slot(&self, _name: &str, _database: &str, _lsn: u64) -> Result<bool> {
        bail!("logical slots are not simulated")
    }
}
