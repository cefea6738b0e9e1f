//! `PATCH /config` and `PUT /config`: the DCS `config` key (dynamic configuration, `pause`).

use super::{error_page, text, wake};
use crate::json::json_response;
use crate::server::ApiContext;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

/// Deep-merges the body into the stored configuration and writes it back with
/// compare-and-swap on the index it was read at (409 if someone wrote in between).
pub(super) async fn patch(ctx: &ApiContext, body: Map<String, Value>) -> Response {
    let cluster = match ctx.dcs.get_cluster().await {
        Ok(c) => c,
        Err(e) => return text(503, &format!("cannot read the DCS: {e}")),
    };
    let Some(config) = cluster.config.as_ref().filter(|c| c.index != 0) else {
        return error_page(503, "the DCS has no config key to patch");
    };
    let mut data = match &config.value {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    if patch_config(&mut data, &body) {
        let value = Value::Object(data.clone()).to_string();
        match ctx.dcs.set_config_value(&value, Some(config.index)).await {
            Ok(true) => {
                let patch = Value::Object(body);
                tracing::info!("REST API: configuration patched with {patch}");
            }
            Ok(false) => {
                return error_page(409, "Config modification aborted due to concurrent changes")
            }
            Err(e) => return text(503, &format!("cannot write the config key: {e}")),
        }
    }
    wake(ctx);
    json_response(StatusCode::OK, &Value::Object(data))
}

/// Replaces the configuration when it differs (no compare-and-swap, as Patroni).
pub(super) async fn put(ctx: &ApiContext, body: Map<String, Value>) -> Response {
    let current = match ctx.dcs.get_cluster().await {
        Ok(c) => c.config.map(|c| c.value),
        Err(e) => return text(503, &format!("cannot read the DCS: {e}")),
    };
    let body = Value::Object(body);
    if current.as_ref() != Some(&body) {
        match ctx.dcs.set_config_value(&body.to_string(), None).await {
            Ok(true) => tracing::info!("REST API: configuration replaced"),
            Ok(false) | Err(_) => return error_page(502, "cannot write the config key"),
        }
        wake(ctx);
    }
    json_response(StatusCode::OK, &body)
}

/// Patroni's `patch_config`: `null` deletes a key, objects merge recursively, other values
/// replace when their Python `str()` differs. Returns whether anything changed.
pub(crate) fn patch_config(config: &mut Map<String, Value>, patch: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (name, value) in patch {
        if value.is_null() {
            changed |= config.remove(name).is_some_and(|old| !old.is_null());
            continue;
        }
        match config.get_mut(name) {
            Some(existing) => match (existing, value) {
                (Value::Object(existing), Value::Object(value)) => {
                    changed |= patch_config(existing, value);
                }
                (existing, value) if value.is_object() || py_str(existing) != py_str(value) => {
                    *existing = value.clone();
                    changed = true;
                }
                _ => {}
            },
            None => {
                config.insert(name.clone(), value.clone());
                changed = true;
            }
        }
    }
    changed
}

/// Python's `str()` of a JSON value, for the comparisons `patch_config` makes.
fn py_str(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merges_like_patroni() {
        let mut c = obj(json!({"ttl": 30, "postgresql": {"parameters": {"a": 1, "b": "x"}}}));
        assert!(!patch_config(&mut c, &obj(json!({"ttl": "30"}))));
        assert!(patch_config(
            &mut c,
            &obj(json!({"pause": true, "postgresql": {"parameters": {"a": null, "c": 2}}}))
        ));
        assert_eq!(
            Value::Object(c.clone()),
            json!({"ttl": 30, "pause": true, "postgresql": {"parameters": {"b": "x", "c": 2}}})
        );
        assert!(patch_config(&mut c, &obj(json!({"pause": null}))));
        assert!(!patch_config(&mut c, &obj(json!({"pause": null}))));
        assert!(c.get("pause").is_none());
    }
}
