//! In-memory backend (tests and simulation only).
