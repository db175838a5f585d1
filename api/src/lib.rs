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

/// An error with its sources, on one line: the top-level message of an HTTP or SDK error
/// alone rarely says what went wrong ("error sending request", "dispatch failure").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}
