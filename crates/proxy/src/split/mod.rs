//! The `role: auto` listener's read/write split: one port, each transaction routed to the
//! primary or a replica from its parsed SQL (Pgpool-II's load balancing, done conservatively).
//!
//! * [`classify`] turns SQL text into [`classify::StatementClass`]es: positively read-only,
//!   a transaction or session-state command, or something only the primary may run, with a
//!   [`reason::Reason`]. It is a whitelist (see its doc): what it does not recognise as
//!   read-only, including text the parser rejects, goes to the primary.
//! * [`functions`] holds the built-in read-only function list and the listener's
//!   `read_only_functions`.
//! * [`counters`] counts an auto listener's decisions by target and reason (stats page,
//!   `/metrics`).
//! * [`router`] is one client session's state machine (transactions, deferred `BEGIN`, pins,
//!   session settings to replay, read-your-writes). It performs no I/O and reads no clock, so
//!   every rule is unit-tested deterministically (`classify_tests.rs`, `router_tests.rs`).
//! * [`wire`] connects the router to the protocol: client messages, the extended-protocol
//!   batch that forms one routing unit, the read-your-writes check of a replica, and the
//!   bytes of the proxy's own answers.
//!
//! # Where it runs
//!
//! `crates/proxy/src/pool/client/auto.rs` drives one [`router::Router`] per client of a
//! transaction-pooled auto listener. There, the pool refuses what transaction pooling cannot
//! keep (temporary tables, `LISTEN`, SQL `PREPARE`, session advisory locks, `SET ROLE`:
//! `crates/proxy/src/pool/statements.rs`) before the router sees it, so the router's pins
//! are not exercised on that path yet. Session settings are the pool's job on every server
//! connection a session uses, replicas included (`crates/proxy/src/pool/settings.rs`): a
//! session `SET` runs on the primary (reason `session_state`), is read back from it, and is
//! replayed on the replica connection of the next read. The router follows the settings
//! for what they mean to routing (a read-only session default).
//!
//! `set_config(name, value, false)` inside a `SELECT` stays a function call: it pins the
//! session to the primary (the pool carries its effect across the primary's connections).
//! A setting made inside a function body is seen by neither.
//!
//! # Why `sqlparser` and not PostgreSQL's own grammar
//!
//! `pg_query` (libpg_query, PostgreSQL's parser) would be the most faithful, but building it
//! needs bindgen with libclang and prost-build: a plain `cargo build` on a machine with only a
//! Rust toolchain and a C compiler would fail. `sqlparser` (the DataFusion project's parser,
//! PostgreSQL dialect) is pure Rust. Its grammar is not PostgreSQL's in every corner
//! (`FOR NO KEY UPDATE`, `FOR KEY SHARE`, `TABLE t`, `BEGIN ... DEFERRABLE`,
//! `OPERATOR(schema.op)` are rejected today); because the classification is a whitelist, such
//! gaps cost replica traffic, never correctness: rejected text goes to the primary.
//!
//! # What the classifier cannot see
//!
//! A view or a rule whose definition calls a writing function looks like a plain read; so
//! does a built-in name shadowed by a user function earlier in `search_path` than
//! `pg_catalog`. Both are unusual; the first is the same limit Pgpool-II documents. A
//! `READ ONLY` transaction runs on a replica, where PostgreSQL refuses a few things a
//! read-only transaction on the primary allows (temporary tables, `txid_current()`): the
//! client then gets the replica's error.

pub mod classify;
pub mod counters;
pub mod functions;
pub mod reason;
pub mod router;
pub mod wire;

#[cfg(test)]
mod classify_tests;
#[cfg(test)]
mod router_tests;

use crate::config::SplitConfig;
use std::sync::Arc;

/// What every session of one auto listener shares.
#[derive(Debug)]
pub struct SplitCtx {
    pub classifier: Arc<classify::Classifier>,
    pub router: router::RouterConfig,
    pub counters: Arc<counters::RoutingCounters>,
}

impl SplitCtx {
    pub fn new(cfg: &SplitConfig) -> SplitCtx {
        SplitCtx {
            classifier: Arc::new(classify::Classifier::new(functions::FunctionPolicy::new(
                cfg.read_only_functions.iter().cloned(),
            ))),
            router: cfg.router.clone(),
            counters: Arc::default(),
        }
    }

    /// A router for one client session.
    pub fn session(&self) -> router::Router {
        router::Router::new(self.router.clone(), self.classifier.clone())
    }
}
