//! The soak: pgherd at its defaults (asynchronous), etcd's data on disk, pgbench's write load
//! through the proxy for N minutes; a healthy cluster must not fail over even once. Prints
//! the failovers seen (the primary sampled every second, and the timeline at the end), the
//! minutes run and pgbench's figures.

use crate::cluster::{Cluster, PROXY_WRITE_PORT};
use crate::{run_checked, setup_for};
use anyhow::{Context, Result};
use pgherd_bench::report;
use pgherd_testkit::cluster::{postgres_bin_dir, SUPERUSER_PASSWORD};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pgbench(c: &Cluster) -> Command {
    let mut cmd = Command::new(postgres_bin_dir().join("pgbench"));
    cmd.args(["-h", c.client_ip(), "-p", &PROXY_WRITE_PORT.to_string()])
        .args(["-U", "postgres"])
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .env("PGSSLMODE", "disable");
    cmd
}

pub fn run(net: &crate::net::Net, root: &Path, pgherd: &Path, minutes: f64) -> Result<i32> {
    let setup = setup_for("pgherd", false)?;
    let mut c = Cluster::start(net, &root.join("soak"), pgherd, setup)?;
    let (first, _) = c.wait_started(Duration::from_secs(240))?;
    let timeline = |c: &Cluster, i: usize| {
        c.sql(
            c.node_ip(i),
            crate::cluster::PG_PORT,
            "select timeline_id from pg_control_checkpoint()",
        )
        .ok()
    };
    let tli_before = timeline(&c, first);
    run_checked(
        pgbench(&c).args(["-i", "-s", "10", "postgres"]),
        "pgbench -i",
    )?;
    let seconds = (minutes * 60.0).round().max(1.0) as u64;
    let mut bench = pgbench(&c)
        .args(["-c", "4", "-j", "2", "-T", &seconds.to_string(), "-P", "60"])
        .arg("postgres")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pgbench")?;
    let started = Instant::now();
    let mut primary = first;
    let mut failovers = 0u32;
    let mut no_primary_samples = 0u32;
    // Sample until pgbench ends (bounded: its -T plus a minute).
    while bench.try_wait()?.is_none() && started.elapsed() < Duration::from_secs(seconds + 60) {
        match c.primary() {
            Some(p) if p != primary => {
                failovers += 1;
                println!(
                    "# soak: primary changed to node{} at {:.0} s",
                    p + 1,
                    started.elapsed().as_secs_f64()
                );
                primary = p;
            }
            Some(_) => {}
            None => no_primary_samples += 1,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if bench.try_wait()?.is_none() {
        let _ = bench.kill();
    }
    let out = bench.wait_with_output()?;
    let ran = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok());
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    let tli_after = timeline(&c, primary);
    report("soak_minutes", ran.as_secs_f64() / 60.0, "min");
    report("soak_failovers", f64::from(failovers), "failovers");
    report(
        "soak_samples_without_primary",
        f64::from(no_primary_samples),
        "samples",
    );
    if let Some(t) = tps {
        report("soak_pgbench_tps", t, "tps");
    }
    if let Some(f) = failed {
        report("soak_pgbench_failed", f, "transactions");
    }
    println!(
        "# soak: timeline before {tli_before:?}, after {tli_after:?}; pgbench exit {:?}",
        out.status.code()
    );
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    c.stop();
    Ok(
        if failovers == 0 && tli_before == tli_after && out.status.success() {
            0
        } else {
            1
        },
    )
}
