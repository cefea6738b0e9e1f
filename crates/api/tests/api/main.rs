//! Integration tests of the read-only REST API: the snapshot is the input, the DCS is a double.

mod common;
mod endpoints;
mod health;
mod http;
