//! A client that writes unique ids, one new connection per write (what an application
//! without a pool does), and records which writes were acknowledged, refused or left
//! indeterminate. Afterwards, [`WriterReport::missing_in`] tells which acknowledged ids a
//! server does not have.

use crate::cluster::SUPERUSER_PASSWORD;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Each write: connect, `INSERT`, disconnect, all within this deadline.
const WRITE_DEADLINE: Duration = Duration::from_secs(1);

/// What the writer saw so far.
#[derive(Debug, Clone, Default)]
pub struct WriterReport {
    /// Ids whose `INSERT` returned success.
    pub acked: BTreeSet<i64>,
    /// Ids whose connection or statement failed before anything was sent.
    pub refused: u64,
    /// Ids whose outcome is unknown (sent, no answer before the deadline or the connection
    /// broke): they may or may not be there.
    pub indeterminate: BTreeSet<i64>,
    /// The longest time between two acknowledged writes, and when it ended (wall clock).
    pub max_gap: Duration,
    pub max_gap_ended: Option<std::time::SystemTime>,
    /// When each acknowledged id was acknowledged, in order.
    pub ack_times: Vec<(Instant, i64)>,
    /// When each refused write was refused, in order.
    pub refused_times: Vec<Instant>,
}

impl WriterReport {
    /// Acknowledged ids absent from `present`.
    pub fn missing_in(&self, present: &BTreeSet<i64>) -> Vec<i64> {
        self.acked.difference(present).copied().collect()
    }
}

/// Writes `insert into <table>(id) values (<n>)` every `every` through `port` until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<WriterReport>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// `table` must exist with an integer `id` column.
    pub fn start(port: u16, table: &str, every: Duration) -> Result<Writer> {
        Writer::start_at(Target::loopback(port), table, every)
    }

    /// [`Writer::start`] against any server, with its own range of ids.
    pub fn start_at(target: Target, table: &str, every: Duration) -> Result<Writer> {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(WriterReport::default()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("writer runtime")?;
        let (s, r, table) = (stop.clone(), report.clone(), table.to_string());
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || runtime.block_on(write_loop(target, table, every, s, r)))
            .context("writer thread")?;
        Ok(Writer {
            stop,
            report,
            thread: Some(thread),
        })
    }

    /// What was seen so far (the writer keeps going).
    pub fn report(&self) -> WriterReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops and returns the final report.
    pub fn stop(mut self) -> WriterReport {
        self.halt();
        self.report()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.halt();
    }
}

enum Outcome {
    Acked,
    Refused,
    Indeterminate,
}

/// Where a [`Writer`] writes, and the first id it writes.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub first_id: i64,
}

impl Target {
    pub fn loopback(port: u16) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port,
            first_id: 1,
        }
    }
}

async fn write_loop(
    target: Target,
    table: String,
    every: Duration,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<WriterReport>>,
) {
    let mut next_id: i64 = target.first_id;
    let mut last_ack = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let id = next_id;
        next_id += 1;
        let outcome = tokio::time::timeout(WRITE_DEADLINE, write_one(&target, &table, id))
            .await
            .unwrap_or(Outcome::Indeterminate);
        {
            let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
            match outcome {
                Outcome::Acked => {
                    let now = Instant::now();
                    if now - last_ack > r.max_gap {
                        r.max_gap = now - last_ack;
                        r.max_gap_ended = Some(std::time::SystemTime::now());
                    }
                    last_ack = now;
                    r.acked.insert(id);
                    r.ack_times.push((now, id));
                }
                Outcome::Refused => {
                    r.refused += 1;
                    r.refused_times.push(Instant::now());
                }
                Outcome::Indeterminate => {
                    r.indeterminate.insert(id);
                }
            }
        }
        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
    }
}

async fn write_one(target: &Target, table: &str, id: i64) -> Outcome {
    let Target { host, port, .. } = target;
    let config = format!(
        "host={host} port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=1"
    );
    let Ok((client, connection)) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await
    else {
        return Outcome::Refused;
    };
    let driver = tokio::spawn(connection);
    let result = client
        .simple_query(&format!("insert into {table}(id) values ({id})"))
        .await;
    drop(client);
    let _ = driver.await;
    match result {
        Ok(_) => Outcome::Acked,
        // The statement may have committed before the connection broke.
        Err(e) if e.is_closed() || e.as_db_error().is_none() => Outcome::Indeterminate,
        // Refused by the server (read-only, shutting down): not committed.
        Err(_) => Outcome::Refused,
    }
}
