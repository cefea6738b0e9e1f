//! etcd v3 backend.
