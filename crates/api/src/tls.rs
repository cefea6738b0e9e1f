//! TLS with rustls: the REST API server (`restapi.certfile`/`keyfile`/`keyfile_password`/
//! `cafile`/`verify_client`) and REST clients (`ctl` section, falling back to `restapi` as
//! patronictl does): the CLI and peer probes.
//!
//! Keys as `pgherd_tls::pem` reads them (PKCS#8, PKCS#1, SEC1; encrypted PKCS#8 with
//! `keyfile_password`). Without `keyfile`, the key is read from `certfile` (Python's
//! `load_cert_chain`).
//!
//! Peer certificates are verified as OpenSSL verifies them for Patroni (pgherd-tls): a
//! certificate that is itself in the CA file is trusted, so the single self-signed certificate
//! of `openssl req -x509` serves as CA, server and client certificate (docs/compat.md#tls).

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use pgherd_config::VerifyClient;
use pgherd_tls::pem::{self, PemError};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A TLS file or setting that cannot be used; names the file and the fix.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] PemError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Setting(String),
}

fn invalid(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(pem::load_certs(path)?)
}

/// The private key in a PEM file, decrypted with `password` (`keyfile_password`) when it is
/// encrypted.
pub fn load_private_key(
    path: &Path,
    password: Option<&str>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    Ok(pem::load_private_key(path, password, "keyfile_password")?)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a CA file, trusted as OpenSSL trusts them.
fn trusted(cafile: &Path) -> Result<pgherd_tls::TrustStore, TlsError> {
    pgherd_tls::TrustStore::new(load_certs(cafile)?, provider())
        .map_err(|e| invalid(cafile, e.to_string()))
}

/// The server side of the REST API.
pub fn server_config(
    certfile: &Path,
    keyfile: Option<&Path>,
    keyfile_password: Option<&str>,
    cafile: Option<&Path>,
    verify_client: VerifyClient,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(certfile)?;
    let key = load_private_key(keyfile.unwrap_or(certfile), keyfile_password)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setting(format!("TLS protocol versions: {e}")))?;
    let builder = match verify_client {
        VerifyClient::None => builder.with_no_client_auth(),
        mode => {
            let cafile = cafile.ok_or_else(|| {
                TlsError::Setting(
                    "restapi.verify_client needs restapi.cafile (the CA that signs client \
                     certificates)"
                        .to_string(),
                )
            })?;
            // OpenSSL's rules, as Patroni: a client certificate that is itself in the CA file
            // is accepted (pgherd-tls; docs/compat.md#tls).
            let verifier = trusted(cafile)?
                .client_verifier(mode == VerifyClient::Required)
                .map_err(|e| invalid(cafile, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(certfile, format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How a REST client connects: the `ctl` section with Patroni's fallbacks to `restapi`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Do not verify the server certificate (`ctl.insecure`, `-k`).
    pub insecure: bool,
    /// CA bundle to verify servers (`ctl.cacert`, else `restapi.cafile`).
    pub cacert: Option<PathBuf>,
    /// Client certificate and key (`ctl.certfile`/`keyfile`, else the `restapi` ones).
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub keyfile_password: Option<String>,
}

impl ClientTls {
    pub fn from_config(ctl: &pgherd_config::Ctl, restapi: &pgherd_config::RestApi) -> ClientTls {
        ClientTls {
            insecure: ctl.insecure,
            cacert: ctl.cacert.clone().or_else(|| restapi.cafile.clone()),
            certfile: ctl.certfile.clone().or_else(|| restapi.certfile.clone()),
            keyfile: ctl.keyfile.clone().or_else(|| restapi.keyfile.clone()),
            keyfile_password: ctl
                .keyfile_password
                .clone()
                .or_else(|| restapi.keyfile_password.clone()),
        }
    }

    /// The rustls configuration of these settings: servers verified with `cacert` as OpenSSL
    /// does (a server certificate that is itself in the file is trusted; pgherd-tls), else
    /// with Mozilla's roots; not at all when `insecure`; the client certificate presented.
    pub fn rustls_config(&self) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setting(format!("TLS protocol versions: {e}")))?;
        let verifier = match (&self.cacert, self.insecure) {
            (_, true) => pgherd_tls::insecure_server_verifier(provider()),
            (Some(cacert), false) => trusted(cacert)?
                .server_verifier()
                .map_err(|e| invalid(cacert, e.to_string()))?,
            (None, false) => {
                let roots =
                    RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Setting(format!("server certificate verifier: {e}")))?
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.certfile {
            Some(certfile) => {
                let key = load_private_key(
                    self.keyfile.as_deref().unwrap_or(certfile),
                    self.keyfile_password.as_deref(),
                )?;
                builder
                    .with_client_auth_cert(load_certs(certfile)?, key)
                    .map_err(|e| invalid(certfile, format!("unusable client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A reqwest client with these settings, `authorization` (a full `Basic ...` header
    /// value) sent on every request, and a per-request `timeout`.
    pub fn http_client(
        &self,
        authorization: Option<&str>,
        timeout: Duration,
    ) -> Result<reqwest::Client, TlsError> {
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(self.rustls_config()?)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("pgherd/", env!("CARGO_PKG_VERSION")));
        if let Some(value) = authorization {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                TlsError::Setting("authentication contains invalid characters".into())
            })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        builder
            .build()
            .map_err(|e| TlsError::Setting(format!("HTTP client: {e}")))
    }
}

/// `http://h:p/patroni` + `switchover` -> `http://h:p/switchover`.
pub fn endpoint_url(api_url: &str, endpoint: &str) -> Option<String> {
    let (scheme, rest) = api_url.split_once("://")?;
    let netloc = rest.split(['/', '?']).next().filter(|n| !n.is_empty())?;
    Some(format!(
        "{scheme}://{netloc}/{}",
        endpoint.trim_start_matches('/')
    ))
}

/// `Basic <base64(user:password)>` for `authentication: {username, password}`.
pub fn basic_authorization(auth: &pgherd_config::BasicAuth) -> Option<String> {
    use base64::Engine;
    let user = auth.username.as_deref()?;
    let password = auth.password.as_deref().unwrap_or("");
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    ))
}

/// What the access checks need to know about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The connection is TLS.
    pub tls: bool,
    /// The client presented a certificate that the verifier accepted.
    pub client_cert: bool,
}

impl Connected<IncomingStream<'_, TcpListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        ConnInfo {
            peer: *stream.remote_addr(),
            tls: false,
            client_cert: false,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        ConnInfo {
            peer: *stream.remote_addr(),
            tls: true,
            client_cert: session
                .peer_certificates()
                .is_some_and(|certs| !certs.is_empty()),
        }
    }
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed handshake, at warn with the peer and the reason ("invalid peer certificate:
/// UnknownIssuer", "received fatal alert: UnknownCA" when the client refused ours, ...). A
/// client that closes before saying anything (a TCP health check) is only a debug line.
fn log_refused_handshake(peer: SocketAddr, error: &std::io::Error) {
    let not_tls = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        });
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        tracing::debug!(%peer, error = %error, "REST API: connection closed before the TLS handshake");
    } else if not_tls {
        tracing::warn!(%peer, error = %error, "REST API: TLS handshake refused: the client does not speak TLS (plain HTTP to the HTTPS port?)");
    } else {
        tracing::warn!(%peer, error = %error, "REST API: TLS handshake refused");
    }
}

/// A TLS listener for `axum::serve`. Handshakes run in their own tasks, so a slow or silent
/// client never delays the others; refused handshakes are logged (peer and reason) and
/// dropped.
/// Each handshake uses the TLS configuration of the settings in force at accept time, so a
/// certificate renewed on reload is served to the next client.
pub struct TlsListener {
    local: std::io::Result<SocketAddr>,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        settings: tokio::sync::watch::Receiver<Arc<crate::ApiSettings>>,
    ) -> TlsListener {
        let local = listener.local_addr();
        let (tx, ready) = mpsc::channel(64);
        let accept_task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "REST API: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(config) = settings.borrow().tls.clone() else {
                    continue;
                };
                let acceptor = TlsAcceptor::from(config);
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => log_refused_handshake(peer, &e),
                        Err(_) => tracing::warn!(
                            %peer,
                            "REST API: TLS handshake refused: not completed within {}s",
                            HANDSHAKE_TIMEOUT.as_secs()
                        ),
                    }
                });
            }
        });
        TlsListener {
            local,
            ready,
            accept_task,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task never ends on its own; if it did, accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(addr) => Ok(*addr),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_url;

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            endpoint_url("https://10.0.0.1:8008/patroni", "switchover").as_deref(),
            Some("https://10.0.0.1:8008/switchover")
        );
        assert_eq!(endpoint_url("nonsense", "x"), None);
    }
}
