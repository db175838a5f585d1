//! Blocking queries against the servers, as watch channels: each watcher long-polls one
//! endpoint with `?index=` and publishes every new answer; it stops when nobody listens.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::servers::{Reply, Servers};

/// How long one blocking query waits on the server.
const WAIT: &str = "30s";

/// Polls `uri` (which must not have `index`/`wait` yet) and publishes `parse(reply)` for each
/// answer with a new index. Errors keep the last value and retry with backoff.
pub fn blocking<T, F>(
    servers: Arc<Servers>,
    uri: String,
    token: Option<String>,
    parse: F,
) -> watch::Receiver<Option<Arc<T>>>
where
    T: Send + Sync + 'static,
    F: Fn(&Reply) -> Result<T, String> + Send + 'static,
{
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut index = 0u64;
        let mut backoff = Duration::from_millis(100);
        let sep = if uri.contains('?') { '&' } else { '?' };
        loop {
            if tx.is_closed() {
                return;
            }
            let full = format!("{uri}{sep}index={index}&wait={WAIT}");
            let r = servers
                .http(
                    "GET",
                    &full,
                    token.as_deref(),
                    Vec::new(),
                    Vec::new(),
                    Duration::from_secs(45),
                )
                .await;
            match r.map_err(|e| e.to_string()).and_then(|r| {
                let idx = r.index();
                parse(&r).map(|v| (idx, v))
            }) {
                Ok((idx, v)) => {
                    backoff = Duration::from_millis(100);
                    // An index that went backwards (a restored snapshot) starts over.
                    if idx != index || tx.borrow().is_none() {
                        index = if idx < index { 0 } else { idx };
                        tx.send_replace(Some(Arc::new(v)));
                    }
                }
                Err(e) => {
                    tracing::debug!(uri = %uri, error = %e, "watch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    index = 0;
                }
            }
        }
    });
    rx
}

/// A parser for JSON answers that must be 200 (or 404, read as `missing`).
pub fn json_or<T: serde::de::DeserializeOwned>(
    r: &Reply,
    missing: impl FnOnce() -> T,
) -> Result<T, String> {
    match r.status {
        200 => serde_json::from_slice(&r.body).map_err(|e| e.to_string()),
        404 => Ok(missing()),
        s => Err(format!("{s} {}", r.text().trim())),
    }
}
