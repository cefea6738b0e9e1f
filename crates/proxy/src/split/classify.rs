//! SQL text → what each statement is, for routing: positively read-only (may run on a
//! replica), a transaction or session-state command the router must follow, or something the
//! primary must run (with the [`Reason`]).
//!
//! The rule is a whitelist: a statement is read-only only when the parser accepted it and it
//! is a `SELECT`/`VALUES`/`SHOW`/`EXPLAIN` of such/`COPY ... TO STDOUT` of such (or a cursor
//! command) without `INTO`, without a locking clause, without a data-modifying `WITH`, whose
//! every function call is on the read-only lists of [`super::functions`]. Anything else,
//! including every statement the parser rejects, goes to the primary.

use super::functions::{FunctionPolicy, NotReadOnly};
use super::reason::{PinCause, Reason};
use sqlparser::ast::{
    self, BinaryOperator, ContextModifier, CopySource, CopyTarget, DiscardObject, Expr,
    FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, ObjectNamePart, Query, Select,
    SetExpr, Statement, TableFactor, TransactionAccessMode, TransactionIsolationLevel,
    TransactionMode, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

/// What one statement is, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementClass {
    /// Positively read-only: a replica may run it.
    ReadOnly,
    /// The primary must run it; `pin` is set when it also ties the session to its connection.
    Primary(NotReadOnly),
    /// `BEGIN`/`START TRANSACTION`; `read_only` is `None` unless it says `READ ONLY`/`READ
    /// WRITE`, `serializable` unless it names an isolation level (hot standbys refuse
    /// `SERIALIZABLE`). `text` is the statement as the proxy replays it.
    Begin {
        read_only: Option<bool>,
        serializable: Option<bool>,
        text: String,
    },
    /// `SET TRANSACTION ...` (or `SET transaction_read_only`/`transaction_isolation`): the
    /// current transaction only.
    SetTransaction {
        read_only: Option<bool>,
        serializable: Option<bool>,
        text: String,
    },
    /// `COMMIT`/`END` (`chain`: `AND CHAIN` opens the next transaction at once).
    Commit { chain: bool },
    /// `ROLLBACK`/`ABORT`.
    Rollback { chain: bool },
    /// `SAVEPOINT name`.
    Savepoint { name: String },
    /// `RELEASE [SAVEPOINT] name`.
    ReleaseSavepoint { name: String },
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackToSavepoint { name: String },
    /// A session setting: `SET [SESSION] name ...`, `RESET name`, `SET ROLE`, `SET TIME ZONE`,
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION ...`.
    SetSession(SessionSetting),
    /// `SET LOCAL ...`: lasts until the transaction ends, runs where the transaction runs.
    SetLocal,
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`: also drops temporary tables, prepared statements, listens and locks.
    DiscardAll,
}

/// One session setting as the router records it for replay on other servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSetting {
    /// Key under which a later setting of the same variable replaces this one.
    pub name: String,
    /// The statement that re-creates the setting on another server connection.
    pub replay: String,
    /// `Some` when it sets the session's default transaction access mode
    /// (`default_transaction_read_only`, `SET SESSION CHARACTERISTICS AS TRANSACTION READ ...`).
    pub default_read_only: Option<bool>,
    /// `Some` when it sets the session's default isolation level
    /// (`default_transaction_isolation`, `SET SESSION CHARACTERISTICS AS TRANSACTION
    /// ISOLATION LEVEL ...`): `true` for `SERIALIZABLE`, which no replica runs.
    pub default_serializable: Option<bool>,
}

/// The statements of one query string, in order. Empty for an empty query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub statements: Vec<StatementClass>,
}

impl Classification {
    /// The first reason the statements need the primary, ignoring transaction and session
    /// commands; `None` when every statement is read-only (or transaction control).
    pub fn primary_reason(&self) -> Option<Reason> {
        self.statements.iter().find_map(|s| match s {
            StatementClass::Primary(n) => Some(n.reason),
            _ => None,
        })
    }

    /// True when every statement is [`StatementClass::ReadOnly`] (and there is at least one).
    pub fn is_read_only(&self) -> bool {
        !self.statements.is_empty()
            && self
                .statements
                .iter()
                .all(|s| *s == StatementClass::ReadOnly)
    }

    fn unparsable() -> Self {
        Classification {
            statements: vec![StatementClass::Primary(NotReadOnly::new(
                Reason::Unparsable,
            ))],
        }
    }
}

/// Classifies SQL text with `sqlparser`'s PostgreSQL dialect and a [`FunctionPolicy`].
///
/// Parsing costs about 10 µs for a one-line `SELECT` (tens for a join), so results are kept
/// by exact text: drivers that send the same parameterised text again (an unnamed statement
/// parsed per execution, a repeated simple query) pay a hash lookup instead. Read-only
/// results are also kept by shape (the tokens with every literal replaced, [`shape`]):
/// clients that inline their values (`WHERE aid = 4711`, pgbench's simple protocol) pay a
/// tokenization, about a quarter of a parse. Only read-only results are shared by shape
/// because no literal can make a read-only statement write: the classifier reads literals
/// only in `SET` and `set_config()`, which are never read-only. Both caches are bounded
/// ([`CACHE_ENTRIES`] texts of at most [`CACHE_TEXT_BYTES`]) and emptied when full.
#[derive(Debug, Default)]
pub struct Classifier {
    functions: FunctionPolicy,
    cache: Mutex<HashMap<Box<str>, Arc<Classification>>>,
    read_only_shapes: Mutex<HashMap<Box<str>, Arc<Classification>>>,
}

/// Pgpool-II's comment that keeps a query on the primary when it starts the text (as in
/// Pgpool-II, exactly this spelling).
const NO_LOAD_BALANCE: &str = "/*NO LOAD BALANCE*/";

/// Runs `f` on a cache; a poisoned lock (a panic elsewhere) just loses the cache.
fn cached<T>(
    cache: &Mutex<HashMap<Box<str>, Arc<Classification>>>,
    f: impl FnOnce(&mut HashMap<Box<str>, Arc<Classification>>) -> T,
) -> T {
    let mut guard = cache.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        guard.clear();
        guard
    });
    f(&mut guard)
}

/// The text's tokens with every literal (number, string, dollar-quoted string) replaced by
/// one placeholder and spaces dropped; comments stay (Pgpool-II's hint is one). `None` when
/// the tokenizer rejects the text.
fn shape(sql: &str) -> Option<String> {
    use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
    use std::fmt::Write;
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut shape = String::with_capacity(sql.len());
    for token in &tokens {
        match token {
            Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab) => {
                continue
            }
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DollarQuotedString(_) => shape.push('\u{0}'),
            other => {
                let _ = write!(shape, "{other}");
            }
        }
        // Token boundaries stay visible: `a b` and `ab` differ.
        shape.push('\u{1}');
    }
    Some(shape)
}

/// `TABLE name` (PostgreSQL's short form of `SELECT * FROM name`, which the parser does not
/// know) as that `SELECT`; `None` for any other text.
fn table_command(sql: &str) -> Option<String> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut words = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_)));
    match words.next()? {
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("table") => {}
        _ => return None,
    }
    // Only a (qualified) name may follow, optionally ONLY and a final `;`: nothing the
    // rewrite could change the meaning of.
    let rest: Vec<&Token> = words.collect();
    let rest = match rest.as_slice() {
        [body @ .., Token::SemiColon] => body,
        body => body,
    };
    let name_only = !rest.is_empty()
        && rest
            .iter()
            .all(|t| matches!(t, Token::Word(_) | Token::Period));
    if !name_only {
        return None;
    }
    let start = sql.to_ascii_lowercase().find("table")? + "table".len();
    Some(format!("SELECT * FROM {}", &sql[start..]))
}

/// Texts the classification cache holds before it is emptied.
pub const CACHE_ENTRIES: usize = 4096;
/// Longer texts are classified every time (and do not crowd the cache).
pub const CACHE_TEXT_BYTES: usize = 4096;

impl Classifier {
    pub fn new(functions: FunctionPolicy) -> Self {
        Classifier {
            functions,
            cache: Mutex::default(),
            read_only_shapes: Mutex::default(),
        }
    }

    /// Classifies a query string (one statement, or several separated by `;` as a simple
    /// Query message may carry). Text the parser rejects is one
    /// [`Reason::Unparsable`] statement.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        if sql.len() > CACHE_TEXT_BYTES {
            return Arc::new(self.parse(sql));
        }
        if let Some(hit) = cached(&self.cache, |cache| cache.get(sql).cloned()) {
            return hit;
        }
        let shape = shape(sql);
        if let Some(shape) = &shape {
            if let Some(hit) = cached(&self.read_only_shapes, |c| c.get(shape.as_str()).cloned()) {
                return hit;
            }
        }
        let classification = Arc::new(self.parse(sql));
        let keep = |cache: &mut HashMap<Box<str>, Arc<Classification>>, key: &str| {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key.into(), classification.clone());
        };
        match shape {
            Some(shape) if classification.is_read_only() => {
                cached(&self.read_only_shapes, |c| keep(c, &shape));
            }
            _ => cached(&self.cache, |c| keep(c, sql)),
        }
        classification
    }

    fn parse(&self, sql: &str) -> Classification {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
            Ok(statements) => {
                let hinted = sql.trim_start().starts_with(NO_LOAD_BALANCE);
                Classification {
                    statements: statements
                        .iter()
                        .map(|s| match self.statement(s) {
                            StatementClass::ReadOnly if hinted => {
                                StatementClass::Primary(NotReadOnly::new(Reason::NoLoadBalanceHint))
                            }
                            class => class,
                        })
                        .collect(),
                }
            }
            Err(_) => match table_command(sql) {
                Some(select) => self.parse(&select),
                None => Classification::unparsable(),
            },
        }
    }

    fn statement(&self, statement: &Statement) -> StatementClass {
        let primary = |reason| StatementClass::Primary(NotReadOnly::new(reason));
        let pin = |cause| StatementClass::Primary(NotReadOnly::pin(cause));
        let read_only_if = |result: Result<(), NotReadOnly>| match result {
            Ok(()) => StatementClass::ReadOnly,
            Err(n) => StatementClass::Primary(n),
        };
        match statement {
            Statement::Query(query) => read_only_if(self.query(query)),
            Statement::Explain { statement, .. } => read_only_if(self.explained(statement)),
            Statement::ShowVariable { .. } => StatementClass::ReadOnly,
            Statement::Copy {
                source, to, target, ..
            } => match (to, target, source) {
                (false, _, _) => primary(Reason::CopyFrom),
                (true, CopyTarget::Stdout, CopySource::Table { .. }) => StatementClass::ReadOnly,
                (true, CopyTarget::Stdout, CopySource::Query(query)) => {
                    read_only_if(self.query(query))
                }
                (true, _, _) => primary(Reason::CopyToFile),
            },
            Statement::StartTransaction {
                modes, statements, ..
            } if statements.is_empty() => StatementClass::Begin {
                read_only: access_mode(modes),
                serializable: isolation_serializable(modes),
                text: statement.to_string(),
            },
            Statement::Commit { chain, .. } => StatementClass::Commit { chain: *chain },
            Statement::Rollback {
                savepoint: None,
                chain,
            } => StatementClass::Rollback { chain: *chain },
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => StatementClass::RollbackToSavepoint { name: fold(name) },
            Statement::Savepoint { name } => StatementClass::Savepoint { name: fold(name) },
            Statement::ReleaseSavepoint { name } => {
                StatementClass::ReleaseSavepoint { name: fold(name) }
            }
            Statement::Set(set) => set_statement(set, statement),
            Statement::Reset(reset) => match &reset.reset {
                ast::Reset::ALL => StatementClass::ResetAll,
                ast::Reset::SessionAuthorization => StatementClass::SetSession(session_setting(
                    "session_authorization".to_string(),
                    statement,
                    None,
                )),
                ast::Reset::ConfigurationParameter(name) => {
                    let name = dotted(name);
                    let mut setting = session_setting(name, statement, None);
                    // Back to the server's defaults, taken to be read-write, not serializable.
                    match setting.name.as_str() {
                        "default_transaction_read_only" => setting.default_read_only = Some(false),
                        "default_transaction_isolation" => {
                            setting.default_serializable = Some(false)
                        }
                        _ => {}
                    }
                    StatementClass::SetSession(setting)
                }
            },
            Statement::Discard {
                object_type: DiscardObject::ALL,
            } => StatementClass::DiscardAll,
            Statement::Discard { .. } => primary(Reason::SessionState),
            Statement::LISTEN { .. } => pin(PinCause::Listen),
            Statement::UNLISTEN { .. } | Statement::NOTIFY { .. } => primary(Reason::ListenNotify),
            Statement::Declare { stmts, .. } => {
                if stmts.iter().any(|d| d.hold == Some(true)) {
                    return pin(PinCause::CursorWithHold);
                }
                let mut result = Ok(());
                for declare in stmts {
                    match (&declare.declare_type, &declare.for_query) {
                        (Some(ast::DeclareType::Cursor), Some(query)) => {
                            result = result.and_then(|()| self.query(query))
                        }
                        _ => result = Err(NotReadOnly::new(Reason::OtherStatement)),
                    }
                }
                read_only_if(result)
            }
            Statement::Fetch { into: None, .. } | Statement::Close { .. } => {
                StatementClass::ReadOnly
            }
            Statement::Prepare { .. } | Statement::Execute { .. } => {
                pin(PinCause::PreparedStatement)
            }
            // The pool answers a `DEALLOCATE` of the client's statements itself or turns it
            // into one of its own names on the bound connection
            // (crates/proxy/src/pool/prepared.rs): it depends on no server.
            Statement::Deallocate { .. } => StatementClass::ReadOnly,
            Statement::CreateTable(t) if t.temporary => pin(PinCause::TempTable),
            Statement::CreateView(v) if v.temporary => pin(PinCause::TempTable),
            Statement::CreateSequence {
                temporary: true, ..
            } => pin(PinCause::TempTable),
            Statement::Call(_) => primary(Reason::UnknownFunction),
            Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_)
            | Statement::Truncate(_) => primary(Reason::Write),
            s if is_ddl(s) => primary(Reason::Ddl),
            _ => primary(Reason::OtherStatement),
        }
    }

    /// `EXPLAIN [ANALYZE] statement` is judged as the statement itself: `EXPLAIN ANALYZE`
    /// runs it, and a plain `EXPLAIN` of a write needs the primary's view of the table.
    fn explained(&self, statement: &Statement) -> Result<(), NotReadOnly> {
        match self.statement(statement) {
            StatementClass::ReadOnly => Ok(()),
            StatementClass::Primary(n) => Err(n),
            _ => Err(NotReadOnly::new(Reason::OtherStatement)),
        }
    }

    /// Read-only check of a query and everything nested in it (subqueries, CTEs, function
    /// calls in any clause, table functions in `FROM`).
    fn query(&self, query: &Query) -> Result<(), NotReadOnly> {
        let mut check = ReadOnlyCheck {
            functions: &self.functions,
            depth: 0,
        };
        match query.visit(&mut check) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(n) => Err(n),
        }
    }
}

/// The walk over a query's tree; stops at the first thing that is not read-only.
struct ReadOnlyCheck<'a> {
    functions: &'a FunctionPolicy,
    /// Nesting of queries: a data-modifying body at depth 1 is the statement itself (`WITH ...
    /// INSERT`), deeper it is a data-modifying CTE.
    depth: usize,
}

impl Visitor for ReadOnlyCheck<'_> {
    type Break = NotReadOnly;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<NotReadOnly> {
        self.depth += 1;
        if !query.locks.is_empty() {
            return ControlFlow::Break(NotReadOnly::new(Reason::LockingClause));
        }
        if query.for_clause.is_some() {
            return ControlFlow::Break(NotReadOnly::new(Reason::OtherStatement));
        }
        if let Some(reason) = modifying_body(&query.body) {
            let reason = if self.depth == 1 {
                reason
            } else {
                Reason::DataModifyingCte
            };
            return ControlFlow::Break(NotReadOnly::new(reason));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<NotReadOnly> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<NotReadOnly> {
        match &select.into {
            Some(into) if into.temporary => {
                ControlFlow::Break(NotReadOnly::pin(PinCause::TempTable))
            }
            Some(_) => ControlFlow::Break(NotReadOnly::new(Reason::SelectInto)),
            None => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<NotReadOnly> {
        let verdict = match factor {
            TableFactor::Table { args: None, .. }
            | TableFactor::Derived { .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::UNNEST { .. }
            | TableFactor::NestedJoin { .. } => Ok(()),
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.function(name, &[]),
            _ => Err(NotReadOnly::new(Reason::OtherStatement)),
        };
        match verdict {
            Ok(()) => ControlFlow::Continue(()),
            Err(n) => ControlFlow::Break(n),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<NotReadOnly> {
        let verdict = match expr {
            Expr::Function(f) => {
                let args: &[FunctionArg] = match &f.args {
                    FunctionArguments::List(list) => &list.args,
                    _ => &[],
                };
                self.function(&f.name, args)
            }
            // `a OPERATOR(schema.op) b`: an operator may call any function, except PostgreSQL's
            // own (psql's `\d` queries spell `OPERATOR(pg_catalog.~)`).
            Expr::BinaryOp {
                op: BinaryOperator::PGCustomBinaryOperator(parts),
                ..
            } => match parts.as_slice() {
                [schema, _] if schema == "pg_catalog" => Ok(()),
                _ => Err(NotReadOnly::new(Reason::UnknownFunction)),
            },
            _ => Ok(()),
        };
        match verdict {
            Ok(()) => ControlFlow::Continue(()),
            Err(n) => ControlFlow::Break(n),
        }
    }
}

impl ReadOnlyCheck<'_> {
    fn function(&self, name: &ObjectName, args: &[FunctionArg]) -> Result<(), NotReadOnly> {
        let Some(parts) = name_parts(name) else {
            return Err(NotReadOnly::new(Reason::UnknownFunction));
        };
        // set_config(name, value, is_local): only a literal `true` keeps it to the transaction.
        let local = matches!(
            args.get(2),
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))))
                if v.value == Value::Boolean(true)
        );
        self.functions.check(&parts, local)
    }
}

/// `Some(reason)` when a query body writes (`WITH ... INSERT/UPDATE/DELETE/MERGE`).
fn modifying_body(body: &SetExpr) -> Option<Reason> {
    match body {
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            Some(Reason::Write)
        }
        SetExpr::SetOperation { left, right, .. } => {
            modifying_body(left).or_else(|| modifying_body(right))
        }
        _ => None,
    }
}

/// Identifiers as PostgreSQL resolves them: unquoted ones fold to lower case, quoted ones stay.
fn name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(fold(ident)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

fn fold(ident: &ast::Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

fn dotted(name: &ObjectName) -> String {
    name_parts(name)
        .map(|parts| parts.join("."))
        .unwrap_or_else(|| name.to_string())
}

/// The access mode a `BEGIN`/`SET TRANSACTION` names, if any (the last one wins, as in
/// PostgreSQL).
fn access_mode(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        TransactionMode::IsolationLevel(_) => None,
    })
}

/// Whether a `BEGIN`/`SET TRANSACTION` asks for `SERIALIZABLE`, if it names a level.
fn isolation_serializable(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|m| match m {
        TransactionMode::IsolationLevel(level) => {
            Some(*level == TransactionIsolationLevel::Serializable)
        }
        TransactionMode::AccessMode(_) => None,
    })
}

fn session_setting(
    name: String,
    statement: &Statement,
    default_read_only: Option<bool>,
) -> SessionSetting {
    SessionSetting {
        name,
        replay: statement.to_string(),
        default_read_only,
        default_serializable: None,
    }
}

/// An isolation level's name as `SET` gives it (`'serializable'`, `serializable`); `None`
/// for `DEFAULT` and anything unreadable.
fn isolation_value(values: &[Expr]) -> Option<String> {
    match values {
        [Expr::Identifier(ident)] => Some(ident.value.to_lowercase()),
        [Expr::Value(v)] => match &v.value {
            Value::SingleQuotedString(s) => Some(s.to_lowercase()),
            _ => None,
        },
        _ => None,
    }
}

/// A boolean setting's value as PostgreSQL reads it (`on`, `true`, `yes`, `1`, prefixes...);
/// `None` for anything else (`DEFAULT`, expressions): the router then treats it as unknown.
fn boolean_value(values: &[Expr]) -> Option<bool> {
    let text = match values {
        [Expr::Identifier(ident)] => ident.value.to_lowercase(),
        [Expr::Value(v)] => match &v.value {
            Value::Boolean(b) => return Some(*b),
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.to_lowercase(),
            _ => return None,
        },
        _ => return None,
    };
    match text.as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Some(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Some(false),
        _ => None,
    }
}

fn set_statement(set: &ast::Set, statement: &Statement) -> StatementClass {
    use ast::Set;
    let local = |scope: &Option<ContextModifier>| matches!(scope, Some(ContextModifier::Local));
    match set {
        Set::SingleAssignment {
            scope,
            hivevar: false,
            variable,
            values,
        } => {
            if local(scope) {
                return StatementClass::SetLocal;
            }
            let name = dotted(variable);
            match name.as_str() {
                // `SET transaction_read_only = on` is `SET TRANSACTION READ ONLY`.
                "transaction_read_only" => StatementClass::SetTransaction {
                    read_only: boolean_value(values),
                    serializable: None,
                    text: statement.to_string(),
                },
                "transaction_isolation" => StatementClass::SetTransaction {
                    read_only: None,
                    serializable: Some(
                        isolation_value(values).is_none_or(|level| level == "serializable"),
                    ),
                    text: statement.to_string(),
                },
                "transaction_deferrable" => StatementClass::SetTransaction {
                    read_only: None,
                    serializable: None,
                    text: statement.to_string(),
                },
                "default_transaction_read_only" => {
                    // `SET ... = DEFAULT` (or an unreadable value) is the server default: off
                    // unless configured otherwise, which the router cannot know; treat it as
                    // read-write, the safe side.
                    let read_only = boolean_value(values).unwrap_or(false);
                    StatementClass::SetSession(session_setting(name, statement, Some(read_only)))
                }
                "default_transaction_isolation" => {
                    // `DEFAULT` is the server's default, taken to be read committed; an
                    // unreadable value is taken to be serializable (the primary then runs
                    // the session's reads).
                    let serializable = match values.as_slice() {
                        [Expr::Identifier(ident)]
                            if ident.value.eq_ignore_ascii_case("default") =>
                        {
                            false
                        }
                        _ => isolation_value(values).is_none_or(|level| level == "serializable"),
                    };
                    let mut setting = session_setting(name, statement, None);
                    setting.default_serializable = Some(serializable);
                    StatementClass::SetSession(setting)
                }
                _ => StatementClass::SetSession(session_setting(name, statement, None)),
            }
        }
        Set::SetTimeZone { local: true, .. } => StatementClass::SetLocal,
        Set::SetTimeZone { local: false, .. } => {
            StatementClass::SetSession(session_setting("timezone".to_string(), statement, None))
        }
        Set::SetRole {
            context_modifier, ..
        } => {
            if local(context_modifier) {
                StatementClass::SetLocal
            } else {
                StatementClass::SetSession(session_setting("role".to_string(), statement, None))
            }
        }
        Set::SetSessionAuthorization(param) => {
            if param.scope == ContextModifier::Local {
                StatementClass::SetLocal
            } else {
                StatementClass::SetSession(session_setting(
                    "session_authorization".to_string(),
                    statement,
                    None,
                ))
            }
        }
        Set::SetNames { .. } => StatementClass::SetSession(session_setting(
            "client_encoding".to_string(),
            statement,
            None,
        )),
        Set::SetTransaction {
            modes,
            session: true,
            ..
        } => {
            // Keyed by its own text: a later `SET default_transaction_read_only` is a separate
            // entry replayed after it, so the last one still wins.
            let text = statement.to_string();
            StatementClass::SetSession(SessionSetting {
                name: text.clone(),
                replay: text,
                default_read_only: access_mode(modes),
                default_serializable: isolation_serializable(modes),
            })
        }
        Set::SetTransaction {
            modes,
            session: false,
            ..
        } => StatementClass::SetTransaction {
            read_only: access_mode(modes),
            serializable: isolation_serializable(modes),
            text: statement.to_string(),
        },
        _ => StatementClass::Primary(NotReadOnly::new(Reason::OtherStatement)),
    }
}

/// Schema and privilege changes (the label only: every one of them goes to the primary either
/// way).
fn is_ddl(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateTable(_)
            | Statement::CreateView(_)
            | Statement::CreateIndex(_)
            | Statement::CreateRole(_)
            | Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateFunction(_)
            | Statement::CreateTrigger(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateSequence { .. }
            | Statement::CreateType { .. }
            | Statement::CreateDomain(_)
            | Statement::CreateExtension(_)
            | Statement::CreatePolicy(_)
            | Statement::CreateUser(_)
            | Statement::AlterTable(_)
            | Statement::AlterIndex { .. }
            | Statement::AlterView(_)
            | Statement::AlterRole { .. }
            | Statement::AlterSchema(_)
            | Statement::AlterType(_)
            | Statement::AlterFunction(_)
            | Statement::AlterPolicy(_)
            | Statement::AlterUser(_)
            | Statement::Drop { .. }
            | Statement::DropFunction(_)
            | Statement::DropProcedure { .. }
            | Statement::DropTrigger(_)
            | Statement::DropExtension(_)
            | Statement::DropDomain(_)
            | Statement::DropPolicy(_)
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Comment { .. }
            | Statement::RefreshMaterializedView(_)
    )
}
