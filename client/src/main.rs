//! `berth`: the client agent (`berth agent`) and the operator CLI.
//!
//! Only the command line exists so far; the agent and the subcommands arrive with their
//! issues (see README.md).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "berth", version, about = "Berth client agent and operator CLI")]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    anyhow::bail!("berth is not implemented yet; see README.md for the roadmap")
}
