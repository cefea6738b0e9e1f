//! A whole pgherd cluster on loopback: one etcd (or ZooKeeper) and N agents started as
//! `pgherd agent` processes, each with its own Patroni-style YAML file, data directory and
//! ports.
//! Everything started here is stopped by PID when the harness is dropped.

use crate::etcd::EtcdServer;
use crate::ports::free_ports;
use crate::wait::poll;
use crate::zookeeper::{ZooKeeperServer, ZooKeeperTls};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUPERUSER_PASSWORD: &str = "pgherd-secret";

/// Which program runs each member: pgherd, or Patroni (the peer benchmarks compare with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    Pgherd,
    /// Debian's `/usr/bin/patroni`, run as the `postgres` OS user when we are root.
    Patroni,
}

/// Which store the cluster uses (its members' `etcd3:` or `zookeeper:` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DcsKind {
    #[default]
    Etcd,
    ZooKeeper,
}

/// The running store of a cluster.
pub enum DcsServer {
    Etcd(EtcdServer),
    ZooKeeper(ZooKeeperServer),
}

impl DcsServer {
    /// PID of the store's process, `None` when stopped.
    pub fn pid(&self) -> Option<u32> {
        match self {
            DcsServer::Etcd(etcd) => etcd.pid(),
            DcsServer::ZooKeeper(zk) => zk.pid(),
        }
    }

    /// `etcd at http://…` / `ZooKeeper at 127.0.0.1:…`, for people.
    pub fn describe(&self) -> String {
        match self {
            DcsServer::Etcd(etcd) => format!("etcd at {}", etcd.client_url()),
            DcsServer::ZooKeeper(zk) => format!("ZooKeeper at {}", zk.host()),
        }
    }

    /// The members' YAML section for this store (`etcd3:` or `zookeeper:`), newline-terminated.
    pub fn yaml_section(&self) -> String {
        match self {
            DcsServer::Etcd(etcd) => format!(
                "etcd3:\n  hosts: {}\n",
                etcd.client_url().trim_start_matches("http://")
            ),
            DcsServer::ZooKeeper(zk) => format!(
                "zookeeper:\n  hosts: {}\n",
                zk.secure_host().unwrap_or_else(|| zk.host())
            ),
        }
    }
}

/// The TLS files of a cluster's ZooKeeper ([`ClusterOptions::zookeeper_tls`]).
#[derive(Debug, Clone)]
pub struct ZooKeeperTlsFiles {
    pub server: ZooKeeperTls,
    pub client: ZooKeeperTls,
}

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub agent: AgentKind,
    pub dcs: DcsKind,
    pub scope: String,
    pub members: usize,
    /// `bootstrap.dcs` timing keys in seconds; `None` leaves the key out (agent defaults).
    pub ttl: Option<u64>,
    pub loop_wait: Option<u64>,
    pub retry_timeout: Option<u64>,
    /// Extra YAML lines placed under `bootstrap.dcs` (indented by the caller to 4 spaces).
    pub extra_dcs: String,
    /// Extra YAML lines placed under `postgresql.parameters` of every member (6 spaces).
    pub extra_parameters: String,
    /// `max_connections` in `bootstrap.dcs` (where the agents take it from); 50 by default,
    /// more for benchmarks that keep several poolers' server connections open at once.
    pub max_connections: u32,
    /// Build the cluster in this existing directory (the caller removes it) instead of a new
    /// temporary one removed on drop.
    pub root: Option<PathBuf>,
    /// ZooKeeper serves TLS with the `server` files and the members' `zookeeper.hosts` name
    /// its TLS port (the caller adds `use_ssl` and the client files to the members'
    /// configuration); the harness reads znodes over TLS as `client`.
    pub zookeeper_tls: Option<ZooKeeperTlsFiles>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            agent: AgentKind::Pgherd,
            dcs: DcsKind::Etcd,
            scope: "it".into(),
            members: 3,
            // Tests favour stability on a loaded 2-core machine over failover speed.
            ttl: Some(10),
            loop_wait: Some(1),
            retry_timeout: Some(3),
            extra_dcs: String::new(),
            extra_parameters: String::new(),
            max_connections: 50,
            root: None,
            zookeeper_tls: None,
        }
    }
}

/// One member: its configuration, ports and agent process.
pub struct Member {
    pub name: String,
    pub pg_port: u16,
    pub api_port: u16,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    agent: Option<Child>,
}

pub struct LocalCluster {
    pub options: ClusterOptions,
    /// The store; [`LocalCluster::etcd`] for the etcd one.
    pub dcs: DcsServer,
    pub members: Vec<Member>,
    pub root: PathBuf,
    pgherd: PathBuf,
    /// Removed on drop unless `PGHERD_KEEP_TEST_DIRS` is set (for post-mortems).
    _tempdir: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Creates the directories and configuration files and starts the store (not the agents).
    pub fn new(pgherd: &Path, options: ClusterOptions) -> Result<LocalCluster> {
        let (tempdir, root) = match &options.root {
            Some(root) => (None, root.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("pgherd-")
                    .tempdir_in("/tmp")?;
                let root = t.path().to_path_buf();
                (Some(t), root)
            }
        };
        // PostgreSQL runs as an unprivileged user when we are root: it must reach the tree.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
        let dcs = match options.dcs {
            DcsKind::Etcd => DcsServer::Etcd(EtcdServer::start(&root.join("etcd"))?),
            DcsKind::ZooKeeper => {
                let dir = root.join("zookeeper");
                DcsServer::ZooKeeper(match &options.zookeeper_tls {
                    Some(tls) => ZooKeeperServer::start_tls(&dir, tls.server.clone())?
                        .with_cli_identity(tls.client.clone()),
                    None => ZooKeeperServer::start(&dir)?,
                })
            }
        };
        let dcs_section = dcs.yaml_section();
        let mut members = Vec::new();
        // All at once: ports held open together are distinct.
        let ports = free_ports(2 * options.members)?;
        for i in 0..options.members {
            let ports = &ports[2 * i..2 * i + 2];
            let name = format!("node{}", i + 1);
            let dir = root.join(&name);
            fs::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
            let member = Member {
                config: dir.join(format!("{name}.yml")),
                data_dir: dir.join("data"),
                log: dir.join("agent.log"),
                name,
                pg_port: ports[0],
                api_port: ports[1],
                dir,
                agent: None,
            };
            fs::write(&member.config, member_yaml(&options, &member, &dcs_section))?;
            members.push(member);
        }
        let keep = std::env::var_os("PGHERD_KEEP_TEST_DIRS").is_some();
        let tempdir = match tempdir {
            Some(t) if keep => {
                let _ = t.keep();
                None
            }
            t => t,
        };
        Ok(LocalCluster {
            options,
            dcs,
            members,
            root,
            pgherd: pgherd.to_path_buf(),
            _tempdir: tempdir,
        })
    }

    /// The cluster's etcd. Panics for a ZooKeeper cluster (a harness misuse, not an I/O
    /// outcome).
    pub fn etcd(&self) -> &EtcdServer {
        match &self.dcs {
            DcsServer::Etcd(etcd) => etcd,
            DcsServer::ZooKeeper(_) => panic!("this cluster runs ZooKeeper, not etcd"),
        }
    }

    pub fn etcd_mut(&mut self) -> &mut EtcdServer {
        match &mut self.dcs {
            DcsServer::Etcd(etcd) => etcd,
            DcsServer::ZooKeeper(_) => panic!("this cluster runs ZooKeeper, not etcd"),
        }
    }

    /// The cluster's ZooKeeper, `None` for an etcd cluster.
    pub fn zookeeper(&self) -> Option<&ZooKeeperServer> {
        match &self.dcs {
            DcsServer::ZooKeeper(zk) => Some(zk),
            DcsServer::Etcd(_) => None,
        }
    }

    /// Starts every agent.
    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.start(i)?;
        }
        Ok(())
    }

    pub fn start(&mut self, i: usize) -> Result<()> {
        let pgherd = self.pgherd.clone();
        let m = &mut self.members[i];
        if m.agent.is_some() {
            bail!("agent {} already running", m.name);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)?;
        let mut cmd = match self.options.agent {
            AgentKind::Pgherd => {
                let mut cmd = Command::new(&pgherd);
                cmd.arg("agent").env("RUST_LOG", "info");
                cmd
            }
            AgentKind::Patroni => {
                let mut cmd = Command::new("/usr/bin/patroni");
                if nix::unistd::geteuid().is_root() {
                    use std::os::unix::process::CommandExt;
                    let user = nix::unistd::User::from_name("postgres")?
                        .context("Patroni must not run as root: the OS user postgres is missing")?;
                    cmd.uid(user.uid.as_raw())
                        .gid(user.gid.as_raw())
                        .env("HOME", &user.dir);
                }
                cmd
            }
        };
        let child = cmd
            .arg(&m.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning the agent of {}", m.name))?;
        m.agent = Some(child);
        Ok(())
    }

    /// SIGTERM to the agent (which stops its PostgreSQL), waiting up to `timeout`.
    #[allow(
        clippy::disallowed_methods,
        reason = "synchronous harness: blocks the calling test or spawn_blocking thread, never a runtime worker"
    )]
    pub fn stop(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let m = &mut self.members[i];
        if let Some(mut child) = m.agent.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + timeout;
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "agent {} did not stop within {timeout:?} after SIGTERM",
                        m.name
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// SIGKILL to the agent only (PostgreSQL keeps running).
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.members[i].agent.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    pub fn agent_pid(&self, i: usize) -> Option<i32> {
        self.members[i].agent.as_ref().map(|c| c.id() as i32)
    }

    /// The postmaster's PID from `postmaster.pid`, if that process is alive.
    pub fn postmaster_pid(&self, i: usize) -> Option<i32> {
        let text = fs::read_to_string(self.members[i].data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        kill(Pid::from_raw(pid), None).ok().map(|_| pid)
    }

    /// The postmaster and every process it forked (backends, walsender, ...).
    pub fn postgres_pids(&self, i: usize) -> Vec<i32> {
        match self.postmaster_pid(i) {
            Some(pm) => crate::procs::descendants_of(pm),
            None => Vec::new(),
        }
    }

    /// Runs `pg_ctl <args> -D <data dir>` for member `i` behind the agent's back, as the OS
    /// user PostgreSQL runs as (`postgres` when the tests run as root, as the agent does).
    pub fn pg_ctl(&self, i: usize, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(postgres_bin_dir().join("pg_ctl"));
        cmd.args(args)
            .arg("-D")
            .arg(&self.members[i].data_dir)
            .stdin(Stdio::null());
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            let user = nix::unistd::User::from_name("postgres")?
                .context("the OS user postgres is missing")?;
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir);
        }
        let out = cmd.output().context("running pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl {args:?} for {}: {}{}",
                self.members[i].name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGKILL to the postmaster only.
    pub fn kill_postmaster(&self, i: usize) -> Result<i32> {
        let pid = self
            .postmaster_pid(i)
            .context("postmaster is not running")?;
        kill(Pid::from_raw(pid), Signal::SIGKILL)?;
        Ok(pid)
    }

    /// Sends `signal` to the agent and to every PostgreSQL process of member `i`
    /// (SIGSTOP/SIGCONT: a frozen node; SIGKILL: a crashed node).
    pub fn signal_node(&mut self, i: usize, signal: Signal) -> Result<()> {
        let pg = self.postgres_pids(i);
        if let Some(pid) = self.agent_pid(i) {
            kill(Pid::from_raw(pid), signal)?;
        }
        for pid in pg {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        if signal == Signal::SIGKILL {
            if let Some(mut child) = self.members[i].agent.take() {
                let _ = child.wait();
            }
        }
        Ok(())
    }

    /// `GET` on member `i`'s REST API: (status, body).
    pub fn api(&self, i: usize, method: &str, path: &str) -> Result<(u16, String)> {
        http_request(self.members[i].api_port, method, path, None)
    }

    /// Runs SQL with psql as the superuser over TCP; returns trimmed unaligned output.
    pub fn sql(&self, i: usize, sql: &str) -> Result<String> {
        psql(self.members[i].pg_port, sql)
    }

    /// The value of `/service/<scope>/<key>`, read with the store's own command-line client
    /// (`etcdctl`, or ZooKeeper's Java client).
    pub fn dcs_value(&self, key: &str) -> Option<String> {
        let full = format!("/service/{}/{key}", self.options.scope);
        let etcd = match &self.dcs {
            DcsServer::Etcd(etcd) => etcd,
            DcsServer::ZooKeeper(zk) => return zk.get(&full).ok().flatten(),
        };
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &etcd.client_url(),
                "get",
                "--print-value-only",
                &full,
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// Index of the member whose REST API says it is the leader (GET /leader = 200).
    pub fn leader_index(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.members.len())
            .filter(|&i| matches!(self.api(i, "GET", "/leader"), Ok((200, _))))
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Waits until exactly one leader and `replicas` streaming replicas, returns the leader.
    pub fn wait_healthy(&self, replicas: usize, timeout: Duration) -> Result<usize> {
        let names: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("'{}'", m.name))
            .collect();
        let query = format!(
            "select count(*) from pg_stat_replication where state = 'streaming' and application_name in ({})",
            names.join(",")
        );
        poll(
            "one leader with streaming replicas",
            timeout,
            Duration::from_millis(250),
            || {
                let leader = self.leader_index()?;
                let out = self.sql(leader, &query).ok()?;
                (out.trim().parse::<usize>().ok()? >= replicas).then_some(leader)
            },
        )
    }

    /// Runs `pgherd <args> -c <member i config>` and returns stdout.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.pgherd)
            .args(args)
            .arg("-c")
            .arg(&self.members[i].config)
            .output()?;
        if !out.status.success() {
            bail!(
                "pgherd {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of member `i`'s agent log (for failure messages).
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Reaps agents that exited on their own (killed, crashed); says which and how.
    pub fn reap(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        for m in &mut self.members {
            let Some(child) = m.agent.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                gone.push(format!("{}'s agent exited ({status})", m.name));
                m.agent = None;
            }
        }
        gone
    }

    /// Stops everything within `limit`: SIGTERM to every agent at once (each stops its
    /// PostgreSQL and releases its keys while etcd still runs), SIGKILL to those still running
    /// at the deadline, an immediate shutdown of any PostgreSQL left, then etcd.
    #[allow(
        clippy::disallowed_methods,
        reason = "synchronous harness: blocks the calling test or spawn_blocking thread, never a runtime worker"
    )]
    pub fn shutdown_within(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for m in &self.members {
            if let Some(child) = &m.agent {
                let pid = Pid::from_raw(child.id() as i32);
                let _ = kill(pid, Signal::SIGCONT);
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
        loop {
            let running = self
                .members
                .iter_mut()
                .filter_map(|m| m.agent.as_mut())
                .filter_map(|c| c.try_wait().ok())
                .filter(Option::is_none)
                .count();
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for m in &mut self.members {
            if let Some(mut child) = m.agent.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.shutdown();
        let _ = match &mut self.dcs {
            DcsServer::Etcd(etcd) => etcd.stop(),
            DcsServer::ZooKeeper(zk) => zk.stop(),
        };
    }

    /// Stops every agent (SIGTERM, then SIGKILL) and any PostgreSQL left behind.
    pub fn shutdown(&mut self) {
        for i in 0..self.members.len() {
            if let Some(pid) = self.agent_pid(i) {
                // A stopped (SIGSTOP) agent cannot handle SIGTERM.
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            let _ = self.stop(i, Duration::from_secs(30));
        }
        for i in 0..self.members.len() {
            for pid in self.postgres_pids(i) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            if let Some(pid) = self.postmaster_pid(i) {
                // SIGQUIT = immediate shutdown; then make sure it is gone.
                let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
                let gone = poll(
                    "postmaster exit",
                    Duration::from_secs(10),
                    Duration::from_millis(50),
                    || kill(Pid::from_raw(pid), None).is_err().then_some(()),
                );
                if gone.is_err() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn member_yaml(o: &ClusterOptions, m: &Member, dcs_section: &str) -> String {
    let net = MemberNet {
        host: "127.0.0.1",
        pg_port: m.pg_port,
        api_port: m.api_port,
        dcs_section,
        trusted: "127.0.0.1/32",
    };
    member_yaml_on(o, &m.name, &m.dir, &net)
}

/// Where a member listens and whom it trusts: loopback for [`LocalCluster`], an address in a
/// network namespace for the fault campaign (bench/faults).
pub struct MemberNet<'a> {
    pub host: &'a str,
    pub pg_port: u16,
    pub api_port: u16,
    /// The `etcd3:` or `zookeeper:` section, unindented, newline-terminated.
    pub dcs_section: &'a str,
    /// The network (CIDR) whose clients and replicas pg_hba.conf lets in.
    pub trusted: &'a str,
}

/// The Patroni-style YAML of member `name` (files in `dir`), read by pgherd and Patroni alike.
pub fn member_yaml_on(o: &ClusterOptions, name: &str, dir: &Path, net: &MemberNet) -> String {
    let timing: String = [
        ("ttl", o.ttl),
        ("loop_wait", o.loop_wait),
        ("retry_timeout", o.retry_timeout),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|v| format!("    {k}: {v}\n")))
    .collect();
    let dir = dir.display();
    format!(
        r#"scope: {scope}
namespace: /service/
name: {name}

restapi:
  listen: {host}:{api}
  connect_address: {host}:{api}

{dcs_section}
bootstrap:
  dcs:
{timing}    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: "on"
        max_connections: {max_connections}
{extra_dcs}
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - host replication replicator {trusted} md5
  - host all all {trusted} md5
  users:
    admin:
      password: admin-pass
      options:
        - createrole
        - createdb

postgresql:
  bin_dir: {bin_dir}
  listen: {host}:{pg}
  connect_address: {host}:{pg}
  data_dir: {dir}/data
  pgpass: {dir}/pgpass
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: {su}
    rewind:
      username: rewind_user
      password: rewind-pass
  parameters:
    unix_socket_directories: '{dir}'
    shared_buffers: 16MB
    fsync: 'off'
{extra_parameters}
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false

# Tests freeze and kill leaders on purpose: a real /dev/watchdog (Patroni's default mode is
# automatic) would reset the machine. The watchdog tests configure the testing driver.
watchdog:
  mode: off
"#,
        scope = o.scope,
        host = net.host,
        api = net.api_port,
        pg = net.pg_port,
        dcs_section = net.dcs_section,
        trusted = net.trusted,
        timing = timing,
        extra_dcs = o.extra_dcs,
        extra_parameters = o.extra_parameters,
        max_connections = o.max_connections,
        su = SUPERUSER_PASSWORD,
        bin_dir = postgres_bin_dir().display(),
    )
}

/// PostgreSQL's programs: `PGHERD_PG_BIN_DIR`, else the newest Debian installation
/// (`/usr/lib/postgresql/<major>/bin`), else PostgreSQL 15's path (what `./dev/setup`
/// installs).
pub fn postgres_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGHERD_PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    newest.map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        |(_, bin)| bin,
    )
}

/// A minimal HTTP/1.1 client for the REST API (no TLS), with short timeouts.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    http_request_to(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
        Duration::from_secs(10),
        method,
        path,
        body,
    )
}

/// [`http_request`] to any address (the fault campaign's network namespaces), with the
/// connect and read timeouts given.
pub fn http_request_to(
    addr: std::net::SocketAddr,
    connect_timeout: Duration,
    read_timeout: Duration,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_write_timeout(Some(read_timeout))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("malformed HTTP response: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, decode_chunked(&body)))
}

/// Undoes `Transfer-Encoding: chunked` when present (best effort, test use only).
fn decode_chunked(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size_line, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            return body.to_string();
        };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return body.to_string();
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// Runs SQL through `psql` against 127.0.0.1:`port` as the superuser.
pub fn psql(port: u16, sql: &str) -> Result<String> {
    psql_with_timeout(port, sql, 3)
}

/// [`psql`] with a longer connect timeout (e.g. to sit out a proxy holding connections).
pub fn psql_with_timeout(port: u16, sql: &str, connect_timeout_secs: u64) -> Result<String> {
    psql_at("127.0.0.1", port, sql, connect_timeout_secs, None)
}

/// [`psql`] against `host` (the fault campaign's network namespaces), with a connect timeout
/// and, when given, a statement timeout in milliseconds.
pub fn psql_at(
    host: &str,
    port: u16,
    sql: &str,
    connect_timeout_secs: u64,
    statement_timeout_ms: Option<u64>,
) -> Result<String> {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        host,
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .arg("-p")
    .arg(port.to_string())
    .arg("-c")
    .arg(sql)
    .env("PGPASSWORD", SUPERUSER_PASSWORD)
    .env("PGCONNECT_TIMEOUT", connect_timeout_secs.to_string())
    .env("PGSSLMODE", "disable");
    if let Some(ms) = statement_timeout_ms {
        cmd.env("PGOPTIONS", format!("-c statement_timeout={ms}"));
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "psql on {host}:{port}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
