//! PostgreSQL control: initdb, pg_ctl, pg_basebackup, pg_rewind, config files, state queries
