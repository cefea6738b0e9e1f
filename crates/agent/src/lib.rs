//! The agent: runs the HA engine against the real DCS and PostgreSQL
