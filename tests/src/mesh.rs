//! The data path as real processes: `berth agent`, and Envoy started by
//! `berth connect envoy` (so the bootstrap under test is the one the CLI makes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::venv_bin;
use crate::{bin, eventually, free_port, http_client};

/// One `berth agent` process, killed when dropped.
pub struct AgentProc {
    pub http_port: u16,
    pub xds_port: u16,
    pub log: PathBuf,
    args: Vec<String>,
    child: Child,
}

fn spawn_agent(args: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    Command::new(bin("berth"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("start berth agent")
}

impl AgentProc {
    pub fn start(dir: &Path, node: &str, server_rpc: &str, extra: &[&str]) -> AgentProc {
        let (http_port, xds_port) = (free_port(), free_port());
        let log = dir.join(format!("agent-{node}.log"));
        let mut args: Vec<String> = [
            "agent",
            "-retry-join",
            server_rpc,
            "-node",
            node,
            "-advertise",
            "127.0.0.1",
            "-http-addr",
            &format!("127.0.0.1:{http_port}"),
            "-xds-addr",
            &format!("127.0.0.1:{xds_port}"),
            "-log-level",
            "debug",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn_agent(&args, &log);
        AgentProc {
            http_port,
            xds_port,
            log,
            args,
            child,
        }
    }

    /// kill -9, then the same command line again (same ports, same data dir).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_agent(&self.args, &self.log);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(20), "the agent API", || async {
            let r = http_client()
                .get(self.url("/v1/agent/self"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Envoy sidecar for a proxy registered with `agent`, started through
/// `berth connect envoy` (which execs Envoy, so the PID is Envoy's).
pub struct EnvoyProc {
    pub admin: String,
    child: Child,
    pub log: PathBuf,
}

impl EnvoyProc {
    pub async fn start(
        dir: &Path,
        agent: &AgentProc,
        proxy_id: &str,
        token: Option<&str>,
    ) -> EnvoyProc {
        // Several Envoys may run for one proxy ID (a test's intruder): their files differ.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let admin_file = dir.join(format!("{proxy_id}.{n}.admin"));
        let log = dir.join(format!("{proxy_id}.{n}.envoy.log"));
        let out = std::fs::File::create(&log).expect("envoy log");
        let mut cmd = Command::new(bin("berth"));
        cmd.args([
            "connect",
            "envoy",
            "-proxy-id",
            proxy_id,
            "-http-addr",
            &format!("127.0.0.1:{}", agent.http_port),
            "-xds-addr",
            &format!("127.0.0.1:{}", agent.xds_port),
            "-admin-bind",
            "127.0.0.1:0",
            "-envoy-binary",
            venv_bin("envoy").to_str().expect("path"),
            "-bootstrap-file",
            dir.join(format!("{proxy_id}.bootstrap.json"))
                .to_str()
                .expect("path"),
        ]);
        if let Some(t) = token {
            cmd.args(["-token", t]);
        }
        cmd.args([
            "--",
            "--disable-hot-restart",
            "--drain-time-s",
            "1",
            "--drain-strategy",
            "immediate",
            "--log-level",
            "warn",
            "--admin-address-path",
            admin_file.to_str().expect("path"),
        ]);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start berth connect envoy");
        let admin = eventually(Duration::from_secs(20), "Envoy's admin address", || async {
            std::fs::read_to_string(&admin_file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .await;
        EnvoyProc { admin, child, log }
    }

    pub async fn admin_json(&self, path: &str) -> Option<Value> {
        let r = http_client()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// (address, eds health status) of every host of the clusters whose name starts with
    /// `prefix`.
    pub async fn hosts(&self, prefix: &str) -> Vec<(String, String)> {
        let Some(v) = self.admin_json("/clusters?format=json").await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for c in v["cluster_statuses"].as_array().into_iter().flatten() {
            if !c["name"].as_str().unwrap_or("").starts_with(prefix) {
                continue;
            }
            for h in c["host_statuses"].as_array().into_iter().flatten() {
                let a = &h["address"]["socket_address"];
                out.push((
                    format!(
                        "{}:{}",
                        a["address"].as_str().unwrap_or(""),
                        a["port_value"]
                    ),
                    h["health_status"]["eds_health_status"]
                        .as_str()
                        .unwrap_or("HEALTHY")
                        .to_string(),
                ));
            }
        }
        out.sort();
        out
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EnvoyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request loop against one URL, counting successes and keeping every failure; half of
/// the requests use a fresh connection, so that new certificates and listeners are used as
/// soon as they arrive.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(url: String) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let pooled = http_client();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let fresh;
                    let c = if n.is_multiple_of(2) {
                        &pooled
                    } else {
                        fresh = reqwest::Client::builder()
                            .pool_max_idle_per_host(0)
                            .build()
                            .expect("client");
                        &fresh
                    };
                    match c.get(&url).timeout(Duration::from_secs(3)).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("status {}", r.status())),
                        Err(e) => failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Load {
            stop,
            ok,
            failed,
            task,
        }
    }

    /// Waits until `n` more requests have succeeded (at most a minute).
    pub async fn more_ok(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let target = self.ok.load(Ordering::SeqCst) + n;
        eventually(Duration::from_secs(60), "requests to succeed", || async {
            (self.ok.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await;
    }

    /// Stops the loop: (successes, failures).
    pub async fn finish(self) -> (usize, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.ok.load(Ordering::SeqCst), failed)
    }
}
