//! The REST API: Patroni-compatible health endpoints, status, metrics and management calls
