//! Shared fixtures: real PostgreSQL servers in a temporary directory, stopped on drop.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgherd_postgres::{Credentials, PgOptions, Postgres, RecoveryConf, Upstream};

pub const SU_PASSWORD: &str = "su pass'word\\1";

pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("PGHERD_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        dir.join("postgres").exists(),
        "PostgreSQL binaries not found in {} (set PGHERD_PG_BIN)",
        dir.display()
    );
    dir
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pgherd_postgres=info".into()),
        )
        .try_init();
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A temporary directory the `postgres` OS user can use when the tests run as root.
pub struct TestEnv {
    tmp: tempfile::TempDir,
}

impl TestEnv {
    pub fn new(name: &str) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("pgherd-{name}-"))
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("OS user postgres");
            std::os::unix::fs::chown(tmp.path(), Some(pg.uid.as_raw()), Some(pg.gid.as_raw()))
                .unwrap();
        }
        TestEnv { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// `mkdir -p` whose new directories belong to the PostgreSQL user, as the agent's would.
pub fn mkdir_for_postgres(path: &Path) {
    if path.exists() {
        return;
    }
    if let Some(parent) = path.parent() {
        mkdir_for_postgres(parent);
    }
    std::fs::create_dir(path).unwrap();
    if is_root() {
        let pg = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("OS user postgres");
        std::os::unix::fs::chown(path, Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
    }
}

/// A free TCP port on 127.0.0.1 (released before PostgreSQL binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn options(env: &TestEnv, name: &str) -> PgOptions {
    let home = env.path().join(name);
    let mut o = PgOptions::new(bin_dir(), home.join("data"), free_port());
    o.socket_dir = home.clone();
    o.pgpass = home.join("pgpass");
    o.superuser = Credentials::new("su", Some(SU_PASSWORD));
    o.replication = Credentials::new("replicator", Some("rep pass"));
    o.rewind = Some(Credentials::new("rewinder", Some("rw:pass")));
    o.run_as = Some("postgres".into());
    o.pg_ctl_timeout = Duration::from_secs(90);
    o
}

/// Small and fast, but with what replication and pg_rewind need.
pub fn params() -> BTreeMap<String, String> {
    [
        ("shared_buffers", "16MB"),
        ("max_connections", "20"),
        ("fsync", "off"),
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("wal_log_hints", "on"),
        ("max_wal_senders", "5"),
        ("max_replication_slots", "5"),
        ("wal_keep_size", "64MB"),
        ("logging_collector", "off"),
        ("log_min_messages", "warning"),
        ("cluster_name", "pgherd-test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn hba() -> Vec<String> {
    [
        "local all all scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host replication replicator 127.0.0.1/32 scram-sha-256",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// One server; stopped (immediate shutdown by pid) when dropped, even after a failed assert.
pub struct Node {
    pub pg: Postgres,
    pub name: String,
}

impl Node {
    pub fn new(env: &TestEnv, name: &str) -> Self {
        Node {
            pg: Postgres::new(options(env, name)).unwrap(),
            name: name.to_string(),
        }
    }

    pub fn upstream(&self) -> Upstream {
        Upstream::new("127.0.0.1", self.pg.options().port)
    }

    pub fn recovery_from(&self, upstream: &Node) -> RecoveryConf {
        RecoveryConf {
            upstream: Some(upstream.upstream()),
            application_name: self.name.clone(),
            primary_slot_name: Some(self.name.clone()),
            ..RecoveryConf::default()
        }
    }

    /// A test-side SQL connection as the superuser through the socket directory.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let o = self.pg.options();
        let (client, conn) = tokio_postgres::Config::new()
            .host_path(&o.socket_dir)
            .port(o.port)
            .user("su")
            .password(SU_PASSWORD)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.sql()
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for Node {
    #[allow(
        clippy::disallowed_methods,
        reason = "drop cannot await; it runs once, when a test has finished with the server"
    )]
    fn drop(&mut self) {
        let Some(pm) = self.pg.is_running() else {
            return;
        };
        let pid = Pid::from_raw(pm.pid);
        let _ = kill(pid, Signal::SIGQUIT); // immediate shutdown
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && kill(pid, None).is_ok() && self.pg.is_running().is_some()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.pg.is_running().is_some() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Polls `check` until it returns true; panics after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
