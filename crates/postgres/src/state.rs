//! The server state the HA loop and the REST API report, read over the local connection.

use serde::Serialize;
use tokio_postgres::Row;

use crate::error::{PgError, Result};
use crate::postgres::Postgres;

/// Timestamps are rendered like Python's `str(datetime)`, which Patroni's REST API shows.
const TS_FORMAT: &str = "YYYY-MM-DD HH24:MI:SS.USTZH:TZM";

/// One snapshot of the running server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PgState {
    pub in_recovery: bool,
    /// Primary: from the current WAL file; replica: the WAL receiver's timeline once it
    /// streamed, else the last checkpoint's.
    pub timeline: u64,
    /// Primary: `pg_current_wal_lsn()`; replica: max(received, replayed).
    pub wal_lsn: u64,
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    pub replayed_timestamp: Option<String>,
    pub replay_paused: bool,
    pub postmaster_start_time: String,
    /// `server_version_num`, e.g. 150018.
    pub server_version: u32,
    /// Some setting changed that only a restart applies.
    pub pending_restart: bool,
    pub synchronous_standby_names: String,
    pub synchronous_commit: String,
    /// `pg_stat_replication` (walsenders of this server), by application_name.
    pub replication: Vec<ReplicationRow>,
    pub wal_receiver: Option<WalReceiver>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationRow {
    pub pid: i32,
    pub usename: String,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sync_priority: i32,
    pub write_lsn: Option<u64>,
    pub flush_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalReceiver {
    pub status: String,
    pub sender_host: Option<String>,
    pub sender_port: Option<u16>,
    pub slot_name: Option<String>,
    pub received_tli: Option<u64>,
    /// The connection string in use (PostgreSQL masks the password).
    pub conninfo: Option<String>,
    /// Milliseconds since the receiver last got a message (WAL or keepalive) from its
    /// upstream: `clock_timestamp() - last_msg_receipt_time`.
    pub silent_ms: Option<u64>,
    /// `wal_receiver_timeout` in milliseconds (0 = disabled).
    pub timeout_ms: Option<u64>,
}

impl WalReceiver {
    /// The longest silence a live stream shows, for a receiver whose `wal_receiver_timeout`
    /// is `timeout_ms`: the receiver asks its upstream for a reply after `timeout/2` without a
    /// message (PostgreSQL's walreceiver.c, "ping the server"), and the reply arrives within
    /// a round trip; three quarters of the timeout leaves a quarter for scheduling and the
    /// round trip. PostgreSQL itself drops the connection at the full timeout. `None`: the
    /// timeout is disabled, nobody pings, and silence says nothing.
    pub fn silence_limit_ms(timeout_ms: u64) -> Option<u64> {
        (timeout_ms > 0).then(|| timeout_ms * 3 / 4)
    }

    /// Streaming right now: `status = 'streaming'` and a message from the upstream within
    /// [`silence_limit_ms`](Self::silence_limit_ms). A receiver whose upstream vanished
    /// without closing the TCP connection (a network partition) still says `streaming`
    /// until `wal_receiver_timeout` or the TCP keepalives end it; its silence tells first.
    pub fn is_streaming(&self) -> bool {
        let live = match (
            self.silent_ms,
            self.timeout_ms.and_then(Self::silence_limit_ms),
        ) {
            (Some(silent), Some(limit)) => silent <= limit,
            _ => true,
        };
        self.status == "streaming" && live
    }
}

fn lsn_expr(expr: &str) -> String {
    format!("pg_catalog.pg_wal_lsn_diff({expr}, '0/0')::bigint")
}

fn state_query() -> String {
    let recovery = "pg_catalog.pg_is_in_recovery()";
    format!(
        "SELECT {recovery}, \
         CASE WHEN {recovery} THEN NULL ELSE ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int::bigint END, \
         CASE WHEN {recovery} THEN NULL ELSE {current} END, \
         {received}, {replayed}, \
         pg_catalog.to_char(pg_catalog.pg_last_xact_replay_timestamp(), '{TS_FORMAT}'), \
         CASE WHEN {recovery} THEN pg_catalog.pg_is_wal_replay_paused() ELSE false END, \
         pg_catalog.to_char(pg_catalog.pg_postmaster_start_time(), '{TS_FORMAT}'), \
         pg_catalog.current_setting('server_version_num')::int, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_settings WHERE pending_restart), \
         (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())::bigint, \
         pg_catalog.current_setting('synchronous_standby_names'), \
         pg_catalog.current_setting('synchronous_commit')",
        current = lsn_expr("pg_catalog.pg_current_wal_lsn()"),
        received = lsn_expr("pg_catalog.pg_last_wal_receive_lsn()"),
        replayed = lsn_expr("pg_catalog.pg_last_wal_replay_lsn()"),
    )
}

fn replication_query() -> String {
    format!(
        "SELECT pid, usename::text, application_name, pg_catalog.host(client_addr), state, \
         sync_state, sync_priority, {}, {}, {} \
         FROM pg_catalog.pg_stat_replication ORDER BY application_name, pid",
        lsn_expr("write_lsn"),
        lsn_expr("flush_lsn"),
        lsn_expr("replay_lsn"),
    )
}

const WAL_RECEIVER_QUERY: &str = "SELECT status, sender_host, sender_port, slot_name, \
     received_tli::bigint, conninfo, latest_end_lsn IS NOT NULL, \
     (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - last_msg_receipt_time) \
       * 1000)::bigint, \
     (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_receiver_timeout') \
     FROM pg_catalog.pg_stat_wal_receiver";

fn lsn(row: &Row, idx: usize) -> Result<Option<u64>> {
    let v: Option<i64> = row.try_get(idx).map_err(PgError::sql("reading an LSN"))?;
    Ok(v.and_then(|v| u64::try_from(v).ok()))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(PgError::sql("reading the state query"))
}

impl Postgres {
    /// Reads the server state in three short queries over the cached local connection.
    pub async fn query_state(&self) -> Result<PgState> {
        let client = self.client().await?;
        let row = client
            .query_one(&state_query(), &[])
            .await
            .map_err(PgError::sql("state query"))?;
        let replication = client
            .query(&replication_query(), &[])
            .await
            .map_err(PgError::sql("pg_stat_replication query"))?
            .iter()
            .map(|r| {
                Ok(ReplicationRow {
                    pid: get(r, 0)?,
                    usename: get::<Option<String>>(r, 1)?.unwrap_or_default(),
                    application_name: get::<Option<String>>(r, 2)?.unwrap_or_default(),
                    client_addr: get(r, 3)?,
                    state: get::<Option<String>>(r, 4)?.unwrap_or_default(),
                    sync_state: get::<Option<String>>(r, 5)?.unwrap_or_default(),
                    sync_priority: get::<Option<i32>>(r, 6)?.unwrap_or(0),
                    write_lsn: lsn(r, 7)?,
                    flush_lsn: lsn(r, 8)?,
                    replay_lsn: lsn(r, 9)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let receiver_row = client
            .query_opt(WAL_RECEIVER_QUERY, &[])
            .await
            .map_err(PgError::sql("pg_stat_wal_receiver query"))?;
        drop(client);

        let mut receiver_streamed = false;
        let wal_receiver = match receiver_row {
            Some(r) => {
                receiver_streamed = get(&r, 6)?;
                Some(WalReceiver {
                    status: get::<Option<String>>(&r, 0)?.unwrap_or_default(),
                    sender_host: get(&r, 1)?,
                    sender_port: get::<Option<i32>>(&r, 2)?.and_then(|p| u16::try_from(p).ok()),
                    slot_name: get(&r, 3)?,
                    received_tli: get::<Option<i64>>(&r, 4)?.and_then(|t| u64::try_from(t).ok()),
                    conninfo: get(&r, 5)?,
                    silent_ms: get::<Option<i64>>(&r, 7)?.map(|ms| u64::try_from(ms).unwrap_or(0)),
                    timeout_ms: get::<Option<i64>>(&r, 8)?.and_then(|ms| u64::try_from(ms).ok()),
                })
            }
            None => None,
        };

        let in_recovery: bool = get(&row, 0)?;
        let received_lsn = lsn(&row, 3)?;
        let replayed_lsn = lsn(&row, 4)?;
        let checkpoint_tli = get::<Option<i64>>(&row, 10)?.and_then(|t| u64::try_from(t).ok());
        let (timeline, wal_lsn) = if in_recovery {
            let receiver_tli = wal_receiver
                .as_ref()
                .and_then(|w| w.received_tli)
                .filter(|_| receiver_streamed);
            (
                receiver_tli.or(checkpoint_tli).unwrap_or(0),
                received_lsn.unwrap_or(0).max(replayed_lsn.unwrap_or(0)),
            )
        } else {
            let tli = get::<Option<i64>>(&row, 1)?.and_then(|t| u64::try_from(t).ok());
            (
                tli.or(checkpoint_tli).unwrap_or(0),
                lsn(&row, 2)?.unwrap_or(0),
            )
        };
        let server_version: i32 = get(&row, 8)?;
        Ok(PgState {
            in_recovery,
            timeline,
            wal_lsn,
            received_lsn,
            replayed_lsn,
            replayed_timestamp: get(&row, 5)?,
            replay_paused: get(&row, 6)?,
            postmaster_start_time: get::<Option<String>>(&row, 7)?.unwrap_or_default(),
            server_version: u32::try_from(server_version).unwrap_or(0),
            pending_restart: get(&row, 9)?,
            synchronous_standby_names: get(&row, 11)?,
            synchronous_commit: get(&row, 12)?,
            replication,
            wal_receiver,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(status: &str, silent_ms: Option<u64>, timeout_ms: Option<u64>) -> WalReceiver {
        WalReceiver {
            status: status.into(),
            sender_host: None,
            sender_port: None,
            slot_name: None,
            received_tli: None,
            conninfo: None,
            silent_ms,
            timeout_ms,
        }
    }

    #[test]
    fn a_silent_stream_is_not_streaming() {
        // pgherd's default wal_receiver_timeout: 1.5 s, so silent for more than 1.125 s.
        assert!(receiver("streaming", Some(900), Some(1500)).is_streaming());
        assert!(receiver("streaming", Some(1125), Some(1500)).is_streaming());
        assert!(!receiver("streaming", Some(1126), Some(1500)).is_streaming());
        // PostgreSQL's default 60 s: 45 s.
        assert!(receiver("streaming", Some(30_000), Some(60_000)).is_streaming());
        assert!(!receiver("streaming", Some(46_000), Some(60_000)).is_streaming());
        // Timeout disabled (nobody pings) or unknown: the status alone.
        assert!(receiver("streaming", Some(600_000), Some(0)).is_streaming());
        assert!(receiver("streaming", None, None).is_streaming());
        assert!(!receiver("waiting", Some(0), Some(1500)).is_streaming());
    }
}
