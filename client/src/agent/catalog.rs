//! Anti-entropy to the servers' catalog over the RPC port: every operation travels with the
//! token it is made with — a service's registration token for that service and its checks,
//! the agent's own token for the node — and the server checks each.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use berth_agent::{Agent, BoxFuture, CatalogBackend, CatalogError};
use berth_api::catalog::{CatalogOp, NodeRecord};
use berth_server::agent_rpc::{ApplyRequest, CATALOG_APPLY, CATALOG_NODE, NodeRequest};

use super::servers::Servers;

pub struct RpcCatalog {
    pub servers: Arc<Servers>,
    pub agent_token: Option<String>,
    /// Set once the agent exists: the service tokens live in its local state.
    pub agent: OnceLock<Weak<Agent>>,
}

impl RpcCatalog {
    fn token_for(&self, op: &CatalogOp) -> Option<String> {
        let service_id = match op {
            CatalogOp::Register(reg) => reg.service.as_ref().map(|s| s.id.clone()).or_else(|| {
                reg.checks
                    .iter()
                    .find(|c| !c.service_id.is_empty())
                    .map(|c| c.service_id.clone())
            }),
            CatalogOp::Deregister { service_id, .. } => service_id.clone(),
        };
        let from_service = service_id.and_then(|id| {
            let agent = self.agent.get()?.upgrade()?;
            let st = agent.state();
            st.tokens.get(&id).cloned()
        });
        from_service.or_else(|| self.agent_token.clone())
    }
}

impl CatalogBackend for RpcCatalog {
    fn node_record(&self, node: &str) -> BoxFuture<'_, Result<Option<NodeRecord>, CatalogError>> {
        let req = NodeRequest {
            token: self.agent_token.clone(),
            node: node.to_string(),
        };
        Box::pin(async move {
            let r: Result<Option<NodeRecord>, String> = self
                .servers
                .call_json(CATALOG_NODE, &req, Duration::from_secs(10))
                .await
                .map_err(|e| CatalogError(e.to_string()))?;
            r.map_err(CatalogError)
        })
    }

    fn apply(&self, ops: Vec<CatalogOp>) -> BoxFuture<'_, Result<(), CatalogError>> {
        let req = ApplyRequest {
            ops: ops
                .into_iter()
                .map(|op| (self.token_for(&op), op))
                .collect(),
        };
        Box::pin(async move {
            let r: Result<(), String> = self
                .servers
                .call_json(CATALOG_APPLY, &req, Duration::from_secs(15))
                .await
                .map_err(|e| CatalogError(e.to_string()))?;
            r.map_err(CatalogError)?;
            // Tokens of services that are gone locally were only kept for their deregistration.
            if let Some(agent) = self.agent.get().and_then(Weak::upgrade) {
                let mut st = agent.state();
                let live: Vec<String> = st.services.keys().cloned().collect();
                st.tokens.retain(|id, _| live.contains(id));
            }
            Ok(())
        })
    }
}
