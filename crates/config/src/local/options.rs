//! Command-line options for `initdb` and `pg_basebackup` as Patroni accepts them: a list of
//! flags and single `name: value` pairs, or a map.

use crate::reader::{to_string, Ctx};
use crate::ConfigError;
use serde::Serialize;
use serde_json::Value;

/// One option: `--name` or `--name=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolOption {
    /// Without leading dashes, e.g. `data-checksums`.
    pub name: String,
    pub value: Option<String>,
}

impl ToolOption {
    /// The command-line argument, e.g. `--encoding=UTF8`.
    pub fn to_arg(&self) -> String {
        match &self.value {
            Some(value) => format!("--{}={value}", self.name),
            None => format!("--{}", self.name),
        }
    }
}

/// Options pgherd passes to `initdb` itself.
pub(crate) const INITDB_FORBIDDEN: &[&str] = &[
    "pgdata",
    "D",
    "nosync",
    "N",
    "pwfile",
    "sync-only",
    "version",
    "V",
];

/// Options pgherd passes to `pg_basebackup` itself (Patroni's list plus short forms).
pub(crate) const BASEBACKUP_FORBIDDEN: &[&str] = &[
    "pgdata",
    "D",
    "format",
    "F",
    "wal-method",
    "X",
    "xlog-method",
    "gzip",
    "z",
    "compress",
    "Z",
    "version",
    "V",
    "dbname",
    "d",
    "host",
    "h",
    "port",
    "p",
    "username",
    "U",
    "password",
    "W",
];

pub(crate) fn parse_tool_options(
    ctx: &Ctx,
    path: &str,
    value: &Value,
    forbidden: &[&str],
) -> Result<Vec<ToolOption>, ConfigError> {
    let mut out = Vec::new();
    let mut push = |name: &str, value: Option<String>| {
        let name = name.trim().trim_start_matches('-');
        if forbidden.contains(&name) {
            return Err(ctx.invalid(
                path,
                format!("option {name:?} is not allowed (pgherd sets it itself)"),
            ));
        }
        out.push(ToolOption {
            name: name.to_string(),
            value,
        });
        Ok(())
    };
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(flag) => push(flag, None)?,
                    Value::Object(pair) if pair.len() == 1 => {
                        for (name, v) in pair {
                            let v = to_string(v).map_err(|_| {
                                ctx.expected(&format!("{path}.{i}.{name}"), "a string value", v)
                            })?;
                            push(name, Some(v))?;
                        }
                    }
                    other => {
                        return Err(ctx.expected(
                            &format!("{path}.{i}"),
                            r#"an option name or a single "name: value" pair"#,
                            other,
                        ))
                    }
                }
            }
        }
        Value::Object(map) => {
            for (name, v) in map {
                match v {
                    // Patroni skips falsy values in the map form.
                    Value::Null | Value::Bool(false) => {}
                    Value::Bool(true) => push(name, None)?,
                    other => {
                        let v = to_string(other).map_err(|_| {
                            ctx.expected(&format!("{path}.{name}"), "a string value", other)
                        })?;
                        push(name, Some(v))?;
                    }
                }
            }
        }
        other => return Err(ctx.expected(path, "a list or map of options", other)),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Origins;
    use serde_json::json;

    fn parse(v: Value) -> Result<Vec<String>, String> {
        let origins = Origins::new("f.yml");
        let ctx = Ctx::new(&origins);
        parse_tool_options(&ctx, "bootstrap.initdb", &v, INITDB_FORBIDDEN)
            .map(|o| o.iter().map(ToolOption::to_arg).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn forms() {
        let args = vec![
            "--encoding=UTF8".to_string(),
            "--data-checksums".to_string(),
        ];
        assert_eq!(
            parse(json!([{"encoding": "UTF8"}, "data-checksums"])),
            Ok(args)
        );
        assert_eq!(
            parse(json!({"encoding": "UTF8", "data-checksums": true, "x": null})),
            Ok(vec![
                "--data-checksums".to_string(),
                "--encoding=UTF8".to_string()
            ])
        );
        assert_eq!(
            parse(json!([{"wal-segsize": 32}])),
            Ok(vec!["--wal-segsize=32".to_string()])
        );
        assert_eq!(
            parse(json!([{"a": "1", "b": "2"}])),
            Err(r#"f.yml: bootstrap.initdb.0: expected an option name or a single "name: value" pair, found a map"#
                .to_string())
        );
        assert_eq!(
            parse(json!("data-checksums")),
            Err(r#"f.yml: bootstrap.initdb: expected a list or map of options, found "data-checksums""#.to_string())
        );
    }
}
