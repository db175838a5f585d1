//! `berth-demo-app`: the example application of the demo and the lifecycle tests. `serve`
//! answers `GET /` itself or by calling one upstream (through the mesh, that is the local
//! Envoy's upstream listener), and has a health endpoint that can be made to fail; `probe`
//! is the matching ECS health check command.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::{Parser, Subcommand};

/// The upstream call and the probe give up after this: a health check or a demo request
/// that hangs says less than one that fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// After SIGTERM, in-flight requests may finish for this long; then the process exits
/// anyway, so that a stuck client cannot hold a task's shutdown.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "berth-demo-app",
    version,
    about = "The example application of Berth's demo and lifecycle tests."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serves `GET /` (`hello from NAME`, or `NAME -> <upstream's answer>`), `GET /healthz`,
    /// `POST /fail` and `POST /recover`.
    Serve {
        /// Address to listen on: HOST:PORT, or `:PORT` for every interface.
        #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The name in every answer.
        #[arg(long, env = "DEMO_NAME")]
        name: String,
        /// A URL that `GET /` calls and whose answer it passes on.
        #[arg(long, env = "DEMO_UPSTREAM")]
        upstream: Option<String>,
    },
    /// Exits 0 when GET URL answers 2xx within 2 seconds, else 1.
    Probe { url: String },
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Request(String),
    #[error("answered {0}")]
    Status(StatusCode),
}

/// reqwest's own message is often only "error sending request"; the cause is further down.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")
}

struct App {
    name: String,
    /// `NAME (task ID)` when ECS task metadata names the task, so callers can tell the
    /// instances of a service apart.
    who: String,
    upstream: Option<String>,
    http: reqwest::Client,
    failing: AtomicBool,
}

async fn call(http: &reqwest::Client, url: &str) -> Result<(StatusCode, String), CallError> {
    let r = http
        .get(url)
        .send()
        .await
        .map_err(|e| CallError::Request(chain(&e)))?;
    let status = r.status();
    let body = r.text().await.map_err(|e| CallError::Request(chain(&e)))?;
    Ok((status, body))
}

async fn root(State(app): State<Arc<App>>) -> (StatusCode, String) {
    let Some(url) = &app.upstream else {
        return (StatusCode::OK, format!("hello from {}", app.who));
    };
    match call(&app.http, url).await {
        Ok((status, body)) => (status, format!("{} -> {}", app.name, body.trim_end())),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("{}: upstream {url} failed: {e}", app.name),
        ),
    }
}

async fn healthz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.failing.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "failing")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn fail(State(app): State<Arc<App>>) -> &'static str {
    app.failing.store(true, Ordering::Relaxed);
    "failing"
}

/// Exits at once with code 3: an application crash, for the lifecycle tests.
async fn crash() -> &'static str {
    eprintln!("berth-demo-app: crashing on request");
    std::process::exit(3)
}

async fn recover(State(app): State<Arc<App>>) -> &'static str {
    app.failing.store(false, Ordering::Relaxed);
    "ok"
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/fail", post(fail))
        .route("/recover", post(recover))
        .route("/crash", post(crash))
        .with_state(app)
}

/// `:8080` as Go programs write it.
fn bind_addr(listen: &str) -> String {
    match listen.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => listen.to_string(),
    }
}

async fn stop_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

async fn serve(listen: String, name: String, upstream: Option<String>) -> anyhow::Result<()> {
    let addr = bind_addr(&listen);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("local address")?;
    let who = match berth_ecs::metadata::MetadataClient::from_env() {
        Ok(m) => match m.task_with_retry(Duration::from_secs(5)).await {
            Ok(t) => format!("{name} (task {})", t.task_id()),
            Err(e) => {
                eprintln!("berth-demo-app {name}: no task metadata: {e}");
                name.clone()
            }
        },
        Err(_) => name.clone(),
    };
    let app = Arc::new(App {
        who,
        name: name.clone(),
        upstream: upstream.clone(),
        http: http_client()?,
        failing: AtomicBool::new(false),
    });
    // Handlers installed before the first request can arrive, so SIGTERM never kills us
    // mid-request by its default action.
    let stop = stop_signal();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    eprintln!(
        "berth-demo-app {name}: listening on {local}{}",
        upstream
            .as_deref()
            .map(|u| format!(", upstream {u}"))
            .unwrap_or_default()
    );
    let server = axum::serve(listener, router(app)).with_graceful_shutdown(async move {
        match stop.await {
            Ok(sig) => eprintln!("berth-demo-app {name}: {sig}: finishing in-flight requests"),
            Err(e) => eprintln!("berth-demo-app {name}: cannot wait for signals: {e}"),
        }
        let _ = stopped_tx.send(());
    });
    tokio::select! {
        r = server => r.context("server failed"),
        _ = async {
            let _ = stopped_rx.await;
            tokio::time::sleep(GRACE).await;
        } => {
            eprintln!("berth-demo-app: requests still open after {GRACE:?}; exiting anyway");
            Ok(())
        }
    }
}

async fn probe(url: &str) -> anyhow::Result<i32> {
    let http = http_client()?;
    Ok(match call(&http, url).await {
        Ok((status, _)) if status.is_success() => {
            println!("{url}: {status}");
            0
        }
        Ok((status, _)) => {
            eprintln!("{url}: {}", CallError::Status(status));
            1
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            1
        }
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(berth_api::cli::normalize_args(std::env::args_os()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.cmd {
        Cmd::Serve {
            listen,
            name,
            upstream,
        } => rt.block_on(serve(listen, name, upstream)),
        Cmd::Probe { url } => {
            let code = rt.block_on(probe(&url))?;
            std::process::exit(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_listen_addresses() {
        assert_eq!(bind_addr(":8080"), "0.0.0.0:8080");
        assert_eq!(bind_addr("127.0.0.1:1"), "127.0.0.1:1");
    }

    #[test]
    fn flags_take_single_dashes() {
        let cli = Cli::try_parse_from(berth_api::cli::normalize_args(
            [
                "x",
                "serve",
                "-listen",
                ":1",
                "-name",
                "web",
                "-upstream",
                "http://u/",
            ]
            .map(std::ffi::OsString::from),
        ))
        .unwrap();
        let Cmd::Serve {
            listen,
            name,
            upstream,
        } = cli.cmd
        else {
            panic!("not serve")
        };
        assert_eq!((listen.as_str(), name.as_str()), (":1", "web"));
        assert_eq!(upstream.as_deref(), Some("http://u/"));
    }
}
