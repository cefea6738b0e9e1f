//! The session parameters the proxy keeps per client, as pgbouncer does: a client's values
//! come from its startup packet and from the `ParameterStatus` messages its own `SET`s
//! cause; a server connection a client lands on is brought to them with `SET` first.

/// The kept parameters, spelled as servers report them.
pub const TRACKED: [&str; 5] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
];

/// The reported spelling of a kept parameter (names are case-insensitive).
pub fn canonical(name: &str) -> Option<&'static str> {
    TRACKED
        .iter()
        .find(|t| t.eq_ignore_ascii_case(name))
        .copied()
}

pub fn is_tracked(name: &str) -> bool {
    canonical(name).is_some()
}

/// The kept parameters in the order their `SET`s are written (byte order of the names).
const ORDER: [&str; TRACKED.len()] = [
    "DateStyle",
    "TimeZone",
    "application_name",
    "client_encoding",
    "standard_conforming_strings",
];

/// Values of the kept parameters, one slot per parameter. Every pooled client keeps one:
/// a slot array costs no allocation besides the values (a `BTreeMap` allocated a 456-byte
/// node for its at most five entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    values: [Option<String>; TRACKED.len()],
}

impl Params {
    pub fn new() -> Params {
        Params::default()
    }

    fn slot(name: &str) -> Option<usize> {
        ORDER.iter().position(|n| *n == name)
    }

    /// Sets a kept parameter (`name` as [`canonical`] spells it; others are ignored).
    pub fn insert(&mut self, name: &'static str, value: String) {
        if let Some(i) = Params::slot(name) {
            self.values[i] = Some(value);
        }
    }

    /// Sets a kept parameter that has no value yet.
    pub fn insert_default(&mut self, name: &'static str, value: &str) {
        if let Some(i) = Params::slot(name) {
            self.values[i].get_or_insert_with(|| value.to_string());
        }
    }

    pub fn get(&self, name: &str) -> Option<&String> {
        self.values[Params::slot(name)?].as_ref()
    }

    /// (name, value) of the parameters that have a value, in [`ORDER`].
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &String)> {
        ORDER
            .iter()
            .zip(&self.values)
            .filter_map(|(n, v)| Some((*n, v.as_ref()?)))
    }
}

/// Records a `ParameterStatus` when it is a kept parameter.
pub fn record(params: &mut Params, name: &str, value: &str) {
    if let Some(c) = canonical(name) {
        params.insert(c, value.to_string());
    }
}

/// The `SET` statements that bring `current` (a server connection) to `wanted` (a client).
pub fn set_statements(wanted: &Params, current: &Params) -> Option<String> {
    let mut sql = String::new();
    for (name, value) in wanted.iter() {
        if current.get(name) != Some(value) {
            sql.push_str(&format!(
                "SET {name} = E'{}';",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    (!sql.is_empty()).then_some(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_only_what_differs() {
        let mut wanted = Params::new();
        record(&mut wanted, "TIMEZONE", "UTC");
        record(&mut wanted, "application_name", "it's");
        record(&mut wanted, "work_mem", "1MB");
        let mut current = Params::new();
        record(&mut current, "TimeZone", "UTC");
        assert_eq!(
            set_statements(&wanted, &current).as_deref(),
            Some("SET application_name = E'it\\'s';")
        );
        record(&mut current, "application_name", "it's");
        assert_eq!(set_statements(&wanted, &current), None);
        // Every kept parameter, in the names' order; a default fills only an empty slot.
        let mut all = Params::new();
        for (i, name) in TRACKED.iter().enumerate() {
            record(&mut all, name, &i.to_string());
        }
        all.insert_default("DateStyle", "ISO");
        let names: Vec<&str> = all.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ORDER);
        let mut sorted = TRACKED;
        sorted.sort_unstable();
        assert_eq!(sorted, ORDER);
        assert_eq!(all.get("DateStyle").map(String::as_str), Some("1"));
        let mut fresh = Params::new();
        fresh.insert_default("DateStyle", "ISO");
        assert_eq!(fresh.get("DateStyle").map(String::as_str), Some("ISO"));
        assert!(is_tracked("datestyle") && !is_tracked("search_path"));
    }
}
