//! Peer processes of the benchmarks (HAProxy, pgbouncer, Pgpool-II, pgherd proxies): started
//! with their output in a log, stopped by PID, run as the `postgres` OS user when the bench
//! runs as root (pgbouncer and Pgpool-II refuse root, like PostgreSQL).

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_testkit::wait::poll;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process stopped by PID on drop: `stop` first (pgpool needs SIGINT, its fast
/// shutdown; SIGTERM waits for every client), SIGKILL after 5 s.
pub struct Guard {
    child: Option<Child>,
    stop: Signal,
}

impl Guard {
    pub fn new(child: Child, stop: Signal) -> Guard {
        Guard {
            child: Some(child),
            stop,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Fails when the process has already exited (a peer that refused its configuration).
    pub fn check_running(&mut self, what: &str, log: &Path) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                bail!("{what} exited ({status}):\n{text}");
            }
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), self.stop);
            let done = poll(
                "exit",
                Duration::from_secs(5),
                Duration::from_millis(20),
                || c.try_wait().ok().flatten(),
            );
            if done.is_err() {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
                let _ = c.wait();
            }
        }
    }
}

/// Starts `cmd` with stdout and stderr into `log`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?)
}

/// Runs `cmd` as the `postgres` OS user when we are root.
pub fn as_postgres(cmd: &mut Command) -> Result<&mut Command> {
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres")?.context(
            "pgbouncer and Pgpool-II refuse root: the OS user postgres is missing (./dev/setup)",
        )?;
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("HOME", &user.dir);
    }
    Ok(cmd)
}

/// Makes a file (a password file among them) readable by the `postgres` OS user only.
pub fn give_to_postgres(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if nix::unistd::geteuid().is_root() {
        if let Some(user) = nix::unistd::User::from_name("postgres")? {
            nix::unistd::chown(path, Some(user.uid), Some(user.gid))?;
        }
    }
    Ok(())
}

/// Debian's HAProxy in the foreground (`-db`) with configuration `cfg`, its output in `log`.
pub fn haproxy(cfg: &Path, log: &Path) -> Result<Guard> {
    Ok(Guard::new(
        spawn_logged(
            Command::new("/usr/sbin/haproxy")
                .arg("-db")
                .arg("-f")
                .arg(cfg),
            log,
        )
        .context("starting haproxy")?,
        Signal::SIGTERM,
    ))
}
