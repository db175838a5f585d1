//! `berth-health-sync`: Mirrors ECS container health into Berth checks and deregisters the task on SIGTERM.
//!
//! Only the command line exists so far; the behaviour arrives with its issue (see README.md).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-health-sync",
    version,
    about = "Mirrors ECS container health into Berth checks and deregisters the task on SIGTERM."
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    anyhow::bail!("berth-health-sync is not implemented yet; see README.md for the roadmap")
}
