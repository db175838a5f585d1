//! `berth-acl-controller` as a real long-running process, its `/metrics`, and a TCP relay
//! that can take the ECS endpoint away (refusing new connections and cutting open ones)
//! without stopping moto, whose state the rest of the test needs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{bin, free_port, http_client};

pub struct Controller {
    pub name: String,
    pub metrics_port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Controller {
    /// Starts the controller with `args` (after `-metrics-addr`) and `env`, logging to
    /// `dir/<name>.log`.
    pub fn start(
        name: &str,
        dir: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Controller {
        let metrics_port = free_port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("controller log");
        let child = Command::new(bin("berth-acl-controller"))
            .args(["-metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("start berth-acl-controller");
        Controller {
            name: name.to_string(),
            metrics_port,
            log,
            child,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The scrape, or `None` while the endpoint is not up.
    pub async fn metrics(&self) -> Option<String> {
        let r = http_client()
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    /// One sample's value (`name` with its labels, as the scrape prints it).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await?;
        metric_in(&text, name)
    }

    /// Waits until `pred` holds for the scrape; on timeout the panic shows the log.
    pub async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(t) = self.metrics().await
                && pred(&t)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; {} log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit; the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A TCP relay to `target`; `set_up(false)` refuses new connections and cuts open ones.
pub struct Relay {
    pub port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let port = listener.local_addr().expect("relay addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay {
            port,
            up,
            cut,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
