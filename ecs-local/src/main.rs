//! `berth-ecs-local`: runs ECS task definitions as local processes, one network namespace
//! per task, with the task metadata and credentials endpoints at 169.254.170.2 inside each.

mod container;
mod control;
mod credentials;
mod daemon;
mod deps;
mod ecs_api;
mod health;
mod metadata_server;
mod net;
mod plan;
mod sdk_error;
mod task;
mod taskdef;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use control::{DaemonInfo, Request};

#[derive(Parser, Debug)]
#[command(
    name = "berth-ecs-local",
    version,
    about = "Runs ECS task definitions as local processes, one network namespace per task."
)]
struct Cli {
    /// Where the daemon keeps its socket, daemon.json and task logs.
    #[arg(
        long,
        global = true,
        env = "BERTH_ECS_LOCAL_DIR",
        default_value = "/run/berth-ecs-local"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs in the foreground and owns all tasks (as root).
    Daemon {
        /// STS endpoint for task role credentials (default: the region's).
        #[arg(long)]
        sts_endpoint: Option<String>,
        /// Register tasks with this ECS API (e.g. moto).
        #[arg(long)]
        ecs_endpoint: Option<String>,
        #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
        region: String,
        #[arg(long, default_value = "default")]
        cluster: String,
        /// Subnet for RunTask's awsvpc configuration (with --ecs-endpoint).
        #[arg(long)]
        subnet: Vec<String>,
        #[arg(long)]
        security_group: Vec<String>,
        /// Upper bound on containers' stopTimeout, in seconds.
        #[arg(long, default_value_t = 120)]
        max_stop_timeout: u64,
    },
    /// Starts a task from a register-task-definition JSON file; prints its ARN.
    Run {
        file: PathBuf,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// One line per task: id, family, status, IP.
    Ps,
    /// The task's metadata document with StoppedReason.
    Describe { task: String },
    /// Prints the logs of the task's containers (or of one).
    Logs {
        task: String,
        container: Option<String>,
    },
    /// Stops the task and waits until it has stopped.
    Stop { task: String },
    /// Stops every task and the daemon.
    Down,
    /// Removes what a daemon that was killed left behind (processes, namespaces, bridge).
    Cleanup,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("berth-ecs-local: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.state_dir;
    match cli.cmd {
        Cmd::Daemon {
            sts_endpoint,
            ecs_endpoint,
            region,
            cluster,
            subnet,
            security_group,
            max_stop_timeout,
        } => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let opts = daemon::Options {
                state_dir: dir,
                sts_endpoint,
                ecs_endpoint,
                region,
                cluster,
                subnets: subnet,
                security_groups: security_group,
                max_stop_timeout: Duration::from_secs(max_stop_timeout),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let r = rt.block_on(daemon::run(opts));
            // Everything is cleaned up by now; idle SDK connections need not linger.
            rt.shutdown_timeout(Duration::from_millis(100));
            r
        }
        Cmd::Run { file, cluster } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // Checked here too, so a bad file is reported even without a daemon.
            taskdef::parse(&text).with_context(|| file.display().to_string())?;
            let data = call(
                &dir,
                Request::Run {
                    definition: text,
                    cluster,
                },
            )
            .with_context(|| file.display().to_string())?;
            println!("{}", data["taskArn"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Ps => {
            let data = call(&dir, Request::Ps)?;
            for t in data.as_array().into_iter().flatten() {
                let f = |k: &str| t[k].as_str().unwrap_or("-").to_string();
                println!("{} {} {} {}", f("id"), f("family"), f("status"), f("ip"));
            }
            Ok(())
        }
        Cmd::Describe { task } => {
            let data = call(&dir, Request::Describe { task })?;
            println!("{}", serde_json::to_string_pretty(&data)?);
            Ok(())
        }
        Cmd::Logs { task, container } => {
            let data = call(&dir, Request::Logs { task, container })?;
            let logs = data.as_array().cloned().unwrap_or_default();
            let many = logs.len() > 1;
            let mut out = std::io::stdout().lock();
            for l in logs {
                let path = Path::new(l["path"].as_str().unwrap_or_default()).to_path_buf();
                let text = std::fs::read(&path).unwrap_or_default();
                if many {
                    writeln!(
                        out,
                        "==> {} <==",
                        l["container"].as_str().unwrap_or_default()
                    )?;
                }
                out.write_all(&text)?;
            }
            Ok(())
        }
        Cmd::Stop { task } => {
            call(&dir, Request::Stop { task })?;
            Ok(())
        }
        Cmd::Down => {
            let pid = read_info(&dir).map(|i| i.pid);
            call(&dir, Request::Down)?;
            if let Some(pid) = pid {
                wait_gone(pid as i32, Duration::from_secs(10));
            }
            Ok(())
        }
        Cmd::Cleanup => cleanup(&dir),
    }
}

fn call(dir: &Path, req: Request) -> anyhow::Result<serde_json::Value> {
    let r = control::request(dir, &req)?;
    if r.ok {
        Ok(r.data)
    } else {
        anyhow::bail!("{}", r.error.unwrap_or_else(|| "failed".into()))
    }
}

fn read_info(dir: &Path) -> Option<DaemonInfo> {
    let text = std::fs::read(dir.join(control::INFO)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Running, as opposed to gone or a zombie nobody has reaped yet (a harness that started
/// the daemon reaps it only after `down` returns).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

fn wait_gone(pid: i32, patience: Duration) {
    let deadline = Instant::now() + patience;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// For test harnesses after a daemon was killed: its tasks' processes, namespaces, veths and
/// bridge go, and so do its files.
fn cleanup(dir: &Path) -> anyhow::Result<()> {
    let Some(info) = read_info(dir) else {
        return Ok(());
    };
    if alive(info.pid as i32) {
        anyhow::bail!("the daemon (pid {}) is still running: use `down`", info.pid);
    }
    let prefix = format!("{}-", info.bridge);
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) {
            continue;
        }
        if let Ok(f) = net::open_netns(&name)
            && let Ok(id) = container::ns_id_of(&f)
        {
            for pid in container::pids_in_ns("net", id) {
                container::signal(pid, libc::SIGKILL);
            }
        }
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(net::cleanup_leftovers(&info.bridge));
    let _ = std::fs::remove_file(dir.join(control::SOCKET));
    let _ = std::fs::remove_file(dir.join(control::INFO));
    Ok(())
}
