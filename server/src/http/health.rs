//! `/v1/health`: service instances with their checks, and checks by service, node or state.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;

use berth_api::catalog::{CRITICAL, HealthCheck, PASSING, ServiceEntry, WARNING};
use berth_api::filter::retain;

use berth_acl::Identity;

use super::catalog::visible;
use super::{ApiError, Id, Query, ReadOpts, filtered_by_acls, json, read, with_meta};
use crate::node::Node as Server;
use crate::state::watch::WatchTarget;
use crate::state::{State as Tables, Table};

fn entries(s: &Tables, name: &str, q: &Query, connect: bool) -> Vec<ServiceEntry> {
    // Berth has no cluster peering: no instance was imported from any peer.
    if q.value("peer").is_some() {
        return Vec::new();
    }
    let tag = q.value("tag");
    let passing_only = q.has("passing");
    let instances = if connect {
        connect_instances(s, name)
    } else {
        s.service_instances(name)
    };
    instances
        .into_iter()
        .filter(|(_, svc)| tag.is_none_or(|t| svc.tags.iter().any(|x| x == t)))
        .map(|(n, svc)| ServiceEntry {
            node: n.clone(),
            service: svc.clone(),
            checks: s
                .instance_checks(&n.node, &svc.id)
                .into_iter()
                .cloned()
                .collect(),
        })
        .filter(|e| !passing_only || e.checks.iter().all(|c| c.status == PASSING))
        .collect()
}

/// Instances that carry mesh traffic for `name`: its sidecar proxies, or itself when native.
pub fn connect_instances<'a>(
    s: &'a Tables,
    name: &str,
) -> Vec<(
    &'a berth_api::catalog::Node,
    &'a berth_api::catalog::AgentService,
)> {
    let mut out = s.proxies_of(name);
    out.extend(s.service_instances(name).into_iter().filter(|(_, svc)| {
        svc.connect
            .as_ref()
            .and_then(|c| c.get("Native"))
            .and_then(|n| n.as_bool())
            == Some(true)
    }));
    out
}

async fn service_entries(
    node: Arc<Server>,
    acl: Arc<Identity>,
    name: String,
    raw: Option<String>,
    connect: bool,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    // A proxy's changes also touch the service it fronts, so mesh reads wait on it too.
    let (idx, mut list) = read(&node, &opts, WatchTarget::Service(name.clone()), |s| {
        (s.service_read_index(&name), entries(s, &name, &q, connect))
    })
    .await?;
    let before = list.len();
    list.retain(|e| visible(&acl, &e.node.node, &e.service.service));
    let cut = list.len() < before;
    retain(filter.as_ref(), &mut list);
    Ok(with_meta(
        &node,
        opts.mode,
        idx,
        filtered_by_acls(json(&list), cut),
    ))
}

pub async fn service(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    service_entries(node, acl, name, raw, false).await
}

pub async fn connect(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    service_entries(node, acl, name, raw, true).await
}

pub async fn checks(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    let (idx, mut list) = read(&node, &opts, WatchTarget::Service(name.clone()), |s| {
        let list: Vec<HealthCheck> = s
            .service_instances(&name)
            .into_iter()
            .flat_map(|(n, svc)| {
                s.catalog
                    .get(&n.node)
                    .into_iter()
                    .flat_map(|r| r.checks.values())
                    .filter(|c| c.service_id == svc.id)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        (s.service_read_index(&name), list)
    })
    .await?;
    let before = list.len();
    list.retain(|c| visible(&acl, &c.node, &c.service_name));
    let cut = list.len() < before;
    retain(filter.as_ref(), &mut list);
    Ok(with_meta(
        &node,
        opts.mode,
        idx,
        filtered_by_acls(json(&list), cut),
    ))
}

pub async fn node(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    let (idx, mut list) = read(&node, &opts, WatchTarget::Node(name.clone()), |s| {
        let list: Vec<HealthCheck> = s
            .catalog
            .get(&name)
            .map(|r| r.checks.values().cloned().collect())
            .unwrap_or_default();
        (s.max_index(&[Table::Nodes, Table::Checks]), list)
    })
    .await?;
    let before = list.len();
    list.retain(|c| visible(&acl, &c.node, &c.service_name));
    let cut = list.len() < before;
    retain(filter.as_ref(), &mut list);
    Ok(with_meta(
        &node,
        opts.mode,
        idx,
        filtered_by_acls(json(&list), cut),
    ))
}

pub async fn state(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(wanted): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    if !["any", PASSING, WARNING, CRITICAL].contains(&wanted.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid state '{wanted}': must be any, passing, warning or critical"
        )));
    }
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    let (idx, mut list) = read(&node, &opts, WatchTarget::Table(Table::Checks), |s| {
        let list: Vec<HealthCheck> = s
            .catalog
            .values()
            .flat_map(|r| r.checks.values())
            .filter(|c| wanted == "any" || c.status == wanted)
            .cloned()
            .collect();
        (s.max_index(&[Table::Checks]), list)
    })
    .await?;
    let before = list.len();
    list.retain(|c| visible(&acl, &c.node, &c.service_name));
    let cut = list.len() < before;
    retain(filter.as_ref(), &mut list);
    Ok(with_meta(
        &node,
        opts.mode,
        idx,
        filtered_by_acls(json(&list), cut),
    ))
}
