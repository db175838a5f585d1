//! Shared by every Berth binary: Consul-compatible wire types, command-line and config-file
//! helpers, and (later) the typed HTTP client.

pub mod acl;
pub mod agent;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod connect;
pub mod duration;
pub mod filter;
pub mod iam;
pub mod metrics;
pub mod secret_file;
pub mod types;

pub use duration::{format_duration, parse_duration};
