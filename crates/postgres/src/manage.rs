//! Management SQL: roles, privileges for pg_rewind, checkpoints, replication slots and
//! settings lookups.

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::info;

use crate::error::{PgError, Result};
use crate::postgres::Postgres;
use crate::sql::{quote_ident, quote_literal};

/// Functions pg_rewind needs when it does not connect as superuser (PostgreSQL 11+).
const REWIND_FUNCTIONS: &[&str] = &[
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// Keep passwords out of the server log and never wait for synchronous standbys here.
const QUIET_TX: &str = "SET LOCAL synchronous_commit = 'local'; \
     SET LOCAL log_statement = 'none'; \
     SET LOCAL log_min_duration_statement = -1; \
     SET LOCAL log_min_error_statement = 'panic'";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotInfo {
    pub name: String,
    pub active: bool,
    pub restart_lsn: Option<u64>,
    /// `None` for a physical slot.
    pub logical: Option<LogicalSlot>,
    /// A logical slot's `confirmed_flush_lsn`.
    pub confirmed_flush_lsn: Option<u64>,
}

/// What a logical slot decodes: its database and output plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogicalSlot {
    pub database: String,
    pub plugin: String,
}

/// Result of `drop_slot` (Patroni: `(active, dropped)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotDrop {
    Dropped,
    /// In use by a walsender; not dropped.
    Active,
    Missing,
}

fn check_slot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgError::InvalidName {
            what: "replication slot name",
            name: name.to_string(),
            reason: "expected 1-63 characters of a-z, 0-9 and '_'",
        })
    }
}

/// Role options are SQL keywords (`REPLICATION`, `CONNECTION LIMIT 5`,
/// `VALID UNTIL '2030-01-01'`); anything that could end the statement is refused.
fn check_role_option(option: &str) -> Result<()> {
    let ok = !option.trim().is_empty()
        && option
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _'.:+-".contains(c))
        && !option.contains("--")
        // Quotes must pair up: an odd number of pieces means an even number of quotes.
        && option.split('\'').count() % 2 == 1;
    if ok {
        Ok(())
    } else {
        Err(PgError::InvalidName {
            what: "role option",
            name: option.to_string(),
            reason: "expected SQL role keywords such as REPLICATION or CONNECTION LIMIT 5",
        })
    }
}

impl Postgres {
    /// Creates the login role `name` or updates it (Patroni: options upper-cased, `LOGIN`
    /// added unless `NOLOGIN`/`LOGIN` given). The password is not logged by the server.
    pub async fn create_or_update_role(
        &self,
        name: &str,
        password: Option<&str>,
        options: &[String],
    ) -> Result<()> {
        let mut opts: Vec<String> = Vec::with_capacity(options.len() + 2);
        for o in options {
            check_role_option(o)?;
            opts.push(o.to_ascii_uppercase());
        }
        if !opts.iter().any(|o| o == "LOGIN" || o == "NOLOGIN") {
            opts.push("LOGIN".into());
        }
        if let Some(pw) = password {
            opts.push(format!("PASSWORD {}", quote_literal(pw)));
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(PgError::sql("BEGIN for role update"))?;
        tx.batch_execute(QUIET_TX)
            .await
            .map_err(PgError::sql("quiet settings for role update"))?;
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
                &[&name],
            )
            .await
            .map_err(PgError::sql("role lookup"))?
            .try_get(0)
            .map_err(PgError::sql("role lookup"))?;
        let verb = if exists { "ALTER" } else { "CREATE" };
        tx.batch_execute(&format!(
            "{verb} ROLE {} WITH {}",
            quote_ident(name),
            opts.join(" ")
        ))
        .await
        .map_err(PgError::sql("CREATE/ALTER ROLE"))?;
        tx.commit()
            .await
            .map_err(PgError::sql("COMMIT role update"))?;
        info!(role = name, created = !exists, "role updated");
        Ok(())
    }

    /// Sets the superuser's password from the options (a no-op without one).
    pub async fn set_superuser_password(&self) -> Result<()> {
        let su = &self.opts.superuser;
        match &su.password {
            Some(pw) => {
                self.create_or_update_role(&su.username, Some(pw), &["SUPERUSER".into()])
                    .await
            }
            None => Ok(()),
        }
    }

    /// Lets a non-superuser `role` run pg_rewind (the grants Patroni issues).
    pub async fn grant_rewind_privileges(&self, role: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(PgError::sql("BEGIN for rewind grants"))?;
        tx.batch_execute("SET LOCAL synchronous_commit = 'local'")
            .await
            .map_err(PgError::sql("rewind grants"))?;
        for f in REWIND_FUNCTIONS {
            tx.batch_execute(&format!(
                "GRANT EXECUTE ON FUNCTION {f} TO {}",
                quote_ident(role)
            ))
            .await
            .map_err(PgError::sql("GRANT EXECUTE for pg_rewind"))?;
        }
        tx.commit()
            .await
            .map_err(PgError::sql("COMMIT rewind grants"))?;
        info!(role, "granted pg_rewind privileges");
        Ok(())
    }

    /// Runs CHECKPOINT on a dedicated connection (no statement timeout).
    pub async fn checkpoint(&self) -> Result<()> {
        let client = self.dedicated_client().await?;
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(PgError::sql("CHECKPOINT"))?;
        Ok(())
    }

    /// Creates a physical slot that reserves WAL right away. Returns false if it existed.
    pub async fn create_physical_slot(&self, name: &str) -> Result<bool> {
        check_slot_name(name)?;
        let client = self.client().await?;
        let created = client
            .query(
                "SELECT pg_catalog.pg_create_physical_replication_slot($1, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
                &[&name],
            )
            .await
            .map_err(PgError::sql("pg_create_physical_replication_slot"))?
            .len()
            == 1;
        if created {
            info!(slot = name, "created physical replication slot");
        }
        Ok(created)
    }

    /// Drops a slot unless a walsender is using it.
    pub async fn drop_slot(&self, name: &str) -> Result<SlotDrop> {
        check_slot_name(name)?;
        let client = self.client().await?;
        let row = client
            .query_opt(
                "WITH slots AS (SELECT slot_name, active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1), \
                 dropped AS (SELECT pg_catalog.pg_drop_replication_slot(slot_name), true AS dropped FROM slots WHERE NOT active) \
                 SELECT active, COALESCE(dropped, false) FROM slots FULL OUTER JOIN dropped ON true",
                &[&name],
            )
            .await
            .map_err(PgError::sql("pg_drop_replication_slot"))?;
        let Some(row) = row else {
            return Ok(SlotDrop::Missing);
        };
        let active: bool = row
            .try_get(0)
            .map_err(PgError::sql("pg_drop_replication_slot"))?;
        let dropped: bool = row
            .try_get(1)
            .map_err(PgError::sql("pg_drop_replication_slot"))?;
        Ok(match (active, dropped) {
            (_, true) => {
                info!(slot = name, "dropped replication slot");
                SlotDrop::Dropped
            }
            (true, false) => SlotDrop::Active,
            (false, false) => SlotDrop::Missing,
        })
    }

    /// The physical slots (see [`Postgres::list_slots`]).
    pub async fn list_physical_slots(&self) -> Result<Vec<SlotInfo>> {
        let mut slots = self.list_slots().await?;
        slots.retain(|s| s.logical.is_none());
        Ok(slots)
    }

    /// Every slot but temporary ones (Patroni's `load_replication_slots`), by name.
    pub async fn list_slots(&self) -> Result<Vec<SlotInfo>> {
        const WHAT: &str = "pg_replication_slots query";
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT slot_name::text, active, pg_catalog.pg_wal_lsn_diff(restart_lsn, '0/0')::bigint, \
                 slot_type = 'logical', database::text, plugin::text, \
                 pg_catalog.pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint \
                 FROM pg_catalog.pg_replication_slots WHERE NOT temporary ORDER BY 1",
                &[],
            )
            .await
            .map_err(PgError::sql(WHAT))?;
        rows.iter()
            .map(|r| {
                let lsn: Option<i64> = r.try_get(2).map_err(PgError::sql(WHAT))?;
                let logical: bool = r.try_get(3).map_err(PgError::sql(WHAT))?;
                let database: Option<String> = r.try_get(4).map_err(PgError::sql(WHAT))?;
                let plugin: Option<String> = r.try_get(5).map_err(PgError::sql(WHAT))?;
                let flushed: Option<i64> = r.try_get(6).map_err(PgError::sql(WHAT))?;
                Ok(SlotInfo {
                    name: r.try_get(0).map_err(PgError::sql(WHAT))?,
                    active: r.try_get(1).map_err(PgError::sql(WHAT))?,
                    restart_lsn: lsn.and_then(|l| u64::try_from(l).ok()),
                    logical: logical.then(|| LogicalSlot {
                        database: database.unwrap_or_default(),
                        plugin: plugin.unwrap_or_default(),
                    }),
                    confirmed_flush_lsn: flushed.and_then(|l| u64::try_from(l).ok()),
                })
            })
            .collect()
    }

    /// Creates a logical slot in `database` with output `plugin` (connecting to that
    /// database, as logical slots require). Returns false if a logical slot of that name
    /// existed.
    pub async fn create_logical_slot(
        &self,
        name: &str,
        database: &str,
        plugin: &str,
    ) -> Result<bool> {
        check_slot_name(name)?;
        let client = self.connect_to(Some(database), true).await?;
        let created = client
            .query(
                "SELECT pg_catalog.pg_create_logical_replication_slot($1, $2) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots \
                 WHERE slot_type = 'logical' AND slot_name = $1)",
                &[&name, &plugin],
            )
            .await
            .map_err(PgError::sql("pg_create_logical_replication_slot"))?
            .len()
            == 1;
        if created {
            info!(
                slot = name,
                database, plugin, "created logical replication slot"
            );
        }
        Ok(created)
    }

    /// `pg_settings.context` (`postmaster`, `sighup`, `superuser`, ...) of known `names`.
    pub async fn parameter_contexts(&self, names: &[&str]) -> Result<BTreeMap<String, String>> {
        self.settings_column("context", names).await
    }

    /// Current values (`pg_settings.setting`, in the base unit) of known `names`.
    pub async fn current_settings(&self, names: &[&str]) -> Result<BTreeMap<String, String>> {
        self.settings_column("setting", names).await
    }

    async fn settings_column(
        &self,
        column: &'static str,
        names: &[&str],
    ) -> Result<BTreeMap<String, String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT name, {column} FROM pg_catalog.pg_settings WHERE name = ANY($1)"),
                &[&names],
            )
            .await
            .map_err(PgError::sql("pg_settings query"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(PgError::sql("pg_settings"))?,
                    r.try_get::<_, Option<String>>(1)
                        .map_err(PgError::sql("pg_settings"))?
                        .unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Resumes paused WAL replay on a standby (Patroni does this when following).
    pub async fn resume_wal_replay(&self) -> Result<()> {
        let client = self.client().await?;
        client
            .batch_execute("SELECT pg_catalog.pg_wal_replay_resume()")
            .await
            .map_err(PgError::sql("pg_wal_replay_resume"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        assert!(check_slot_name("node_1").is_ok());
        assert!(check_slot_name("Node1").is_err());
        assert!(check_slot_name("a-b").is_err());
        assert!(check_slot_name("").is_err());
        assert!(check_slot_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn role_options() {
        for ok in [
            "REPLICATION",
            "createdb",
            "CONNECTION LIMIT 5",
            "VALID UNTIL '2030-01-01 00:00:00+00'",
        ] {
            assert!(check_role_option(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "LOGIN; DROP ROLE x",
            "SUPERUSER -- x",
            "VALID UNTIL 'x",
            "\"x\"",
        ] {
            assert!(check_role_option(bad).is_err(), "{bad}");
        }
    }
}

/// A logical slot as copied from the primary: its definition and the bytes of its
/// `pg_replslot/<name>/state` file.
#[derive(Clone, PartialEq, Eq)]
pub struct CopiedSlot {
    pub name: String,
    pub logical: LogicalSlot,
    pub confirmed_flush_lsn: u64,
    pub state: Vec<u8>,
}

impl std::fmt::Debug for CopiedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopiedSlot")
            .field("name", &self.name)
            .field("logical", &self.logical)
            .field("confirmed_flush_lsn", &self.confirmed_flush_lsn)
            .field("state_bytes", &self.state.len())
            .finish()
    }
}

impl Postgres {
    /// Reads the logical slots `names` from the primary at `from` (with the rewind
    /// credentials, which may read server files), state files included, as Patroni's
    /// `copy_logical_slots` does.
    pub async fn read_logical_slots(
        &self,
        from: &crate::Upstream,
        names: &[String],
    ) -> Result<Vec<CopiedSlot>> {
        const WHAT: &str = "reading logical slots from the primary";
        for name in names {
            check_slot_name(name)?;
        }
        let creds = self.opts.rewind_credentials();
        let mut config = tokio_postgres::Config::new();
        config
            .host(&from.host)
            .port(from.port)
            .user(&creds.username)
            .dbname(&self.opts.database)
            .application_name("pgherd")
            .connect_timeout(std::time::Duration::from_secs(3))
            .options("-c statement_timeout=2000");
        if let Some(password) = &creds.password {
            config.password(password);
        }
        let target = from.to_string();
        let (client, connection) =
            config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|source| PgError::Connect {
                    target: target.clone(),
                    source,
                })?;
        let connection = tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT slot_name::text, datname::text, plugin::text, \
                 pg_catalog.pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint, \
                 pg_catalog.pg_read_binary_file('pg_replslot/' || slot_name || '/state') \
                 FROM pg_catalog.pg_get_replication_slots() JOIN pg_catalog.pg_database ON datoid = oid \
                 WHERE NOT pg_catalog.pg_is_in_recovery() AND slot_type = 'logical' \
                 AND slot_name = ANY($1)",
                &[&names],
            )
            .await
            .map_err(PgError::sql(WHAT));
        connection.abort();
        rows?
            .iter()
            .map(|r| {
                let flushed: Option<i64> = r.try_get(3).map_err(PgError::sql(WHAT))?;
                Ok(CopiedSlot {
                    name: r.try_get(0).map_err(PgError::sql(WHAT))?,
                    logical: LogicalSlot {
                        database: r.try_get(1).map_err(PgError::sql(WHAT))?,
                        plugin: r.try_get(2).map_err(PgError::sql(WHAT))?,
                    },
                    confirmed_flush_lsn: flushed.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
                    state: r.try_get(4).map_err(PgError::sql(WHAT))?,
                })
            })
            .collect()
    }

    /// Writes copied slots into `pg_replslot` (PostgreSQL must be stopped; it loads them at
    /// start-up): a temporary directory per slot, its `state` file fsynced, then renamed over
    /// any old one, as PostgreSQL itself does.
    pub fn install_logical_slots(&self, slots: &[CopiedSlot]) -> Result<()> {
        self.ensure_stopped("installing copied logical slots")?;
        let dir = self.opts.data_dir.join("pg_replslot");
        let owner = self.owner();
        for slot in slots {
            check_slot_name(&slot.name)?;
            let target = dir.join(&slot.name);
            let tmp = dir.join(format!("{}.tmp", slot.name));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| PgError::io("remove", &tmp, e))?;
            }
            crate::fsutil::ensure_dir(&tmp, 0o700, owner)?;
            crate::fsutil::write_atomic(&tmp.join("state"), &slot.state, 0o600, owner)?;
            if target.exists() {
                std::fs::remove_dir_all(&target).map_err(|e| PgError::io("remove", &target, e))?;
            }
            std::fs::rename(&tmp, &target).map_err(|e| PgError::io("rename", &tmp, e))?;
            info!(slot = %slot.name, "installed logical replication slot copied from the primary");
        }
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// `pg_replication_slot_advance` of a logical slot on this (standby) server to `lsn`,
    /// connected to the slot's database. `Ok(false)`: the WAL the slot needs from is gone
    /// here (SQLSTATE 58P01), so the slot must be copied from the primary again (Patroni).
    pub async fn advance_slot(&self, name: &str, database: &str, lsn: u64) -> Result<bool> {
        check_slot_name(name)?;
        let client = self.connect_to(Some(database), true).await?;
        let lsn = crate::lsn::format_lsn(lsn);
        let advanced = client
            .execute(
                "SELECT pg_catalog.pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&name, &lsn],
            )
            .await;
        match advanced {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FILE) => {
                Ok(false)
            }
            Err(e) => Err(PgError::sql("pg_replication_slot_advance")(e)),
        }
    }
}
