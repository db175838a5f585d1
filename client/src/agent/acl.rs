//! Token resolution on the agent: the servers resolve a token once (`agent.acl_resolve`), the
//! agent caches the authorizer, and a long poll on the ACL tables' index (`agent.acl_wait`)
//! empties the cache when anything ACL-related changes. Expired tokens are refused at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_acl::Identity;
use berth_server::agent_rpc::{ACL_RESOLVE, ACL_WAIT, Resolved, WaitRequest};

use super::servers::{ServerError, Servers};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("ACL not found")]
    NotFound,
    #[error(transparent)]
    Servers(#[from] ServerError),
}

pub struct Resolver {
    servers: Arc<Servers>,
    cache: Mutex<HashMap<String, Resolved>>,
    /// Secrets the servers said they do not know, until the ACL tables change.
    unknown: Mutex<std::collections::HashSet<String>>,
    index: Mutex<u64>,
}

/// A cached answer about a token.
pub enum Cached {
    Known(Arc<Identity>),
    Unknown,
}

impl Resolver {
    pub fn new(servers: Arc<Servers>) -> Arc<Resolver> {
        let r = Arc::new(Resolver {
            servers,
            cache: Mutex::new(HashMap::new()),
            unknown: Mutex::new(std::collections::HashSet::new()),
            index: Mutex::new(0),
        });
        tokio::spawn(watch_loop(Arc::downgrade(&r)));
        r
    }

    fn cached(&self, key: &str) -> Option<Arc<Identity>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let r = cache.get(key)?;
        if r.expires_ms
            .is_some_and(|e| e <= berth_server::acl::now_ms())
        {
            return None;
        }
        Some(Arc::new(r.identity.clone()))
    }

    /// What the cache knows of a secret, without asking the servers.
    pub fn cached_identity(&self, secret: Option<&str>) -> Option<Cached> {
        let key = secret.filter(|s| !s.is_empty()).unwrap_or("");
        if self
            .unknown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
        {
            return Some(Cached::Unknown);
        }
        self.cached(key).map(Cached::Known)
    }

    fn forget_all(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.unknown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The identity of a secret (`None`: the anonymous token, or the server's default).
    pub async fn resolve(&self, secret: Option<&str>) -> Result<Arc<Identity>, ResolveError> {
        let secret = secret.filter(|s| !s.is_empty());
        let key = secret.unwrap_or("").to_string();
        if let Some(id) = self.cached(&key) {
            return Ok(id);
        }
        let r: Result<Resolved, String> = self
            .servers
            .call_json(ACL_RESOLVE, &secret, Duration::from_secs(10))
            .await?;
        let r = match r {
            Ok(r) => r,
            Err(_) => {
                let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
                if unknown.len() > 10_000 {
                    unknown.clear();
                }
                unknown.insert(key);
                return Err(ResolveError::NotFound);
            }
        };
        if r.expires_ms
            .is_some_and(|e| e <= berth_server::acl::now_ms())
        {
            return Err(ResolveError::NotFound);
        }
        let id = Arc::new(r.identity.clone());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Resolved before the last change we saw: do not keep it.
        if r.acl_index >= *self.index.lock().unwrap_or_else(|p| p.into_inner()) {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, r);
        }
        Ok(id)
    }
}

async fn watch_loop(r: std::sync::Weak<Resolver>) {
    loop {
        let Some(res) = r.upgrade() else { return };
        let current = *res.index.lock().unwrap_or_else(|p| p.into_inner());
        let asked = WaitRequest {
            index: current,
            wait_ms: 30_000,
        };
        let servers = res.servers.clone();
        drop(res);
        match servers
            .call_json::<_, u64>(ACL_WAIT, &asked, Duration::from_secs(40))
            .await
        {
            Ok(idx) => {
                let Some(res) = r.upgrade() else { return };
                if idx != current {
                    *res.index.lock().unwrap_or_else(|p| p.into_inner()) = idx;
                    res.forget_all();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "ACL watch failed; retrying");
                // Without the watch, a stale cache could outlive a revoked token.
                if let Some(res) = r.upgrade() {
                    res.forget_all();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
