//! `/v1/kv`: Consul's KV store.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use berth_api::types::{KvPair, MAX_KV_VALUE};

use berth_acl::{Access, Resource};

use super::{ApiError, Id, Query, ReadOpts, filtered_by_acls, json, read, with_meta, write};
use crate::node::Node;
use crate::state::watch::WatchTarget;
use crate::state::{Command, CommandResult, KvEntry, KvOp};

fn pair(key: &str, e: &KvEntry) -> KvPair {
    KvPair {
        lock_index: e.lock_index,
        key: key.to_string(),
        flags: e.flags,
        value: (!e.value.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
        session: e.session.clone(),
        create_index: e.create_index,
        modify_index: e.modify_index,
    }
}

pub async fn get_root(node: State<Arc<Node>>, id: Id, q: RawQuery) -> Result<Response, ApiError> {
    get(node, id, Path(String::new()), q).await
}

pub async fn put_root(
    node: State<Arc<Node>>,
    id: Id,
    q: RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    put(node, id, Path(String::new()), q, body).await
}

pub async fn delete_root(
    node: State<Arc<Node>>,
    id: Id,
    q: RawQuery,
) -> Result<Response, ApiError> {
    delete(node, id, Path(String::new()), q).await
}

pub async fn get(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    if q.has("keys") {
        let sep = q.get("separator").map(str::to_string);
        let (idx, mut keys) = read(&node, &opts, WatchTarget::Prefix(key.clone()), |s| {
            s.kv_keys(&key, sep.as_deref())
        })
        .await?;
        let before = keys.len();
        keys.retain(|k| id.can(Resource::Key, k, Access::Read));
        if keys.is_empty() {
            return Ok(with_meta(&node, opts.mode, idx, StatusCode::NOT_FOUND));
        }
        let resp = filtered_by_acls(json(&keys), keys.len() < before);
        return Ok(with_meta(&node, opts.mode, idx, resp));
    }
    if q.has("recurse") {
        let (idx, mut pairs) = read(&node, &opts, WatchTarget::Prefix(key.clone()), |s| {
            let (idx, entries) = s.kv_list(&key);
            (
                idx,
                entries
                    .into_iter()
                    .map(|(k, e)| pair(k, e))
                    .collect::<Vec<_>>(),
            )
        })
        .await?;
        let before = pairs.len();
        pairs.retain(|p| id.can(Resource::Key, &p.key, Access::Read));
        if pairs.is_empty() {
            return Ok(with_meta(&node, opts.mode, idx, StatusCode::NOT_FOUND));
        }
        let resp = filtered_by_acls(json(&pairs), pairs.len() < before);
        return Ok(with_meta(&node, opts.mode, idx, resp));
    }
    id.check(Resource::Key, &key, Access::Read)?;
    let (idx, entry) = read(&node, &opts, WatchTarget::Key(key.clone()), |s| {
        let (idx, e) = s.kv_get(&key);
        (idx, e.cloned())
    })
    .await?;
    let Some(entry) = entry else {
        return Ok(with_meta(&node, opts.mode, idx, StatusCode::NOT_FOUND));
    };
    if q.has("raw") {
        let body = ([("content-type", "text/plain; charset=utf-8")], entry.value).into_response();
        return Ok(with_meta(&node, opts.mode, idx, body));
    }
    Ok(with_meta(
        &node,
        opts.mode,
        idx,
        json(&[pair(&key, &entry)]),
    ))
}

pub async fn put(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    id.check(Resource::Key, &key, Access::Write)?;
    let flags = q.num("flags", "flags")?.unwrap_or(0);
    let cas = q.num("cas", "cas index")?;
    let acquire = q.value("acquire").map(str::to_string);
    let release = q.value("release").map(str::to_string);
    if acquire.is_some() && release.is_some() {
        return Err(ApiError::bad_request(
            "Conflicting flags: acquire and release",
        ));
    }
    if body.len() > MAX_KV_VALUE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {MAX_KV_VALUE} bytes",
                body.len()
            ),
        ));
    }
    // Lock-delay is the leader's local memory of recently lost locks (as in Consul), so it is
    // checked here rather than in the replicated apply.
    if acquire.is_some() && node.store.read().kv_lock_delayed(&key, Instant::now()) {
        return Ok(json(&false));
    }
    let op = KvOp::Set {
        key,
        value: body.to_vec(),
        flags,
        cas,
        acquire,
        release,
    };
    let (_, res) = write(&node, Command::Kv(op)).await?;
    Ok(json(&matches!(res, CommandResult::Bool(true))))
}

pub async fn delete(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let recurse = q.has("recurse");
    if key.is_empty() && !recurse {
        return Err(ApiError::bad_request("Missing key name"));
    }
    // A recursive delete needs write on the prefix itself, and on every key it would remove.
    id.check(Resource::Key, &key, Access::Write)?;
    if recurse {
        let st = node.store.read();
        let (_, entries) = st.kv_list(&key);
        for (k, _) in &entries {
            id.check(Resource::Key, k, Access::Write)?;
        }
    }
    let cas = q.num("cas", "cas index")?;
    let (_, res) = write(&node, Command::Kv(KvOp::Delete { key, recurse, cas })).await?;
    Ok(json(&matches!(res, CommandResult::Bool(true))))
}
