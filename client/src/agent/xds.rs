//! The agent as the xDS server's snapshot source: a stream is for a proxy registered with this
//! agent, and its `x-consul-token` must have `service:write` on the service the proxy fronts.

use std::sync::Arc;

use berth_acl::{Access, Resource};
use berth_xds::{ProxySnapshot, SnapshotSource, XdsEvent};
use tokio::sync::watch;
use tonic::Status;

use super::acl::{Cached, Resolver};
use super::proxy::Proxies;

pub struct AgentSource {
    pub proxies: Arc<Proxies>,
    pub resolver: Arc<Resolver>,
}

impl SnapshotSource for AgentSource {
    fn subscribe(
        &self,
        proxy_id: &str,
        token: Option<&str>,
    ) -> Result<watch::Receiver<Option<Arc<ProxySnapshot>>>, Status> {
        let (service, rx) = self.proxies.get(proxy_id).ok_or_else(|| {
            Status::not_found(format!(
                "no proxy {proxy_id:?} is registered with this agent"
            ))
        })?;
        // Resolution needs the servers; a stream is opened often enough that a token that
        // is not cached yet is resolved in the background and the stream asked to retry.
        let id = match self.resolver.cached_identity(token) {
            Some(Cached::Known(id)) => id,
            Some(Cached::Unknown) => {
                tracing::warn!(proxy = %proxy_id, "xDS stream refused: ACL not found");
                return Err(Status::permission_denied("ACL not found"));
            }
            None => {
                let r = self.resolver.clone();
                let t = token.map(str::to_string);
                tokio::spawn(async move {
                    let _ = r.resolve(t.as_deref()).await;
                });
                return Err(Status::unavailable("resolving the token; retry"));
            }
        };
        if let Err(e) = id.check(Resource::Service, &service, Access::Write) {
            tracing::warn!(proxy = %proxy_id, reason = %e, "xDS stream refused");
            return Err(Status::permission_denied(e.to_string()));
        }
        Ok(rx)
    }

    fn on_event(&self, proxy_id: &str, event: &XdsEvent) {
        if let XdsEvent::Nacked {
            message, resources, ..
        } = event
        {
            tracing::warn!(proxy = %proxy_id, resources = ?resources, reason = %message, "Envoy rejected configuration");
        }
    }
}
