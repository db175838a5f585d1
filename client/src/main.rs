//! `berth`: the client agent (`berth agent`) and the operator CLI.
//!
//! Flags take one dash or two (`-token`, `--token`): arguments go through
//! `berth_api::cli::normalize_args` before clap sees them. A failure prints one line,
//! `Error: <what is wrong>`, on stderr and exits 1; bad usage exits 2.

mod acl;
mod agent;
mod config;
mod connect;
mod http;
mod intention;
mod login;
mod output;

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Berth client agent and operator CLI",
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per top-level command; `agent`, `catalog`, `kv`, `connect`... join here.
#[derive(Subcommand, Debug)]
enum Command {
    /// Manage ACLs: bootstrap, tokens, policies, roles, auth methods and binding rules.
    Acl(acl::AclArgs),
    /// Log in with an auth method and write the new token's SecretID to a file.
    Login(login::LoginArgs),
    /// Destroy the token given with -token or -token-file (one made by `berth login`).
    Logout(login::LogoutArgs),
    /// Write, read, list and delete config entries (service-defaults, proxy-defaults,
    /// service-intentions).
    Config(config::ConfigArgs),
    /// Create, read, list, check, match and delete intentions.
    Intention(intention::IntentionArgs),
    /// Run the client agent of a task: agent API, anti-entropy, leaf certificates, xDS.
    Agent(agent::AgentArgs),
    /// Service mesh helpers: `connect envoy` bootstraps or runs a sidecar's Envoy.
    Connect(connect::ConnectArgs),
}

/// A mistake in how the command was called, found after parsing: exit code 2, as clap's own.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Acl(a) => acl::run(a).await,
        Command::Login(a) => login::login(a).await,
        Command::Logout(a) => login::logout(a).await,
        Command::Config(a) => config::run(a).await,
        Command::Intention(a) => intention::run(a).await,
        Command::Agent(a) => agent::run(a).await,
        Command::Connect(a) => connect::run(a).await,
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    // The agent serves HTTP, xDS and its watches at once; a CLI call is one request.
    let mut rt = if matches!(cli.command, Command::Agent(_)) {
        // A task's agent should stay small: one arena per worker would keep freed memory.
        berth_server::util::limit_malloc_arenas();
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let result = rt
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e));
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::ffi::OsString;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(berth_api::cli::normalize_args(
            args.iter().map(OsString::from),
        ))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn common_flags_go_anywhere_with_one_dash_or_two() {
        let cli = parse(&[
            "berth",
            "acl",
            "token",
            "read",
            "-id",
            "x",
            "-token",
            "t",
            "--http-addr=h:1",
            "-format",
            "json",
        ])
        .unwrap();
        let Command::Acl(a) = cli.command else {
            panic!("not acl")
        };
        assert_eq!(a.http.token.as_deref(), Some("t"));
        assert_eq!(a.http.http_addr, "h:1");
        assert_eq!(a.out.format, output::Format::Json);
        let cli = parse(&["berth", "acl", "-token", "t2", "policy", "list"]).unwrap();
        let Command::Acl(a) = cli.command else {
            panic!("not acl")
        };
        assert_eq!(a.http.token.as_deref(), Some("t2"));
    }

    #[test]
    fn bad_usage_is_refused_by_clap() {
        let usage = |args: &[&str]| {
            parse(args)
                .map(|_| ())
                .expect_err("should be refused")
                .exit_code()
        };
        assert_eq!(
            usage(&[
                "berth",
                "login",
                "-method",
                "m",
                "-token-sink-file",
                "f",
                "-meta",
                "novalue"
            ]),
            2
        );
        assert_eq!(usage(&["berth", "acl", "token", "read"]), 2);
        assert_eq!(
            usage(&["berth", "acl", "token", "create", "-var", "name:web"]),
            2,
            "-var needs -templated-policy"
        );
        assert_eq!(
            usage(&[
                "berth",
                "login",
                "-method",
                "m",
                "-token-sink-file",
                "f",
                "-aws-region",
                "r"
            ]),
            2,
            "aws flags need -aws-auto-bearer-token"
        );
    }

    #[test]
    fn one_line_errors() {
        let e = anyhow::anyhow!("403 Forbidden: line one\nline two").context("cannot do it");
        assert_eq!(
            one_line(&e),
            "cannot do it: 403 Forbidden: line one line two"
        );
    }
}
