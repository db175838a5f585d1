//! The `/v1/agent` endpoints that concern the server process itself rather than its local
//! registrations: reload, leave, force-leave, monitor and tokens.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tower::ServiceExt;

use super::{ApiError, Query};
use crate::node::Node;
use crate::state::{CatalogOp, Command};

pub async fn reload(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): super::Id,
) -> Result<Response, ApiError> {
    acl.check(
        berth_acl::Resource::Agent,
        &node.cfg.node_name,
        berth_acl::Access::Write,
    )?;
    match node.reload.get() {
        None => Err(ApiError::internal(
            "this server was not started with a reloadable configuration",
        )),
        Some(f) => f()
            .map(|()| StatusCode::OK.into_response())
            .map_err(|e| ApiError::internal(format!("Failed to reload configs: {e}"))),
    }
}

/// Leaves the cluster gracefully (out of the Raft configuration when other servers remain),
/// then stops the process.
/// `DELETE /v1/operator/raft/peer?id=` through the router, with the caller's token, so that a
/// follower's request reaches the leader.
fn remove_peer_request(
    uuid: &str,
    token: &super::RequestToken,
) -> Option<axum::http::Request<Body>> {
    let mut b = axum::http::Request::delete(format!("/v1/operator/raft/peer?id={uuid}"));
    if let Some(t) = &token.0 {
        b = b.header("x-consul-token", t.as_str());
    }
    b.body(Body::empty()).ok()
}

pub async fn leave(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): super::Id,
    axum::Extension(token): axum::Extension<super::RequestToken>,
) -> Result<Response, ApiError> {
    acl.check(
        berth_acl::Resource::Agent,
        &node.cfg.node_name,
        berth_acl::Access::Write,
    )?;
    let others = node
        .metrics()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v != node.id);
    if others
        && let (Some(router), Some(req)) = (
            node.router.get().cloned(),
            remove_peer_request(&node.info.uuid, &token),
        )
    {
        match tokio::time::timeout(Duration::from_secs(10), router.oneshot(req)).await {
            Ok(Ok(r)) if r.status().is_success() => {
                tracing::info!("left the Raft configuration")
            }
            other => {
                tracing::warn!(result = ?other.map(|r| r.map(|r| r.status())), "could not leave the Raft configuration; stopping anyway")
            }
        }
    }
    let leave = node.leave.clone();
    // Answer first, then stop.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        leave.notify_one();
    });
    Ok(StatusCode::OK.into_response())
}

/// Removes a failed node: a server from Raft (with `?prune`, or when it is not a voter), or a
/// client node's catalog entry.
pub async fn force_leave(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): super::Id,
    axum::Extension(token): axum::Extension<super::RequestToken>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    acl.check(berth_acl::Resource::Operator, "", berth_acl::Access::Write)?;
    let member = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .find(|(_, n)| n.name == name)
        .map(|(id, n)| (*id, n.uuid.clone()));
    if let Some((id, uuid)) = member {
        if id == node.id {
            return Err(ApiError::bad_request(
                "cannot force-leave this server itself: use leave",
            ));
        }
        let router = node
            .router
            .get()
            .cloned()
            .ok_or_else(|| ApiError::internal("HTTP API not ready"))?;
        let req = remove_peer_request(&uuid, &token)
            .ok_or_else(|| ApiError::internal("cannot build the peer removal request"))?;
        let r = router
            .oneshot(req)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(r);
    }
    if !node.store.read().catalog.contains_key(&name) {
        return Err(ApiError::internal(format!(
            "agent: No node found with name '{name}'"
        )));
    }
    super::write(
        &node,
        Command::Catalog(CatalogOp::Deregister {
            node: name,
            service_id: None,
            check_id: None,
        }),
    )
    .await?;
    Ok(StatusCode::OK.into_response())
}

/// Streams this server's log lines at `?loglevel=` (default info) and above.
pub async fn monitor(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): super::Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.check(
        berth_acl::Resource::Agent,
        &node.cfg.node_name,
        berth_acl::Access::Read,
    )?;
    let q = Query::parse(raw.as_deref());
    let name = q.value("loglevel").unwrap_or("info");
    let level = crate::logs::parse_level(name)
        .ok_or_else(|| ApiError::bad_request(format!("Unknown log level: {name}")))?;
    let rx = crate::logs::MONITOR.subscribe();
    let lines = BroadcastStream::new(rx).filter_map(move |item| async move {
        match item {
            Ok(line) if line.level <= level => Some(Ok::<_, std::convert::Infallible>(format!(
                "{}\n",
                line.text
            ))),
            _ => None,
        }
    });
    Ok((
        [("content-type", "text/plain; charset=utf-8")],
        Body::from_stream(lines),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TokenBody {
    #[serde(default)]
    token: String,
}

/// Sets one of the agent's own tokens (`default`, `agent`, ...). Needs `agent:write` on this
/// node; kept in memory, and with `enable_token_persistence` in `acl-tokens.json` (0600) in
/// the data dir, read back at start.
pub async fn token(
    State(node): State<Arc<Node>>,
    axum::Extension(id): axum::Extension<Arc<berth_acl::Identity>>,
    Path(kind): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    const KINDS: &[&str] = &[
        "default",
        "agent",
        "agent_recovery",
        "agent_master",
        "replication",
        "config_file_service_registration",
        "dns",
    ];
    if !KINDS.contains(&kind.as_str()) {
        return Err(ApiError::not_found(format!("Token {kind:?} is unknown")));
    }
    if !node.cfg.acl.enabled {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ACL support disabled",
        ));
    }
    id.check(
        berth_acl::Resource::Agent,
        &node.cfg.node_name,
        berth_acl::Access::Write,
    )
    .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()))?;
    let b: TokenBody = super::decode_body(&body)?;
    node.set_agent_token(&kind, b.token)
        .map_err(|e| ApiError::internal(format!("cannot persist the token: {e}")))?;
    Ok(StatusCode::OK.into_response())
}
