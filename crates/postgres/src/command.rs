//! Running PostgreSQL programs (asynchronously, as the right OS user, with a clean environment).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};

use tokio::process::Command;
use tracing::debug;

use crate::error::{PgError, Result};
use crate::fsutil::tail;
use crate::runas::Identity;

/// Lines of stderr kept in error messages.
const ERROR_TAIL_LINES: usize = 20;

/// A command line for one PostgreSQL program. Arguments never contain secrets, so the
/// rendered command line is safe to log and to put into errors.
pub(crate) struct PgCommand {
    cmd: Command,
    line: String,
}

impl PgCommand {
    pub fn new(bin_dir: &Path, program: &str, identity: Option<&Identity>) -> Self {
        let path = bin_dir.join(program);
        let mut cmd = Command::new(&path);
        // libpq and the server read PG* variables (PGPORT, PGDATA, PGOPTIONS, ...); whatever
        // the agent inherited must not change what we asked for.
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"PG") {
                cmd.env_remove(key);
            }
        }
        if let Some(id) = identity {
            id.apply(&mut cmd);
            // The agent's cwd (e.g. /root) may be unreadable for that user, and PostgreSQL
            // programs fail when they cannot resolve the current directory. All our paths
            // are absolute.
            cmd.current_dir("/");
        }
        // Cancelling the future (e.g. an aborted clone) must not leave the program running.
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        PgCommand {
            cmd,
            line: path.display().to_string(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.line.push(' ');
        self.line.push_str(&arg.to_string_lossy());
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, PgCommand::arg)
    }

    /// Environment for the program; values are not logged (they may be passwords).
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn line(&self) -> &str {
        &self.line
    }

    pub fn inner_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs to completion, capturing output; a non-zero exit is an error carrying stderr.
    pub async fn run(mut self) -> Result<Output> {
        debug!(command = %self.line, "running");
        let output = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| PgError::Spawn {
                command: self.line.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(output);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let text = if stderr.trim().is_empty() {
            String::from_utf8_lossy(&output.stdout).into_owned()
        } else {
            stderr.into_owned()
        };
        Err(PgError::CommandFailed {
            command: self.line,
            status: output.status.to_string(),
            output: tail(&text, ERROR_TAIL_LINES),
        })
    }

    /// Runs with the stdio already configured by the caller; returns the exit status.
    pub async fn status(mut self) -> Result<std::process::ExitStatus> {
        debug!(command = %self.line, "running");
        self.cmd.status().await.map_err(|source| PgError::Spawn {
            command: self.line,
            source,
        })
    }
}
