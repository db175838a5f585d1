//! `berth-envoy-entrypoint`: PID 1 of the proxy container: runs Envoy, forwards signals,
//! drains on shutdown. Also the container health check (`ready`), a dial check (`net-dial`)
//! and a wrapper for application containers that must outlive the proxy's drain
//! (`app-entrypoint`).

mod admin;
mod drain;
mod supervise;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Where Envoy's admin listens when neither a flag nor the bootstrap says otherwise; the
/// port Berth's generated bootstrap uses.
const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:19000";
const ADMIN_ENV: &str = "BERTH_ENVOY_ADMIN_ADDR";

#[derive(Parser, Debug)]
#[command(
    name = "berth-envoy-entrypoint",
    version,
    about = "PID 1 of the proxy container: runs Envoy, forwards signals, drains on shutdown.",
    long_about = "PID 1 of the proxy container: runs Envoy, forwards signals, drains on shutdown.\n\n\
        berth-envoy-entrypoint [flags] <command> [args...] runs the command (Envoy) in its own \
        process group and forwards every signal except SIGTERM to it. On SIGTERM it starts \
        Envoy's graceful drain of inbound listeners, keeps Envoy serving until every \
        application container of the task has STOPPED (ECS task metadata v4), then stops Envoy \
        and exits with its exit code.",
    subcommand_value_name = "COMMAND"
)]
struct Cli {
    /// Envoy's admin address (HOST:PORT) for the drain; default: the bootstrap's
    /// `admin.address` from the command's `-c FILE`, else 127.0.0.1:19000.
    #[arg(long, env = ADMIN_ENV, value_name = "HOST:PORT", value_parser = admin::parse_host_port)]
    admin_addr: Option<admin::HostPort>,

    /// How long the task metadata endpoint may stay unreachable during the drain before
    /// Envoy is stopped anyway.
    #[arg(long, default_value = "2m", value_parser = duration_arg, value_name = "DURATION")]
    metadata_patience: Duration,

    /// Log level: trace, debug, info, warn or error.
    #[arg(long, env = "BERTH_LOG_LEVEL", default_value = "info")]
    log_level: String,

    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Exits 0 when Envoy's admin `/ready` answers 200 `LIVE`, else 1 (the proxy
    /// container's health check).
    Ready {
        /// Envoy's admin address.
        #[arg(
            long,
            env = ADMIN_ENV,
            default_value = DEFAULT_ADMIN_ADDR,
            value_name = "HOST:PORT",
            value_parser = admin::parse_host_port
        )]
        admin_addr: admin::HostPort,
    },
    /// Exits 0 when a TCP connection to HOST:PORT opens within 2 seconds, else 1.
    NetDial {
        #[arg(value_name = "HOST:PORT", value_parser = admin::parse_host_port)]
        addr: admin::HostPort,
    },
    /// Runs an application command; on SIGTERM waits the shutdown delay before passing
    /// SIGTERM on, so the app keeps serving while the proxy drains.
    AppEntrypoint {
        /// How long to hold SIGTERM back (`10s`, `500ms`, or a number of seconds).
        #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
        shutdown_delay: Duration,

        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<OsString>,
    },
    /// The command to supervise, e.g. `envoy -c /berth/envoy-bootstrap.json`.
    #[command(external_subcommand)]
    Run(Vec<OsString>),
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    berth_api::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// The supervised command exactly as given: `normalize_args` rewrites single-dash long flags
/// for clap, and would turn the wrapped program's own `-flag`s into `--flag`s. It maps
/// arguments one to one and the command is always the tail of the line, so the last
/// `len` original arguments are the command.
fn raw_tail(original: &[OsString], len: usize) -> Vec<OsString> {
    original[original.len().saturating_sub(len)..].to_vec()
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "warn,berth_envoy_entrypoint={level},berth_ecs={level}"
    ))
    .with_context(|| format!("bad -log-level {level:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn main() {
    let original: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(berth_api::cli::normalize_args(original.clone())) {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    std::process::exit(match run(cli, &original) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-envoy-entrypoint: {e:#}");
            1
        }
    });
}

/// Help and version as clap prints them; a usage error on one line with exit code 2, since
/// health checks and ECS keep only a little of a command's output.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.render().to_string();
    let line = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("berth-envoy-entrypoint: {line} (see --help)");
    std::process::exit(2)
}

fn run(cli: Cli, original: &[OsString]) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.mode {
        Mode::Ready { admin_addr } => Ok(rt.block_on(admin::ready(&admin_addr))),
        Mode::NetDial { addr } => Ok(rt.block_on(admin::net_dial(&addr))),
        Mode::AppEntrypoint {
            shutdown_delay,
            command,
        } => {
            init_logging(&cli.log_level)?;
            let command = raw_tail(original, command.len());
            rt.block_on(supervise::supervise(&command, async move {
                tracing::info!(
                    delay = ?shutdown_delay,
                    "passing SIGTERM to the application after the shutdown delay"
                );
                tokio::time::sleep(shutdown_delay).await;
            }))
            .context("cannot supervise the application")
        }
        Mode::Run(command) => {
            init_logging(&cli.log_level)?;
            let command = raw_tail(original, command.len());
            let settings = drain::Settings {
                admin_addr: cli.admin_addr,
                metadata_patience: cli.metadata_patience,
                poll: Duration::from_millis(150),
            };
            let for_drain = command.clone();
            rt.block_on(supervise::supervise(&command, async move {
                drain::drain_and_wait(&settings, &for_drain).await
            }))
            .context("cannot supervise Envoy")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(berth_api::cli::normalize_args(
            args.iter().map(OsString::from),
        ))
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn anything_else_is_the_command_to_supervise_verbatim() {
        let line = [
            "berth-envoy-entrypoint",
            "-admin-addr",
            "127.0.0.1:19001",
            "java",
            "-jar",
            "app.jar",
            "--x",
        ];
        let cli = parse(&line).unwrap();
        assert_eq!(
            cli.admin_addr.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:19001")
        );
        let Mode::Run(cmd) = cli.mode else {
            panic!("not run mode: {:?}", cli.mode)
        };
        // clap saw `--jar`; the child must get `-jar`.
        assert_eq!(cmd.len(), 4);
        assert_eq!(
            raw_tail(&os(&line), cmd.len()),
            os(&["java", "-jar", "app.jar", "--x"])
        );
    }

    #[test]
    fn app_entrypoint_takes_the_delay_then_the_command() {
        let line = [
            "berth-envoy-entrypoint",
            "app-entrypoint",
            "-shutdown-delay",
            "500ms",
            "sh",
            "-c",
            "exec app -listen :80",
        ];
        let cli = parse(&line).unwrap();
        let Mode::AppEntrypoint {
            shutdown_delay,
            command,
        } = cli.mode
        else {
            panic!("not app-entrypoint: {:?}", cli.mode)
        };
        assert_eq!(shutdown_delay, Duration::from_millis(500));
        assert_eq!(
            raw_tail(&os(&line), command.len()),
            os(&["sh", "-c", "exec app -listen :80"])
        );
        // A plain number is seconds.
        let cli = parse(&["x", "app-entrypoint", "-shutdown-delay", "10", "app"]).unwrap();
        assert!(
            matches!(cli.mode, Mode::AppEntrypoint { shutdown_delay, .. }
            if shutdown_delay == Duration::from_secs(10))
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for line in [
            &["x", "app-entrypoint", "-shutdown-delay", "soon", "app"][..],
            &["x", "app-entrypoint", "-shutdown-delay", "1s"],
            &["x", "net-dial"],
            &["x", "net-dial", "localhost"],
            &["x", "net-dial", "localhost:http"],
            &["x", "net-dial", ":80"],
            &["x"],
        ] {
            let e = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{line:?}: {e}");
        }
    }

    #[test]
    fn ready_and_net_dial_parse() {
        let cli = parse(&["x", "ready", "-admin-addr", "127.0.0.1:5"]).unwrap();
        assert!(
            matches!(cli.mode, Mode::Ready { admin_addr } if admin_addr.to_string() == "127.0.0.1:5")
        );
        let cli = parse(&["x", "net-dial", "[::1]:443"]).unwrap();
        assert!(
            matches!(cli.mode, Mode::NetDial { addr } if addr.host == "::1" && addr.port == 443)
        );
    }
}
