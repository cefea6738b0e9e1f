//! A `pgherd proxy` child process on free loopback ports, configured for a [`LocalCluster`],
//! stopped by PID (SIGTERM, then SIGKILL) on drop.

use crate::cluster::{http_request, LocalCluster};
use crate::ports::free_ports;
use crate::wait::poll;
use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct ProxyProcess {
    child: Option<Child>,
    log: PathBuf,
    /// Write port (role primary) and read port (role replica).
    pub primary: u16,
    pub replicas: u16,
    /// The stats page (`/stats.json`, `/metrics`, admin actions as admin:adm-pass).
    pub stats: u16,
    /// With [`ProxyProcess::start`]'s `extra_listeners`: a primary listener with maxconn 1 and
    /// maxqueue 1, and one behind a load balancer (`accept_proxy`).
    pub limited: Option<u16>,
    pub behind_lb: Option<u16>,
    /// The ports of [`ProxyProcess::start_with_listeners`]'s own listeners.
    pub extra: Vec<u16>,
}

impl ProxyProcess {
    /// Starts `pgherd proxy` for the cluster and waits until it has discovered it.
    pub fn start(
        pgherd: &Path,
        c: &LocalCluster,
        name: &str,
        extra_listeners: bool,
    ) -> Result<ProxyProcess> {
        ProxyProcess::start_with(pgherd, c, name, extra_listeners, "")
    }

    /// [`ProxyProcess::start`] with extra lines under `proxy:` (indented by two spaces).
    pub fn start_with(
        pgherd: &Path,
        c: &LocalCluster,
        name: &str,
        extra_listeners: bool,
        extra_yaml: &str,
    ) -> Result<ProxyProcess> {
        Self::start_custom(pgherd, c, name, extra_listeners, extra_yaml, 0, |_| {
            String::new()
        })
    }

    /// [`ProxyProcess::start_with`] (without the extra listeners) plus the caller's own
    /// listeners: `listeners(ports)` returns YAML entries of the `listeners:` list (indented
    /// by four spaces) for `count` free ports, which end up in [`ProxyProcess::extra`].
    pub fn start_with_listeners(
        pgherd: &Path,
        c: &LocalCluster,
        name: &str,
        extra_yaml: &str,
        count: usize,
        listeners: impl FnOnce(&[u16]) -> String,
    ) -> Result<ProxyProcess> {
        Self::start_custom(pgherd, c, name, false, extra_yaml, count, listeners)
    }

    fn start_custom(
        pgherd: &Path,
        c: &LocalCluster,
        name: &str,
        extra_listeners: bool,
        extra_yaml: &str,
        count: usize,
        listeners: impl FnOnce(&[u16]) -> String,
    ) -> Result<ProxyProcess> {
        let ports = free_ports(5 + count)?;
        let extra = ports[5..].to_vec();
        let dcs = c.dcs.yaml_section();
        let mut yaml = format!(
            r#"scope: {scope}
namespace: /service/
{dcs}proxy:
  name: {name}
{extra_yaml}  hold_timeout: 40s
  health_check:
    interval: 500ms
    fall: 2
    rise: 1
  registration:
    ttl: 6s
  listeners:
    - name: primary
      bind: 127.0.0.1:{p}
      role: primary
    - name: replicas
      bind: 127.0.0.1:{r}
      role: replica
      balance: roundrobin
      max_lag: 1MB
"#,
            scope = c.options.scope,
            p = ports[0],
            r = ports[1],
        );
        if extra_listeners {
            yaml.push_str(&format!(
                "    - name: limited\n      bind: 127.0.0.1:{}\n      role: primary\n      maxconn: 1\n      maxqueue: 1\n      queue_timeout: 30s\n    - name: behind_lb\n      bind: 127.0.0.1:{}\n      role: primary\n      accept_proxy: true\n",
                ports[3], ports[4]
            ));
        }
        yaml.push_str(&listeners(&extra));
        yaml.push_str(&format!(
            "  stats:\n    bind: 127.0.0.1:{}\n    refresh: 1s\n    admin:\n      username: admin\n      password: adm-pass\n",
            ports[2]
        ));
        let file = c.root.join(format!("{name}.yml"));
        std::fs::write(&file, yaml).context("writing the proxy configuration")?;
        let log = c.root.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).context("creating the proxy log")?;
        let child = Command::new(pgherd)
            .arg("proxy")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning pgherd proxy")?;
        let p = ProxyProcess {
            child: Some(child),
            log,
            primary: ports[0],
            replicas: ports[1],
            stats: ports[2],
            limited: extra_listeners.then_some(ports[3]),
            behind_lb: extra_listeners.then_some(ports[4]),
            extra,
        };
        p.wait_for("the stats page", |s| s["proxy"]["discovered"] == true);
        Ok(p)
    }

    /// `/stats.json`, when the stats page answers.
    pub fn stats(&self) -> Option<Value> {
        let (code, body) = http_request(self.stats, "GET", "/stats.json", None).ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Polls the stats until `ok` holds (60 s); panics with the proxy's log otherwise.
    pub fn wait_for(&self, what: &str, mut ok: impl FnMut(&Value) -> bool) -> Value {
        let r = poll(
            what,
            Duration::from_secs(60),
            Duration::from_millis(20),
            || self.stats().filter(|s| ok(s)),
        );
        match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!("--- proxy log ---\n{}", self.log_tail(60));
                eprintln!("--- stats ---\n{:#}", self.stats().unwrap_or_default());
                panic!("{e}");
            }
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let exited = poll(
            "proxy exit",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || child.try_wait().ok().flatten(),
        );
        if exited.is_err() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}
