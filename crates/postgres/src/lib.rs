//! PostgreSQL control: initdb, pg_ctl, pg_basebackup, pg_rewind, config files, state queries.
//!
//! This crate executes and never decides: the HA engine decides what to do, the agent
//! calls [`Postgres`] to do it. It does not read the YAML configuration; the agent maps it
//! into [`PgOptions`].
//!
//! Settings such as `synchronous_standby_names` are not changed with `ALTER SYSTEM`: like
//! Patroni, the caller puts them into the parameters of [`Postgres::write_config`] and then
//! calls [`Postgres::reload`].
//!
//! When the agent runs as root, every PostgreSQL program runs as the `run_as` OS user
//! (default `postgres`), and the directories and files PostgreSQL needs belong to it.

mod basebackup;
mod binaries;
mod callback;
mod command;
mod conf;
mod conninfo;
mod controldata;
mod datadir;
mod error;
mod files;
mod fsutil;
mod history;
mod initdb;
mod lsn;
mod manage;
mod options;
mod pgpass;
mod post_bootstrap;
mod postgres;
mod postmaster;
mod rewind;
mod runas;
mod server;
mod sql;
mod state;

pub use binaries::{binaries_major_version, default_bin_dir, NEWEST_KNOWN_MAJOR};
pub use callback::CallbackAction;
pub use conf::{quote_conf_value, RecoveryConf};
pub use conninfo::{conninfo, quote_conninfo_value, Upstream};
pub use controldata::{parse_controldata, ClusterState, ControlData};
pub use datadir::{AllowRemoval, DataDirState, RemovalMode};
pub use error::{PgError, Result};
pub use history::{history_file_name, parse_history, HistoryEntry, TimelineHistory};
pub use lsn::{format_lsn, parse_lsn};
pub use manage::{CopiedSlot, LogicalSlot, SlotDrop, SlotInfo};
pub use options::{CliOption, Credentials, PgOptions, StopMode};
pub use pgpass::PgpassEntry;
pub use post_bootstrap::post_bootstrap_dsn;
pub use postgres::Postgres;
pub use postmaster::{PostmasterInfo, PostmasterStatus};
pub use server::StopOutcome;
pub use sql::{quote_ident, quote_literal};
pub use state::{PgState, ReplicationRow, WalReceiver};
