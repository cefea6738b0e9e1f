//! TLS to ZooKeeper (`zookeeper.use_ssl`) through in-process forwarders.
//!
//! The `zookeeper-client` crate's own `tls` feature pulls rustls with its default crypto
//! provider (aws-lc); the workspace uses ring only (root Cargo.toml). So the client keeps
//! speaking plain TCP, to loopback: each configured host gets a listener on `127.0.0.1:0`
//! whose accepted connections are carried over TLS (tokio-rustls, ring) to that host. The
//! client's connect string lists the listeners in the configured order, so its host
//! selection, reconnects and session moves work as with plain TCP: a host that cannot be
//! reached, or whose handshake fails, closes the client's connection at once and the client
//! tries the next one. The last failure of each host is kept for error messages.
//!
//! Verification as kazoo's `verify_certs` (Patroni's `verify`): with `cacert`, the server's
//! chain must lead to it (pgherd-tls: a certificate that is itself in the file is trusted, as
//! OpenSSL does), else to Mozilla's roots; `verify: false` accepts any certificate. Unlike
//! kazoo (whose SSL context does not check host names), the certificate must also name the
//! host as written in `zookeeper.hosts` (docs/compat.md, "ZooKeeper").
//!
//! The listeners and every forwarded connection are tasks owned by [`Forwarders`]: dropping
//! it (with the `ZooKeeperDcs` that holds it) aborts them all.

use crate::etcd::watch::AbortOnDrop;
use crate::DcsError;
use pgherd_config::ZookeeperTls;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use super::session::lock;

/// Pause after a failed `accept` (e.g. out of file descriptors) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn config_error(setting: &str, message: impl std::fmt::Display) -> DcsError {
    DcsError::Config(format!("zookeeper.{setting}: {message}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration of `zookeeper.use_ssl` and its files; reads them now, so that a
/// missing or unusable file is an error at start.
pub(super) fn client_config(tls: &ZookeeperTls) -> Result<Arc<ClientConfig>, DcsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("use_ssl", format!("TLS protocol versions: {e}")))?;
    let verifier = match (&tls.cacert, tls.verify) {
        (_, false) => pgherd_tls::insecure_server_verifier(provider()),
        (Some(cacert), true) => {
            let certs =
                pgherd_tls::pem::load_certs(cacert).map_err(|e| config_error("cacert", e))?;
            pgherd_tls::TrustStore::new(certs, provider())
                .and_then(|store| store.server_verifier())
                .map_err(|e| config_error("cacert", format!("{}: {e}", cacert.display())))?
        }
        (None, true) => {
            let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| config_error("use_ssl", format!("certificate verifier: {e}")))?
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &tls.cert {
        Some(cert) => {
            let key_file = tls.key.as_deref().unwrap_or(cert);
            let setting = if tls.key.is_some() { "key" } else { "cert" };
            let key = pgherd_tls::pem::load_private_key(
                key_file,
                tls.key_password.as_deref(),
                "zookeeper.key_password",
            )
            .map_err(|e| config_error(setting, e))?;
            let chain = pgherd_tls::pem::load_certs(cert).map_err(|e| config_error("cert", e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                config_error(
                    "cert",
                    format!("{}: unusable client certificate: {e}", cert.display()),
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The TLS server name of a `host:port` entry (`[v6]:port` too): the host, or its address.
pub(super) fn server_name(host_port: &str) -> Result<ServerName<'static>, DcsError> {
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => host_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        config_error(
            "hosts",
            format!("{host:?} cannot be verified as a TLS server name ({e})"),
        )
    })
}

/// The last connection failure of each host (`host:port` → message), until it next succeeds.
type Failures = Arc<Mutex<BTreeMap<String, String>>>;

/// One loopback listener per ZooKeeper host, forwarding over TLS. See the module docs.
pub(super) struct Forwarders {
    /// ZooKeeper's connect string for the client: the listeners' addresses.
    pub connect: String,
    failures: Failures,
    _listeners: Vec<AbortOnDrop>,
}

impl Forwarders {
    /// Binds one listener per host and starts serving them (inside a tokio runtime). A
    /// forwarded connection gives up on TCP connect plus handshake after `connect_timeout`.
    pub async fn start(
        hosts: &[String],
        config: Arc<ClientConfig>,
        connect_timeout: Duration,
        label: &str,
    ) -> Result<Forwarders, String> {
        let connector = TlsConnector::from(config);
        let failures = Failures::default();
        let mut connect = Vec::new();
        let mut listeners = Vec::new();
        for host in hosts {
            let name = server_name(host).map_err(|e| e.to_string())?;
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| format!("binding the TLS forwarder for {host}: {e}"))?;
            let local = listener
                .local_addr()
                .map_err(|e| format!("the TLS forwarder for {host}: {e}"))?;
            connect.push(local.to_string());
            debug!(member = label, %host, %local, "TLS forwarder listening");
            let upstream = Upstream {
                host: host.clone(),
                name,
                connector: connector.clone(),
                connect_timeout,
                failures: failures.clone(),
                label: label.to_string(),
            };
            let task = tokio::spawn(serve(listener, Arc::new(upstream)));
            listeners.push(AbortOnDrop(task.abort_handle()));
        }
        Ok(Forwarders {
            connect: connect.join(","),
            failures,
            _listeners: listeners,
        })
    }

    /// The last failure of each host that has not connected since, e.g. `127.0.0.1:2281: TLS
    /// handshake failed: invalid peer certificate: UnknownIssuer`. `None`: no failure.
    pub fn failures(&self) -> Option<String> {
        let failures = lock(&self.failures);
        if failures.is_empty() {
            return None;
        }
        let mut text = String::new();
        for (host, failure) in failures.iter() {
            if !text.is_empty() {
                text.push_str("; ");
            }
            let _ = write!(text, "{host}: {failure}");
        }
        Some(text)
    }
}

/// Where one listener forwards to.
struct Upstream {
    host: String,
    name: ServerName<'static>,
    connector: TlsConnector,
    connect_timeout: Duration,
    failures: Failures,
    label: String,
}

/// Accepts until aborted; the connections are tasks of this one (aborted with it).
async fn serve(listener: TcpListener, upstream: Arc<Upstream>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((local, _)) => {
                    connections.spawn(forward(local, upstream.clone()));
                }
                Err(error) => {
                    warn!(member = %upstream.label, host = %upstream.host, %error, "the TLS forwarder cannot accept");
                    sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Carries one client connection over TLS to the host; on failure records it and closes the
/// client's connection (the client then tries another host).
async fn forward(mut local: TcpStream, upstream: Arc<Upstream>) {
    let _ = local.set_nodelay(true);
    let connected = timeout(upstream.connect_timeout, async {
        let tcp = TcpStream::connect(&upstream.host)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        upstream
            .connector
            .connect(upstream.name.clone(), tcp)
            .await
            .map_err(|e| {
                format!("TLS handshake failed: {e} (check zookeeper.cacert, cert, key and verify)")
            })
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "no TLS connection within {:.1}s",
            upstream.connect_timeout.as_secs_f64()
        ))
    });
    let mut remote = match connected {
        Ok(remote) => {
            lock(&upstream.failures).remove(&upstream.host);
            remote
        }
        Err(failure) => {
            let previous = lock(&upstream.failures).insert(upstream.host.clone(), failure.clone());
            // Every reconnect of the client fails the same way: say it once.
            if previous.as_ref() != Some(&failure) {
                warn!(member = %upstream.label, host = %upstream.host, "ZooKeeper over TLS: {failure}");
            } else {
                debug!(member = %upstream.label, host = %upstream.host, "ZooKeeper over TLS: {failure}");
            }
            return;
        }
    };
    if let Err(error) = tokio::io::copy_bidirectional(&mut local, &mut remote).await {
        debug!(member = %upstream.label, host = %upstream.host, %error, "TLS forwarding ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let name = |h: &str| server_name(h).map(|n| n.to_str().into_owned());
        assert_eq!(name("zoo1:2281").unwrap(), "zoo1");
        assert_eq!(name("127.0.0.1:2281").unwrap(), "127.0.0.1");
        assert_eq!(name("[fd00::1]:2281").unwrap(), "fd00::1");
        let err = name("bad_name!:2281").unwrap_err().to_string();
        assert!(err.contains("zookeeper.hosts"), "{err}");
    }

    #[test]
    fn missing_files_name_the_setting() {
        let tls = |cacert: Option<&str>, cert: Option<&str>| ZookeeperTls {
            verify: true,
            cacert: cacert.map(Into::into),
            cert: cert.map(Into::into),
            key: None,
            key_password: None,
        };
        let err = client_config(&tls(Some("/nonexistent/ca.pem"), None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("zookeeper.cacert") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        let err = client_config(&tls(None, Some("/nonexistent/c.pem")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("zookeeper.cert") && err.contains("/nonexistent/c.pem"),
            "{err}"
        );
        assert!(client_config(&tls(None, None)).is_ok());
    }
}
