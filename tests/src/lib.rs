//! End-to-end harness: Berth's binaries as real processes on loopback, each test with its own
//! ports and directories so that tests run in parallel.

pub mod acl_server;
pub mod cli;
pub mod controller;
pub mod ecs_local;
pub mod lifecycle;
pub mod mesh;
pub mod moto;
pub mod terraform;

// The project's venv holds every third-party peer, not only moto.
pub use moto::{repo_root, venv_bin};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A binary of this workspace, built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>; the harness's own binaries
    // (the demo, the benchmarks) live in target/<profile> itself.
    let parent = exe.parent().expect("the binary has a directory");
    let dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().expect("target/<profile>/deps has a parent")
    } else {
        parent
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A loopback port that was free a moment ago.
///
/// Chosen below the kernel's ephemeral range (32768 and up), from which `bind(0)` and every
/// outgoing connection take their ports: a port handed out here is not taken by some
/// test's client connection before the server it is meant for binds it. Ports already
/// handed out in this process are not handed out again.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for i in 0..20_000u32 {
        let port = 10_000 + (seed.wrapping_add(i.wrapping_mul(7_919)) % 22_000) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `berth-server` process. Killed (SIGKILL) when dropped.
pub struct Server {
    pub name: String,
    pub http_port: u16,
    pub rpc_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Server {
    /// Starts `berth-server` with `-node name`, the given ports, `-data-dir dir/name` (unless
    /// `extra` has `-dev`) and `extra` flags.
    pub fn start(
        dir: &Path,
        name: &str,
        http_port: u16,
        rpc_port: u16,
        extra: &[String],
    ) -> Server {
        Server::start_bound(dir, name, "127.0.0.1", http_port, rpc_port, extra)
    }

    /// As `start`, listening on `bind` (e.g. `0.0.0.0` for tasks in network namespaces;
    /// `url()` still uses loopback).
    pub fn start_bound(
        dir: &Path,
        name: &str,
        bind: &str,
        http_port: u16,
        rpc_port: u16,
        extra: &[String],
    ) -> Server {
        Server::start_bound_env(dir, name, bind, http_port, rpc_port, extra, &[])
    }

    /// As `start_bound`, with `env` added to the process's environment.
    pub fn start_bound_env(
        dir: &Path,
        name: &str,
        bind: &str,
        http_port: u16,
        rpc_port: u16,
        extra: &[String],
        env: &[(String, String)],
    ) -> Server {
        let data_dir = dir.join(name);
        let mut args = vec![
            "-node".to_string(),
            name.to_string(),
            "-http-addr".to_string(),
            format!("{bind}:{http_port}"),
            "-rpc-addr".to_string(),
            format!("{bind}:{rpc_port}"),
        ];
        if !extra.iter().any(|a| a == "-dev") {
            args.push("-data-dir".to_string());
            args.push(data_dir.display().to_string());
        }
        args.extend(extra.iter().cloned());
        let mut s = Server {
            name: name.to_string(),
            http_port,
            rpc_port,
            data_dir,
            log: dir.join(format!("{name}.log")),
            args,
            env: env.to_vec(),
            child: None,
        };
        s.spawn();
        s
    }

    /// A dev-mode server (in memory, its own leader) on fresh ports.
    pub fn dev(dir: &Path) -> Server {
        Server::start(dir, "dev", free_port(), free_port(), &["-dev".to_string()])
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(bin("berth-server"))
            .args(&self.args)
            .env("BERTH_LOG_LEVEL", "info")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn berth-server");
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn rpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rpc_port)
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("server not running")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child we started.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Starts the process again with the same flags, ports and data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The leader's RPC address as this server reports it, or "" when none.
    pub async fn leader(&self) -> Option<String> {
        let r = http_client()
            .get(self.url("/v1/status/leader"))
            .send()
            .await
            .ok()?;
        r.json::<String>().await.ok()
    }

    /// Waits until this server reports a leader.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.leader().await.is_some_and(|l| !l.is_empty()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready after {timeout:?}; log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn agent_self(&self) -> Value {
        get_json(&self.url("/v1/agent/self")).await
    }

    /// `Stats.raft.<key>` of `/v1/agent/self`.
    pub async fn raft_stat(&self, key: &str) -> String {
        self.agent_self().await["Stats"]["raft"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn node_id(&self) -> String {
        self.agent_self().await["Config"]["NodeID"]
            .as_str()
            .expect("NodeID")
            .to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process does not die of SIGKILL until continued on some kernels' ptrace
            // paths; continuing first costs nothing.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        }
        self.kill9();
    }
}

pub async fn get_json(url: &str) -> Value {
    let r = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "GET {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

/// A GET's JSON answer, or `None` when it cannot be had yet (for [`eventually`] polls).
pub async fn try_json(url: &str) -> Option<Value> {
    http_client().get(url).send().await.ok()?.json().await.ok()
}

/// How one server of a [`Cluster`] is to be started.
pub struct Plan {
    pub name: String,
    pub http: u16,
    pub rpc: u16,
    pub args: Vec<String>,
}

impl Plan {
    pub fn start(&self, dir: &Path) -> Server {
        Server::start(dir, &self.name, self.http, self.rpc, &self.args)
    }
}

/// A cluster of servers started with `-bootstrap-expect n` and `-retry-join` to each other.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub servers: Vec<Server>,
}

impl Cluster {
    /// Ports and flags of `n` servers, without starting them.
    pub fn plan(n: usize, extra: &[&str]) -> (tempfile::TempDir, Vec<Plan>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let plans = (0..n)
            .map(|i| {
                let mut args = vec!["-bootstrap-expect".to_string(), n.to_string()];
                for (j, (_, rpc)) in ports.iter().enumerate() {
                    if j != i {
                        args.push("-retry-join".to_string());
                        args.push(format!("127.0.0.1:{rpc}"));
                    }
                }
                args.push("-retry-interval".to_string());
                args.push("200ms".to_string());
                args.extend(extra.iter().map(|s| s.to_string()));
                Plan {
                    name: format!("s{}", i + 1),
                    http: ports[i].0,
                    rpc: ports[i].1,
                    args,
                }
            })
            .collect();
        (dir, plans)
    }

    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        let (dir, plans) = Cluster::plan(n, extra);
        let servers = plans.into_iter().map(|p| p.start(dir.path())).collect();
        let c = Cluster { dir, servers };
        c.wait_agreed_leader(&(0..n).collect::<Vec<_>>(), Duration::from_secs(30))
            .await;
        c
    }

    /// Waits until every listed server names the same, non-empty leader; returns its index.
    pub async fn wait_agreed_leader(&self, among: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for &i in among {
                seen.push(self.servers[i].leader().await.unwrap_or_default());
            }
            let agreed = !seen[0].is_empty() && seen.iter().all(|l| l == &seen[0]);
            if let Some(idx) = self
                .leader_of(&seen[0])
                .filter(|i| agreed && among.contains(i))
            {
                return idx;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = among
                    .iter()
                    .map(|&i| {
                        format!(
                            "--- {}:\n{}",
                            self.servers[i].name,
                            self.servers[i].log_tail(15)
                        )
                    })
                    .collect();
                panic!(
                    "no agreed leader after {timeout:?}: {seen:?}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn leader_of(&self, rpc_addr: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.rpc_addr() == rpc_addr)
    }
}

/// KV helpers over the HTTP API, returning what the tests assert on.
pub struct Kv<'a> {
    pub client: &'a reqwest::Client,
    pub base: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn index(&self) -> u64 {
        self.header("x-consul-index")
            .parse()
            .unwrap_or_else(|_| panic!("no X-Consul-Index"))
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let r = req.send().await.expect("request failed");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

impl Kv<'_> {
    pub async fn put(&self, key: &str, value: impl Into<reqwest::Body>, query: &str) -> Reply {
        send(
            self.client
                .put(format!("{}/v1/kv/{key}{query}", self.base))
                .body(value),
        )
        .await
    }

    pub async fn get(&self, key: &str, query: &str) -> Reply {
        send(self.client.get(format!("{}/v1/kv/{key}{query}", self.base))).await
    }

    pub async fn delete(&self, key: &str, query: &str) -> Reply {
        send(
            self.client
                .delete(format!("{}/v1/kv/{key}{query}", self.base)),
        )
        .await
    }

    /// The decoded value of a key, or None when absent (404).
    pub async fn value(&self, key: &str, query: &str) -> Option<Vec<u8>> {
        let sep = if query.is_empty() { "?" } else { "&" };
        let r = self.get(key, &format!("{query}{sep}raw")).await;
        match r.status {
            200 => Some(r.body),
            404 => None,
            s => panic!("GET {key}: {s} {}", r.text()),
        }
    }
}
