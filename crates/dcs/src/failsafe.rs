//! The `failsafe` key (docs/compat.md#failsafe-mode): the members the leader last saw, by name,
//! with their REST API URLs. With `failsafe_mode: true`, a leader that cannot reach the DCS
//! stays primary as long as every one of them acknowledges it (`POST /failsafe`), and only
//! these members may become leader.

use std::collections::BTreeMap;

/// `{"<member>": "<api_url>", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailsafeTopology(pub BTreeMap<String, String>);

impl FailsafeTopology {
    /// `None` unless the value is a JSON object of strings (Patroni ignores anything else).
    pub fn parse(value: &str) -> Option<FailsafeTopology> {
        let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(value).ok()?;
        let members = map
            .into_iter()
            .map(|(name, url)| Some((name, url.as_str()?.to_string())))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(FailsafeTopology(members))
    }

    /// Compact JSON, as Patroni writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn contains(&self, member: &str) -> bool {
        self.0.contains_key(member)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let t = FailsafeTopology::parse(
            r#"{"a":"http://127.0.0.1:8008/patroni","b":"http://x/patroni"}"#,
        )
        .unwrap();
        assert!(t.contains("a") && !t.contains("c"));
        assert_eq!(
            t.to_json(),
            r#"{"a":"http://127.0.0.1:8008/patroni","b":"http://x/patroni"}"#
        );
        assert!(FailsafeTopology::parse("[]").is_none());
        assert!(FailsafeTopology::parse(r#"{"a":1}"#).is_none());
        assert!(FailsafeTopology::parse("garbage").is_none());
    }
}
