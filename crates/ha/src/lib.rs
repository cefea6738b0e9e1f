//! The pure HA engine: cluster view + local state + time in, actions with reasons out
