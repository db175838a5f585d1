//! `berth-ecs-local`: Runs ECS task definitions as local processes, one network namespace per task.
//!
//! Only the command line exists so far; the behaviour arrives with its issue (see README.md).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-ecs-local",
    version,
    about = "Runs ECS task definitions as local processes, one network namespace per task."
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    anyhow::bail!("berth-ecs-local is not implemented yet; see README.md for the roadmap")
}
