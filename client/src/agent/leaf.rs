//! Leaf certificates of the agent's local services: the key is made here and never leaves
//! the task; the servers sign a CSR with the identity the service's token allows. Renewal
//! happens at a random point in 60–90 % of the lifetime, and at once when the active root
//! changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::connect::{CaRoots, IssuedCert, SignRequest};
use rand::Rng;
use tokio::sync::watch;

use super::servers::Servers;

#[derive(Debug, Clone, PartialEq)]
pub struct LeafCert {
    pub issued: IssuedCert,
    pub key_pem: String,
    /// The active root when it was signed.
    pub root_id: String,
    pub valid_after_ms: u64,
    pub valid_before_ms: u64,
    /// Counts renewals, for blocking reads of the leaf endpoint.
    pub generation: u64,
}

struct Entry {
    tx: watch::Sender<Option<Arc<LeafCert>>>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Leaves {
    servers: Arc<Servers>,
    roots: watch::Receiver<Option<Arc<CaRoots>>>,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    #[error("cannot make a key or CSR: {0}")]
    Key(String),
    #[error("the servers refused to sign ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error(transparent)]
    Servers(#[from] super::servers::ServerError),
    #[error("bad certificate answer: {0}")]
    Answer(String),
}

/// When to renew a certificate valid from `after` to `before`: a random point in 60–90 % of
/// its lifetime, so that many proxies do not renew together.
pub fn renew_at(after_ms: u64, before_ms: u64, unit: f64) -> u64 {
    let life = before_ms.saturating_sub(after_ms) as f64;
    after_ms + (life * (0.6 + 0.3 * unit.clamp(0.0, 1.0))).round() as u64
}

async fn sign(
    servers: &Servers,
    service: &str,
    token: Option<&str>,
    root_id: &str,
    generation: u64,
) -> Result<LeafCert, LeafError> {
    let key = rcgen::KeyPair::generate().map_err(|e| LeafError::Key(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(|e| LeafError::Key(e.to_string()))?;
    let body = serde_json::to_vec(&SignRequest {
        csr,
        service: service.to_string(),
    })
    .map_err(|e| LeafError::Key(e.to_string()))?;
    let r = servers
        .http(
            "PUT",
            "/v1/connect/ca/sign",
            token,
            vec![("content-type".into(), "application/json".into())],
            body,
            Duration::from_secs(15),
        )
        .await?;
    if r.status != 200 {
        return Err(LeafError::Refused {
            status: r.status,
            message: r.text().trim().to_string(),
        });
    }
    let mut issued: IssuedCert =
        serde_json::from_slice(&r.body).map_err(|e| LeafError::Answer(e.to_string()))?;
    let key_pem = key.serialize_pem();
    issued.private_key_pem = key_pem.clone();
    let parse = |s: &str| berth_server::acl::parse_rfc3339(s).unwrap_or(0);
    Ok(LeafCert {
        valid_after_ms: parse(&issued.valid_after),
        valid_before_ms: parse(&issued.valid_before),
        issued,
        key_pem,
        root_id: root_id.to_string(),
        generation,
    })
}

fn active_root(roots: &watch::Receiver<Option<Arc<CaRoots>>>) -> Option<String> {
    roots
        .borrow()
        .as_ref()
        .map(|r| r.active_root_id.clone())
        .filter(|s| !s.is_empty())
}

async fn renew_loop(
    servers: Arc<Servers>,
    mut roots: watch::Receiver<Option<Arc<CaRoots>>>,
    tx: watch::Sender<Option<Arc<LeafCert>>>,
    service: String,
    token: Option<String>,
) {
    let mut generation = 0;
    let mut backoff = Duration::from_millis(200);
    loop {
        // Nothing to sign with until the roots are known.
        while active_root(&roots).is_none() {
            if roots.changed().await.is_err() {
                return;
            }
        }
        let root_id = active_root(&roots).unwrap_or_default();
        generation += 1;
        match sign(&servers, &service, token.as_deref(), &root_id, generation).await {
            Ok(leaf) => {
                backoff = Duration::from_millis(200);
                let at = renew_at(
                    leaf.valid_after_ms,
                    leaf.valid_before_ms,
                    rand::rng().random(),
                );
                tracing::info!(service = %service, serial = %leaf.issued.serial_number, "leaf certificate signed");
                tx.send_replace(Some(Arc::new(leaf)));
                let wait = Duration::from_millis(at.saturating_sub(berth_server::acl::now_ms()));
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        r = roots.changed() => {
                            if r.is_err() { return; }
                            // A rotation: leaves of the new root at once.
                            if active_root(&roots).is_some_and(|id| id != root_id) {
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(service = %service, error = %e, "cannot get a leaf certificate; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

impl Leaves {
    pub fn new(servers: Arc<Servers>, roots: watch::Receiver<Option<Arc<CaRoots>>>) -> Leaves {
        Leaves {
            servers,
            roots,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The leaf of `service`, kept fresh while anyone watches it; signed with `token`.
    pub fn watch(
        &self,
        service: &str,
        token: Option<&str>,
    ) -> watch::Receiver<Option<Arc<LeafCert>>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| !e.task.is_finished());
        if let Some(e) = entries.get(service) {
            return e.tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(renew_loop(
            self.servers.clone(),
            self.roots.clone(),
            tx.clone(),
            service.to_string(),
            token.map(str::to_string),
        ));
        entries.insert(service.to_string(), Entry { tx, task });
        rx
    }

    /// Stops renewing the leaves of services no longer local.
    pub fn retain(&self, services: &[String]) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|k, e| {
            let keep = services.contains(k);
            if !keep {
                e.task.abort();
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_in_60_to_90_percent() {
        assert_eq!(renew_at(0, 1000, 0.0), 600);
        assert_eq!(renew_at(0, 1000, 1.0), 900);
        assert_eq!(renew_at(1000, 2000, 0.5), 1750);
        assert_eq!(renew_at(0, 1000, 7.0), 900);
    }
}
