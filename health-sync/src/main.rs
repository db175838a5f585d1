//! `berth-health-sync`: keeps the task's checks equal to what ECS says about its
//! containers' health, and takes the task out of the mesh when ECS stops it: every check
//! critical at once (peers stop sending), then, once the proxy has drained and stopped, the
//! service and proxy deregistered and both tokens logged out.

mod sync;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use berth_api::agent::CheckStatusUpdate;
use berth_ecs::agent::AgentHttp;
use berth_ecs::metadata::MetadataClient;
use berth_ecs::servers::ServersHttp;
use berth_ecs::{TaskConfig, TaskMetadata};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(
    name = "berth-health-sync",
    version,
    about = "Mirrors ECS container health into Berth checks and deregisters the task on SIGTERM.",
    long_about = "Reads BERTH_ECS_CONFIG_JSON and the ECS task metadata (ECS_CONTAINER_METADATA_URI_V4)."
)]
struct Args {
    /// The task's agent API.
    #[arg(long = "agent-http-addr", env = "BERTH_AGENT_HTTP_ADDR", default_value = berth_ecs::agent::DEFAULT_AGENT_ADDR)]
    agent_http_addr: String,
    /// How often ECS task metadata is read.
    #[arg(long = "interval", default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    berth_api::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    let cfg = match berth_ecs::start(&|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-health-sync: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "warn,aws_runtime=error,berth_health_sync={l},berth_ecs={l}",
        l = cfg.log_level
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: task logs go to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-health-sync: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-health-sync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_token(cfg: &TaskConfig, name: &str) -> anyhow::Result<Option<String>> {
    if !cfg.login.enabled {
        return Ok(None);
    }
    let path = cfg.token_file(name);
    let t = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let t = t.trim().to_string();
    anyhow::ensure!(!t.is_empty(), "the token file {} is empty", path.display());
    Ok(Some(t))
}

struct Task {
    meta: MetadataClient,
    agent: AgentHttp,
    token: Option<String>,
    owned: Vec<(String, String)>,
    /// What the agent was last told, by check ID.
    written: BTreeMap<String, (String, String)>,
}

impl Task {
    /// All of one poll in one request.
    async fn write(&mut self, updates: Vec<CheckStatusUpdate>) -> anyhow::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_value(&updates)?;
        self.agent
            .call(
                reqwest::Method::PUT,
                "/v1/agent/checks/update",
                self.token.as_deref(),
                Some(&body),
            )
            .await?;
        for u in updates {
            tracing::info!(check = %u.check_id, status = %u.status, output = %u.output, "check updated");
            self.written.insert(u.check_id, (u.status, u.output));
        }
        Ok(())
    }

    async fn poll(&mut self) {
        let task = match self.meta.task().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read task metadata; checks unchanged");
                return;
            }
        };
        let updates = sync::changes(&self.owned, &task, &self.written);
        if let Err(e) = self.write(updates).await {
            tracing::warn!(error = %e, "cannot update the checks; retrying at the next poll");
        }
    }
}

async fn run(args: Args, cfg: TaskConfig) -> anyhow::Result<()> {
    let meta = MetadataClient::from_env()?;
    let first: TaskMetadata = meta.task_with_retry(Duration::from_secs(10)).await?;
    let token = read_token(&cfg, berth_ecs::SERVICE_TOKEN_FILE)?;
    let agent_token = read_token(&cfg, berth_ecs::AGENT_TOKEN_FILE)?;
    let servers = ServersHttp::new(&cfg)?;
    let service_id = berth_ecs::service_id(&cfg.service_name(&first.family), first.task_id());
    let proxy_id = berth_ecs::proxy_id(&service_id);
    let mut t = Task {
        owned: sync::owned_checks(&cfg, &first),
        meta,
        agent: AgentHttp::new(args.agent_http_addr),
        token,
        written: BTreeMap::new(),
    };
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tracing::info!(service = %service_id, checks = t.owned.len(), "health-sync running");
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => t.poll().await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    tracing::info!("task stopping: all checks critical");
    let all: Vec<CheckStatusUpdate> = t
        .owned
        .iter()
        .map(|(id, _)| CheckStatusUpdate {
            check_id: id.clone(),
            status: "critical".into(),
            output: "the task is stopping".into(),
        })
        .collect();
    // Peers must stop sending before the proxy goes; keep trying while the agent is there.
    for attempt in 0..50 {
        match t.write(all.clone()).await {
            Ok(()) => break,
            Err(e) if attempt < 49 => {
                tracing::warn!(error = %e, "cannot mark the checks critical yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => tracing::error!(error = %e, "the checks could not be marked critical"),
        }
    }
    wait_proxy_stopped(&t.meta).await;

    for id in [&proxy_id, &service_id] {
        match t
            .agent
            .call(
                reqwest::Method::PUT,
                &format!("/v1/agent/service/deregister/{id}"),
                t.token.as_deref(),
                None,
            )
            .await
        {
            Ok(_) => tracing::info!(service = %id, "deregistered"),
            Err(e) => tracing::error!(service = %id, error = %e, "cannot deregister"),
        }
    }
    for (what, tok) in [("service", &t.token), ("agent", &agent_token)] {
        let Some(tok) = tok else { continue };
        match servers.logout(tok).await {
            Ok(()) => tracing::info!(token = what, "logged out"),
            Err(e) => tracing::error!(token = what, error = %e, "cannot log out"),
        }
    }
    Ok(())
}

/// Until ECS says the proxy container stopped: it drains while the app finishes, and the
/// registrations must outlive it. A metadata endpoint that has gone away is not waited on.
async fn wait_proxy_stopped(meta: &MetadataClient) {
    let mut failures = 0;
    loop {
        match meta.task().await {
            Ok(task) => {
                failures = 0;
                match task.container(berth_ecs::PROXY_CONTAINER) {
                    Some(c) if c.known_status != "STOPPED" => {}
                    _ => return,
                }
            }
            Err(e) => {
                failures += 1;
                if failures > 50 {
                    tracing::warn!(error = %e, "task metadata gone; not waiting for the proxy");
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
