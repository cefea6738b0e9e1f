//! How to reach etcd: the settings, their validation, the TLS files, and the tonic endpoint
//! each configured URL becomes. Nothing here does network I/O.

use crate::DcsError;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{ClientTlsConfig, Endpoint, Identity};

/// HTTP/2 pings on open streams detect a silently dead etcd. etcd refuses pings more frequent
/// than every 5 s (`--grpc-keepalive-min-time`) and pings without streams, hence these values.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd (the `etcd3:` configuration section, already resolved to URLs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http://host:port` or `https://host:port`; a bare `host:port` means http, or https when
    /// a CA or client certificate is configured.
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA bundle used to verify etcd (required for https: system roots are not loaded).
    pub cacert: Option<PathBuf>,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

// Written by hand so that the password never reaches a log line.
impl fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// One configured endpoint: its URL as written in the configuration (shown in messages) and
/// the tonic endpoint it connects with.
pub(super) struct Target {
    pub url: String,
    pub endpoint: Endpoint,
}

/// `etcd3.username` / `etcd3.password`, for `Auth.Authenticate`.
pub(super) struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

pub(super) fn config_error(message: String) -> DcsError {
    DcsError::Rejected {
        doing: "configuring the etcd client",
        message,
    }
}

impl EtcdSettings {
    /// Validates the settings, reads the TLS files and builds one endpoint per URL; a new TCP
    /// connection gives up after `connect_timeout`.
    pub(super) fn resolve(
        &self,
        connect_timeout: Duration,
    ) -> Result<(Vec<Target>, Option<Credentials>), DcsError> {
        if self.endpoints.is_empty() {
            return Err(config_error(
                "no etcd endpoint configured; set etcd3.hosts (or host/url)".to_string(),
            ));
        }
        if let Some(bad) = self
            .endpoints
            .iter()
            .find(|e| e.contains("://") && !e.starts_with("http://") && !e.starts_with("https://"))
        {
            return Err(config_error(format!(
                "endpoint {bad} has an unsupported scheme; use http://host:port or https://host:port"
            )));
        }
        let tls = self.tls()?;
        let targets = self
            .endpoints
            .iter()
            .map(|url| target(url, tls.as_ref(), connect_timeout))
            .collect::<Result<_, _>>()?;
        let credentials = self.username.as_ref().map(|user| Credentials {
            user: user.clone(),
            password: self.password.clone().unwrap_or_default(),
        });
        Ok((targets, credentials))
    }

    /// The TLS configuration when any endpoint is https or a TLS file is set.
    fn tls(&self) -> Result<Option<EtcdTls>, DcsError> {
        let any_https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        let tls_files = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        if !any_https && !tls_files {
            return Ok(None);
        }
        if let Some(plain) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
            return Err(config_error(format!(
                "endpoint {plain} uses http:// while TLS is configured; use https:// for every \
                 etcd3 endpoint or remove cacert/cert/key"
            )));
        }
        let mut tls = ClientTlsConfig::new();
        let verifier = match &self.cacert {
            Some(ca) => Some(trusted(ca)?),
            None => None,
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read_pem("cert", cert)?,
                    read_pem("key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(config_error(
                    "etcd3.cert and etcd3.key must be set together".to_string(),
                ))
            }
        }
        Ok(Some(EtcdTls {
            config: tls,
            verifier,
        }))
    }
}

/// The TLS of every endpoint: tonic's settings (client certificate) and, with `etcd3.cacert`,
/// our verifier over it (pgherd-tls): an etcd certificate that is itself in the CA file is
/// trusted, as OpenSSL and Patroni's etcd client do (docs/compat.md#tls).
#[derive(Clone)]
struct EtcdTls {
    config: ClientTlsConfig,
    verifier: Option<Arc<dyn ServerCertVerifier>>,
}

fn trusted(ca: &Path) -> Result<Arc<dyn ServerCertVerifier>, DcsError> {
    let pem = read_pem("cacert", ca)?;
    let unusable = |e: &dyn fmt::Display| {
        config_error(format!(
            "{}: {e}; check the etcd3.cacert setting",
            ca.display()
        ))
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(&format!("not a PEM certificate file ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    pgherd_tls::TrustStore::new(certs, provider)
        .and_then(|store| store.server_verifier())
        .map_err(|e| unusable(&e))
}

fn target(url: &str, tls: Option<&EtcdTls>, connect_timeout: Duration) -> Result<Target, DcsError> {
    let full = match (url.contains("://"), tls.is_some()) {
        (true, _) => url.to_string(),
        (false, true) => format!("https://{url}"),
        (false, false) => format!("http://{url}"),
    };
    let invalid = |e: &dyn std::error::Error| {
        config_error(format!(
            "endpoint {url} is not usable: {}; check the etcd3.hosts setting",
            super::retry::chain(e)
        ))
    };
    let mut endpoint = Endpoint::from_shared(full)
        .map_err(|e| invalid(&e))?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .keep_alive_while_idle(false)
        .tcp_keepalive(Some(H2_PING_INTERVAL));
    if let Some(tls) = tls {
        endpoint = match &tls.verifier {
            Some(verifier) => endpoint
                .tls_config_with_verifier(tls.config.clone(), verifier.clone())
                .map_err(|e| invalid(&e))?,
            None => endpoint
                .tls_config(tls.config.clone())
                .map_err(|e| invalid(&e))?,
        };
    }
    Ok(Target {
        url: url.to_string(),
        endpoint,
    })
}

fn read_pem(setting: &str, path: &Path) -> Result<Vec<u8>, DcsError> {
    std::fs::read(path).map_err(|e| {
        config_error(format!(
            "cannot read {setting} {}: {e}; check the etcd3.{setting} setting",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(urls: &[&str]) -> EtcdSettings {
        EtcdSettings {
            endpoints: urls.iter().map(|u| u.to_string()).collect(),
            ..EtcdSettings::default()
        }
    }

    fn error(settings: &EtcdSettings) -> String {
        match settings.resolve(Duration::from_secs(1)) {
            Ok(_) => panic!("{settings:?} should be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn resolving_is_offline_and_validates_settings() {
        // No runtime and nothing listening: resolving must still work.
        let (targets, credentials) = endpoints(&["http://127.0.0.1:1", "127.0.0.1:2"])
            .resolve(Duration::from_secs(1))
            .expect("valid settings");
        assert_eq!(targets[1].url, "127.0.0.1:2", "shown as configured");
        assert_eq!(targets[1].endpoint.uri().scheme_str(), Some("http"));
        assert!(credentials.is_none());

        let err = error(&endpoints(&[]));
        assert!(err.contains("etcd3.hosts"), "{err}");
        let err = error(&endpoints(&["unix:///x"]));
        assert!(err.contains("unsupported scheme"), "{err}");
        let err = error(&endpoints(&["http://127.0.0.1:2379/a b"]));
        assert!(err.contains("not usable") && err.contains("a b"), "{err}");

        let mut tls = endpoints(&["http://127.0.0.1:2379"]);
        tls.cacert = Some("/nonexistent/ca.pem".into());
        let err = error(&tls);
        assert!(err.contains("use https://"), "{err}");
        tls.endpoints = vec!["https://127.0.0.1:2379".into()];
        let err = error(&tls);
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("etcd3.cacert"),
            "{err}"
        );

        let mut half = endpoints(&["https://127.0.0.1:2379"]);
        half.cert = Some("/nonexistent/cert.pem".into());
        let err = error(&half);
        assert!(err.contains("cert and etcd3.key"), "{err}");
    }

    #[test]
    fn a_bare_host_is_https_when_tls_is_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pgherd_testkit::pki::Pki::generate(dir.path()).expect("certificates");
        let mut s = endpoints(&["127.0.0.1:2379"]);
        s.cacert = Some(pki.ca);
        let (targets, _) = s.resolve(Duration::from_secs(1)).expect("valid");
        assert_eq!(targets[0].endpoint.uri().scheme_str(), Some("https"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").expect("write ca");
        let mut s = endpoints(&["https://127.0.0.1:2379"]);
        s.cacert = Some(ca.clone());
        let err = error(&s);
        assert!(
            err.contains(&ca.display().to_string()) && err.contains("etcd3.cacert"),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let mut s = endpoints(&["http://127.0.0.1:2379"]);
        s.username = Some("root".into());
        s.password = Some("hunter2".into());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("root"),
            "{shown}"
        );
        let (_, credentials) = s.resolve(Duration::from_secs(1)).expect("valid");
        let shown = format!("{credentials:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("root"),
            "{shown}"
        );
    }
}
