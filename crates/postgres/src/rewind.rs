//! Bringing a diverged former primary back: single-user crash recovery and pg_rewind.

use tracing::info;

use crate::conninfo::{conninfo, Upstream};
use crate::error::Result;
use crate::fsutil;
use crate::postgres::Postgres;

impl Postgres {
    /// Replays WAL after an unclean shutdown in single-user mode, leaving the cluster
    /// "shut down" (pg_rewind needs a clean shutdown). Like Patroni it removes
    /// standby.signal/recovery.signal first (single-user mode refuses standby mode) and
    /// keeps WAL that still needs archiving (`archive_mode=on`, `archive_command=false`);
    /// rewrite the recovery configuration afterwards.
    pub async fn crash_recovery(&self) -> Result<()> {
        self.ensure_stopped("crash recovery")?;
        self.ensure_initialized("crash recovery")?;
        for signal in ["standby.signal", "recovery.signal"] {
            if fsutil::remove_file_if_exists(&self.opts.data_dir.join(signal))? {
                info!(file = signal, "removed before single-user crash recovery");
            }
        }
        let cmd = self
            .command("postgres")
            .arg("--single")
            .arg("-D")
            .arg(&self.opts.data_dir)
            .arg(format!(
                "--config-file={}",
                self.opts.postgresql_conf().display()
            ))
            .args(["-c", "archive_mode=on", "-c", "archive_command=false"])
            // template1 always exists; stdin is /dev/null, so the backend exits right away.
            .arg("template1");
        info!(command = %cmd.line(), "running crash recovery in single-user mode");
        cmd.run().await?;
        info!("crash recovery finished");
        Ok(())
    }

    /// `pg_rewind --source-server` from `from` (which must be a primary that has
    /// checkpointed since its promotion) with the rewind credentials (default: superuser).
    /// PostgreSQL must be stopped. With `restore_target_wal`, missing local WAL is fetched
    /// with the configured restore_command. pg_rewind copies the source's configuration
    /// files: rewrite ours afterwards.
    pub async fn pg_rewind(&self, from: &Upstream, restore_target_wal: bool) -> Result<()> {
        self.ensure_stopped("pg_rewind")?;
        self.ensure_initialized("pg_rewind")?;
        let creds = self.opts.rewind_credentials();
        let source = conninfo(
            &from.host,
            from.port,
            creds,
            Some(&self.opts.database),
            None,
        );
        let mut cmd = self
            .command("pg_rewind")
            .arg("-D")
            .arg(&self.opts.data_dir)
            .arg(format!("--source-server={source}"))
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("PGOPTIONS", "-c statement_timeout=0");
        if restore_target_wal {
            cmd = cmd.arg("--restore-target-wal");
            // Before 15 pg_rewind can only find postgresql.conf inside the data directory.
            if self.opts.config_dir() != self.opts.data_dir
                && self.data_dir_major_version()?.unwrap_or(0) >= 15
            {
                cmd = cmd.arg(format!(
                    "--config-file={}",
                    self.opts.postgresql_conf().display()
                ));
            }
        }
        if let Some(password) = &creds.password {
            cmd = cmd.env("PGPASSWORD", password);
        }
        info!(upstream = %from, command = %cmd.line(), "running pg_rewind");
        let out = cmd.run().await?;
        info!(
            output = %fsutil::tail(&String::from_utf8_lossy(&out.stderr), 5),
            "pg_rewind finished"
        );
        Ok(())
    }
}
