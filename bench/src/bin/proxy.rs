//! The proxy against Debian's HAProxy, same cluster (real etcd + three PostgreSQL 15 + pgherd
//! agents): pgbench `-S` and `-S -C` TPS and latency directly to the primary, through
//! `pgherd proxy`, and through HAProxy configured like the reference stack (`option httpchk
//! OPTIONS /master`, `inter 3s fall 3 rise 2 on-marked-down shutdown-sessions`); the proxy's
//! RSS with 10,000 idle clients; and the time from a leader kill to the first successful
//! write directly, through pgherd and through HAProxy. Prints `name=value unit` lines, then the
//! ratios.
//!
//! `cargo build --release && cargo run --release -p pgherd-bench --bin proxy [SECONDS] [ROUNDS]`
//! (SECONDS per pgbench run, default 6; ROUNDS of six runs, default 6; about six minutes).
//!
//! On two shared cores a single pgbench run varies by ±10 %, so besides the medians of each
//! target the bench prints the median of the per-round ratios: pgherd and HAProxy run back to
//! back within a round, which cancels most of the drift between rounds.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_bench::{pgherd_bin, report, summary};
use pgherd_testkit::cluster::{http_request, ClusterOptions, TestCluster, SUPERUSER_PASSWORD};
use pgherd_testkit::ports::free_ports;
use pgherd_testkit::wait::poll;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
const HAPROXY: &str = "/usr/sbin/haproxy";
const CLIENTS: &str = "16";
const IDLE_CLIENTS: usize = 10_000;
const ROUNDS: usize = 6;
/// Pause before each pgbench run (see the order of the runs below).
const SETTLE: Duration = Duration::from_secs(2);

/// A child process stopped by PID on drop.
struct Guard(Option<Child>);

impl Guard {
    fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |c| c.id() as i32)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
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

#[allow(
    clippy::disallowed_methods,
    reason = "a synchronous benchmark driver: pauses its own threads, no async runtime"
)]
fn main() -> Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(6);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(ROUNDS);
    let pgherd = pgherd_bin()?;
    eprintln!("pgherd binary: {}", pgherd.display());
    let options = ClusterOptions {
        scope: "benchpx".into(),
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(&pgherd, options)?;
    c.start_all()?;
    let leader = c.wait_healthy(2, Duration::from_secs(120))?;
    eprintln!("cluster healthy, leader {}", c.members[leader].name);

    // pgherd proxy and HAProxy, side by side.
    let ports = free_ports(4)?;
    let (px_primary, px_replicas, px_stats, ha_primary) = (ports[0], ports[1], ports[2], ports[3]);
    let etcd = c.etcd().client_url();
    let px_cfg = c.root.join("proxy.yml");
    std::fs::write(
        &px_cfg,
        format!(
            "scope: benchpx\nnamespace: /service/\netcd3:\n  hosts: {}\nproxy:\n  name: bench\n  listeners:\n    - name: primary\n      bind: 127.0.0.1:{px_primary}\n      role: primary\n    - name: replicas\n      bind: 127.0.0.1:{px_replicas}\n      role: replica\n  stats:\n    bind: 127.0.0.1:{px_stats}\n",
            etcd.trim_start_matches("http://")
        ),
    )?;
    let px_log = std::fs::File::create(c.root.join("proxy.log"))?;
    let px = Guard(Some(
        Command::new(&pgherd)
            .arg("proxy")
            .arg(&px_cfg)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(px_log.try_clone()?)
            .stderr(px_log)
            .spawn()
            .context("starting pgherd proxy")?,
    ));
    let ha_cfg = c.root.join("haproxy.cfg");
    let mut ha = String::from(
        "global\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 3s\n  timeout client 30m\n  timeout server 30m\n  timeout check 2s\n",
    );
    ha.push_str(&format!(
        "listen primary\n  bind 127.0.0.1:{ha_primary}\n  maxconn 9000\n  option httpchk OPTIONS /master\n  http-check expect status 200\n  default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n"
    ));
    for m in &c.members {
        ha.push_str(&format!(
            "  server {} 127.0.0.1:{} maxconn 1000 check port {}\n",
            m.name, m.pg_port, m.api_port
        ));
    }
    std::fs::write(&ha_cfg, ha)?;
    let ha_log = std::fs::File::create(c.root.join("haproxy.log"))?;
    let haproxy = Guard(Some(
        Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&ha_cfg)
            .stdin(Stdio::null())
            .stdout(ha_log.try_clone()?)
            .stderr(ha_log)
            .spawn()
            .context("starting haproxy")?,
    ));
    let direct = c.members[leader].pg_port;
    for (what, port) in [("pgherd proxy", px_primary), ("haproxy", ha_primary)] {
        poll(
            what,
            Duration::from_secs(60),
            Duration::from_millis(100),
            || (psql(port, "select pg_is_in_recovery()", 5).ok()? == "f").then_some(()),
        )?;
    }

    // pgbench -S and -S -C.
    run(Command::new(PGBENCH)
        .args([
            "-i",
            "-q",
            "-s",
            "10",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
        ])
        .arg(direct.to_string())
        .arg("postgres"))?;
    // The order alternates between rounds (direct, pgherd, haproxy, then the reverse), so
    // pgherd and HAProxy each run first as often as second: a run leaves exiting backends
    // and TIME_WAIT sockets behind that would otherwise favour whichever always runs later.
    // Each run starts after a short settle pause for the same reason.
    let targets = [
        ("direct", direct),
        ("pgherd", px_primary),
        ("haproxy", ha_primary),
    ];
    let mut samples: Vec<(usize, &str, &str, f64, f64)> = Vec::new();
    for round in 0..rounds {
        for (mode, extra) in [("select", &[][..]), ("select_connect", &["-C"][..])] {
            for k in 0..targets.len() {
                let k = if round % 2 == 0 {
                    k
                } else {
                    targets.len() - 1 - k
                };
                let (target, port) = targets[k];
                std::thread::sleep(SETTLE);
                let (tps, lat) = pgbench(port, seconds, extra)?;
                eprintln!("round {round} {mode} {target}: {tps:.0} tps, {lat:.3} ms");
                samples.push((round, mode, target, tps, lat));
            }
        }
    }
    let median = |mode: &str, target: &str, latency: bool| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|r| r.1 == mode && r.2 == target)
            .map(|r| if latency { r.4 } else { r.3 })
            .collect();
        summary(&v).1
    };
    for mode in ["select", "select_connect"] {
        for (target, _) in targets {
            report(
                &format!("pgbench_{mode}_{target}_tps"),
                median(mode, target, false),
                "tps",
            );
            report(
                &format!("pgbench_{mode}_{target}_latency_avg"),
                median(mode, target, true),
                "ms",
            );
        }
    }
    let tps = |mode: &str, target: &str| median(mode, target, false);
    // Per-round ratios pgherd / other target, then their median.
    let paired = |mode: &str, other: &str| {
        let at = |round: usize, target: &str| {
            samples
                .iter()
                .find(|r| r.0 == round && r.1 == mode && r.2 == target)
                .map_or(f64::NAN, |r| r.3)
        };
        let ratios: Vec<f64> = (0..rounds)
            .map(|round| at(round, "pgherd") / at(round, other))
            .collect();
        summary(&ratios)
    };

    // 10,000 idle clients on the primary listener.
    let rss0 = rss_kb(px.pid());
    let mut idle = Vec::with_capacity(IDLE_CLIENTS);
    for _ in 0..IDLE_CLIENTS {
        idle.push(TcpStream::connect(("127.0.0.1", px_primary))?);
    }
    poll(
        "10,000 clients accepted",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let (code, body) = http_request(px_stats, "GET", "/stats.json", None).ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["listeners"][0]["clients"].as_u64()? >= IDLE_CLIENTS as u64)
                .then_some(())
        },
    )?;
    let rss_idle = rss_kb(px.pid());
    // Still serving with them connected.
    psql(px_primary, "select 1", 5)?;
    drop(idle);
    report("proxy_rss_before_idle_clients", rss0 as f64 / 1024.0, "MiB");
    report(
        "proxy_rss_10k_idle_clients",
        rss_idle as f64 / 1024.0,
        "MiB",
    );
    report(
        "proxy_rss_per_idle_client",
        (rss_idle.saturating_sub(rss0)) as f64 * 1024.0 / IDLE_CLIENTS as f64,
        "bytes",
    );
    report("proxy_peak_rss", peak_kb(px.pid()) as f64 / 1024.0, "MiB");

    // Leader kill: first successful write directly, through pgherd, through HAProxy.
    psql(
        direct,
        "create table if not exists probe(at timestamptz)",
        5,
    )?;
    let others: Vec<u16> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| c.members[i].pg_port)
        .collect();
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    c.signal_node(leader, Signal::SIGKILL)?;
    let deadline = Duration::from_secs(90);
    for (label, ports, timeout) in [
        ("direct", others.clone(), 1u64),
        ("pgherd", vec![px_primary], 60),
        ("haproxy", vec![ha_primary], 1),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            while start.elapsed() < deadline {
                for &p in &ports {
                    if psql(p, "insert into probe values (now())", timeout).is_ok() {
                        let _ = tx.send((label, start.elapsed().as_secs_f64()));
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }
    drop(tx);
    let mut failover = Vec::new();
    for (label, secs) in rx.iter() {
        report(&format!("failover_first_write_{label}"), secs, "s");
        failover.push((label, secs));
    }
    let f = |l: &str| failover.iter().find(|r| r.0 == l).map_or(f64::NAN, |r| r.1);

    println!("--- ratios ---");
    for mode in ["select", "select_connect"] {
        report(
            &format!("ratio_{mode}_pgherd_over_haproxy"),
            tps(mode, "pgherd") / tps(mode, "haproxy"),
            "x",
        );
        report(
            &format!("ratio_{mode}_pgherd_over_direct"),
            tps(mode, "pgherd") / tps(mode, "direct"),
            "x",
        );
        let (lo, mid, hi) = paired(mode, "haproxy");
        report(
            &format!("ratio_{mode}_pgherd_over_haproxy_paired_median"),
            mid,
            "x",
        );
        report(
            &format!("ratio_{mode}_pgherd_over_haproxy_paired_min"),
            lo,
            "x",
        );
        report(
            &format!("ratio_{mode}_pgherd_over_haproxy_paired_max"),
            hi,
            "x",
        );
    }
    report(
        "failover_pgherd_minus_direct",
        f("pgherd") - f("direct"),
        "s",
    );
    report(
        "failover_haproxy_minus_pgherd",
        f("haproxy") - f("pgherd"),
        "s",
    );
    drop(haproxy);
    drop(px);
    Ok(())
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.env("PGPASSWORD", SUPERUSER_PASSWORD).output()?;
    if !out.status.success() {
        bail!("{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pgbench(port: u16, seconds: u64, extra: &[&str]) -> Result<(f64, f64)> {
    let out = run(Command::new(PGBENCH)
        .args([
            "-n",
            "-S",
            "-c",
            CLIENTS,
            "-j",
            "2",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-T",
        ])
        .arg(seconds.to_string())
        .args(extra)
        .arg("-p")
        .arg(port.to_string())
        .arg("postgres"))?;
    let find = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let tps = find("tps").context("pgbench printed no tps")?;
    let lat = find("latency average").context("pgbench printed no latency")?;
    Ok((tps, lat))
}

fn psql(port: u16, sql: &str, connect_timeout: u64) -> Result<String> {
    pgherd_testkit::cluster::psql_with_timeout(port, sql, connect_timeout)
}

fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kb(pid: i32) -> u64 {
    status_kb(pid, "VmRSS:")
}

fn peak_kb(pid: i32) -> u64 {
    status_kb(pid, "VmHWM:")
}
