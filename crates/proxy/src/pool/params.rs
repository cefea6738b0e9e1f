//! The session parameters the proxy keeps per client, as pgbouncer does: a client's values
//! come from its startup packet and from the `ParameterStatus` messages its own `SET`s
//! cause; a server connection a client lands on is brought to them with `SET` first.

use std::collections::BTreeMap;

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

/// Values of the kept parameters.
pub type Params = BTreeMap<&'static str, String>;

/// Records a `ParameterStatus` when it is a kept parameter.
pub fn record(params: &mut Params, name: &str, value: &str) {
    if let Some(c) = canonical(name) {
        params.insert(c, value.to_string());
    }
}

/// The `SET` statements that bring `current` (a server connection) to `wanted` (a client).
pub fn set_statements(wanted: &Params, current: &Params) -> Option<String> {
    let mut sql = String::new();
    for (name, value) in wanted {
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
        assert!(is_tracked("datestyle") && !is_tracked("search_path"));
    }
}
