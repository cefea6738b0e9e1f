//! The process table, by PID only (`/proc/<pid>/stat`): parents, process groups, liveness,
//! and the sweep that leaves nothing of a demo or test cluster behind.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// One line of `/proc/<pid>/stat`, the fields we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// `None` when the process does not exist (any more).
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process on the machine, as far as `/proc` shows it.
pub fn all() -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Direct children of `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    all()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

/// `pid` and every process below it (children, grandchildren, ...).
pub fn descendants_of(pid: i32) -> Vec<i32> {
    let table = all();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(table.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    found
}

/// Members of process group `pgrp`.
pub fn group_members(pgrp: i32) -> Vec<i32> {
    all()
        .into_iter()
        .filter(|p| p.pgrp == pgrp)
        .map(|p| p.pid)
        .collect()
}

/// Running (or stopped): exists and is not a zombie waiting to be reaped.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Postmaster PIDs named by `postmaster.pid` files in `root/*/data` (pg_ctl starts the
/// postmaster in a session of its own, so no process group of ours contains it).
pub fn postmasters_under(root: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("data").join("postmaster.pid")).ok())
        .filter_map(|t| t.lines().next()?.trim().parse::<i32>().ok())
        .filter(|&pid| alive(pid))
        .collect()
}

/// Leaves nothing behind: every postmaster under `root` gets an immediate shutdown (SIGQUIT,
/// SIGKILL after a moment), every other member of `group` (but us) SIGKILL, then `root` is
/// removed. For the end of a bounded stop, when asking nicely took too long.
#[allow(
    clippy::disallowed_methods,
    reason = "waits at most 2 s for postmasters to exit; `pgherd demo` calls it from async code on \
              its way out, when no other task needs the thread"
)]
pub fn sweep(root: &Path, group: Option<i32>) {
    let me = std::process::id() as i32;
    let postmasters = postmasters_under(root);
    for &pid in &postmasters {
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
    }
    if let Some(group) = group {
        for pid in group_members(group).into_iter().filter(|&p| p != me) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while postmasters.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in postmasters.iter().filter(|&&p| alive(p)) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = fs::remove_dir_all(root);
}
