//! Consensus: openraft 0.9 wired to Berth's storage and RPC port.
//!
//! - `log_store`: the Raft log and vote, durable in redb, with group commit.
//! - `state_machine`: applies committed entries to [`crate::state::State`]; snapshots to a file.
//! - `network`: openraft's RPCs over the gRPC port.

pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;
