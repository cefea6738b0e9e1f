//! `restapi:` and `ctl:` sections.

use crate::address::HostPort;
use crate::reader::{Ctx, Section};
use crate::ConfigError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `username`/`password` for HTTP basic authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BasicAuth {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl BasicAuth {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Option<Self>, ConfigError> {
        let present = s.is_present();
        let auth = BasicAuth {
            username: s.string(ctx, "username")?,
            password: s.string(ctx, "password")?,
        };
        s.finish(ctx);
        Ok(present.then_some(auth))
    }
}

/// `restapi.verify_client`: when the REST API asks for client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyClient {
    /// Never (the default).
    #[default]
    None,
    /// For unsafe requests (PUT, POST, PATCH, DELETE) only.
    Optional,
    /// For every request.
    Required,
}

/// `restapi:` — the agent's HTTP API (health checks and management).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestApi {
    /// Where the API listens (required for the agent).
    pub listen: Option<HostPort>,
    /// The address other members and clients use; defaults to `listen`.
    pub connect_address: Option<HostPort>,
    /// Basic authentication required for unsafe requests.
    pub authentication: Option<BasicAuth>,
    /// TLS certificate; setting it switches the API to HTTPS.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub keyfile_password: Option<String>,
    /// CA bundle for verifying client certificates.
    pub cafile: Option<PathBuf>,
    pub ciphers: Option<String>,
    pub verify_client: VerifyClient,
    /// Hosts/networks allowed to call unsafe endpoints (empty: everyone).
    pub allowlist: Vec<String>,
    /// Also allow the cluster members registered in the DCS.
    pub allowlist_include_members: bool,
    pub http_extra_headers: BTreeMap<String, String>,
    /// Sent (in addition to `http_extra_headers`) when TLS is on.
    pub https_extra_headers: BTreeMap<String, String>,
}

impl RestApi {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let auth = s.section(ctx, "authentication")?;
        let verify_path = s.path("verify_client");
        let api = RestApi {
            listen: s.host_port(ctx, "listen")?,
            connect_address: s.host_port(ctx, "connect_address")?,
            authentication: BasicAuth::parse(auth, ctx)?,
            certfile: s.path_buf(ctx, "certfile")?,
            keyfile: s.path_buf(ctx, "keyfile")?,
            keyfile_password: s.string(ctx, "keyfile_password")?,
            cafile: s.path_buf(ctx, "cafile")?,
            ciphers: s.string(ctx, "ciphers")?,
            verify_client: match s.string(ctx, "verify_client")? {
                None => VerifyClient::None,
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "none" => VerifyClient::None,
                    "optional" => VerifyClient::Optional,
                    "required" => VerifyClient::Required,
                    _ => {
                        return Err(ctx.expected(
                            &verify_path,
                            "one of none, optional, required",
                            &v.into(),
                        ))
                    }
                },
            },
            allowlist: s.strings(ctx, "allowlist")?.unwrap_or_default(),
            allowlist_include_members: s.bool(ctx, "allowlist_include_members")?.unwrap_or(false),
            http_extra_headers: s.string_map(ctx, "http_extra_headers")?.unwrap_or_default(),
            https_extra_headers: s
                .string_map(ctx, "https_extra_headers")?
                .unwrap_or_default(),
        };
        if let Some(addr) = api.connect_address.as_ref().filter(|a| a.is_wildcard()) {
            ctx.warn(
                &s.path("connect_address"),
                &format!("{addr} is not an address other members can connect to"),
            );
        }
        s.finish(ctx);
        Ok(api)
    }
}

/// `ctl:` — TLS and credentials the CLI (and members calling each other) use as REST clients.
/// Unset files fall back to the `restapi` ones, as in Patroni.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ctl {
    /// Do not verify the server certificate.
    pub insecure: bool,
    pub cacert: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub keyfile_password: Option<String>,
    pub authentication: Option<BasicAuth>,
}

impl Ctl {
    pub(crate) fn parse(mut s: Section, ctx: &mut Ctx) -> Result<Self, ConfigError> {
        let auth = s.section(ctx, "authentication")?;
        let ctl = Ctl {
            insecure: s.bool(ctx, "insecure")?.unwrap_or(false),
            cacert: s.path_buf(ctx, "cacert")?,
            certfile: s.path_buf(ctx, "certfile")?,
            keyfile: s.path_buf(ctx, "keyfile")?,
            keyfile_password: s.string(ctx, "keyfile_password")?,
            authentication: BasicAuth::parse(auth, ctx)?,
        };
        s.finish(ctx);
        Ok(ctl)
    }
}
