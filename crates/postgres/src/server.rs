//! Server lifecycle through pg_ctl: start, stop (with escalation), restart, reload, promote.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::{sleep, Instant};
use tracing::{info, warn};

use crate::error::{PgError, Result};
use crate::fsutil::{self, tail};
use crate::options::StopMode;
use crate::postgres::Postgres;

const LOG_TAIL_LINES: usize = 20;

/// What `stop` had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Nothing was running.
    NotRunning,
    /// Stopped by pg_ctl in this mode (the requested one, or `Immediate` after escalation).
    Stopped(StopMode),
    /// Neither mode worked in time; the postmaster and its children were SIGKILLed.
    Killed,
}

/// pg_ctl hands `-o` to /bin/sh, so each argument is single-quoted for the shell.
pub(crate) fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn whole_seconds(d: Duration) -> String {
    d.as_secs().max(1).to_string()
}

impl Postgres {
    /// `pg_ctl start -w`: returns once the server accepts connections (a standby: read-only
    /// ones). On timeout the server keeps starting and [`PgError::StartTimeout`] is returned.
    pub async fn start(&self) -> Result<()> {
        self.pg_ctl_start(true).await
    }

    /// `pg_ctl start -W`: returns as soon as the postmaster was launched.
    pub async fn start_no_wait(&self) -> Result<()> {
        self.pg_ctl_start(false).await
    }

    async fn pg_ctl_start(&self, wait: bool) -> Result<()> {
        if let Some(pm) = self.is_running() {
            return Err(PgError::AlreadyRunning { pid: pm.pid });
        }
        self.ensure_initialized("start")?;
        self.ensure_socket_dir()?;
        let log_path = self.opts.log_file();
        if let Some(dir) = log_path.parent() {
            fsutil::ensure_dir(dir, 0o700, self.owner())?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| PgError::io("open server log", &log_path, e))?;
        fsutil::chown(&log_path, self.owner())?;
        let log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
        let log_err = log
            .try_clone()
            .map_err(|e| PgError::io("duplicate handle of", &log_path, e))?;

        let config = format!("--config-file={}", self.opts.postgresql_conf().display());
        let mut cmd = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(&self.opts.data_dir)
            .arg("-o")
            .arg(shell_quote(&config));
        cmd = if wait {
            cmd.arg("-w")
                .arg("-t")
                .arg(whole_seconds(self.opts.pg_ctl_timeout))
        } else {
            cmd.arg("-W")
        };
        // The postmaster inherits these: its log goes to the file, not to the agent. Its own
        // process group keeps a Ctrl-C on the agent's terminal away from it (pg_ctl also
        // calls setsid), so PostgreSQL survives the agent.
        cmd.inner_mut()
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false);
        let line = cmd.line().to_string();
        info!(command = %line, log = %log_path.display(), "starting PostgreSQL");
        let status = cmd.status().await?;
        if status.success() {
            info!(pid = ?self.is_running().map(|pm| pm.pid), "PostgreSQL started");
            return Ok(());
        }
        let log_tail = read_log_since(&log_path, log_start);
        if wait && self.is_running().is_some() {
            warn!(timeout = ?self.opts.pg_ctl_timeout, "PostgreSQL is still starting after pg_ctl_timeout");
            return Err(PgError::StartTimeout {
                timeout: self.opts.pg_ctl_timeout,
                log_tail,
            });
        }
        Err(PgError::CommandFailed {
            command: line,
            status: status.to_string(),
            output: log_tail,
        })
    }

    /// Stops the server: `mode` first; if that does not finish within `timeout`, immediate;
    /// then SIGKILL (Patroni's escalation).
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome> {
        let Some(pm) = self.is_running() else {
            return Ok(StopOutcome::NotRunning);
        };
        if pm.single_user {
            return Err(PgError::SingleUser { pid: pm.pid });
        }
        self.conn.reset().await;
        info!(mode = mode.as_str(), pid = pm.pid, "stopping PostgreSQL");
        let modes: &[StopMode] = if mode == StopMode::Immediate {
            &[StopMode::Immediate]
        } else {
            &[mode, StopMode::Immediate]
        };
        for &m in modes {
            match self.pg_ctl_stop(m, timeout).await {
                Ok(()) => {
                    info!(mode = m.as_str(), "PostgreSQL stopped");
                    return Ok(StopOutcome::Stopped(m));
                }
                Err(e) if self.is_running().is_none() => {
                    // It went away on its own while pg_ctl was looking for it.
                    info!(error = %e, "PostgreSQL stopped");
                    return Ok(StopOutcome::Stopped(m));
                }
                Err(e) => {
                    warn!(mode = m.as_str(), error = %e, "pg_ctl stop did not finish; escalating")
                }
            }
        }
        self.kill_postmaster(pm.pid, timeout).await
    }

    async fn pg_ctl_stop(&self, mode: StopMode, timeout: Duration) -> Result<()> {
        self.command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.opts.data_dir)
            .arg("-m")
            .arg(mode.as_str())
            .arg("-w")
            .arg("-t")
            .arg(whole_seconds(timeout))
            .run()
            .await
            .map(drop)
    }

    async fn kill_postmaster(&self, pid: i32, timeout: Duration) -> Result<StopOutcome> {
        warn!(pid, "sending SIGKILL to the postmaster and its children");
        // Children first would race with the postmaster forking new ones; stop it first.
        let postmaster = Pid::from_raw(pid);
        let _ = kill(postmaster, Signal::SIGSTOP);
        for child in children_of(pid) {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        let _ = kill(postmaster, Signal::SIGKILL);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_running().is_none() || kill(postmaster, None).is_err() {
                return Ok(StopOutcome::Killed);
            }
            sleep(Duration::from_millis(100)).await;
        }
        Err(PgError::StopFailed { pid })
    }

    /// Fast stop, then start (`pg_ctl_timeout` for each).
    pub async fn restart(&self) -> Result<()> {
        self.stop(StopMode::Fast, self.opts.pg_ctl_timeout).await?;
        self.start().await
    }

    /// `pg_ctl reload`: re-read configuration files (SIGHUP).
    pub async fn reload(&self) -> Result<()> {
        if self.is_running().is_none() {
            return Err(PgError::NotRunning);
        }
        self.command("pg_ctl")
            .arg("reload")
            .arg("-D")
            .arg(&self.opts.data_dir)
            .run()
            .await?;
        info!("PostgreSQL configuration reloaded");
        Ok(())
    }

    /// `pg_ctl promote`; with `wait`, returns once the server accepts writes.
    pub async fn promote(&self, wait: bool) -> Result<()> {
        if self.is_running().is_none() {
            return Err(PgError::NotRunning);
        }
        let cmd = self
            .command("pg_ctl")
            .arg("promote")
            .arg("-D")
            .arg(&self.opts.data_dir);
        let cmd = if wait {
            cmd.arg("-w")
                .arg("-t")
                .arg(whole_seconds(self.opts.pg_ctl_timeout))
        } else {
            cmd.arg("-W")
        };
        cmd.run().await?;
        info!(wait, "PostgreSQL promoted");
        Ok(())
    }

    /// The socket directory must exist and be writable by the server.
    pub(crate) fn ensure_socket_dir(&self) -> Result<()> {
        fsutil::ensure_dir(&self.opts.socket_dir, 0o755, self.owner()).map(drop)
    }
}

fn read_log_since(path: &std::path::Path, offset: u64) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        // Only the last 16 KiB of this attempt matter.
        let from = offset.max(len.saturating_sub(16 * 1024));
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
    }
    tail(&text, LOG_TAIL_LINES)
}

/// Direct children of `pid`, from /proc (empty where /proc is unavailable).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(
            shell_quote("--config-file=/a b/c.conf"),
            "'--config-file=/a b/c.conf'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn finds_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = children_of(std::process::id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert!(kids.contains(&(child.id() as i32)), "{kids:?}");
    }
}
