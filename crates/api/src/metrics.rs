//! `GET /metrics` (docs/compat.md#metrics): Patroni's metric names, help texts and types,
//! written by hand because a Prometheus library would rename Patroni's counters (`_total`
//! suffix) and dashboards built for Patroni look the series up by name.

use crate::snapshot::{NodeSnapshot, Xlog};
use crate::status::{StatusBody, XlogBody};
use crate::PATRONI_COMPAT_VERSION;
use chrono::{DateTime, FixedOffset};
use std::fmt::Write;

/// The exposition; `body` is the status body of the same request.
pub(crate) fn render(body: &StatusBody<'_>, snap: &NodeSnapshot) -> String {
    let role = body.role;
    let is_primary = matches!(role, "master" | "primary");
    let (location, received, replayed, replayed_timestamp, xlog_paused) = match &body.xlog {
        Some(XlogBody::Primary { location }) => (*location, 0, 0, None, false),
        Some(XlogBody::Replica {
            received_location,
            replayed_location,
            paused,
            ..
        }) => {
            // The body holds the timestamp as text; the metric needs the typed value.
            let timestamp = snap.postgres.as_ref().and_then(|pg| match &pg.xlog {
                Xlog::Replica {
                    replayed_timestamp, ..
                } => replayed_timestamp.as_ref(),
                Xlog::Primary { .. } => None,
            });
            (
                0,
                *received_location,
                *replayed_location,
                timestamp,
                *paused,
            )
        }
        None => (0, 0, 0, None, false),
    };
    let start_time = snap.postgres.as_ref().map(|pg| &pg.postmaster_start_time);

    let mut out = Exposition::new(&snap.scope);
    out.metric(
        "patroni_version",
        "Patroni semver without periods.",
        "gauge",
        &padded_version(PATRONI_COMPAT_VERSION),
    );
    out.flag(
        "patroni_postgres_running",
        "Value is 1 if Postgres is running, 0 otherwise.",
        body.state == "running",
    );
    out.metric(
        "patroni_postmaster_start_time",
        "Epoch seconds since Postgres started.",
        "gauge",
        &epoch_seconds(start_time),
    );
    out.flag(
        "patroni_master",
        "Value is 1 if this node is the leader, 0 otherwise.",
        is_primary,
    );
    out.flag(
        "patroni_primary",
        "Value is 1 if this node is the leader, 0 otherwise.",
        is_primary,
    );
    out.metric(
        "patroni_xlog_location",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        "counter",
        &location.to_string(),
    );
    out.flag(
        "patroni_standby_leader",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        role == "standby_leader",
    );
    out.flag(
        "patroni_replica",
        "Value is 1 if this node is a replica, 0 otherwise.",
        role == "replica",
    );
    out.flag(
        "patroni_sync_standby",
        "Value is 1 if this node is a sync standby replica, 0 otherwise.",
        body.sync_standby,
    );
    out.metric(
        "patroni_xlog_received_location",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        "counter",
        &received.to_string(),
    );
    out.metric(
        "patroni_xlog_replayed_location",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        "counter",
        &replayed.to_string(),
    );
    out.metric(
        "patroni_xlog_replayed_timestamp",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        "gauge",
        &epoch_seconds(replayed_timestamp),
    );
    out.flag(
        "patroni_xlog_paused",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        xlog_paused,
    );
    // Patroni 3.0.2 writes a stray space before the labels here; the standard form parses to
    // the same series.
    out.metric(
        "patroni_postgres_server_version",
        "Version of Postgres (if running), 0 otherwise.",
        "gauge",
        &body.server_version.unwrap_or(0).to_string(),
    );
    out.flag(
        "patroni_cluster_unlocked",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        body.cluster_unlocked,
    );
    out.flag(
        "patroni_failsafe_mode_is_active",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        body.failsafe_mode_is_active,
    );
    out.metric(
        "patroni_postgres_timeline",
        "Postgres timeline of this node (if running), 0 otherwise.",
        "counter",
        &body.timeline.flatten().unwrap_or(0).to_string(),
    );
    out.metric(
        "patroni_dcs_last_seen",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        "gauge",
        &body.dcs_last_seen.to_string(),
    );
    out.flag(
        "patroni_pending_restart",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        snap.pending_restart,
    );
    out.flag(
        "patroni_is_paused",
        "Value is 1 if auto failover is disabled, 0 otherwise.",
        snap.paused,
    );
    out.text
}

struct Exposition {
    label: String,
    text: String,
}

impl Exposition {
    fn new(scope: &str) -> Exposition {
        Exposition {
            label: format!("{{scope=\"{}\"}}", escape_label(scope)),
            text: String::with_capacity(4096),
        }
    }

    fn metric(&mut self, name: &str, help: &str, kind: &str, value: &str) {
        // Writing into a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        let _ = writeln!(self.text, "{name}{} {value}", self.label);
    }

    fn flag(&mut self, name: &str, help: &str, value: bool) {
        self.metric(name, help, "gauge", if value { "1" } else { "0" });
    }
}

/// `3.0.2` -> `030002`, as Patroni writes it (each part zero-padded to two digits).
fn padded_version(version: &str) -> String {
    version
        .split('.')
        .map(|part| format!("{part:0>2}"))
        .collect()
}

/// Seconds since the epoch with microseconds, printed like a Python float (`0` when unknown).
fn epoch_seconds(ts: Option<&DateTime<FixedOffset>>) -> String {
    let Some(ts) = ts else {
        return "0".to_string();
    };
    let seconds = ts.timestamp_micros() as f64 / 1e6;
    if seconds.fract() == 0.0 {
        format!("{seconds:.1}")
    } else {
        format!("{seconds}")
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(padded_version("3.0.2"), "030002");
        assert_eq!(padded_version("3.10.12"), "031012");
        let ts = DateTime::parse_from_rfc3339("2026-11-23T12:02:38.910808+00:00").unwrap();
        assert_eq!(epoch_seconds(Some(&ts)), "1795435358.910808");
        let ts = DateTime::parse_from_rfc3339("2026-11-23T12:02:38+00:00").unwrap();
        assert_eq!(epoch_seconds(Some(&ts)), "1795435358.0");
        assert_eq!(epoch_seconds(None), "0");
        assert_eq!(escape_label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
