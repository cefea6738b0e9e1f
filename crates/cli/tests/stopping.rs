//! Stopping is always bounded, whatever state etcd is in: agents and the proxy exit on
//! SIGTERM with etcd (or ZooKeeper) frozen (SIGSTOP), a control command against a frozen etcd says so within
//! seconds, and `pgherd demo` stops on Ctrl-C at any moment of its start-up (or dies by
//! SIGKILL) without leaving a process behind. Processes are found and signalled by PID only.
//! Run serially (`--test-threads=1`).

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous tests: they wait on the test thread and plain threads, no async runtime"
)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use pgherd_testkit::proxy::ProxyProcess;
use pgherd_testkit::wait::poll;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PGHERD: &str = env!("CARGO_BIN_EXE_pgherd");

/// Freezes the store (SIGSTOP by PID) until dropped, also when the test fails.
struct Frozen(i32);

impl Frozen {
    fn etcd(c: &TestCluster) -> Frozen {
        Frozen::store(c)
    }

    fn store(c: &TestCluster) -> Frozen {
        let pid = c.dcs.pid().expect("store pid") as i32;
        kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP the store");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Waits until `pid` is gone (reaped or not ours), up to `limit`; returns how long it took.
fn gone_within(pid: i32, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    poll("process exit", limit, Duration::from_millis(20), || {
        (!alive(pid) || zombie(pid)).then_some(())
    })
    .ok()
    .map(|()| started.elapsed())
}

/// A process that exited but was not reaped yet (our child, until `wait`).
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn agents_and_proxy_exit_on_sigterm_while_etcd_is_frozen() {
    exit_on_sigterm_while_the_store_is_frozen(DcsKind::Etcd, "stop-frozen");
}

#[test]
fn agents_and_proxy_exit_on_sigterm_while_zookeeper_is_frozen() {
    exit_on_sigterm_while_the_store_is_frozen(DcsKind::ZooKeeper, "stop-frozen-zk");
}

fn exit_on_sigterm_while_the_store_is_frozen(dcs: DcsKind, scope: &str) {
    // retry_timeout 3 s (the test default): the documented bound of an agent's stop is
    // PostgreSQL's stop (fast, bounded by pg_ctl_timeout) plus retry_timeout for the DCS.
    let options = ClusterOptions {
        scope: scope.into(),
        dcs,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    c.start_all().expect("agents");
    let leader = c
        .wait_healthy(2, Duration::from_secs(120))
        .expect("healthy cluster");
    let px = ProxyProcess::start(Path::new(PGHERD), &c, "px", false).expect("pgherd proxy");

    let frozen = Frozen::store(&c);
    // Let every member notice: a cycle or two against the frozen store.
    std::thread::sleep(Duration::from_secs(2));

    let proxy_pid = px.pid().expect("proxy pid");
    kill(Pid::from_raw(proxy_pid), Signal::SIGTERM).unwrap();
    let took = gone_within(proxy_pid, Duration::from_secs(15));
    assert!(
        took.is_some(),
        "the proxy ignored SIGTERM with the store frozen"
    );
    println!("proxy exited {:.2?} after SIGTERM", took.unwrap());

    for i in [leader, (leader + 1) % 3, (leader + 2) % 3] {
        let agent = c.agent_pid(i).expect("agent pid");
        let postmaster = c.postmaster_pid(i).expect("postmaster pid");
        kill(Pid::from_raw(agent), Signal::SIGTERM).unwrap();
        let took = gone_within(agent, Duration::from_secs(25));
        assert!(
            took.is_some(),
            "{}'s agent ignored SIGTERM with the store frozen:\n{}",
            c.members[i].name,
            c.log_tail(i, 30)
        );
        println!(
            "{} agent exited {:.2?} after SIGTERM",
            c.members[i].name,
            took.unwrap()
        );
        // It stopped its PostgreSQL before exiting, and said it could not release its keys.
        assert!(
            !alive(postmaster) || zombie(postmaster),
            "postmaster left running"
        );
        let log = c.log_tail(i, 40);
        assert!(log.contains("stopping PostgreSQL"), "{log}");
        assert!(log.contains("could not"), "{log}");
    }
    drop(px);
    drop(frozen);
    c.shutdown();
}

#[test]
fn second_sigterm_exits_at_once() {
    let options = ClusterOptions {
        scope: "stop-twice".into(),
        members: 1,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    c.start_all().expect("agent");
    c.wait_healthy(0, Duration::from_secs(120))
        .expect("healthy");
    let frozen = Frozen::etcd(&c);
    let agent = c.agent_pid(0).expect("agent pid");
    kill(Pid::from_raw(agent), Signal::SIGTERM).unwrap();
    // The first SIGTERM starts the bounded shutdown (PostgreSQL, then the DCS, which hangs);
    // the second one ends the process without waiting for the DCS.
    poll(
        "the agent stopping PostgreSQL",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || c.log_tail(0, 10).contains("SIGTERM received").then_some(()),
    )
    .unwrap();
    kill(Pid::from_raw(agent), Signal::SIGTERM).unwrap();
    let took = gone_within(agent, Duration::from_secs(2));
    assert!(took.is_some(), "{}", c.log_tail(0, 20));
    assert!(
        c.log_tail(0, 10).contains("second signal"),
        "{}",
        c.log_tail(0, 10)
    );
    drop(frozen);
    c.shutdown();
}

#[test]
fn list_against_a_frozen_etcd_fails_within_seconds() {
    let options = ClusterOptions {
        scope: "list-frozen".into(),
        members: 1,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    c.start_all().expect("agent");
    c.wait_healthy(0, Duration::from_secs(120))
        .expect("healthy");
    let frozen = Frozen::etcd(&c);
    let started = Instant::now();
    let out = Command::new(PGHERD)
        .args(["list", "-c"])
        .arg(&c.members[0].config)
        .output()
        .expect("pgherd list");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&c.etcd().client_url()) || stderr.contains("etcd"),
        "{stderr}"
    );
    assert!(
        took < Duration::from_secs(8),
        "pgherd list took {took:?}: {stderr}"
    );
    println!(
        "pgherd list against a frozen etcd: exit 1 after {took:.2?}: {}",
        stderr.trim()
    );
    drop(frozen);
    c.shutdown();
}

#[test]
fn proxy_stops_accepting_and_drains_open_sessions_on_sigterm() {
    let options = ClusterOptions {
        scope: "stop-drain".into(),
        members: 1,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(Path::new(PGHERD), options).expect("cluster directories and etcd");
    c.start_all().expect("agent");
    c.wait_healthy(0, Duration::from_secs(120))
        .expect("healthy");
    let px = ProxyProcess::start_with(Path::new(PGHERD), &c, "px", false, "  drain_timeout: 4s\n")
        .expect("pgherd proxy");
    px.wait_for("the primary routed", |s| {
        s["listeners"][0]["servers"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["state"] == "up"))
    });
    let port = px.primary;
    // A short query in flight through the proxy, and a session that would outlast the drain.
    let busy = std::thread::spawn(move || {
        pgherd_testkit::cluster::psql_with_timeout(port, "select pg_sleep(2), 'finished'", 10)
    });
    let long = std::thread::spawn(move || {
        pgherd_testkit::cluster::psql_with_timeout(port, "select pg_sleep(30)", 10)
    });
    std::thread::sleep(Duration::from_millis(500));
    let pid = px.pid().expect("proxy pid");
    let signalled = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    // New clients are refused at once...
    poll(
        "the listener closed",
        Duration::from_secs(2),
        Duration::from_millis(20),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    )
    .expect("still accepting after SIGTERM");
    // ...the query in flight completes...
    let out = busy
        .join()
        .unwrap()
        .expect("the session in flight completed");
    assert!(out.contains("finished"), "{out}");
    // ...and the long one is cut at drain_timeout, then the proxy exits.
    let took = gone_within(pid, Duration::from_secs(15)).expect("proxy exit");
    let total = signalled.elapsed();
    assert!(
        total >= Duration::from_secs(4),
        "exited before drain_timeout: {total:?}"
    );
    println!("proxy drained and exited {total:.2?} after SIGTERM ({took:.2?} of polling)");
    assert!(
        px.log_tail(20).contains("still open after drain_timeout"),
        "{}",
        px.log_tail(20)
    );
    assert!(
        long.join().unwrap().is_err(),
        "the long session was not closed"
    );
    drop(px);
    c.shutdown();
}

// ---------------------------------------------------------------------------------------
// pgherd demo: Ctrl-C at any moment, SIGKILL, nothing left behind
// ---------------------------------------------------------------------------------------

/// A `pgherd demo` child: its output lines as they come, and every PID it ever had running
/// (its descendants, its worker's process group and the postmasters of its directory),
/// recorded every 20 ms by a tracker thread until the demo exits.
struct Demo {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    pids: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<i32>>>,
    dir: Option<std::path::PathBuf>,
    tracker: Option<std::thread::JoinHandle<()>>,
}

impl Demo {
    fn start() -> Demo {
        use std::io::BufRead;
        let mut child = Command::new(PGHERD)
            .arg("demo")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("pgherd demo");
        let stdout = child.stdout.take().expect("demo stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let pids = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let demo_pid = child.id() as i32;
        let found_dir: std::sync::Arc<std::sync::Mutex<Option<std::path::PathBuf>>> =
            std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = pids.clone();
        let dir_slot = found_dir.clone();
        // Tracks until the demo and every process group it created are gone (a SIGKILLed
        // demo's worker goes on stopping the cluster after the demo itself is gone).
        let tracker = std::thread::spawn(move || {
            use pgherd_testkit::procs;
            let mut groups = std::collections::BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let mut now: Vec<i32> = procs::descendants_of(demo_pid);
                groups.extend(procs::children_of(demo_pid));
                for &g in &groups {
                    now.extend(procs::group_members(g));
                }
                if let Some(dir) = dir_slot.lock().unwrap().clone() {
                    now.extend(procs::postmasters_under(&dir));
                }
                let running = now.iter().any(|&p| procs::alive(p));
                seen.lock().unwrap().extend(now);
                if !running || Instant::now() > deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut d = Demo {
            child,
            lines,
            seen: Vec::new(),
            pids,
            dir: None,
            tracker: Some(tracker),
        };
        let first = d.wait_line("files in ", Duration::from_secs(60));
        let dir = std::path::PathBuf::from(first.split("files in ").nth(1).unwrap().trim());
        *found_dir.lock().unwrap() = Some(dir.clone());
        d.dir = Some(dir);
        d
    }

    /// Waits for an output line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {limit:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Checks that within `limit` (from now, just after the signal) the demo exited, none of
    /// the processes it ever ran is still there, and its directory is gone.
    fn assert_stopped_within(mut self, limit: Duration, what: &str) -> Duration {
        let started = Instant::now();
        let mut exited_after = None;
        let stopped = poll(
            "the demo and everything it started to exit",
            limit,
            Duration::from_millis(20),
            || {
                if exited_after.is_none() && matches!(self.child.try_wait(), Ok(Some(_))) {
                    exited_after = Some(started.elapsed());
                }
                let pids = self.pids.lock().unwrap();
                let running = pids.iter().any(|&p| pgherd_testkit::procs::alive(p));
                (exited_after.is_some() && !running).then_some(())
            },
        );
        let took = started.elapsed();
        let exited = exited_after.ok_or(());
        if exited.is_err() {
            let _ = self.child.kill();
        }
        let _ = stopped;
        let pids = self.pids.lock().unwrap().clone();
        let left: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&p| p != self.pid() && pgherd_testkit::procs::alive(p))
            .collect();
        for &p in &left {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        assert!(
            exited.is_ok(),
            "{what}: the demo did not exit within {limit:?}"
        );
        assert!(
            left.is_empty(),
            "{what}: processes left behind: {left:?} (of {pids:?})"
        );
        if let Some(t) = self.tracker.take() {
            let _ = t.join();
        }
        let dir = self.dir.clone().unwrap();
        assert!(!dir.exists(), "{what}: {} was not removed", dir.display());
        println!(
            "{what}: stopped after {took:.2?}; {} processes tracked, none left",
            pids.len()
        );
        took
    }
}

fn interrupt(d: &Demo) {
    kill(Pid::from_raw(d.pid()), Signal::SIGINT).unwrap();
}

#[test]
fn demo_stops_on_ctrl_c_at_every_stage_of_its_start_up() {
    // Right after etcd started (agents starting, nothing bootstrapped yet).
    let d = Demo::start();
    interrupt(&d);
    d.assert_stopped_within(Duration::from_secs(10), "Ctrl-C after etcd");

    // After the bootstrap: the cluster is healthy, the proxy not started yet.
    let mut d = Demo::start();
    d.wait_line("cluster healthy after", Duration::from_secs(120));
    interrupt(&d);
    d.assert_stopped_within(Duration::from_secs(10), "Ctrl-C after the bootstrap");

    // While the proxy starts: right after the member table.
    let mut d = Demo::start();
    d.wait_line("| node3", Duration::from_secs(120));
    interrupt(&d);
    d.assert_stopped_within(Duration::from_secs(10), "Ctrl-C while the proxy starts");
}

#[test]
fn demo_stops_on_ctrl_c_after_a_member_died_and_leaves_nothing_when_killed() {
    let mut d = Demo::start();
    let node2 = d.wait_line("  node2   agent pid", Duration::from_secs(120));
    let agent: i32 = node2
        .split("agent pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("node2's agent pid");
    d.wait_line(
        "the primary port reaches the leader",
        Duration::from_secs(60),
    );
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    d.wait_line("node2's agent exited", Duration::from_secs(10));
    interrupt(&d);
    d.assert_stopped_within(Duration::from_secs(10), "Ctrl-C after a member died");

    // SIGKILL: the supervisor cannot do anything; its worker notices and stops everything.
    let mut d = Demo::start();
    d.wait_line(
        "the primary port reaches the leader",
        Duration::from_secs(120),
    );
    kill(Pid::from_raw(d.pid()), Signal::SIGKILL).unwrap();
    d.assert_stopped_within(Duration::from_secs(5), "SIGKILL to the demo");
}
