//! The PostgreSQL server parameters pgherd runs with: defaults, then the DCS, then the local
//! file, with the postmaster command-line parameters guarded as Patroni guards them.

use crate::reader::parse_bool;
use crate::units::parse_size;
use crate::{Config, DynamicConfig};
use std::collections::BTreeMap;

/// A parameter Patroni passes on the postmaster command line: taken from the DCS only, and
/// only when `valid`; otherwise `default`.
struct CmdlineParameter {
    name: &'static str,
    default: &'static str,
    valid: fn(&str) -> bool,
}

fn int_at_least(value: &str, min: i64) -> bool {
    value.trim().parse::<i64>().is_ok_and(|v| v >= min)
}

/// PostgreSQL's unit for `wal_keep_size` is MB.
fn megabytes(value: &str) -> Option<u64> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(mb) => Some(mb),
        Err(_) => parse_size(value).ok().map(|bytes| bytes >> 20),
    }
}

const CMDLINE: [CmdlineParameter; 8] = [
    CmdlineParameter {
        name: "max_connections",
        default: "100",
        valid: |v| int_at_least(v, 25),
    },
    CmdlineParameter {
        name: "max_wal_senders",
        default: "10",
        valid: |v| int_at_least(v, 3),
    },
    CmdlineParameter {
        name: "max_prepared_transactions",
        default: "0",
        valid: |v| int_at_least(v, 0),
    },
    CmdlineParameter {
        name: "max_locks_per_transaction",
        default: "64",
        valid: |v| int_at_least(v, 32),
    },
    CmdlineParameter {
        name: "max_replication_slots",
        default: "10",
        valid: |v| int_at_least(v, 4),
    },
    CmdlineParameter {
        name: "max_worker_processes",
        default: "8",
        valid: |v| int_at_least(v, 2),
    },
    CmdlineParameter {
        name: "wal_level",
        default: "replica",
        valid: |v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "hot_standby" | "replica" | "logical"
            )
        },
    },
    CmdlineParameter {
        name: "track_commit_timestamp",
        default: "off",
        valid: |v| parse_bool(v).is_some(),
    },
];

/// Parameters only pgherd decides (never taken from the DCS or the file).
const FORCED: [&str; 5] = [
    "hot_standby",
    "wal_log_hints",
    "listen_addresses",
    "port",
    "cluster_name",
];

/// pgherd's defaults for parameters Patroni leaves at PostgreSQL's (both overridable in the
/// DCS or the local file), so a replica cut off from its upstream is noticed, and streams
/// again, within seconds (docs/compat.md#health-endpoints):
/// - `wal_receiver_timeout` (PostgreSQL: 60s): the WAL receiver pings its upstream after
///   half of it without a message and gives up after all of it; the REST API calls a replica
///   silent for three quarters of it not streaming (`pgherd_postgres::WalReceiver`);
/// - `wal_retrieve_retry_interval` (PostgreSQL: 5s): the pause between two attempts to
///   stream, each bounded by the `connect_timeout` pgherd puts in `primary_conninfo`;
/// - `wal_sender_timeout` (PostgreSQL: 60s): the primary's WAL sender for a replica behind a
///   partition holds that replica's replication slot until it gives up, so after the heal
///   the replica's new connection was refused ("replication slot is active for PID ...")
///   until TCP retransmission, backing off, reached the replica again (seconds to tens of
///   seconds). A live replica replies at least every `wal_receiver_timeout`/2 (its pings),
///   and the primary asks for a reply after half of this timeout without one.
const PGHERD_DEFAULTS: [(&str, &str); 3] = [
    ("wal_receiver_timeout", "1500ms"),
    ("wal_retrieve_retry_interval", "1s"),
    ("wal_sender_timeout", "3s"),
];

const WAL_KEEP_SIZE_DEFAULT_MB: u64 = 128;
const WAL_KEEP_SEGMENTS_DEFAULT: u64 = 8;
/// Patroni converts between the two assuming 16 MB WAL segments.
const WAL_SEGMENT_MB: u64 = 16;

/// The server parameters for `major_version` (e.g. 15; `150004`-style numbers are accepted):
/// - start from the postmaster command-line defaults;
/// - DCS `postgresql.parameters` next: command-line ones only when valid
///   (`max_connections` >= 25, `max_wal_senders` >= 3, `max_prepared_transactions` >= 0,
///   `max_locks_per_transaction` >= 32, `max_replication_slots` >= 4,
///   `max_worker_processes` >= 2, `wal_level` hot_standby/replica/logical,
///   `track_commit_timestamp` boolean, `wal_keep_size` >= 16MB / `wal_keep_segments` >= 1);
/// - local `postgresql.parameters` last, except the command-line ones;
/// - always `hot_standby=on`, `wal_log_hints=on`, `listen_addresses`/`port` from
///   `postgresql.listen`, `cluster_name=<scope>`.
///
/// `wal_keep_size` (PostgreSQL 13+) and `wal_keep_segments` (older) are converted into each
/// other at 16 MB per segment. Names compare case-insensitively; per-version validation of
/// other parameters is left to the caller, which knows the server's GUCs.
pub fn effective_parameters(
    local: &Config,
    dynamic: &DynamicConfig,
    major_version: u32,
) -> BTreeMap<String, String> {
    let major = if major_version >= 1000 {
        major_version / 10_000
    } else {
        major_version
    };
    let mut out = BTreeMap::new();
    for p in &CMDLINE {
        out.insert(p.name.to_string(), p.default.to_string());
    }
    for (name, value) in PGHERD_DEFAULTS {
        out.insert(name.to_string(), value.to_string());
    }
    let mut wal_keep_size_mb = None;
    let mut wal_keep_segments = None;
    for (name, value) in &dynamic.postgresql.parameters {
        let lower = name.to_ascii_lowercase();
        if let Some(p) = CMDLINE.iter().find(|p| p.name == lower) {
            if (p.valid)(value) {
                out.insert(lower, value.clone());
            }
        } else if lower == "wal_keep_size" {
            wal_keep_size_mb = megabytes(value).filter(|mb| *mb >= 16);
        } else if lower == "wal_keep_segments" {
            wal_keep_segments = value.trim().parse::<u64>().ok().filter(|s| *s >= 1);
        } else if !FORCED.contains(&lower.as_str()) {
            insert_ci(&mut out, name, value);
        }
    }
    for (name, value) in &local.postgresql.parameters {
        let lower = name.to_ascii_lowercase();
        let cmdline = CMDLINE.iter().any(|p| p.name == lower)
            || matches!(lower.as_str(), "wal_keep_size" | "wal_keep_segments");
        if !cmdline && !FORCED.contains(&lower.as_str()) {
            insert_ci(&mut out, name, value);
        }
    }

    if major >= 13 {
        let mb = wal_keep_size_mb
            .or(wal_keep_segments.map(|s| s * WAL_SEGMENT_MB))
            .unwrap_or(WAL_KEEP_SIZE_DEFAULT_MB);
        out.insert("wal_keep_size".to_string(), format!("{mb}MB"));
    } else {
        let segments = wal_keep_segments
            .or(wal_keep_size_mb.map(|mb| (mb + WAL_SEGMENT_MB / 2) / WAL_SEGMENT_MB))
            .unwrap_or(WAL_KEEP_SEGMENTS_DEFAULT);
        out.insert("wal_keep_segments".to_string(), segments.to_string());
    }
    // PostgreSQL 9.6 renamed hot_standby to replica; pgherd supports 13+ only.
    if out
        .get("wal_level")
        .is_some_and(|l| l.eq_ignore_ascii_case("hot_standby"))
    {
        out.insert("wal_level".to_string(), "replica".to_string());
    }
    out.insert("hot_standby".to_string(), "on".to_string());
    out.insert("wal_log_hints".to_string(), "on".to_string());
    if let Some(listen) = &local.postgresql.listen {
        out.insert("listen_addresses".to_string(), listen.hosts.join(","));
        out.insert("port".to_string(), listen.port.to_string());
    }
    out.insert("cluster_name".to_string(), local.scope.clone());
    out
}

/// Inserts replacing any existing spelling of the same name (GUC names ignore case).
fn insert_ci(map: &mut BTreeMap<String, String>, name: &str, value: &str) {
    map.retain(|k, _| !k.eq_ignore_ascii_case(name));
    map.insert(name.to_string(), value.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;
    use serde_json::json;

    fn config(parameters: &str) -> Config {
        let yaml = format!(
            "scope: batman\npostgresql:\n  listen: 127.0.0.1,10.0.0.5:5433\n  parameters:\n{parameters}"
        );
        load_str(&yaml, "node1.yml", &BTreeMap::new())
            .unwrap()
            .config
    }

    fn dynamic(parameters: serde_json::Value) -> DynamicConfig {
        DynamicConfig::from_value(&json!({"postgresql": {"parameters": parameters}})).0
    }

    #[test]
    fn defaults_and_forced() {
        let p = effective_parameters(&config("    {}\n"), &DynamicConfig::default(), 15);
        let expected: BTreeMap<String, String> = [
            ("cluster_name", "batman"),
            ("hot_standby", "on"),
            ("listen_addresses", "127.0.0.1,10.0.0.5"),
            ("max_connections", "100"),
            ("max_locks_per_transaction", "64"),
            ("max_prepared_transactions", "0"),
            ("max_replication_slots", "10"),
            ("max_wal_senders", "10"),
            ("max_worker_processes", "8"),
            ("port", "5433"),
            ("track_commit_timestamp", "off"),
            ("wal_keep_size", "128MB"),
            ("wal_level", "replica"),
            ("wal_log_hints", "on"),
            ("wal_receiver_timeout", "1500ms"),
            ("wal_retrieve_retry_interval", "1s"),
            ("wal_sender_timeout", "3s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(p, expected);
    }

    #[test]
    fn dcs_then_local_with_cmdline_guard() {
        let local = config(
            "    max_connections: 500\n    work_mem: 8MB\n    Shared_Buffers: 1GB\n    port: 1\n    wal_keep_size: 1GB\n",
        );
        let dcs = dynamic(json!({
            "max_connections": 200, "max_wal_senders": 2, "max_locks_per_transaction": "abc",
            "wal_level": "hot_standby", "track_commit_timestamp": "on", "max_worker_processes": 16,
            "shared_buffers": "256MB", "work_mem": "4MB", "hot_standby": "off", "wal_log_hints": "off",
            "listen_addresses": "*", "cluster_name": "x", "pg_stat_statements.track": "all",
            "max_prepared_transactions": -1, "max_replication_slots": 20
        }));
        let p = effective_parameters(&local, &dcs, 16);
        assert_eq!(
            p["max_connections"], "200",
            "local cannot change a command-line parameter"
        );
        assert_eq!(p["max_wal_senders"], "10", "below the minimum: default");
        assert_eq!(p["max_locks_per_transaction"], "64", "invalid: default");
        assert_eq!(p["max_prepared_transactions"], "0");
        assert_eq!(p["max_replication_slots"], "20");
        assert_eq!(p["max_worker_processes"], "16");
        assert_eq!(p["wal_level"], "replica");
        assert_eq!(p["track_commit_timestamp"], "on");
        assert_eq!(p["work_mem"], "8MB", "local overrides DCS");
        assert_eq!(p["Shared_Buffers"], "1GB");
        assert!(
            !p.contains_key("shared_buffers"),
            "case-insensitive override"
        );
        assert_eq!(p["pg_stat_statements.track"], "all");
        assert_eq!(p["hot_standby"], "on");
        assert_eq!(p["wal_log_hints"], "on");
        assert_eq!(p["listen_addresses"], "127.0.0.1,10.0.0.5");
        assert_eq!(p["port"], "5433");
        assert_eq!(p["cluster_name"], "batman");
        assert_eq!(p["wal_keep_size"], "128MB", "local wal_keep_size ignored");
    }

    #[test]
    fn wal_keep_conversions() {
        let local = config("    {}\n");
        let p = effective_parameters(&local, &dynamic(json!({"wal_keep_segments": 8})), 15);
        assert_eq!(p["wal_keep_size"], "128MB");
        assert!(!p.contains_key("wal_keep_segments"));
        let p = effective_parameters(&local, &dynamic(json!({"wal_keep_segments": 100})), 150004);
        assert_eq!(p["wal_keep_size"], "1600MB");
        let p = effective_parameters(&local, &dynamic(json!({"wal_keep_size": "1GB"})), 13);
        assert_eq!(p["wal_keep_size"], "1024MB");
        let p = effective_parameters(&local, &dynamic(json!({"wal_keep_size": "8MB"})), 13);
        assert_eq!(p["wal_keep_size"], "128MB", "below 16MB: default");
        let p = effective_parameters(&local, &dynamic(json!({"wal_keep_size": 256})), 12);
        assert_eq!(p["wal_keep_segments"], "16");
        let p = effective_parameters(&local, &dynamic(json!({})), 12);
        assert_eq!(p["wal_keep_segments"], "8");
    }
}
