//! `berth-acl-controller`: one per ECS cluster. It sets up the ACL objects ECS tasks log in
//! with (auth methods, the client role, binding rules) and, in later work, removes what
//! stopped tasks left behind.

mod api;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-acl-controller",
    version,
    about = "Sets up ECS auth methods and removes tokens and services of stopped tasks."
)]
struct Args {
    /// A server's HTTP API.
    #[arg(
        long = "http-addr",
        env = "BERTH_HTTP_ADDR",
        default_value = "http://127.0.0.1:8500"
    )]
    http_addr: String,
    /// A token with acl:write (e.g. the bootstrap token).
    #[arg(long, env = "BERTH_HTTP_TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    #[arg(long = "token-file", env = "BERTH_HTTP_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The ECS cluster (name or ARN) whose tasks this controller looks after.
    #[arg(long, env = "BERTH_ECS_CLUSTER")]
    cluster: Option<String>,
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// [default: from the controller's own task metadata, else aws]
    #[arg(long, env = "BERTH_AWS_PARTITION")]
    partition: Option<String>,
    /// [default: from the controller's own task metadata]
    #[arg(long, env = "BERTH_AWS_ACCOUNT")]
    account: Option<String>,
    /// Task roles under this path may log in.
    #[arg(
        long = "iam-role-path",
        env = "BERTH_IAM_ROLE_PATH",
        default_value = "/berth/"
    )]
    iam_role_path: String,
    /// Written into the auth methods' STSEndpoint.
    #[arg(long = "sts-endpoint", env = "BERTH_STS_ENDPOINT")]
    sts_endpoint: Option<String>,
    /// Written into the auth methods' IAMEndpoint.
    #[arg(long = "iam-endpoint", env = "BERTH_IAM_ENDPOINT")]
    iam_endpoint: Option<String>,
    /// The auth methods' ServerIDHeaderValue.
    #[arg(
        long = "server-id-header-value",
        env = "BERTH_IAM_SERVER_ID_HEADER_VALUE"
    )]
    server_id_header_value: Option<String>,
    /// Set up once, then exit 0.
    #[arg(long)]
    once: bool,
    #[arg(long = "log-json")]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    let filter = tracing_subscriber::EnvFilter::try_new("warn,berth_acl_controller=info")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: task logs go to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        b.json().init();
    } else {
        b.init();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-acl-controller: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-acl-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let task = match berth_ecs::metadata::MetadataClient::from_env() {
        Ok(m) => Some(m.task().await?),
        Err(_) => None,
    };
    let account = args
        .account
        .clone()
        .or_else(|| task.as_ref().and_then(|t| t.account().map(str::to_string)))
        .context("no AWS account: give -account (or run in an ECS task)")?;
    let partition = args
        .partition
        .clone()
        .or_else(|| {
            task.as_ref()
                .and_then(|t| t.partition().map(str::to_string))
        })
        .unwrap_or_else(|| "aws".into());
    let cfg = setup::SetupConfig {
        partition,
        account,
        iam_role_path: args.iam_role_path.clone(),
        sts_endpoint: args.sts_endpoint.clone(),
        iam_endpoint: args.iam_endpoint.clone(),
        server_id_header_value: args.server_id_header_value.clone(),
    };
    let api = api::Api::new(&args.http_addr, token);
    let changes = setup::run(&api, &cfg).await?;
    for c in &changes.0 {
        tracing::info!("{c}");
    }
    if changes.0.is_empty() {
        tracing::info!("ACL setup already complete");
    }
    anyhow::ensure!(
        args.once,
        "only -once is supported so far: reconciling stopped tasks arrives with the controller's issue"
    );
    let _ = (&args.cluster, &args.region);
    Ok(())
}
