//! A throw-away standalone ZooKeeper (Debian's package `zookeeper`, run with `java`) listening
//! only on 127.0.0.1, controlled by PID like [`crate::etcd::EtcdServer`]: start, stop, kill,
//! pause/resume (SIGSTOP/SIGCONT) and restart on the same port and data directory. Dropping
//! the handle stops the process. With [`ZooKeeperServer::start_tls`] it also serves TLS with
//! client certificates (netty, PEM key and trust stores, x509 authentication) on a second port.

use crate::ports::free_ports;
use crate::server::{log_mentions, log_tail, ServerChild};
use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const JAVA: &str = "/usr/bin/java";
/// The server jar (its manifest's Class-Path names most of the other jars it needs), netty's
/// codec and resolver (left out of that Class-Path, needed by netty's server and client
/// connections, so TLS) and slf4j-simple (without a binding ZooKeeper logs nothing); Debian's
/// zookeeper, libnetty-java and libslf4j-java.
const CLASS_PATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/netty-codec.jar:\
                          /usr/share/java/netty-resolver.jar:/usr/share/java/slf4j-simple.jar";
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";
/// ZooKeeper's command-line client (what zkCli.sh runs).
const CLI_CLASS: &str = "org.apache.zookeeper.ZooKeeperMain";
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous: a JVM on a loaded 2-core machine takes a while to start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(100);
const PORT_ATTEMPTS: usize = 3;
/// The server's tick; session timeouts may range from 2 to 20 ticks by default, so this one is
/// short and the bounds are set explicitly (`minSessionTimeout`/`maxSessionTimeout`).
const TICK_MS: u32 = 200;

/// A running (or stopped, between `stop()` and `restart()`) standalone ZooKeeper.
pub struct ZooKeeperServer {
    dir: PathBuf,
    log_path: PathBuf,
    client_port: u16,
    /// The TLS port and its files ([`ZooKeeperServer::start_tls`]).
    secure: Option<(u16, ZooKeeperTls)>,
    /// The client certificate [`ZooKeeperServer::get`] presents over TLS, when set.
    cli_identity: Option<ZooKeeperTls>,
    process: ServerChild,
}

/// PEM files of one side of a TLS connection to ZooKeeper (ZooKeeper 3.8 reads PEM stores).
#[derive(Debug, Clone)]
pub struct ZooKeeperTls {
    /// The certificate chain and its private key (unencrypted), in one file.
    pub key_store: PathBuf,
    /// The CA certificates that sign the other side's certificates.
    pub trust_store: PathBuf,
}

/// One ACL entry of a znode, as ZooKeeper's CLI prints it: scheme, id, permissions
/// (`cdrwa` letters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub scheme: String,
    pub id: String,
    pub permissions: String,
}

impl ZooKeeperServer {
    /// Starts ZooKeeper with its configuration, data directory and log (`zookeeper.log`)
    /// inside `base_dir` (created if missing), and waits until it serves requests.
    pub fn start(base_dir: &Path) -> anyhow::Result<ZooKeeperServer> {
        Self::start_with(base_dir, None)
    }

    /// Like [`start`](Self::start), serving TLS too on [`secure_host`](Self::secure_host):
    /// `tls` is the server's key store and the CA of client certificates, which clients must
    /// present (`ssl.clientAuth=need`); they authenticate as scheme `x509` with their subject
    /// DN. The plain port stays open (readiness checks, unauthenticated clients).
    pub fn start_tls(base_dir: &Path, tls: ZooKeeperTls) -> anyhow::Result<ZooKeeperServer> {
        Self::start_with(base_dir, Some(tls))
    }

    fn start_with(base_dir: &Path, tls: Option<ZooKeeperTls>) -> anyhow::Result<ZooKeeperServer> {
        for (path, package) in [(JAVA, "default-jre-headless"), (ZOOKEEPER_JAR, "zookeeper")] {
            if !Path::new(path).is_file() {
                bail!("{path} not found: install the Debian package {package} (dev/setup does)");
            }
        }
        fs::create_dir_all(base_dir)
            .with_context(|| format!("creating ZooKeeper base directory {}", base_dir.display()))?;
        let mut attempt = 1;
        loop {
            let ports = free_ports(2).context("finding free ports for ZooKeeper")?;
            let mut server = ZooKeeperServer {
                dir: base_dir.to_path_buf(),
                log_path: base_dir.join("zookeeper.log"),
                client_port: ports[0],
                secure: tls.clone().map(|tls| (ports[1], tls)),
                cli_identity: None,
                process: ServerChild::new("ZooKeeper"),
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e)
                    if attempt < PORT_ATTEMPTS && server.log_mentions("Address already in use") =>
                {
                    attempt += 1;
                    eprintln!("ZooKeeper could not bind its port ({e:#}); retrying with a new one");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `127.0.0.1:<client port>` (a `zookeeper.hosts` entry).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Makes [`get`](Self::get) read over TLS as `client` (its key store and the CA of the
    /// server), for znodes whose x509 ACL only that certificate's principal may read.
    pub fn with_cli_identity(mut self, client: ZooKeeperTls) -> ZooKeeperServer {
        self.cli_identity = Some(client);
        self
    }

    /// `127.0.0.1:<TLS port>`; `None` without TLS.
    pub fn secure_host(&self) -> Option<String> {
        self.secure
            .as_ref()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
    }

    /// The ACL of the znode at `path`, read with ZooKeeper's own command-line client over TLS
    /// with the client certificate `client` (which needs READ or ADMIN on the znode).
    pub fn get_acl(&self, path: &str, client: &ZooKeeperTls) -> anyhow::Result<Vec<AclEntry>> {
        let host = self
            .secure_host()
            .context("ZooKeeper was started without TLS")?;
        let (success, text) = self.cli(&tls_properties(client), &host, &["getAcl", path])?;
        if !success {
            bail!("zkCli getAcl {path} on {host} failed:\n{text}");
        }
        // Pairs of lines: `'scheme,'id` then `: perms`.
        let lines: Vec<&str> = text.lines().collect();
        let mut entries = Vec::new();
        for pair in lines.windows(2) {
            let (Some(head), Some(perms)) =
                (pair[0].strip_prefix('\''), pair[1].strip_prefix(": "))
            else {
                continue;
            };
            let Some((scheme, id)) = head.split_once(",'") else {
                continue;
            };
            entries.push(AclEntry {
                scheme: scheme.to_string(),
                id: id.to_string(),
                permissions: perms.trim().to_string(),
            });
        }
        if entries.is_empty() {
            bail!("no ACL in zkCli's answer for {path}:\n{text}");
        }
        Ok(entries)
    }

    /// The data of the znode at `path` (`None` if absent), read with ZooKeeper's own Java
    /// command-line client (independent of pgherd's); one-line values only. Killed by PID after
    /// 30 s (a paused server).
    #[allow(
        clippy::disallowed_methods,
        reason = "synchronous harness: blocks the calling test or spawn_blocking thread, never a runtime worker"
    )]
    pub fn get(&self, path: &str) -> anyhow::Result<Option<String>> {
        let (success, text) = match (&self.cli_identity, self.secure_host()) {
            (Some(client), Some(host)) => {
                self.cli(&tls_properties(client), &host, &["get", path])?
            }
            _ => self.cli(&[], &self.host(), &["get", path])?,
        };
        if !success {
            return Ok(None);
        }
        Ok(text.lines().last().map(str::to_string))
    }

    /// Runs one zkCli command against `server` (with JVM `properties`); returns whether it
    /// succeeded and its standard output. Killed by PID after 30 s (a paused server).
    #[allow(
        clippy::disallowed_methods,
        reason = "synchronous harness: blocks the calling test or spawn_blocking thread, never a runtime worker"
    )]
    fn cli(
        &self,
        properties: &[String],
        server: &str,
        command: &[&str],
    ) -> anyhow::Result<(bool, String)> {
        let out = self.dir.join("zkcli.out");
        let file = fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut child = Command::new(JAVA)
            .args(properties)
            .arg("-cp")
            .arg(CLASS_PATH)
            .arg(CLI_CLASS)
            .args(["-server", server])
            .args(command)
            .env_remove("CLASSPATH")
            .env_remove("JAVA_TOOL_OPTIONS")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {JAVA} {CLI_CLASS}"))?;
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for zkCli")? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("zkCli {command:?} took longer than {CLI_TIMEOUT:?}");
            }
            thread::sleep(POLL_EVERY);
        };
        let text =
            fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
        Ok((status.success(), text))
    }

    /// PID of the running process, `None` after `stop()`/`kill()`.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// SIGTERM (plus SIGCONT, in case it is paused), then SIGKILL if it has not exited within
    /// 10 s; the child is reaped. A no-op when not running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.process.stop()
    }

    /// SIGKILL, then reap. A no-op when not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill()
    }

    /// SIGSTOP: the process keeps its socket but answers nothing (a hung server).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Stops ZooKeeper if it runs, then starts it again on the same port and data directory
    /// (znodes and sessions survive) and waits until it serves.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.launch()
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        self.process.signal(signal)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let data_dir = self.dir.join("zookeeper-data");
        fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let config = self.dir.join("zoo.cfg");
        // Standalone mode; sessions from 2 ticks (0.4 s) to 120 s, so tests may use short ttls.
        let text = format!(
            "tickTime={TICK_MS}\n\
             dataDir={}\n\
             clientPort={}\n\
             clientPortAddress=127.0.0.1\n\
             minSessionTimeout={}\n\
             maxSessionTimeout=120000\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,cons\n\
             maxClientCnxns=0\n",
            data_dir.display(),
            self.client_port,
            2 * TICK_MS,
        );
        let mut text = text;
        if let Some((port, tls)) = &self.secure {
            // TLS needs the netty connection factory (its jars are on zookeeper.jar's
            // Class-Path in Debian); clients are authenticated by their certificate.
            text.push_str(&format!(
                "secureClientPort={port}\n\
                 secureClientPortAddress=127.0.0.1\n\
                 serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
                 ssl.keyStore.location={}\n\
                 ssl.keyStore.type=PEM\n\
                 ssl.trustStore.location={}\n\
                 ssl.trustStore.type=PEM\n\
                 ssl.clientAuth=need\n\
                 authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider\n",
                tls.key_store.display(),
                tls.trust_store.display(),
            ));
        }
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let child = Command::new(JAVA)
            .arg("-Xmx256m")
            .arg("-XX:+UseSerialGC")
            .arg("-Dzookeeper.jmx.log4j.disable=true")
            .arg("-cp")
            .arg(CLASS_PATH)
            .arg(MAIN_CLASS)
            .arg(&config)
            .current_dir(&self.dir)
            .env_remove("JAVA_TOOL_OPTIONS")
            .env_remove("CLASSPATH")
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("duplicating the ZooKeeper log handle")?,
            )
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {JAVA} {MAIN_CLASS}"))?;
        self.process.child = Some(child);
        if let Err(e) = self.wait_ready() {
            let _ = self.kill();
            return Err(e);
        }
        Ok(())
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "synchronous harness: blocks the calling test or spawn_blocking thread, never a runtime worker"
    )]
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self
                .process
                .child
                .as_mut()
                .context("ZooKeeper is not running")?;
            if let Some(status) = child.try_wait().context("checking ZooKeeper")? {
                self.process.child = None;
                bail!(
                    "ZooKeeper exited ({status}) before serving; log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            if self.serving() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "ZooKeeper on {} not serving within {READY_TIMEOUT:?}; log {}:\n{}",
                    self.host(),
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// The `srvr` four-letter command answers with the server's mode once it serves clients.
    fn serving(&self) -> bool {
        self.four_letters("srvr")
            .is_some_and(|r| r.contains("Mode: standalone"))
    }

    /// The ids of the sessions connected right now (the `cons` four-letter command).
    pub fn connected_sessions(&self) -> anyhow::Result<Vec<i64>> {
        let text = self
            .four_letters("cons")
            .context("ZooKeeper did not answer the cons command")?;
        text.split("sid=0x")
            .skip(1)
            .map(|rest| {
                let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
                u64::from_str_radix(&hex, 16)
                    .map(|id| id as i64)
                    .with_context(|| format!("a session id in {text:?}"))
            })
            .collect()
    }

    /// One four-letter command (whitelisted in the configuration), its whole answer.
    fn four_letters(&self, command: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        let limit = Some(Duration::from_secs(2));
        stream.set_read_timeout(limit).ok()?;
        stream.set_write_timeout(limit).ok()?;
        stream.write_all(command.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    }

    fn log_mentions(&self, needle: &str) -> bool {
        log_mentions(&self.log_path, needle)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }
}

/// The JVM properties of ZooKeeper's client for TLS as `client` (netty, PEM stores).
fn tls_properties(client: &ZooKeeperTls) -> Vec<String> {
    vec![
        "-Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty".to_string(),
        "-Dzookeeper.client.secure=true".to_string(),
        format!(
            "-Dzookeeper.ssl.keyStore.location={}",
            client.key_store.display()
        ),
        "-Dzookeeper.ssl.keyStore.type=PEM".to_string(),
        format!(
            "-Dzookeeper.ssl.trustStore.location={}",
            client.trust_store.display()
        ),
        "-Dzookeeper.ssl.trustStore.type=PEM".to_string(),
    ]
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping ZooKeeper on {}: {e:#}", self.host());
        }
    }
}
