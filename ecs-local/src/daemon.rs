//! The daemon: owns the bridge and every task, and answers the control socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use berth_ecs::metadata::task_id_of;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::control::{self, DaemonInfo, Request, Response};
use crate::credentials::Sts;
use crate::ecs_api::Ecs;
use crate::net::{self, Bridge, TaskNet};
use crate::plan::{self, TaskParts};
use crate::task::{self, Ctx, NewTask, Task};
use crate::taskdef;

pub const DEFAULT_ACCOUNT: &str = "123456789012";

#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub sts_endpoint: Option<String>,
    pub ecs_endpoint: Option<String>,
    pub region: String,
    pub cluster: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub max_stop_timeout: Duration,
}

struct Daemon {
    ctx: Arc<Ctx>,
    cluster: String,
    tasks: Mutex<Vec<Arc<Task>>>,
    shutting_down: AtomicBool,
    down: mpsc::Sender<oneshot::Sender<oneshot::Sender<()>>>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let dir = &opts.state_dir;
    std::fs::create_dir_all(dir.join("tasks"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let sock = dir.join(control::SOCKET);
    if UnixStream::connect(&sock).await.is_ok() {
        anyhow::bail!("a daemon is already running in {}", dir.display());
    }
    let _ = std::fs::remove_file(&sock);

    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(opts.region.clone()))
        .load()
        .await;
    let sts = Sts::new(&sdk, opts.sts_endpoint.as_deref());
    let account = sts
        .account()
        .await
        .unwrap_or_else(|| DEFAULT_ACCOUNT.to_string());
    let ecs = opts
        .ecs_endpoint
        .as_deref()
        .map(|e| Ecs::new(&sdk, e, opts.subnets.clone(), opts.security_groups.clone()));
    let bridge = Bridge::create().await.context("creating the bridge")?;
    let ctx = Arc::new(Ctx {
        region: opts.region.clone(),
        account,
        bridge: bridge.clone(),
        state_dir: dir.clone(),
        sts,
        ecs,
        max_stop_timeout: opts.max_stop_timeout,
        base_env: plan::container_base_env(),
        daemon_path: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        hosts: Mutex::new(Default::default()),
    });
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            bridge.delete().await;
            return Err(e).with_context(|| format!("listening on {}", sock.display()));
        }
    };
    let info = DaemonInfo {
        pid: std::process::id(),
        bridge: bridge.name.clone(),
        gateway: bridge.gateway.to_string(),
        subnet: bridge.cidr(),
        cluster_arn: cluster_arn(&ctx, &opts.cluster),
        region: opts.region.clone(),
        account: ctx.account.clone(),
        socket: sock.clone(),
    };
    let info_path = dir.join(control::INFO);
    let tmp = dir.join("daemon.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&info)?)?;
    std::fs::rename(&tmp, &info_path)?;
    tracing::info!(bridge = %bridge.name, subnet = %bridge.cidr(), "daemon ready");

    let (down_tx, mut down_rx) = mpsc::channel(4);
    let d = Arc::new(Daemon {
        ctx,
        cluster: opts.cluster.clone(),
        tasks: Mutex::new(Vec::new()),
        shutting_down: AtomicBool::new(false),
        down: down_tx,
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let reply = loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => { tokio::spawn(d.clone().serve(s)); }
                Err(e) => tracing::warn!(error = %e, "accept"),
            },
            _ = term.recv() => break None,
            _ = int.recv() => break None,
            r = down_rx.recv() => break r,
        }
    };
    tracing::info!("shutting down");
    d.shutdown().await;
    drop(listener);
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&info_path);
    if let Some(r) = reply {
        let (written_tx, written_rx) = oneshot::channel();
        if r.send(written_tx).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), written_rx).await;
        }
    }
    Ok(())
}

fn cluster_arn(ctx: &Ctx, cluster: &str) -> String {
    format!(
        "arn:aws:ecs:{}:{}:cluster/{cluster}",
        ctx.region, ctx.account
    )
}

impl Daemon {
    async fn serve(self: Arc<Self>, s: UnixStream) {
        let (r, mut w) = s.into_split();
        let mut line = String::new();
        if BufReader::new(r).read_line(&mut line).await.is_err() {
            return;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::err(format!("bad request: {e}")),
            Ok(Request::Down) => {
                let (tx, rx) = oneshot::channel();
                if self.down.send(tx).await.is_err() {
                    return;
                }
                // The answer goes out once everything is down; the daemon then exits.
                let Ok(written) = rx.await else { return };
                let mut out = serde_json::to_vec(&Response::ok(Value::Null)).unwrap_or_default();
                out.push(b'\n');
                let _ = w.write_all(&out).await;
                let _ = w.flush().await;
                let _ = written.send(());
                return;
            }
            Ok(req) => self.handle(req).await,
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        let _ = w.write_all(&out).await;
    }

    async fn handle(&self, req: Request) -> Response {
        let r = match req {
            Request::Run {
                definition,
                cluster,
            } => self.run_task(&definition, cluster).await,
            Request::Ps => Ok(self.ps()),
            Request::Describe { task } => self.find(&task).map(|t| describe(&t)),
            Request::Logs { task, container } => self
                .find(&task)
                .and_then(|t| logs(&t, container.as_deref())),
            Request::Stop { task } => match self.find(&task) {
                Ok(t) => {
                    t.request_stop(task::STOPPED_BY_USER);
                    t.wait_stopped().await;
                    Ok(json!({ "status": t.known_status().as_str() }))
                }
                Err(e) => Err(e),
            },
            Request::Down => Err("down is handled by the connection".to_string()),
        };
        match r {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e.replace('\n', " ")),
        }
    }

    fn ps(&self) -> Value {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        Value::Array(
            tasks
                .iter()
                .map(|t| {
                    json!({
                        "id": t.id, "arn": t.arn, "family": t.family,
                        "status": t.known_status().as_str(), "ip": t.net.ip.to_string(),
                    })
                })
                .collect(),
        )
    }

    /// An ARN, an ID, or a unique prefix of an ID.
    fn find(&self, q: &str) -> Result<Arc<Task>, String> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tasks.iter().find(|t| t.arn == q || t.id == q) {
            return Ok(t.clone());
        }
        let m: Vec<_> = tasks.iter().filter(|t| t.id.starts_with(q)).collect();
        match m.as_slice() {
            [t] if !q.is_empty() => Ok((*t).clone()),
            [] | [_] => Err(format!("no task {q:?}")),
            many => Err(format!(
                "task {q:?} is ambiguous: {}",
                many.iter()
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    async fn run_task(&self, text: &str, cluster: Option<String>) -> Result<Value, String> {
        let def = taskdef::parse(text).map_err(|e| e.to_string())?;
        taskdef::check_programs(&def, &self.ctx.daemon_path).map_err(|e| e.to_string())?;
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("the daemon is shutting down".into());
        }
        let ctx = &self.ctx;
        let cluster = cluster.unwrap_or_else(|| self.cluster.clone());
        let (arn, cluster_arn, revision, registered) = match &ctx.ecs {
            Some(ecs) => {
                let r = ecs
                    .register_and_run(&cluster, &def)
                    .await
                    .map_err(|e| e.to_string())?;
                (r.task_arn, r.cluster_arn, r.revision, true)
            }
            None => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let arn = format!(
                    "arn:aws:ecs:{}:{}:task/{cluster}/{id}",
                    ctx.region, ctx.account
                );
                (arn, cluster_arn(ctx, &cluster), "1".to_string(), false)
            }
        };
        let id = task_id_of(&arn).to_string();
        let undo_ecs = async |reason: &str| {
            if registered && let Some(ecs) = &ctx.ecs {
                ecs.stop_task(&cluster_arn, &arn, reason).await;
            }
        };
        let Some(host) = ctx.take_host() else {
            undo_ecs("no free address").await;
            return Err(format!("no free address left in {}", ctx.bridge.cidr()));
        };
        let net = match TaskNet::create(&ctx.bridge, host).await {
            Ok(n) => n,
            Err(e) => {
                ctx.release_host(host);
                undo_ecs("network setup failed").await;
                return Err(format!("setting up the task's network: {e}"));
            }
        };
        let started = self
            .start(TaskParts {
                id: id.clone(),
                arn: arn.clone(),
                cluster_arn: cluster_arn.clone(),
                revision,
                registered,
                net: net.clone(),
                def,
            })
            .await;
        match started {
            Ok(()) => Ok(json!({ "taskArn": arn, "id": id, "ip": net.ip.to_string() })),
            Err(e) => {
                net.delete().await;
                ctx.release_host(host);
                undo_ecs("task setup failed").await;
                Err(format!("{e:#}"))
            }
        }
    }

    async fn start(&self, p: TaskParts) -> anyhow::Result<()> {
        let ctx = &self.ctx;
        let dir = ctx.state_dir.join("tasks").join(&p.id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let creds_id = p
            .def
            .task_role_arn
            .as_ref()
            .map(|_| uuid::Uuid::new_v4().to_string());
        let plans = plan::plans(ctx, &p, &dir, creds_id.as_deref())?;
        let (t, rx) = Task::new(
            self.ctx.clone(),
            NewTask {
                id: p.id,
                arn: p.arn,
                cluster_arn: p.cluster_arn,
                revision: p.revision,
                registered: p.registered,
                net: p.net.clone(),
                def: p.def,
                plans,
                creds_id,
            },
        )?;
        let std_listener = net::listen_in(&p.net.ns, SocketAddr::from((net::ENDPOINT_IP, 80)))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let router = crate::metadata_server::router(t.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "metadata endpoint");
            }
        });
        t.set_server(server.abort_handle());
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t.clone());
        // The first containers are launched before `run` answers.
        t.step();
        tokio::spawn(t.supervise(rx));
        Ok(())
    }

    async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        // Again until none is left running: a `run` that was already past its check when
        // the shutdown began may add a task meanwhile.
        loop {
            let tasks: Vec<_> = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let running: Vec<_> = tasks.iter().filter(|t| !t.is_finished()).collect();
            if running.is_empty() {
                break;
            }
            for t in &running {
                t.request_stop("Daemon shutting down");
            }
            for t in &running {
                t.wait_stopped().await;
            }
        }
        self.ctx.bridge.delete().await;
    }
}

fn describe(t: &Task) -> Value {
    let mut v = serde_json::to_value(t.metadata()).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("StoppedReason".into(), json!(t.stopped_reason()));
        m.insert("TaskId".into(), json!(t.id));
    }
    v
}

fn logs(t: &Task, container: Option<&str>) -> Result<Value, String> {
    let plans: Vec<_> = match container {
        Some(name) => {
            let p = t
                .plans
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| format!("task {} has no container {name:?}", t.id))?;
            vec![p]
        }
        None => t.plans.iter().collect(),
    };
    Ok(Value::Array(
        plans
            .iter()
            .map(|p| json!({ "container": p.name, "path": p.log }))
            .collect(),
    ))
}
