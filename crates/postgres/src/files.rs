//! Writing the managed configuration files: postgresql.conf (+ base file), recovery
//! signal files, pg_hba.conf, pg_ident.conf and the passfile.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::conf::{is_managed, render_postgresql_conf, sanitize_auto_conf, RecoveryConf, HEADER};
use crate::error::{PgError, Result};
use crate::fsutil::{self, read_optional, write_if_changed};
use crate::options::PgOptions;
use crate::pgpass::{render_pgpass, PgpassEntry};
use crate::postgres::Postgres;

impl Postgres {
    /// Writes the managed postgresql.conf: `include` of the user's base file (or
    /// `custom_conf`), then `params`, then — for a standby (`recovery` is `Some`) — the
    /// recovery settings plus `standby.signal`; for a primary the signal files are removed.
    ///
    /// Always set from the options: `listen_addresses`, `port`, our socket directory in
    /// `unix_socket_directories`, and `hba_file`/`ident_file` unless given. On first use the
    /// original postgresql.conf becomes postgresql.base.conf (an existing one is kept).
    /// Returns whether anything PostgreSQL reads changed (reload or restart is the
    /// caller's decision).
    pub fn write_config(
        &self,
        params: &BTreeMap<String, String>,
        recovery: Option<&RecoveryConf>,
    ) -> Result<bool> {
        self.ensure_initialized("writing postgresql.conf")?;
        let owner = self.owner();
        self.ensure_config_dir()?;
        let include = self.ensure_base_conf()?;

        let mut passfile = None;
        if let Some(rc) = recovery {
            if let (Some(up), Some(password)) = (&rc.upstream, &self.opts.replication.password) {
                self.write_pgpass(&[PgpassEntry {
                    host: Some(up.host.clone()),
                    port: Some(up.port),
                    database: None,
                    user: self.opts.replication.username.clone(),
                    password: password.clone(),
                }])?;
                passfile = Some(self.opts.pgpass.as_path());
            }
        }
        let recovery_params = recovery.map(|rc| rc.parameters(&self.opts.replication, passfile));
        let text = render_postgresql_conf(
            &include,
            &managed_params(&self.opts, params),
            recovery_params.as_ref(),
        )?;
        let conf = self.opts.postgresql_conf();
        let mut changed = write_if_changed(&conf, &text, 0o600, owner)?;
        if changed {
            info!(file = %conf.display(), standby = recovery.is_some(), "wrote PostgreSQL configuration");
        }

        let data = &self.opts.data_dir;
        if recovery.is_some() {
            changed |= fsutil::touch(&data.join("standby.signal"), owner)?;
            changed |= fsutil::remove_file_if_exists(&data.join("recovery.signal"))?;
        } else {
            changed |= fsutil::remove_file_if_exists(&data.join("standby.signal"))?;
            changed |= fsutil::remove_file_if_exists(&data.join("recovery.signal"))?;
        }

        let auto_conf = data.join("postgresql.auto.conf");
        if let Some(new) = read_optional(&auto_conf)?
            .as_deref()
            .and_then(sanitize_auto_conf)
        {
            warn!(file = %auto_conf.display(), "removing recovery settings that would override ours");
            fsutil::write_atomic(&auto_conf, new.as_bytes(), 0o600, owner)?;
            changed = true;
        }
        Ok(changed)
    }

    /// Makes sure the file our postgresql.conf includes exists; returns the include path.
    fn ensure_base_conf(&self) -> Result<String> {
        if let Some(custom) = &self.opts.custom_conf {
            return Ok(custom.to_string_lossy().into_owned());
        }
        let base = self.opts.postgresql_base_conf();
        let conf = self.opts.postgresql_conf();
        let include = base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if base.exists() {
            return Ok(include);
        }
        match read_optional(&conf)? {
            Some(text) if !is_managed(&text) => {
                info!(from = %conf.display(), to = %base.display(), "keeping the original configuration as the base file");
                std::fs::rename(&conf, &base).map_err(|e| PgError::io("rename", &conf, e))?;
            }
            _ => {
                // Renaming our own managed file would make it include itself.
                warn!(file = %base.display(), "no original postgresql.conf to keep; creating an empty base file");
                fsutil::write_atomic(
                    &base,
                    b"# Local PostgreSQL settings (included by the managed postgresql.conf)\n",
                    0o600,
                    self.owner(),
                )?;
            }
        }
        Ok(include)
    }

    /// Replaces pg_hba.conf in the config directory with `lines`. Returns whether it changed.
    pub fn write_pg_hba(&self, lines: &[String]) -> Result<bool> {
        self.write_managed_list(&self.opts.pg_hba_conf(), lines)
    }

    /// Replaces pg_ident.conf; call only when pg_ident is configured.
    pub fn write_pg_ident(&self, lines: &[String]) -> Result<bool> {
        self.write_managed_list(&self.opts.pg_ident_conf(), lines)
    }

    /// Appends `lines` to the pg_hba.conf initdb wrote (Patroni's `bootstrap.pg_hba` when
    /// `postgresql.pg_hba` is not set). Call once, right after initdb.
    pub fn append_pg_hba(&self, lines: &[String]) -> Result<()> {
        self.ensure_config_dir()?;
        let path = self.opts.pg_hba_conf();
        let mut text = read_optional(&path)?.unwrap_or_default();
        text.push('\n');
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        fsutil::write_atomic(&path, text.as_bytes(), 0o600, self.owner())
    }

    fn write_managed_list(&self, path: &std::path::Path, lines: &[String]) -> Result<bool> {
        self.ensure_config_dir()?;
        let mut text = String::from(HEADER);
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        let changed = write_if_changed(path, &text, 0o600, self.owner())?;
        if changed {
            info!(file = %path.display(), "wrote {} lines", lines.len());
        }
        Ok(changed)
    }

    /// A separate config directory is created on demand; when it is the data directory,
    /// writing into it before initdb/pg_basebackup would make those refuse to run.
    fn ensure_config_dir(&self) -> Result<()> {
        if self.opts.config_dir() == self.opts.data_dir {
            self.ensure_initialized("writing configuration files into the data directory")
        } else {
            fsutil::ensure_dir(self.opts.config_dir(), 0o700, self.owner()).map(drop)
        }
    }

    /// Replaces the passfile (mode 0600, owned by the PostgreSQL user). Returns whether it
    /// changed.
    pub fn write_pgpass(&self, entries: &[PgpassEntry]) -> Result<bool> {
        let path = &self.opts.pgpass;
        if let Some(dir) = path.parent() {
            fsutil::ensure_dir(dir, 0o700, self.owner())?;
        }
        write_if_changed(path, &render_pgpass(entries), 0o600, self.owner())
    }
}

/// The parameters as written: the caller's plus those that follow from the options.
fn managed_params(opts: &PgOptions, params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut p = params.clone();
    p.insert("listen_addresses".into(), opts.listen_hosts.join(","));
    p.insert("port".into(), opts.port.to_string());
    // Our socket directory must be among the sockets; the user's other ones are kept.
    let socket_dir = opts.socket_dir.to_string_lossy().into_owned();
    let dirs = match p.get("unix_socket_directories") {
        Some(v) if v.split(',').any(|d| d.trim() == socket_dir) => v.clone(),
        Some(v) if !v.trim().is_empty() => format!("{socket_dir},{v}"),
        _ => socket_dir,
    };
    p.insert("unix_socket_directories".into(), dirs);
    for (name, path) in [
        ("hba_file", opts.pg_hba_conf()),
        ("ident_file", opts.pg_ident_conf()),
    ] {
        p.entry(name.into())
            .or_insert_with(|| path.to_string_lossy().into_owned());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_decide_addresses_sockets_and_hba_location() {
        let mut opts = PgOptions::new("/usr/lib/postgresql/15/bin", "/srv/pg/data", 5433);
        opts.listen_hosts = vec!["10.0.0.1".into(), "127.0.0.1".into()];
        opts.socket_dir = "/run/pgherd".into();
        opts.config_dir = Some("/etc/pg".into());
        let mut params: BTreeMap<String, String> = [("port", "1"), ("work_mem", "4MB")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = managed_params(&opts, &params);
        assert_eq!(p["listen_addresses"], "10.0.0.1,127.0.0.1");
        assert_eq!(p["port"], "5433");
        assert_eq!(p["work_mem"], "4MB");
        assert_eq!(p["unix_socket_directories"], "/run/pgherd");
        assert_eq!(p["hba_file"], "/etc/pg/pg_hba.conf");
        assert_eq!(p["ident_file"], "/etc/pg/pg_ident.conf");

        params.insert(
            "unix_socket_directories".into(),
            "/var/run/postgresql".into(),
        );
        params.insert("hba_file".into(), "/elsewhere/hba".into());
        let p = managed_params(&opts, &params);
        assert_eq!(
            p["unix_socket_directories"],
            "/run/pgherd,/var/run/postgresql"
        );
        assert_eq!(p["hba_file"], "/elsewhere/hba");

        params.insert("unix_socket_directories".into(), "/tmp, /run/pgherd".into());
        assert_eq!(
            managed_params(&opts, &params)["unix_socket_directories"],
            "/tmp, /run/pgherd"
        );
    }
}
