//! The HA engine: a pure state machine.
//!
//! Each cycle the agent (or the simulator) gathers an [`Observation`] — the DCS cluster view,
//! the local PostgreSQL state, peer probes and the current monotonic time — and calls
//! [`Engine::step`]. The engine returns a [`Decision`]: ordered [`Action`]s plus one human
//! sentence saying why. It performs no I/O and never reads a clock, so every decision can be
//! replayed in a deterministic simulation.

#![forbid(unsafe_code)]

mod action;
mod election;
mod engine;
mod manual;
mod observation;
mod rejoin;
mod schedule;
mod sync;

pub use action::{Action, Decision, DemoteMode, Replication};
pub use election::{Candidate, CandidateRank, RaceRules};
pub use engine::{upstream_for, wants_peer_probes, Engine};
pub use observation::{
    AsyncAction, DataDir, LocalPg, Millis, Observation, PeerProbe, PeerReply, Settings, StandbyLink,
};
pub use rejoin::{diverged, LocalWal};
pub use schedule::{scheduled, Scheduled};
pub use sync::parse_standby_names;
