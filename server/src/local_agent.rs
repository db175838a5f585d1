//! The agent that every server runs for its own node (Consul servers are agents too): the
//! `/v1/agent` service and check API, backed by this server's catalog. Its writes go through
//! Raft on the leader, and are forwarded to the leader over the RPC port from followers —
//! the same `catalog.apply` / `catalog.node` calls that client agents use.

use std::sync::Arc;
use std::time::Duration;

use berth_agent::{Agent, AgentConfig, BoxFuture, CatalogBackend, CatalogError};
use berth_api::catalog::{CatalogOp, Node as CatalogNode, NodeRecord};

use crate::cluster::SERF_CHECK;
use crate::node::Node;

const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

struct ServerCatalog(Arc<Node>);

impl CatalogBackend for ServerCatalog {
    fn node_record(&self, name: &str) -> BoxFuture<'_, Result<Option<NodeRecord>, CatalogError>> {
        let name = name.to_string();
        Box::pin(async move {
            self.0
                .catalog_node(&name)
                .await
                .map_err(|e| CatalogError(e.to_string()))
        })
    }

    fn apply(&self, ops: Vec<CatalogOp>) -> BoxFuture<'_, Result<(), CatalogError>> {
        Box::pin(async move {
            self.0
                .catalog_apply(ops)
                .await
                .map_err(|e| CatalogError(e.to_string()))
        })
    }
}

/// Starts the agent of this server's node.
pub fn start(node: &Arc<Node>) -> Arc<Agent> {
    let address = node
        .info
        .rpc_addr
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut cfg = AgentConfig::new(CatalogNode {
        id: node.info.uuid.clone(),
        node: node.cfg.node_name.clone(),
        address,
        datacenter: node.cfg.datacenter.clone(),
        ..Default::default()
    });
    // The leader's server loop owns this node's entry, `consul` service and `serfHealth`.
    cfg.manage_node = false;
    cfg.reserved_services = vec![node.cfg.server_service_name.clone()];
    cfg.reserved_checks = vec![SERF_CHECK.to_string()];
    let agent = Agent::start(cfg, Arc::new(ServerCatalog(node.clone())));
    let n = node.clone();
    agent.metrics.add_gauge_source(Box::new(move || {
        let m = n.metrics();
        let st = n.store.read();
        let services: usize = st.catalog.values().map(|r| r.services.len()).sum();
        vec![
            ("berth.raft.term".into(), Vec::new(), m.current_term as f64),
            (
                "berth.raft.last_log_index".into(),
                Vec::new(),
                m.last_log_index.unwrap_or(0) as f64,
            ),
            (
                "berth.raft.applied_index".into(),
                Vec::new(),
                m.last_applied.map(|l| l.index).unwrap_or(0) as f64,
            ),
            (
                "berth.server.is_leader".into(),
                Vec::new(),
                f64::from(u8::from(n.is_leader())),
            ),
            (
                "berth.catalog.nodes".into(),
                Vec::new(),
                st.catalog.len() as f64,
            ),
            (
                "berth.catalog.service_instances".into(),
                Vec::new(),
                services as f64,
            ),
            ("berth.kv.entries".into(), Vec::new(), st.kv.len() as f64),
            (
                "berth.session.count".into(),
                Vec::new(),
                st.sessions.len() as f64,
            ),
        ]
    }));
    agent
}

impl Node {
    /// Commits catalog operations as one entry: here on the leader, else on the leader over RPC.
    pub async fn catalog_apply(&self, ops: Vec<CatalogOp>) -> Result<(), crate::node::WriteError> {
        use crate::node::WriteError;
        use crate::state::{Command, CommandResult};
        if ops.is_empty() {
            return Ok(());
        }
        if self.is_leader() {
            let cmd = Command::Batch(ops.into_iter().map(Command::Catalog).collect());
            let (_, result) = self.write(cmd).await?;
            if let CommandResult::Batch(results) = result
                && let Some(CommandResult::Rejected(m)) = results
                    .into_iter()
                    .find(|r| matches!(r, CommandResult::Rejected(_)))
            {
                return Err(WriteError::Rejected(m));
            }
            return Ok(());
        }
        let (_, leader) = self.leader().ok_or(WriteError::NoLeader)?;
        let reply: Result<(), String> = self
            .clients
            .call_json(
                &leader.rpc_addr,
                crate::rpc::CATALOG_APPLY,
                &ops,
                FORWARD_TIMEOUT,
            )
            .await
            .map_err(|e| WriteError::Raft(e.to_string()))?;
        reply.map_err(WriteError::Rejected)
    }

    /// One node's catalog entry as the leader sees it.
    pub async fn catalog_node(
        &self,
        name: &str,
    ) -> Result<Option<NodeRecord>, crate::node::WriteError> {
        use crate::node::WriteError;
        if self.is_leader() {
            return Ok(self.store.read().catalog.get(name).cloned());
        }
        let (_, leader) = self.leader().ok_or(WriteError::NoLeader)?;
        self.clients
            .call_json(
                &leader.rpc_addr,
                crate::rpc::CATALOG_NODE,
                &name,
                FORWARD_TIMEOUT,
            )
            .await
            .map_err(|e| WriteError::Raft(e.to_string()))
    }
}
