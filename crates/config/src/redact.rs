//! Hiding secrets before configuration is shown or logged.

use serde_json::Value;

/// What secrets are replaced with.
pub const REDACTED: &str = "********";

/// Keys whose values are secrets wherever they appear.
const SECRET_KEYS: [&str; 4] = [
    "password",
    "key_password",
    "keyfile_password",
    "sslpassword",
];

/// Replaces every secret in `value`, at any depth: the values of `password`, `key_password`,
/// `keyfile_password` and `sslpassword`, and the password in `scheme://user:password@host`
/// URLs.
pub fn redact_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if SECRET_KEYS.contains(&key.as_str()) && !v.is_null() {
                    *v = Value::from(REDACTED);
                } else {
                    redact_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        Value::String(s) => {
            if let Some(hidden) = redact_url(s) {
                *s = hidden;
            }
        }
        _ => {}
    }
}

/// `http://u:secret@h` -> `http://u:********@h`; `None` when there is nothing to hide.
fn redact_url(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    Some(format!(
        "{scheme}://{user}:{REDACTED}@{host}{}",
        &rest[authority_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hides_secrets_at_any_depth() {
        let mut v = json!({
            "restapi": {"authentication": {"username": "u", "password": "p"}, "keyfile_password": "k"},
            "zookeeper": {"key_password": "z"},
            "users": [{"password": 1234}],
            "auth": {"sslpassword": "s", "sslmode": "require", "password": null},
            "etcd": {"url": "http://root:secret@etcd:2379/x", "host": "a@b"}
        });
        redact_secrets(&mut v);
        assert_eq!(
            v,
            json!({
                "restapi": {"authentication": {"username": "u", "password": REDACTED}, "keyfile_password": REDACTED},
                "zookeeper": {"key_password": REDACTED},
                "users": [{"password": REDACTED}],
                "auth": {"sslpassword": REDACTED, "sslmode": "require", "password": null},
                "etcd": {"url": "http://root:********@etcd:2379/x", "host": "a@b"}
            })
        );
    }
}
