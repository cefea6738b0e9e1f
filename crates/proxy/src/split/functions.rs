//! Which function calls may run on a replica: a built-in whitelist of PostgreSQL functions
//! that neither write nor depend on this session's earlier statements, plus the listener's
//! `read_only_functions`. Every other function (user functions above all: one can write) sends
//! its statement to the primary.

use super::reason::{PinCause, Reason};

/// Built-in functions (`pg_catalog`) that are immutable or stable, or volatile without side
/// effects (`random`, `clock_timestamp`, `pg_sleep`), and that a hot standby runs. Sorted, for
/// binary search. Type names called as functions (`int4(x)`, `date(x)`) are conversions.
/// Functions that fail during recovery (`pg_current_wal_lsn`, ...) are absent.
const BUILTIN_READ_ONLY: &[&str] = &[
    "abs",
    "acos",
    "acosd",
    "acosh",
    "age",
    "array",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_to_tsvector",
    "array_upper",
    "ascii",
    "asin",
    "asind",
    "asinh",
    "atan",
    "atan2",
    "atan2d",
    "atand",
    "atanh",
    "avg",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool",
    "bool_and",
    "bool_or",
    "broadcast",
    "btrim",
    "bytea",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char",
    "char_length",
    "character_length",
    "chr",
    "cidr",
    "clock_timestamp",
    "coalesce",
    "col_description",
    "concat",
    "concat_ws",
    "convert",
    "convert_from",
    "convert_to",
    "corr",
    "cos",
    "cosd",
    "cosh",
    "cot",
    "cotd",
    "count",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "current_catalog",
    "current_database",
    "current_date",
    "current_query",
    "current_role",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "date",
    "date_bin",
    "date_part",
    "date_trunc",
    "daterange",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "encode",
    "every",
    "exp",
    "extract",
    "factorial",
    "first_value",
    "float4",
    "float8",
    "floor",
    "format",
    "format_type",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "get_bit",
    "get_byte",
    "greatest",
    "has_any_column_privilege",
    "has_column_privilege",
    "has_database_privilege",
    "has_function_privilege",
    "has_schema_privilege",
    "has_sequence_privilege",
    "has_table_privilege",
    "has_tablespace_privilege",
    "has_type_privilege",
    "host",
    "hostmask",
    "inet",
    "inet_client_addr",
    "inet_client_port",
    "inet_merge",
    "inet_same_family",
    "inet_server_addr",
    "inet_server_port",
    "initcap",
    "int2",
    "int4",
    "int4range",
    "int8",
    "int8range",
    "interval",
    "isempty",
    "isfinite",
    "json",
    "json_agg",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_populate_record",
    "json_populate_recordset",
    "json_strip_nulls",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "jsonb",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_populate_record",
    "jsonb_populate_recordset",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last_value",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "log10",
    "lower",
    "lower_inc",
    "lower_inf",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "masklen",
    "max",
    "md5",
    "min",
    "min_scale",
    "mod",
    "mode",
    "name",
    "netmask",
    "network",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "numeric",
    "numrange",
    "obj_description",
    "octet_length",
    "oid",
    "overlay",
    "parse_ident",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_blocking_pids",
    "pg_char_to_encoding",
    "pg_collation_is_visible",
    "pg_column_size",
    "pg_conf_load_time",
    "pg_conversion_is_visible",
    "pg_database_size",
    "pg_describe_object",
    "pg_encoding_to_char",
    "pg_function_is_visible",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_function_arguments",
    "pg_get_function_identity_arguments",
    "pg_get_function_result",
    "pg_get_functiondef",
    "pg_get_indexdef",
    "pg_get_keywords",
    "pg_get_partkeydef",
    "pg_get_ruledef",
    "pg_get_serial_sequence",
    "pg_get_statisticsobjdef",
    "pg_get_triggerdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_has_role",
    "pg_index_column_has_property",
    "pg_indexam_has_property",
    "pg_indexes_size",
    "pg_is_in_recovery",
    "pg_is_other_temp_schema",
    "pg_is_wal_replay_paused",
    "pg_jit_available",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_my_temp_schema",
    "pg_opclass_is_visible",
    "pg_operator_is_visible",
    "pg_options_to_table",
    "pg_postmaster_start_time",
    "pg_relation_filenode",
    "pg_relation_filepath",
    "pg_relation_size",
    "pg_size_bytes",
    "pg_size_pretty",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_table_is_visible",
    "pg_table_size",
    "pg_tablespace_location",
    "pg_tablespace_size",
    "pg_total_relation_size",
    "pg_trigger_depth",
    "pg_ts_config_is_visible",
    "pg_type_is_visible",
    "pg_typeof",
    "pg_wal_lsn_diff",
    "phraseto_tsquery",
    "pi",
    "plainto_tsquery",
    "position",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "random_normal",
    "range_merge",
    "rank",
    "regclass",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "session_user",
    "set_masklen",
    "setweight",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "shobj_description",
    "sign",
    "sin",
    "sind",
    "sinh",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strip",
    "strpos",
    "substr",
    "substring",
    "sum",
    "tan",
    "tand",
    "tanh",
    "text",
    "time",
    "timeofday",
    "timestamp",
    "timestamptz",
    "to_ascii",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regcollation",
    "to_regnamespace",
    "to_regoper",
    "to_regoperator",
    "to_regproc",
    "to_regprocedure",
    "to_regrole",
    "to_regtype",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim",
    "trim_scale",
    "trunc",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsrange",
    "tstzrange",
    "tsvector_to_array",
    "unistr",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
    "user",
    "uuid",
    "var_pop",
    "var_samp",
    "varchar",
    "variance",
    "version",
    "websearch_to_tsquery",
    "width_bucket",
    "xmlagg",
    "xmlconcat",
    "xmlelement",
    "xmlforest",
];

/// Built-in functions that change state or depend on this session's server connection
/// (sequence state, transaction ids, notifications, advisory unlocks). Sorted.
const BUILTIN_WRITE: &[&str] = &[
    "currval",
    "lastval",
    "nextval",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_current_xact_id",
    "pg_notify",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "setval",
    "txid_current",
];

/// Session-level advisory locks: the lock lives as long as the server connection. Sorted.
const SESSION_ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// How function calls are judged: the built-in lists plus the listener's `read_only_functions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionPolicy {
    /// `read_only_functions` entries: `name` (any schema) or `schema.name`, spelled as
    /// PostgreSQL stores them (lower case unless created with quotes).
    read_only: Vec<String>,
}

/// A call that keeps its statement off the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReadOnly {
    pub reason: Reason,
    /// Set when the call also ties the session to its server connection.
    pub pin: Option<PinCause>,
}

impl NotReadOnly {
    pub fn new(reason: Reason) -> Self {
        NotReadOnly { reason, pin: None }
    }

    pub fn pin(cause: PinCause) -> Self {
        NotReadOnly {
            reason: Reason::of_pin(cause),
            pin: Some(cause),
        }
    }
}

impl FunctionPolicy {
    pub fn new(read_only_functions: impl IntoIterator<Item = String>) -> Self {
        FunctionPolicy {
            read_only: read_only_functions.into_iter().collect(),
        }
    }

    /// Judges a call of the function named by `parts` (identifiers already case-folded as
    /// PostgreSQL does). `local_set_config` tells whether a `set_config` call's third argument
    /// is the literal `true` (transaction-local).
    pub fn check(&self, parts: &[String], local_set_config: bool) -> Result<(), NotReadOnly> {
        let builtin = match parts {
            [name] => Some(name.as_str()),
            [schema, name] if schema == "pg_catalog" => Some(name.as_str()),
            _ => None,
        };
        if let Some(name) = builtin {
            if BUILTIN_READ_ONLY.binary_search(&name).is_ok() {
                return Ok(());
            }
            if SESSION_ADVISORY_LOCKS.binary_search(&name).is_ok() {
                return Err(NotReadOnly::pin(PinCause::AdvisoryLock));
            }
            if name == "set_config" {
                return Err(if local_set_config {
                    NotReadOnly::new(Reason::WriteFunction)
                } else {
                    NotReadOnly::pin(PinCause::SessionStateFunction)
                });
            }
            if BUILTIN_WRITE.binary_search(&name).is_ok() || name.starts_with("lo_") {
                return Err(NotReadOnly::new(Reason::WriteFunction));
            }
        }
        if self.is_listed(parts) {
            Ok(())
        } else {
            Err(NotReadOnly::new(Reason::UnknownFunction))
        }
    }

    fn is_listed(&self, parts: &[String]) -> bool {
        let (schema, name) = match parts {
            [name] => (None, name),
            [schema, name] => (Some(schema), name),
            _ => return false,
        };
        self.read_only
            .iter()
            .any(|entry| match entry.split_once('.') {
                None => entry == name,
                Some((s, n)) => schema.is_some_and(|schema| schema == s) && n == name,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(dotted: &str) -> Vec<String> {
        dotted.split('.').map(str::to_string).collect()
    }

    #[test]
    fn lists_are_sorted_and_disjoint() {
        for list in [BUILTIN_READ_ONLY, BUILTIN_WRITE, SESSION_ADVISORY_LOCKS] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
        for name in BUILTIN_WRITE.iter().chain(SESSION_ADVISORY_LOCKS) {
            assert!(BUILTIN_READ_ONLY.binary_search(name).is_err(), "{name}");
        }
    }

    #[test]
    fn builtins_unqualified_or_in_pg_catalog() {
        let policy = FunctionPolicy::default();
        assert_eq!(policy.check(&parts("now"), false), Ok(()));
        assert_eq!(policy.check(&parts("pg_catalog.now"), false), Ok(()));
        let unknown = Err(NotReadOnly::new(Reason::UnknownFunction));
        assert_eq!(policy.check(&parts("public.now"), false), unknown);
        assert_eq!(policy.check(&parts("db.pg_catalog.now"), false), unknown);
        assert_eq!(policy.check(&parts("pg_current_wal_lsn"), false), unknown);
    }

    #[test]
    fn state_changing_builtins() {
        let policy = FunctionPolicy::default();
        let write = Err(NotReadOnly::new(Reason::WriteFunction));
        for name in [
            "nextval",
            "pg_catalog.setval",
            "txid_current",
            "pg_current_xact_id",
            "pg_notify",
            "lo_import",
            "lo_unlink",
            "pg_advisory_xact_lock",
        ] {
            assert_eq!(policy.check(&parts(name), false), write, "{name}");
        }
        assert_eq!(
            policy.check(&parts("pg_try_advisory_lock"), false),
            Err(NotReadOnly::pin(PinCause::AdvisoryLock))
        );
        assert_eq!(policy.check(&parts("set_config"), true), write);
        assert_eq!(
            policy.check(&parts("set_config"), false),
            Err(NotReadOnly::pin(PinCause::SessionStateFunction))
        );
    }

    #[test]
    fn configured_functions_by_name_or_schema_and_name() {
        let policy = FunctionPolicy::new(["get_user".to_string(), "app.price".to_string()]);
        assert_eq!(policy.check(&parts("get_user"), false), Ok(()));
        assert_eq!(policy.check(&parts("app.get_user"), false), Ok(()));
        assert_eq!(policy.check(&parts("app.price"), false), Ok(()));
        let unknown = Err(NotReadOnly::new(Reason::UnknownFunction));
        assert_eq!(policy.check(&parts("price"), false), unknown);
        assert_eq!(policy.check(&parts("other.price"), false), unknown);
        assert_eq!(policy.check(&parts("Get_User"), false), unknown);
    }
}
