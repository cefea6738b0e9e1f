//! The virtual IP (`vip:`, docs/compat.md#virtual-ip) between the nodes' namespaces: every
//! node may hold the run's VIP on its `eth0`; a sampler lists who holds it every 20 ms.
//! Checks: it is on the leader only; after the leader node crashes (kill -9 of its agent and
//! PostgreSQL, its link down) it is on the new leader and `psql` through it (from the client
//! namespace) reaches a primary; the crashed node's agent, started again with its link up,
//! removes the address it left behind; a switchover moves
//! it with no sample where two namespaces hold it; after a kill -9 of the leader's agent alone
//! (PostgreSQL running, link up) the address expires from that node and moves to the new
//! leader, again never on two at once. Prints `name=value unit` figures; exit 1 on
//! a violation.

use crate::cluster::{Cluster, API_PORT, NODES, PG_PORT};
use crate::net::Net;
use anyhow::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_bench::report;
use pgherd_testkit::wait::poll;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Whether the namespace `ns` holds `vip` on `eth0` now.
fn holds(ns: &str, vip: &str) -> bool {
    let want = format!("inet {vip}/");
    std::process::Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&want))
}

/// Sets the node namespace's `eth0` up or down.
fn link(ns: &str, state: &str) -> Result<()> {
    let status = std::process::Command::new("ip")
        .args(["-n", ns, "link", "set", "eth0", state])
        .status()?;
    anyhow::ensure!(status.success(), "ip -n {ns} link set eth0 {state} failed");
    Ok(())
}

/// Which nodes hold `vip` now.
fn holders(net: &Net, vip: &str) -> Vec<usize> {
    (0..NODES.len())
        .filter(|&i| holds(&net.host(NODES[i]).ns, vip))
        .collect()
}

/// Samples the holders every 20 ms until dropped; remembers the most holders seen at once
/// since the last [`Sampler::reset`].
struct Sampler {
    stop: Arc<AtomicBool>,
    worst: Arc<Mutex<Vec<usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    #[allow(
        clippy::disallowed_methods,
        reason = "a sampling thread of a synchronous harness"
    )]
    fn start(net: &Net, vip: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let worst = Arc::new(Mutex::new(Vec::new()));
        let namespaces: Vec<String> = NODES.iter().map(|n| net.host(n).ns.clone()).collect();
        let (vip, flag, record) = (vip.to_string(), stop.clone(), worst.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes, longer than any run.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                let now: Vec<usize> = (0..namespaces.len())
                    .filter(|&i| holds(&namespaces[i], &vip))
                    .collect();
                let mut w = record.lock().unwrap_or_else(PoisonError::into_inner);
                if now.len() > w.len() {
                    *w = now;
                }
                drop(w);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            stop,
            worst,
            thread: Some(thread),
        }
    }

    fn reset(&self) {
        self.worst
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Reports the most holders sampled since the last reset (`vip_most_holders_<name>`);
    /// more than one is a violation.
    fn check_one_holder(&self, name: &str, when: &str, violations: &mut Vec<String>) {
        let worst = self
            .worst
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        report(
            &format!("vip_most_holders_{name}"),
            worst.len() as f64,
            "nodes",
        );
        if worst.len() > 1 {
            violations.push(format!(
                "two namespaces held the VIP at once {when}: {worst:?}"
            ));
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn run(net: &Net, root: &Path, pgherd: &Path) -> Result<i32> {
    let mut setup = crate::setup_for("pgherd", false)?;
    setup.vip = true;
    let vip = net.vip();
    let mut c = Cluster::start(net, &root.join("vip"), pgherd, setup)?;
    let mut violations = Vec::new();
    let (leader, _) = c.wait_started(Duration::from_secs(240))?;
    let only = |who: usize| (holders(net, &vip) == [who]).then_some(());
    let step = Duration::from_millis(50);
    if let Err(e) = poll(
        "the VIP on the leader",
        Duration::from_secs(15),
        step,
        || only(leader),
    ) {
        violations.push(format!("{e}: holders {:?}", holders(net, &vip)));
    }
    let sampler = Sampler::start(net, &vip);

    // The leader node crashes: kill -9 of its agent and PostgreSQL, and its link goes down
    // (a dead machine answers no ARP). The new leader takes the address over and announces
    // it, so clients reach the new primary through it.
    let killed_at = Instant::now();
    let pg = c.postgres_pids(leader);
    if let Some(a) = c.agents[leader].as_mut() {
        a.kill9();
    }
    for pid in pg {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let dead_ns = net.host(NODES[leader]).ns.clone();
    link(&dead_ns, "down")?;
    let moved = poll(
        "the VIP on a new leader",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let p = c.primary().filter(|&p| p != leader)?;
            holders(net, &vip).contains(&p).then_some(p)
        },
    );
    let new_leader = match moved {
        Ok(p) => {
            let took = killed_at.elapsed().as_secs_f64();
            report("vip_on_new_leader_after_kill9", took, "s");
            p
        }
        Err(e) => {
            violations.push(e.to_string());
            eprintln!("{}", c.log_tails(40));
            return finish(c, violations);
        }
    };
    let through_vip = poll(
        "a primary through the VIP",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let out = c.sql(&vip, PG_PORT, "select pg_is_in_recovery()").ok()?;
            (out.trim() == "f").then_some(())
        },
    );
    match through_vip {
        Ok(()) => {
            let took = killed_at.elapsed().as_secs_f64();
            report("vip_primary_reachable_after_kill9", took, "s");
        }
        Err(e) => violations.push(e.to_string()),
    }
    link(&dead_ns, "up")?;
    c.start_agent(leader)?;
    if let Err(e) = poll(
        "the leftover VIP removed by the restarted agent",
        Duration::from_secs(60),
        step,
        || only(new_leader),
    ) {
        violations.push(format!("{e}: holders {:?}", holders(net, &vip)));
    }
    if let Err(e) = c.wait_healthy(Duration::from_secs(120)) {
        violations.push(e.to_string());
        // What each node's REST API and agent said, for the report.
        for (i, node) in NODES.iter().enumerate() {
            eprintln!(
                "{node}: /primary {:?} /replica {:?}",
                c.code(i, "/primary"),
                c.code(i, "/replica")
            );
        }
        eprintln!("{}", c.log_tails(40));
        return finish(c, violations);
    }

    // A switchover: never two holders at once.
    sampler.reset();
    let body = format!(r#"{{"leader":"{}"}}"#, NODES[new_leader]);
    let addr = SocketAddr::new(c.node_ip(new_leader).parse()?, API_PORT);
    let started = Instant::now();
    let answer = pgherd_testkit::cluster::http_request_to(
        addr,
        Duration::from_secs(2),
        Duration::from_secs(60),
        "POST",
        "/switchover",
        Some(&body),
    );
    if !matches!(answer, Ok((200, _))) {
        violations.push(format!("switchover answered {answer:?}"));
    }
    let moved = poll(
        "the VIP on the switchover's new leader",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let p = c.primary().filter(|&p| p != new_leader)?;
            only(p).map(|()| p)
        },
    );
    match moved {
        Ok(_) => {
            let took = started.elapsed().as_secs_f64();
            report("vip_on_new_leader_after_switchover", took, "s");
        }
        Err(e) => violations.push(e.to_string()),
    }
    sampler.check_one_holder(
        "during_switchover",
        "during the switchover",
        &mut violations,
    );

    // Kill -9 of the leader's agent alone: PostgreSQL keeps running and the link stays up.
    // The address's lifetime ends no later than the killed agent's leader key could expire,
    // so the kernel removes it before another member can take the key and add it.
    let Some(leader) = c.primary() else {
        violations.push("no primary after the switchover".into());
        drop(sampler);
        return finish(c, violations);
    };
    sampler.reset();
    let killed_ns = net.host(NODES[leader]).ns.clone();
    let killed_at = Instant::now();
    if let Some(a) = c.agents[leader].as_mut() {
        a.kill9();
    }
    match poll(
        "the VIP gone from the node whose agent was killed",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || (!holds(&killed_ns, &vip)).then_some(()),
    ) {
        Ok(()) => report(
            "vip_released_after_agent_kill9",
            killed_at.elapsed().as_secs_f64(),
            "s",
        ),
        Err(e) => violations.push(e.to_string()),
    }
    let moved = poll(
        "the VIP on a new leader after the agent's kill -9",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let p = c.primary().filter(|&p| p != leader)?;
            holders(net, &vip).contains(&p).then_some(p)
        },
    );
    match moved {
        Ok(p) => {
            report(
                "vip_on_new_leader_after_agent_kill9",
                killed_at.elapsed().as_secs_f64(),
                "s",
            );
            // The old PostgreSQL still runs as a primary (no watchdog): the data directory
            // tells which server answers through the VIP.
            let data_dir = |host: &str| c.sql(host, PG_PORT, "show data_directory").ok();
            let want = data_dir(c.node_ip(p));
            match poll(
                "the new primary through the VIP after the agent's kill -9",
                Duration::from_secs(30),
                Duration::from_millis(100),
                || (want.is_some() && data_dir(&vip) == want).then_some(()),
            ) {
                Ok(()) => report(
                    "vip_new_primary_reachable_after_agent_kill9",
                    killed_at.elapsed().as_secs_f64(),
                    "s",
                ),
                Err(e) => violations.push(e.to_string()),
            }
        }
        Err(e) => violations.push(e.to_string()),
    }
    sampler.check_one_holder(
        "after_agent_kill9",
        "after the agent's kill -9",
        &mut violations,
    );
    drop(sampler);
    // The restarted agent takes its PostgreSQL over (and stops it with the cluster).
    c.start_agent(leader)?;
    finish(c, violations)
}

fn finish(mut c: Cluster, violations: Vec<String>) -> Result<i32> {
    c.stop();
    if violations.is_empty() {
        println!("# every VIP check held");
        Ok(0)
    } else {
        for v in &violations {
            eprintln!("VIOLATION: {v}");
        }
        Ok(1)
    }
}
