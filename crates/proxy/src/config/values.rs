//! The proxy's own value rules on top of the shared reader: addresses to bind, switches,
//! counts of a given integer type.

use pgherd_config::reader::{Ctx, Section};
use pgherd_config::ConfigError;
use serde_json::Value;
use std::net::SocketAddr;

/// A required `ip:port` to bind; `*:port` means every IPv4 address.
pub(super) fn socket_addr(
    section: &mut Section,
    ctx: &Ctx,
    key: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = section.required_string(ctx, key, "host:port, e.g. 127.0.0.1:5000")?;
    let normalized = match text.strip_prefix('*') {
        Some(rest) => format!("0.0.0.0{rest}"),
        None => text.clone(),
    };
    normalized.parse().map_err(|_| {
        section.invalid(
            ctx,
            key,
            format!("expected an IP address and port such as 127.0.0.1:5000, found {text:?}"),
        )
    })
}

/// The proxy's switches: YAML booleans and the words true/false, on/off, yes/no (any case).
/// Stricter than Patroni's booleans, which also take `1`/`0`.
pub(super) fn true_or_false(value: &Value) -> Result<bool, String> {
    let word = match value {
        Value::Bool(b) => return Ok(*b),
        Value::String(s) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    match word.as_str() {
        "true" | "on" | "yes" => Ok(true),
        "false" | "off" | "no" => Ok(false),
        _ => Err("true or false".to_string()),
    }
}

/// A count of at least `min` that fits the setting's type `T`.
pub(super) fn count<T: TryFrom<u64>>(
    section: &mut Section,
    ctx: &Ctx,
    key: &str,
    min: u64,
) -> Result<Option<T>, ConfigError> {
    match section.count(ctx, key, min)? {
        None => Ok(None),
        Some(n) => T::try_from(n).map(Some).map_err(|_| {
            section.invalid(
                ctx,
                key,
                format!("expected an integer >= {min}, found {n}, which is too large"),
            )
        }),
    }
}
