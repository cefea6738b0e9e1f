//! Management endpoints (docs/compat.md#management-endpoints): access control, Patroni's body
//! rules, then the handler.
//!
//! Successful calls answer with Patroni's plain-text messages (`Successfully switched over to
//! "node2"`), which patronictl prints verbatim; refusals are `{"error": "<Patroni's
//! message>"}` with Patroni's status code.

mod config;
mod failover;
pub(crate) mod failsafe;
mod local;

pub use failover::SwitchoverAction;
pub use failsafe::{FailsafeLeader, FailsafePings};

use crate::access;
use crate::server::ApiContext;
use crate::tls::ConnInfo;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

/// Largest request body we read.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ManageEndpoint {
    PatchConfig,
    PutConfig,
    Reload,
    Restart,
    DeleteRestart,
    Reinitialize,
    Failover,
    Switchover,
    DeleteSwitchover,
    Failsafe,
}

impl ManageEndpoint {
    pub(crate) fn from_route(method: &str, segment: &str) -> Option<ManageEndpoint> {
        Some(match (method, segment) {
            ("PATCH", "config") => ManageEndpoint::PatchConfig,
            ("PUT", "config") => ManageEndpoint::PutConfig,
            ("POST", "reload") => ManageEndpoint::Reload,
            ("POST", "restart") => ManageEndpoint::Restart,
            ("DELETE", "restart") => ManageEndpoint::DeleteRestart,
            ("POST", "reinitialize") => ManageEndpoint::Reinitialize,
            ("POST", "failover") => ManageEndpoint::Failover,
            ("POST", "switchover") => ManageEndpoint::Switchover,
            ("DELETE", "switchover") => ManageEndpoint::DeleteSwitchover,
            ("POST", "failsafe") => ManageEndpoint::Failsafe,
            _ => return None,
        })
    }
}

pub(crate) async fn handle(
    ctx: &ApiContext,
    endpoint: ManageEndpoint,
    request: Request,
) -> Response {
    let conn = request
        .extensions()
        .get::<axum::extract::ConnectInfo<ConnInfo>>()
        .map(|c| c.0);
    if let Some(refusal) = access::check(ctx, conn.as_ref(), request.headers()).await {
        return refusal;
    }
    use ManageEndpoint::*;
    // Patroni answers 502 before reading the body when failsafe mode is off.
    if endpoint == Failsafe && !failsafe::enabled(ctx) {
        return error_page(502, "failsafe mode is not enabled");
    }
    let body_rule = match endpoint {
        PatchConfig | PutConfig | Failover | Switchover | Failsafe => Some(true),
        Restart | Reinitialize => Some(false),
        Reload | DeleteRestart | DeleteSwitchover => None,
    };
    let body = match body_rule {
        Some(required) => match read_json(request, required).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        },
        None => Map::new(),
    };
    match endpoint {
        PatchConfig => config::patch(ctx, body).await,
        PutConfig => config::put(ctx, body).await,
        Failover => failover::post(ctx, SwitchoverAction::Failover, body).await,
        Switchover => failover::post(ctx, SwitchoverAction::Switchover, body).await,
        DeleteSwitchover => failover::delete(ctx).await,
        Restart => local::restart(ctx, body).await,
        DeleteRestart => local::delete_restart(ctx).await,
        Reload => local::reload(ctx).await,
        Reinitialize => local::reinitialize(ctx, body).await,
        Failsafe => failsafe::post(ctx, body).await,
    }
}

/// A message as Patroni writes it (`_write_response`: the text, `text/html`), for answers
/// and refusals alike.
pub(crate) fn text(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    crate::json::text_response(status, message)
}

/// Where Patroni calls `send_error(status)`: Python's HTML error page. Our reason goes to
/// the log (the page has no room for it).
pub(crate) fn error_page(status: u16, reason: &str) -> Response {
    tracing::info!("REST API: answering {status}: {reason}");
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    crate::json::error_page(status, None)
}

/// Media types we read as JSON: none at all (patronictl sends none), JSON, and the form and
/// text types that `curl -d` and friends send by default for a JSON body.
fn acceptable_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.is_empty()
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/x-www-form-urlencoded"
        || essence == "text/plain"
}

/// Patroni's `_read_json_content`: no length -> 411 (unless the body is optional), not a
/// JSON object (or `{}` when required) -> 400. Also 415 for a media type that is not JSON.
async fn read_json(request: Request, required: bool) -> Result<Map<String, Value>, Response> {
    let headers = request.headers();
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("?");
        if !acceptable_content_type(ct) {
            return Err(error_page(
                415,
                &format!("unsupported Content-Type {ct:?}: send a JSON object (application/json)"),
            ));
        }
    }
    let has_body = headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return if required {
            Err(error_page(
                411,
                "Content-Length required: send a JSON object",
            ))
        } else {
            Ok(Map::new())
        };
    }
    let bytes = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return Err(error_page(413, "request body too large or unreadable")),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) && !required {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) if !map.is_empty() || !required => Ok(map),
        Ok(Value::Object(_)) => Err(error_page(
            400,
            "request body must not be an empty JSON object",
        )),
        Ok(_) => Err(error_page(400, "request body must be a JSON object")),
        Err(e) => Err(error_page(
            400,
            &format!("request body is not valid JSON: {e}"),
        )),
    }
}

/// The answer to a node-local call when this API runs without a command channel.
pub(crate) fn no_agent() -> Response {
    text(503, "this node does not accept local management commands")
}

/// Tells the agent to run a cycle now (best effort: a full queue already means "soon").
pub(crate) fn wake(ctx: &ApiContext) {
    if let Some(tx) = &ctx.commands {
        let _ = tx.try_send(crate::ApiCommand::Wake);
    }
}
