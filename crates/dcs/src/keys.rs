/// Patroni's key layout: `"/" + namespace + "/" + scope`, runs of `/` collapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    base: String,
}

impl KeyLayout {
    pub fn new(namespace: &str, scope: &str) -> Self {
        let raw = format!("/{namespace}/{scope}");
        let mut base = String::with_capacity(raw.len());
        for ch in raw.chars() {
            if ch == '/' && base.ends_with('/') {
                continue;
            }
            base.push(ch);
        }
        while base.len() > 1 && base.ends_with('/') {
            base.pop();
        }
        KeyLayout { base }
    }

    /// `/<namespace>/<scope>` without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `/<namespace>/<scope>/` — the prefix read in one request.
    pub fn prefix(&self) -> String {
        format!("{}/", self.base)
    }

    pub fn key(&self, relative: &str) -> String {
        format!("{}/{}", self.base, relative.trim_start_matches('/'))
    }

    pub fn leader(&self) -> String {
        self.key("leader")
    }
    pub fn initialize(&self) -> String {
        self.key("initialize")
    }
    pub fn config(&self) -> String {
        self.key("config")
    }
    pub fn status(&self) -> String {
        self.key("status")
    }
    pub fn history(&self) -> String {
        self.key("history")
    }
    pub fn failover(&self) -> String {
        self.key("failover")
    }
    pub fn sync(&self) -> String {
        self.key("sync")
    }
    pub fn failsafe(&self) -> String {
        self.key("failsafe")
    }
    pub fn member(&self, name: &str) -> String {
        self.key(&format!("members/{name}"))
    }

    /// The path of `full_key` relative to the base, or `None` if it lies outside.
    pub fn relative<'a>(&self, full_key: &'a str) -> Option<&'a str> {
        full_key.strip_prefix(&self.base)?.strip_prefix('/')
    }
}

/// Physical slot name of a member (docs/compat.md#replication-slots): lower-case, `-`/`.` ->
/// `_`, other characters outside `[a-z0-9_]` -> `u%04d` of the code point (decimal), truncated
/// to 63 bytes.
pub fn slot_name_for_member(name: &str) -> String {
    let mut out = String::new();
    for ch in name.to_lowercase().chars() {
        match ch {
            'a'..='z' | '0'..='9' | '_' => out.push(ch),
            '-' | '.' => out.push('_'),
            other => out.push_str(&format!("u{:04}", other as u32)),
        }
    }
    out.truncate(63);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_collapses_slashes() {
        assert_eq!(
            KeyLayout::new("/service/", "batman").base(),
            "/service/batman"
        );
        assert_eq!(
            KeyLayout::new("service", "batman").base(),
            "/service/batman"
        );
        assert_eq!(
            KeyLayout::new("/postgresql-common/", "15-main").leader(),
            "/postgresql-common/15-main/leader"
        );
        assert_eq!(
            KeyLayout::new("/service", "b").member("node1"),
            "/service/b/members/node1"
        );
    }

    #[test]
    fn relative_strips_base() {
        let k = KeyLayout::new("/service", "b");
        assert_eq!(k.relative("/service/b/members/x"), Some("members/x"));
        assert_eq!(k.relative("/service/bb/leader"), None);
    }

    #[test]
    fn slot_names_follow_patroni() {
        assert_eq!(slot_name_for_member("Node-1.a"), "node_1_a");
        assert_eq!(slot_name_for_member("n@x"), "nu0064x");
        assert_eq!(slot_name_for_member(&"a".repeat(80)).len(), 63);
    }
}
