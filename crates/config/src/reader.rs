//! Typed reading of the untyped tree: key paths in messages, scalar coercions, and warnings
//! for keys nobody read.

use crate::address::{HostPort, ListenAddress};
use crate::tree::{describe, join_path, Origins};
use crate::units::{duration_from_value, size_from_value};
use crate::ConfigError;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const BOOL_EXPECTED: &str = "a boolean (true/false, on/off, yes/no)";

/// Where messages come from and where warnings go.
pub(crate) struct Ctx<'o> {
    origins: &'o Origins,
    pub(crate) warnings: Vec<String>,
}

impl<'o> Ctx<'o> {
    pub(crate) fn new(origins: &'o Origins) -> Self {
        Ctx {
            origins,
            warnings: Vec::new(),
        }
    }

    /// The file (or variable) that supplied `path`.
    pub(crate) fn label(&self, path: &str) -> &str {
        self.origins.label_for(path)
    }

    pub(crate) fn invalid(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.label(path).to_string(),
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn expected(&self, path: &str, expected: &str, found: &Value) -> ConfigError {
        self.invalid(
            path,
            format!("expected {expected}, found {}", describe(found)),
        )
    }

    pub(crate) fn warn(&mut self, path: &str, message: &str) {
        let line = [self.label(path), path, message]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(": ");
        self.warnings.push(line);
    }
}

/// One map of the tree being read. Keys that are read are remembered so that
/// [`Section::finish`] can warn about the rest.
pub(crate) struct Section<'v> {
    path: String,
    map: Option<&'v Map<String, Value>>,
    used: BTreeSet<String>,
}

impl<'v> Section<'v> {
    /// A section over `value`; an absent or null value reads as an empty section.
    pub(crate) fn new(
        ctx: &Ctx,
        path: &str,
        value: Option<&'v Value>,
    ) -> Result<Self, ConfigError> {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => return Err(ctx.expected(path, "a map of settings", other)),
        };
        Ok(Section {
            path: path.to_string(),
            map,
            used: BTreeSet::new(),
        })
    }

    pub(crate) fn path(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// `true` when the section was present in the tree (even if empty).
    pub(crate) fn is_present(&self) -> bool {
        self.map.is_some()
    }

    /// The raw value of `key` (a null reads as absent), marking it read.
    pub(crate) fn raw(&mut self, key: &str) -> Option<&'v Value> {
        self.used.insert(key.to_string());
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// Reads `key` with `convert`, whose `Err` is the expectation ("a boolean ...").
    pub(crate) fn get<T>(
        &mut self,
        ctx: &Ctx,
        key: &str,
        convert: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(value) => convert(value)
                .map(Some)
                .map_err(|expected| ctx.expected(&self.path(key), &expected, value)),
        }
    }

    pub(crate) fn string(&mut self, ctx: &Ctx, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(ctx, key, to_string)
    }

    pub(crate) fn path_buf(
        &mut self,
        ctx: &Ctx,
        key: &str,
    ) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(ctx, key)?.map(PathBuf::from))
    }

    pub(crate) fn bool(&mut self, ctx: &Ctx, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(ctx, key, to_bool)
    }

    pub(crate) fn i64(&mut self, ctx: &Ctx, key: &str) -> Result<Option<i64>, ConfigError> {
        self.get(ctx, key, to_i64)
    }

    pub(crate) fn u32(&mut self, ctx: &Ctx, key: &str) -> Result<Option<u32>, ConfigError> {
        self.get(ctx, key, to_u32)
    }

    pub(crate) fn duration(
        &mut self,
        ctx: &Ctx,
        key: &str,
    ) -> Result<Option<Duration>, ConfigError> {
        self.get(ctx, key, duration_from_value)
    }

    pub(crate) fn size(&mut self, ctx: &Ctx, key: &str) -> Result<Option<u64>, ConfigError> {
        self.get(ctx, key, size_from_value)
    }

    pub(crate) fn strings(
        &mut self,
        ctx: &Ctx,
        key: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        self.get(ctx, key, to_string_list)
    }

    /// A map of scalar values kept as text (see [`scalar_text`]); errors name the entry.
    pub(crate) fn string_map(
        &mut self,
        ctx: &Ctx,
        key: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        let path = self.path(key);
        let map = match self.raw(key) {
            None => return Ok(None),
            Some(Value::Object(map)) => map,
            Some(other) => return Err(ctx.expected(&path, "a map of name: value", other)),
        };
        let mut out = BTreeMap::new();
        for (name, value) in map {
            match scalar_text(value) {
                Ok(Some(text)) => {
                    out.insert(name.clone(), text);
                }
                Ok(None) => {}
                Err(expected) => {
                    return Err(ctx.expected(&join_path(&path, name), &expected, value))
                }
            }
        }
        Ok(Some(out))
    }

    pub(crate) fn host_port(
        &mut self,
        ctx: &Ctx,
        key: &str,
    ) -> Result<Option<HostPort>, ConfigError> {
        self.get(ctx, key, |v| to_string(v).and_then(|s| HostPort::parse(&s)))
    }

    pub(crate) fn listen(
        &mut self,
        ctx: &Ctx,
        key: &str,
    ) -> Result<Option<ListenAddress>, ConfigError> {
        self.get(ctx, key, |v| {
            to_string(v).and_then(|s| ListenAddress::parse(&s))
        })
    }

    /// A nested section (absent reads as empty).
    pub(crate) fn section(&mut self, ctx: &Ctx, key: &str) -> Result<Section<'v>, ConfigError> {
        let value = self.raw(key);
        Section::new(ctx, &self.path(key), value)
    }

    /// Keys nobody has read yet (for sections that allow free-form keys), marking them read.
    pub(crate) fn take_rest(&mut self) -> Vec<(&'v String, &'v Value)> {
        let Some(map) = self.map else {
            return Vec::new();
        };
        let rest: Vec<_> = map
            .iter()
            .filter(|(k, _)| !self.used.contains(*k))
            .collect();
        self.used.extend(rest.iter().map(|(k, _)| (*k).clone()));
        rest
    }

    /// Warns about every key that was never read.
    pub(crate) fn finish(mut self, ctx: &mut Ctx) {
        for (key, _) in self.take_rest() {
            ctx.warn(&join_path(&self.path, key), "unknown key (ignored)");
        }
    }
}

/// Strings, and numbers written without quotes (`password: 1234`).
pub(crate) fn to_string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err("a string".to_string()),
    }
}

/// YAML booleans, Patroni's truthy strings (`on`/`off`, `yes`/`no`, `true`/`false`, `1`/`0`)
/// and the numbers 1/0.
pub(crate) fn to_bool(value: &Value) -> Result<bool, String> {
    let fail = || BOOL_EXPECTED.to_string();
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_bool(s).ok_or_else(fail),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(fail()),
        },
        _ => Err(fail()),
    }
}

/// Patroni's `parse_bool`.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Integers, also as strings; a whole float (Patroni's `int()` would truncate any float,
/// but a fraction here is a mistake worth reporting).
pub(crate) fn to_i64(value: &Value) -> Result<i64, String> {
    let parsed = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| "an integer".to_string())
}

pub(crate) fn to_u32(value: &Value) -> Result<u32, String> {
    to_i64(value)
        .ok()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| "a non-negative integer".to_string())
}

/// A YAML list of scalars, or one comma-separated string (`h1:2379,h2:2379`).
pub(crate) fn to_string_list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(to_string)
            .collect::<Result<_, _>>()
            .map_err(|_| "a list of strings".to_string()),
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()),
        _ => Err("a list of strings".to_string()),
    }
}

/// A scalar as text, the way PostgreSQL settings are written: booleans become `on`/`off`;
/// null reads as absent.
pub(crate) fn scalar_text(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(true) => Ok(Some("on".to_string())),
        Value::Bool(false) => Ok(Some("off".to_string())),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err("a single value".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coercions() {
        assert_eq!(to_bool(&json!("on")), Ok(true));
        assert_eq!(to_bool(&json!("No")), Ok(false));
        assert_eq!(to_bool(&json!(1)), Ok(true));
        assert!(to_bool(&json!("maybe")).is_err());
        assert_eq!(to_i64(&json!("42")), Ok(42));
        assert_eq!(to_i64(&json!(-1)), Ok(-1));
        assert_eq!(to_i64(&json!(3.0)), Ok(3));
        assert!(to_i64(&json!(3.5)).is_err());
        assert!(to_u32(&json!(-1)).is_err());
        assert_eq!(to_string(&json!(1234)), Ok("1234".to_string()));
        assert!(to_string(&json!(true)).is_err());
        assert_eq!(
            to_string_list(&json!("a, b,")),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(scalar_text(&json!(true)), Ok(Some("on".to_string())));
        assert_eq!(scalar_text(&json!(2.5)), Ok(Some("2.5".to_string())));
        assert_eq!(scalar_text(&json!(null)), Ok(None));
        assert!(scalar_text(&json!([1])).is_err());
    }

    #[test]
    fn sections_warn_about_unread_keys() {
        let origins = Origins::new("node1.yml");
        let mut ctx = Ctx::new(&origins);
        let tree = json!({"postgresql": {"listen": "x:1", "paramters": {}}});
        let mut root = Section::new(&ctx, "", Some(&tree)).unwrap();
        let mut pg = root.section(&ctx, "postgresql").unwrap();
        assert!(pg.raw("listen").is_some());
        pg.finish(&mut ctx);
        root.finish(&mut ctx);
        assert_eq!(
            ctx.warnings,
            ["node1.yml: postgresql.paramters: unknown key (ignored)"]
        );
    }
}
