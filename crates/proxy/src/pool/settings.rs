//! Session settings that follow a transaction-mode client from server connection to server
//! connection (`SET search_path`, `SET statement_timeout`, `SET app.tenant`, `RESET ALL`, ...).
//!
//! The server is the authority on what a client's session holds: PostgreSQL alone knows
//! whether a `SET` inside a transaction committed, which statements of a failed
//! multi-statement query took effect, what `RESET` went back to, and how a value reads back
//! (`1500` is `1500ms`). So the proxy does not replay the client's text. When a transaction
//! that may have changed settings ([`super::statements::Inspection::settings`]) ends on a
//! server connection, the proxy reads the values back from that connection
//! ([`ClientSettings::read_query`]) and keeps them as one statement that re-creates them
//! ([`ClientSettings::replay`]). A `SET` in a transaction that rolled back, or in a failed
//! one, is therefore not kept. The read names the variables the client has set or reset so
//! far (`current_setting()` of each, a few microseconds); only after a statement that may
//! change variables it does not name (`RESET ALL`, `DISCARD ALL`, `set_config()` of a
//! computed name) does it read every `pg_settings` row whose source is `session` (about a
//! millisecond: PostgreSQL builds the whole view), plus the custom variables the client
//! named, which `pg_settings` does not list. A variable set and later reset by name is
//! replayed at its default value: the same session, told explicitly.
//!
//! That statement is also the fingerprint of a server connection
//! ([`super::server::ServerConn::session_settings`]): before a client's transaction runs on a
//! connection whose fingerprint differs from the client's, the proxy sends one simple query,
//! `RESET ALL`, the `SET`s of the parameters the proxy keeps from `ParameterStatus`
//! ([`super::params`]) and the client's statement, and consumes its answers ([`alignment`]). Clients
//! with the same settings (or none) share connections without any of it.
//!
//! Limits: a setting made inside a function (a `SET` or `set_config()` in a PL/pgSQL body) is
//! not seen; a `statement_timeout` shorter than the read-back itself (well under a
//! millisecond by name, about one for a full read) makes the read-back fail, and the client
//! then loses its session (`08P01`).

use super::params::{self, Params};
use super::statements::Inspection;
use std::collections::BTreeSet;
use std::sync::Arc;

/// One client's session settings as the proxy carries them.
#[derive(Debug, Default, Clone)]
pub struct ClientSettings {
    /// `SELECT pg_catalog.set_config(..), ...`: re-creates the settings; `None`: none.
    replay: Option<Arc<str>>,
    /// The variables the client has set or reset, and those a full read found.
    names: BTreeSet<String>,
    /// A statement that may change settings went to the server since the last read-back.
    dirty: bool,
    /// One of them may have changed variables it does not name.
    unnamed: bool,
}

impl ClientSettings {
    /// A statement inspected as `found` is on its way to the server.
    pub fn note(&mut self, found: &Inspection) {
        if found.settings {
            self.dirty = true;
            self.unnamed |= found.unnamed;
            self.names.extend(found.names.iter().cloned());
        }
    }

    /// A prepared statement that may change settings is executed.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether the settings must be read back before the server connection goes back.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The settings a client's startup packet asks for beyond the kept parameters
    /// (`extra_float_digits` from JDBC, `search_path`, `statement_timeout`, a custom
    /// variable): its session starts with them, as a direct connection's would. A name the
    /// server does not know fails the client's first unit with the server's error.
    pub fn from_startup(settings: &[(String, String)]) -> ClientSettings {
        let mut sorted: Vec<(String, &str)> = settings
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        sorted.sort();
        sorted.dedup_by(|a, b| a.0 == b.0);
        let calls: Vec<String> = sorted
            .iter()
            .map(|(k, v)| format!("pg_catalog.set_config({}, {}, false)", quote(k), quote(v)))
            .collect();
        ClientSettings {
            replay: (!calls.is_empty()).then(|| Arc::from(format!("SELECT {}", calls.join(", ")))),
            // Read back by name after a later SET, like the names the client sets itself.
            names: sorted.iter().map(|(k, _)| k.clone()).collect(),
            dirty: false,
            unnamed: false,
        }
    }

    /// Whether a startup parameter can start the session as a setting: a plain
    /// configuration name (`options` and `replication` are not settings).
    pub fn settable_at_startup(name: &str) -> bool {
        !name.is_empty()
            && !name.eq_ignore_ascii_case("options")
            && !name.eq_ignore_ascii_case("replication")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    }

    pub fn replay(&self) -> Option<&Arc<str>> {
        self.replay.as_ref()
    }

    /// The query that reads the settings back from a server connection: one row, one column,
    /// the list of `set_config` calls (NULL when there is none). Every name is
    /// schema-qualified: the client may have changed `search_path`.
    pub fn read_query(&self) -> String {
        let names: Vec<String> = self.names.iter().map(|n| quote(n)).collect();
        let named = format!(
            "SELECT n, v FROM pg_catalog.unnest(ARRAY[{}]::text[]) n, pg_catalog.current_setting(n, true) v",
            names.join(", ")
        );
        let from = if self.unnamed || self.names.is_empty() {
            let tracked: Vec<String> = params::TRACKED
                .iter()
                .map(|t| quote(&t.to_ascii_lowercase()))
                .collect();
            format!(
                "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings \
                 WHERE source = 'session' AND pg_catalog.lower(name) <> ALL (ARRAY[{}]) UNION {named}",
                tracked.join(", ")
            )
        } else {
            named
        };
        format!(
            "SELECT pg_catalog.string_agg(pg_catalog.format('pg_catalog.set_config(%L, %L, false)', n, v), ', ' ORDER BY n) \
             FROM ({from}) s(n, v) WHERE v IS NOT NULL"
        )
    }

    /// The answer of [`ClientSettings::read_query`]; returns the new replay statement.
    pub fn read(&mut self, calls: Option<String>) -> Option<Arc<str>> {
        self.dirty = false;
        if std::mem::take(&mut self.unnamed) {
            // What a full read found is read by name from now on.
            if let Some(calls) = &calls {
                self.names.extend(names_in(calls));
            }
        }
        self.replay = calls
            .filter(|c| !c.is_empty())
            .map(|c| Arc::from(format!("SELECT {c}")));
        self.replay.clone()
    }
}

/// The variable names of a read-back list of `pg_catalog.set_config('name', ...)` calls
/// (names from `pg_settings` need no quote doubling; custom ones are known already).
fn names_in(calls: &str) -> impl Iterator<Item = String> + '_ {
    calls
        .split("pg_catalog.set_config('")
        .skip(1)
        .filter_map(|rest| rest.split_once('\'').map(|(name, _)| name.to_string()))
}

/// A string literal that reads the same whatever `standard_conforming_strings` says.
fn quote(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Whether a server connection with settings `conn` already has the client's `client`.
pub fn same(client: Option<&Arc<str>>, conn: Option<&Arc<str>>) -> bool {
    match (client, conn) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

/// The one query that brings a server connection (settings `conn`, kept parameters
/// `conn_params`) to a client (settings `client`, kept parameters `wanted`); `None` when it
/// already matches.
pub fn alignment(
    client: Option<&Arc<str>>,
    conn: Option<&Arc<str>>,
    wanted: &Params,
    conn_params: &Params,
) -> Option<String> {
    if same(client, conn) {
        return params::set_statements(wanted, conn_params);
    }
    // RESET ALL takes the kept parameters back to the login's values too: all of them are
    // set again, client_encoding before the settings (whose text was read back in it).
    let mut sql = String::from("RESET ALL;");
    if let Some(kept) = params::set_statements(wanted, &Params::new()) {
        sql.push_str(&kept);
    }
    if let Some(replay) = client {
        sql.push_str(replay);
        sql.push(';');
    }
    Some(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::statements::inspect;

    #[test]
    fn dirty_from_inspected_statements_until_read_back() {
        let mut s = ClientSettings::default();
        s.note(&inspect(b"select 1"));
        assert!(!s.dirty());
        s.note(&inspect(b"SET TIME ZONE 'UTC'"));
        s.note(&inspect(b"select set_config('TimeZone', 'UTC', false)"));
        assert!(!s.dirty(), "kept from ParameterStatus");
        s.note(&inspect(
            b"BEGIN; SET app.tenant = 'a'; SET search_path = s2",
        ));
        assert!(s.dirty());
        // Read by name: no pg_settings.
        let q = s.read_query();
        assert!(
            q.contains("unnest(ARRAY[E'app.tenant', E'search_path']::text[]) n, pg_catalog.current_setting(n, true) v"),
            "{q}"
        );
        assert!(!q.contains("pg_settings"), "{q}");
        let replay = s.read(Some(
            "pg_catalog.set_config('search_path', 's2', false)".into(),
        ));
        assert_eq!(
            replay.as_deref(),
            Some("SELECT pg_catalog.set_config('search_path', 's2', false)")
        );
        assert!(!s.dirty());
        // RESET ALL: every session setting is read once, the known names with them.
        s.note(&inspect(b"RESET ALL"));
        let q = s.read_query();
        assert!(
            s.dirty() && q.contains("pg_settings") && q.contains("E'app.tenant'"),
            "{q}"
        );
        // Nothing left (a rolled-back SET reads back as nothing too).
        assert_eq!(s.read(None), None);
        assert_eq!(s.replay(), None);
        assert!(!s.read_query().contains("pg_settings"));
        s.mark_dirty();
        assert!(s.dirty());
    }

    #[test]
    fn startup_parameters_start_the_session_as_settings() {
        let s = ClientSettings::from_startup(&[
            ("extra_float_digits".into(), "3".into()),
            ("App.Tenant".into(), "it's".into()),
            ("Search_Path".into(), "a, b".into()),
        ]);
        assert_eq!(
            s.replay().map(|r| &**r),
            Some("SELECT pg_catalog.set_config(E'app.tenant', E'it\\'s', false), pg_catalog.set_config(E'extra_float_digits', E'3', false), pg_catalog.set_config(E'search_path', E'a, b', false)")
        );
        assert!(!s.dirty());
        assert!(
            s.read_query().contains("E'app.tenant'"),
            "a startup name is read back"
        );
        assert!(ClientSettings::from_startup(&[]).replay().is_none());
        assert!(ClientSettings::settable_at_startup("extra_float_digits"));
        assert!(!ClientSettings::settable_at_startup("options"));
        assert!(!ClientSettings::settable_at_startup("a;b"));
    }

    #[test]
    fn a_full_read_teaches_the_names_it_found() {
        let mut s = ClientSettings::default();
        s.note(&inspect(b"select set_config($1, $2, false)"));
        assert!(s.read_query().contains("pg_settings"));
        s.read(Some(
            "pg_catalog.set_config('work_mem', '8MB', false), pg_catalog.set_config('app.x', 'it''s', false)".into(),
        ));
        let q = s.read_query();
        assert!(!q.contains("pg_settings"), "{q}");
        assert!(q.contains("ARRAY[E'app.x', E'work_mem']"), "{q}");
    }

    #[test]
    fn read_query_quotes_names() {
        let mut s = ClientSettings::default();
        s.note(&inspect(b"select set_config('a.it''s\\', 'x', false)"));
        let q = s.read_query();
        assert!(q.contains("E'a.it\\'s\\\\'"), "{q}");
        s.note(&inspect(b"DISCARD ALL"));
        let q = s.read_query();
        assert!(q.contains("<> ALL (ARRAY[E'client_encoding', E'datestyle', E'timezone', E'standard_conforming_strings', E'application_name'])"), "{q}");
    }

    #[test]
    fn aligns_only_what_differs() {
        let mut wanted = Params::new();
        params::record(&mut wanted, "TimeZone", "UTC");
        params::record(&mut wanted, "application_name", "app");
        let mut current = wanted.clone();
        let a: Arc<str> = Arc::from("SELECT pg_catalog.set_config('search_path', 'a', false)");
        let a2: Arc<str> = Arc::from(&*a);
        // Same settings (by value, not only the same allocation), same parameters: nothing.
        assert_eq!(alignment(Some(&a), Some(&a2), &wanted, &current), None);
        assert_eq!(alignment(None, None, &wanted, &current), None);
        // Same settings, a parameter differs: only that SET.
        params::record(&mut current, "application_name", "other");
        assert_eq!(
            alignment(Some(&a), Some(&a), &wanted, &current).as_deref(),
            Some("SET application_name = E'app';")
        );
        // Settings differ: reset, the client's settings, every kept parameter.
        assert_eq!(
            alignment(Some(&a), None, &wanted, &wanted).as_deref(),
            Some("RESET ALL;SET TimeZone = E'UTC';SET application_name = E'app';SELECT pg_catalog.set_config('search_path', 'a', false);")
        );
        assert_eq!(
            alignment(None, Some(&a), &wanted, &wanted).as_deref(),
            Some("RESET ALL;SET TimeZone = E'UTC';SET application_name = E'app';")
        );
    }
}
