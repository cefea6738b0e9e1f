//! Integration tests of the REST API: the snapshot is the input, the DCS is a double (fixed or
//! in-memory), TLS uses generated certificates.

mod common;
mod endpoints;
mod health;
mod http;
mod manage;
mod tls;
