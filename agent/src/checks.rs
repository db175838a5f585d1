//! Check runners: one task per check. Interval checks (HTTP, TCP, gRPC) probe and report
//! through the check's thresholds; a TTL check's task turns it critical when no update came
//! within the TTL. A runner holds only a weak reference to the agent and is aborted when its
//! check is replaced or removed.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use berth_api::catalog::{CRITICAL, PASSING, WARNING};

use crate::Agent;
use crate::local::CheckKind;

/// Shared HTTP clients for HTTP checks, by (verify TLS, follow redirects).
pub struct HttpClients {
    clients: [reqwest::Client; 4],
}

impl HttpClients {
    pub fn new() -> Self {
        let build = |insecure: bool, follow: bool| {
            reqwest::Client::builder()
                .tls_danger_accept_invalid_certs(insecure)
                .redirect(if follow {
                    reqwest::redirect::Policy::limited(10)
                } else {
                    reqwest::redirect::Policy::none()
                })
                .user_agent("Consul Health Check")
                .build()
                .unwrap_or_default()
        };
        HttpClients {
            clients: [
                build(false, true),
                build(true, true),
                build(false, false),
                build(true, false),
            ],
        }
    }

    fn get(&self, insecure: bool, follow: bool) -> &reqwest::Client {
        &self.clients[usize::from(insecure) + 2 * usize::from(!follow)]
    }
}

impl Default for HttpClients {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs one probe of an interval check: `(status, output)`.
pub async fn probe(agent: &Agent, kind: &CheckKind, timeout: Duration) -> (&'static str, String) {
    match kind {
        CheckKind::Http {
            url,
            method,
            header,
            body,
            tls_skip_verify,
            disable_redirects,
        } => {
            let client = agent.http.get(*tls_skip_verify, !disable_redirects);
            let method =
                reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let mut req = client
                .request(method.clone(), url)
                .timeout(timeout)
                .header("Accept", "text/plain, text/*, */*");
            for (k, values) in header {
                for v in values {
                    req = req.header(k.as_str(), v.as_str());
                }
            }
            if !body.is_empty() {
                req = req.body(body.clone());
            }
            match req.send().await {
                Err(e) => (CRITICAL, format!("Get \"{url}\": {}", error_chain(&e))),
                Ok(resp) => {
                    let code = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let output = format!("HTTP {method} {url}: {code} Output: {text}");
                    let status = if code.is_success() {
                        PASSING
                    } else if code.as_u16() == 429 {
                        WARNING
                    } else {
                        CRITICAL
                    };
                    (status, output)
                }
            }
        }
        CheckKind::Tcp(addr) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await
            {
                Ok(Ok(_)) => (PASSING, format!("TCP connect {addr}: Success")),
                Ok(Err(e)) => (CRITICAL, format!("dial tcp {addr}: {e}")),
                Err(_) => (CRITICAL, format!("dial tcp {addr}: i/o timeout")),
            }
        }
        CheckKind::Grpc { target, service } => grpc_probe(target, service, timeout).await,
        CheckKind::Ttl(_) | CheckKind::Manual => (CRITICAL, "not a probing check".into()),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn grpc_probe(target: &str, service: &str, timeout: Duration) -> (&'static str, String) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{target}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return (CRITICAL, format!("gRPC target {target}: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return (CRITICAL, format!("gRPC {target}: {}", error_chain(&e))),
    };
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(resp) => {
            let status = resp.into_inner().status;
            if status == ServingStatus::Serving as i32 {
                (PASSING, format!("gRPC check {target}/{service}: success"))
            } else {
                let name = ServingStatus::try_from(status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("UNKNOWN");
                (
                    CRITICAL,
                    format!("gRPC check {target}/{service}: status {name}"),
                )
            }
        }
        Err(s) => (
            CRITICAL,
            format!(
                "gRPC check {target}/{service}: {} {}",
                s.code(),
                s.message()
            ),
        ),
    }
}

/// Starts (or restarts) the runner of check `id`.
pub fn start(agent: &Arc<Agent>, id: &str) {
    let mut st = agent.state();
    let runner_id = st.next_runner_id();
    let Some(c) = st.checks.get_mut(id) else {
        return;
    };
    if let Some(old) = c.runner.take() {
        old.abort();
    }
    c.runner_id = runner_id;
    let spec = c.spec.clone();
    let weak = Arc::downgrade(agent);
    let id = id.to_string();
    let handle = match spec.kind {
        CheckKind::Manual => return,
        CheckKind::Ttl(_) => tokio::spawn(ttl_runner(weak, id, runner_id)),
        kind => tokio::spawn(interval_runner(
            weak,
            id,
            runner_id,
            kind,
            spec.interval,
            spec.timeout,
        )),
    };
    c.runner = Some(handle.abort_handle());
}

async fn interval_runner(
    agent: Weak<Agent>,
    id: String,
    runner_id: u64,
    kind: CheckKind,
    interval: Duration,
    timeout: Duration,
) {
    loop {
        let Some(a) = agent.upgrade() else { return };
        let (status, output) = probe(&a, &kind, timeout).await;
        let changed = a.state().report(&id, runner_id, status, output);
        if changed {
            a.changed();
        }
        drop(a);
        tokio::time::sleep(interval).await;
    }
}

async fn ttl_runner(agent: Weak<Agent>, id: String, runner_id: u64) {
    loop {
        let Some(a) = agent.upgrade() else { return };
        let (deadline, reset) = {
            let st = a.state();
            match st.checks.get(&id) {
                Some(c) if c.runner_id == runner_id => (c.ttl_deadline, c.ttl_reset.clone()),
                _ => return,
            }
        };
        drop(a);
        match deadline {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(d.into()) => {
                        let Some(a) = agent.upgrade() else { return };
                        if a.state().expire_ttl(&id, Instant::now()) {
                            a.changed();
                        }
                    }
                    _ = reset.notified() => {}
                }
            }
            None => reset.notified().await,
        }
    }
}

/// Deregisters services whose check stayed critical past `DeregisterCriticalServiceAfter`.
pub async fn reaper_loop(agent: Weak<Agent>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(a) = agent.upgrade() else { return };
        let reap = a.state().services_to_reap(Instant::now());
        if reap.is_empty() {
            continue;
        }
        let mut any = false;
        for id in reap {
            tracing::info!(service = %id, "deregistering a service whose check stayed critical");
            any |= a.state().remove_service(&id);
        }
        if any {
            a.changed();
        }
    }
}
