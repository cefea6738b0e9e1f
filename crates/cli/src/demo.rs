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
    let mut proxy = start_proxy(&cluster, &exe)?;
    println!(
        "\nproxy: writes psql 'host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD}'   reads port {}   stats http://127.0.0.1:{}/",
        proxy.primary, proxy.replicas, proxy.stats
    );
    let routed = tokio::task::block_in_place(|| {
        pgherd_testkit::wait::poll(
            "the proxy routes writes",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                (pgherd_testkit::cluster::psql(proxy.primary, "select pg_is_in_recovery()").ok()?
                    == "f")
                    .then_some(())
            },
        )
    });
    match routed {
        Ok(()) => println!("proxy: the primary port reaches the leader"),
        Err(e) => eprintln!("warning: {e}"),
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
    proxy.stop();
    tokio::task::block_in_place(|| cluster.shutdown());
    Ok(())
}

/// The demo's `pgherd proxy`: a primary port, a replica port and the stats page.
struct DemoProxy {
    child: std::process::Child,
    primary: u16,
    replicas: u16,
    stats: u16,
}

impl DemoProxy {
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DemoProxy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn start_proxy(cluster: &TestCluster, exe: &Path) -> Result<DemoProxy> {
    let ports = pgherd_testkit::ports::free_ports(3)?;
    let etcd = cluster.etcd.client_url();
    let yaml = format!(
        "scope: {scope}\nnamespace: /service/\netcd3:\n  hosts: {etcd}\nproxy:\n  name: demo-proxy\n  listeners:\n    - name: primary\n      bind: 127.0.0.1:{p}\n      role: primary\n    - name: replicas\n      bind: 127.0.0.1:{r}\n      role: replica\n      balance: roundrobin\n      fallback: primary\n  stats:\n    bind: 127.0.0.1:{st}\n",
        scope = cluster.options.scope,
        etcd = etcd.trim_start_matches("http://"),
        p = ports[0],
        r = ports[1],
        st = ports[2],
    );
    let file = cluster.root.join("proxy.yml");
    std::fs::write(&file, yaml)?;
    let log = std::fs::File::create(cluster.root.join("proxy.log"))?;
    let child = std::process::Command::new(exe)
        .arg("proxy")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting pgherd proxy")?;
    Ok(DemoProxy {
        child,
        primary: ports[0],
        replicas: ports[1],
        stats: ports[2],
    })
}
