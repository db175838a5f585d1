//! One running task: its containers' lifecycle (dependsOn, health, essential exits,
//! docker-stop-like stopping) and the metadata documents describing it.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_ecs::metadata::{ContainerMetadata, Limits, Network, TaskMetadata};
use tokio::sync::{mpsc, watch};

use crate::container::{self, NsId};
use crate::credentials::{self, Sts};
use crate::deps::{self, DepView, Verdict};
use crate::ecs_api::Ecs;
use crate::health::{self, HealthConfig, HealthMachine, ProbeResult};
use crate::net::{Bridge, TaskNet};
use crate::taskdef::{Condition, TaskDefinition};

pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";
pub const STOPPED_BY_USER: &str = "Task stopped by user";

/// RFC 3339 in UTC with nanoseconds always written out, so that timestamps compare as
/// strings.
pub fn now() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

/// What every task of a daemon shares.
pub struct Ctx {
    pub region: String,
    pub account: String,
    pub bridge: Bridge,
    pub state_dir: PathBuf,
    pub sts: Sts,
    pub ecs: Option<Ecs>,
    pub max_stop_timeout: Duration,
    /// The daemon's environment without its AWS credentials.
    pub base_env: Vec<(String, String)>,
    pub daemon_path: String,
    /// Host numbers (.2 to .254) of the bridge's /24 in use.
    pub hosts: Mutex<BTreeSet<u8>>,
}

impl Ctx {
    pub fn take_host(&self) -> Option<u8> {
        let mut used = lock(&self.hosts);
        let h = (2..=254u8).find(|h| !used.contains(h))?;
        used.insert(h);
        Some(h)
    }

    pub fn release_host(&self, h: u8) {
        lock(&self.hosts).remove(&h);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Running => "RUNNING",
            Status::Stopped => "STOPPED",
        }
    }
}

/// A container as the task definition and the daemon fixed it at `run`.
pub struct ContainerPlan {
    pub name: String,
    pub docker_id: String,
    pub container_arn: String,
    pub image: String,
    pub essential: bool,
    pub spec: container::Spec,
    pub log: PathBuf,
    pub stop_timeout: Duration,
    pub health: Option<(HealthConfig, Vec<String>)>,
    pub depends_on: Vec<(usize, Condition)>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub limits: Limits,
}

#[derive(Default)]
struct Run {
    status: Option<Status>,
    pid: i32,
    mnt_ns: Option<File>,
    mnt_id: Option<NsId>,
    exit_code: Option<i32>,
    started_at: Option<String>,
    finished_at: Option<String>,
    health: Option<HealthMachine>,
    health_task: Option<tokio::task::AbortHandle>,
}

impl Run {
    fn status(&self) -> Status {
        self.status.unwrap_or(Status::Pending)
    }
}

struct State {
    known: Status,
    stopping: bool,
    reason: Option<String>,
    stopped_at: Option<String>,
    containers: Vec<Run>,
}

pub enum Event {
    Exited(usize, i32),
    Health,
    Stop(String),
}

pub struct Task {
    pub id: String,
    pub arn: String,
    pub cluster_arn: String,
    pub family: String,
    pub revision: String,
    pub net: TaskNet,
    pub role_arn: Option<String>,
    /// The secret part of the credentials URI (`/v2/credentials/<id>`).
    pub creds_id: Option<String>,
    pub creds: credentials::Cache,
    pub plans: Vec<ContainerPlan>,
    pub limits: Limits,
    /// Registered with the ECS API: StopTask when done.
    pub registered: bool,
    netns: File,
    ctx: Arc<Ctx>,
    state: Mutex<State>,
    events: mpsc::UnboundedSender<Event>,
    stopped: watch::Sender<bool>,
    server: Mutex<Option<tokio::task::AbortHandle>>,
}

pub struct NewTask {
    pub id: String,
    pub arn: String,
    pub cluster_arn: String,
    pub revision: String,
    pub registered: bool,
    pub net: TaskNet,
    pub def: TaskDefinition,
    pub plans: Vec<ContainerPlan>,
    pub creds_id: Option<String>,
}

impl Task {
    pub fn new(
        ctx: Arc<Ctx>,
        n: NewTask,
    ) -> Result<(Arc<Task>, mpsc::UnboundedReceiver<Event>), crate::net::NetError> {
        let netns = n.net.open()?;
        let (events, rx) = mpsc::unbounded_channel();
        let (cpu, memory) = n.def.limits();
        let count = n.plans.len();
        let t = Task {
            id: n.id,
            arn: n.arn,
            cluster_arn: n.cluster_arn,
            family: n.def.family.clone(),
            revision: n.revision,
            net: n.net,
            role_arn: n.def.task_role_arn.clone(),
            creds_id: n.creds_id,
            creds: credentials::Cache::default(),
            plans: n.plans,
            limits: Limits { cpu, memory },
            registered: n.registered,
            netns,
            ctx,
            state: Mutex::new(State {
                known: Status::Pending,
                stopping: false,
                reason: None,
                stopped_at: None,
                containers: (0..count).map(|_| Run::default()).collect(),
            }),
            events,
            stopped: watch::channel(false).0,
            server: Mutex::new(None),
        };
        Ok((Arc::new(t), rx))
    }

    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    pub fn set_server(&self, h: tokio::task::AbortHandle) {
        *lock(&self.server) = Some(h);
    }

    pub fn known_status(&self) -> Status {
        lock(&self.state).known
    }

    pub fn stopped_reason(&self) -> Option<String> {
        lock(&self.state).reason.clone()
    }

    pub fn request_stop(&self, reason: &str) {
        let _ = self.events.send(Event::Stop(reason.to_string()));
    }

    /// Stopped and its network released.
    pub fn is_finished(&self) -> bool {
        *self.stopped.borrow()
    }

    pub async fn wait_stopped(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Drives the task until every container has stopped, then releases its network.
    pub async fn supervise(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Event>) {
        loop {
            if self.step() {
                break;
            }
            let Some(ev) = rx.recv().await else { break };
            self.handle(ev);
        }
        self.finish().await;
    }

    /// Starts what may start; true once the task has stopped.
    pub fn step(self: &Arc<Self>) -> bool {
        let mut st = lock(&self.state);
        loop {
            let mut launched = false;
            for i in 0..self.plans.len() {
                if st.stopping || st.containers[i].status() != Status::Pending {
                    continue;
                }
                let verdicts = self.plans[i].depends_on.iter().map(|&(d, cond)| {
                    let r = &st.containers[d];
                    let view = DepView {
                        started: r.started_at.is_some(),
                        exited: (r.status() == Status::Stopped).then_some(r.exit_code),
                        health: r.health.as_ref().map(|h| h.status),
                    };
                    deps::condition_met(&self.plans[d].name, cond, &view)
                });
                match deps::all_met(verdicts.collect::<Vec<_>>()) {
                    Verdict::Wait => {}
                    Verdict::Never(why) => {
                        let reason =
                            format!("Container {:?} cannot start: {why}", self.plans[i].name);
                        self.begin_stop(&mut st, &reason);
                    }
                    Verdict::Ready => {
                        launched = true;
                        if let Err(e) = self.launch(&mut st, i) {
                            tracing::warn!(task = %self.id, container = %self.plans[i].name, error = %e, "cannot start container");
                            let r = &mut st.containers[i];
                            r.status = Some(Status::Stopped);
                            r.finished_at = Some(now());
                            let reason =
                                format!("CannotStartContainerError: {}: {e}", self.plans[i].name);
                            self.begin_stop(&mut st, &reason);
                        }
                    }
                }
            }
            if !launched {
                break;
            }
        }
        let all_stopped = st.containers.iter().all(|r| r.status() == Status::Stopped);
        if st.stopping && all_stopped {
            return true;
        }
        let essentials_up = self
            .plans
            .iter()
            .zip(&st.containers)
            .filter(|(p, _)| p.essential)
            .all(|(_, r)| r.started_at.is_some());
        if essentials_up && st.known == Status::Pending && !st.stopping {
            st.known = Status::Running;
        }
        false
    }

    fn launch(self: &Arc<Self>, st: &mut State, i: usize) -> std::io::Result<()> {
        let plan = &self.plans[i];
        let started = container::spawn(&plan.spec, &self.netns, &plan.log).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "starting {:?} in {}: {e}",
                    plan.spec
                        .argv
                        .first()
                        .map(String::as_str)
                        .unwrap_or_default(),
                    plan.spec.cwd.display()
                ),
            )
        })?;
        tracing::info!(task = %self.id, container = %plan.name, pid = started.pid, "container started");
        let r = &mut st.containers[i];
        r.status = Some(Status::Running);
        r.pid = started.pid;
        r.started_at = Some(now());
        r.mnt_id = started.mnt_id;
        let probe_mnt = started.mnt_ns.as_ref().and_then(|f| f.try_clone().ok());
        r.mnt_ns = started.mnt_ns;
        let mut child = started.child;
        let events = self.events.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(s) => container::exit_code(s),
                Err(_) => -1,
            };
            let _ = events.send(Event::Exited(i, code));
        });
        if let (Some((cfg, argv)), Some(mnt)) = (&plan.health, probe_mnt) {
            r.health = Some(HealthMachine::new(*cfg));
            let task = self.clone();
            let h = tokio::spawn(task.health_loop(i, *cfg, argv.clone(), mnt));
            r.health_task = Some(h.abort_handle());
        } else if let Some((cfg, _)) = &plan.health {
            // The process exited before its namespace could be opened: nothing to probe.
            r.health = Some(HealthMachine::new(*cfg));
        }
        Ok(())
    }

    async fn health_loop(
        self: Arc<Self>,
        i: usize,
        cfg: HealthConfig,
        argv: Vec<String>,
        mnt: File,
    ) {
        let started = Instant::now();
        let plan = &self.plans[i];
        loop {
            tokio::time::sleep(cfg.interval).await;
            let result = self.probe(&cfg, &argv, &plan.spec, &mnt).await;
            let changed = {
                let mut st = lock(&self.state);
                match st.containers[i].health.as_mut() {
                    Some(m) => m.record(started.elapsed(), &result, &now()),
                    None => false,
                }
            };
            if changed {
                tracing::info!(task = %self.id, container = %plan.name, ok = result.passed(), "health changed");
                let _ = self.events.send(Event::Health);
            }
        }
    }

    async fn probe(
        &self,
        cfg: &HealthConfig,
        argv: &[String],
        spec: &container::Spec,
        mnt: &File,
    ) -> ProbeResult {
        let cmd = container::probe_command(
            argv,
            &spec.env,
            &spec.cwd,
            self.netns.as_raw_fd(),
            mnt.as_raw_fd(),
        );
        let child = match cmd.and_then(|mut c| c.spawn()) {
            Ok(c) => c,
            Err(e) => {
                return ProbeResult {
                    exit_code: None,
                    output: format!("cannot run the health check: {e}"),
                };
            }
        };
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        match tokio::time::timeout(cfg.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                let mut bytes = out.stdout;
                bytes.extend(out.stderr);
                ProbeResult {
                    exit_code: Some(container::exit_code(out.status)),
                    output: health::truncate_output(bytes),
                }
            }
            Ok(Err(e)) => ProbeResult {
                exit_code: None,
                output: format!("health check failed: {e}"),
            },
            Err(_) => {
                // The probe leads its own process group: kill everything it started.
                container::signal(-pid, libc::SIGKILL);
                ProbeResult {
                    exit_code: None,
                    output: format!("health check timed out after {:?}", cfg.timeout),
                }
            }
        }
    }

    fn handle(self: &Arc<Self>, ev: Event) {
        let mut st = lock(&self.state);
        match ev {
            Event::Exited(i, code) => {
                let r = &mut st.containers[i];
                r.status = Some(Status::Stopped);
                r.exit_code = Some(code);
                r.finished_at = Some(now());
                if let Some(h) = r.health_task.take() {
                    h.abort();
                }
                // Like Docker when PID 1 exits: nothing of the container outlives it.
                if let Some(id) = r.mnt_id {
                    container::kill_all(id);
                }
                tracing::info!(task = %self.id, container = %self.plans[i].name, code, "container exited");
                if self.plans[i].essential {
                    self.begin_stop(&mut st, ESSENTIAL_EXITED);
                }
            }
            Event::Stop(reason) => self.begin_stop(&mut st, &reason),
            Event::Health => {}
        }
    }

    /// SIGTERM to every running container's main process at once, SIGKILL to all of its
    /// processes after its stopTimeout; containers not started yet never will be.
    fn begin_stop(self: &Arc<Self>, st: &mut State, reason: &str) {
        if st.stopping {
            return;
        }
        tracing::info!(task = %self.id, reason, "stopping task");
        st.stopping = true;
        st.reason = Some(reason.to_string());
        for (i, r) in st.containers.iter_mut().enumerate() {
            match r.status() {
                Status::Pending => {
                    r.status = Some(Status::Stopped);
                }
                Status::Running => {
                    container::signal(r.pid, libc::SIGTERM);
                    let task = self.clone();
                    let timeout = self.plans[i].stop_timeout;
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        task.kill_container(i);
                    });
                }
                Status::Stopped => {}
            }
        }
    }

    fn kill_container(&self, i: usize) {
        let st = lock(&self.state);
        let r = &st.containers[i];
        if r.status() != Status::Running {
            return;
        }
        tracing::info!(task = %self.id, container = %self.plans[i].name, "stopTimeout passed: SIGKILL");
        match r.mnt_id {
            Some(id) => {
                container::kill_all(id);
            }
            None => container::signal(r.pid, libc::SIGKILL),
        }
    }

    async fn finish(&self) {
        {
            let mut st = lock(&self.state);
            st.known = Status::Stopped;
            st.stopped_at = Some(now());
            for r in &mut st.containers {
                r.mnt_ns = None;
            }
        }
        if let Some(h) = lock(&self.server).take() {
            h.abort();
        }
        self.net.delete().await;
        self.ctx.release_host(self.net.host);
        if self.registered
            && let Some(ecs) = &self.ctx.ecs
        {
            let reason = self.stopped_reason().unwrap_or_default();
            ecs.stop_task(&self.cluster_arn, &self.arn, &reason).await;
        }
        tracing::info!(task = %self.id, "task stopped");
        self.stopped.send_replace(true);
    }

    pub fn container_index(&self, docker_id: &str) -> Option<usize> {
        self.plans.iter().position(|p| p.docker_id == docker_id)
    }

    pub fn container_metadata(&self, i: usize) -> ContainerMetadata {
        let st = lock(&self.state);
        self.container_doc(&st, i)
    }

    fn container_doc(&self, st: &State, i: usize) -> ContainerMetadata {
        let p = &self.plans[i];
        let r = &st.containers[i];
        let mut labels = p.labels.clone();
        for (k, v) in [
            ("com.amazonaws.ecs.cluster", self.cluster_arn.as_str()),
            ("com.amazonaws.ecs.container-name", p.name.as_str()),
            ("com.amazonaws.ecs.task-arn", self.arn.as_str()),
            (
                "com.amazonaws.ecs.task-definition-family",
                self.family.as_str(),
            ),
            (
                "com.amazonaws.ecs.task-definition-version",
                self.revision.as_str(),
            ),
        ] {
            labels.insert(k.to_string(), v.to_string());
        }
        let bridge = &self.ctx.bridge;
        ContainerMetadata {
            docker_id: p.docker_id.clone(),
            name: p.name.clone(),
            docker_name: p.name.clone(),
            image: p.image.clone(),
            image_id: String::new(),
            labels,
            desired_status: if st.stopping { "STOPPED" } else { "RUNNING" }.to_string(),
            known_status: r.status().as_str().to_string(),
            limits: Some(p.limits.clone()),
            created_at: r.started_at.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            exit_code: r.exit_code,
            kind: "NORMAL".to_string(),
            container_arn: p.container_arn.clone(),
            health: p.health.as_ref().map(|(cfg, _)| {
                r.health
                    .as_ref()
                    .map(HealthMachine::metadata)
                    .unwrap_or_else(|| HealthMachine::new(*cfg).metadata())
            }),
            networks: vec![Network {
                network_mode: "awsvpc".to_string(),
                ipv4_addresses: vec![self.net.ip.to_string()],
                attachment_index: Some(0),
                mac_address: String::new(),
                ipv4_subnet_cidr_block: bridge.cidr(),
                private_dns_name: format!(
                    "ip-{}.{}.compute.internal",
                    self.net.ip.to_string().replace('.', "-"),
                    self.ctx.region
                ),
                subnet_gateway_ipv4_address: format!("{}/24", bridge.gateway),
            }],
        }
    }

    pub fn metadata(&self) -> TaskMetadata {
        let st = lock(&self.state);
        TaskMetadata {
            cluster: self.cluster_arn.clone(),
            task_arn: self.arn.clone(),
            family: self.family.clone(),
            revision: self.revision.clone(),
            desired_status: if st.stopping { "STOPPED" } else { "RUNNING" }.to_string(),
            known_status: st.known.as_str().to_string(),
            containers: (0..self.plans.len())
                .map(|i| self.container_doc(&st, i))
                .collect(),
            limits: Some(self.limits.clone()),
            pull_started_at: None,
            pull_stopped_at: None,
            execution_stopped_at: st.stopped_at.clone(),
            availability_zone: format!("{}a", self.ctx.region),
            launch_type: "FARGATE".to_string(),
        }
    }
}
