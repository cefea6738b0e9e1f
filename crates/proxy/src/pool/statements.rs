//! What transaction pooling cannot keep, and what it must follow: SQL that leaves state in
//! the server session, which the client's next transaction (on another server connection)
//! would silently miss.
//!
//! The rule, applied to every statement of a simple `Query` and to every `Parse` in
//! transaction mode (comments, quoted strings, quoted identifiers and dollar quotes are
//! skipped; keywords are case-insensitive). Refused:
//!
//! * `PREPARE name ...` (SQL-level prepared statements; `PREPARE TRANSACTION` is fine);
//! * `LISTEN`;
//! * `SET ROLE` and `SET SESSION AUTHORIZATION`: `RESET ALL` does not undo them, so a server
//!   connection would carry one client's privileges to the next;
//! * `DECLARE ... WITH HOLD` (a cursor that outlives its transaction);
//! * `CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY ...` unless it says `ON COMMIT DROP`;
//! * calls of the session-level advisory lock functions (`pg_advisory_lock`,
//!   `pg_advisory_lock_shared`, `pg_try_advisory_lock`, `pg_try_advisory_lock_shared`; the
//!   `_xact_` variants are fine).
//!
//! Refused only when it starts a transaction of its own ([`Inspection::reads_sequence_state`]):
//! a first statement that calls `currval()` or `lastval()`, which read what `nextval()` left in
//! one server session: in a later transaction on another connection they fail, or return
//! another client's value. In the transaction that called `nextval()` (a block, or a later
//! statement of the same query) they are fine.
//!
//! Such a statement is answered `0A000 feature_not_supported` naming the statement and the
//! pool mode, before anything of the query runs (between transactions the proxy answers
//! itself; inside a transaction block the server raises it, so the transaction fails as for
//! any error). A `Parse` of a named statement is refused the same way when
//! `max_prepared_statements` is 0 (otherwise [`super::prepared`] keeps it).
//!
//! Followed ([`Inspection`]): session settings — `SET [SESSION] name ...`, `RESET name`,
//! `RESET ALL`, `SET SESSION CHARACTERISTICS`, `DISCARD ALL`, `set_config(.., false)` — are
//! carried from server connection to server connection by [`super::settings`]; the
//! parameters the proxy keeps from `ParameterStatus` ([`super::params::TRACKED`], with their
//! `SET NAMES` / `SET TIME ZONE` forms) need nothing more; `SET LOCAL` and `SET TRANSACTION`
//! end with their transaction. A query that is exactly one `DEALLOCATE [PREPARE] name|ALL`
//! is answered for the client's renamed statements ([`super::prepared`]). Not detected:
//! session state created inside functions (a `SET` or `set_config()` in a PL/pgSQL body).
//! Session mode allows all of it.

use super::params;
use std::ops::Range;

/// A token of SQL text, enough to find statement boundaries and keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted word, upper-cased, and where it is in the text.
    Word(String, Range<usize>),
    /// A quoted identifier (`"..."`): its text between the quotes.
    Quoted(Range<usize>),
    /// A standard string literal (`'...'`, no `E` prefix): its text between the quotes.
    Str(Range<usize>),
    Semicolon,
    Open,
    Close,
    Comma,
    /// Any other literal, a number or an operator: none of them is a keyword.
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
                let start = i + 1;
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
                let end = i.min(n);
                i += 1;
                out.push(if escapes {
                    Token::Other
                } else {
                    Token::Str(start..end)
                });
            }
            b'"' => {
                let start = i + 1;
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
                let end = i.min(n);
                i += 1;
                out.push(Token::Quoted(start..end));
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
                    start..i,
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
        Some(Token::Word(w, _)) => Some(w.as_str()),
        _ => None,
    }
}

/// What transaction pooling learns from one query text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The first statement the pool cannot keep, described for the client's error message.
    pub refused: Option<String>,
    /// It may change session settings the pool carries from connection to connection
    /// ([`super::settings`]): `SET`/`RESET` of a variable the pool does not keep itself,
    /// `RESET ALL`, `DISCARD ALL`, `SET SESSION CHARACTERISTICS`, `set_config(.., false)`.
    pub settings: bool,
    /// The variables it sets or resets by name (what the pool reads back).
    pub names: Vec<String>,
    /// It may change variables it does not name (`RESET ALL`, `DISCARD ALL`, `set_config()`
    /// of a computed name): the pool reads every session setting back.
    pub unnamed: bool,
    /// It drops the server's prepared statements (`DISCARD ALL`, `DEALLOCATE ALL`).
    pub drops_statements: bool,
    /// The whole text is one `DEALLOCATE`.
    pub deallocate: Option<Deallocate>,
    /// Its first statement calls `currval()` or `lastval()`: refused when it would start a
    /// transaction (nothing else of the session's runs on the connection it gets).
    pub reads_sequence_state: bool,
}

/// A SQL `DEALLOCATE [PREPARE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate {
    All,
    /// The statement's name as the protocol spells it (unquoted names folded to lower case).
    Name(Vec<u8>),
}

/// Inspects `sql`, every statement of it (see the module doc).
pub fn inspect(sql: &[u8]) -> Inspection {
    let toks = tokens(sql);
    let mut found = Inspection::default();
    let mut statements = 0;
    for stmt in toks.split(|t| *t == Token::Semicolon) {
        if stmt.is_empty() {
            continue;
        }
        statements += 1;
        if statements == 1 {
            found.reads_sequence_state = reads_sequence_state(stmt);
        }
        statement(sql, stmt, &mut found);
        if found.refused.is_some() {
            break;
        }
    }
    if statements != 1 {
        found.deallocate = None;
    }
    found
}

/// Whether the statement calls `currval()` or `lastval()` (schema-qualified or not).
fn reads_sequence_state(s: &[Token]) -> bool {
    s.windows(2).any(|pair| match pair {
        [Token::Word(name, _), Token::Open] => {
            matches!(name.rsplit('.').next(), Some("CURRVAL" | "LASTVAL"))
        }
        _ => false,
    })
}

/// The text of a `Str` or `Quoted` token with its doubled quotes undone, or a word folded to
/// lower case (an identifier as PostgreSQL reads it).
fn name_of(sql: &[u8], t: &Token) -> Option<Vec<u8>> {
    match t {
        Token::Word(_, r) => Some(sql[r.clone()].to_ascii_lowercase()),
        Token::Quoted(r) => Some(undouble(&sql[r.clone()], b'"')),
        Token::Str(r) => Some(undouble(&sql[r.clone()], b'\'')),
        _ => None,
    }
}

fn undouble(text: &[u8], quote: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        out.push(text[i]);
        i += if text[i] == quote && text.get(i + 1) == Some(&quote) {
            2
        } else {
            1
        };
    }
    out
}

/// Notes a variable set or reset by name (the kept parameters need nothing: the server
/// reports them).
fn variable(found: &mut Inspection, name: &[u8]) {
    let name = String::from_utf8_lossy(name).into_owned();
    if params::is_tracked(&name) {
        return;
    }
    found.settings = true;
    if !found.names.contains(&name) {
        found.names.push(name);
    }
}

/// Notes a change of variables the statement does not name.
fn unnamed(found: &mut Inspection) {
    found.settings = true;
    found.unnamed = true;
}

fn statement(sql: &[u8], s: &[Token], found: &mut Inspection) {
    let w = |i: usize| word(s.get(i));
    let refuse = |found: &mut Inspection, why: String| {
        found.refused.get_or_insert(why);
    };
    // Functions anywhere in the statement.
    for (i, t) in s.iter().enumerate() {
        let Token::Word(name, _) = t else { continue };
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
                return refuse(
                    found,
                    format!(
                        "{}() (a session-level advisory lock; use the _xact_ variant)",
                        name.to_ascii_lowercase()
                    ),
                )
            }
            "SET_CONFIG" if last_argument(&s[i + 1..]) != Some("TRUE") => {
                match s.get(i + 2).and_then(|t| match t {
                    Token::Str(_) => name_of(sql, t),
                    _ => None,
                }) {
                    Some(n) => variable(found, &n),
                    None => unnamed(found),
                }
            }
            _ => {}
        }
    }
    let Some(first) = w(0) else { return };
    match first {
        "PREPARE" if w(1) != Some("TRANSACTION") => refuse(found, "PREPARE".into()),
        "LISTEN" => refuse(found, "LISTEN".into()),
        "SET" => set(sql, &s[1..], found),
        "RESET" => match (w(1), s.get(1)) {
            (Some("ALL"), _) => unnamed(found),
            // SET ROLE and SET SESSION AUTHORIZATION are refused: nothing to reset.
            (Some("ROLE" | "SESSION"), _) => {}
            (Some(p), _) if params::is_tracked(p) => {}
            (Some("TIME"), _) => {}
            (_, Some(t)) => {
                if let Some(n) = name_of(sql, t) {
                    variable(found, &n);
                }
            }
            (_, None) => {}
        },
        "DISCARD" if w(1) == Some("ALL") => {
            unnamed(found);
            found.drops_statements = true;
        }
        "DEALLOCATE" => {
            let at = if w(1) == Some("PREPARE") { 2 } else { 1 };
            found.deallocate = match (w(at), s.get(at), s.len() == at + 1) {
                (Some("ALL"), _, true) => {
                    found.drops_statements = true;
                    Some(Deallocate::All)
                }
                (_, Some(t @ (Token::Word(..) | Token::Quoted(_))), true) => {
                    name_of(sql, t).map(Deallocate::Name)
                }
                _ => None,
            };
        }
        "DECLARE"
            if s.windows(2)
                .any(|p| word(p.first()) == Some("WITH") && word(p.get(1)) == Some("HOLD")) =>
        {
            refuse(found, "DECLARE ... WITH HOLD".into())
        }
        "CREATE" => {
            let mut i = 1;
            if matches!(w(i), Some("GLOBAL" | "LOCAL")) {
                i += 1;
            }
            if !matches!(w(i), Some("TEMP" | "TEMPORARY")) {
                return;
            }
            let on_commit_drop = s.windows(3).any(|p| {
                word(p.first()) == Some("ON")
                    && word(p.get(1)) == Some("COMMIT")
                    && word(p.get(2)) == Some("DROP")
            });
            if !on_commit_drop {
                refuse(found, "CREATE TEMPORARY (without ON COMMIT DROP)".into())
            }
        }
        _ => {}
    }
}

/// `SET ...` after the `SET`.
fn set(sql: &[u8], s: &[Token], found: &mut Inspection) {
    let w = |i: usize| word(s.get(i));
    let (rest, shown) = match w(0) {
        Some("LOCAL") | Some("TRANSACTION") => return,
        Some("SESSION") => match w(1) {
            Some("AUTHORIZATION") => {
                found.refused = Some("SET SESSION AUTHORIZATION".into());
                return;
            }
            Some("CHARACTERISTICS") => {
                for n in [
                    "default_transaction_isolation",
                    "default_transaction_read_only",
                    "default_transaction_deferrable",
                ] {
                    variable(found, n.as_bytes());
                }
                return;
            }
            _ => (&s[1..], "SET SESSION"),
        },
        _ => (s, "SET"),
    };
    match (rest.first(), word(rest.first()), word(rest.get(1))) {
        // Kept by the pool itself, from the ParameterStatus the server sends.
        (_, Some("TIME"), Some("ZONE")) | (_, Some("NAMES"), _) => {}
        (_, Some("ROLE"), _) => found.refused = Some(format!("{shown} ROLE")),
        (_, Some(p), _) if params::is_tracked(p) => {}
        (Some(t), _, _) => match name_of(sql, t) {
            Some(n) => variable(found, &n),
            None => unnamed(found),
        },
        (None, _, _) => {}
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
        inspect(sql.as_bytes()).refused
    }

    #[test]
    fn refuses_session_state() {
        for (sql, why) in [
            ("PREPARE p AS select 1", "PREPARE"),
            ("listen chan", "LISTEN"),
            ("SET ROLE admin", "SET ROLE"),
            ("set session role admin", "SET SESSION ROLE"),
            ("set session authorization bob", "SET SESSION AUTHORIZATION"),
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
            // The second statement of a multi-statement query.
            ("select 1; SET ROLE x", "SET ROLE"),
            (
                "select pg_catalog.pg_try_advisory_lock(1)",
                "pg_try_advisory_lock() (a session-level advisory lock; use the _xact_ variant)",
            ),
        ] {
            assert_eq!(refused(sql).as_deref(), Some(why), "{sql}");
        }
    }

    #[test]
    fn notes_sequence_state_read_by_the_first_statement() {
        for (sql, first) in [
            ("select currval('s')", true),
            ("SELECT pg_catalog.lastval()", true),
            ("select currval ('s'), 1", true),
            (
                "insert into t values (1); select currval('t_id_seq')",
                false,
            ),
            ("select nextval('s')", false),
            ("select 'currval(x)'", false),
            ("select \"currval\"('s')", false),
        ] {
            assert_eq!(inspect(sql.as_bytes()).reads_sequence_state, first, "{sql}");
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
            "RESET timezone",
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
            assert_eq!(inspect(sql.as_bytes()), Inspection::default(), "{sql}");
        }
    }

    #[test]
    fn follows_session_settings() {
        for (sql, names, unnamed) in [
            ("SET search_path = x", &["search_path"][..], false),
            ("set session Work_Mem to '1MB'", &["work_mem"], false),
            (
                "SET statement_timeout = 100; select 1",
                &["statement_timeout"],
                false,
            ),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                &[
                    "default_transaction_isolation",
                    "default_transaction_read_only",
                    "default_transaction_deferrable",
                ],
                false,
            ),
            ("RESET ALL", &[], true),
            ("reset search_path", &["search_path"], false),
            (
                "select set_config('work_mem', '1MB', false)",
                &["work_mem"],
                false,
            ),
            (
                "select set_config('search_path', $1, $2)",
                &["search_path"],
                false,
            ),
            ("select set_config($1, 'x', false)", &[], true),
            ("SET app.Tenant = 'a'", &["app.tenant"], false),
            ("SET \"App.Tenant\" = 'a'", &["App.Tenant"], false),
            ("reset app.tenant", &["app.tenant"], false),
            (
                "select set_config('app.it''s', 'x', false), set_config('app.b', 'y', false)",
                &["app.it's", "app.b"],
                false,
            ),
        ] {
            let found = inspect(sql.as_bytes());
            assert!(
                found.settings && found.refused.is_none(),
                "{sql}: {found:?}"
            );
            assert_eq!(
                (found.names.clone(), found.unnamed),
                (
                    names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    unnamed
                ),
                "{sql}"
            );
        }
        let discard = inspect(b"DISCARD ALL");
        assert!(discard.settings && discard.unnamed && discard.drops_statements);
    }

    #[test]
    fn finds_a_lone_deallocate() {
        let d = |sql: &str| inspect(sql.as_bytes()).deallocate;
        assert_eq!(
            d("DEALLOCATE _pg3_1"),
            Some(Deallocate::Name(b"_pg3_1".to_vec()))
        );
        assert_eq!(
            d("deallocate prepare S_1;"),
            Some(Deallocate::Name(b"s_1".to_vec()))
        );
        assert_eq!(
            d("DEALLOCATE \"Q\"\"1\""),
            Some(Deallocate::Name(b"Q\"1".to_vec()))
        );
        assert_eq!(d("DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(d("DEALLOCATE PREPARE ALL"), Some(Deallocate::All));
        assert!(inspect(b"DEALLOCATE ALL").drops_statements);
        for other in [
            "DEALLOCATE a; select 1",
            "select 1",
            "DEALLOCATE",
            "DEALLOCATE a b",
        ] {
            assert_eq!(d(other), None, "{other}");
        }
        let several = inspect(b"select 1; DEALLOCATE ALL");
        assert!(several.deallocate.is_none() && several.drops_statements);
    }
}
