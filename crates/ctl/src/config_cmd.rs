//! The cluster's dynamic configuration: `show-config`, `edit-config`, `pause`, `resume`.

use crate::console::confirm;
use crate::Ctl;
use anyhow::{bail, Context, Result};
use pgherd_dcs::{Cluster, Member};
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// YAML for people, keys sorted (PyYAML's `safe_dump` layout as far as serde_yaml allows).
pub fn format_config(value: &Value) -> String {
    match value {
        Value::Object(o) if o.is_empty() => "{}\n".to_string(),
        other => serde_yaml::to_string(other).unwrap_or_else(|_| other.to_string()),
    }
}

fn config_of(cluster: &Cluster) -> Value {
    cluster
        .config
        .as_ref()
        .map(|c| c.value.clone())
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// `show-config`: secrets are masked unless `show_secrets`.
pub async fn show(ctl: &Ctl, show_secrets: bool) -> Result<()> {
    let cluster = ctl.cluster().await?;
    let mut config = config_of(&cluster);
    if !show_secrets {
        pgherd_config::redact_secrets(&mut config);
    }
    print!("{}", format_config(&config));
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct EditArgs {
    pub quiet: bool,
    /// `--set key.path=value` (values are YAML).
    pub set: Vec<String>,
    /// `--pg name=value`: `postgresql.parameters.name`.
    pub pg: Vec<String>,
    /// Merged into the configuration (`-`: standard input).
    pub apply: Option<String>,
    /// Replaces the configuration (`-`: standard input).
    pub replace: Option<String>,
    pub force: bool,
}

pub async fn edit(ctl: &Ctl, args: EditArgs) -> Result<()> {
    let cluster = ctl.cluster().await?;
    let original = config_of(&cluster);
    let index = cluster.config.as_ref().map(|c| c.index);
    let before = format_config(&original);
    let mut changed = original.clone();
    let mut edited_text = None;

    if let Some(file) = &args.replace {
        changed = read_yaml(file)?;
        if !changed.is_object() {
            bail!("{file}: the configuration must be a YAML mapping");
        }
        edited_text = Some(format_config(&changed));
    }
    if let Some(file) = &args.apply {
        let patch = read_yaml(file)?;
        let Value::Object(patch) = patch else {
            bail!("{file}: expected a YAML mapping");
        };
        if let Value::Object(target) = &mut changed {
            pgherd_config_patch(target, &patch);
        }
        edited_text = Some(format_config(&changed));
    }
    if !args.set.is_empty() || !args.pg.is_empty() {
        let pairs = args.set.iter().cloned().chain(
            args.pg
                .iter()
                .map(|p| format!("postgresql.parameters.{}", p.trim_start())),
        );
        for pair in pairs {
            set_pair(&mut changed, &pair)?;
        }
        edited_text = Some(format_config(&changed));
    }
    let after = match edited_text {
        Some(text) => text,
        None => {
            let text = invoke_editor(&before, &ctl.scope)?;
            changed = if text.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                serde_yaml::from_str(&text).context("the edited configuration is not valid YAML")?
            };
            if !changed.is_object() {
                bail!("the edited configuration must be a YAML mapping");
            }
            text
        }
    };

    if changed == original {
        if !args.quiet {
            println!("Not changed");
        }
        return Ok(());
    }
    if !args.quiet {
        print!("{}", unified_diff(&before, &after));
    }
    let from_stdin = args.apply.as_deref() == Some("-") || args.replace.as_deref() == Some("-");
    if from_stdin && !args.force {
        println!("Use --force option to apply changes");
        return Ok(());
    }
    if !args.force && !confirm("Apply these changes?")? {
        bail!("Aborted: configuration not changed");
    }
    if !ctl
        .dcs
        .set_config_value(&changed.to_string(), index)
        .await?
    {
        bail!("Config modification aborted due to concurrent changes");
    }
    println!("Configuration changed");
    Ok(())
}

/// Patroni's `patch_config` (null deletes, objects merge).
fn pgherd_config_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match (target.get_mut(k), v) {
            (_, Value::Null) => {
                target.remove(k);
            }
            (Some(Value::Object(t)), Value::Object(p)) => pgherd_config_patch(t, p),
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

fn read_yaml(file: &str) -> Result<Value> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_yaml::from_str(&text).with_context(|| format!("{file} is not valid YAML"))
}

/// `key.path=value`: the value is YAML (`null` removes the key); under
/// `postgresql.parameters` the rest of the path is one name (GUCs may contain dots).
pub fn set_pair(config: &mut Value, pair: &str) -> Result<()> {
    let Some((path, value)) = pair.split_once('=') else {
        bail!("Invalid parameter setting {pair}");
    };
    let value: Value = if value.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(value).with_context(|| format!("invalid value in {pair}"))?
    };
    let mut keys: Vec<String> = path.trim().split('.').map(str::to_string).collect();
    if keys.len() > 3 && keys[0] == "postgresql" && keys[1] == "parameters" {
        let name = keys[2..].join(".");
        keys.truncate(2);
        keys.push(name);
    }
    if keys.iter().any(|k| k.is_empty()) {
        bail!("Invalid parameter setting {pair}");
    }
    set_path(config, &keys, value);
    Ok(())
}

fn set_path(config: &mut Value, keys: &[String], value: Value) {
    let Value::Object(map) = config else { return };
    let (key, rest) = match keys.split_first() {
        Some(x) => x,
        None => return,
    };
    if rest.is_empty() {
        if value.is_null() {
            map.remove(key);
        } else {
            map.insert(key.clone(), value);
        }
        return;
    }
    let child = map
        .entry(key.clone())
        .and_modify(|v| {
            if !v.is_object() {
                *v = json!({});
            }
        })
        .or_insert_with(|| json!({}));
    set_path(child, rest, value);
    if child.as_object().is_some_and(Map::is_empty) {
        map.remove(key);
    }
}

/// `difflib.unified_diff` of the two texts, as patronictl prints it when not on a terminal.
pub fn unified_diff(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header("", "")
        .to_string()
}

/// `$EDITOR` (else `editor`, else `vi`) on a temporary copy; returns the edited text.
fn invoke_editor(text: &str, scope: &str) -> Result<String> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            ["editor", "vi"]
                .into_iter()
                .find(|e| which(e))
                .map(str::to_string)
        });
    let Some(editor) = editor else {
        bail!("EDITOR environment variable is not set. editor or vi are not available");
    };
    let mut file = tempfile::Builder::new()
        .prefix(&format!("{scope}-config-"))
        .suffix(".yaml")
        .tempfile()?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    let path = file.path().to_path_buf();
    // EDITOR may carry arguments ("code --wait"): run it through the shell like git does.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("starting the editor {editor}"))?;
    if !status.success() {
        bail!(
            "Editor exited with return code {}",
            status.code().unwrap_or(-1)
        );
    }
    Ok(std::fs::read_to_string(&path)?)
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

/// Members with a REST API, the leader first (patronictl's `get_all_members_leader_first`).
pub fn leader_first(cluster: &Cluster) -> Vec<&Member> {
    let leader = cluster
        .leader_member()
        .filter(|m| !m.data.api_url.is_empty());
    let mut out: Vec<&Member> = leader.into_iter().collect();
    out.extend(
        cluster.members.values().filter(|m| {
            !m.data.api_url.is_empty() && Some(m.name.as_str()) != cluster.leader_name()
        }),
    );
    out
}

/// `pause` / `resume`: `PATCH /config {"pause": true|null}` on the first member that answers.
pub async fn toggle_pause(ctl: &Ctl, paused: bool, wait: bool) -> Result<()> {
    let cluster = ctl.cluster().await?;
    if cluster.is_paused() == paused {
        bail!(
            "Cluster is {} paused",
            if paused { "already" } else { "not" }
        );
    }
    let (verb, done) = if paused {
        ("pause", "paused")
    } else {
        ("resume", "resumed")
    };
    let body = json!({ "pause": if paused { Value::Bool(true) } else { Value::Null } });
    for member in leader_first(&cluster) {
        let answer = match ctl
            .rest()?
            .call(member, reqwest::Method::PATCH, "config", Some(&body))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("{e:#}");
                eprintln!("Member {} is not accessible", member.name);
                continue;
            }
        };
        if answer.status != 200 {
            bail!(
                "Failed: {verb} cluster management status code={}, ({})",
                answer.status,
                answer.message()
            );
        }
        if wait {
            return wait_for_pause(ctl, &cluster, paused, verb, done).await;
        }
        println!("Success: cluster management is {done}");
        return Ok(());
    }
    bail!("Can not find accessible cluster member")
}

async fn wait_for_pause(
    ctl: &Ctl,
    before: &Cluster,
    paused: bool,
    verb: &str,
    done: &str,
) -> Result<()> {
    println!("'{verb}' request sent, waiting until it is recognized by all nodes");
    let names: Vec<String> = before
        .members
        .values()
        .filter(|m| !m.data.api_url.is_empty())
        .map(|m| m.name.clone())
        .collect();
    let loop_wait = before
        .config
        .as_ref()
        .and_then(|c| c.value.get("loop_wait"))
        .and_then(Value::as_f64)
        .unwrap_or(10.0);
    // Members publish the flag at their next cycle: allow two cycles and some slack.
    let limit = Duration::from_secs_f64(2.0 * loop_wait + 5.0);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let cluster = ctl.cluster().await?;
        let remaining: Vec<&str> = names
            .iter()
            .filter(|n| {
                cluster
                    .members
                    .get(*n)
                    .is_some_and(|m| m.data.pause != paused)
            })
            .map(String::as_str)
            .collect();
        if remaining.is_empty() {
            println!("Success: cluster management is {done}");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} members didn't recognized pause state after {} seconds",
                remaining.join(", "),
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_pairs_like_patronictl() {
        let mut c = json!({"ttl": 30, "postgresql": {"parameters": {"a": 1}}});
        set_pair(&mut c, "loop_wait=5").unwrap();
        set_pair(&mut c, "postgresql.parameters.pg_stat_statements.track=all").unwrap();
        set_pair(&mut c, "postgresql.parameters.a=null").unwrap();
        set_pair(&mut c, "synchronous_mode=true").unwrap();
        assert_eq!(
            c,
            json!({"ttl": 30, "loop_wait": 5, "synchronous_mode": true,
                   "postgresql": {"parameters": {"pg_stat_statements.track": "all"}}})
        );
        set_pair(
            &mut c,
            "postgresql.parameters.pg_stat_statements.track=null",
        )
        .unwrap();
        assert!(c.get("postgresql").is_none(), "{c}");
        assert!(set_pair(&mut c, "novalue").is_err());
    }

    #[test]
    fn diff_is_unified() {
        let d = unified_diff("a: 1\nb: 2\n", "a: 1\nb: 3\n");
        assert!(d.contains("-b: 2\n+b: 3\n"), "{d}");
        assert!(d.starts_with("--- \n+++ \n@@"), "{d}");
    }
}
