//! Planned switchover: how long writes are unavailable and how many write attempts fail.
//!
//! A writer keeps inserting rows through a multi-host connection string with
//! `target_session_attrs=read-write` (what an application without a proxy uses), one attempt
//! after another. Each round asks for a switchover to the next replica with the system's own
//! tool (`pgherd switchover --force` / `patronictl switchover --force`) and measures:
//! - the window: the longest gap between two successful writes around the switchover (last
//!   success before it, first success after);
//! - the failed write attempts during the round (errors, refused or timed-out connections).
//!
//! Both systems run on the same etcd/PostgreSQL 15 with equal settings (ttl, loop_wait,
//! retry_timeout), in the same run. Prints `name=value unit` lines, then the ratios.
//!
//! `cargo build --release && cargo run --release -p pgherd-bench --bin switchover
//!  [ROUNDS] [TTL LOOP_WAIT RETRY_TIMEOUT]` (defaults: 5 rounds, Patroni's 30 10 10).

use anyhow::{bail, Context, Result};
use pgherd_bench::{pgherd_bin, report, summary};
use pgherd_testkit::cluster::{AgentKind, ClusterOptions, TestCluster, SUPERUSER_PASSWORD};
use pgherd_testkit::wait::poll;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct System {
    label: &'static str,
    agent: AgentKind,
}

/// One write attempt: when it ended and whether it committed.
type Attempt = (Instant, bool);

fn main() -> Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(5) as usize;
    let (ttl, loop_wait, retry_timeout) = match args.get(1..4) {
        Some([t, l, r]) => (*t, *l, *r),
        _ => (30, 10, 10),
    };
    eprintln!("switchover bench: {rounds} rounds, ttl={ttl} loop_wait={loop_wait} retry_timeout={retry_timeout}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let systems = [
        System {
            label: "pgherd",
            agent: AgentKind::Pgherd,
        },
        System {
            label: "patroni",
            agent: AgentKind::Patroni,
        },
    ];
    let mut medians = std::collections::BTreeMap::new();
    for system in &systems {
        let options = ClusterOptions {
            agent: system.agent,
            scope: format!("bench-switchover-{}", system.label),
            ttl: Some(ttl),
            loop_wait: Some(loop_wait),
            retry_timeout: Some(retry_timeout),
            ..ClusterOptions::default()
        };
        let (windows, failures) = run_rounds(&runtime, system, options, rounds)
            .with_context(|| format!("{} rounds", system.label))?;
        let (min, med, max) = summary(&windows);
        report(&format!("switchover_window_{}_min", system.label), min, "s");
        report(
            &format!("switchover_window_{}_median", system.label),
            med,
            "s",
        );
        report(&format!("switchover_window_{}_max", system.label), max, "s");
        let (fmin, fmed, fmax) = summary(&failures);
        report(
            &format!("switchover_failed_writes_{}_min", system.label),
            fmin,
            "count",
        );
        report(
            &format!("switchover_failed_writes_{}_median", system.label),
            fmed,
            "count",
        );
        report(
            &format!("switchover_failed_writes_{}_max", system.label),
            fmax,
            "count",
        );
        medians.insert(system.label, (med, fmed));
    }
    if let (Some(p), Some(q)) = (medians.get("pgherd"), medians.get("patroni")) {
        report(
            "switchover_window_ratio_pgherd_over_patroni",
            p.0 / q.0,
            "ratio",
        );
        if q.1 > 0.0 {
            report(
                "switchover_failed_writes_ratio_pgherd_over_patroni",
                p.1 / q.1,
                "ratio",
            );
        }
    }
    Ok(())
}

fn run_rounds(
    rt: &tokio::runtime::Runtime,
    system: &System,
    options: ClusterOptions,
    rounds: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut c = TestCluster::new(&pgherd_bin()?, options)?;
    c.start_all()?;
    let mut leader = healthy(&c)?;
    c.sql(
        leader,
        "create table if not exists bench(id bigserial primary key, at timestamptz default now())",
    )?;
    let ports: Vec<u16> = c.members.iter().map(|m| m.pg_port).collect();
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = rt.spawn(writer(ports, attempts.clone(), stop.clone()));

    let mut windows = Vec::new();
    let mut failures = Vec::new();
    for round in 0..rounds {
        // A steady stream of commits before we start.
        wait_for_commits(&attempts, Duration::from_secs(1), Duration::from_secs(60))?;
        let target = (leader + 1) % c.members.len();
        let target_name = c.members[target].name.clone();
        let started = Instant::now();
        let out = switchover(&c, system, &target_name)?;
        // Done when the target leads and has committed our writes for a second.
        poll(
            "the target to lead",
            Duration::from_secs(120),
            Duration::from_millis(50),
            || (c.leader_index() == Some(target)).then_some(()),
        )?;
        wait_for_commits(&attempts, Duration::from_secs(1), Duration::from_secs(120))?;
        let ended = Instant::now();
        let (window, failed) = measure(&attempts, started, ended);
        eprintln!(
            "{} round {round}: {} -> {target_name}: window {window:.3}s, {failed} failed attempts ({})",
            system.label,
            c.members[leader].name,
            out.lines()
                .find(|l| l.contains("witched over to"))
                .unwrap_or("")
                .trim()
        );
        windows.push(window);
        failures.push(failed as f64);
        // The old leader must be streaming again before the next round.
        leader = healthy(&c)?;
        if leader != target {
            bail!("leader moved to {} after the round", c.members[leader].name);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = rt.block_on(writer);
    Ok((windows, failures))
}

fn healthy(c: &TestCluster) -> Result<usize> {
    let leader = c.wait_healthy(c.members.len() - 1, Duration::from_secs(300))?;
    // Both Patroni's and pgherd's switchover pick targets from the member keys: wait until
    // every member publishes `running` again.
    poll(
        "member keys running",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            let out = Command::new(pgherd_bin().ok()?)
                .args(["list", "-f", "json", "-c"])
                .arg(&c.members[0].config)
                .output()
                .ok()?;
            let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let rows = rows.as_array()?;
            (rows.len() == c.members.len()
                && rows
                    .iter()
                    .all(|r| r["State"] == "running" && !r["Lag in MB"].is_string()))
            .then_some(())
        },
    )?;
    Ok(leader)
}

/// Runs the system's own switchover command; returns its output.
fn switchover(c: &TestCluster, system: &System, candidate: &str) -> Result<String> {
    let config = &c.members[0].config;
    let out = match system.agent {
        AgentKind::Pgherd => Command::new(pgherd_bin()?)
            .args(["switchover", "--candidate", candidate, "--force", "-c"])
            .arg(config)
            .output()?,
        AgentKind::Patroni => Command::new("patronictl")
            .arg("-c")
            .arg(config)
            .args(["switchover", "--candidate", candidate, "--force"])
            .output()?,
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || !text.contains("witched over to") {
        bail!(
            "{} switchover failed: {text}{}",
            system.label,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

/// Waits until the writer committed continuously for `span` (no failure in it).
fn wait_for_commits(attempts: &Mutex<Vec<Attempt>>, span: Duration, limit: Duration) -> Result<()> {
    poll("steady commits", limit, Duration::from_millis(50), || {
        let now = Instant::now();
        let log = attempts.lock().ok()?;
        let recent: Vec<&Attempt> = log
            .iter()
            .rev()
            .take_while(|(at, _)| now.duration_since(*at) <= span)
            .collect();
        let oldest_ok = log
            .iter()
            .rev()
            .take_while(|(_, ok)| *ok)
            .last()
            .map(|(at, _)| *at)?;
        (!recent.is_empty()
            && recent.iter().all(|(_, ok)| *ok)
            && now.duration_since(oldest_ok) >= span)
            .then_some(())
    })
}

/// The longest gap between consecutive commits that overlaps [started, ended], and the
/// failed attempts that ended in it.
fn measure(attempts: &Mutex<Vec<Attempt>>, started: Instant, ended: Instant) -> (f64, usize) {
    let log = match attempts.lock() {
        Ok(log) => log,
        Err(poisoned) => poisoned.into_inner(),
    };
    let last_before = log
        .iter()
        .filter(|(at, ok)| *ok && *at <= started)
        .map(|(at, _)| *at)
        .next_back()
        .unwrap_or(started);
    let commits: Vec<Instant> = std::iter::once(last_before)
        .chain(
            log.iter()
                .filter(|(at, ok)| *ok && *at > started && *at <= ended)
                .map(|(at, _)| *at),
        )
        .collect();
    let window = commits
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .fold(0.0, f64::max);
    let failed = log
        .iter()
        .filter(|(at, ok)| !*ok && *at > started && *at <= ended)
        .count();
    (window, failed)
}

/// Inserts one row per attempt over a read-write session; reconnects after any error.
async fn writer(
    ports: Vec<u16>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let conf = format!(
        "host={hosts} port={} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres \
         connect_timeout=1 target_session_attrs=read-write",
        port_list.join(",")
    );
    let mut client: Option<tokio_postgres::Client> = None;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let ok = match client.as_ref() {
            Some(cl) => matches!(
                tokio::time::timeout(
                    Duration::from_secs(1),
                    cl.execute("insert into bench default values", &[])
                )
                .await,
                Ok(Ok(_))
            ),
            None => {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio_postgres::connect(&conf, tokio_postgres::NoTls),
                )
                .await
                {
                    Ok(Ok((cl, conn))) => {
                        tokio::spawn(conn);
                        let ok = matches!(
                            tokio::time::timeout(
                                Duration::from_secs(1),
                                cl.execute("insert into bench default values", &[])
                            )
                            .await,
                            Ok(Ok(_))
                        );
                        client = Some(cl);
                        ok
                    }
                    _ => false,
                }
            }
        };
        if !ok {
            client = None;
        }
        if let Ok(mut log) = attempts.lock() {
            log.push((Instant::now(), ok));
        }
        // About 100 attempts per second, whatever the outcome.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
