//! The agent: what one node runs for its own services.
//!
//! It holds the node's local registrations (services and checks), runs the checks (TTL, HTTP,
//! TCP, gRPC), and keeps the catalog equal to its local view by anti-entropy: every change
//! triggers a sync, and a periodic full sync repairs any drift. The catalog is reached through
//! [`CatalogBackend`], so the same code runs inside `berth-server` (committing through Raft)
//! and in `berth agent` (over the servers' RPC port).
//!
//! Layout: `local` (registrations and their defaults, pure), `checks` (runners), `sync`
//! (anti-entropy), `api` (the `/v1/agent` routes), `metrics`, `http_util`.

pub mod api;
pub mod checks;
pub mod http_util;
pub mod local;
pub use berth_api::metrics;
pub mod sync;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_api::catalog::{CatalogOp, Node, NodeRecord};
use tokio::sync::{Notify, watch};

pub use local::{LocalState, Persisted, RegisterError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(pub String);

/// Where the agent's registrations go: the catalog of the servers.
pub trait CatalogBackend: Send + Sync + 'static {
    /// The catalog's current view of one node, or `None` when it is not registered.
    fn node_record(&self, node: &str) -> BoxFuture<'_, Result<Option<NodeRecord>, CatalogError>>;
    /// Commits the operations, in order, as one change.
    fn apply(&self, ops: Vec<CatalogOp>) -> BoxFuture<'_, Result<(), CatalogError>>;
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node as the catalog should show it.
    pub node: Node,
    /// When false, something else (the server's leader loop) owns the node entry and the
    /// agent only adds services and checks to it.
    pub manage_node: bool,
    /// Services and checks anti-entropy leaves alone, because another part owns them
    /// (Consul: the `consul` service and the `serfHealth` check).
    pub reserved_services: Vec<String>,
    pub reserved_checks: Vec<String>,
    /// Full anti-entropy period; changes sync at once regardless.
    pub sync_interval: Duration,
    /// Ports handed to sidecar proxies registered without one.
    pub sidecar_ports: (u16, u16),
}

impl AgentConfig {
    pub fn new(node: Node) -> Self {
        AgentConfig {
            node,
            manage_node: true,
            reserved_services: Vec::new(),
            reserved_checks: Vec::new(),
            sync_interval: Duration::from_secs(30),
            sidecar_ports: (21000, 21255),
        }
    }
}

pub struct Agent {
    pub cfg: AgentConfig,
    catalog: Arc<dyn CatalogBackend>,
    state: Mutex<LocalState>,
    /// Wakes the sync loop.
    dirty: Arc<Notify>,
    /// The local generation that the catalog is known to match.
    synced: watch::Sender<u64>,
    pub metrics: metrics::Registry,
    http: checks::HttpClients,
}

impl Agent {
    /// Creates the agent and starts its sync and reaper loops on the current runtime.
    pub fn start(cfg: AgentConfig, catalog: Arc<dyn CatalogBackend>) -> Arc<Agent> {
        Agent::start_restored(cfg, catalog, None)
    }

    /// As [`Agent::start`], with the local state of an earlier run put back before the first
    /// sync (which would otherwise deregister it).
    pub fn start_restored(
        cfg: AgentConfig,
        catalog: Arc<dyn CatalogBackend>,
        restored: Option<Persisted>,
    ) -> Arc<Agent> {
        let mut state = LocalState::new(&cfg);
        let checks = restored.map(|p| state.restore(p)).unwrap_or_default();
        let agent = Arc::new(Agent {
            state: Mutex::new(state),
            cfg,
            catalog,
            dirty: Arc::new(Notify::new()),
            synced: watch::channel(0).0,
            metrics: metrics::Registry::default(),
            http: checks::HttpClients::new(),
        });
        tokio::spawn(sync::sync_loop(Arc::downgrade(&agent)));
        tokio::spawn(checks::reaper_loop(Arc::downgrade(&agent)));
        for id in checks {
            checks::start(&agent, &id);
        }
        agent.dirty.notify_one();
        agent
    }

    pub fn state(&self) -> MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that local state changed, wakes the sync loop, and returns the generation
    /// that a sync must reach to carry the change.
    pub fn changed(&self) -> u64 {
        let generation = self.state().bump();
        self.dirty.notify_one();
        generation
    }

    /// Waits (up to `limit`) until the catalog carries generation `generation`, so that a
    /// client that registers and then reads the catalog sees its registration. The local
    /// change stands either way; anti-entropy keeps retrying.
    pub async fn wait_synced(&self, generation: u64, limit: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|g| *g >= generation))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops every check runner; used when the host shuts down.
    pub fn stop(&self) {
        self.state().stop_all();
    }
}
