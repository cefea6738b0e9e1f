//! libpq password files (`host:port:database:user:password`).

/// One passfile line; `None` fields match anything (`*`).
#[derive(Clone, PartialEq, Eq)]
pub struct PgpassEntry {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PgpassEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgpassEntry")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace(':', r"\:")
}

/// Renders the whole file, one line per entry.
pub(crate) fn render_pgpass(entries: &[PgpassEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            let any = |v: Option<String>| v.map_or_else(|| "*".to_string(), |v| escape(&v));
            format!(
                "{}:{}:{}:{}:{}\n",
                any(e.host.clone()),
                any(e.port.map(|p| p.to_string())),
                any(e.database.clone()),
                escape(&e.user),
                escape(&e.password)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_escaped_lines() {
        let entries = [
            PgpassEntry {
                host: Some("10.0.0.1".into()),
                port: Some(5432),
                database: None,
                user: "replicator".into(),
                password: r"a:b\c".into(),
            },
            PgpassEntry {
                host: None,
                port: None,
                database: Some("postgres".into()),
                user: "su".into(),
                password: "x".into(),
            },
        ];
        assert_eq!(
            render_pgpass(&entries),
            "10.0.0.1:5432:*:replicator:a\\:b\\\\c\n*:*:postgres:su:x\n"
        );
        assert!(!format!("{:?}", entries[0]).contains("a:b"));
    }
}
