//! Loading: a file or a directory of YAML files, or `PATRONI_CONFIGURATION`, then
//! `PATRONI_*` overrides.

use crate::env::{apply_env, ALIAS_PREFIX, CONFIGURATION_VAR, PREFIX};
use crate::tree::{merge, parse_yaml, Origins};
use crate::{Config, ConfigError};
use serde_json::Map;
use std::collections::BTreeMap;
use std::path::Path;

/// A loaded configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Non-fatal problems (unknown keys, ignored settings), one line each, naming the file.
    pub warnings: Vec<String>,
    /// Where the configuration came from, for messages: the file, `dir (a.yml, b.yml)`,
    /// `PATRONI_CONFIGURATION` or `environment`.
    pub source: String,
}

/// Loads the configuration as Patroni does:
/// - `path` a file: that YAML file; a directory: all its `*.yml`/`*.yaml` files deep-merged in
///   name order;
/// - no `path`: the YAML in `PATRONI_CONFIGURATION` (used alone), else the variables only;
/// - then `PATRONI_*` variables from `env` are deep-merged over the files
///   (docs/compat.md#environment-variables).
///
/// Only keys are validated here; call [`Config::validate_for_agent`] for what the agent needs.
pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Loaded, ConfigError> {
    match path {
        Some(path) => {
            let (tree, origins, source) = read_path(path)?;
            finish(tree, origins, source, Some(env))
        }
        None => match env
            .get(CONFIGURATION_VAR)
            .filter(|yaml| !yaml.trim().is_empty())
        {
            Some(yaml) => {
                let tree = parse_yaml(yaml, CONFIGURATION_VAR)?;
                finish(
                    tree,
                    Origins::new(CONFIGURATION_VAR),
                    CONFIGURATION_VAR.to_string(),
                    None,
                )
            }
            None => finish(
                Map::new(),
                Origins::new("environment"),
                "environment".to_string(),
                Some(env),
            ),
        },
    }
}

/// [`load`] with the process environment (its `PATRONI_*` variables). The environment is
/// left as it is: whoever starts other processes should not pass those variables on.
pub fn load_from_process_env(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(PREFIX) || k.starts_with(ALIAS_PREFIX))
        .collect();
    load(path, &env)
}

/// [`load`] for YAML text that would be the file `label`, e.g. for tests or a configuration
/// received over the network.
pub fn load_str(
    yaml: &str,
    label: &str,
    env: &BTreeMap<String, String>,
) -> Result<Loaded, ConfigError> {
    let tree = parse_yaml(yaml, label)?;
    let mut origins = Origins::new(label);
    let mut merged = Map::new();
    merge(&mut merged, tree, "", label, &mut origins);
    finish(merged, origins, label.to_string(), Some(env))
}

fn finish(
    mut tree: Map<String, serde_json::Value>,
    mut origins: Origins,
    source: String,
    env: Option<&BTreeMap<String, String>>,
) -> Result<Loaded, ConfigError> {
    let mut warnings = match env {
        Some(env) => apply_env(&mut tree, &mut origins, env),
        None => Vec::new(),
    };
    if tree.is_empty() {
        return Err(ConfigError::Source {
            file: source,
            message: "the configuration is empty".to_string(),
        });
    }
    let (config, config_warnings) = Config::from_tree(&tree, origins)?;
    warnings.extend(config_warnings);
    Ok(Loaded {
        config,
        warnings,
        source,
    })
}

fn read_path(
    path: &Path,
) -> Result<(Map<String, serde_json::Value>, Origins, String), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    };
    let display = path.display().to_string();
    let files = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if (file_name.ends_with(".yml") || file_name.ends_with(".yaml"))
                && entry.path().is_file()
            {
                files.push(file_name);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(ConfigError::Source {
                file: display,
                message: "no *.yml or *.yaml files in this directory".to_string(),
            });
        }
        files
    } else {
        Vec::new()
    };

    let mut origins = Origins::new(display.clone());
    let mut tree = Map::new();
    if files.is_empty() {
        let text = std::fs::read_to_string(path).map_err(io)?;
        merge(
            &mut tree,
            parse_yaml(&text, &display)?,
            "",
            &display,
            &mut origins,
        );
        return Ok((tree, origins, display));
    }
    for name in &files {
        let file = path.join(name);
        let label = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Io {
            path: label.clone(),
            source,
        })?;
        merge(
            &mut tree,
            parse_yaml(&text, &label)?,
            "",
            &label,
            &mut origins,
        );
    }
    let source = format!("{display} ({})", files.join(", "));
    Ok((tree, origins, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn directory_is_merged_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write("10-base.yml", "scope: batman\nname: node1\npostgresql:\n  listen: 127.0.0.1:5432\n  parameters:\n    work_mem: 4MB\n    shared_buffers: 1GB\ntags:\n  nosync: true\n");
        write(
            "20-local.yaml",
            "postgresql:\n  parameters:\n    work_mem: 8MB\n  paramters: {}\ntags: null\n",
        );
        write("30-broken.yml", "postgresql:\n  pg_ctl_timeout: later\n");
        write("notes.txt", "not: [yaml");
        fs::create_dir(dir.path().join("sub.yml")).unwrap();

        let err = load(Some(dir.path()), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        let broken = dir.path().join("30-broken.yml").display().to_string();
        assert_eq!(
            err,
            format!(
                r#"{broken}: postgresql.pg_ctl_timeout: expected a duration (seconds, or e.g. "30s", "500ms"), found "later""#
            )
        );

        fs::remove_file(dir.path().join("30-broken.yml")).unwrap();
        let loaded = load(Some(dir.path()), &BTreeMap::new()).unwrap();
        let d = dir.path().display();
        assert_eq!(loaded.source, format!("{d} (10-base.yml, 20-local.yaml)"));
        let params = &loaded.config.postgresql.parameters;
        assert_eq!(params["work_mem"], "8MB");
        assert_eq!(params["shared_buffers"], "1GB");
        assert!(!loaded.config.tags.nosync, "null removes the key");
        let local = dir.path().join("20-local.yaml").display().to_string();
        assert_eq!(
            loaded.warnings,
            [format!(
                "{local}: postgresql.paramters: unknown key (ignored)"
            )]
        );
        assert_eq!(
            loaded.config.validate_for_agent().unwrap_err().to_string(),
            format!(r#"{d}: restapi.listen: missing (expected "host:port")"#)
        );
    }

    #[test]
    fn unreadable_paths() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(Some(dir.path()), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}: no *.yml or *.yaml files in this directory",
                dir.path().display()
            )
        );
        let missing = dir.path().join("missing.yml");
        let err = load(Some(&missing), &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&missing.display().to_string()),
            "{err}"
        );
        let file = dir.path().join("node1.yml");
        std::fs::write(&file, "scope: s\nname: n\n").unwrap();
        let env = BTreeMap::from([("PATRONI_NAME".to_string(), "m".to_string())]);
        let loaded = load(Some(&file), &env).unwrap();
        assert_eq!(loaded.config.name.as_deref(), Some("m"));
        assert_eq!(loaded.source, file.display().to_string());
    }
}
