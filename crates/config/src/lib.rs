//! Patroni-compatible YAML configuration: parsing, PATRONI_* overrides, validation
