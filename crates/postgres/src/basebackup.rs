//! Cloning a replica with pg_basebackup.

use std::time::Duration;

use tracing::{info, warn};

use crate::conninfo::{conninfo, Upstream};
use crate::datadir::{self, DataDirState};
use crate::error::Result;
use crate::options::CliOption;
use crate::postgres::Postgres;

/// Options pgherd sets itself or that would break it (Patroni's list).
const FORBIDDEN: &[&str] = &[
    "pgdata",
    "format",
    "wal-method",
    "xlog-method",
    "gzip",
    "version",
    "compress",
    "dbname",
    "host",
    "port",
    "username",
    "password",
];

/// Patroni tries twice, 5 s apart.
const ATTEMPTS: u32 = 2;
const RETRY_DELAY: Duration = Duration::from_secs(5);

impl Postgres {
    /// Copies `from` into the (missing or empty) data directory with
    /// `pg_basebackup -X stream --checkpoint=fast` as the replication user. No recovery
    /// configuration is written (no `-R`): `write_config` does that. Never deletes data:
    /// a retry happens only when pg_basebackup cleaned up after itself.
    pub async fn pg_basebackup(&self, from: &Upstream, options: &[CliOption]) -> Result<()> {
        for opt in options {
            opt.check("pg_basebackup", FORBIDDEN)?;
        }
        self.ensure_stopped("pg_basebackup")?;
        let creds = &self.opts.replication;
        let source = conninfo(&from.host, from.port, creds, None, None);
        let mut attempt = 1;
        loop {
            datadir::prepare_empty(&self.opts.data_dir, self.owner(), "run pg_basebackup")?;
            let mut cmd = self
                .command("pg_basebackup")
                .arg(format!("--pgdata={}", self.opts.data_dir.display()))
                .arg("-X")
                .arg("stream")
                .arg(format!("--dbname={source}"));
            if !options.iter().any(|o| o.name() == "checkpoint") {
                cmd = cmd.arg("--checkpoint=fast");
            }
            cmd = cmd.args(options.iter().map(CliOption::render));
            if let Some(password) = &creds.password {
                cmd = cmd.env("PGPASSWORD", password);
            }
            info!(upstream = %from, attempt, command = %cmd.line(), "creating replica with pg_basebackup");
            let err = match cmd.run().await {
                Ok(_) => {
                    info!(upstream = %from, "pg_basebackup finished");
                    return Ok(());
                }
                Err(e) => e,
            };
            let clean = matches!(
                self.data_dir_state(),
                DataDirState::Empty | DataDirState::Missing
            );
            if attempt >= ATTEMPTS || !clean {
                return Err(err);
            }
            warn!(error = %err, retry_in = ?RETRY_DELAY, "pg_basebackup failed; retrying");
            tokio::time::sleep(RETRY_DELAY).await;
            attempt += 1;
        }
    }
}
