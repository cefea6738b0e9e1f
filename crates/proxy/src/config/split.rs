//! An auto listener's routing keys (`role: auto`, crates/proxy/src/split):
//! `read_only_functions` and `read_your_writes`. Other roles refuse them.

use super::defaults::{DEFAULT_READ_YOUR_WRITES, DEFAULT_READ_YOUR_WRITES_MAX_WAIT};
use super::listeners::ListenerRole;
use crate::split::router::{ReadYourWrites, RouterConfig};
use pgherd_config::reader::{Ctx, Section};
use pgherd_config::ConfigError;
use serde_json::Value;

/// How an auto listener classifies and routes statements.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitConfig {
    /// Functions (besides PostgreSQL's built-in read-only ones) whose calls may run on a
    /// replica: `name` (any schema) or `schema.name`.
    pub read_only_functions: Vec<String>,
    pub router: RouterConfig,
}

const MODE_EXPECTED: &str = "replayed, session or off";
const FUNCTIONS_EXPECTED: &str =
    "a list of function names, each `name` or `schema.name` (as PostgreSQL stores them)";

/// Reads listener section `l`'s routing keys: `Some` for `role: auto`, `None` otherwise.
pub(super) fn split(
    l: &mut Section,
    ctx: &Ctx,
    role: ListenerRole,
) -> Result<Option<SplitConfig>, ConfigError> {
    let read_only_functions = l.get(ctx, "read_only_functions", function_names)?;
    let read_your_writes = read_your_writes(l, ctx)?;
    if role != ListenerRole::Auto {
        for (key, present) in [
            ("read_only_functions", read_only_functions.is_some()),
            ("read_your_writes", read_your_writes.is_some()),
        ] {
            if present {
                return Err(l.invalid(ctx, key, "only applies to role: auto listeners"));
            }
        }
        return Ok(None);
    }
    Ok(Some(SplitConfig {
        read_only_functions: read_only_functions.unwrap_or_default(),
        router: read_your_writes.unwrap_or(RouterConfig {
            read_your_writes: DEFAULT_READ_YOUR_WRITES,
            max_wait: DEFAULT_READ_YOUR_WRITES_MAX_WAIT,
        }),
    }))
}

/// `read_your_writes: <mode>` or `read_your_writes: {mode: <mode>, max_wait: <duration>}`.
fn read_your_writes(l: &mut Section, ctx: &Ctx) -> Result<Option<RouterConfig>, ConfigError> {
    let mode_of = |text: &str| match text {
        "replayed" => Some(ReadYourWrites::Replayed),
        "session" => Some(ReadYourWrites::Session),
        "off" => Some(ReadYourWrites::Off),
        _ => None,
    };
    match l.raw("read_your_writes") {
        None => Ok(None),
        Some(Value::String(text)) => match mode_of(text) {
            Some(mode) => Ok(Some(RouterConfig {
                read_your_writes: mode,
                max_wait: DEFAULT_READ_YOUR_WRITES_MAX_WAIT,
            })),
            None => Err(l.invalid(
                ctx,
                "read_your_writes",
                format!("expected {MODE_EXPECTED} (or a mapping with mode and max_wait), found {text:?}"),
            )),
        },
        Some(_) => {
            let mut s = l.section(ctx, "read_your_writes")?;
            let mode = match s.string(ctx, "mode")? {
                None => DEFAULT_READ_YOUR_WRITES,
                Some(text) => mode_of(&text).ok_or_else(|| {
                    s.invalid(ctx, "mode", format!("expected {MODE_EXPECTED}, found {text:?}"))
                })?,
            };
            let max_wait = s
                .duration(ctx, "max_wait")?
                .unwrap_or(DEFAULT_READ_YOUR_WRITES_MAX_WAIT);
            s.finish_strict(ctx)?;
            Ok(Some(RouterConfig {
                read_your_writes: mode,
                max_wait,
            }))
        }
    }
}

fn function_names(value: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(FUNCTIONS_EXPECTED.to_string());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(name) if is_function_name(name) => Ok(name.clone()),
            _ => Err(FUNCTIONS_EXPECTED.to_string()),
        })
        .collect()
}

/// One or two non-empty dot-separated parts without spaces or quotes.
fn is_function_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty() && !p.contains(|c: char| c.is_whitespace() || c == '"' || c == '(')
        })
}
