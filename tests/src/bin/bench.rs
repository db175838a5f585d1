//! `berth-bench`: KV write throughput and latency of Berth against etcd, measured in one run on
//! this machine, with the same load generator, concurrency and value size. Prints figures and
//! ratios; asserts nothing (timings on shared machines are for reading, not for gating).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Parser;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Parser)]
#[command(about = "Berth vs etcd KV PUT benchmark")]
struct Args {
    /// Directory holding the (release) berth-server binary.
    #[arg(long)]
    berth_bin: PathBuf,
    /// etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Requests per concurrency level.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Cluster sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    sizes: Vec<usize>,
    /// Keys of 100 bytes written before reading the servers' memory.
    #[arg(long, default_value_t = 100_000)]
    rss_keys: u64,
    /// `kv` (KV PUTs against etcd), `catalog` (catalog registrations against etcd puts,
    /// blocking-query fan-out, memory with a large catalog), or `all`.
    #[arg(long, default_value = "all")]
    suite: String,
    /// Catalog suite: blocking watchers, services they spread over, nodes and instances.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    #[arg(long, default_value_t = 10_000)]
    nodes: u64,
    #[arg(long, default_value_t = 50_000)]
    instances: u64,
}

/// What one request of a load does.
#[derive(Clone, Copy)]
enum Op {
    /// KV PUT (Berth) or put (etcd) of the value.
    Put,
    /// Catalog registration of node `i % nodes` with one service instance (Berth); for etcd,
    /// a put whose value is as large as Berth's request body.
    Register { nodes: u64 },
}

fn register_body(i: u64, nodes: u64) -> serde_json::Value {
    let n = i % nodes.max(1);
    serde_json::json!({
        "Node": format!("node-{n}"),
        "Address": format!("10.{}.{}.{}", n / 65536 % 256, n / 256 % 256, n % 256),
        "NodeMeta": {"az": "eu-west-1a"},
        "Service": {"ID": format!("inst-{i}"), "Service": format!("svc-{}", i % 1000), "Port": 8080,
                    "Tags": ["v1", "blue"], "Meta": {"task": format!("task-{i}")}},
        "Check": {"CheckID": format!("inst-{i}-alive"), "Name": "alive", "ServiceID": format!("inst-{i}"), "Status": "passing"}
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Processes of one cluster; killed on drop, even when the benchmark fails half-way.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Berth,
    Etcd,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Berth => "berth",
            Target::Etcd => "etcd",
        }
    }
}

struct Cluster {
    target: Target,
    procs: Procs,
    urls: Vec<String>,
    _dir: tempfile::TempDir,
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
}

async fn start_berth(bin: &Path, n: usize) -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let ports: Vec<(u16, u16)> = (0..n)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let mut procs = Procs(Vec::new());
    for (i, (http, rpc)) in ports.iter().enumerate() {
        let mut cmd = Command::new(bin.join("berth-server"));
        cmd.args(["-node", &format!("b{i}"), "-data-dir"])
            .arg(dir.path().join(format!("b{i}")))
            .args([
                "-http-addr",
                &format!("127.0.0.1:{http}"),
                "-rpc-addr",
                &format!("127.0.0.1:{rpc}"),
            ])
            .args([
                "-bootstrap-expect",
                &n.to_string(),
                "-retry-interval",
                "200ms",
                "-log-level",
                "warn",
            ]);
        for (j, (_, r)) in ports.iter().enumerate() {
            if j != i {
                cmd.args(["-retry-join", &format!("127.0.0.1:{r}")]);
            }
        }
        let log = log_file(dir.path(), &format!("b{i}"))?;
        procs.0.push(
            cmd.stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("start berth-server")?,
        );
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|(h, _)| format!("http://127.0.0.1:{h}"))
        .collect();
    // Both systems get their writes at the leader, so it goes first.
    let leader = find_leader(
        &urls,
        "berth",
        |c, u| c.get(format!("{u}/v1/agent/self")),
        |v| v["Stats"]["raft"]["state"] == "Leader",
    )
    .await?;
    Ok(Cluster::new(Target::Berth, procs, urls, dir, leader))
}

async fn start_etcd(bin: &Path, n: usize) -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let ports: Vec<(u16, u16)> = (0..n)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut procs = Procs(Vec::new());
    for (i, (c, p)) in ports.iter().enumerate() {
        let log = log_file(dir.path(), &format!("e{i}"))?;
        let child = Command::new(bin)
            .args(["--name", &format!("e{i}"), "--data-dir"])
            .arg(dir.path().join(format!("e{i}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{p}"),
            ])
            .args([
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .args([
                "--initial-cluster-token",
                "berth-bench",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        procs.0.push(child);
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("http://127.0.0.1:{c}"))
        .collect();
    let leader = find_leader(
        &urls,
        "etcd",
        |c, u| c.post(format!("{u}/v3/maintenance/status")).body("{}"),
        |v| v["leader"].is_string() && v["leader"] == v["header"]["member_id"],
    )
    .await?;
    Ok(Cluster::new(Target::Etcd, procs, urls, dir, leader))
}

/// Polls every member until one says it leads; returns its position.
async fn find_leader(
    urls: &[String],
    what: &str,
    request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    is_leader: impl Fn(&serde_json::Value) -> bool,
) -> Result<usize> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, u) in urls.iter().enumerate() {
            let reply = match request(&client, u).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            if reply.as_ref().is_some_and(&is_leader) {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            bail!("{what} cluster of {} has no leader after 30 s", urls.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Cluster {
    fn new(
        target: Target,
        mut procs: Procs,
        mut urls: Vec<String>,
        dir: tempfile::TempDir,
        leader: usize,
    ) -> Self {
        urls.swap(0, leader);
        procs.0.swap(0, leader);
        Cluster {
            target,
            procs,
            urls,
            _dir: dir,
        }
    }
}

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// Closed loop: `clients` workers, one keep-alive connection each, `total` PUTs in all.
async fn load(
    c: &Cluster,
    clients: usize,
    total: u64,
    value: &[u8],
    key_base: &str,
) -> Result<Figures> {
    load_op(c, Op::Put, clients, total, value, key_base).await
}

async fn load_op(
    c: &Cluster,
    op: Op,
    clients: usize,
    total: u64,
    value: &[u8],
    key_base: &str,
) -> Result<Figures> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let url = c.urls[0].clone();
    let value_b64 = B64.encode(value);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .http1_only()
            .build()?;
        let (next, errors, url, value, value_b64, key_base) = (
            next.clone(),
            errors.clone(),
            url.clone(),
            value.to_vec(),
            value_b64.clone(),
            key_base.to_string(),
        );
        let target = c.target;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let key = format!("{key_base}/{i}");
                let t = Instant::now();
                let res = match (target, op) {
                    (Target::Berth, Op::Register { nodes }) => {
                        client
                            .put(format!("{url}/v1/catalog/register"))
                            .json(&register_body(i, nodes))
                            .send()
                            .await
                    }
                    (Target::Berth, Op::Put) => {
                        client
                            .put(format!("{url}/v1/kv/{key}"))
                            .body(value.clone())
                            .send()
                            .await
                    }
                    (Target::Etcd, _) => {
                        let body = serde_json::json!({"key": B64.encode(&key), "value": value_b64});
                        client
                            .post(format!("{url}/v3/kv/put"))
                            .json(&body)
                            .send()
                            .await
                    }
                };
                match res {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Figures {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    })
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

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !["kv", "catalog", "all"].contains(&args.suite.as_str()) {
        bail!("--suite must be kv, catalog or all, not {:?}", args.suite);
    }
    if args.suite != "catalog" {
        kv_suite(&args).await?;
    }
    if args.suite != "kv" {
        catalog_suite(&args).await?;
    }
    Ok(())
}

async fn kv_suite(args: &Args) -> Result<()> {
    let value = vec![b'v'; args.value_size];
    println!(
        "KV PUT, {} requests per level, {} B values, loopback, fsync on; writes go to the leader",
        args.requests, args.value_size
    );
    println!(
        "{:<6} {:>7} {:>7} {:>10} {:>10} {:>10} {:>7}",
        "target", "servers", "clients", "req/s", "p50", "p99", "errors"
    );
    let mut rows: Vec<(Target, usize, usize, Figures)> = Vec::new();
    for &size in &args.sizes {
        for target in [Target::Berth, Target::Etcd] {
            let cluster = match target {
                Target::Berth => start_berth(&args.berth_bin, size).await?,
                Target::Etcd => start_etcd(&args.etcd, size).await?,
            };
            for &clients in &args.clients {
                let f = load(
                    &cluster,
                    clients,
                    args.requests,
                    &value,
                    &format!("bench/c{clients}"),
                )
                .await?;
                println!(
                    "{:<6} {:>7} {:>7} {:>10.0} {:>10} {:>10} {:>7}",
                    target.name(),
                    size,
                    clients,
                    f.rps,
                    ms(f.p50),
                    ms(f.p99),
                    f.errors
                );
                rows.push((target, size, clients, f));
            }
            drop(cluster);
        }
    }
    println!("\nratio berth/etcd (req/s; above 1.0 means Berth is faster)");
    for &size in &args.sizes {
        for &clients in &args.clients {
            let find = |t: Target| {
                rows.iter()
                    .find(|r| r.0 == t && r.1 == size && r.2 == clients)
                    .map(|r| r.3.rps)
            };
            if let (Some(b), Some(e)) = (find(Target::Berth), find(Target::Etcd)) {
                println!("  {size} server(s), {clients:>2} clients: {:.2}x", b / e);
            }
        }
    }

    println!(
        "\nmemory after {} keys of 100 B (one server, RSS)",
        args.rss_keys
    );
    let small = vec![b'm'; 100];
    for target in [Target::Berth, Target::Etcd] {
        let cluster = match target {
            Target::Berth => start_berth(&args.berth_bin, 1).await?,
            Target::Etcd => start_etcd(&args.etcd, 1).await?,
        };
        let before = rss_mb(cluster.procs.0[0].id());
        load(&cluster, 64, args.rss_keys, &small, "rss").await?;
        let after = rss_mb(cluster.procs.0[0].id());
        let goal = if target == Target::Berth {
            " (goal: under 200 MB)"
        } else {
            ""
        };
        println!(
            "  {:<6} {:>8.1} MB (idle {:.1} MB){goal}",
            target.name(),
            after,
            before
        );
    }
    Ok(())
}

async fn catalog_suite(args: &Args) -> Result<()> {
    // (1) Registration throughput on 3 servers against etcd puts of the same size.
    let body_len = serde_json::to_vec(&register_body(123_456, args.nodes))?.len();
    let value = vec![b'r'; body_len];
    println!(
        "\ncatalog register, 3 servers, {} requests per level, {body_len} B bodies (etcd: puts of {body_len} B)",
        args.requests
    );
    println!(
        "{:<6} {:>7} {:>10} {:>10} {:>10} {:>7}",
        "target", "clients", "req/s", "p50", "p99", "errors"
    );
    let mut rates = Vec::new();
    for target in [Target::Berth, Target::Etcd] {
        let cluster = match target {
            Target::Berth => start_berth(&args.berth_bin, 3).await?,
            Target::Etcd => start_etcd(&args.etcd, 3).await?,
        };
        for &clients in &args.clients {
            let op = Op::Register { nodes: args.nodes };
            let f = load_op(
                &cluster,
                op,
                clients,
                args.requests,
                &value,
                &format!("reg/c{clients}"),
            )
            .await?;
            println!(
                "{:<6} {:>7} {:>10.0} {:>10} {:>10} {:>7}",
                target.name(),
                clients,
                f.rps,
                ms(f.p50),
                ms(f.p99),
                f.errors
            );
            rates.push((target, clients, f.rps));
        }
    }
    for &clients in &args.clients {
        let get = |t| {
            rates
                .iter()
                .find(|r| r.0 == t && r.1 == clients)
                .map(|r| r.2)
        };
        if let (Some(b), Some(e)) = (get(Target::Berth), get(Target::Etcd)) {
            println!("  ratio berth/etcd at {clients:>2} clients: {:.2}x", b / e);
        }
    }

    // (2) Blocking-query fan-out.
    fan_out(args).await?;

    // (3) Memory with a large catalog.
    let cluster = start_berth(&args.berth_bin, 1).await?;
    let idle = rss_mb(cluster.procs.0[0].id());
    let op = Op::Register { nodes: args.nodes };
    let f = load_op(&cluster, op, 64, args.instances, &[], "rss").await?;
    let after = rss_mb(cluster.procs.0[0].id());
    let check = reqwest::get(format!("{}/v1/catalog/nodes", cluster.urls[0]))
        .await?
        .json::<serde_json::Value>()
        .await?;
    println!(
        "\nmemory with {} nodes and {} service instances (one server, RSS): {after:.1} MB (idle {idle:.1} MB; {} nodes listed; {} errors) (goal: under 300 MB)",
        args.nodes,
        args.instances,
        check.as_array().map_or(0, Vec::len),
        f.errors
    );
    Ok(())
}

/// `watchers` blocking health queries over `services` services; one service changes.
async fn fan_out(args: &Args) -> Result<()> {
    let cluster = start_berth(&args.berth_bin, 3).await?;
    let url = cluster.urls[0].clone();
    let setup = reqwest::Client::new();
    for k in 0..args.services {
        let body = serde_json::json!({"Node": format!("fan-{}", k % 100), "Address": "10.9.0.1",
            "Service": {"ID": format!("fan-{k}"), "Service": format!("fan-{k}"), "Port": 80}});
        let r = setup
            .put(format!("{url}/v1/catalog/register"))
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("registering fan-{k}: {}", r.status());
        }
    }
    let mut indexes = Vec::new();
    for k in 0..args.services {
        let r = setup
            .get(format!("{url}/v1/health/service/fan-{k}"))
            .send()
            .await?;
        let idx: u64 = r
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .context("no X-Consul-Index")?;
        indexes.push(idx);
    }
    let woke: Arc<std::sync::Mutex<Vec<(usize, Instant)>>> = Arc::default();
    // One client: its pool opens a connection per concurrent request.
    let watch_client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(args.watchers)
        .build()?;
    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        let k = w % args.services;
        let idx = indexes[k];
        let url = url.clone();
        let woke = woke.clone();
        let client = watch_client.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .get(format!(
                    "{url}/v1/health/service/fan-{k}?index={idx}&wait=120s"
                ))
                .send()
                .await?;
            let _ = r.bytes().await?;
            woke.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((k, Instant::now()));
            anyhow::Ok(())
        }));
    }
    // Let every watcher reach the server and park.
    tokio::time::sleep(Duration::from_secs(5 + args.watchers as u64 / 2000)).await;
    let early = woke.lock().unwrap_or_else(|p| p.into_inner()).len();
    let body = serde_json::json!({"Node": "fan-0", "Address": "10.9.0.1",
        "Service": {"ID": "fan-0", "Service": "fan-0", "Port": 80, "Tags": ["changed"]}});
    let sent = Instant::now();
    let r = setup
        .put(format!("{url}/v1/catalog/register"))
        .json(&body)
        .send()
        .await?;
    let acked = Instant::now();
    if !r.status().is_success() {
        bail!("the change failed: {}", r.status());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let woke = woke.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for t in tasks {
        t.abort();
    }
    let mine: Vec<Instant> = woke
        .iter()
        .filter(|(k, _)| *k == 0)
        .map(|(_, t)| *t)
        .collect();
    let others = woke.iter().filter(|(k, _)| *k != 0).count();
    // Signed: a watcher often answers before the writer has read its own acknowledgement.
    let signed_ms = |from: Instant| {
        let mut v: Vec<f64> = mine
            .iter()
            .map(|t| {
                if *t >= from {
                    t.duration_since(from).as_secs_f64() * 1000.0
                } else {
                    -(from.duration_since(*t).as_secs_f64() * 1000.0)
                }
            })
            .collect();
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        (pct(0.50), pct(0.99))
    };
    let (ack50, ack99) = signed_ms(acked);
    let (sent50, sent99) = signed_ms(sent);
    println!(
        "\nblocking fan-out: {} watchers over {} services, one service changed on a 3-server cluster",
        args.watchers, args.services
    );
    println!(
        "  woken: {} of the changed service's {} watchers; {others} watchers of other services (must be 0); {early} returned before the change",
        mine.len(),
        args.watchers.div_ceil(args.services),
    );
    println!(
        "  write acknowledged -> watcher response: p50 {ack50:+.2} ms p99 {ack99:+.2} ms (goal: p99 under 50 ms; negative = before the writer saw its ack)"
    );
    println!(
        "  write sent -> watcher response: p50 {sent50:.2} ms p99 {sent99:.2} ms (the write's own round trip took {:.2} ms)",
        acked.duration_since(sent).as_secs_f64() * 1000.0
    );
    Ok(())
}
