//! A server child process (etcd, ZooKeeper) controlled by PID: stop (SIGTERM, then SIGKILL),
//! kill, SIGSTOP/SIGCONT, and its log file.

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::Path;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(50);

/// The running process of one server, `None` when stopped.
#[derive(Default)]
pub(crate) struct ServerChild {
    /// `etcd`, `ZooKeeper`: named in errors.
    what: &'static str,
    pub child: Option<Child>,
}

impl ServerChild {
    pub fn new(what: &'static str) -> ServerChild {
        ServerChild { what, child: None }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM (plus SIGCONT, in case it is paused), then SIGKILL if it has not exited within
    /// 10 s; the child is reaped. A no-op when not running.
    #[allow(
        clippy::disallowed_methods,
        reason = "synchronous harness: blocks the calling test or spawn_blocking thread, never a runtime worker"
    )]
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = pid_of(&child);
        // Errors mean it already exited; `wait` below reaps it either way.
        let _ = kill(pid, Signal::SIGTERM);
        let _ = kill(pid, Signal::SIGCONT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child
                .try_wait()
                .with_context(|| format!("waiting for {} to exit", self.what))?
                .is_some()
            {
                return Ok(());
            }
            thread::sleep(POLL_EVERY);
        }
        let _ = kill(pid, Signal::SIGKILL);
        child
            .wait()
            .with_context(|| format!("reaping {} after SIGKILL", self.what))?;
        Ok(())
    }

    /// SIGKILL, then reap. A no-op when not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = kill(pid_of(&child), Signal::SIGKILL);
        child
            .wait()
            .with_context(|| format!("reaping {} after SIGKILL", self.what))?;
        Ok(())
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let child = self
            .child
            .as_ref()
            .with_context(|| format!("{} is not running", self.what))?;
        kill(pid_of(child), signal).with_context(|| format!("sending {signal} to {}", self.what))
    }
}

pub(crate) fn log_mentions(log: &Path, needle: &str) -> bool {
    fs::read_to_string(log).is_ok_and(|log| log.contains(needle))
}

/// The last 20 lines of `log`.
pub(crate) fn log_tail(log: &Path) -> String {
    let log = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn pid_of(child: &Child) -> Pid {
    // Linux PIDs fit in i32 (pid_max <= 2^22).
    Pid::from_raw(child.id() as i32)
}
