//! `berth-envoy-entrypoint`: PID 1 of the proxy container: runs Envoy, forwards signals, drains on shutdown.
//!
//! Only the command line exists so far; the behaviour arrives with its issue (see README.md).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-envoy-entrypoint",
    version,
    about = "PID 1 of the proxy container: runs Envoy, forwards signals, drains on shutdown."
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    anyhow::bail!("berth-envoy-entrypoint is not implemented yet; see README.md for the roadmap")
}
