//! `berth-acl-controller`: one per ECS cluster (two or more for high availability, one
//! active). It sets up the ACL objects ECS tasks log in with (auth methods, the client role,
//! binding rules) and removes what stopped tasks left behind: their login tokens, service
//! instances and client-agent nodes.

mod api;
mod config;
mod ecs;
mod lock;
mod metrics;
mod reconcile;
mod setup;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;

use config::{Config, Flags, TokenSource};

fn main() -> ExitCode {
    let flags = Flags::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-acl-controller: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = match rt.block_on(resolve(&flags)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-acl-controller: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.log_json);
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-acl-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new("warn,berth_acl_controller=info")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: task logs go to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// Settings from flags, the environment and, in a task, the controller's own task metadata.
async fn resolve(flags: &Flags) -> anyhow::Result<Config> {
    let env = |k: &str| std::env::var(k).ok();
    let task = match berth_ecs::metadata::MetadataClient::from_env() {
        Ok(m) => Some(
            m.task_with_retry(Duration::from_secs(10))
                .await
                .context("cannot read the controller's own task metadata")?,
        ),
        Err(_) => None,
    };
    Ok(Config::resolve(flags, &env, task.as_ref())?)
}

fn read_token(src: &TokenSource) -> anyhow::Result<Option<String>> {
    Ok(match src {
        TokenSource::None => None,
        TokenSource::Inline(t) => Some(t.clone()),
        TokenSource::File(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read token file {}", p.display()))?;
            let t = t.trim().to_string();
            anyhow::ensure!(!t.is_empty(), "token file {} is empty", p.display());
            Some(t)
        }
    })
}

fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let ca = std::env::var("BERTH_CA_CERT_PEM").ok();
    let api = Arc::new(api::Api::new(
        &cfg.http_addr,
        read_token(&cfg.token)?,
        ca.as_deref(),
    )?);
    let setup_cfg = setup::SetupConfig {
        partition: cfg.partition.clone(),
        account: cfg.account.clone(),
        iam_role_path: cfg.iam_role_path.clone(),
        sts_endpoint: cfg.sts_endpoint.clone(),
        iam_endpoint: cfg.iam_endpoint.clone(),
        server_id_header_value: cfg.server_id_header_value.clone(),
    };
    let Some(cluster) = cfg.cluster.clone() else {
        // Only `-once` gets here: set up, with nothing to reconcile.
        set_up(&api, &setup_cfg).await?;
        tracing::info!("no -cluster: set up only");
        return Ok(());
    };
    let ecs = ecs::Ecs::new(&cluster.region, cfg.ecs_endpoint.as_deref()).await;
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(addr) = cfg.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for /metrics on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let key = format!("berth/acl-controller/{}/lock", cluster.arn);
    let mut lock = lock::Lock::new(api.clone(), key, cfg.session_ttl, holder_name());

    if cfg.once {
        let ours = lock.acquire_once().await.context("controller lock")?;
        anyhow::ensure!(
            ours,
            "another berth-acl-controller holds the lock {} and keeps renewing it; -once did nothing",
            lock.key()
        );
        let result = async {
            set_up(&api, &setup_cfg).await?;
            let r = reconcile::once(&api, &ecs, &cluster.arn, &|| true).await;
            metrics.record(&r);
            log_report(&r);
            r.map(|_| ()).map_err(anyhow::Error::from)
        }
        .await;
        lock.release().await;
        return result;
    }

    let (leading_tx, mut leading) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let elector = tokio::spawn(lock.run(leading_tx, stop_rx));
    metrics.set_leader_source(leading.clone());
    tracing::info!(cluster = %cluster.arn, interval = ?cfg.interval, "standing by for the controller lock");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let mut set_up_done = false;
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the controller lock task ended");
                }
                // Newly active: reconcile now, not an interval later.
                tick.reset_immediately();
                continue;
            }
            _ = tick.tick() => {}
        }
        if !*leading.borrow() {
            set_up_done = false;
            continue;
        }
        if !set_up_done {
            match setup::run(&api, &setup_cfg).await {
                Ok(changes) => {
                    log_changes(&changes);
                    set_up_done = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ACL setup failed; trying again next interval");
                    continue;
                }
            }
        }
        let watch = leading.clone();
        let r = reconcile::once(&api, &ecs, &cluster.arn, &move || *watch.borrow()).await;
        metrics.record(&r);
        log_report(&r);
    }
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = elector.await;
    Ok(())
}

async fn set_up(api: &api::Api, cfg: &setup::SetupConfig) -> anyhow::Result<()> {
    let changes = setup::run(api, cfg).await?;
    log_changes(&changes);
    Ok(())
}

fn log_changes(changes: &setup::Changes) {
    for c in &changes.0 {
        tracing::info!("{c}");
    }
    if changes.0.is_empty() {
        tracing::info!("ACL setup already complete");
    }
}

fn log_report(r: &Result<reconcile::Report, reconcile::ReconcileError>) {
    match r {
        Ok(r) => tracing::info!(
            tasks_listed = r.tasks_listed,
            tasks_referenced = r.tasks_referenced,
            tasks_described = r.tasks_described,
            describe_calls = r.describe_calls,
            tokens_seen = r.tokens_seen,
            tokens_removed = r.tokens_removed,
            services_removed = r.services_removed,
            nodes_removed = r.nodes_removed,
            read_servers_ms = r.read_servers.as_millis() as u64,
            read_ecs_ms = r.read_ecs.as_millis() as u64,
            remove_ms = r.remove.as_millis() as u64,
            total_ms = r.total.as_millis() as u64,
            "reconciled"
        ),
        Err(reconcile::ReconcileError::Ecs(e)) => {
            tracing::warn!(error = %e, "ECS did not answer; nothing was removed this round")
        }
        Err(e) => tracing::warn!(error = %e, "reconcile failed"),
    }
}
