//! Operator commands, patronictl-compatible: thin clients of the DCS and the REST API.

pub mod list;
pub mod table;
