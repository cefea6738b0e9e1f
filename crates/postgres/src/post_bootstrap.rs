//! `bootstrap.post_bootstrap` / `post_init`: run once against a freshly initialized cluster,
//! the way Patroni 3.0.2 runs it (docs/compat.md#bootstrap, "post_bootstrap"):
//!
//! - the command is split shell-style (no shell runs it) and the local connection is appended
//!   as one key=value argument: `dbname=<database> user=<superuser> host=<host> port=<port>`,
//!   values escaped as libpq expects (`\`, `'` and space get a backslash);
//! - host: with `postgresql.use_unix_socket`, the socket directory; otherwise `localhost` when
//!   PostgreSQL listens on `*`, `0.0.0.0`, `127.0.0.1` or `localhost`, else the first listen
//!   address;
//! - the superuser's password is never on the command line nor in `PGPASSWORD`: a passfile
//!   (mode 0600) with the line `host:port:*:user:password` is named by `PGPASSFILE`;
//! - `PGOPTIONS=-c synchronous_commit=local`, the agent's other variables inherited;
//! - as the PostgreSQL OS user when the agent runs as root (Patroni runs as that user).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use tracing::info;

use crate::error::{PgError, Result};
use crate::fsutil;
use crate::options::PgOptions;
use crate::postgres::Postgres;

/// Addresses that make Patroni connect to `localhost` (`_get_tcp_local_address`).
const LOCAL_LISTEN: [&str; 4] = ["*", "0.0.0.0", "127.0.0.1", "localhost"];

/// The host of the local connection handed to `post_bootstrap`.
fn local_host(opts: &PgOptions, over_socket: bool) -> String {
    if over_socket && opts.socket_dir.is_absolute() {
        return opts.socket_dir.display().to_string();
    }
    let hosts: Vec<&str> = opts.listen_hosts.iter().map(|h| h.trim()).collect();
    if hosts.is_empty()
        || hosts
            .iter()
            .any(|h| LOCAL_LISTEN.contains(&h.to_ascii_lowercase().as_str()))
    {
        "localhost".to_string()
    } else {
        hosts[0].to_string()
    }
}

/// libpq key=value escaping as Patroni's `format_dsn` does it.
fn escape_dsn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\'' | '\\' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The connection string appended to the command (Patroni's
/// `format_dsn(local_connect_kwargs, include_dbname=True)`: no password in it).
pub fn post_bootstrap_dsn(opts: &PgOptions, over_socket: bool) -> String {
    format!(
        "dbname={} user={} host={} port={}",
        escape_dsn_value(&opts.database),
        escape_dsn_value(&opts.superuser.username),
        escape_dsn_value(&local_host(opts, over_socket)),
        opts.port
    )
}

/// The passfile line (Patroni's `_pgpass_line`: `:` and `\` escaped).
fn passfile_line(opts: &PgOptions, over_socket: bool, password: &str) -> String {
    let escape = |v: &str| v.replace('\\', r"\\").replace(':', r"\:");
    format!(
        "{}:{}:*:{}:{}\n",
        escape(&local_host(opts, over_socket)),
        opts.port,
        escape(&opts.superuser.username),
        escape(password)
    )
}

/// How a finished command ended, in Patroni's words where it has them.
fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("returned non-zero code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

impl Postgres {
    /// Runs `command` as `post_bootstrap` and waits for it. `over_socket`:
    /// `postgresql.use_unix_socket`. Fails, naming the command, when it cannot be parsed or
    /// started or when it exits non-zero.
    pub async fn run_post_bootstrap(&self, command: &str, over_socket: bool) -> Result<()> {
        let opts = self.options();
        let failed = |reason: String| PgError::PostBootstrap {
            command: command.to_string(),
            reason,
        };
        let mut argv = shlex::split(command)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                failed("cannot be split into arguments (unbalanced quotes?)".to_string())
            })?;
        argv.push(post_bootstrap_dsn(opts, over_socket));
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .env("PGOPTIONS", "-c synchronous_commit=local")
            .kill_on_drop(true);
        if let Some(id) = self.owner() {
            id.apply(&mut cmd);
        }
        let passfile = match &opts.superuser.password {
            Some(password) => {
                let path = passfile_path(opts);
                fsutil::write_atomic(
                    &path,
                    passfile_line(opts, over_socket, password).as_bytes(),
                    0o600,
                    self.owner(),
                )?;
                cmd.env("PGPASSFILE", &path);
                Some(path)
            }
            None => None,
        };
        info!(command, "running post_bootstrap");
        let result = cmd.status().await;
        if let Some(path) = passfile {
            let _ = std::fs::remove_file(path);
        }
        let status = result.map_err(|e| failed(format!("could not be started: {e}")))?;
        if status.success() {
            info!(command, "post_bootstrap finished");
            Ok(())
        } else {
            Err(failed(describe_exit(status)))
        }
    }
}

/// Next to `postgresql.pgpass` (whose directory the agent owns), removed after the command.
fn passfile_path(opts: &PgOptions) -> PathBuf {
    let mut path = opts.pgpass.clone().into_os_string();
    path.push(".post_bootstrap");
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PgOptions {
        let mut o = PgOptions::new("/usr/lib/postgresql/15/bin", "/srv/pg/data", 5361);
        o.superuser.username = "postgres".into();
        o
    }

    #[test]
    fn dsn_over_tcp_names_localhost_like_patroni() {
        let o = opts();
        assert_eq!(
            post_bootstrap_dsn(&o, false),
            "dbname=postgres user=postgres host=localhost port=5361"
        );
        let mut o = opts();
        o.listen_hosts = vec!["10.0.0.5".into(), "10.0.0.6".into()];
        assert_eq!(
            post_bootstrap_dsn(&o, false),
            "dbname=postgres user=postgres host=10.0.0.5 port=5361"
        );
        o.listen_hosts = vec!["10.0.0.5".into(), "*".into()];
        assert!(post_bootstrap_dsn(&o, false).contains("host=localhost "));
    }

    #[test]
    fn dsn_over_the_socket_names_the_socket_directory() {
        let mut o = opts();
        o.socket_dir = "/run/pg sock".into();
        o.superuser.username = "o'brien".into();
        assert_eq!(
            post_bootstrap_dsn(&o, true),
            r"dbname=postgres user=o\'brien host=/run/pg\ sock port=5361"
        );
    }

    #[test]
    fn passfile_line_matches_the_dsn_host() {
        let o = opts();
        assert_eq!(
            passfile_line(&o, false, r"a:b\c"),
            "localhost:5361:*:postgres:a\\:b\\\\c\n"
        );
        assert_eq!(passfile_line(&o, true, "x"), "/srv/pg:5361:*:postgres:x\n");
    }
}
