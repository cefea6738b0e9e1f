//! The untyped configuration tree: YAML text to JSON values, Patroni's deep merge, and a
//! record of which file or variable supplied each key (for messages).

use crate::ConfigError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Parses one YAML document into a JSON object (`{}` for an empty document).
pub(crate) fn parse_yaml(text: &str, label: &str) -> Result<Map<String, Value>, ConfigError> {
    let yaml_error = |e: serde_yaml::Error| ConfigError::Yaml {
        file: label.to_string(),
        message: e.to_string(),
    };
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(yaml_error)?;
    // Patroni's loader (PyYAML) resolves `<<: *anchor` merge keys; serde_yaml needs asking.
    yaml.apply_merge().map_err(yaml_error)?;
    match yaml_to_json(yaml) {
        Value::Null => Ok(Map::new()),
        Value::Object(map) => Ok(map),
        other => Err(ConfigError::Source {
            file: label.to_string(),
            message: format!(
                "expected a map of sections at the top level, found {}",
                describe(&other)
            ),
        }),
    }
}

pub(crate) fn yaml_to_json(yaml: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                // NaN and infinities have no JSON form; keep their text.
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| Value::String(n.to_string()), Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (yaml_key(k), yaml_to_json(v)))
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// Mapping keys become strings, as Python's `str()` would show scalars.
fn yaml_key(key: serde_yaml::Value) -> String {
    match yaml_to_json(key) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// How a value is shown after "found" in error messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
        Value::Null => "nothing".to_string(),
        scalar => scalar.to_string(),
    }
}

/// Which file or environment variable supplied each key path, so that messages name it.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// Label for keys nobody supplied (e.g. a missing required key).
    default: String,
    by_path: BTreeMap<String, String>,
}

impl Origins {
    /// Origins where every key comes from `default` (one file, or a label such as
    /// `environment`) until merging files records others.
    pub fn new(default: impl Into<String>) -> Self {
        Origins {
            default: default.into(),
            by_path: BTreeMap::new(),
        }
    }

    /// The label of the nearest recorded ancestor of `path` (or the default).
    pub fn label_for(&self, path: &str) -> &str {
        let mut path = path;
        loop {
            if let Some(label) = self.by_path.get(path) {
                return label;
            }
            match path.rfind('.') {
                Some(dot) => path = &path[..dot],
                None => return &self.default,
            }
        }
    }
}

pub(crate) fn join_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Deep-merges `overlay` into `base` like Patroni's `patch_config`: maps merge recursively,
/// anything else replaces, and a null removes the key. Records `label` as the origin of every
/// key it sets.
pub(crate) fn merge(
    base: &mut Map<String, Value>,
    overlay: Map<String, Value>,
    prefix: &str,
    label: &str,
    origins: &mut Origins,
) {
    for (key, value) in overlay {
        let path = join_path(prefix, &key);
        match (base.get_mut(&key), value) {
            (_, Value::Null) => {
                base.remove(&key);
            }
            (Some(Value::Object(existing)), Value::Object(inner)) => {
                merge(existing, inner, &path, label, origins);
            }
            (_, value) => {
                origins.by_path.insert(path, label.to_string());
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_is_patronis_patch_config() {
        let mut origins = Origins::new("dir");
        let mut base = Map::new();
        merge(
            &mut base,
            obj(json!({"a": {"b": 1, "c": 2}, "d": [1], "e": "x"})),
            "",
            "1.yml",
            &mut origins,
        );
        merge(
            &mut base,
            obj(json!({"a": {"c": 3}, "d": {"z": 1}, "e": null})),
            "",
            "2.yml",
            &mut origins,
        );
        assert_eq!(
            Value::Object(base),
            json!({"a": {"b": 1, "c": 3}, "d": {"z": 1}})
        );
        assert_eq!(origins.label_for("a.b"), "1.yml");
        assert_eq!(origins.label_for("a.c"), "2.yml");
        assert_eq!(origins.label_for("d.z.q"), "2.yml");
        assert_eq!(origins.label_for("a"), "1.yml");
        assert_eq!(origins.label_for("missing"), "dir");
    }

    #[test]
    fn yaml_conversion() {
        let map = parse_yaml(
            "base: &b {x: 1}\nm:\n  <<: *b\n  y: 2.5\n1: one\nt: !tag z\n",
            "f.yml",
        )
        .unwrap();
        assert_eq!(
            Value::Object(map),
            json!({"base": {"x": 1}, "m": {"x": 1, "y": 2.5}, "1": "one", "t": "z"})
        );
        assert!(parse_yaml("", "f.yml").unwrap().is_empty());
        let err = parse_yaml("- a\n- b\n", "f.yml").unwrap_err().to_string();
        assert_eq!(
            err,
            "f.yml: expected a map of sections at the top level, found a list"
        );
        let err = parse_yaml("a: b\n  c: d\n", "f.yml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.yml: invalid YAML: "), "{err}");
        assert!(err.contains("line 2 column"), "{err}");
    }
}
