//! The `Postgres` handle: options plus the resolved OS identity, and the inspection
//! methods that need no running server.

use std::path::PathBuf;

use tracing::info;

use crate::callback::CallbackRunner;
use crate::command::PgCommand;
use crate::controldata::{parse_controldata, ControlData};
use crate::datadir::{self, AllowRemoval, DataDirState, RemovalMode};
use crate::error::{PgError, Result};
use crate::history::{read_history, TimelineHistory};
use crate::options::PgOptions;
use crate::postmaster::{running_postmaster, PostmasterInfo};
use crate::runas::Identity;
use crate::sql::LocalConnection;

/// Control of the local PostgreSQL server. It executes; the HA engine decides.
pub struct Postgres {
    pub(crate) opts: PgOptions,
    /// `Some` when the agent is root: PostgreSQL programs run as this user.
    pub(crate) identity: Option<Identity>,
    pub(crate) conn: LocalConnection,
    pub(crate) callbacks: CallbackRunner,
    /// Major version of the programs in `bin_dir`, read once.
    binaries_major: Option<u32>,
}

impl Postgres {
    /// Resolves paths and the OS user. As root, fails when the `run_as` user (default
    /// `postgres`) does not exist.
    pub fn new(options: PgOptions) -> Result<Self> {
        let opts = options.absolutize()?;
        let identity = Identity::resolve(opts.run_as.as_deref())?;
        if let Some(id) = &identity {
            info!(user = %id.name, uid = id.uid.as_raw(), "running as root: PostgreSQL programs run as this user");
        }
        let binaries_major = crate::binaries::binaries_major_version(&opts.bin_dir);
        Ok(Postgres {
            opts,
            identity,
            conn: LocalConnection::default(),
            callbacks: CallbackRunner::default(),
            binaries_major,
        })
    }

    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    /// The OS user PostgreSQL programs run as, when it differs from ours.
    pub fn run_as_user(&self) -> Option<&str> {
        self.identity.as_ref().map(|id| id.name.as_str())
    }

    pub(crate) fn owner(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub(crate) fn command(&self, program: &str) -> PgCommand {
        PgCommand::new(&self.opts.bin_dir, program, self.owner())
    }

    /// The live postmaster of our data directory (from postmaster.pid + a liveness check).
    pub fn is_running(&self) -> Option<PostmasterInfo> {
        running_postmaster(&self.opts.data_dir)
    }

    pub fn data_dir_state(&self) -> DataDirState {
        datadir::inspect(&self.opts.data_dir)
    }

    /// The major version PostgreSQL runs with: the data directory's (`PG_VERSION`), else the
    /// programs' in `bin_dir` (before initdb or a basebackup created the directory).
    pub fn major_version(&self) -> Option<u32> {
        self.data_dir_major_version()
            .ok()
            .flatten()
            .or(self.binaries_major)
    }

    /// Major version of the cluster in the data directory (`PG_VERSION`, e.g. 15).
    pub fn data_dir_major_version(&self) -> Result<Option<u32>> {
        let path = self.opts.data_dir.join("PG_VERSION");
        Ok(crate::fsutil::read_optional(&path)?.and_then(|v| v.trim().parse().ok()))
    }

    /// Runs `pg_controldata` (C locale) and parses it.
    pub async fn controldata(&self) -> Result<ControlData> {
        let out = self
            .command("pg_controldata")
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .arg("-D")
            .arg(&self.opts.data_dir)
            .run()
            .await?;
        parse_controldata(&String::from_utf8_lossy(&out.stdout)).map_err(|reason| {
            PgError::ControlData {
                data_dir: self.opts.data_dir.clone(),
                reason,
            }
        })
    }

    /// The database system identifier (validated by pg_controldata).
    pub async fn sysid(&self) -> Result<String> {
        Ok(self.controldata().await?.system_identifier)
    }

    /// `pg_wal/<timeline>.history`; `None` when absent (e.g. timeline 1).
    pub fn read_timeline_history(&self, timeline: u64) -> Result<Option<TimelineHistory>> {
        read_history(&self.opts.data_dir.join("pg_wal"), timeline)
    }

    /// Destroys the data directory, which must not be in use. Requires an explicit
    /// [`AllowRemoval`]; returns the new path for [`RemovalMode::RenameToFailed`].
    pub fn remove_data_dir(
        &self,
        allow: AllowRemoval,
        mode: RemovalMode,
    ) -> Result<Option<PathBuf>> {
        if let Some(pm) = self.is_running() {
            return Err(PgError::Running {
                action: "removing the data directory",
                pid: pm.pid,
            });
        }
        datadir::remove(&self.opts.data_dir, allow, mode)
    }

    pub(crate) fn ensure_stopped(&self, action: &'static str) -> Result<()> {
        match self.is_running() {
            Some(pm) => Err(PgError::Running {
                action,
                pid: pm.pid,
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn ensure_initialized(&self, action: &'static str) -> Result<()> {
        match self.data_dir_state() {
            DataDirState::Initialized { .. } => Ok(()),
            _ => Err(PgError::NotInitialized {
                path: self.opts.data_dir.clone(),
                action,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: T) {}

    /// The agent shares one handle between tasks and spawns these futures.
    #[test]
    fn handle_and_futures_are_send() {
        fn sync<T: Send + Sync>() {}
        sync::<Postgres>();
        let mut opts = PgOptions::new("/nonexistent/bin", "/nonexistent/data", 5432);
        opts.run_as = None;
        let Ok(pg) = Postgres::new(opts) else {
            return; // root without a `postgres` user: covered by the integration tests
        };
        send(pg.start());
        send(pg.stop(crate::StopMode::Fast, std::time::Duration::from_secs(1)));
        send(pg.query_state());
        send(pg.create_or_update_role("r", None, &[]));
        send(pg.pg_basebackup(&crate::Upstream::new("h", 1), &[]));
        send(pg.pg_rewind(&crate::Upstream::new("h", 1), false));
        send(pg.initdb(&[]));
        send(pg.controldata());
        send(pg.checkpoint());
    }
}
