//! libpq keyword/value connection strings (`host=... port=... user=...`).
//!
//! Passwords are never put into these strings: they end up in `ps` output, in postgresql.conf
//! and in logs. Programs get the password through `PGPASSWORD` in their environment and the
//! WAL receiver through a passfile.

use crate::options::Credentials;

/// A server to replicate, clone or rewind from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

impl Upstream {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Upstream {
            host: host.into(),
            port,
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Quotes a value for a libpq connection string: bare when safe, otherwise single-quoted
/// with `\` and `'` backslash-escaped.
pub fn quote_conninfo_value(value: &str) -> String {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\' || c == '=');
    if bare {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Joins keyword/value pairs, skipping absent values.
pub(crate) fn render(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={}", quote_conninfo_value(v))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A connection string for `creds` at `host:port` (without the password; see module docs).
pub fn conninfo(
    host: &str,
    port: u16,
    creds: &Credentials,
    dbname: Option<&str>,
    application_name: Option<&str>,
) -> String {
    let port = port.to_string();
    let mut pairs: Vec<(&str, Option<&str>)> = vec![
        ("user", Some(creds.username.as_str())),
        ("host", Some(host)),
        ("port", Some(port.as_str())),
        ("dbname", dbname),
        ("application_name", application_name),
    ];
    pairs.extend(creds.libpq_settings());
    render(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_conninfo_value("simple"), "simple");
        assert_eq!(quote_conninfo_value(""), "''");
        assert_eq!(quote_conninfo_value("two words"), "'two words'");
        assert_eq!(quote_conninfo_value("it's"), r"'it\'s'");
        assert_eq!(quote_conninfo_value(r"back\slash"), r"'back\\slash'");
        assert_eq!(quote_conninfo_value("a=b"), "'a=b'");
        assert_eq!(quote_conninfo_value("tab\there"), "'tab\there'");
    }

    #[test]
    fn builds_conninfo_without_password() {
        let mut creds = Credentials::new("rep user", Some("secret"));
        creds.sslmode = Some("require".into());
        let s = conninfo("10.0.0.1", 5433, &creds, None, Some("node 1"));
        assert_eq!(
            s,
            "user='rep user' host=10.0.0.1 port=5433 application_name='node 1' sslmode=require"
        );
        assert!(!s.contains("secret"));
        let s = conninfo(
            "h",
            5432,
            &Credentials::new("u", None),
            Some("postgres"),
            None,
        );
        assert_eq!(s, "user=u host=h port=5432 dbname=postgres");
    }
}
