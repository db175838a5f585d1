//! `berth-mesh-bench`: the control plane under a mesh's load, on this machine. One
//! `berth-server -dev`, many `berth agent` processes, and one delta-xDS client per sidecar
//! proxy standing in for its Envoy (subscribing to everything and ACKing everything), plus a
//! few real Envoys on some of the proxies to prove the configuration is one Envoy takes.
//! Then upstream services change (a new instance, or an instance's check going critical) and
//! the time from the write's acknowledgement until every proxy of that upstream has received
//! and ACKed the endpoint update is measured; also the agents' and the server's memory and
//! the server's CPU. Prints figures and ratios to the goals; asserts no timing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_tests::free_port;
use berth_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use berth_xds::envoy_types::pb::envoy::config::core::v3::{
    HealthStatus, Node, address, socket_address, transport_socket,
};
use berth_xds::envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, lb_endpoint,
};
use berth_xds::envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, common_tls_context,
};
use berth_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use berth_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use berth_xds::type_url;
use clap::Parser;
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tonic::transport::{Channel, Endpoint};

/// Consul's documentation gives its client agent about this much memory.
const CONSUL_CLIENT_MB: f64 = 87.0;
const GOAL_P99_MS: f64 = 200.0;
const GOAL_AGENT_MB: f64 = 20.0;
const DATACENTER: &str = "dc1";

#[derive(Parser, Debug)]
#[command(about = "Berth mesh control-plane benchmark: delta-xDS fan-out of catalog changes")]
struct Args {
    /// Directory holding the (release) berth-server and berth binaries.
    #[arg(long)]
    berth_bin: PathBuf,
    /// The Envoy binary.
    #[arg(long, default_value = ".venv/bin/envoy")]
    envoy: PathBuf,
    /// Accepted for `scripts/bench --suite mesh`; must be `mesh`.
    #[arg(long, default_value = "mesh")]
    suite: String,
    /// `berth agent` processes.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Sidecar proxies registered with each agent (one xDS stream each).
    #[arg(long, default_value_t = 10)]
    proxies_per_agent: usize,
    /// Upstream services in the catalog; proxy i has upstream i % upstreams.
    #[arg(long, default_value_t = 100)]
    upstreams: usize,
    /// Instances of each upstream (each with its connect-proxy sidecar).
    #[arg(long, default_value_t = 100)]
    instances_per_upstream: usize,
    /// Fake catalog nodes the upstream instances are spread over.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Catalog changes during the churn.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Changes started per second (open loop).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Real Envoys, each on the first proxy of one agent.
    #[arg(long, default_value_t = 2)]
    envoys: usize,
    /// Concurrent catalog registrations during the setup.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to wait, once every client is configured, before reading memory; the idle
    /// CPU is measured over this window. The default covers one whole cycle of the agents'
    /// 30 s blocking queries (plus their jitter), whose re-polls are the idle load.
    #[arg(long, default_value_t = 35)]
    settle_secs: u64,
    /// How long one change may take to reach all its subscribers before it counts as
    /// incomplete.
    #[arg(long, default_value_t = 10)]
    change_timeout_secs: u64,
    /// Bound on each setup phase (agents up, clients configured, Envoys live).
    #[arg(long, default_value_t = 600)]
    setup_timeout_secs: u64,
    /// Log level of the server and agents (their logs go to the work directory).
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Keep the work directory (logs, bootstraps) and print its path.
    #[arg(long)]
    keep_dir: bool,
    /// Print one line per change.
    #[arg(long)]
    verbose: bool,
}

impl Args {
    fn proxies(&self) -> usize {
        self.agents * self.proxies_per_agent
    }

    /// Upstreams that have at least one subscriber; changes go to these.
    fn used_upstreams(&self) -> usize {
        self.upstreams.min(self.proxies()).max(1)
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process with its log, killed (by PID) when dropped.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Result<Proc> {
        let out = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, when the process has exited.
    fn alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                self.tail()
            ),
            Err(e) => bail!("{}: {e}", self.name),
        }
    }

    fn tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Agent {
    proc: Proc,
    http: u16,
    xds: u16,
}

impl Agent {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): state is field 3,
            // utime 14 and stime 15.
            let rest = s.get(s.rfind(')')? + 1..)?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// CPU seconds of a set of processes, read together.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_secs(*p)).sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64() * 1000.0
    } else {
        -(from.duration_since(to).as_secs_f64() * 1000.0)
    }
}

// ---------------------------------------------------------------------------------------------
// The catalog

/// Instance `g` (global number) of the upstream instances: its node, node address and the
/// port of its sidecar. (node, port) is unique per `g`.
fn placement(args: &Args, g: usize) -> (String, String, u16) {
    let nodes = args.nodes.max(1);
    let n = g % nodes;
    let addr = format!("10.{}.{}.{}", 1 + n / 65536 % 250, n / 256 % 256, n % 256);
    let port = 20_000 + (g / nodes % 40_000) as u16;
    (format!("fake-node-{n}"), addr, port)
}

fn upstream_name(x: usize) -> String {
    format!("upstream-{x}")
}

fn parent_body(args: &Args, x: usize, j: usize, g: usize) -> Value {
    let (node, addr, port) = placement(args, g);
    let id = format!("{}-{j}", upstream_name(x));
    json!({
        "Node": node, "Address": addr,
        "Service": {"ID": id, "Service": upstream_name(x), "Port": port - 10_000},
        "Check": {"CheckID": format!("{id}:alive"), "Name": "alive", "ServiceID": id, "Status": "passing"}
    })
}

fn sidecar_body(args: &Args, x: usize, j: usize, g: usize, status: &str) -> Value {
    let (node, addr, port) = placement(args, g);
    let parent = format!("{}-{j}", upstream_name(x));
    let id = format!("{parent}-sidecar-proxy");
    json!({
        "Node": node, "Address": addr,
        "Service": {
            "ID": id, "Service": format!("{}-sidecar-proxy", upstream_name(x)),
            "Kind": "connect-proxy", "Port": port,
            "Proxy": {"DestinationServiceName": upstream_name(x), "DestinationServiceID": parent,
                      "LocalServicePort": port - 10_000}
        },
        "Check": {"CheckID": format!("{id}:listening"), "Name": "listening", "ServiceID": id, "Status": status}
    })
}

/// The address the catalog gives instance `g`'s sidecar, as EDS carries it.
fn endpoint_addr(args: &Args, g: usize) -> String {
    let (_, addr, port) = placement(args, g);
    format!("{addr}:{port}")
}

async fn put_ok(http: &reqwest::Client, url: &str, body: &Value) -> Result<()> {
    let r = http
        .put(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    let status = r.status();
    if !status.is_success() {
        let text = r.text().await.unwrap_or_default();
        bail!("PUT {url}: {status} {}", text.trim());
    }
    let _ = r.bytes().await;
    Ok(())
}

/// PUTs every body to `url` with `concurrency` requests in flight.
async fn put_all(
    http: &reqwest::Client,
    url: &str,
    bodies: Vec<Value>,
    concurrency: usize,
) -> Result<()> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, url, bodies, next) =
            (http.clone(), url.to_string(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = bodies.get(i) else {
                    return anyhow::Ok(());
                };
                put_ok(&http, &url, b).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// p50 (ms) and size (KB) of `n` sequential non-blocking GETs of `path`: what one woken
/// blocking query of that kind costs the server.
async fn probe_read(
    http: &reqwest::Client,
    server: &str,
    path: &str,
    n: usize,
) -> Result<(f64, f64)> {
    let mut v = Vec::new();
    let mut size = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(format!("{server}{path}")).send().await?;
        if !r.status().is_success() {
            bail!("GET {path}: {}", r.status());
        }
        size = r.bytes().await?.len();
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    v.sort_by(f64::total_cmp);
    Ok((percentile(&v, 0.5), size as f64 / 1024.0))
}

/// p50 and p99 (ms) of `n` sequential catalog writes nobody watches (a probe node's own
/// service), 20 ms apart: the server's write path under whatever load it has.
async fn probe_writes(http: &reqwest::Client, server: &str, n: usize) -> Result<(f64, f64)> {
    let url = format!("{server}/v1/catalog/register");
    let mut v = Vec::new();
    for i in 0..n {
        let body = json!({"Node": "probe-node", "Address": "10.255.0.1",
            "Service": {"ID": "probe", "Service": "probe", "Port": 1 + i % 60_000}});
        let t = Instant::now();
        put_ok(http, &url, &body).await?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v.sort_by(f64::total_cmp);
    Ok((percentile(&v, 0.5), percentile(&v, 0.99)))
}

// ---------------------------------------------------------------------------------------------
// The xDS load generator

/// One proxy's stand-in Envoy, shared between its stream task and the benchmark.
struct ClientState {
    idx: usize,
    proxy_id: String,
    upstream: usize,
    /// The EDS cluster of its upstream.
    cluster: String,
    /// Instances of its upstream it must see before it counts as configured.
    want_endpoints: usize,
    ready: AtomicBool,
    /// Its view of its upstream cluster: "ip:port" → healthy.
    view: Mutex<BTreeMap<String, bool>>,
    /// Arrival time and cluster of every EDS update received.
    eds_log: Mutex<Vec<(Instant, String)>>,
    streams: AtomicU64,
    nacks: AtomicU64,
    last_error: Mutex<String>,
}

/// A change in flight: what its subscribers must see, and when each of them ACKed it.
struct Pending {
    addr: String,
    healthy: bool,
    waiting: HashSet<usize>,
    /// (client, received, ACKed).
    done: Vec<(usize, Instant, Instant)>,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Tracker {
    /// By upstream.
    pending: Mutex<HashMap<usize, Pending>>,
}

impl Tracker {
    fn observe(
        &self,
        c: &ClientState,
        view: &BTreeMap<String, bool>,
        received: Instant,
        acked: Instant,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = pending.get_mut(&c.upstream) else {
            return;
        };
        if p.waiting.contains(&c.idx) && view.get(&p.addr) == Some(&p.healthy) {
            p.waiting.remove(&c.idx);
            p.done.push((c.idx, received, acked));
            if p.waiting.is_empty() {
                p.notify.notify_one();
            }
        }
    }
}

fn request(type_url: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        ..Default::default()
    }
}

fn ack(r: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    }
}

/// The SDS secrets an upstream cluster's TLS context refers to.
fn sds_names(c: &Cluster) -> Vec<String> {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = c
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.as_ref())
    else {
        return Vec::new();
    };
    let Some(ctx) = UpstreamTlsContext::decode(any.value.as_slice())
        .ok()
        .and_then(|t| t.common_tls_context)
    else {
        return Vec::new();
    };
    let mut out: Vec<String> = ctx
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| s.name.clone())
        .collect();
    match ctx.validation_context_type {
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) => {
            out.extend(v.validation_context_sds_secret_config.map(|s| s.name));
        }
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            out.push(s.name);
        }
        _ => {}
    }
    out
}

/// "ip:port" → healthy for every endpoint of an assignment.
fn endpoints_of(cla: &ClusterLoadAssignment) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for lle in &cla.endpoints {
        for lb in &lle.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                continue;
            };
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let port = match sa.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            let unhealthy = [
                HealthStatus::Unhealthy,
                HealthStatus::Draining,
                HealthStatus::Timeout,
            ]
            .iter()
            .any(|h| *h as i32 == lb.health_status);
            out.insert(format!("{}:{port}", sa.address), !unhealthy);
        }
    }
    out
}

/// One delta ADS stream, as Envoy runs it: CDS and LDS wildcard, EDS for the EDS clusters
/// CDS names, SDS for the secrets the clusters refer to; every response ACKed. Returns when
/// the stream ends.
async fn run_stream(ch: Channel, c: &ClientState, tracker: &Tracker) -> Result<()> {
    let mut client = AggregatedDiscoveryServiceClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    let first = DeltaDiscoveryRequest {
        node: Some(Node {
            id: c.proxy_id.clone(),
            cluster: c.proxy_id.clone(),
            ..Default::default()
        }),
        ..request(type_url::CLUSTER)
    };
    tx.send(first).await?;
    tx.send(request(type_url::LISTENER)).await?;
    let mut inbound = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    c.streams.fetch_add(1, Ordering::Relaxed);
    let mut eds: BTreeSet<String> = BTreeSet::new();
    let mut secrets_wanted: BTreeSet<String> = BTreeSet::new();
    let mut secrets_have: BTreeSet<String> = BTreeSet::new();
    let (mut cds, mut lds) = (false, false);
    c.view.lock().unwrap_or_else(|p| p.into_inner()).clear();
    while let Some(r) = inbound.message().await? {
        let received = Instant::now();
        match r.type_url.as_str() {
            type_url::CLUSTER => {
                let (mut new_eds, mut new_secrets) = (Vec::new(), Vec::new());
                for res in &r.resources {
                    let Some(any) = &res.resource else { continue };
                    let cl = Cluster::decode(any.value.as_slice()).context("decode Cluster")?;
                    if let Some(e) = &cl.eds_cluster_config {
                        let name = if e.service_name.is_empty() {
                            cl.name.clone()
                        } else {
                            e.service_name.clone()
                        };
                        if eds.insert(name.clone()) {
                            new_eds.push(name);
                        }
                    }
                    for s in sds_names(&cl) {
                        if secrets_wanted.insert(s.clone()) {
                            new_secrets.push(s);
                        }
                    }
                }
                let gone: Vec<String> = r
                    .removed_resources
                    .iter()
                    .filter(|n| eds.remove(*n))
                    .cloned()
                    .collect();
                tx.send(ack(&r)).await?;
                cds = true;
                if !new_eds.is_empty() || !gone.is_empty() {
                    tx.send(DeltaDiscoveryRequest {
                        resource_names_subscribe: new_eds,
                        resource_names_unsubscribe: gone,
                        ..request(type_url::ENDPOINT)
                    })
                    .await?;
                }
                if !new_secrets.is_empty() {
                    tx.send(DeltaDiscoveryRequest {
                        resource_names_subscribe: new_secrets,
                        ..request(type_url::SECRET)
                    })
                    .await?;
                }
            }
            type_url::ENDPOINT => {
                let mut mine = None;
                for res in &r.resources {
                    let Some(any) = &res.resource else { continue };
                    let cla = ClusterLoadAssignment::decode(any.value.as_slice())
                        .context("decode ClusterLoadAssignment")?;
                    let name = if cla.cluster_name.is_empty() {
                        res.name.clone()
                    } else {
                        cla.cluster_name.clone()
                    };
                    if name == c.cluster {
                        mine = Some(endpoints_of(&cla));
                    }
                    c.eds_log
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((received, name));
                }
                if r.removed_resources.contains(&c.cluster) {
                    mine = Some(BTreeMap::new());
                }
                tx.send(ack(&r)).await?;
                let acked = Instant::now();
                if let Some(view) = mine {
                    tracker.observe(c, &view, received, acked);
                    *c.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
                }
            }
            type_url::LISTENER => {
                tx.send(ack(&r)).await?;
                lds = true;
            }
            type_url::SECRET => {
                secrets_have.extend(r.resources.iter().map(|x| x.name.clone()));
                tx.send(ack(&r)).await?;
            }
            other => {
                // Nothing else was asked for: refuse it, as Envoy would.
                c.nacks.fetch_add(1, Ordering::Relaxed);
                tx.send(DeltaDiscoveryRequest {
                    error_detail: Some(berth_xds::envoy_types::pb::google::rpc::Status {
                        code: 3,
                        message: format!("unexpected type {other}"),
                        details: vec![],
                    }),
                    ..ack(&r)
                })
                .await?;
            }
        }
        if !c.ready.load(Ordering::Relaxed) {
            let endpoints = c.view.lock().unwrap_or_else(|p| p.into_inner()).len();
            let ok = cds
                && lds
                && !secrets_wanted.is_empty()
                && secrets_wanted.is_subset(&secrets_have)
                && endpoints >= c.want_endpoints;
            if ok {
                c.ready.store(true, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Keeps one stream open for the proxy, reopening it when it fails (a proxy the agent has
/// not picked up yet is refused with NotFound).
async fn client_loop(ch: Channel, c: Arc<ClientState>, tracker: Arc<Tracker>) {
    loop {
        let r = run_stream(ch.clone(), &c, &tracker).await;
        let msg = match r {
            Ok(()) => "the stream ended".to_string(),
            Err(e) => format!("{e:#}"),
        };
        *c.last_error.lock().unwrap_or_else(|p| p.into_inner()) = msg;
        c.ready.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy

struct Envoy {
    proc: Proc,
    proxy_id: String,
    client: usize,
    admin_file: PathBuf,
    admin: String,
}

impl Envoy {
    async fn get(&self, http: &reqwest::Client, path: &str) -> Option<(u16, String)> {
        let r = http
            .get(format!("http://{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let s = r.status().as_u16();
        Some((s, r.text().await.ok()?))
    }

    /// "ip:port" → healthy of the hosts of `cluster`, as Envoy's admin API lists them.
    async fn hosts(&self, http: &reqwest::Client, cluster: &str) -> Option<BTreeMap<String, bool>> {
        let (_, body) = self.get(http, "/clusters?format=json").await?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let c = v["cluster_statuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == cluster)?;
        let mut out = BTreeMap::new();
        for h in c["host_statuses"].as_array().into_iter().flatten() {
            let a = &h["address"]["socket_address"];
            let status = h["health_status"]["eds_health_status"]
                .as_str()
                .unwrap_or("HEALTHY");
            out.insert(
                format!(
                    "{}:{}",
                    a["address"].as_str().unwrap_or(""),
                    a["port_value"]
                ),
                !matches!(status, "UNHEALTHY" | "DRAINING" | "TIMEOUT"),
            );
        }
        Some(out)
    }
}

fn start_envoy(
    args: &Args,
    dir: &Path,
    agent: &Agent,
    proxy_id: &str,
    client: usize,
) -> Result<Envoy> {
    let admin_file = dir.join(format!("{proxy_id}.admin"));
    let mut cmd = Command::new(args.berth_bin.join("berth"));
    cmd.args(["connect", "envoy", "-proxy-id", proxy_id])
        .args(["-http-addr", &format!("127.0.0.1:{}", agent.http)])
        .args(["-xds-addr", &format!("127.0.0.1:{}", agent.xds)])
        .args(["-admin-bind", "127.0.0.1:0", "-envoy-binary"])
        .arg(&args.envoy)
        .arg("-bootstrap-file")
        .arg(dir.join(format!("{proxy_id}.bootstrap.json")))
        .args([
            "--",
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
            "--admin-address-path",
        ])
        .arg(&admin_file);
    let proc = Proc::spawn(
        &format!("envoy for {proxy_id}"),
        &mut cmd,
        dir.join(format!("{proxy_id}.envoy.log")),
    )?;
    Ok(Envoy {
        proc,
        proxy_id: proxy_id.to_string(),
        client,
        admin_file,
        admin: String::new(),
    })
}

/// Waits until the Envoy answers LIVE on /ready and has its upstream cluster with at least
/// `want` hosts.
async fn envoy_ready(
    http: &reqwest::Client,
    e: &mut Envoy,
    cluster: &str,
    want: usize,
    deadline: Instant,
) -> Result<usize> {
    loop {
        e.proc.alive()?;
        if e.admin.is_empty()
            && let Ok(s) = std::fs::read_to_string(&e.admin_file)
        {
            e.admin = s.trim().to_string();
        }
        if !e.admin.is_empty() {
            let live = e
                .get(http, "/ready")
                .await
                .is_some_and(|(s, b)| s == 200 && b.trim() == "LIVE");
            if live
                && let Some(h) = e.hosts(http, cluster).await
                && h.len() >= want
            {
                return Ok(h.len());
            }
        }
        if Instant::now() > deadline {
            let state = match e.get(http, "/ready").await {
                Some((s, b)) => format!("/ready answers {s} {}", b.trim()),
                None => "its admin API does not answer".into(),
            };
            bail!(
                "Envoy for {} is not LIVE with {want} hosts in {cluster}: {state}; end of its log:\n{}",
                e.proxy_id,
                e.proc.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The run

struct ChangeResult {
    k: usize,
    upstream: usize,
    /// When the write was sent, from the start of the churn.
    at_ms: f64,
    kind: &'static str,
    proxies: usize,
    write_ms: f64,
    /// Write acknowledged → last subscriber ACKed (None: incomplete).
    all_ms: Option<f64>,
    /// Write sent → last subscriber ACKed.
    sent_all_ms: Option<f64>,
    first_ms: Option<f64>,
    /// Write acknowledged → each subscriber's ACK.
    each_ms: Vec<f64>,
    /// Update received → ACKed by the client, per subscriber.
    client_ms: Vec<f64>,
    missing: usize,
}

struct Change {
    k: usize,
    upstream: usize,
    add: bool,
    j: usize,
    g: usize,
    healthy: bool,
}

fn plan_change(args: &Args, k: usize) -> Change {
    let used = args.used_upstreams();
    let upstream = k % used;
    let round = k / used;
    let add = k.is_multiple_of(2);
    let inst = args.instances_per_upstream.max(1);
    if add {
        // A new instance, numbered after every initial one.
        Change {
            k,
            upstream,
            add,
            j: inst + round,
            g: args.upstreams * inst + k,
            healthy: true,
        }
    } else {
        let j = round % inst;
        Change {
            k,
            upstream,
            add,
            j,
            g: upstream * inst + j,
            // Critical the first time an instance flips, passing the next.
            healthy: (round / inst) % 2 == 1,
        }
    }
}

async fn one_change(
    args: Arc<Args>,
    http: reqwest::Client,
    server: String,
    tracker: Arc<Tracker>,
    subscribers: Vec<usize>,
    ch: Change,
    churn_start: Instant,
) -> Result<ChangeResult> {
    let timeout = Duration::from_secs(args.change_timeout_secs);
    let x = ch.upstream;
    // A change of the same upstream still in flight goes first.
    let free_by = Instant::now() + timeout;
    while tracker
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&x)
        && Instant::now() < free_by
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let notify = Arc::new(Notify::new());
    tracker
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            x,
            Pending {
                addr: endpoint_addr(&args, ch.g),
                healthy: ch.healthy,
                waiting: subscribers.iter().copied().collect(),
                done: Vec::new(),
                notify: notify.clone(),
            },
        );
    let url = format!("{server}/v1/catalog/register");
    let status = if ch.healthy { "passing" } else { "critical" };
    let result = async {
        if ch.add {
            // The new task's service first (no endpoint changes), then its sidecar: the write
            // that is timed.
            put_ok(&http, &url, &parent_body(&args, x, ch.j, ch.g)).await?;
        }
        let body = sidecar_body(&args, x, ch.j, ch.g, status);
        let sent = Instant::now();
        put_ok(&http, &url, &body).await?;
        anyhow::Ok((sent, Instant::now()))
    }
    .await;
    let (sent, acked) = match result {
        Ok(t) => t,
        Err(e) => {
            tracker
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&x);
            return Err(e.context(format!("change {}", ch.k)));
        }
    };
    let deadline = acked + timeout;
    loop {
        let waiting = tracker
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&x)
            .map_or(0, |p| p.waiting.len());
        let now = Instant::now();
        if waiting == 0 || now >= deadline {
            break;
        }
        let _ = tokio::time::timeout(deadline - now, notify.notified()).await;
    }
    let p = tracker
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&x)
        .context("the change's record went missing")?;
    let mut each: Vec<f64> = p
        .done
        .iter()
        .map(|(_, _, a)| signed_ms(acked, *a))
        .collect();
    each.sort_by(f64::total_cmp);
    let complete = p.waiting.is_empty();
    Ok(ChangeResult {
        k: ch.k,
        upstream: x,
        at_ms: signed_ms(churn_start, sent),
        kind: if ch.add { "add" } else { "flip" },
        proxies: subscribers.len(),
        write_ms: signed_ms(sent, acked),
        all_ms: if complete { each.last().copied() } else { None },
        sent_all_ms: if complete {
            p.done
                .iter()
                .map(|(_, _, a)| signed_ms(sent, *a))
                .reduce(f64::max)
        } else {
            None
        },
        first_ms: each.first().copied(),
        client_ms: p.done.iter().map(|(_, r, a)| signed_ms(*r, *a)).collect(),
        each_ms: each,
        missing: p.waiting.len(),
    })
}

async fn wait_until<F: FnMut() -> Result<bool>>(
    what: &str,
    deadline: Instant,
    mut f: F,
) -> Result<()> {
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fmt_ms(v: f64) -> String {
    format!("{v:.1} ms")
}

async fn run(args: Arc<Args>, dir: &Path) -> Result<()> {
    if args.suite != "mesh" {
        bail!("--suite must be mesh, not {:?}", args.suite);
    }
    if args.agents == 0 || args.proxies_per_agent == 0 || args.upstreams == 0 {
        bail!("--agents, --proxies-per-agent and --upstreams must be at least 1");
    }
    for b in ["berth-server", "berth"] {
        let p = args.berth_bin.join(b);
        if !p.exists() {
            bail!(
                "{} is missing: cargo build --release -p berth-server -p berth-client",
                p.display()
            );
        }
    }
    if args.envoys > 0 && !args.envoy.exists() {
        bail!(
            "{} is missing: run scripts/install-deps (or pass --envoy, or --envoys 0)",
            args.envoy.display()
        );
    }
    let setup_timeout = Duration::from_secs(args.setup_timeout_secs);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average {} before the start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let proxies = args.proxies();
    let inst = args.instances_per_upstream;
    println!(
        "mesh: 1 server (-dev), {} agents, {proxies} proxies ({} per agent), {} upstream services x {inst} instances = {} instances (+ their {} sidecars) on {} fake nodes, {} Envoys",
        args.agents,
        args.proxies_per_agent,
        args.upstreams,
        args.upstreams * inst,
        args.upstreams * inst,
        args.nodes,
        args.envoys.min(args.agents),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?;

    // 1. The server.
    let (http_port, rpc_port) = (free_port(), free_port());
    let mut server = Proc::spawn(
        "berth-server",
        Command::new(args.berth_bin.join("berth-server"))
            .args(["-dev", "-node", "bench-server"])
            .args(["-http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["-rpc-addr", &format!("127.0.0.1:{rpc_port}")])
            .args(["-log-level", &args.log_level]),
        dir.join("server.log"),
    )?;
    let server_url = format!("http://127.0.0.1:{http_port}");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    let trust_domain = loop {
        server.alive()?;
        let roots: Option<Value> = match http
            .get(format!("{server_url}/v1/connect/ca/roots"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        if let Some(td) = roots
            .as_ref()
            .and_then(|v| v["TrustDomain"].as_str())
            .filter(|s| !s.is_empty())
        {
            break td.to_string();
        }
        if Instant::now() > deadline {
            bail!(
                "berth-server has no CA roots after 60 s; end of its log:\n{}",
                server.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // 2. The catalog: every instance of every upstream, then their sidecars.
    let t = Instant::now();
    let mut parents = Vec::new();
    let mut sidecars = Vec::new();
    for x in 0..args.upstreams {
        for j in 0..inst {
            let g = x * inst + j;
            parents.push(parent_body(&args, x, j, g));
            sidecars.push(sidecar_body(&args, x, j, g, "passing"));
        }
    }
    let n = parents.len() + sidecars.len();
    let url = format!("{server_url}/v1/catalog/register");
    put_all(&http, &url, parents, args.concurrency).await?;
    put_all(&http, &url, sidecars, args.concurrency).await?;
    let secs = t.elapsed().as_secs_f64();
    let (w50, w99) = probe_writes(&http, &server_url, 20).await?;
    println!(
        "setup: {n} catalog registrations in {secs:.1} s ({:.0}/s, {} in flight); server RSS {:.1} MB; a lone write with no agents: p50 {} p99 {}",
        n as f64 / secs,
        args.concurrency,
        rss_mb(server.pid()),
        fmt_ms(w50),
        fmt_ms(w99)
    );

    let (c50, ckb) = probe_read(&http, &server_url, "/v1/health/connect/upstream-0", 20).await?;
    let (h50, hkb) = probe_read(&http, &server_url, "/v1/health/service/upstream-0", 20).await?;
    println!(
        "setup: what each woken proxy watch reads, no agents yet: /v1/health/connect/upstream-0 p50 {} ({ckb:.0} KB), /v1/health/service/upstream-0 p50 {} ({hkb:.0} KB)",
        fmt_ms(c50),
        fmt_ms(h50)
    );

    // 3. The agents.
    let t = Instant::now();
    let mut agents = Vec::new();
    for a in 0..args.agents {
        let (ah, ax) = (free_port(), free_port());
        let node = format!("agent-{a}");
        let proc = Proc::spawn(
            &format!("berth agent {node}"),
            Command::new(args.berth_bin.join("berth"))
                .args(["agent", "-retry-join", &format!("127.0.0.1:{rpc_port}")])
                .args(["-node", &node, "-advertise", "127.0.0.1"])
                .args(["-http-addr", &format!("127.0.0.1:{ah}")])
                .args(["-xds-addr", &format!("127.0.0.1:{ax}")])
                .args(["-log-level", &args.log_level]),
            dir.join(format!("{node}.log")),
        )?;
        agents.push(Agent {
            proc,
            http: ah,
            xds: ax,
        });
    }
    let deadline = Instant::now() + setup_timeout;
    let mut up = vec![false; agents.len()];
    loop {
        server.alive()?;
        for (i, a) in agents.iter_mut().enumerate() {
            if up[i] {
                continue;
            }
            a.proc.alive()?;
            if let Ok(r) = http.get(a.url("/v1/agent/self")).send().await {
                up[i] = r.status().is_success();
            }
        }
        let n = up.iter().filter(|u| **u).count();
        if n == agents.len() {
            break;
        }
        if Instant::now() > deadline {
            let i = up.iter().position(|u| !*u).unwrap_or(0);
            bail!(
                "{n} of {} agents came up; {} does not answer /v1/agent/self; end of its log:\n{}",
                agents.len(),
                agents[i].proc.name,
                agents[i].proc.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bare: Vec<f64> = agents.iter().map(|a| rss_mb(a.proc.pid())).collect();
    println!(
        "setup: {} agents answering in {:.1} s; agent RSS before any proxy: median {:.1} MB",
        agents.len(),
        t.elapsed().as_secs_f64(),
        median(&bare)
    );

    // 4. The proxies: svc-i with its sidecar on agent i / proxies_per_agent, upstream
    // i % upstreams. The Envoys' proxies get real free ports.
    let envoy_proxies: Vec<usize> = (0..args.envoys.min(args.agents))
        .map(|e| e * args.proxies_per_agent)
        .collect();
    let t = Instant::now();
    let mut states = Vec::new();
    let mut regs: Vec<Vec<Value>> = vec![Vec::new(); agents.len()];
    for i in 0..proxies {
        let (a, k) = (i / args.proxies_per_agent, i % args.proxies_per_agent);
        let x = i % args.upstreams;
        let (public, bind) = if envoy_proxies.contains(&i) {
            (free_port(), free_port())
        } else {
            (21_000 + k as u16 % 20_000, 41_000 + k as u16 % 20_000)
        };
        regs[a].push(json!({
            "Name": format!("svc-{i}"), "Port": 8_000 + k as u16 % 1_000,
            "Connect": {"SidecarService": {"Port": public, "Proxy": {
                "Upstreams": [{"DestinationName": upstream_name(x), "LocalBindPort": bind}]
            }}}
        }));
        states.push(Arc::new(ClientState {
            idx: i,
            proxy_id: format!("svc-{i}-sidecar-proxy"),
            upstream: x,
            cluster: berth_xds::sni(&upstream_name(x), DATACENTER, &trust_domain),
            want_endpoints: inst,
            ready: AtomicBool::new(false),
            view: Mutex::new(BTreeMap::new()),
            eds_log: Mutex::new(Vec::new()),
            streams: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        }));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (a, bodies) in regs.into_iter().enumerate() {
        let (http, url) = (http.clone(), agents[a].url("/v1/agent/service/register"));
        tasks.spawn(async move {
            for b in &bodies {
                put_ok(&http, &url, b).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    println!(
        "setup: {proxies} proxies registered with their agents in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 5. One delta-xDS client per proxy, one channel per agent; the Envoys beside them.
    let t = Instant::now();
    let tracker = Arc::new(Tracker::default());
    let mut channels = Vec::new();
    for a in &agents {
        channels.push(Endpoint::from_shared(format!("http://127.0.0.1:{}", a.xds))?.connect_lazy());
    }
    let mut client_tasks = Vec::new();
    for c in &states {
        let ch = channels[c.idx / args.proxies_per_agent].clone();
        client_tasks.push(tokio::spawn(client_loop(ch, c.clone(), tracker.clone())));
    }
    let mut envoys = Vec::new();
    for &i in &envoy_proxies {
        envoys.push(start_envoy(
            &args,
            dir,
            &agents[i / args.proxies_per_agent],
            &states[i].proxy_id,
            i,
        )?);
    }
    let deadline = Instant::now() + setup_timeout;
    wait_until("every xDS client to be configured", deadline, || {
        server.alive()?;
        let ready = states
            .iter()
            .filter(|c| c.ready.load(Ordering::Relaxed))
            .count();
        if ready < states.len() && Instant::now() + Duration::from_millis(150) > deadline {
            let c = states
                .iter()
                .find(|c| !c.ready.load(Ordering::Relaxed))
                .context("none")?;
            bail!(
                "{ready} of {} xDS clients configured; {} has {} of {} endpoints; last stream error: {}",
                states.len(),
                c.proxy_id,
                c.view.lock().unwrap_or_else(|p| p.into_inner()).len(),
                c.want_endpoints,
                c.last_error.lock().unwrap_or_else(|p| p.into_inner())
            );
        }
        Ok(ready == states.len())
    })
    .await?;
    let configured = t.elapsed();
    println!(
        "setup: all {proxies} xDS clients configured (CDS, LDS, EDS with {inst} endpoints, SDS; all ACKed) in {:.1} s",
        configured.as_secs_f64()
    );
    let deadline = Instant::now() + setup_timeout;
    for e in &mut envoys {
        let cluster = states[e.client].cluster.clone();
        let hosts = envoy_ready(&http, e, &cluster, inst, deadline).await?;
        println!(
            "envoy: {} is LIVE; cluster {cluster} has {hosts} hosts",
            e.proxy_id
        );
    }

    // 6. Idle: settle, then memory and the idle CPU.
    let agent_pids: Vec<u32> = agents.iter().map(|a| a.proc.pid()).collect();
    let (s0, a0, w0) = (cpu_secs(server.pid()), cpu_of(&agent_pids), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let idle_wall = w0.elapsed().as_secs_f64();
    let (s1, a1) = (cpu_secs(server.pid()), cpu_of(&agent_pids));
    for a in &mut agents {
        a.proc.alive()?;
    }
    let rss: Vec<f64> = agent_pids.iter().map(|p| rss_mb(*p)).collect();
    let rss_max = rss.iter().copied().fold(f64::NAN, f64::max);
    let rss_med = median(&rss);
    let server_idle_rss = rss_mb(server.pid());
    let (w50, w99) = probe_writes(&http, &server_url, 20).await?;
    println!(
        "\nidle, {}s after every client was configured:",
        args.settle_secs
    );
    println!(
        "  agent RSS: median {rss_med:.1} MB, max {rss_max:.1} MB over {} agents ({} proxies each) (goal: under {GOAL_AGENT_MB:.0} MB; median/goal {:.2}, max/goal {:.2})",
        agents.len(),
        args.proxies_per_agent,
        rss_med / GOAL_AGENT_MB,
        rss_max / GOAL_AGENT_MB
    );
    println!(
        "  ratio to Consul's client agent ({CONSUL_CLIENT_MB:.0} MB as its documentation states): median {:.2}, max {:.2}",
        rss_med / CONSUL_CLIENT_MB,
        rss_max / CONSUL_CLIENT_MB
    );
    println!(
        "  server: RSS {server_idle_rss:.1} MB, CPU {:.1}% of one core; all agents together: CPU {:.1}% of one core",
        (s1 - s0) / idle_wall * 100.0,
        (a1 - a0) / idle_wall * 100.0
    );
    println!(
        "  a lone write nobody watches, now: p50 {} p99 {}",
        fmt_ms(w50),
        fmt_ms(w99)
    );

    // 7. Churn.
    let mut subscribers: Vec<Vec<usize>> = vec![Vec::new(); args.upstreams];
    for c in &states {
        subscribers[c.upstream].push(c.idx);
    }
    let streams_before: u64 = states
        .iter()
        .map(|c| c.streams.load(Ordering::Relaxed))
        .sum();
    let me = std::process::id();
    let (s0, a0, m0) = (cpu_secs(server.pid()), cpu_of(&agent_pids), cpu_secs(me));
    let churn_start = Instant::now();
    let mut tasks = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    for k in 0..args.changes {
        let at = churn_start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(at.into()).await;
        let ch = plan_change(&args, k);
        let subs = subscribers[ch.upstream].clone();
        tasks.push(tokio::spawn(one_change(
            args.clone(),
            http.clone(),
            server_url.clone(),
            tracker.clone(),
            subs,
            ch,
            churn_start,
        )));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    let churn_wall = churn_start.elapsed().as_secs_f64();
    let (s1, a1, m1) = (cpu_secs(server.pid()), cpu_of(&agent_pids), cpu_secs(me));
    let churn_end = Instant::now();
    let server_rss = rss_mb(server.pid());
    let streams_after: u64 = states
        .iter()
        .map(|c| c.streams.load(Ordering::Relaxed))
        .sum();
    let nacks: u64 = states.iter().map(|c| c.nacks.load(Ordering::Relaxed)).sum();
    let eds_updates: usize = states
        .iter()
        .map(|c| {
            c.eds_log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(t, _)| *t >= churn_start && *t <= churn_end)
                .count()
        })
        .sum();

    if args.verbose {
        for r in &results {
            println!(
                "  change {:>3} ({:<4} upstream-{:<3}) sent at {:>8} write {:>9} -> first {:>9} -> all {:>9}",
                r.k,
                r.kind,
                r.upstream,
                fmt_ms(r.at_ms),
                fmt_ms(r.write_ms),
                fmt_ms(r.first_ms.unwrap_or(f64::NAN)),
                r.all_ms.map_or("incomplete".to_string(), fmt_ms)
            );
        }
    }
    let mut all: Vec<f64> = results.iter().filter_map(|r| r.all_ms).collect();
    all.sort_by(f64::total_cmp);
    let mut sent_all: Vec<f64> = results.iter().filter_map(|r| r.sent_all_ms).collect();
    sent_all.sort_by(f64::total_cmp);
    let mut first: Vec<f64> = results.iter().filter_map(|r| r.first_ms).collect();
    first.sort_by(f64::total_cmp);
    let mut each: Vec<f64> = results.iter().flat_map(|r| r.each_ms.clone()).collect();
    each.sort_by(f64::total_cmp);
    let mut client: Vec<f64> = results.iter().flat_map(|r| r.client_ms.clone()).collect();
    client.sort_by(f64::total_cmp);
    let mut write: Vec<f64> = results.iter().map(|r| r.write_ms).collect();
    write.sort_by(f64::total_cmp);
    let per_change: Vec<usize> = results.iter().map(|r| r.proxies).collect();
    let incomplete = results.iter().filter(|r| r.all_ms.is_none()).count();
    let missing: usize = results.iter().map(|r| r.missing).sum();
    let adds = results.iter().filter(|r| r.kind == "add").count();
    println!(
        "\nchurn: {} changes at {}/s ({adds} new instances, {} checks flipped via /v1/catalog/register) over {churn_wall:.1} s",
        results.len(),
        args.rate,
        results.len() - adds
    );
    println!(
        "  proxies per change: {} (min {}, max {})",
        median(&per_change.iter().map(|n| *n as f64).collect::<Vec<_>>()),
        per_change.iter().min().copied().unwrap_or(0),
        per_change.iter().max().copied().unwrap_or(0)
    );
    println!(
        "  write acknowledged -> every subscriber received and ACKed the EDS update: p50 {} p99 {} max {} (goal: p99 under {GOAL_P99_MS:.0} ms; p99/goal {:.2})",
        fmt_ms(percentile(&all, 0.5)),
        fmt_ms(percentile(&all, 0.99)),
        fmt_ms(all.last().copied().unwrap_or(f64::NAN)),
        percentile(&all, 0.99) / GOAL_P99_MS
    );
    println!(
        "  write acknowledged -> first subscriber ACKed: p50 {} p99 {}; per subscriber: p50 {} p99 {} ({} ACKs)",
        fmt_ms(percentile(&first, 0.5)),
        fmt_ms(percentile(&first, 0.99)),
        fmt_ms(percentile(&each, 0.5)),
        fmt_ms(percentile(&each, 0.99)),
        each.len()
    );
    println!(
        "  write sent -> every subscriber ACKed: p50 {} p99 {} max {}; the write's own round trip: p50 {} p99 {}; client receive -> ACK queued: p99 {}",
        fmt_ms(percentile(&sent_all, 0.5)),
        fmt_ms(percentile(&sent_all, 0.99)),
        fmt_ms(sent_all.last().copied().unwrap_or(f64::NAN)),
        fmt_ms(percentile(&write, 0.5)),
        fmt_ms(percentile(&write, 0.99)),
        fmt_ms(percentile(&client, 0.99)),
    );
    println!(
        "  incomplete changes (not everywhere within {} s): {incomplete} ({missing} subscribers missing); EDS updates received: {eds_updates} ({:.1} per change); streams reopened: {}; unexpected resource types NACKed: {nacks}",
        args.change_timeout_secs,
        eds_updates as f64 / results.len().max(1) as f64,
        streams_after - streams_before
    );
    println!(
        "  server CPU during the churn: {:.1}% of one core ({:.2} s CPU over {churn_wall:.1} s); server RSS {server_rss:.1} MB; all agents together: {:.1}% of one core; this load generator: {:.1}%",
        (s1 - s0) / churn_wall * 100.0,
        s1 - s0,
        (a1 - a0) / churn_wall * 100.0,
        (m1 - m0) / churn_wall * 100.0
    );

    // 8. The Envoys followed the churn: their hosts equal their stand-in client's view.
    for e in &mut envoys {
        let c = &states[e.client];
        let deadline = Instant::now() + Duration::from_secs(10);
        let outcome = loop {
            e.proc.alive()?;
            let want = c.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let have = e.hosts(&http, &c.cluster).await.unwrap_or_default();
            if have == want {
                break format!(
                    "matches the load generator's view ({} hosts, {} unhealthy)",
                    have.len(),
                    have.values().filter(|h| !**h).count()
                );
            }
            if Instant::now() > deadline {
                break format!(
                    "DIFFERS from the load generator's view after 10 s: Envoy {} hosts, client {}",
                    have.len(),
                    want.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!("envoy after the churn: {} {outcome}", e.proxy_id);
    }
    for t in client_tasks {
        t.abort();
    }
    drop(envoys);
    drop(agents);
    drop(server);
    Ok(())
}

fn main() -> ExitCode {
    let args = Arc::new(Args::parse());
    let dir = match tempfile::Builder::new()
        .prefix("berth-mesh-bench")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mesh bench: cannot make a work directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        tokio::select! {
            r = run(args.clone(), dir.path()) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Every process is gone here (dropped with the run); stop the client tasks too.
    rt.shutdown_timeout(Duration::from_secs(2));
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh bench failed: {e:#}");
            ExitCode::FAILURE
        }
    };
    if args.keep_dir || code == ExitCode::FAILURE {
        let path = dir.keep();
        eprintln!("mesh bench: logs kept in {}", path.display());
    }
    code
}
