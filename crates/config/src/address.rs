//! `host:port` addresses as Patroni writes them (IPv6 hosts bare or in brackets).

use serde::{Serialize, Serializer};
use std::fmt;

/// What a single address should look like (used in error messages).
pub(crate) const HOST_PORT_EXPECTED: &str = r#""host:port""#;
/// What `postgresql.listen` should look like (used in error messages).
pub(crate) const LISTEN_EXPECTED: &str = r#""host[,host]:port""#;

/// One `host:port` address, e.g. `restapi.listen` or a `connect_address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port` or `[v6]:port`; `Err` carries the expectation for messages.
    pub fn parse(text: &str) -> Result<HostPort, String> {
        match split_host_port(text) {
            Some((mut hosts, port)) if hosts.len() == 1 => Ok(HostPort {
                host: hosts.remove(0),
                port,
            }),
            _ => Err(HOST_PORT_EXPECTED.to_string()),
        }
    }

    /// `true` for addresses that mean "every interface", which other members cannot connect to.
    pub fn is_wildcard(&self) -> bool {
        is_wildcard_host(&self.host)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", bracket_host(&self.host), self.port)
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `postgresql.listen`: one or more hosts sharing a port, e.g. `127.0.0.1,10.0.0.5:5432`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// Hosts as PostgreSQL's `listen_addresses` takes them (`*` = every interface).
    pub hosts: Vec<String>,
    pub port: u16,
}

impl ListenAddress {
    /// Parses `host[,host]:port`; `Err` carries the expectation for messages.
    pub fn parse(text: &str) -> Result<ListenAddress, String> {
        match split_host_port(text) {
            Some((hosts, port)) if hosts.len() == 1 || !hosts.iter().any(|h| h == "*") => {
                Ok(ListenAddress { hosts, port })
            }
            _ => Err(LISTEN_EXPECTED.to_string()),
        }
    }

    /// The host to reach the server on locally, as Patroni picks it: `localhost` when listening
    /// on a wildcard or loopback address, else the first host.
    pub fn local_host(&self) -> &str {
        let loopback = self.hosts.iter().any(|h| {
            is_wildcard_host(h) || matches!(h.as_str(), "127.0.0.1" | "::1" | "localhost")
        });
        match self.hosts.first() {
            Some(first) if !loopback => first,
            _ => "localhost",
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self.hosts.iter().map(|h| bracket_host(h)).collect();
        write!(f, "{}:{}", hosts.join(","), self.port)
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Patroni's `split_host_port`: the port follows the last `:`; hosts are comma-separated and
/// may carry IPv6 brackets. `None` unless every host is non-empty and the port is 1..=65535.
fn split_host_port(text: &str) -> Option<(Vec<String>, u16)> {
    let (hosts, port) = text.trim().rsplit_once(':')?;
    let port: u16 = port.trim().parse().ok().filter(|p| *p != 0)?;
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|h| {
            h.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .collect();
    if hosts
        .iter()
        .any(|h| h.is_empty() || h.contains(char::is_whitespace))
    {
        return None;
    }
    Some((hosts, port))
}

fn is_wildcard_host(host: &str) -> bool {
    matches!(host, "*" | "0.0.0.0" | "::")
}

/// IPv6 literals need brackets in `host:port` and in URLs.
pub(crate) fn bracket_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        let hp = HostPort::parse("127.0.0.1:8008").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("127.0.0.1", 8008));
        let v6 = HostPort::parse("[::1]:8008").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:8008");
        assert!(HostPort::parse("0.0.0.0:8008").unwrap().is_wildcard());
        for bad in [
            "localhost",
            "host:",
            ":8008",
            "host:0",
            "host:65536",
            "a,b:1",
            "h:port",
        ] {
            assert_eq!(
                HostPort::parse(bad),
                Err(r#""host:port""#.to_string()),
                "{bad}"
            );
        }
    }

    #[test]
    fn listen_address() {
        let l = ListenAddress::parse("127.0.0.1, 10.0.0.5:5432").unwrap();
        assert_eq!(l.hosts, ["127.0.0.1", "10.0.0.5"]);
        assert_eq!(l.port, 5432);
        assert_eq!(l.to_string(), "127.0.0.1,10.0.0.5:5432");
        assert_eq!(l.local_host(), "localhost");
        assert_eq!(
            ListenAddress::parse("10.0.0.5,10.0.0.6:5432")
                .unwrap()
                .local_host(),
            "10.0.0.5"
        );
        assert_eq!(ListenAddress::parse("*:5432").unwrap().hosts, ["*"]);
        for bad in ["localhost", "*,10.0.0.1:5432", "a,,b:5432", "x:99999"] {
            assert_eq!(
                ListenAddress::parse(bad),
                Err(r#""host[,host]:port""#.to_string()),
                "{bad}"
            );
        }
    }
}
