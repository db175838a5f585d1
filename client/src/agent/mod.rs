//! `berth agent`: the client agent of one ECS task (or host). It reaches the servers over
//! their RPC port, keeps its node, services and checks in the catalog (anti-entropy with each
//! service's own token), serves the agent API on the task's loopback, keeps the leaf
//! certificates of its proxies fresh, and configures their Envoys over delta xDS.
//!
//! Layout: `servers` (the RPC connection), `acl` (token cache), `catalog` (anti-entropy
//! backend), `watch` (blocking queries), `leaf`, `proxy` (snapshots), `xds`, `http`.

mod acl;
mod catalog;
mod ecs;
mod http;
mod leaf;
mod proxy;
mod servers;
mod settings;
mod watch;
mod xds;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use berth_agent::{Agent, AgentConfig};
use berth_api::catalog::Node;
use berth_api::connect::CaRoots;

pub use settings::AgentArgs;
use settings::Settings;

const STATE_FILE: &str = "local-state.json";

/// The longest an agent in a task waits for its services to be deregistered after SIGTERM;
/// ECS kills it at the task's stopTimeout anyway.
const ECS_STOP_GRACE: Duration = Duration::from_secs(120);

/// The local state an earlier run left, if any.
fn load_state(dir: &std::path::Path) -> anyhow::Result<Option<berth_agent::Persisted>> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{} is damaged; move it away to start empty", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save_state(dir: &std::path::Path, p: &berth_agent::Persisted) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let body = serde_json::to_string(p)?;
    // It holds tokens.
    crate::login::write_secret_file(&dir.join(STATE_FILE), &body)
}

fn agent_token(a: &Settings) -> anyhow::Result<Option<String>> {
    if let Some(t) = &a.token {
        return Ok(Some(t.clone()));
    }
    match &a.token_file {
        None => Ok(None),
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read token file {}", p.display()))?;
            let t = t.trim().to_string();
            anyhow::ensure!(!t.is_empty(), "token file {} is empty", p.display());
            Ok(Some(t))
        }
    }
}

fn tls(a: &Settings) -> anyhow::Result<berth_server::rpc::TlsClient> {
    let Some(ca) = &a.ca_file else {
        return Ok(None);
    };
    let name = format!("server.{}.berth", a.datacenter);
    // With a client certificate, the servers' own TLS setup (hostname checked).
    if let (Some(cert), Some(key)) = (&a.cert_file, &a.key_file) {
        let m = berth_server::tls::TlsMaterial::load(&berth_server::tls::TlsSettings {
            ca_file: Some(ca.clone()),
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            verify_incoming: false,
            verify_outgoing: true,
            verify_server_hostname: true,
        })
        .map_err(|e| anyhow::anyhow!("RPC TLS: {e}"))?;
        return Ok(Some((m.client_config(&a.datacenter), name)));
    }
    let pem = std::fs::read(ca).with_context(|| format!("cannot read CA file {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.with_context(|| format!("{} is not PEM", ca.display()))?;
        roots
            .add(c)
            .with_context(|| format!("{}: bad certificate", ca.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", ca.display());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // gRPC needs HTTP/2, which the servers' TLS port offers by ALPN.
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some((Arc::new(cfg), name)))
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "warn,aws_runtime=error,berth={level},berth_client={level},berth_agent={level},berth_xds={level},berth_ecs={level}"
    ))
    .with_context(|| format!("bad -log-level {level:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: task logs go to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// The task IP from ECS task metadata, for an agent in a task without BERTH_ECS_CONFIG_JSON.
async fn task_ip(metadata_uri: &str) -> Option<IpAddr> {
    let meta = berth_ecs::metadata::MetadataClient::new(metadata_uri.trim_end_matches('/'));
    match meta.task().await {
        Ok(t) => t.task_ip().map(IpAddr::V4),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the task IP from ECS task metadata");
            None
        }
    }
}

/// The roots, watched for as long as the agent runs.
fn watch_roots(
    servers: Arc<servers::Servers>,
) -> tokio::sync::watch::Receiver<Option<Arc<CaRoots>>> {
    watch::blocking(servers, "/v1/connect/ca/roots".into(), None, |r| {
        watch::json_or(r, CaRoots::default)
    })
}

/// Flags, then the config files they (or the environment) name, then the environment.
/// Flags, then the config files they (or the environment) name, then the environment, then
/// what the ECS task implies.
fn settings(args: &AgentArgs, ecs: Option<&ecs::EcsTask>) -> anyhow::Result<Settings> {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let mut files = Vec::new();
    for f in settings::config_files(args, &env) {
        files.push(berth_api::config::load_file(&f).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let base = ecs.map(ecs::layer).unwrap_or_default();
    settings::resolve(args, files, base.over(settings::from_env(&env))).map_err(anyhow::Error::msg)
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let ecs = ecs::detect(&|k| std::env::var(k).ok().filter(|v| !v.is_empty())).await?;
    let a = settings(&args, ecs.as_ref())?;
    init_logging(&a.log_level)?;
    let mut token = agent_token(&a)?;
    if let Some(t) = &ecs
        && token.is_none()
        && t.cfg.login.enabled
    {
        token = Some(ecs::login(t).await?);
    }
    // Ports first: a port in use is an error now, not after the servers answer.
    let http_listener = tokio::net::TcpListener::bind(a.http_addr)
        .await
        .with_context(|| format!("cannot listen for the agent API on {}", a.http_addr))?;
    let xds_listener = tokio::net::TcpListener::bind(a.xds_addr)
        .await
        .with_context(|| format!("cannot listen for xDS on {}", a.xds_addr))?;
    // Cloud auto-join entries become the instances they find, and are asked again while no
    // server answers.
    let clouds = a.retry_join.iter().any(|e| berth_cloud_join::is_cloud(e));
    let rpc_port = berth_server::config::DEFAULT_RPC_PORT;
    let initial = berth_cloud_join::expand(&a.retry_join, rpc_port).await;
    let servers = Arc::new(servers::Servers::new(initial, tls(&a)?));
    let advertise = match a.advertise {
        Some(ip) => ip,
        None => match std::env::var("ECS_CONTAINER_METADATA_URI_V4") {
            Ok(uri) if !uri.is_empty() => task_ip(&uri).await,
            _ => None,
        }
        .or_else(berth_server::util::first_private_ipv4)
        .unwrap_or(IpAddr::from([127, 0, 0, 1])),
    };
    let node_name = a.node.clone().unwrap_or_else(berth_server::util::hostname);
    let node_id = uuid::Uuid::new_v4().to_string();

    // The servers must answer before anything is registered.
    let mut tries = 0u32;
    loop {
        match servers
            .get_json::<String>("/v1/status/leader", None, Duration::from_secs(5))
            .await
        {
            Ok((_, l)) if !l.is_empty() => break,
            Ok(_) => tracing::info!("servers have no leader yet"),
            Err(e) => tracing::info!(error = %e, "waiting for the servers"),
        }
        tries += 1;
        if clouds {
            servers.learn(&berth_cloud_join::expand(&a.retry_join, rpc_port).await);
        }
        if tries.is_multiple_of(30) {
            tracing::warn!(servers = ?a.retry_join, "still no Berth server answers");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Ok((_, peers)) = servers
        .get_json::<Vec<String>>("/v1/status/peers", None, Duration::from_secs(5))
        .await
    {
        servers.learn(&peers);
    }

    let resolver = acl::Resolver::new(servers.clone());
    let backend = Arc::new(catalog::RpcCatalog {
        servers: servers.clone(),
        agent_token: token.clone(),
        agent: OnceLock::new(),
    });
    let restored = match &a.data_dir {
        Some(d) => load_state(d)?,
        None => None,
    };
    if let Some(p) = &restored {
        tracing::info!(
            services = p.services.len(),
            checks = p.checks.len(),
            "restored the local state of the last run"
        );
    }
    let mut agent_cfg = AgentConfig::new(Node {
        id: node_id.clone(),
        node: node_name.clone(),
        address: advertise.to_string(),
        datacenter: a.datacenter.clone(),
        meta: ecs.as_ref().map(ecs::node_meta).unwrap_or_default(),
        ..Default::default()
    });
    // The leader owns the node's serfHealth, from this agent's heartbeats.
    agent_cfg.reserved_checks = vec!["serfHealth".to_string()];
    let agent = Agent::start_restored(agent_cfg, backend.clone(), restored);
    let _ = backend.agent.set(Arc::downgrade(&agent));

    tokio::spawn(heartbeat_loop(
        servers.clone(),
        node_name.clone(),
        token.clone(),
    ));
    let roots = watch_roots(servers.clone());
    let leaves = Arc::new(leaf::Leaves::new(servers.clone(), roots.clone()));
    let proxies = Arc::new(proxy::Proxies::new(
        servers.clone(),
        leaves.clone(),
        roots,
        a.datacenter.clone(),
    ));
    tokio::spawn(reconcile_loop(
        Arc::downgrade(&agent),
        proxies.clone(),
        advertise,
        a.datacenter.clone(),
        a.data_dir.clone(),
    ));

    let ctx = http::Ctx {
        agent: agent.clone(),
        servers: servers.clone(),
        resolver: resolver.clone(),
        leaves,
        datacenter: a.datacenter.clone(),
        node_id,
    };
    let source = Arc::new(xds::AgentSource { proxies, resolver });
    let xds = tonic::transport::Server::builder()
        .add_service(berth_xds::service(source))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(xds_listener));
    tracing::info!(node = %node_name, http = %a.http_addr, xds = %a.xds_addr, advertise = %advertise, "berth agent running");
    let api = axum::serve(http_listener, http::router(ctx));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let stopping = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        // In a task, health-sync takes the services out of the mesh after ECS sends
        // SIGTERM to every container at once; it needs this agent until then.
        if ecs.is_some() {
            tracing::info!("stopping once the task's services are deregistered");
            let deadline = tokio::time::Instant::now() + ECS_STOP_GRACE;
            while !agent.state().services.is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tokio::select! {
        r = api => r.context("agent API stopped")?,
        r = xds => r.context("xDS server stopped")?,
        _ = stopping => {},
    }
    tracing::info!("berth agent stopping");
    agent.stop();
    Ok(())
}

/// Tells the servers this agent is alive, so that its node's services stay in `?passing`
/// reads only while it runs.
async fn heartbeat_loop(servers: Arc<servers::Servers>, node: String, token: Option<String>) {
    use berth_server::agent_rpc::{HEARTBEAT, HEARTBEAT_INTERVAL, NodeRequest};
    let req = NodeRequest { token, node };
    loop {
        match servers
            .call_json::<_, Result<(), String>>(HEARTBEAT, &req, Duration::from_secs(5))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the servers refused this agent's heartbeat"),
            Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
        }
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
    }
}

/// Keeps the running proxies equal to the local `connect-proxy` registrations, and the
/// data dir's copy of the local state current.
async fn reconcile_loop(
    agent: std::sync::Weak<Agent>,
    proxies: Arc<proxy::Proxies>,
    advertise: IpAddr,
    datacenter: String,
    data_dir: Option<PathBuf>,
) {
    let mut seen = u64::MAX;
    loop {
        let Some(agent) = agent.upgrade() else { return };
        let defs = {
            let st = agent.state();
            if st.generation() == seen {
                None
            } else {
                seen = st.generation();
                let mut defs = Vec::new();
                for (id, s) in &st.services {
                    if s.service.kind != "connect-proxy" {
                        continue;
                    }
                    let token = st.tokens.get(id).cloned();
                    match proxy::parse_proxy(&s.service, advertise, &datacenter, token) {
                        Ok(d) => defs.push(d),
                        Err(e) => {
                            tracing::warn!(proxy = %id, error = %e, "proxy registration cannot be served")
                        }
                    }
                }
                Some((defs, data_dir.as_ref().map(|_| st.persisted())))
            }
        };
        drop(agent);
        // The file is written outside the state's lock, which every API call takes.
        if let Some((defs, persisted)) = defs {
            if let (Some(d), Some(p)) = (&data_dir, persisted)
                && let Err(e) = save_state(d, &p)
            {
                tracing::warn!(error = %e, "cannot save the local state");
            }
            proxies.reconcile(defs);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
