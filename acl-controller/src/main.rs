//! `berth-acl-controller`: Sets up ECS auth methods and removes tokens and services of stopped tasks.
//!
//! Only the command line exists so far; the behaviour arrives with its issue (see README.md).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-acl-controller",
    version,
    about = "Sets up ECS auth methods and removes tokens and services of stopped tasks."
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    anyhow::bail!("berth-acl-controller is not implemented yet; see README.md for the roadmap")
}
