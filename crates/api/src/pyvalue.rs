//! Python's view of JSON values, where Patroni's decisions depend on it (truthiness of tags,
//! `parse_bool` of config flags, `str(value).lower()` in tag filters).

use serde_json::Value;

/// Python `bool(value)`: `false`, `0`, `""`, `[]`, `{}` and `null` are false.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Patroni's `parse_bool`: `on/true/yes/1` (any case) are true; everything else is not.
pub(crate) fn parse_bool(value: &Value) -> bool {
    matches!(lower_str(value).as_str(), "on" | "true" | "yes" | "1")
}

/// Python `str(value).lower()` for the scalar values tags and flags hold.
pub(crate) fn lower_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_lowercase(),
        Value::Null => "none".to_string(),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_semantics() {
        assert!(truthy(&json!("false")));
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!("")));
        assert!(parse_bool(&json!("ON")));
        assert!(parse_bool(&json!(true)));
        assert!(parse_bool(&json!(1)));
        assert!(!parse_bool(&json!("quorum")));
        assert_eq!(lower_str(&json!(true)), "true");
        assert_eq!(lower_str(&json!(1.5)), "1.5");
    }
}
