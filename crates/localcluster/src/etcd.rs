//! A throw-away single-node etcd (Debian's `/usr/bin/etcd`, package `etcd-server`) listening
//! only on 127.0.0.1, controlled by PID: start, stop, kill, pause/resume (SIGSTOP/SIGCONT) and
//! restart on the same ports and data directory. Dropping the handle stops the process.

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

const ETCD_BINARY: &str = "/usr/bin/etcd";
/// Generous: a loaded 2-core CI machine may take a while to elect the single member.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Attempts with fresh ports when another process grabbed one between probing and binding.
const PORT_ATTEMPTS: usize = 3;

/// A running (or stopped, between `stop()` and `restart()`) etcd member.
pub struct EtcdServer {
    data_dir: PathBuf,
    log_path: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Appended to the command line (e.g. `--auth-token-ttl=1`).
    extra_args: Vec<String>,
    /// An https client listener next to the plain one (which health checks use).
    tls: Option<(EtcdTls, u16)>,
    process: ServerChild,
}

/// PEM files for etcd's https client listener: its certificate and key, and the CA that client
/// certificates must be signed by (`--client-cert-auth`).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl EtcdServer {
    /// Starts etcd with its data directory and log file (`etcd.log`) inside `base_dir`
    /// (created if missing), and waits until it answers `/health`.
    pub fn start(base_dir: &Path) -> anyhow::Result<EtcdServer> {
        EtcdServer::start_with(base_dir, &[])
    }

    /// [`start`](Self::start) with extra command-line flags, kept across restarts.
    pub fn start_with(base_dir: &Path, extra_args: &[&str]) -> anyhow::Result<EtcdServer> {
        EtcdServer::start_full(base_dir, extra_args, None)
    }

    /// [`start`](Self::start) with an https client listener as well, on
    /// [`tls_client_url`](Self::tls_client_url), that requires a client certificate.
    pub fn start_tls(base_dir: &Path, tls: EtcdTls) -> anyhow::Result<EtcdServer> {
        EtcdServer::start_full(base_dir, &[], Some(tls))
    }

    fn start_full(
        base_dir: &Path,
        extra_args: &[&str],
        tls: Option<EtcdTls>,
    ) -> anyhow::Result<EtcdServer> {
        if !Path::new(ETCD_BINARY).is_file() {
            bail!("{ETCD_BINARY} not found: install the Debian package etcd-server");
        }
        fs::create_dir_all(base_dir)
            .with_context(|| format!("creating etcd base directory {}", base_dir.display()))?;
        let mut attempt = 1;
        loop {
            let ports = free_ports(3).context("finding free ports for etcd")?;
            let mut server = EtcdServer {
                data_dir: base_dir.join("etcd-data"),
                log_path: base_dir.join("etcd.log"),
                client_port: ports[0],
                peer_port: ports[1],
                extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
                tls: tls.clone().map(|t| (t, ports[2])),
                process: ServerChild::new("etcd"),
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e)
                    if attempt < PORT_ATTEMPTS && server.log_mentions("address already in use") =>
                {
                    attempt += 1;
                    eprintln!("etcd could not bind its ports ({e:#}); retrying with new ones");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `https://127.0.0.1:<tls port>` when started with [`start_tls`](Self::start_tls).
    pub fn tls_client_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(_, port)| format!("https://127.0.0.1:{port}"))
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

    /// SIGSTOP: the process keeps its sockets but answers nothing (a hung etcd).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Stops etcd if it runs, then starts it again on the same ports and data directory (keys
    /// and leases survive) and waits until it is healthy.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.launch()
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        self.process.signal(signal)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let client = match self.tls_client_url() {
            Some(https) => format!("{},{https}", self.client_url()),
            None => self.client_url(),
        };
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let mut command = Command::new(ETCD_BINARY);
        command
            .arg("--name=pgherd-test")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=pgherd-test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg(format!(
                "--initial-cluster-token=pgherd-test-{}",
                self.peer_port
            ))
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=1000")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .args(&self.extra_args)
            .args(self.tls.iter().flat_map(|(tls, _)| {
                [
                    format!("--cert-file={}", tls.cert.display()),
                    format!("--key-file={}", tls.key.display()),
                    format!("--trusted-ca-file={}", tls.client_ca.display()),
                    "--client-cert-auth".to_string(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the etcd log handle")?)
            .stderr(log);
        // Settings of the caller's own etcd must not leak into the test instance.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {ETCD_BINARY}"))?;
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
            let child = self.process.child.as_mut().context("etcd is not running")?;
            if let Some(status) = child.try_wait().context("checking etcd")? {
                self.process.child = None;
                bail!(
                    "etcd exited ({status}) before becoming healthy; log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            if self.healthy() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "etcd on {} not healthy within {READY_TIMEOUT:?}; log {}:\n{}",
                    self.client_url(),
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// `GET /health` answers `{"health":"true"}` once the member has a leader.
    fn healthy(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let limit = Some(Duration::from_secs(2));
        if stream.set_read_timeout(limit).is_err() || stream.set_write_timeout(limit).is_err() {
            return false;
        }
        let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let mut response = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut response).is_ok()
            && response.starts_with("HTTP/1.1 200")
            && response.contains(r#""health":"true""#)
    }

    fn log_mentions(&self, needle: &str) -> bool {
        log_mentions(&self.log_path, needle)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping etcd on {}: {e:#}", self.client_url());
        }
    }
}
