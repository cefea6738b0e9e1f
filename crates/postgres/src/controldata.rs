//! `pg_controldata` output: the cluster state PostgreSQL recorded in `global/pg_control`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::lsn::parse_lsn;

/// `Database cluster state` as printed by pg_controldata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ClusterState {
    StartingUp,
    ShutDown,
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    InProduction,
    Other(String),
}

impl ClusterState {
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "starting up" => ClusterState::StartingUp,
            "shut down" => ClusterState::ShutDown,
            "shut down in recovery" => ClusterState::ShutDownInRecovery,
            "shutting down" => ClusterState::ShuttingDown,
            "in crash recovery" => ClusterState::InCrashRecovery,
            "in archive recovery" => ClusterState::InArchiveRecovery,
            "in production" => ClusterState::InProduction,
            other => ClusterState::Other(other.to_string()),
        }
    }

    /// Cleanly shut down (as primary or as replica): pg_rewind and a plain start are safe.
    pub fn is_clean_shutdown(&self) -> bool {
        matches!(
            self,
            ClusterState::ShutDown | ClusterState::ShutDownInRecovery
        )
    }
}

/// The fields of pg_controldata the HA logic uses, plus everything else in `raw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlData {
    /// Decimal string, as Patroni stores it in the DCS `initialize` key.
    pub system_identifier: String,
    pub state: ClusterState,
    pub checkpoint_lsn: u64,
    pub redo_lsn: u64,
    /// `Latest checkpoint's TimeLineID`.
    pub timeline: u64,
    pub prev_timeline: u64,
    pub min_recovery_lsn: u64,
    pub min_recovery_timeline: u64,
    pub data_checksum_version: u32,
    pub wal_log_hints: bool,
    /// Every `key: value` line (keys without the `Current ` prefix of old versions).
    pub raw: BTreeMap<String, String>,
}

impl ControlData {
    /// pg_rewind works only with wal_log_hints or data checksums.
    pub fn allows_rewind(&self) -> bool {
        self.wal_log_hints || self.data_checksum_version != 0
    }
}

/// Parses `LC_ALL=C pg_controldata` output.
pub fn parse_controldata(text: &str) -> Result<ControlData, String> {
    let raw: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| {
            let k = k.trim();
            let k = k.strip_prefix("Current ").unwrap_or(k);
            (k.to_string(), v.trim().to_string())
        })
        .collect();
    let get = |key: &str| {
        raw.get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing '{key}'"))
    };
    let lsn = |key: &str| {
        get(key).and_then(|v| parse_lsn(v).ok_or_else(|| format!("bad LSN in '{key}': {v}")))
    };
    let int = |key: &str| {
        get(key).and_then(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("bad number in '{key}': {v}"))
        })
    };

    let system_identifier = get("Database system identifier")?;
    if system_identifier.is_empty() || !system_identifier.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad system identifier: {system_identifier}"));
    }
    Ok(ControlData {
        system_identifier: system_identifier.to_string(),
        state: ClusterState::parse(get("Database cluster state")?),
        checkpoint_lsn: lsn("Latest checkpoint location")?,
        redo_lsn: lsn("Latest checkpoint's REDO location")?,
        timeline: int("Latest checkpoint's TimeLineID")?,
        prev_timeline: int("Latest checkpoint's PrevTimeLineID")?,
        min_recovery_lsn: lsn("Minimum recovery ending location")?,
        min_recovery_timeline: int("Min recovery ending loc's timeline")?,
        data_checksum_version: int("Data page checksum version")?
            .try_into()
            .map_err(|_| "bad data page checksum version".to_string())?,
        wal_log_hints: get("wal_log_hints setting")? == "on",
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../tests/data/controldata_primary.txt");

    #[test]
    fn parses_captured_pg15_output() {
        let cd = parse_controldata(SAMPLE).unwrap();
        assert_eq!(cd.system_identifier, "7711379930334143482");
        assert_eq!(cd.state, ClusterState::ShutDown);
        assert!(cd.state.is_clean_shutdown());
        assert_eq!(cd.checkpoint_lsn, 0x1500710);
        assert_eq!(cd.redo_lsn, 0x1500710);
        assert_eq!(cd.timeline, 1);
        assert_eq!(cd.prev_timeline, 1);
        assert_eq!(cd.min_recovery_lsn, 0);
        assert_eq!(cd.min_recovery_timeline, 0);
        assert_eq!(cd.data_checksum_version, 0);
        assert!(!cd.wal_log_hints);
        assert!(!cd.allows_rewind());
        assert_eq!(cd.raw["Bytes per WAL segment"], "16777216");
        assert_eq!(cd.raw["Latest checkpoint's oldestCommitTsXid"], "0");
    }

    #[test]
    fn parses_replica_states_and_old_prefixes() {
        let text = SAMPLE
            .replace("shut down\n", "in archive recovery\n")
            .replace(
                "Minimum recovery ending location:     0/0",
                "Minimum recovery ending location:     0/3000148",
            )
            .replace(
                "Min recovery ending loc's timeline:   0",
                "Min recovery ending loc's timeline:   2",
            )
            .replace(
                "wal_log_hints setting:                off",
                "Current wal_log_hints setting:        on",
            );
        let cd = parse_controldata(&text).unwrap();
        assert_eq!(cd.state, ClusterState::InArchiveRecovery);
        assert!(!cd.state.is_clean_shutdown());
        assert_eq!(cd.min_recovery_lsn, 0x3000148);
        assert_eq!(cd.min_recovery_timeline, 2);
        assert!(cd.wal_log_hints && cd.allows_rewind());
    }

    #[test]
    fn state_strings() {
        for (s, st) in [
            ("starting up", ClusterState::StartingUp),
            ("shut down in recovery", ClusterState::ShutDownInRecovery),
            ("shutting down", ClusterState::ShuttingDown),
            ("in crash recovery", ClusterState::InCrashRecovery),
            ("in production", ClusterState::InProduction),
        ] {
            assert_eq!(ClusterState::parse(s), st);
        }
        assert_eq!(
            ClusterState::parse("weird"),
            ClusterState::Other("weird".into())
        );
    }

    #[test]
    fn rejects_incomplete_output() {
        assert!(parse_controldata("").is_err());
        let err = parse_controldata(
            &SAMPLE.replace("Latest checkpoint location:           0/1500710\n", ""),
        )
        .unwrap_err();
        assert!(err.contains("Latest checkpoint location"), "{err}");
        assert!(parse_controldata(&SAMPLE.replace("7711379930334143482", "abc")).is_err());
    }
}
