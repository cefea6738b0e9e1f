//! TLS with rustls: the REST API server (`restapi.certfile`/`keyfile`/`keyfile_password`/
//! `cafile`/`verify_client`) and REST clients (`ctl` section, falling back to `restapi` as
//! patronictl does): the CLI and peer probes.
//!
//! Keys: PEM PKCS#8, PKCS#1 (RSA) or SEC1 (EC); with `keyfile_password`, an encrypted PKCS#8
//! key (`BEGIN ENCRYPTED PRIVATE KEY`, as written by `openssl pkcs8 -topk8`). Legacy
//! OpenSSL-encrypted PEM (`Proc-Type: 4,ENCRYPTED`) is refused with a conversion hint.
//! Without `keyfile`, the key is read from `certfile` (Python's `load_cert_chain`).

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use pgherd_config::VerifyClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
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
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Setting(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read("certificate file", path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no certificate (BEGIN CERTIFICATE) found"));
    }
    Ok(certs)
}

/// The private key in a PEM file, decrypted with `password` when it is encrypted.
pub fn load_private_key(
    path: &Path,
    password: Option<&str>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("private key file", path)?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(invalid(
            path,
            "legacy OpenSSL-encrypted keys are not supported; convert it with \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW`",
        ));
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password else {
            return Err(invalid(path, "the key is encrypted: set keyfile_password"));
        };
        let (_, doc) = pkcs8::SecretDocument::from_pem(&text)
            .map_err(|e| invalid(path, format!("not a PEM encrypted key: {e}")))?;
        let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| invalid(path, format!("not a PKCS#8 encrypted key: {e}")))?;
        let plain = encrypted
            .decrypt(password)
            .map_err(|_| invalid(path, "cannot decrypt the key: wrong keyfile_password?"))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| invalid(path, format!("no usable private key found: {e}")))
}

/// The private key as unencrypted PKCS#8 PEM (what reqwest's `Identity::from_pem` reads).
fn private_key_pem(path: &Path, password: Option<&str>) -> Result<String, TlsError> {
    let key = load_private_key(path, password)?;
    let (label, der): (&str, &[u8]) = match &key {
        PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
        _ => return Err(invalid(path, "unsupported private key type")),
    };
    Ok(pem_encode(label, der))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
            let mut roots = RootCertStore::empty();
            for cert in load_certs(cafile)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(cafile, format!("unusable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if mode == VerifyClient::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Setting(format!("client certificate verifier: {e}")))?;
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

    /// A reqwest client with these settings, `authorization` (a full `Basic ...` header
    /// value) sent on every request, and a per-request `timeout`.
    pub fn http_client(
        &self,
        authorization: Option<&str>,
        timeout: Duration,
    ) -> Result<reqwest::Client, TlsError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("pgherd/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(self.insecure);
        if let Some(cacert) = &self.cacert {
            for cert in load_certs(cacert)? {
                let cert = reqwest::Certificate::from_der(cert.as_ref())
                    .map_err(|e| invalid(cacert, format!("unusable CA certificate: {e}")))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(certfile) = &self.certfile {
            // Only the certificates: the key (possibly encrypted) is added decrypted.
            let certs_only: String = load_certs(certfile)?
                .iter()
                .map(|c| pem_encode("CERTIFICATE", c.as_ref()))
                .collect();
            let key = private_key_pem(
                self.keyfile.as_deref().unwrap_or(certfile),
                self.keyfile_password.as_deref(),
            )?;
            let identity = reqwest::Identity::from_pem(format!("{certs_only}{key}").as_bytes())
                .map_err(|e| invalid(certfile, format!("unusable client certificate: {e}")))?;
            builder = builder.identity(identity);
        }
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

/// A TLS listener for `axum::serve`. Handshakes run in their own tasks, so a slow or silent
/// client never delays the others; failed handshakes are logged at debug level and dropped.
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
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "REST API: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "REST API: TLS handshake timed out"),
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
