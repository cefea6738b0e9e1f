//! Access control for unsafe requests (every PATCH/PUT/POST/DELETE handler), in Patroni's
//! order (docs/compat.md#access-control): allowlist -> client certificate -> basic authentication.
//! GET/HEAD/OPTIONS never come here.

use crate::json::text_response;
use crate::server::ApiContext;
use crate::tls::ConnInfo;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// `WWW-Authenticate` as Patroni sends it (the realm is its class name).
const REALM: &str = r#"Basic realm="Patroni""#;

/// `None`: the request may proceed; otherwise the refusal to send.
pub(crate) async fn check(
    ctx: &ApiContext,
    conn: Option<&ConnInfo>,
    headers: &HeaderMap,
) -> Option<Response> {
    let settings = ctx.settings();
    if !settings.allowlist.is_empty() || settings.allowlist_include_members {
        let ip = conn.map(|c| canonical(c.peer.ip()));
        let allowed = match ip {
            Some(ip) => {
                settings.allowlist.iter().any(|net| net.contains(&ip))
                    || (settings.allowlist_include_members && member_ips(ctx).await.contains(&ip))
            }
            None => false,
        };
        if !allowed {
            tracing::warn!(client = ?ip, "REST API: unsafe request refused by the allowlist");
            return Some(text_response(StatusCode::FORBIDDEN, "Access is denied"));
        }
    }
    if settings.client_cert_required && !conn.is_some_and(|c| c.client_cert) {
        return Some(text_response(
            StatusCode::FORBIDDEN,
            "client certificate required",
        ));
    }
    if let Some(key) = &settings.auth_key {
        let reason = match headers.get(header::AUTHORIZATION) {
            None => Some("no auth header received"),
            Some(value) => {
                let ok = value
                    .as_bytes()
                    .strip_prefix(b"Basic ")
                    .is_some_and(|given| bool::from(given.ct_eq(key.as_bytes())));
                (!ok).then_some("not authenticated")
            }
        };
        if let Some(reason) = reason {
            let mut response = text_response(StatusCode::UNAUTHORIZED, reason);
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
            return Some(response);
        }
    }
    None
}

/// IPv4 clients of a dual-stack listener show up as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses of every member's `api_url` host in the last cluster view (Patroni's
/// `__members_ips`). Names are resolved on each call, literal addresses are not.
async fn member_ips(ctx: &ApiContext) -> Vec<IpAddr> {
    let cluster = ctx
        .snapshot
        .borrow()
        .cluster
        .as_ref()
        .map(|view| std::sync::Arc::clone(&view.cluster));
    let Some(cluster) = cluster else {
        return Vec::new();
    };
    let mut ips = Vec::new();
    for member in cluster.members.values() {
        let Some((host, port)) = member.data.api_host_port() else {
            continue;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if let Ok(ip) = host.parse::<IpAddr>() {
            ips.push(ip);
            continue;
        }
        let resolved = tokio::net::lookup_host(format!("{host}:{port}")).await;
        match resolved {
            Ok(addrs) => ips.extend(addrs.map(|a| canonical(a.ip()))),
            Err(e) => tracing::debug!("allowlist_include_members: cannot resolve {host}: {e}"),
        }
    }
    ips
}
