//! One server: its Raft, its tables, its peers, and the RPC operations they answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use tonic::Status;

use crate::config::Config;
use crate::raft::network::SnapshotHeader;
use crate::raft::state_machine::Store;
use crate::raft::types::{NodeInfo, Raft};
use crate::rpc::{
    self, Clients, Envelope, ForwardReply, ForwardRequest, Hello, HelloReply, HoldRequest,
};
use crate::state::{Command, CommandResult};

/// A server we know of: from `-retry-join`, from another server, or from the Raft membership.
#[derive(Debug, Clone)]
pub struct Peer {
    pub info: NodeInfo,
    pub last_seen: Option<Instant>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("No cluster leader")]
    NoLeader,
    #[error("leadership lost while writing; retry")]
    NotLeader,
    #[error("{0}")]
    Rejected(String),
    #[error("raft: {0}")]
    Raft(String),
}

pub struct Node {
    pub cfg: Arc<Config>,
    pub id: u64,
    pub info: NodeInfo,
    pub raft: Raft,
    pub store: Arc<Store>,
    pub clients: Arc<Clients>,
    pub peers: Mutex<BTreeMap<u64, Peer>>,
    /// When a follower last heard from its leader (`X-Consul-LastContact`).
    pub last_leader_contact: Mutex<Option<Instant>>,
    /// The HTTP API, answering requests forwarded from followers.
    pub router: OnceLock<axum::Router>,
    /// This server's own agent (services and checks registered on its node).
    pub agent: OnceLock<Arc<berth_agent::Agent>>,
    /// Resolved tokens, invalidated by the ACL table's index.
    pub acl_cache: crate::acl::Cache,
    /// Tokens set through `/v1/agent/token/<kind>` (and read back from `acl-tokens.json`).
    pub agent_tokens: Mutex<HashMap<String, String>>,
    /// Notified by `PUT /v1/agent/leave`: the process shuts down.
    pub leave: Arc<tokio::sync::Notify>,
    /// Set by the binary: re-reads the configuration (`PUT /v1/agent/reload`, SIGHUP).
    pub reload: OnceLock<ReloadFn>,
    /// One membership change at a time.
    membership_change: tokio::sync::Mutex<()>,
    /// Session TTL deadlines; only the leader keeps them.
    pub session_timers: Mutex<HashMap<String, Instant>>,
    /// When each client agent's node last sent its heartbeat; only the leader keeps them.
    pub agent_heartbeats: Mutex<HashMap<String, Instant>>,
    pub started: Instant,
    shutting_down: AtomicBool,
    batch_tx: tokio::sync::mpsc::UnboundedSender<PendingWrite>,
}

pub type ReloadFn = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

type WriteResult = Result<(u64, CommandResult), WriteError>;
type PendingWrite = (Command, tokio::sync::oneshot::Sender<WriteResult>);

/// Raft entries in flight from the batcher at once. Small, so that writes arriving while these
/// commit queue up and leave together in the next entry.
const MAX_INFLIGHT_BATCHES: usize = 2;
/// Commands folded into one entry at most.
const MAX_BATCH: usize = 256;

fn write_error(e: ClientWriteError<u64, NodeInfo>) -> WriteError {
    match e {
        ClientWriteError::ForwardToLeader(f) if f.leader_id.is_some() => WriteError::NotLeader,
        ClientWriteError::ForwardToLeader(_) => WriteError::NoLeader,
        e => WriteError::Raft(e.to_string()),
    }
}

/// Group commit above Raft: openraft's core handles entries one at a time, so under
/// concurrency the per-entry cost, not the disk, limits throughput. Writes that arrive while
/// earlier entries are committing are folded into one `Command::Batch` entry, applied in order;
/// they share its log index, as the writes of one Consul transaction do.
async fn batcher(raft: Raft, mut rx: tokio::sync::mpsc::UnboundedReceiver<PendingWrite>) {
    let inflight = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT_BATCHES));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (mut cmds, waiters): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
        let single = waiters.len() == 1;
        let cmd = match cmds.pop() {
            Some(only) if cmds.is_empty() => only,
            Some(last) => {
                cmds.push(last);
                Command::Batch(cmds)
            }
            None => continue,
        };
        // Submitted here, in arrival order, before waiting: entry order is queue order.
        let submitted = raft.client_write_ff(cmd).await;
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = match submitted {
                Err(fatal) => Err(WriteError::Raft(fatal.to_string())),
                Ok(rx) => match rx.await {
                    Err(_) => Err(WriteError::Raft("write dropped".to_string())),
                    Ok(Err(e)) => Err(write_error(e)),
                    Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data)),
                },
            };
            match outcome {
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
                Ok((index, CommandResult::Batch(results))) if !single => {
                    for (w, r) in waiters.into_iter().zip(results) {
                        let _ = w.send(Ok((index, r)));
                    }
                }
                Ok((index, result)) => {
                    for w in waiters {
                        let _ = w.send(Ok((index, result.clone())));
                    }
                }
            }
        });
    }
}

/// Timing of Raft. Election timeouts well above the heartbeat keep a busy 2-core machine from
/// flapping; the lease (= max election timeout) bounds how long a dead leader is waited for.
pub fn raft_config(cfg: &Config) -> openraft::Config {
    openraft::Config {
        cluster_name: format!("berth-{}", cfg.datacenter),
        heartbeat_interval: 100,
        election_timeout_min: 700,
        election_timeout_max: 1400,
        install_snapshot_timeout: 120_000,
        max_payload_entries: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_threshold),
        max_in_snapshot_log_to_keep: cfg.trailing_logs,
        purge_batch_size: 256,
        ..Default::default()
    }
}

impl Node {
    pub fn new(
        cfg: Arc<Config>,
        id: u64,
        info: NodeInfo,
        raft: Raft,
        store: Arc<Store>,
        clients: Arc<Clients>,
    ) -> Self {
        let tokens = crate::acl::persisted_tokens(&cfg);
        let (batch_tx, batch_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batcher(raft.clone(), batch_rx));
        let mut peers = BTreeMap::new();
        peers.insert(
            id,
            Peer {
                info: info.clone(),
                last_seen: Some(Instant::now()),
            },
        );
        Node {
            cfg,
            id,
            info,
            raft,
            store,
            clients,
            peers: Mutex::new(peers),
            last_leader_contact: Mutex::new(None),
            router: OnceLock::new(),
            agent: OnceLock::new(),
            acl_cache: crate::acl::Cache::default(),
            agent_tokens: Mutex::new(tokens),
            leave: Arc::new(tokio::sync::Notify::new()),
            reload: OnceLock::new(),
            membership_change: tokio::sync::Mutex::new(()),
            session_timers: Mutex::new(HashMap::new()),
            agent_heartbeats: Mutex::new(HashMap::new()),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            batch_tx,
        }
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<u64, NodeInfo> {
        self.raft.metrics().borrow().clone()
    }

    /// The current leader, as this server knows it.
    pub fn leader(&self) -> Option<(u64, NodeInfo)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let info = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, info))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Milliseconds since the leader was last heard from (0 on the leader itself).
    pub fn last_contact_ms(&self) -> u64 {
        if self.is_leader() {
            return 0;
        }
        match *self
            .last_leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            Some(t) => t.elapsed().as_millis() as u64,
            None => self.started.elapsed().as_millis() as u64,
        }
    }

    /// Whether this server belongs to a bootstrapped cluster.
    pub fn formed(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some()
    }

    /// Commits `cmd` through Raft; must be called on the leader. Concurrent writes are folded
    /// into one log entry by the batcher (see [`batcher`]).
    pub async fn write(&self, cmd: Command) -> Result<(u64, CommandResult), WriteError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.batch_tx
            .send((cmd, tx))
            .map_err(|_| WriteError::Raft("server is shutting down".to_string()))?;
        let (index, result) = rx
            .await
            .map_err(|_| WriteError::Raft("server is shutting down".to_string()))??;
        match result {
            CommandResult::Rejected(m) => Err(WriteError::Rejected(m)),
            r => Ok((index, r)),
        }
    }

    /// Waits until this server (the leader) has confirmed its leadership with a quorum and
    /// applied everything committed before now: `?consistent`.
    pub async fn linearize(&self) -> Result<(), WriteError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| match e {
                RaftError::APIError(_) => WriteError::NotLeader,
                e => WriteError::Raft(e.to_string()),
            })
    }

    pub fn known_peers(&self) -> Vec<NodeInfo> {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|p| p.info.clone())
            .collect()
    }

    fn learn(&self, infos: &[NodeInfo], seen: Option<&NodeInfo>) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        for info in infos {
            let Ok(uuid) = uuid::Uuid::parse_str(&info.uuid) else {
                continue;
            };
            let id = crate::raft::types::raft_id(&uuid);
            peers
                .entry(id)
                .and_modify(|p| p.info = info.clone())
                .or_insert(Peer {
                    info: info.clone(),
                    last_seen: None,
                });
        }
        if let Some(s) = seen
            && let Ok(uuid) = uuid::Uuid::parse_str(&s.uuid)
            && let Some(p) = peers.get_mut(&crate::raft::types::raft_id(&uuid))
        {
            p.last_seen = Some(Instant::now());
        }
    }

    /// Records servers another server told us about; `from` answered just now.
    pub fn learn_from(&self, infos: &[NodeInfo], from: &NodeInfo) {
        self.learn(infos, Some(from));
    }

    /// Drops peers that are not in a formed cluster's configuration and were not heard from
    /// within `after`, so `/v1/agent/members` does not list removed servers forever.
    pub fn prune_departed(&self, after: Duration) {
        if !self.formed() {
            return;
        }
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|id, p| {
            *id == self.id
                || membership.get_node(id).is_some()
                || p.last_seen.unwrap_or(self.started).elapsed() < after
        });
    }

    pub fn forget(&self, id: u64) {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub async fn handle_rpc(self: &Arc<Self>, env: Envelope) -> Result<Envelope, Status> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("server is shutting down"));
        }
        match env.kind.as_str() {
            rpc::RAFT_APPEND => {
                let req: openraft::raft::AppendEntriesRequest<crate::raft::types::TypeConfig> =
                    rpc::parse(&env)?;
                let from_leader = req.vote.is_committed();
                let res = self.raft.append_entries(req).await;
                if from_leader && res.is_ok() {
                    *self
                        .last_leader_contact
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                }
                rpc::json_reply(&res)
            }
            rpc::RAFT_VOTE => {
                let req: openraft::raft::VoteRequest<u64> = rpc::parse(&env)?;
                rpc::json_reply(&self.raft.vote(req).await)
            }
            rpc::RAFT_SNAPSHOT => {
                let h: SnapshotHeader = rpc::parse(&env)?;
                let snap = openraft::storage::Snapshot {
                    meta: h.meta,
                    snapshot: Box::new(env.data),
                };
                rpc::json_reply(&self.raft.install_full_snapshot(h.vote, snap).await)
            }
            rpc::RAFT_HOLD => {
                let h: HoldRequest = rpc::parse(&env)?;
                self.hold_elections(Duration::from_millis(h.millis.min(10_000)));
                rpc::json_reply(&true)
            }
            rpc::RAFT_ELECT => {
                self.raft
                    .trigger()
                    .elect()
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?;
                rpc::json_reply(&true)
            }
            rpc::CLUSTER_HELLO => {
                let h: Hello = rpc::parse(&env)?;
                if h.datacenter != self.cfg.datacenter {
                    return Err(Status::failed_precondition(format!(
                        "datacenter mismatch: this server is in {}, caller in {}",
                        self.cfg.datacenter, h.datacenter
                    )));
                }
                let mut all = h.known.clone();
                all.push(h.from.clone());
                self.learn(&all, Some(&h.from));
                rpc::json_reply(&HelloReply {
                    me: self.info.clone(),
                    datacenter: self.cfg.datacenter.clone(),
                    known: self.known_peers(),
                    formed: self.formed(),
                })
            }
            rpc::CLUSTER_JOIN => {
                let info: NodeInfo = rpc::parse(&env)?;
                self.add_voter(info)
                    .await
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                rpc::json_reply(&true)
            }
            rpc::HTTP_FORWARD => self.serve_forwarded(env).await,
            rpc::CATALOG_APPLY => {
                let ops: Vec<berth_api::catalog::CatalogOp> = rpc::parse(&env)?;
                let r = self.catalog_apply(ops).await.map_err(|e| e.to_string());
                rpc::json_reply(&r)
            }
            rpc::CATALOG_NODE => {
                let name: String = rpc::parse(&env)?;
                let rec = self.store.read().catalog.get(&name).cloned();
                rpc::json_reply(&rec)
            }
            k if k.starts_with("agent.") => crate::agent_rpc::handle(self, env).await,
            other => Err(Status::unimplemented(format!("unknown RPC kind {other:?}"))),
        }
    }

    /// Adds a server as a voter: on the leader directly, elsewhere by asking the leader.
    pub async fn add_voter(&self, info: NodeInfo) -> Result<(), WriteError> {
        let uuid = uuid::Uuid::parse_str(&info.uuid)
            .map_err(|e| WriteError::Rejected(format!("bad node id: {e}")))?;
        let id = crate::raft::types::raft_id(&uuid);
        if !self.is_leader() {
            let (_, leader) = self.leader().ok_or(WriteError::NoLeader)?;
            return self
                .clients
                .call_json::<_, bool>(
                    &leader.rpc_addr,
                    rpc::CLUSTER_JOIN,
                    &info,
                    Duration::from_secs(60),
                )
                .await
                .map(|_| ())
                .map_err(|e| WriteError::Raft(e.to_string()));
        }
        let _one_at_a_time = self.membership_change.lock().await;
        let m = self.metrics();
        if m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id)
        {
            return Ok(());
        }
        tracing::info!(node = %info.name, addr = %info.rpc_addr, "adding server to the cluster");
        self.raft
            .add_learner(id, info.clone(), true)
            .await
            .map_err(|e| WriteError::Raft(e.to_string()))?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| WriteError::Raft(e.to_string()))?;
        self.learn(&[info], None);
        Ok(())
    }

    /// Removes a server from the Raft configuration (an operator's decision about a dead one).
    pub async fn remove_server(&self, id: u64) -> Result<(), WriteError> {
        let _one_at_a_time = self.membership_change.lock().await;
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| WriteError::Raft(e.to_string()))?;
        self.forget(id);
        Ok(())
    }

    /// Stops this server from starting elections for a while, so that a chosen server wins.
    pub fn hold_elections(&self, d: Duration) {
        self.raft.runtime_config().elect(false);
        let raft = self.raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            raft.runtime_config().elect(true);
        });
    }

    /// Hands leadership to `target`: openraft 0.9 has no transfer, so the other voters hold
    /// their elections, the leader stops heartbeating, and once the followers' leader lease has
    /// run out the target (whose log is caught up) starts an election that it wins.
    pub async fn transfer_leadership(&self, target: u64) -> Result<(), WriteError> {
        let m = self.metrics();
        let membership = m.membership_config.membership().clone();
        let info = membership
            .get_node(&target)
            .cloned()
            .ok_or_else(|| WriteError::Rejected(format!("unknown server {target}")))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // The target must hold every entry the leader has, or it cannot win.
        loop {
            let m = self.metrics();
            let last = m.last_log_index;
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&target).cloned().flatten())
                .map(|l| l.index);
            if matched.is_some() && matched == last {
                break;
            }
            if Instant::now() > deadline {
                return Err(WriteError::Raft(
                    "target did not catch up in time".to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        let hold = lease * 4;
        for (id, node) in membership.nodes() {
            if *id != target && *id != self.id {
                let _ = self
                    .clients
                    .call_json::<_, bool>(
                        &node.rpc_addr,
                        rpc::RAFT_HOLD,
                        &HoldRequest {
                            millis: hold.as_millis() as u64,
                        },
                        Duration::from_secs(2),
                    )
                    .await;
            }
        }
        self.hold_elections(hold);
        self.raft.runtime_config().heartbeat(false);
        let result = async {
            tokio::time::sleep(lease + Duration::from_millis(100)).await;
            let deadline = Instant::now() + hold;
            while Instant::now() < deadline {
                let _ = self
                    .clients
                    .call_json::<_, bool>(
                        &info.rpc_addr,
                        rpc::RAFT_ELECT,
                        &(),
                        Duration::from_secs(2),
                    )
                    .await;
                let until = Instant::now() + lease;
                while Instant::now() < until {
                    if self.raft.metrics().borrow().current_leader == Some(target) {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            Err(WriteError::Raft(
                "target did not win the election in time".to_string(),
            ))
        }
        .await;
        self.raft.runtime_config().heartbeat(true);
        result
    }

    async fn serve_forwarded(&self, env: Envelope) -> Result<Envelope, Status> {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let fwd: ForwardRequest = rpc::parse(&env)?;
        let router = self
            .router
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("HTTP API not ready"))?;
        let mut builder = http::Request::builder()
            .method(fwd.method.as_str())
            .uri(fwd.uri.as_str());
        for (k, v) in &fwd.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder = builder.header(crate::http::FORWARDED_HEADER, fwd.hops.to_string());
        let req = builder
            .body(axum::body::Body::from(env.data))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resp = router
            .oneshot(req)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .to_bytes();
        let reply = ForwardReply {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
        };
        Ok(Envelope {
            kind: String::new(),
            json: serde_json::to_vec(&reply).map_err(|e| Status::internal(e.to_string()))?,
            data: bytes.to_vec(),
        })
    }
}
