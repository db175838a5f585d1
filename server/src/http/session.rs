//! `/v1/session`: sessions, the basis of KV locks.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use berth_api::types::{ServiceCheck, SessionBehavior, SessionEntry};

use berth_acl::{Access, Resource};

use super::{ApiError, Id, Query, ReadOpts, filtered_by_acls, json, read, with_meta, write};
use crate::cluster::reset_session_timer;
use crate::node::Node;
use crate::state::watch::WatchTarget;
use crate::state::{Command, CommandResult, Session, SessionOp, Table};

const MIN_TTL: Duration = Duration::from_secs(10);
const MAX_TTL: Duration = Duration::from_secs(86400);
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

fn entry(s: &Session) -> SessionEntry {
    SessionEntry {
        id: s.id.clone(),
        name: s.name.clone(),
        node: s.node.clone(),
        lock_delay: s.lock_delay_ns,
        behavior: s.behavior,
        ttl: s.ttl.clone(),
        node_checks: s.node_checks.clone(),
        service_checks: s.service_checks.clone(),
        create_index: s.create_index,
        modify_index: s.modify_index,
    }
}

/// Field lookup ignoring case: clients send `Name`, `name` or `NAME` (Go's decoder accepts all).
fn field<'a>(body: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn string_list(v: Option<&Value>, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match v {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Request decode failed: {name} must be a list of strings"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::bad_request(format!(
            "Request decode failed: {name} must be a list of strings"
        ))),
    }
}

/// Parses a create body into a session (without ID and indexes). Pure, so it is unit-tested.
fn parse_create(body: &[u8], default_node: &str) -> Result<Session, ApiError> {
    let map = if body.iter().all(|b| b.is_ascii_whitespace()) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "Request decode failed: expected a JSON object",
                ));
            }
            Err(e) => return Err(ApiError::bad_request(format!("Request decode failed: {e}"))),
        }
    };
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match field(&map, name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "Request decode failed: {name} must be a string"
            ))),
        }
    };
    let lock_delay = match field(&map, "LockDelay") {
        None => DEFAULT_LOCK_DELAY,
        Some(Value::String(s)) => berth_api::parse_duration(s)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: LockDelay: {e}")))?,
        // Consul reads small numbers as seconds and large ones as nanoseconds.
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v < 1000 => Duration::from_secs(v),
            Some(v) => Duration::from_nanos(v),
            None => {
                return Err(ApiError::bad_request(
                    "Request decode failed: LockDelay must be positive",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::bad_request(
                "Request decode failed: LockDelay must be a duration",
            ));
        }
    }
    .min(MAX_LOCK_DELAY);
    let behavior = match text("Behavior")?.as_deref() {
        None | Some("") | Some("release") => SessionBehavior::Release,
        Some("delete") => SessionBehavior::Delete,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid Behavior setting '{other}'"
            )));
        }
    };
    let ttl = text("TTL")?.unwrap_or_default();
    if !ttl.is_empty() {
        let d = berth_api::parse_duration(&ttl)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: TTL: {e}")))?;
        if !d.is_zero() && !(MIN_TTL..=MAX_TTL).contains(&d) {
            // Consul's wording, bounds included.
            return Err(ApiError::bad_request(format!(
                "Invalid Session TTL '{ttl}', must be between [10s=24h0m0s]"
            )));
        }
    }
    let mut node_checks = string_list(field(&map, "NodeChecks"), "NodeChecks")?;
    if let Some(legacy) = string_list(field(&map, "Checks"), "Checks")? {
        node_checks.get_or_insert_with(Vec::new).extend(legacy);
    }
    let service_checks: Option<Vec<ServiceCheck>> = match field(&map, "ServiceChecks") {
        None => None,
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
            ApiError::bad_request(format!("Request decode failed: ServiceChecks: {e}"))
        })?),
    };
    Ok(Session {
        id: String::new(),
        name: text("Name")?.unwrap_or_default(),
        node: text("Node")?
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| default_node.to_string()),
        lock_delay_ns: lock_delay.as_nanos() as u64,
        behavior,
        ttl,
        // Consul ties sessions to the node's liveness check unless told otherwise.
        node_checks: node_checks.unwrap_or_else(|| vec!["serfHealth".to_string()]),
        service_checks,
        create_index: 0,
        modify_index: 0,
    })
}

pub async fn create(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut s = parse_create(&body, &node.cfg.node_name)?;
    acl.check(Resource::Session, &s.node, Access::Write)?;
    // A session belongs to a node of the catalog. The servers count from the moment they run,
    // before the leader has written their own registration.
    let known = node.store.read().catalog.contains_key(&s.node)
        || node
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .any(|(_, n)| n.name == s.node);
    if !known {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Missing node registration",
        ));
    }
    s.id = uuid::Uuid::new_v4().to_string();
    let ttl = s.ttl.clone();
    let (_, res) = write(&node, Command::Session(SessionOp::Create(s))).await?;
    let CommandResult::Created(id) = res else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "session was not created",
        ));
    };
    reset_session_timer(&node, &id, &ttl);
    Ok(json(&serde_json::json!({ "ID": id })))
}

/// Session writes are authorized on the session's node, as in Consul.
fn session_node(node: &Node, id: &str) -> Option<String> {
    node.store.read().session_get(id).1.map(|s| s.node.clone())
}

pub async fn destroy(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(n) = session_node(&node, &id) {
        acl.check(Resource::Session, &n, Access::Write)?;
    }
    write(&node, Command::Session(SessionOp::Destroy { id })).await?;
    Ok(json(&true))
}

pub async fn info(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let opts = ReadOpts::parse(&Query::parse(raw.as_deref()))?;
    let (idx, s) = read(&node, &opts, WatchTarget::Table(Table::Sessions), |st| {
        let (i, s) = st.session_get(&id);
        (i, s.map(entry))
    })
    .await?;
    // A session the token may not read is reported as absent.
    let s = s.filter(|s| acl.can(Resource::Session, &s.node, Access::Read));
    Ok(match s {
        Some(s) => with_meta(&node, opts.mode, idx, json(&[s])),
        None => with_meta(
            &node,
            opts.mode,
            idx,
            (StatusCode::NOT_FOUND, json(&Value::Null)),
        ),
    })
}

async fn list_for(
    node: Arc<Node>,
    acl: Arc<berth_acl::Identity>,
    raw: Option<String>,
    on: Option<String>,
) -> Result<Response, ApiError> {
    let opts = ReadOpts::parse(&Query::parse(raw.as_deref()))?;
    let (idx, mut list) = read(&node, &opts, WatchTarget::Table(Table::Sessions), |st| {
        let (i, l) = st.session_list(on.as_deref());
        (i, l.into_iter().map(entry).collect::<Vec<_>>())
    })
    .await?;
    let before = list.len();
    list.retain(|s| acl.can(Resource::Session, &s.node, Access::Read));
    let resp = filtered_by_acls(json(&list), list.len() < before);
    Ok(with_meta(&node, opts.mode, idx, resp))
}

pub async fn list(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    list_for(node, acl, raw, None).await
}

pub async fn node(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    list_for(node, acl, raw, Some(name)).await
}

pub async fn renew(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(n) = session_node(&node, &id) {
        acl.check(Resource::Session, &n, Access::Write)?;
    }
    let s = node.store.read().session_get(&id).1.map(entry);
    let Some(s) = s else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        ));
    };
    reset_session_timer(&node, &id, &s.ttl);
    Ok(json(&[s]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_accepts_any_case_and_defaults() {
        let s = parse_create(
            br#"{"name":"n","ttl":"15s","behavior":"delete","LockDelay":"5s"}"#,
            "me",
        )
        .unwrap();
        assert_eq!(
            (s.name.as_str(), s.ttl.as_str(), s.node.as_str()),
            ("n", "15s", "me")
        );
        assert_eq!(s.behavior, SessionBehavior::Delete);
        assert_eq!(s.lock_delay_ns, 5_000_000_000);
        assert_eq!(s.node_checks, vec!["serfHealth"]);
        let s = parse_create(b"", "me").unwrap();
        assert_eq!(s.lock_delay_ns, 15_000_000_000);
        let s = parse_create(br#"{"LockDelay": 3, "NodeChecks": []}"#, "me").unwrap();
        assert_eq!(s.lock_delay_ns, 3_000_000_000);
        assert!(s.node_checks.is_empty());
    }

    #[test]
    fn create_body_errors_are_400s_naming_the_field() {
        for (body, needle) in [
            (&br#"{"TTL":"5s"}"#[..], "Invalid Session TTL '5s'"),
            (br#"{"TTL":"90000s"}"#, "Invalid Session TTL"),
            (
                br#"{"Behavior":"explode"}"#,
                "Invalid Behavior setting 'explode'",
            ),
            (br#"{"Name": 7}"#, "Name must be a string"),
            (br#"[1]"#, "expected a JSON object"),
            (br#"{"#, "Request decode failed"),
        ] {
            let e = parse_create(body, "me").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }
}
