//! `pgherd demo`: etcd + three agents on loopback in a temporary directory, until Ctrl-C.

use anyhow::{bail, Context, Result};
use pgherd_testkit::cluster::{ClusterOptions, TestCluster, SUPERUSER_PASSWORD};
use std::path::Path;
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Checks the external programs the demo needs and names the Debian package of each.
fn check_prerequisites() -> Result<()> {
    let mut missing = Vec::new();
    if !Path::new("/usr/bin/etcd").exists() {
        missing.push("etcd (Debian package: etcd-server)");
    }
    if !Path::new(PG_BIN).join("postgres").exists() {
        missing.push("PostgreSQL 15 server binaries (Debian package: postgresql-15)");
    }
    if which("psql").is_none() {
        missing.push("psql (Debian package: postgresql-client-15)");
    }
    if !missing.is_empty() {
        bail!(
            "pgherd demo needs: {}; install them with apt-get",
            missing.join(", ")
        );
    }
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

pub async fn run(members: usize, once: bool) -> Result<()> {
    check_prerequisites()?;
    let exe = std::env::current_exe().context("locating the pgherd executable")?;
    // The demo runs with pgherd's own timing defaults (fast failover).
    let options = ClusterOptions {
        ttl: None,
        loop_wait: None,
        retry_timeout: None,
        scope: "demo".into(),
        members,
        ..ClusterOptions::default()
    };
    let started = Instant::now();
    let mut cluster = tokio::task::block_in_place(|| -> Result<TestCluster> {
        let mut cluster = TestCluster::new(&exe, options)?;
        println!(
            "pgherd demo: etcd at {}, files in {}",
            cluster.etcd.client_url(),
            cluster.root.display()
        );
        cluster.start_all()?;
        Ok(cluster)
    })?;
    let healthy =
        tokio::task::block_in_place(|| cluster.wait_healthy(members - 1, Duration::from_secs(120)));
    if let Err(e) = healthy {
        for i in 0..members {
            eprintln!(
                "--- {} log tail ---\n{}",
                cluster.members[i].name,
                cluster.log_tail(i, 15)
            );
        }
        return Err(e.context("the demo cluster did not become healthy"));
    }
    println!(
        "cluster healthy after {:.1}s\n",
        started.elapsed().as_secs_f64()
    );
    // Member keys refresh every loop_wait: show the table once every member reports running.
    let all_running = tokio::task::block_in_place(|| {
        pgherd_testkit::wait::poll(
            "every member running",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let out = cluster.ctl(0, &["list", "-f", "json"]).ok()?;
                (out.matches("\"State\":\"running\"").count() == members).then_some(())
            },
        )
    });
    if let Err(e) = all_running {
        eprintln!("warning: {e}");
    }
    print!(
        "{}",
        tokio::task::block_in_place(|| cluster.ctl(0, &["list"]))?
    );
    println!();
    for m in &cluster.members {
        println!(
            "{}: psql 'host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres'   REST http://127.0.0.1:{}/patroni   config {}",
            m.name,
            m.pg_port,
            m.api_port,
            m.config.display()
        );
    }
    if once {
        println!("\n--once: stopping the demo cluster");
    } else {
        println!(
            "\nTry: pgherd list -c {}   (Ctrl-C stops everything)",
            cluster.members[0].config.display()
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        println!("\nstopping the demo cluster");
    }
    tokio::task::block_in_place(|| cluster.shutdown());
    Ok(())
}
