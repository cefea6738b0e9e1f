//! The agent's local SQL connection (superuser, through our socket directory) and SQL
//! quoting helpers.

use std::time::Duration;

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::{Client, Config, NoTls};
use tracing::{debug, info};

use crate::error::{PgError, Result};
use crate::postgres::Postgres;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// State queries must never hang the HA loop.
const STATEMENT_TIMEOUT_MS: u32 = 2000;
const APPLICATION_NAME: &str = "pgherd";

/// One cached connection, re-established when PostgreSQL closed it.
#[derive(Default)]
pub(crate) struct LocalConnection {
    client: Mutex<Option<Client>>,
}

impl LocalConnection {
    /// Forgets the connection (before a stop, so nothing talks to a dying server).
    pub async fn reset(&self) {
        if self.client.lock().await.take().is_some() {
            debug!("closed the local connection");
        }
    }
}

impl Postgres {
    fn local_config(&self, dbname: Option<&str>, statement_timeout: bool) -> (Config, String) {
        let su = &self.opts.superuser;
        let mut config = Config::new();
        config
            .user(&su.username)
            .dbname(dbname.unwrap_or(&self.opts.database))
            .port(self.opts.port)
            .application_name(APPLICATION_NAME)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &su.password {
            config.password(password);
        }
        if statement_timeout {
            config.options(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        }
        let target = if self.opts.use_unix_socket {
            config.host_path(&self.opts.socket_dir);
            format!("{}:{}", self.opts.socket_dir.display(), self.opts.port)
        } else {
            let host = local_tcp_host(&self.opts.listen_hosts);
            config.host(&host);
            format!("{host}:{}", self.opts.port)
        };
        (config, target)
    }

    async fn connect(&self, statement_timeout: bool) -> Result<Client> {
        self.connect_to(None, statement_timeout).await
    }

    /// A new local connection to `dbname` (default: `postgresql.database`).
    pub(crate) async fn connect_to(
        &self,
        dbname: Option<&str>,
        statement_timeout: bool,
    ) -> Result<Client> {
        let (config, target) = self.local_config(dbname, statement_timeout);
        let (client, connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|source| PgError::Connect {
                    target: target.clone(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "local connection ended");
            }
        });
        Ok(client)
    }

    /// The cached local connection (2 s statement timeout), connecting if needed.
    pub(crate) async fn client(&self) -> Result<MappedMutexGuard<'_, Client>> {
        let mut slot = self.conn.client.lock().await;
        let client = match slot.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                let client = self.connect(true).await?;
                info!("established the local connection to PostgreSQL");
                client
            }
        };
        Ok(MutexGuard::map(slot, |slot| slot.insert(client)))
    }

    /// A dedicated connection without statement timeout, for slow commands (CHECKPOINT).
    pub(crate) async fn dedicated_client(&self) -> Result<Client> {
        self.connect(false).await
    }
}

/// Where to reach our own server over TCP: loopback when listening on a wildcard.
fn local_tcp_host(listen_hosts: &[String]) -> String {
    let first = listen_hosts.first().map(|h| h.trim()).unwrap_or("");
    if listen_hosts
        .iter()
        .any(|h| matches!(h.trim(), "*" | "0.0.0.0" | "127.0.0.1" | "localhost" | ""))
        || first.is_empty()
    {
        "127.0.0.1".to_string()
    } else if first == "::" {
        "::1".to_string()
    } else {
        first.to_string()
    }
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that is safe whatever `standard_conforming_strings` says
/// (like PostgreSQL's quote_literal: `E'...'` with doubled backslashes when needed).
pub fn quote_literal(value: &str) -> String {
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', r"\\"))
    } else {
        format!("'{body}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("replicator"), "\"replicator\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("pa'ss"), "'pa''ss'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
    }

    #[test]
    fn tcp_host_for_wildcards() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(local_tcp_host(&v(&["*"])), "127.0.0.1");
        assert_eq!(local_tcp_host(&v(&["10.0.0.5", "127.0.0.1"])), "127.0.0.1");
        assert_eq!(local_tcp_host(&v(&["10.0.0.5"])), "10.0.0.5");
        assert_eq!(local_tcp_host(&v(&["::"])), "::1");
        assert_eq!(local_tcp_host(&[]), "127.0.0.1");
    }
}
