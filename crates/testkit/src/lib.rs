//! Test and demo harness: temporary etcd and pgherd agents on loopback
