//! The campaign's own network: one namespace per host (etcd members, database nodes, the
//! client that runs the proxy and the workload), each with a veth `eth0` plugged into a
//! bridge that lives in a hub namespace of its own, so nothing is added to the machine's
//! namespace. Addresses are 10.231.<n>.0/24. Every name starts with `pghf-<pid>-`, the pid of
//! the run that made it: parallel runs never share a name, and `cleanup` removes what a dead
//! run left behind (its processes by PID, then its namespaces).
//!
//! Faults are nftables DROP rules in a host's namespace (table `inet pgherd_fault`), removed
//! by `heal`.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::process::{Command, Stdio};

pub const PREFIX: &str = "pghf-";

/// One host of the topology.
#[derive(Debug, Clone)]
pub struct Host {
    /// Logical name: `etcd1`, `node2`, `client`.
    pub name: String,
    pub ns: String,
    pub ip: String,
}

/// The namespaces of one run; removed on drop.
pub struct Net {
    pub tag: String,
    pub hosts: Vec<Host>,
    hub: String,
    owned: bool,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (Debian package iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The third octet of this run's subnet, from its tag (pid): only for readability, since each
/// run's bridge is in a namespace of its own.
fn subnet(tag: &str) -> u32 {
    tag.bytes().fold(0u32, |a, b| (a * 31 + u32::from(b)) % 200) + 20
}

impl Net {
    /// The namespaces of the run tagged `tag` (this process's pid by default), without
    /// creating anything: how the inner process, running in the client namespace, finds them.
    pub fn describe(tag: &str, names: &[&str]) -> Net {
        let octet = subnet(tag);
        let hosts = names
            .iter()
            .enumerate()
            .map(|(i, name)| Host {
                name: (*name).to_string(),
                ns: format!("{PREFIX}{tag}-{name}"),
                ip: format!("10.231.{octet}.{}", 10 + i),
            })
            .collect();
        Net {
            tag: tag.to_string(),
            hosts,
            hub: format!("{PREFIX}{tag}-hub"),
            owned: false,
        }
    }

    /// Creates the hub with its bridge and one namespace per host, plugged in and addressed.
    pub fn create(tag: &str, names: &[&str]) -> Result<Net> {
        let mut net = Net::describe(tag, names);
        net.owned = true;
        ip(&["netns", "add", &net.hub])?;
        ip(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.hub, "link", "set", "br0", "up"])?;
        for h in &net.hosts {
            let port = format!("p-{}", h.name);
            ip(&["netns", "add", &h.ns])?;
            ip(&[
                "link", "add", "eth0", "netns", &h.ns, "type", "veth", "peer", "name", &port,
                "netns", &net.hub,
            ])?;
            ip(&["-n", &net.hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &net.hub, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &h.ns,
                "addr",
                "add",
                &format!("{}/24", h.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &h.ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &h.ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the topology"))
    }

    /// The run's virtual IP (bench/faults vip): in the hosts' /24, above every host.
    pub fn vip(&self) -> String {
        format!("10.231.{}.100", subnet(&self.tag))
    }

    pub fn cidr(&self) -> String {
        format!("10.231.{}.0/24", subnet(&self.tag))
    }

    /// `program` run inside `host`'s namespace (`ip netns exec` execs it: the child's pid is
    /// the program's).
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(host).ns, program]);
        c
    }

    fn nft(&self, host: &str, script: &str) -> Result<()> {
        let mut child = self
            .command(host, "nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (Debian package nftables)")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {host}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Drops every packet between `host` and `peers` (all other hosts when `peers` is None).
    pub fn cut(&self, host: &str, peers: Option<&[&str]>) -> Result<()> {
        let (input, output) = match peers {
            None => (
                "iifname \"eth0\" drop".to_string(),
                "oifname \"eth0\" drop".to_string(),
            ),
            Some(peers) => {
                let ips: Vec<&str> = peers.iter().map(|p| self.host(p).ip.as_str()).collect();
                let set = ips.join(", ");
                (
                    format!("ip saddr {{ {set} }} drop"),
                    format!("ip daddr {{ {set} }} drop"),
                )
            }
        };
        self.nft(
            host,
            &format!(
                "table inet pgherd_fault {{\n\
                 chain in {{ type filter hook input priority 0; policy accept; {input}; }}\n\
                 chain out {{ type filter hook output priority 0; policy accept; {output}; }}\n\
                 }}\n"
            ),
        )
    }

    /// Removes `host`'s DROP rules (none is fine).
    pub fn heal(&self, host: &str) -> Result<()> {
        self.nft(
            host,
            "table inet pgherd_fault {}\ndelete table inet pgherd_fault\n",
        )
    }

    fn destroy(&self) {
        for ns in self
            .hosts
            .iter()
            .map(|h| h.ns.as_str())
            .chain([self.hub.as_str()])
        {
            remove_namespace(ns);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.owned {
            self.destroy();
        }
    }
}

/// Pids of the processes whose network namespace is `ns`.
fn pids_in(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs what still runs in `ns` (by PID) and deletes it.
fn remove_namespace(ns: &str) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for _ in 0..20 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = ip(&["netns", "del", ns]);
}

/// `bench/faults cleanup`: removes the namespaces (and their processes) of every run whose
/// process is gone, or of every run with `all`. Returns the namespaces removed.
pub fn cleanup(all: bool) -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("ip netns list")?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let owner_alive = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(pgherd_testkit::procs::alive);
        if all || !owner_alive {
            remove_namespace(ns);
            removed.push(ns.to_string());
        }
    }
    Ok(removed)
}
