//! Options of PostgreSQL control. The agent maps its configuration into these; this crate
//! never reads the YAML configuration itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{PgError, Result};

/// Credentials of one database role plus the libpq TLS/GSS settings used with it
/// (Patroni's `postgresql.authentication.<user>`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub username: String,
    pub password: Option<String>,
    pub sslmode: Option<String>,
    pub sslkey: Option<String>,
    pub sslpassword: Option<String>,
    pub sslcert: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcrl: Option<String>,
    pub sslcrldir: Option<String>,
    pub gssencmode: Option<String>,
    pub channel_binding: Option<String>,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: Option<&str>) -> Self {
        Credentials {
            username: username.into(),
            password: password.map(str::to_string),
            ..Credentials::default()
        }
    }

    /// libpq keywords other than user/password, in a stable order.
    pub(crate) fn libpq_settings(&self) -> [(&'static str, Option<&str>); 9] {
        [
            ("sslmode", self.sslmode.as_deref()),
            ("sslkey", self.sslkey.as_deref()),
            ("sslpassword", self.sslpassword.as_deref()),
            ("sslcert", self.sslcert.as_deref()),
            ("sslrootcert", self.sslrootcert.as_deref()),
            ("sslcrl", self.sslcrl.as_deref()),
            ("sslcrldir", self.sslcrldir.as_deref()),
            ("gssencmode", self.gssencmode.as_deref()),
            ("channel_binding", self.channel_binding.as_deref()),
        ]
    }
}

// Passwords must never reach logs, so Debug is written by hand.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

/// How `pg_ctl stop` shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Smart,
    Fast,
    Immediate,
}

impl StopMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A long option of initdb / pg_basebackup as written in Patroni's configuration:
/// `data-checksums` -> `--data-checksums`, `encoding: UTF8` -> `--encoding=UTF8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliOption {
    Flag(String),
    Value(String, String),
}

impl CliOption {
    pub fn name(&self) -> &str {
        match self {
            CliOption::Flag(name) | CliOption::Value(name, _) => name,
        }
    }

    pub(crate) fn render(&self) -> String {
        match self {
            CliOption::Flag(name) => format!("--{name}"),
            CliOption::Value(name, value) => format!("--{name}={value}"),
        }
    }

    /// Rejects options this crate sets itself (or that would break it), like Patroni does.
    pub(crate) fn check(&self, tool: &'static str, forbidden: &[&str]) -> Result<()> {
        let name = self.name();
        if name.is_empty() || name.starts_with('-') || name.contains(char::is_whitespace) {
            return Err(PgError::InvalidOption {
                tool,
                option: name.to_string(),
                reason: "expected a long option name without leading dashes",
            });
        }
        if forbidden.contains(&name) {
            return Err(PgError::InvalidOption {
                tool,
                option: name.to_string(),
                reason: "pgherd sets it itself",
            });
        }
        Ok(())
    }
}

/// Everything PostgreSQL control needs to know about the local server.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Directory holding initdb, pg_ctl, postgres, pg_basebackup, pg_rewind, pg_controldata.
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Where postgresql.conf, pg_hba.conf and pg_ident.conf live (Patroni: default data_dir).
    pub config_dir: Option<PathBuf>,
    /// Base name of the managed config file (`postgresql` -> `postgresql.conf`).
    pub config_base_name: String,
    /// Included instead of `<config_base_name>.base.conf` when set (Patroni `custom_conf`).
    pub custom_conf: Option<PathBuf>,
    /// `listen_addresses`; an empty list means "unix socket only".
    pub listen_hosts: Vec<String>,
    pub port: u16,
    /// Unix socket directory we create and own; local connections go through it.
    pub socket_dir: PathBuf,
    /// Connect locally through `socket_dir` (true) or over TCP to the listen address.
    pub use_unix_socket: bool,
    pub superuser: Credentials,
    pub replication: Credentials,
    /// pg_rewind credentials; `None` uses the superuser.
    pub rewind: Option<Credentials>,
    /// Database for local connections and pg_rewind (Patroni `postgresql.database`).
    pub database: String,
    /// Passfile referenced from `primary_conninfo` so the password stays out of postgresql.conf.
    pub pgpass: PathBuf,
    /// OS user for every PostgreSQL program when the agent runs as root; ignored otherwise.
    pub run_as: Option<String>,
    pub pg_ctl_timeout: Duration,
    /// Server log for `pg_ctl start` (stdout/stderr of the postmaster).
    /// Default `<data_dir>/log/pgherd-postgres.log`.
    pub log_file: Option<PathBuf>,
}

impl PgOptions {
    /// Options with Patroni's defaults for everything but the essentials.
    pub fn new(bin_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>, port: u16) -> Self {
        let data_dir = data_dir.into();
        let socket_dir = data_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        PgOptions {
            bin_dir: bin_dir.into(),
            pgpass: socket_dir.join("pgpass"),
            socket_dir,
            data_dir,
            config_dir: None,
            config_base_name: "postgresql".to_string(),
            custom_conf: None,
            listen_hosts: vec!["127.0.0.1".to_string()],
            port,
            use_unix_socket: true,
            superuser: Credentials::new("postgres", None),
            replication: Credentials::new("replicator", None),
            rewind: None,
            database: "postgres".to_string(),
            run_as: None,
            pg_ctl_timeout: Duration::from_secs(60),
            log_file: None,
        }
    }

    pub fn config_dir(&self) -> &Path {
        self.config_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// The managed configuration file passed to the postmaster.
    pub fn postgresql_conf(&self) -> PathBuf {
        self.config_dir()
            .join(format!("{}.conf", self.config_base_name))
    }

    /// Where the user's original postgresql.conf is kept (unless `custom_conf` is set).
    pub fn postgresql_base_conf(&self) -> PathBuf {
        self.config_dir()
            .join(format!("{}.base.conf", self.config_base_name))
    }

    pub fn pg_hba_conf(&self) -> PathBuf {
        self.config_dir().join("pg_hba.conf")
    }

    pub fn pg_ident_conf(&self) -> PathBuf {
        self.config_dir().join("pg_ident.conf")
    }

    pub fn log_file(&self) -> PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("log").join("pgherd-postgres.log"))
    }

    pub fn rewind_credentials(&self) -> &Credentials {
        self.rewind.as_ref().unwrap_or(&self.superuser)
    }

    /// Relative paths would change meaning when programs run from another directory.
    pub(crate) fn absolutize(mut self) -> Result<Self> {
        fn abs(p: &mut PathBuf) -> Result<()> {
            *p = std::path::absolute(&*p).map_err(|e| PgError::io("resolve path", p.clone(), e))?;
            Ok(())
        }
        abs(&mut self.bin_dir)?;
        abs(&mut self.data_dir)?;
        abs(&mut self.socket_dir)?;
        abs(&mut self.pgpass)?;
        if let Some(dir) = self.config_dir.as_mut() {
            abs(dir)?;
        }
        if let Some(file) = self.log_file.as_mut() {
            abs(file)?;
        }
        Ok(self)
    }
}
