//! Creating a new cluster with initdb.

use std::io::Write;

use tracing::info;

use crate::datadir;
use crate::error::{PgError, Result};
use crate::fsutil;
use crate::options::CliOption;
use crate::postgres::Postgres;

/// Options pgherd sets itself or that would break it (Patroni's list).
const FORBIDDEN: &[&str] = &["pgdata", "nosync", "pwfile", "sync-only", "version"];

impl Postgres {
    /// Runs initdb into the (missing or empty) data directory. The superuser comes from the
    /// superuser credentials (its password via a temporary `--pwfile`); local-socket access
    /// defaults to `trust` so the agent can connect before it writes pg_hba.conf.
    pub async fn initdb(&self, options: &[CliOption]) -> Result<()> {
        for opt in options {
            opt.check("initdb", FORBIDDEN)?;
        }
        self.ensure_stopped("initdb")?;
        datadir::prepare_empty(&self.opts.data_dir, self.owner(), "run initdb")?;

        let su = &self.opts.superuser;
        let mut cmd = self
            .command("initdb")
            .arg("-D")
            .arg(&self.opts.data_dir)
            .arg(format!("--username={}", su.username));
        let sets_auth = options
            .iter()
            .any(|o| matches!(o.name(), "auth" | "auth-local"));
        if !sets_auth {
            cmd = cmd.arg("--auth-local=trust");
        }
        // Kept alive until initdb has finished; deleted on drop.
        let pwfile = match &su.password {
            Some(password) => {
                let mut file = tempfile::Builder::new()
                    .prefix("pgherd-pwfile")
                    .tempfile()
                    .map_err(|e| {
                        PgError::io("create temporary password file in", std::env::temp_dir(), e)
                    })?;
                file.write_all(password.as_bytes())
                    .map_err(|e| PgError::io("write", file.path(), e))?;
                fsutil::chown(file.path(), self.owner())?;
                cmd = cmd.arg(format!("--pwfile={}", file.path().display()));
                Some(file)
            }
            None => None,
        };
        cmd = cmd.args(options.iter().map(CliOption::render));
        info!(command = %cmd.line(), "initializing a new cluster");
        let result = cmd.run().await;
        drop(pwfile);
        result?;
        info!(data_dir = %self.opts.data_dir.display(), "initdb finished");
        Ok(())
    }
}
