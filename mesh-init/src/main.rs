//! `berth-mesh-init`: One-shot task enrollment: IAM login, service and proxy registration, Envoy bootstrap.
//!
//! Only the command line exists so far; the behaviour arrives with its issue (see README.md).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-mesh-init",
    version,
    about = "One-shot task enrollment: IAM login, service and proxy registration, Envoy bootstrap."
)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    anyhow::bail!("berth-mesh-init is not implemented yet; see README.md for the roadmap")
}
