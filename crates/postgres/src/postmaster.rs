//! Is a postmaster running on our data directory? Decided from `postmaster.pid` and the
//! process table, never from process names.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::Serialize;
use tracing::debug;

/// Readiness written by the postmaster into line 8 of postmaster.pid (PostgreSQL 10+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PostmasterStatus {
    Starting,
    Stopping,
    /// Accepting read-write connections.
    Ready,
    /// A hot standby accepting read-only connections.
    Standby,
}

/// A live postmaster (or single-user backend) owning the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostmasterInfo {
    pub pid: i32,
    /// `postgres --single` (e.g. crash recovery) holds the directory; it cannot be signalled.
    pub single_user: bool,
    /// Start time in seconds since the epoch, from postmaster.pid.
    pub start_time: i64,
    pub port: Option<u16>,
    pub status: Option<PostmasterStatus>,
}

/// Parses postmaster.pid (no liveness check).
pub(crate) fn parse_pidfile(text: &str) -> Option<PostmasterInfo> {
    let lines: Vec<&str> = text.lines().collect();
    let raw_pid: i32 = lines.first()?.trim().parse().ok()?;
    if raw_pid == 0 || raw_pid == i32::MIN {
        return None;
    }
    let status = match lines.get(7).map(|s| s.trim()) {
        Some("starting") => Some(PostmasterStatus::Starting),
        Some("stopping") => Some(PostmasterStatus::Stopping),
        Some("ready") => Some(PostmasterStatus::Ready),
        Some("standby") => Some(PostmasterStatus::Standby),
        _ => None,
    };
    Some(PostmasterInfo {
        pid: raw_pid.abs(),
        single_user: raw_pid < 0,
        start_time: lines
            .get(2)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        port: lines.get(3).and_then(|s| s.trim().parse().ok()),
        status,
    })
}

/// The running postmaster of `data_dir`, if any.
pub(crate) fn running_postmaster(data_dir: &Path) -> Option<PostmasterInfo> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let info = parse_pidfile(&text)?;
    let pid = Pid::from_raw(info.pid);
    // A stale pid file may name ourselves or our parent after a reboot or container restart.
    if pid == nix::unistd::getpid() || pid == nix::unistd::getppid() {
        return None;
    }
    match kill(pid, None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return None,
    }
    match proc_stat(info.pid) {
        Some(stat) if stat.zombie => return None,
        Some(stat) => {
            // A reused pid belongs to a process started at another time (Patroni: 3 s slack).
            if let Some(started) = stat.start_time {
                if info.start_time != 0 && (started - info.start_time).abs() > 3 {
                    debug!(
                        pid = info.pid,
                        pidfile_start = info.start_time,
                        process_start = started,
                        "postmaster.pid names an unrelated process"
                    );
                    return None;
                }
            }
        }
        None => {}
    }
    Some(info)
}

struct ProcStat {
    zombie: bool,
    /// Seconds since the epoch.
    start_time: Option<i64>,
}

/// Linux /proc details; `None` where /proc is unavailable.
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself contain spaces and parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let zombie = fields.first() == Some(&"Z");
    let start_ticks: Option<i64> = fields.get(19).and_then(|s| s.parse().ok());
    Some(ProcStat {
        zombie,
        start_time: start_ticks.zip(boot_time()).and_then(|(ticks, btime)| {
            let hz = clock_ticks_per_second()?;
            Some(btime + ticks / hz)
        }),
    })
}

fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

// c_long is i32 on 32-bit targets, so the conversion is not useless everywhere.
// unsafe: one libc call (see SAFETY below).
#[allow(clippy::useless_conversion, unsafe_code)]
fn clock_ticks_per_second() -> Option<i64> {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    i64::try_from(hz).ok().filter(|hz| *hz > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIDFILE: &str = "12345\n/var/lib/postgresql/15/main\n1700000000\n5432\n/var/run/postgresql\n*\n  5432001         3\nready   \n";

    #[test]
    fn parses_pidfile() {
        let info = parse_pidfile(PIDFILE).unwrap();
        assert_eq!(info.pid, 12345);
        assert!(!info.single_user);
        assert_eq!(info.start_time, 1_700_000_000);
        assert_eq!(info.port, Some(5432));
        assert_eq!(info.status, Some(PostmasterStatus::Ready));
        let single = parse_pidfile("-777\n/d\n1700000000\n").unwrap();
        assert!(single.single_user);
        assert_eq!(single.pid, 777);
        assert_eq!(single.status, None);
        assert!(parse_pidfile("").is_none());
        assert!(parse_pidfile("garbage\n").is_none());
    }

    #[test]
    fn stale_pidfiles_are_not_running() {
        let dir = tempfile::tempdir().unwrap();
        assert!(running_postmaster(dir.path()).is_none());
        // Our own pid: a stale file after a container restart.
        let me = std::process::id();
        std::fs::write(dir.path().join("postmaster.pid"), format!("{me}\n/d\n0\n")).unwrap();
        assert!(running_postmaster(dir.path()).is_none());
        // pid 1 exists but started long before this "postmaster".
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(dir.path().join("postmaster.pid"), format!("1\n/d\n{now}\n")).unwrap();
        if std::process::id() != 1 && nix::unistd::getppid().as_raw() != 1 {
            assert!(running_postmaster(dir.path()).is_none());
        }
    }

    #[test]
    fn reads_own_process_start_time() {
        let stat = proc_stat(std::process::id() as i32).unwrap();
        assert!(!stat.zombie);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let started = stat.start_time.unwrap();
        assert!(
            started <= now + 1 && started > now - 3600,
            "{started} vs {now}"
        );
    }
}
