//! DCS sections (`etcd3:`, `etcd:`, `zookeeper:`, others kept raw) and the choice among them.

use super::Config;
use crate::defaults::DEFAULT_ETCD_PORT;
use crate::reader::{Ctx, Section};
use crate::{ConfigError, HostPort};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `etcd:` or `etcd3:`. pgherd talks the etcd v3 API for both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EtcdSection {
    /// One endpoint, `host[:port]`.
    pub host: Option<String>,
    /// Several endpoints (YAML list or comma-separated string).
    pub hosts: Vec<String>,
    /// Default port for `host`/`hosts` entries without one.
    pub port: Option<u16>,
    /// One endpoint as a URL; may carry `user:password@`.
    pub url: Option<String>,
    /// Like `url`, and implies `use_proxies`.
    pub proxy: Option<String>,
    /// DNS SRV discovery domain (also accepted as `discovery_srv`/`srv_domain`).
    pub srv: Option<String>,
    pub srv_suffix: Option<String>,
    pub protocol: Option<Protocol>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Use the given endpoints only, without discovering the cluster's members.
    pub use_proxies: bool,
}

/// `protocol` of an etcd section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

impl EtcdSection {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let protocol_path = s.path("protocol");
        let port_path = s.path("port");
        let srv = s.string(ctx, "srv")?;
        let discovery_srv = s.string(ctx, "discovery_srv")?;
        let srv_domain = s.string(ctx, "srv_domain")?;
        let etcd = EtcdSection {
            host: s.string(ctx, "host")?,
            hosts: s.strings(ctx, "hosts")?.unwrap_or_default(),
            port: match s.raw("port") {
                None => None,
                Some(v) => Some(
                    crate::reader::to_u32(v)
                        .ok()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p != 0)
                        .ok_or_else(|| ctx.expected(&port_path, "a port number", v))?,
                ),
            },
            url: s.string(ctx, "url")?,
            proxy: s.string(ctx, "proxy")?,
            srv: srv.or(discovery_srv).or(srv_domain),
            srv_suffix: s.string(ctx, "srv_suffix")?,
            protocol: match s.string(ctx, "protocol")? {
                None => None,
                Some(p) => Some(match p.to_ascii_lowercase().as_str() {
                    "http" => Protocol::Http,
                    "https" => Protocol::Https,
                    _ => return Err(ctx.expected(&protocol_path, "http or https", &p.into())),
                }),
            },
            username: s.string(ctx, "username")?,
            password: s.string(ctx, "password")?,
            cacert: s.path_buf(ctx, "cacert")?,
            cert: s.path_buf(ctx, "cert")?,
            key: s.path_buf(ctx, "key")?,
            use_proxies: s.bool(ctx, "use_proxies")?.unwrap_or(false),
        };
        s.finish(ctx);
        Ok(etcd)
    }

    /// Endpoint URLs, as Patroni derives them: `proxy`, else `url`, else `hosts`, else `host`.
    /// Also returns credentials embedded in a URL.
    fn endpoints(
        &self,
        ctx: &Ctx,
        path: &str,
    ) -> Result<(Vec<String>, Option<Credentials>), ConfigError> {
        let protocol = self.protocol.unwrap_or(Protocol::Http).as_str();
        let port = self.port.unwrap_or(DEFAULT_ETCD_PORT);
        if let Some((key, url)) = self
            .proxy
            .as_ref()
            .map(|u| ("proxy", u))
            .or(self.url.as_ref().map(|u| ("url", u)))
        {
            let key_path = format!("{path}.{key}");
            return parse_url(url)
                .map(|(endpoint, creds)| (vec![endpoint], creds))
                .ok_or_else(|| {
                    ctx.expected(
                        &key_path,
                        r#"a URL like "http://host:2379""#,
                        &url.as_str().into(),
                    )
                });
        }
        let (key, list) = if !self.hosts.is_empty() {
            ("hosts", self.hosts.clone())
        } else if let Some(host) = &self.host {
            ("host", vec![host.clone()])
        } else if self.srv.is_some() {
            return Err(ctx.invalid(
                &format!("{path}.srv"),
                "DNS SRV discovery is not supported yet (list the endpoints in hosts)",
            ));
        } else {
            return Err(ctx.invalid(
                path,
                "missing endpoints (expected host, hosts, url or proxy)",
            ));
        };
        let key_path = format!("{path}.{key}");
        let endpoints = list
            .iter()
            .map(|entry| {
                endpoint(entry, protocol, port).ok_or_else(|| {
                    ctx.expected(&key_path, r#""host:port" entries"#, &entry.as_str().into())
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((endpoints, None))
    }
}

/// `user:password` from a URL.
type Credentials = (String, String);

/// `h`, `h:p` or a full URL -> `proto://h:p`.
fn endpoint(entry: &str, protocol: &str, default_port: u16) -> Option<String> {
    let entry = entry.trim();
    if entry.contains("://") {
        return parse_url(entry).map(|(e, _)| e);
    }
    let with_port = match entry.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => entry.to_string(),
        _ => format!("{entry}:{default_port}"),
    };
    let hp = HostPort::parse(&with_port).ok()?;
    Some(format!("{protocol}://{hp}"))
}

/// `scheme://[user:pass@]host[:port][/...]` -> (`scheme://host:port`, credentials).
fn parse_url(url: &str) -> Option<(String, Option<Credentials>)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let authority = rest.split('/').next()?;
    let (creds, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (Some((user.to_string(), pass.to_string())), hostport)
        }
        None => (None, authority),
    };
    endpoint(hostport, scheme, DEFAULT_ETCD_PORT).map(|e| (e, creds))
}

/// `zookeeper:` (Patroni's keys; see docs/compat.md, "ZooKeeper").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZookeeperSection {
    pub hosts: Vec<String>,
    pub port: Option<u16>,
    pub use_ssl: bool,
    /// Verify the server certificate (default true).
    pub verify: bool,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub key_password: Option<String>,
    /// x509 principal -> permissions (`READ`, `WRITE`, `CREATE`, `DELETE`, `ADMIN`, `ALL`).
    pub set_acls: BTreeMap<String, Vec<String>>,
}

impl ZookeeperSection {
    /// The usable settings: `host:port` entries (default port 2181, or `zookeeper.port`), TLS
    /// when `use_ssl` is true (the TLS keys are ignored otherwise, as kazoo ignores them), and
    /// the x509 ACLs of `set_acls`, which need TLS with a client certificate.
    fn settings(&self, ctx: &Ctx) -> Result<DcsSettings, ConfigError> {
        if self.hosts.is_empty() {
            return Err(ctx.invalid(
                "zookeeper.hosts",
                "missing (expected a list of host:port, or a comma-separated string)",
            ));
        }
        let port = self.port.unwrap_or(DEFAULT_ZOOKEEPER_PORT);
        let hosts = self
            .hosts
            .iter()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| zookeeper_host(ctx, h, port))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = self.use_ssl.then(|| ZookeeperTls {
            verify: self.verify,
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            key_password: self.key_password.clone(),
        });
        if let Some(tls) = &tls {
            if tls.key.is_some() && tls.cert.is_none() {
                return Err(ctx.invalid(
                    "zookeeper.key",
                    "a client key without its certificate: set zookeeper.cert too",
                ));
            }
        }
        let acls = self
            .set_acls
            .iter()
            .map(|(principal, names)| {
                zookeeper_acl(principal, names).map_err(|message| {
                    ctx.invalid(&format!("zookeeper.set_acls.{principal}"), message)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !acls.is_empty() && tls.as_ref().is_none_or(|t| t.cert.is_none()) {
            // Patroni would create znodes that only a client certificate's principal may use,
            // then fail to read them back over its own connection.
            return Err(ctx.invalid(
                "zookeeper.set_acls",
                "x509 ACLs name the principal of a TLS client certificate: set use_ssl: true and \
                 cert (and key), or remove set_acls",
            ));
        }
        Ok(DcsSettings::Zookeeper { hosts, tls, acls })
    }

    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let acls_path = s.path("set_acls");
        let zk = ZookeeperSection {
            hosts: s.strings(ctx, "hosts")?.unwrap_or_default(),
            port: s
                .u32(ctx, "port")?
                .map(|p| {
                    u16::try_from(p)
                        .map_err(|_| ctx.expected(&s.path("port"), "a port number", &p.into()))
                })
                .transpose()?,
            use_ssl: s.bool(ctx, "use_ssl")?.unwrap_or(false),
            verify: s.bool(ctx, "verify")?.unwrap_or(true),
            cacert: s.path_buf(ctx, "cacert")?,
            cert: s.path_buf(ctx, "cert")?,
            key: s.path_buf(ctx, "key")?,
            key_password: s.string(ctx, "key_password")?,
            set_acls: match s.raw("set_acls") {
                None => BTreeMap::new(),
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(principal, perms)| {
                        crate::reader::to_string_list(perms)
                            .map(|p| (principal.clone(), p))
                            .map_err(|e| {
                                ctx.expected(&format!("{acls_path}.{principal}"), &e, perms)
                            })
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(ctx.expected(
                        &acls_path,
                        "a map of principal: [permissions]",
                        other,
                    ))
                }
            },
        };
        s.finish(ctx);
        Ok(zk)
    }
}

/// How to reach the DCS, from the first DCS section in Patroni's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcsSettings {
    /// etcd over the v3 API (from an `etcd3:` or `etcd:` section).
    Etcd {
        /// `http://h:p` or `https://h:p`.
        endpoints: Vec<String>,
        username: Option<String>,
        password: Option<String>,
        cacert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    },
    /// ZooKeeper (from a `zookeeper:` section).
    Zookeeper {
        /// `host:port` (port 2181 when the entry has none).
        hosts: Vec<String>,
        /// `use_ssl: true`: TLS to every host.
        tls: Option<ZookeeperTls>,
        /// `set_acls`: the ACL of every znode created (empty: open to anyone, as kazoo's
        /// default).
        acls: Vec<ZookeeperAcl>,
    },
}

/// TLS to ZooKeeper (`zookeeper.use_ssl: true`), with kazoo's settings as Patroni maps them.
#[derive(Clone, PartialEq, Eq)]
pub struct ZookeeperTls {
    /// Verify the server certificate (kazoo's `verify_certs`).
    pub verify: bool,
    /// PEM CA bundle (kazoo's `ca`); without it, the usual public roots.
    pub cacert: Option<PathBuf>,
    /// PEM client certificate (kazoo's `certfile`).
    pub cert: Option<PathBuf>,
    /// PEM key of `cert` (kazoo's `keyfile`); without it, read from `cert`.
    pub key: Option<PathBuf>,
    /// Password of an encrypted `key` (kazoo's `keyfile_password`).
    pub key_password: Option<String>,
}

// Written by hand so that the password never reaches a log line.
impl std::fmt::Debug for ZookeeperTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperTls")
            .field("verify", &self.verify)
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field(
                "key_password",
                &self.key_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One `zookeeper.set_acls` entry: an `x509` ACL for a certificate's principal (its subject
/// DN as ZooKeeper's X509AuthenticationProvider spells it, e.g. `CN=node1,O=example`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZookeeperAcl {
    pub principal: String,
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub delete: bool,
    pub admin: bool,
}

/// `principal: [READ, WRITE, ...]` (any case, as Patroni upper-cases them; `ALL` is all five).
/// Unlike Patroni, which skips names it does not know, an unknown name is an error.
fn zookeeper_acl(principal: &str, names: &[String]) -> Result<ZookeeperAcl, String> {
    let mut acl = ZookeeperAcl {
        principal: principal.to_string(),
        read: false,
        write: false,
        create: false,
        delete: false,
        admin: false,
    };
    if names.is_empty() {
        return Err(
            "no permission listed (expected some of READ, WRITE, CREATE, DELETE, ADMIN, ALL)"
                .to_string(),
        );
    }
    for name in names {
        match name.to_ascii_uppercase().as_str() {
            "READ" => acl.read = true,
            "WRITE" => acl.write = true,
            "CREATE" => acl.create = true,
            "DELETE" => acl.delete = true,
            "ADMIN" => acl.admin = true,
            "ALL" => {
                acl.read = true;
                acl.write = true;
                acl.create = true;
                acl.delete = true;
                acl.admin = true;
            }
            _ => {
                return Err(format!(
                "unknown permission {name:?} (expected READ, WRITE, CREATE, DELETE, ADMIN or ALL)"
            ))
            }
        }
    }
    Ok(acl)
}

/// ZooKeeper's client port, used for `zookeeper.hosts` entries without one.
pub const DEFAULT_ZOOKEEPER_PORT: u16 = 2181;

/// DCS section names in the order Patroni tries them (its module names, sorted).
const DCS_ORDER: [&str; 7] = [
    "consul",
    "etcd",
    "etcd3",
    "exhibitor",
    "kubernetes",
    "raft",
    "zookeeper",
];

impl Config {
    /// The DCS to use: the first DCS section present, in Patroni's order (consul, etcd, etcd3,
    /// exhibitor, kubernetes, raft, zookeeper). etcd3/etcd and zookeeper are supported.
    pub fn dcs(&self) -> Result<DcsSettings, ConfigError> {
        let ctx = Ctx::new(&self.origins);
        let present = |name: &str| match name {
            "etcd" => self.etcd.is_some(),
            "etcd3" => self.etcd3.is_some(),
            "zookeeper" => self.zookeeper.is_some(),
            other => self.other_dcs.contains_key(other),
        };
        let Some(name) = DCS_ORDER.into_iter().find(|n| present(n)) else {
            return Err(ConfigError::Source {
                file: ctx.label("").to_string(),
                message: "no DCS configured (expected an etcd3:, etcd: or zookeeper: section with hosts, \
                          or PATRONI_ETCD3_HOSTS)"
                    .to_string(),
            });
        };
        if name == "zookeeper" {
            if let Some(zk) = &self.zookeeper {
                return zk.settings(&ctx);
            }
        }
        let etcd = match name {
            "etcd3" => self.etcd3.as_ref(),
            "etcd" => self.etcd.as_ref(),
            _ => None,
        };
        let Some(etcd) = etcd else {
            return Err(ctx.invalid(
                name,
                "DCS not supported yet (pgherd supports etcd3 and etcd, both over the etcd v3 API, and zookeeper)",
            ));
        };
        let (endpoints, url_creds) = etcd.endpoints(&ctx, name)?;
        let (url_user, url_pass) = url_creds.map_or((None, None), |(u, p)| (Some(u), Some(p)));
        Ok(DcsSettings::Etcd {
            endpoints,
            username: url_user
                .filter(|u| !u.is_empty())
                .or_else(|| etcd.username.clone()),
            password: url_pass
                .filter(|p| !p.is_empty())
                .or_else(|| etcd.password.clone()),
            cacert: etcd.cacert.clone(),
            cert: etcd.cert.clone(),
            key: etcd.key.clone(),
        })
    }
}

/// DCS sections pgherd keeps raw (not supported yet).
pub(crate) const RAW_DCS_SECTIONS: [&str; 4] = ["consul", "exhibitor", "kubernetes", "raft"];

/// `host`, `host:port`, `[v6]` or `[v6]:port` as `host:port`.
fn zookeeper_host(ctx: &Ctx, entry: &str, port: u16) -> Result<String, ConfigError> {
    let bad = || {
        ctx.invalid(
            "zookeeper.hosts",
            format!("expected host or host:port, found {entry:?}"),
        )
    };
    if entry.contains("://") || entry.contains('/') {
        return Err(bad());
    }
    let (host, given_port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (entry, None),
    };
    if host.is_empty() {
        return Err(bad());
    }
    match given_port {
        Some(p) => {
            let p: u16 = p.parse().map_err(|_| bad())?;
            Ok(format!("{host}:{p}"))
        }
        None => Ok(format!("{host}:{port}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_entries() {
        assert_eq!(
            endpoint("h1", "http", 2379).as_deref(),
            Some("http://h1:2379")
        );
        assert_eq!(
            endpoint("h1:1234", "https", 2379).as_deref(),
            Some("https://h1:1234")
        );
        assert_eq!(
            endpoint("[::1]:2379", "http", 2379).as_deref(),
            Some("http://[::1]:2379")
        );
        assert_eq!(
            endpoint("https://h:1", "http", 2379).as_deref(),
            Some("https://h:1")
        );
        assert_eq!(endpoint("", "http", 2379), None);
        assert_eq!(
            parse_url("http://u:p@etcd:2379/v3"),
            Some((
                "http://etcd:2379".to_string(),
                Some(("u".to_string(), "p".to_string()))
            ))
        );
        assert_eq!(
            parse_url("https://etcd").map(|x| x.0).as_deref(),
            Some("https://etcd:2379")
        );
        assert_eq!(parse_url("ftp://etcd"), None);
    }
}
