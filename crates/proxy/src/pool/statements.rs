//! What transaction pooling cannot keep: SQL that leaves state in the server session, which
//! the client's next transaction (on another server connection) would silently miss.
//!
//! The rule, applied to every statement of a simple `Query` and to every `Parse` in
//! transaction mode (comments, quoted strings, quoted identifiers and dollar quotes are
//! skipped; keywords are case-insensitive):
//!
//! * `PREPARE name ...` (SQL-level prepared statements; `PREPARE TRANSACTION` is fine);
//! * `LISTEN`;
//! * `SET` / `SET SESSION` of a parameter, `SET ROLE`, `SET SESSION AUTHORIZATION`,
//!   `SET SESSION CHARACTERISTICS`, except the parameters the proxy keeps per client
//!   ([`super::params::TRACKED`]: client_encoding, DateStyle, TimeZone,
//!   standard_conforming_strings, application_name, and their `SET NAMES` / `SET TIME ZONE`
//!   forms); `SET LOCAL` and `SET TRANSACTION` are fine;
//! * `DECLARE ... WITH HOLD` (a cursor that outlives its transaction);
//! * `CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY ...` unless it says `ON COMMIT DROP`;
//! * calls of the session-level advisory lock functions (`pg_advisory_lock`,
//!   `pg_advisory_lock_shared`, `pg_try_advisory_lock`, `pg_try_advisory_lock_shared`; the
//!   `_xact_` variants are fine);
//! * `set_config(..., false)` (a session-level setting through a function).
//!
//! Such a statement is answered `0A000 feature_not_supported` naming the statement and the
//! pool mode, before anything of the query runs. Session mode allows all of it.

use super::params;

/// A token of SQL text, enough to find statement boundaries and keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted word, upper-cased.
    Word(String),
    Semicolon,
    Open,
    Close,
    Comma,
    /// A literal, quoted identifier, number or operator: none of them is a keyword.
    Other,
}

fn tokens(sql: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = sql.len();
    while i < n {
        let c = sql[i];
        match c {
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                while i < n && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < n {
                    if sql[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if sql[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                // E'...' strings allow backslash escapes; a standard string doubles quotes.
                let escapes = i > 0 && matches!(sql[i - 1], b'e' | b'E');
                i += 1;
                while i < n {
                    if escapes && sql[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if sql[i] == b'\'' {
                        if sql.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Other);
            }
            b'"' => {
                i += 1;
                while i < n {
                    if sql[i] == b'"' {
                        if sql.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Other);
            }
            b'$' => {
                // $tag$ ... $tag$, or a parameter $1.
                let start = i;
                let mut j = i + 1;
                while j < n && (sql[j].is_ascii_alphanumeric() || sql[j] == b'_') {
                    j += 1;
                }
                if j < n && sql[j] == b'$' && !sql[start + 1..j].iter().any(u8::is_ascii_digit) {
                    let tag = &sql[start..=j];
                    let body = j + 1;
                    let end = sql[body..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map_or(n, |p| body + p + tag.len());
                    i = end;
                } else {
                    i = j;
                }
                out.push(Token::Other);
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < n
                    && (sql[i].is_ascii_alphanumeric()
                        || sql[i] == b'_'
                        || sql[i] == b'$'
                        || sql[i] == b'.'
                        || sql[i] >= 0x80)
                {
                    i += 1;
                }
                // A word directly followed by a quote is a prefix (E'', U&'', B''): let the
                // string be read next.
                out.push(Token::Word(
                    String::from_utf8_lossy(&sql[start..i]).to_ascii_uppercase(),
                ));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                i += 1;
                out.push(Token::Other);
            }
        }
    }
    out
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token::Word(w)) => Some(w.as_str()),
        _ => None,
    }
}

/// The first statement in `sql` that transaction pooling cannot keep, described for the
/// client's error message (`None`: nothing to refuse).
pub fn session_state(sql: &[u8]) -> Option<String> {
    let toks = tokens(sql);
    for stmt in toks.split(|t| *t == Token::Semicolon) {
        if let Some(why) = statement(stmt) {
            return Some(why);
        }
    }
    None
}

fn statement(s: &[Token]) -> Option<String> {
    let w = |i: usize| word(s.get(i));
    // Functions anywhere in the statement.
    for (i, t) in s.iter().enumerate() {
        let Token::Word(name) = t else { continue };
        if s.get(i + 1) != Some(&Token::Open) {
            continue;
        }
        // A schema-qualified name (pg_catalog.pg_advisory_lock) is the same function.
        let name = name.rsplit('.').next().unwrap_or(name);
        match name {
            "PG_ADVISORY_LOCK"
            | "PG_ADVISORY_LOCK_SHARED"
            | "PG_TRY_ADVISORY_LOCK"
            | "PG_TRY_ADVISORY_LOCK_SHARED" => {
                return Some(format!(
                    "{}() (a session-level advisory lock; use the _xact_ variant)",
                    name.to_ascii_lowercase()
                ))
            }
            "SET_CONFIG" if last_argument(&s[i + 1..]) == Some("FALSE") => {
                return Some("set_config(..., false) (a session-level setting)".into())
            }
            _ => {}
        }
    }
    match w(0)? {
        "PREPARE" if w(1) != Some("TRANSACTION") => Some("PREPARE".into()),
        "LISTEN" => Some("LISTEN".into()),
        "SET" => set(&s[1..]),
        "DECLARE" => s
            .windows(2)
            .any(|p| word(p.first()) == Some("WITH") && word(p.get(1)) == Some("HOLD"))
            .then(|| "DECLARE ... WITH HOLD".into()),
        "CREATE" => {
            let mut i = 1;
            if matches!(w(i), Some("GLOBAL" | "LOCAL")) {
                i += 1;
            }
            if !matches!(w(i), Some("TEMP" | "TEMPORARY")) {
                return None;
            }
            let on_commit_drop = s.windows(3).any(|p| {
                word(p.first()) == Some("ON")
                    && word(p.get(1)) == Some("COMMIT")
                    && word(p.get(2)) == Some("DROP")
            });
            (!on_commit_drop).then(|| "CREATE TEMPORARY (without ON COMMIT DROP)".into())
        }
        _ => None,
    }
}

/// `SET ...` after the `SET`.
fn set(s: &[Token]) -> Option<String> {
    let w = |i: usize| word(s.get(i));
    let (rest, shown) = match w(0) {
        Some("LOCAL") | Some("TRANSACTION") => return None,
        Some("SESSION") => match w(1) {
            Some("AUTHORIZATION") => return Some("SET SESSION AUTHORIZATION".into()),
            Some("CHARACTERISTICS") => return Some("SET SESSION CHARACTERISTICS".into()),
            _ => (&s[1..], "SET SESSION"),
        },
        _ => (s, "SET"),
    };
    let param = match (word(rest.first()), word(rest.get(1))) {
        (Some("TIME"), Some("ZONE")) => "timezone".to_string(),
        (Some("NAMES"), _) => "client_encoding".to_string(),
        (Some("ROLE"), _) => return Some(format!("{shown} ROLE")),
        (Some(p), _) => p.to_ascii_lowercase(),
        // A quoted parameter name: not one the proxy keeps.
        (None, _) => return Some(shown.into()),
    };
    if params::is_tracked(&param) {
        None
    } else {
        Some(format!("{shown} {param}"))
    }
}

/// The last token before the `)` closing the call whose `(` starts `s`, when it is a word.
fn last_argument(s: &[Token]) -> Option<&str> {
    let mut depth = 0;
    for (i, t) in s.iter().enumerate() {
        match t {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return word(i.checked_sub(1).and_then(|j| s.get(j)));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> Option<String> {
        session_state(sql.as_bytes())
    }

    #[test]
    fn refuses_session_state() {
        for (sql, why) in [
            ("PREPARE p AS select 1", "PREPARE"),
            ("listen chan", "LISTEN"),
            ("SET search_path = x", "SET search_path"),
            ("set session work_mem to '1MB'", "SET SESSION work_mem"),
            ("SET ROLE admin", "SET ROLE"),
            ("set session authorization bob", "SET SESSION AUTHORIZATION"),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                "SET SESSION CHARACTERISTICS",
            ),
            (
                "declare c cursor with hold for select 1",
                "DECLARE ... WITH HOLD",
            ),
            (
                "create temp table t(a int)",
                "CREATE TEMPORARY (without ON COMMIT DROP)",
            ),
            (
                "CREATE LOCAL TEMPORARY TABLE t(a int)",
                "CREATE TEMPORARY (without ON COMMIT DROP)",
            ),
            (
                "select pg_advisory_lock(1)",
                "pg_advisory_lock() (a session-level advisory lock; use the _xact_ variant)",
            ),
            (
                "select set_config('work_mem', '1MB', false)",
                "set_config(..., false) (a session-level setting)",
            ),
            // The second statement of a multi-statement query.
            ("select 1; SET x.y = 1", "SET x.y"),
            (
                "select pg_catalog.pg_try_advisory_lock(1)",
                "pg_try_advisory_lock() (a session-level advisory lock; use the _xact_ variant)",
            ),
        ] {
            assert_eq!(refused(sql).as_deref(), Some(why), "{sql}");
        }
    }

    #[test]
    fn allows_transaction_scoped_and_tracked_state() {
        for sql in [
            "select 1",
            "SET LOCAL work_mem = '1MB'",
            "set transaction isolation level serializable",
            "SET application_name = 'x'",
            "SET TIME ZONE 'UTC'",
            "set names 'UTF8'",
            "set DateStyle to ISO",
            "PREPARE TRANSACTION 'x'",
            "declare c cursor for select 1",
            "create temp table t(a int) on commit drop",
            "create table temp(a int)",
            "select pg_advisory_xact_lock(1)",
            "select set_config('work_mem', '1MB', true)",
            "select 'SET search_path = x; listen y'",
            "select $$ prepare p as select 1 $$, $1",
            "select 1 -- ; listen x\n",
            "/* listen x; /* nested */ */ select \"LISTEN\"",
            "select E'it\\'s; listen x'",
            "insert into t values ('a''; listen x')",
        ] {
            assert_eq!(refused(sql), None, "{sql}");
        }
    }
}
