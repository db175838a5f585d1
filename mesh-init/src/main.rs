//! `berth-mesh-init`: enrolls one ECS task in the mesh, once, before its proxy starts. It
//! reads the task from ECS task metadata, logs in with the task role (the service auth
//! method), registers the service and its sidecar proxy with the task's agent (one
//! critical check per health-synced container), writes the Envoy bootstrap and the token
//! (0600) to `bootstrapDir`, and puts Berth's binaries there for the other containers.

mod install;
mod register;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_ecs::TaskConfig;
use berth_ecs::agent::AgentHttp;
use berth_ecs::metadata::MetadataClient;
use berth_ecs::servers::ServersHttp;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-mesh-init",
    version,
    about = "One-shot task enrollment: IAM login, service and proxy registration, Envoy bootstrap.",
    long_about = "Reads BERTH_ECS_CONFIG_JSON and the ECS task metadata (ECS_CONTAINER_METADATA_URI_V4)."
)]
struct Args {
    /// The task's agent API.
    #[arg(long = "agent-http-addr", env = "BERTH_AGENT_HTTP_ADDR", default_value = berth_ecs::agent::DEFAULT_AGENT_ADDR)]
    agent_http_addr: String,
    /// The agent's xDS address, written into the Envoy bootstrap.
    #[arg(
        long = "xds-addr",
        env = "BERTH_XDS_ADDR",
        default_value = "127.0.0.1:8502"
    )]
    xds_addr: std::net::SocketAddr,
    /// Envoy's admin address in the bootstrap (loopback of the task).
    #[arg(long = "envoy-admin-addr", default_value = "127.0.0.1:19000")]
    envoy_admin_addr: std::net::SocketAddr,
}

/// A configuration error exits 2, as a usage error does; anything else 1.
struct ConfigProblem(String);

fn main() -> ExitCode {
    let args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    let cfg = match berth_ecs::start(&|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-mesh-init: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log_level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-mesh-init: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ConfigProblem>() {
                Some(ConfigProblem(m)) => {
                    eprintln!("berth-mesh-init: {m}");
                    return ExitCode::from(2);
                }
                None => eprintln!("berth-mesh-init: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::fmt::Debug for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigProblem {}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "warn,aws_runtime=error,berth_mesh_init={level},berth_ecs={level}"
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: task logs go to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(args: Args, cfg: TaskConfig) -> anyhow::Result<()> {
    let start = Instant::now();
    if cfg.service.port == 0 {
        return Err(ConfigProblem(format!(
            "{}: service.port is missing (the application's port)",
            berth_ecs::CONFIG_ENV
        ))
        .into());
    }
    let meta = MetadataClient::from_env()?;
    let task = meta.task_with_retry(Duration::from_secs(10)).await?;
    anyhow::ensure!(
        !task.task_arn.is_empty(),
        "the task metadata has no TaskARN"
    );
    let servers = ServersHttp::new(&cfg)?;
    let agent = AgentHttp::new(args.agent_http_addr.clone());
    let regs = register::build(&cfg, &task);
    std::fs::create_dir_all(&cfg.bootstrap_dir)
        .with_context(|| format!("cannot create bootstrapDir {}", cfg.bootstrap_dir.display()))?;

    let t = Instant::now();
    let token = if cfg.login.enabled {
        let tok = berth_ecs::login::login(
            &servers,
            &cfg.login.method,
            &berth_ecs::login::iam_options(&cfg, &task),
            &berth_ecs::login::login_meta(&cfg, &task),
            berth_ecs::login::Patience::default(),
        )
        .await?;
        let path = cfg.token_file(berth_ecs::SERVICE_TOKEN_FILE);
        berth_api::secret_file::write_secret_file(&path, &tok.secret_id)
            .with_context(|| format!("cannot write {}", path.display()))?;
        tracing::info!(accessor = %tok.accessor_id, method = %cfg.login.method, "logged in");
        Some(tok.secret_id)
    } else {
        None
    };
    let login_ms = t.elapsed().as_millis();

    let t = Instant::now();
    agent
        .wait_ready(Duration::from_secs(120))
        .await
        .context("the task's berth agent is not ready")?;
    let agent_ms = t.elapsed().as_millis();

    let t = Instant::now();
    for (what, body) in [("service", &regs.service), ("proxy", &regs.proxy)] {
        agent
            .call(
                reqwest::Method::PUT,
                "/v1/agent/service/register",
                token.as_deref(),
                Some(body),
            )
            .await
            .with_context(|| format!("cannot register the {what}"))?;
    }
    let register_ms = t.elapsed().as_millis();
    tracing::info!(service = %regs.service_id, proxy = %regs.proxy_id, "registered");

    let t = Instant::now();
    let boot = berth_xds::bootstrap_json(
        &regs.proxy_id,
        &cfg.service_name(&task.family),
        args.xds_addr,
        args.envoy_admin_addr,
        token.as_deref(),
    );
    let path = cfg.bootstrap_dir.join(berth_ecs::ENVOY_BOOTSTRAP_FILE);
    // It holds the token.
    berth_api::secret_file::write_secret_file(&path, &serde_json::to_string_pretty(&boot)?)
        .with_context(|| format!("cannot write {}", path.display()))?;

    let own = std::env::current_exe().context("cannot find berth-mesh-init's own binary")?;
    let path_var = std::env::var("PATH").ok();
    for name in install::SHARED {
        let from = if *name == "berth-mesh-init" {
            Some(own.clone())
        } else {
            install::locate(name, &own, path_var.as_deref())
        };
        let from = from.ok_or_else(|| install::InstallError::NotFound(name.to_string()))?;
        install::install(&from, &cfg.bootstrap_dir, name)?;
    }
    let bootstrap_ms = t.elapsed().as_millis();
    // One line for people and for the start-up benchmark.
    tracing::info!(
        total_ms = start.elapsed().as_millis() as u64,
        login_ms = login_ms as u64,
        agent_wait_ms = agent_ms as u64,
        register_ms = register_ms as u64,
        bootstrap_ms = bootstrap_ms as u64,
        "task enrolled"
    );
    Ok(())
}
