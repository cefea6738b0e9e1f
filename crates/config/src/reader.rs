//! Typed reading of the untyped tree: key paths in messages, scalar coercions, and warnings
//! (or errors, see [`Section::finish_strict`]) for keys nobody read.
//!
//! Public so that other crates read their own sections (e.g. the proxy's `proxy:`) the same
//! way: a [`Ctx`] over the [`Origins`] that name the file, a [`Section`] per map, one call per
//! key. Every error is one line: `<file>: <key path>: <what was expected>, found <value>`.

use crate::address::{HostPort, ListenAddress};
use crate::tree::{describe, join_path};
use crate::units::{duration_from_value, size_from_value, DURATION_EXPECTED};
use crate::ConfigError;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::tree::Origins;

const BOOL_EXPECTED: &str = "a boolean (true/false, on/off, yes/no)";
/// What a value that should be a section is said to be expected as (see [`Section::expecting`]).
const MAP_EXPECTED: &str = "a map of settings";

/// Where messages come from and where warnings go.
pub struct Ctx<'o> {
    origins: &'o Origins,
    pub(crate) warnings: Vec<String>,
}

impl<'o> Ctx<'o> {
    pub fn new(origins: &'o Origins) -> Self {
        Ctx {
            origins,
            warnings: Vec::new(),
        }
    }

    /// The file (or variable) that supplied `path`.
    pub fn label(&self, path: &str) -> &str {
        self.origins.label_for(path)
    }

    pub fn invalid(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.label(path).to_string(),
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub fn expected(&self, path: &str, expected: &str, found: &Value) -> ConfigError {
        self.invalid(
            path,
            format!("expected {expected}, found {}", describe(found)),
        )
    }

    pub fn warn(&mut self, path: &str, message: &str) {
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
/// [`Section::finish`] can warn about the rest (or [`Section::finish_strict`] refuse them).
pub struct Section<'v> {
    path: String,
    map: Option<&'v Map<String, Value>>,
    used: BTreeSet<String>,
    /// How messages name what a section should be; nested sections inherit it.
    map_expected: &'static str,
}

impl<'v> Section<'v> {
    /// A section over `value`; an absent or null value reads as an empty section.
    pub fn new(ctx: &Ctx, path: &str, value: Option<&'v Value>) -> Result<Self, ConfigError> {
        Self::expecting(ctx, path, value, MAP_EXPECTED)
    }

    /// [`Section::new`] where a value that is not a map is reported as
    /// `expected <map_expected>, found ...`, here and in every nested section.
    pub fn expecting(
        ctx: &Ctx,
        path: &str,
        value: Option<&'v Value>,
        map_expected: &'static str,
    ) -> Result<Self, ConfigError> {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => return Err(ctx.expected(path, map_expected, other)),
        };
        Ok(Section {
            path: path.to_string(),
            map,
            used: BTreeSet::new(),
            map_expected,
        })
    }

    pub fn path(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// `true` when the section was present in the tree (even if empty).
    pub fn is_present(&self) -> bool {
        self.map.is_some()
    }

    /// The raw value of `key` (a null reads as absent), marking it read.
    pub fn raw(&mut self, key: &str) -> Option<&'v Value> {
        self.used.insert(key.to_string());
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// Reads `key` with `convert`, whose `Err` is the expectation ("a boolean ...").
    pub fn get<T>(
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

    pub fn string(&mut self, ctx: &Ctx, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(ctx, key, to_string)
    }

    pub fn path_buf(&mut self, ctx: &Ctx, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(ctx, key)?.map(PathBuf::from))
    }

    pub fn bool(&mut self, ctx: &Ctx, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(ctx, key, to_bool)
    }

    pub fn i64(&mut self, ctx: &Ctx, key: &str) -> Result<Option<i64>, ConfigError> {
        self.get(ctx, key, to_i64)
    }

    pub fn u32(&mut self, ctx: &Ctx, key: &str) -> Result<Option<u32>, ConfigError> {
        self.get(ctx, key, to_u32)
    }

    pub fn duration(&mut self, ctx: &Ctx, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.get(ctx, key, duration_from_value)
    }

    pub fn size(&mut self, ctx: &Ctx, key: &str) -> Result<Option<u64>, ConfigError> {
        self.get(ctx, key, size_from_value)
    }

    pub fn strings(&mut self, ctx: &Ctx, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        self.get(ctx, key, to_string_list)
    }

    /// A map of scalar values kept as text (see [`scalar_text`]); errors name the entry.
    pub fn string_map(
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

    pub fn host_port(&mut self, ctx: &Ctx, key: &str) -> Result<Option<HostPort>, ConfigError> {
        self.get(ctx, key, |v| to_string(v).and_then(|s| HostPort::parse(&s)))
    }

    pub fn listen(&mut self, ctx: &Ctx, key: &str) -> Result<Option<ListenAddress>, ConfigError> {
        self.get(ctx, key, |v| {
            to_string(v).and_then(|s| ListenAddress::parse(&s))
        })
    }

    /// A string that must be present and not blank: `missing (expected <what>)` otherwise.
    pub fn required_string(
        &mut self,
        ctx: &Ctx,
        key: &str,
        what: &str,
    ) -> Result<String, ConfigError> {
        self.string(ctx, key)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| self.invalid(ctx, key, format!("missing (expected {what})")))
    }

    /// A whole number of at least `min` (`expected an integer >= <min>` otherwise).
    pub fn count(&mut self, ctx: &Ctx, key: &str, min: u64) -> Result<Option<u64>, ConfigError> {
        self.get(ctx, key, |v| to_count(v, min))
    }

    /// A duration where `0` or `false` means "no limit" (`None`, also when absent).
    pub fn limit(&mut self, ctx: &Ctx, key: &str) -> Result<Option<Duration>, ConfigError> {
        let limit = self.get(ctx, key, |v| match v {
            Value::Bool(false) => Ok(None),
            other => duration_from_value(other)
                .map(|d| Some(d).filter(|d| !d.is_zero()))
                .map_err(|_| DURATION_EXPECTED.to_string()),
        })?;
        Ok(limit.flatten())
    }

    /// A nested section (absent reads as empty).
    pub fn section(&mut self, ctx: &Ctx, key: &str) -> Result<Section<'v>, ConfigError> {
        let value = self.raw(key);
        Section::expecting(ctx, &self.path(key), value, self.map_expected)
    }

    /// A list of sections, one per item, with paths `<key>[0]`, `<key>[1]`, ...
    /// (absent reads as an empty list).
    pub fn sections(&mut self, ctx: &Ctx, key: &str) -> Result<Vec<Section<'v>>, ConfigError> {
        let path = self.path(key);
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    Section::expecting(ctx, &format!("{path}[{i}]"), Some(item), self.map_expected)
                })
                .collect(),
            Some(other) => Err(ctx.expected(&path, "a list", other)),
        }
    }

    /// An error about `key` of this section.
    pub fn invalid(&self, ctx: &Ctx, key: &str, message: impl Into<String>) -> ConfigError {
        ctx.invalid(&self.path(key), message)
    }

    /// Keys nobody has read yet (for sections that allow free-form keys), marking them read.
    pub fn take_rest(&mut self) -> Vec<(&'v String, &'v Value)> {
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
    pub fn finish(mut self, ctx: &mut Ctx) {
        for (key, _) in self.take_rest() {
            ctx.warn(&join_path(&self.path, key), "unknown key (ignored)");
        }
    }

    /// Refuses the first key (in name order) that was never read, listing the keys this
    /// section knows: for pgherd's own sections, where a typo must not fall back to a default.
    pub fn finish_strict(self, ctx: &Ctx) -> Result<(), ConfigError> {
        let Some(map) = self.map else {
            return Ok(());
        };
        match map.keys().find(|key| !self.used.contains(*key)) {
            None => Ok(()),
            Some(unknown) => {
                let known: Vec<&str> = self.used.iter().map(String::as_str).collect();
                Err(self.invalid(
                    ctx,
                    unknown,
                    format!("unknown key (expected one of: {})", known.join(", ")),
                ))
            }
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

/// A non-negative integer, also as a string, of at least `min`.
fn to_count(value: &Value, min: u64) -> Result<u64, String> {
    let count = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    count
        .filter(|n| *n >= min)
        .ok_or_else(|| format!("an integer >= {min}"))
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

    #[test]
    fn strict_sections_for_pgherd_settings() {
        let origins = Origins::new("proxy.yml");
        let ctx = Ctx::new(&origins);
        let tree = json!({
            "n": "3", "idle": 0, "off": false, "t": "2s",
            "items": [{"a": 1}, {"b": 2}], "bad": [5], "typo": 1
        });
        let mut root = Section::expecting(&ctx, "proxy", Some(&tree), "a mapping").unwrap();
        assert_eq!(root.count(&ctx, "n", 1).unwrap(), Some(3));
        assert_eq!(
            root.count(&ctx, "n", 4).unwrap_err().to_string(),
            r#"proxy.yml: proxy.n: expected an integer >= 4, found "3""#
        );
        assert_eq!(root.limit(&ctx, "idle").unwrap(), None);
        assert_eq!(root.limit(&ctx, "off").unwrap(), None);
        assert_eq!(root.limit(&ctx, "t").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(root.limit(&ctx, "absent").unwrap(), None);
        let items = root.sections(&ctx, "items").unwrap();
        assert_eq!(items[1].path("b"), "proxy.items[1].b");
        assert_eq!(
            root.sections(&ctx, "bad").err().unwrap().to_string(),
            "proxy.yml: proxy.bad[0]: expected a mapping, found 5"
        );
        assert_eq!(
            root.required_string(&ctx, "name", "a name")
                .unwrap_err()
                .to_string(),
            "proxy.yml: proxy.name: missing (expected a name)"
        );
        assert_eq!(
            root.finish_strict(&ctx).unwrap_err().to_string(),
            "proxy.yml: proxy.typo: unknown key (expected one of: absent, bad, idle, items, n, name, off, t)"
        );
    }
}
