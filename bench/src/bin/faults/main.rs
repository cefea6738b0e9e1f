//! The fault campaign (issue 9, item 5): a 3-node cluster, a 3-member etcd cluster and the
//! proxy, each in network namespaces this program creates and removes, under a client that
//! writes unique ids through the proxy and straight to each node; faults are DROP rules
//! (nftables), SIGKILL and SIGSTOP. For every fault it prints `name=value unit` figures
//! (self-fence, takeover, write gaps, acknowledged writes lost, heal-to-healthy) and checks
//! the invariants: no split-brain write, no acknowledged write lost in synchronous mode,
//! healthy again within a bound after every heal, no failover in the control run.
//!
//! ```sh
//! bench/faults run [--system pgherd|pgherd-patroni-timing|patroni] [--mode async|sync|both]
//!                  [--faults leader_isolated,etcd_unreachable,...]
//! bench/faults short            # ./dev/test's form: sync mode, every fault once, exit 1 on a violation
//! bench/faults soak --minutes N # pgbench write load through the proxy; counts failovers
//! bench/faults vip              # the virtual IP across kill -9 and a switchover (./dev/test)
//! bench/faults cleanup [--all]  # removes what a crashed run left (namespaces, processes, files)
//! ```
//!
//! Runs as root (network namespaces). The outer process makes the namespaces and re-runs
//! itself inside the client namespace (`inner`), and removes everything when that ends.

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous harness: it waits on its own threads, no async runtime"
)]

mod cluster;
mod net;
mod scenario;
mod soak;
mod vip;
mod workload;

use anyhow::{bail, Context, Result};
use cluster::{host_names, Cluster, Setup};
use net::Net;
use pgherd_bench::pgherd_bin;
use pgherd_testkit::cluster::AgentKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ROOT_PREFIX: &str = "/tmp/";
/// After the prefix, in the name of a run directory kept for inspection.
const KEPT: &str = "kept-";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("cleanup") => cleanup(args.iter().any(|a| a == "--all")),
        Some("writer") => workload::writer_main(&args[1..]),
        Some("inner") => {
            let code = inner(&args[1..])?;
            std::process::exit(code);
        }
        Some("run" | "short" | "soak" | "vip") => outer(&args),
        _ => {
            eprintln!(
                "usage: faults run [--system pgherd|pgherd-patroni-timing|patroni] [--mode async|sync|both] [--faults a,b]\n       faults short | vip | soak --minutes N | cleanup [--all]"
            );
            std::process::exit(2);
        }
    }
}

fn cleanup(all: bool) -> Result<()> {
    for ns in net::cleanup(all)? {
        println!("removed namespace {ns}");
    }
    for entry in std::fs::read_dir(ROOT_PREFIX)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(net::PREFIX) else {
            continue;
        };
        // Directories kept on purpose (PGHERD_KEEP_TEST_DIRS) go only with --all.
        if rest.starts_with(KEPT) && !all {
            continue;
        }
        let alive = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(pgherd_testkit::procs::alive);
        if all || !alive {
            let _ = std::fs::remove_dir_all(entry.path());
            println!("removed {}", entry.path().display());
        }
    }
    Ok(())
}

/// Makes the namespaces, runs `inner` in the client namespace, removes everything.
fn outer(args: &[String]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench/faults needs root: it creates network namespaces");
    }
    // What crashed runs left behind.
    cleanup(false)?;
    let tag = std::process::id().to_string();
    let root = tempfile::Builder::new()
        .prefix(&format!("{}{tag}-", net::PREFIX))
        .tempdir_in(ROOT_PREFIX)
        .context("creating the run directory")?;
    let net = Net::create(&tag, &host_names())?;
    let exe = std::env::current_exe().context("locating this program")?;
    let status = net
        .command("client", &exe.to_string_lossy())
        .arg("inner")
        .arg(&tag)
        .arg(root.path())
        .args(args)
        .status()
        .context("running the campaign inside the client namespace")?;
    drop(net);
    if std::env::var_os("PGHERD_KEEP_TEST_DIRS").is_some() {
        let kept = root.keep();
        let name = kept.file_name().map(|n| n.to_string_lossy().to_string());
        let renamed = name
            .and_then(|n| n.strip_prefix(net::PREFIX).map(str::to_string))
            .map(|rest| kept.with_file_name(format!("{}{KEPT}{rest}", net::PREFIX)));
        match renamed {
            Some(to) if std::fs::rename(&kept, &to).is_ok() => println!("# kept {}", to.display()),
            _ => println!("# kept {}", kept.display()),
        }
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(c) => std::process::exit(c),
        None => bail!("the campaign was killed by a signal"),
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Inside the client namespace: `inner TAG ROOT <command> [options]`. Exit code 1 when an
/// invariant was violated.
fn inner(args: &[String]) -> Result<i32> {
    let (tag, root, rest) = match args {
        [tag, root, rest @ ..] => (tag, PathBuf::from(root), rest),
        _ => bail!("inner TAG ROOT COMMAND"),
    };
    let net = Net::describe(tag, &host_names());
    let pgherd = pgherd_bin()?;
    println!("# pgherd binary: {}", pgherd.display());
    match rest.first().map(String::as_str) {
        Some("soak") => {
            let minutes: f64 = flag(rest, "--minutes")
                .and_then(|m| m.parse().ok())
                .unwrap_or(30.0);
            soak::run(&net, &root, &pgherd, minutes)
        }
        Some("vip") => vip::run(&net, &root, &pgherd),
        Some("short") => campaign(
            &net,
            &root,
            &pgherd,
            "pgherd",
            &[true],
            &scenario::ALL,
            true,
        ),
        _ => {
            let system = flag(rest, "--system").unwrap_or("pgherd");
            let modes: &[bool] = match flag(rest, "--mode").unwrap_or("both") {
                "async" => &[false],
                "sync" => &[true],
                _ => &[false, true],
            };
            let faults = match flag(rest, "--faults") {
                Some(list) => list
                    .split(',')
                    .map(|f| {
                        scenario::Fault::parse(f).with_context(|| format!("unknown fault {f}"))
                    })
                    .collect::<Result<Vec<_>>>()?,
                None => scenario::ALL.to_vec(),
            };
            campaign(&net, &root, &pgherd, system, modes, &faults, false)
        }
    }
}

pub fn setup_for(system: &str, synchronous: bool) -> Result<Setup> {
    let patroni_timing = (Some(30), Some(10), Some(10));
    let (agent, (ttl, loop_wait, retry_timeout)) = match system {
        "pgherd" => (AgentKind::Pgherd, (None, None, None)),
        "pgherd-patroni-timing" => (AgentKind::Pgherd, patroni_timing),
        "patroni" => (AgentKind::Patroni, patroni_timing),
        other => bail!("unknown system {other}"),
    };
    Ok(Setup {
        agent,
        synchronous,
        ttl,
        loop_wait,
        retry_timeout,
        vip: false,
    })
}

fn campaign(
    net: &Net,
    root: &Path,
    pgherd: &Path,
    system: &str,
    modes: &[bool],
    faults: &[scenario::Fault],
    short: bool,
) -> Result<i32> {
    let mut violations = Vec::new();
    for &sync in modes {
        let mode = if sync { "sync" } else { "async" };
        let setup = setup_for(system, sync)?;
        // Generous: Patroni's loop is 10 s, and the machine is shared.
        let bound = Duration::from_secs(if setup.agent == AgentKind::Patroni {
            120
        } else {
            60
        });
        let label = format!("{}_{mode}", system.replace('-', "_"));
        let dir = root.join(&label);
        let mut c = Cluster::start(net, &dir, pgherd, setup)?;
        let (leader, took) = match c.wait_started(Duration::from_secs(240)) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{}", c.log_tails(60));
                return Err(e);
            }
        };
        println!(
            "# {label}: cluster healthy after {:.1} s",
            took.as_secs_f64()
        );
        workload::create_table(&c, leader)?;
        for (n, fault) in faults.iter().enumerate() {
            println!("# {label}: {}", fault.name());
            let outcome = scenario::run(&mut c, &label, *fault, n as i64, short, bound)?;
            violations.extend(outcome.violations);
        }
        c.stop();
    }
    if violations.is_empty() {
        println!("# every invariant held");
        Ok(0)
    } else {
        for v in &violations {
            eprintln!("VIOLATION: {v}");
        }
        Ok(1)
    }
}

/// A program in the client namespace, with a deadline: `pgbench` for the soak.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}
