//! What the REST API takes from the `restapi:` (and `ctl:`) configuration: access control,
//! TLS, extra headers, and the HTTP client used to probe peers.

use crate::tls::{self, ClientTls, TlsError};
use axum::http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Patroni probes candidates with a 2 s timeout and no retry.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The REST API's settings. [`ApiSettings::default`] is an open API over plain HTTP.
#[derive(Clone)]
pub struct ApiSettings {
    /// `base64(username:password)`; unsafe requests must send `Authorization: Basic <this>`.
    pub(crate) auth_key: Option<String>,
    /// `restapi.allowlist`, resolved to networks.
    pub(crate) allowlist: Vec<IpNet>,
    pub(crate) allowlist_include_members: bool,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Client certificates required for unsafe requests (`verify_client` optional/required).
    pub(crate) client_cert_required: bool,
    pub(crate) extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// For `GET <api_url>` probes of switchover candidates.
    pub(crate) peer_client: reqwest::Client,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            auth_key: None,
            allowlist: Vec::new(),
            allowlist_include_members: false,
            tls: None,
            client_cert_required: false,
            extra_headers: Vec::new(),
            peer_client: reqwest::Client::builder()
                .timeout(PEER_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field(
                "authentication",
                &self.auth_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allowlist", &self.allowlist)
            .field("allowlist_include_members", &self.allowlist_include_members)
            .field("tls", &self.tls.is_some())
            .field("client_cert_required", &self.client_cert_required)
            .finish()
    }
}

impl ApiSettings {
    /// Reads the TLS files and resolves allowlist host names (blocking DNS, at startup).
    pub fn from_config(
        restapi: &pgherd_config::RestApi,
        ctl: &pgherd_config::Ctl,
    ) -> Result<ApiSettings, TlsError> {
        let auth_key = restapi
            .authentication
            .as_ref()
            .and_then(tls::basic_authorization)
            .map(|header| header.trim_start_matches("Basic ").to_string());
        let allowlist = build_allowlist(&restapi.allowlist);
        let tls = match &restapi.certfile {
            Some(certfile) => Some(tls::server_config(
                certfile,
                restapi.keyfile.as_deref(),
                restapi.keyfile_password.as_deref(),
                restapi.cafile.as_deref(),
                restapi.verify_client,
            )?),
            None => None,
        };
        let mut extra_headers = Vec::new();
        let https = restapi.https_extra_headers.iter().filter(|_| tls.is_some());
        for (name, value) in restapi.http_extra_headers.iter().chain(https) {
            match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(n), Ok(v)) => extra_headers.push((n, v)),
                _ => {
                    return Err(TlsError::Setting(format!(
                        "restapi.http_extra_headers: {name:?} is not a valid HTTP header"
                    )))
                }
            }
        }
        // Peers are probed like patronictl talks to them: `ctl` TLS, `restapi` credentials.
        let peer_auth = ctl
            .authentication
            .as_ref()
            .or(restapi.authentication.as_ref())
            .and_then(tls::basic_authorization);
        let peer_client =
            ClientTls::from_config(ctl, restapi).http_client(peer_auth.as_deref(), PEER_TIMEOUT)?;
        Ok(ApiSettings {
            auth_key,
            allowlist,
            allowlist_include_members: restapi.allowlist_include_members,
            client_cert_required: tls.is_some()
                && restapi.verify_client != pgherd_config::VerifyClient::None,
            tls,
            extra_headers,
            peer_client,
        })
    }

    /// Serves HTTPS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }
}

/// Patroni's `_build_allowlist`: CIDRs as networks, IPs and host names resolved to
/// single-address networks. Unresolvable names are logged and skipped.
fn build_allowlist(entries: &[String]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.trim();
        if entry.contains('/') {
            match entry.parse::<IpNet>() {
                // Python's ip_network(v, strict=False): host bits are masked off.
                Ok(net) => out.push(net.trunc()),
                Err(e) => tracing::error!("invalid value {entry:?} in restapi.allowlist: {e}"),
            }
        } else if let Ok(ip) = entry.parse::<IpAddr>() {
            out.push(IpNet::from(ip));
        } else {
            match (entry, 8080).to_socket_addrs() {
                Ok(addrs) => out.extend(addrs.map(|a| IpNet::from(a.ip()))),
                Err(e) => tracing::error!("restapi.allowlist: cannot resolve {entry:?}: {e}"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_entries() {
        let nets = build_allowlist(&[
            "10.0.0.5/8".into(),
            "192.168.1.1".into(),
            "localhost".into(),
            "not a network/99".into(),
        ]);
        let contains = |ip: &str| {
            nets.iter()
                .any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()))
        };
        assert!(contains("10.200.0.1"));
        assert!(contains("192.168.1.1"));
        assert!(!contains("192.168.1.2"));
        assert!(contains("127.0.0.1"));
    }
}
