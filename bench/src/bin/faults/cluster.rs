//! The cluster under test, spread over the campaign's namespaces (net.rs): a 3-member etcd
//! cluster (`etcd1..3`), three database nodes (`node1..3`) each running an agent (pgherd or
//! Patroni) and its PostgreSQL, and a `pgherd proxy` in `client`. Every process is started
//! with `ip netns exec` (which execs it, so we hold its pid) and stopped by that pid.

use crate::net::Net;
use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_testkit::cluster::{
    http_request_to, member_yaml_on, psql_at, AgentKind, ClusterOptions, MemberNet,
};
use pgherd_testkit::wait::poll;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCDS: [&str; 3] = ["etcd1", "etcd2", "etcd3"];
pub const NODES: [&str; 3] = ["node1", "node2", "node3"];
pub const PG_PORT: u16 = 5432;
pub const API_PORT: u16 = 8008;
pub const PROXY_WRITE_PORT: u16 = 5000;
pub const PROXY_READ_PORT: u16 = 5001;
pub const PROXY_STATS_PORT: u16 = 7000;
/// Rows written on the primary to see them reach the replicas ([`Cluster::healthy`]).
const MARKS: &str = "fault_marks";

/// Every host of the topology, in address order.
pub fn host_names() -> Vec<&'static str> {
    ETCDS
        .iter()
        .chain(NODES.iter())
        .copied()
        .chain(["client"])
        .collect()
}

/// A process we started, stopped by pid on drop (SIGTERM, then SIGKILL after `grace`).
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    grace: Duration,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: &Path, grace: Duration) -> Result<Proc> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            grace,
        })
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGKILL, reaped.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(c.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
        let exited = poll(
            &format!("{} to exit", self.name),
            self.grace,
            Duration::from_millis(50),
            || c.try_wait().ok().flatten(),
        );
        if exited.is_err() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Settings of one campaign cluster.
#[derive(Clone)]
pub struct Setup {
    pub agent: AgentKind,
    pub synchronous: bool,
    /// `bootstrap.dcs` timing; `None`: the agent's default.
    pub ttl: Option<u64>,
    pub loop_wait: Option<u64>,
    pub retry_timeout: Option<u64>,
    /// Members hold the run's virtual IP on `eth0` (`vip:`), and PostgreSQL listens on every
    /// address so that clients reach it through the VIP (bench/faults vip).
    pub vip: bool,
}

impl Setup {
    /// The lease the agents run with (pgherd's default is 4 s, Patroni's 30 s).
    pub fn effective_ttl(&self) -> u64 {
        self.ttl.unwrap_or(match self.agent {
            AgentKind::Pgherd => 4,
            AgentKind::Patroni => 30,
        })
    }
}

pub struct Cluster<'n> {
    pub net: &'n Net,
    pub setup: Setup,
    root: PathBuf,
    pgherd: PathBuf,
    pub etcd: Vec<Option<Proc>>,
    pub agents: Vec<Option<Proc>>,
    pub proxy: Option<Proc>,
}

impl<'n> Cluster<'n> {
    pub fn start(net: &'n Net, root: &Path, pgherd: &Path, setup: Setup) -> Result<Cluster<'n>> {
        fs::create_dir_all(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
        let mut c = Cluster {
            net,
            setup,
            root: root.to_path_buf(),
            pgherd: pgherd.to_path_buf(),
            etcd: (0..ETCDS.len()).map(|_| None).collect(),
            agents: (0..NODES.len()).map(|_| None).collect(),
            proxy: None,
        };
        for i in 0..ETCDS.len() {
            c.start_etcd(i)?;
        }
        c.wait_etcd()?;
        for (i, name) in NODES.iter().enumerate() {
            let dir = c.root.join(name);
            fs::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
            fs::write(dir.join("agent.yml"), c.member_yaml(name, &dir))?;
            c.start_agent(i)?;
        }
        c.start_proxy()?;
        Ok(c)
    }

    fn etcd_hosts(&self) -> String {
        ETCDS
            .iter()
            .map(|e| format!("{}:2379", self.net.host(e).ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn member_yaml(&self, name: &str, dir: &Path) -> String {
        let s = &self.setup;
        let mut extra_dcs = String::from("    failsafe_mode: true\n");
        if s.synchronous {
            extra_dcs.push_str("    synchronous_mode: true\n");
        }
        let options = ClusterOptions {
            agent: s.agent,
            dcs: pgherd_testkit::cluster::DcsKind::Etcd,
            scope: "faults".into(),
            members: NODES.len(),
            ttl: s.ttl,
            loop_wait: s.loop_wait,
            retry_timeout: s.retry_timeout,
            extra_dcs,
            extra_parameters: String::new(),
            max_connections: 50,
            root: None,
            zookeeper_tls: None,
        };
        let host = &self.net.host(name).ip;
        let dcs_section = format!("etcd3:\n  hosts: {}\n", self.etcd_hosts());
        let trusted = self.net.cidr();
        let net = MemberNet {
            host,
            pg_port: PG_PORT,
            api_port: API_PORT,
            dcs_section: &dcs_section,
            trusted: &trusted,
        };
        let yaml = member_yaml_on(&options, name, dir, &net);
        if !s.vip {
            return yaml;
        }
        let yaml = yaml.replace(
            &format!("  listen: {host}:{PG_PORT}\n"),
            &format!("  listen: 0.0.0.0:{PG_PORT}\n"),
        );
        format!(
            "{yaml}\nvip:\n  ip: {}\n  netmask: 24\n  interface: eth0\n",
            self.net.vip()
        )
    }

    pub fn start_etcd(&mut self, i: usize) -> Result<()> {
        let name = ETCDS[i];
        let ip = &self.net.host(name).ip;
        let initial = ETCDS
            .iter()
            .map(|e| format!("{e}=http://{}:2380", self.net.host(e).ip))
            .collect::<Vec<_>>()
            .join(",");
        let data = self.root.join(format!("{name}-data"));
        let mut cmd = self.net.command(name, "/usr/bin/etcd");
        cmd.arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=http://{ip}:2379"))
            .arg(format!("--advertise-client-urls=http://{ip}:2379"))
            .arg(format!("--listen-peer-urls=http://{ip}:2380"))
            .arg(format!("--initial-advertise-peer-urls=http://{ip}:2380"))
            .arg(format!("--initial-cluster={initial}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token=pghf-{}", self.net.tag))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let log = self.root.join(format!("{name}.log"));
        self.etcd[i] = Some(Proc::spawn(name, cmd, &log, Duration::from_secs(10))?);
        Ok(())
    }

    /// Status of every etcd member that answers: (member name, is leader).
    pub fn etcd_status(&self) -> Vec<(String, bool)> {
        ETCDS
            .iter()
            .filter_map(|e| {
                let addr = SocketAddr::new(self.net.host(e).ip.parse().ok()?, 2379);
                let (code, body) = http_request_to(
                    addr,
                    Duration::from_millis(500),
                    Duration::from_secs(1),
                    "POST",
                    "/v3/maintenance/status",
                    Some("{}"),
                )
                .ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                let leader = v["leader"].as_str()? == v["header"]["member_id"].as_str()?;
                (code == 200).then(|| (e.to_string(), leader))
            })
            .collect()
    }

    pub fn etcd_leader(&self) -> Option<usize> {
        let status = self.etcd_status();
        let leader = status.iter().find(|(_, l)| *l)?;
        ETCDS.iter().position(|e| *e == leader.0)
    }

    fn wait_etcd(&self) -> Result<()> {
        poll(
            "an etcd leader",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || self.etcd_leader(),
        )
        .map(|_| ())
    }

    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let name = NODES[i];
        let dir = self.root.join(name);
        let config = dir.join("agent.yml");
        let cmd = match self.setup.agent {
            AgentKind::Pgherd => {
                let mut cmd = self.net.command(name, &self.pgherd.to_string_lossy());
                cmd.arg("agent").arg(&config).env("RUST_LOG", "info");
                cmd
            }
            AgentKind::Patroni => {
                // Patroni refuses to run as root; setpriv execs it as postgres (no fork).
                let mut cmd = self.net.command(name, "setpriv");
                cmd.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "/usr/bin/patroni",
                ])
                .arg(&config)
                .env("HOME", "/var/lib/postgresql");
                cmd
            }
        };
        let log = dir.join("agent.log");
        self.agents[i] = Some(Proc::spawn(name, cmd, &log, Duration::from_secs(30))?);
        Ok(())
    }

    fn start_proxy(&mut self) -> Result<()> {
        let ip = &self.net.host("client").ip;
        let yaml = format!(
            "scope: faults\nnamespace: /service/\netcd3:\n  hosts: {etcd}\nproxy:\n  name: px\n  listeners:\n    - {{name: primary, bind: '{ip}:{w}', role: primary}}\n    - {{name: replicas, bind: '{ip}:{r}', role: replica}}\n  stats:\n    bind: '{ip}:{s}'\n",
            etcd = self.etcd_hosts(),
            w = PROXY_WRITE_PORT,
            r = PROXY_READ_PORT,
            s = PROXY_STATS_PORT,
        );
        let file = self.root.join("proxy.yml");
        fs::write(&file, yaml)?;
        let mut cmd = self.net.command("client", &self.pgherd.to_string_lossy());
        cmd.arg("proxy").arg(&file).env("RUST_LOG", "info");
        let log = self.root.join("proxy.log");
        self.proxy = Some(Proc::spawn("proxy", cmd, &log, Duration::from_secs(15))?);
        Ok(())
    }

    pub fn node_ip(&self, i: usize) -> &str {
        &self.net.host(NODES[i]).ip
    }

    pub fn client_ip(&self) -> &str {
        &self.net.host("client").ip
    }

    /// A REST call to node `i` with short timeouts (a cut-off node must not stall a poll).
    pub fn api(&self, i: usize, path: &str) -> Option<(u16, String)> {
        let addr = SocketAddr::new(self.node_ip(i).parse().ok()?, API_PORT);
        http_request_to(
            addr,
            Duration::from_millis(300),
            Duration::from_millis(700),
            "GET",
            path,
            None,
        )
        .ok()
    }

    pub fn code(&self, i: usize, path: &str) -> Option<u16> {
        self.api(i, path).map(|(c, _)| c)
    }

    /// The one node whose `/primary` answers 200, if exactly one does.
    pub fn primary(&self) -> Option<usize> {
        let p: Vec<usize> = (0..NODES.len())
            .filter(|&i| self.code(i, "/primary") == Some(200))
            .collect();
        (p.len() == 1).then(|| p[0])
    }

    /// Healthy by the REST API: one primary, every other node a replica (`/replica` 200);
    /// returns the primary. Patroni's `/replica` does not look at replication, so this alone
    /// is not enough to compare the two: see [`healthy`](Self::healthy).
    pub fn rest_healthy(&self) -> Option<usize> {
        let p = self.primary()?;
        (0..NODES.len())
            .filter(|&i| i != p)
            .all(|i| self.code(i, "/replica") == Some(200))
            .then_some(p)
    }

    /// Healthy: [`rest_healthy`](Self::rest_healthy), and a row written on the primary now
    /// reaches both other nodes within 500 ms (they replicate from it, whatever their REST
    /// API says).
    pub fn healthy(&self) -> Option<usize> {
        let p = self.rest_healthy()?;
        let id = self
            .sql(
                self.node_ip(p),
                PG_PORT,
                &format!("insert into {MARKS} default values returning id"),
            )
            .ok()?;
        let id: i64 = id.lines().next()?.trim().parse().ok()?;
        let seen = |i: usize| {
            poll(
                "the mark replicated",
                Duration::from_millis(500),
                Duration::from_millis(20),
                || {
                    let out = self
                        .sql(
                            self.node_ip(i),
                            PG_PORT,
                            &format!("select count(*) from {MARKS} where id = {id}"),
                        )
                        .ok()?;
                    (out == "1").then_some(())
                },
            )
            .is_ok()
        };
        (0..NODES.len()).filter(|&i| i != p).all(seen).then_some(p)
    }

    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Self) -> Option<usize>,
    ) -> Result<(usize, Duration)> {
        let start = Instant::now();
        let p = poll(what, timeout, Duration::from_millis(100), || check(self))?;
        Ok((p, start.elapsed()))
    }

    pub fn wait_healthy(&self, timeout: Duration) -> Result<(usize, Duration)> {
        self.wait_for(
            "a healthy cluster (one primary, two replicas replicating from it)",
            timeout,
            Self::healthy,
        )
    }

    /// The cluster's start: [`rest_healthy`](Self::rest_healthy), then the tables.
    pub fn wait_started(&self, timeout: Duration) -> Result<(usize, Duration)> {
        let r = self.wait_for("one primary and two replicas", timeout, Self::rest_healthy)?;
        self.sql(
            self.node_ip(r.0),
            PG_PORT,
            &format!("create table if not exists {MARKS}(id bigserial primary key)"),
        )?;
        Ok(r)
    }

    /// The proxy's view of `member` on the read listener (`up`, `down`, ...).
    pub fn proxy_read_state(&self, member: &str) -> Option<String> {
        let addr = SocketAddr::new(self.client_ip().parse().ok()?, PROXY_STATS_PORT);
        let (_, body) = http_request_to(
            addr,
            Duration::from_millis(300),
            Duration::from_secs(1),
            "GET",
            "/stats.json",
            None,
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let l = v["listeners"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == "replicas")?;
        let s = l["servers"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == member)
            .map_or("absent", |s| s["state"].as_str().unwrap_or("?"));
        Some(s.to_string())
    }

    /// The postmaster pid of node `i` and every PostgreSQL process under it.
    pub fn postgres_pids(&self, i: usize) -> Vec<i32> {
        let pidfile = self.root.join(NODES[i]).join("data").join("postmaster.pid");
        let Some(pm) = fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .filter(|pid| pgherd_testkit::procs::alive(*pid))
        else {
            return Vec::new();
        };
        pgherd_testkit::procs::descendants_of(pm)
    }

    /// SQL through psql on `host` (a node or the proxy), as the superuser. A commit waiting
    /// for a synchronous standby that is gone must not hang the run: 3 s at most.
    pub fn sql(&self, host: &str, port: u16, sql: &str) -> Result<String> {
        psql_at(host, port, sql, 3, Some(3000))
    }

    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in NODES {
            let text =
                fs::read_to_string(self.root.join(name).join("agent.log")).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name} ---\n"));
            out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
            out.push('\n');
        }
        out
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            p.stop();
        }
        // Agents first (they stop PostgreSQL and release the lock while etcd still runs).
        for a in self.agents.iter_mut() {
            if let Some(mut p) = a.take() {
                p.stop();
            }
        }
        for e in self.etcd.iter_mut() {
            if let Some(mut p) = e.take() {
                p.stop();
            }
        }
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}
