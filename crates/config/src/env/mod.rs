//! `PATRONI_*` environment overrides, mapped onto configuration keys as Patroni 3.0.2 does.

use crate::tree::{merge, yaml_to_json, Origins};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) const PREFIX: &str = "PATRONI_";
/// pgherd's own name for every `PATRONI_*` variable: `PGHERD_<X>` means `PATRONI_<X>` and wins
/// when both are set. Other `PGHERD_*` variables (the tools', e.g. `PGHERD_BIN`) are not
/// configuration: one that maps to no key is ignored without a warning, and the generic
/// `<SECTION>_<KEY>` mapping applies to the DCS sections only.
pub(crate) const ALIAS_PREFIX: &str = "PGHERD_";
const ALIAS_SECTIONS: [&str; 8] = [
    "ETCD",
    "ETCD3",
    "ZOOKEEPER",
    "CONSUL",
    "EXHIBITOR",
    "KUBERNETES",
    "RAFT",
    "CITUS",
];
/// The whole configuration as YAML, used when no file is given.
pub(crate) const CONFIGURATION_VAR: &str = "PATRONI_CONFIGURATION";

const AUTH_PARAMS: [&str; 11] = [
    "username",
    "password",
    "sslmode",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "gssencmode",
    "channel_binding",
];

/// `PATRONI_<SECTION>_<SUFFIX>` suffixes Patroni maps into any section (DCS settings mostly).
const SECTION_SUFFIXES: [&str; 36] = [
    "HOST",
    "HOSTS",
    "PORT",
    "USE_PROXIES",
    "PROTOCOL",
    "SRV",
    "SRV_SUFFIX",
    "URL",
    "PROXY",
    "CACERT",
    "CERT",
    "KEY",
    "VERIFY",
    "TOKEN",
    "CHECKS",
    "DC",
    "CONSISTENCY",
    "REGISTER_SERVICE",
    "SERVICE_CHECK_INTERVAL",
    "SERVICE_CHECK_TLS_SERVER_NAME",
    "SERVICE_TAGS",
    "NAMESPACE",
    "CONTEXT",
    "USE_ENDPOINTS",
    "SCOPE_LABEL",
    "ROLE_LABEL",
    "POD_IP",
    "PORTS",
    "LABELS",
    "BYPASS_API_SERVICE",
    "RETRIABLE_HTTP_CODES",
    "KEY_PASSWORD",
    "USE_SSL",
    "SET_ACLS",
    "GROUP",
    "DATABASE",
];
const LIST_SUFFIXES: [&str; 5] = [
    "HOSTS",
    "PORTS",
    "CHECKS",
    "SERVICE_TAGS",
    "RETRIABLE_HTTP_CODES",
];
const DICT_SUFFIXES: [&str; 2] = ["LABELS", "SET_ACLS"];

/// One variable's contribution: `value` at `path`.
struct Entry {
    path: Vec<String>,
    value: Value,
    var: String,
}

/// Collects entries, remembering which variables were used.
struct Builder<'e> {
    env: &'e BTreeMap<String, String>,
    used: BTreeSet<&'e str>,
    entries: Vec<Entry>,
}

impl<'e> Builder<'e> {
    /// The value of `PATRONI_<suffix>` if set and non-empty (Patroni ignores empty ones).
    fn take(&mut self, suffix: &str) -> Option<(&'e str, &'e str)> {
        let alias = self.env.get_key_value(&format!("{ALIAS_PREFIX}{suffix}"));
        let patroni = self.env.get_key_value(&format!("{PREFIX}{suffix}"));
        for (var, _) in alias.iter().chain(patroni.iter()) {
            self.used.insert(var);
        }
        let (var, value) = alias.filter(|(_, v)| !v.is_empty()).or(patroni)?;
        (!value.is_empty()).then_some((var.as_str(), value.as_str()))
    }

    fn add(&mut self, path: &[&str], var: &str, value: Value) {
        self.entries.push(Entry {
            path: path.iter().map(|p| p.to_string()).collect(),
            value,
            var: var.to_string(),
        });
    }

    /// `PATRONI_<SECTION>_<KEY>` -> `section.key` for each key.
    fn section(&mut self, section: &str, keys: &[&str]) {
        for key in keys {
            let suffix = format!("{section}_{key}").to_ascii_uppercase();
            if let Some((var, value)) = self.take(&suffix) {
                let value = match (section, *key) {
                    ("restapi", "allowlist") | ("raft", "partner_addrs") => parse_list(value),
                    ("restapi", "http_extra_headers" | "https_extra_headers")
                    | ("log", "loggers") => parse_dict(value),
                    _ => Value::from(value),
                };
                self.add(&[section, key], var, value);
            }
        }
    }

    /// `PATRONI_<PREFIX>_<PARAM>` -> `path.param` for each param.
    fn auth(&mut self, prefix: &str, params: &[&str], path: &[&str]) {
        for param in params {
            if let Some((var, value)) =
                self.take(&format!("{prefix}_{}", param.to_ascii_uppercase()))
            {
                let mut full = path.to_vec();
                full.push(param);
                self.add(&full, var, Value::from(value));
            }
        }
    }

    /// `PATRONI_*` and `PGHERD_*` variables not yet used, as (variable, name after the
    /// prefix, value); a `PGHERD_*` one after its `PATRONI_*` twin (it wins when merged last).
    fn unused(&self) -> Vec<(&'e str, &'e str, &'e str)> {
        let mut out: Vec<(&'e str, &'e str, &'e str)> = self
            .env
            .iter()
            .filter(|(var, _)| !self.used.contains(var.as_str()))
            .filter_map(|(var, value)| {
                let rest = var
                    .strip_prefix(PREFIX)
                    .or_else(|| var.strip_prefix(ALIAS_PREFIX))?;
                Some((var.as_str(), rest, value.as_str()))
            })
            .collect();
        out.sort_by_key(|(var, rest, _)| (*rest, var.starts_with(ALIAS_PREFIX)));
        out
    }
}

/// Patroni's `_parse_list`: YAML flow or block list, or bare comma-separated items.
fn parse_list(text: &str) -> Value {
    let trimmed = text.trim();
    let source = if trimmed.starts_with('-') || trimmed.contains('[') {
        trimmed.to_string()
    } else {
        format!("[{trimmed}]")
    };
    match serde_yaml::from_str(&source).map(yaml_to_json) {
        Ok(list @ Value::Array(_)) => list,
        // Leave the text for the typed reader to split or report.
        _ => Value::from(text),
    }
}

/// Patroni's `_parse_dict`: a YAML flow map, braces optional.
fn parse_dict(text: &str) -> Value {
    let trimmed = text.trim();
    let source = if trimmed.starts_with('{') {
        trimmed.to_string()
    } else {
        format!("{{{trimmed}}}")
    };
    match serde_yaml::from_str(&source).map(yaml_to_json) {
        Ok(map @ Value::Object(_)) => map,
        _ => Value::from(text),
    }
}

/// Applies the overrides in `env` over `tree` (deep merge, as Patroni). Returns warnings for
/// variables that were ignored.
pub(crate) fn apply_env(
    tree: &mut Map<String, Value>,
    origins: &mut Origins,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut b = Builder {
        env,
        used: BTreeSet::new(),
        entries: Vec::new(),
    };
    let mut warnings = Vec::new();
    for key in ["name", "namespace", "scope"] {
        if let Some((var, value)) = b.take(&key.to_ascii_uppercase()) {
            b.add(&[key], var, Value::from(value));
        }
    }
    // Old names, used only when the new ones are not set.
    for (key, old) in [
        ("level", "LOGLEVEL"),
        ("format", "LOGFORMAT"),
        ("dateformat", "LOG_DATEFMT"),
    ] {
        let new_set = env
            .get(&format!("{PREFIX}LOG_{}", key.to_ascii_uppercase()))
            .is_some_and(|v| !v.is_empty());
        if let Some((var, value)) = b.take(old).filter(|_| !new_set) {
            b.add(&["log", key], var, Value::from(value));
        }
    }
    b.section(
        "restapi",
        &[
            "listen",
            "connect_address",
            "certfile",
            "keyfile",
            "keyfile_password",
            "cafile",
            "ciphers",
            "verify_client",
            "http_extra_headers",
            "https_extra_headers",
            "allowlist",
            "allowlist_include_members",
        ],
    );
    b.section(
        "ctl",
        &[
            "insecure",
            "cacert",
            "certfile",
            "keyfile",
            "keyfile_password",
        ],
    );
    b.section(
        "postgresql",
        &[
            "listen",
            "connect_address",
            "proxy_address",
            "config_dir",
            "data_dir",
            "pgpass",
            "bin_dir",
        ],
    );
    b.section(
        "log",
        &[
            "level",
            "traceback_level",
            "format",
            "dateformat",
            "max_queue_size",
            "dir",
            "file_size",
            "file_num",
            "loggers",
        ],
    );
    b.section(
        "raft",
        &[
            "data_dir",
            "self_addr",
            "partner_addrs",
            "password",
            "bind_addr",
        ],
    );
    b.auth("RESTAPI", &AUTH_PARAMS[..2], &["restapi", "authentication"]);
    for user in ["replication", "superuser", "rewind"] {
        b.auth(
            &user.to_ascii_uppercase(),
            &AUTH_PARAMS,
            &["postgresql", "authentication", user],
        );
    }

    for (var, rest, value) in b.unused() {
        let Some((section, suffix)) = rest.split_once('_') else {
            continue;
        };
        if section.is_empty() || !SECTION_SUFFIXES.contains(&suffix) {
            continue;
        }
        if var.starts_with(ALIAS_PREFIX) && !ALIAS_SECTIONS.contains(&section) {
            continue;
        }
        if section == "CITUS" && !matches!(suffix, "GROUP" | "DATABASE") {
            continue;
        }
        b.used.insert(var);
        if value.is_empty() {
            continue;
        }
        let value = if LIST_SUFFIXES.contains(&suffix) {
            parse_list(value)
        } else if DICT_SUFFIXES.contains(&suffix) {
            parse_dict(value)
        } else {
            Value::from(value)
        };
        let (section, key) = (section.to_ascii_lowercase(), suffix.to_ascii_lowercase());
        b.add(&[section.as_str(), key.as_str()], var, value);
    }

    // etcd credentials go to an etcd section that exists (in the file or from variables).
    for section in ["etcd", "etcd3"] {
        let exists = tree.contains_key(section) || b.entries.iter().any(|e| e.path[0] == section);
        let upper = section.to_ascii_uppercase();
        if exists {
            b.auth(&upper, &AUTH_PARAMS[..2], &[section]);
        } else {
            for param in ["USERNAME", "PASSWORD"] {
                if let Some((var, _)) = b.take(&format!("{upper}_{param}")) {
                    warnings.push(format!("{var}: ignored (no {section} section)"));
                }
            }
        }
    }

    // PATRONI_<user>_PASSWORD (+ _OPTIONS) -> bootstrap.users.<user>
    for (_, rest, _) in b.unused() {
        let Some(user) = rest.strip_suffix("_PASSWORD").filter(|u| !u.is_empty()) else {
            continue;
        };
        let Some((var, password)) = b.take(rest) else {
            continue;
        };
        b.add(
            &["bootstrap", "users", user, "password"],
            var,
            Value::from(password),
        );
        if let Some((var, options)) = b.take(&format!("{user}_OPTIONS")) {
            b.add(
                &["bootstrap", "users", user, "options"],
                var,
                parse_list(options),
            );
        }
    }

    for (var, _, _) in b.unused() {
        if var != CONFIGURATION_VAR && var.starts_with(PREFIX) {
            warnings.push(format!("{var}: unknown variable (ignored)"));
        }
    }

    for entry in b.entries {
        let mut value = entry.value;
        for key in entry.path.iter().rev() {
            value = Value::Object(Map::from_iter([(key.clone(), value)]));
        }
        if let Value::Object(overlay) = value {
            merge(tree, overlay, "", &entry.var, origins);
        }
    }
    warnings
}

#[cfg(test)]
mod tests;
