//! `/v1/catalog`: register and deregister, and the catalog's read endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use berth_api::filter::retain;

use berth_api::catalog::{
    AgentService, CRITICAL, CatalogService, CheckDefinition, DeregisterRequest, HealthCheck,
    MAINTENANCE, Node, PASSING, RegisterRequest, WARNING,
};

use berth_acl::{Access, Identity, Resource};

use super::{
    ApiError, Id, Query, ReadOpts, decode_body, filtered_by_acls, json, read, with_meta, write,
};
use crate::node::Node as Server;
use crate::state::watch::WatchTarget;
use crate::state::{CatalogOp, Command, Registration, Table};

pub fn check_from(def: CheckDefinition, node: &str) -> Result<HealthCheck, ApiError> {
    if !def.node.is_empty() && def.node != node {
        return Err(ApiError::bad_request(format!(
            "Check node '{}' does not match the registered node '{node}'",
            def.node
        )));
    }
    let check_id = if def.check_id.is_empty() {
        def.name.clone()
    } else {
        def.check_id
    };
    if check_id.is_empty() {
        return Err(ApiError::bad_request("Must provide a check ID or name"));
    }
    let status = if def.status.is_empty() {
        CRITICAL.to_string()
    } else {
        def.status
    };
    if ![PASSING, WARNING, CRITICAL, MAINTENANCE].contains(&status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid check status: '{status}'"
        )));
    }
    Ok(HealthCheck {
        node: node.to_string(),
        name: if def.name.is_empty() {
            check_id.clone()
        } else {
            def.name
        },
        check_id,
        status,
        notes: def.notes,
        output: def.output,
        service_id: def.service_id,
        service_name: def.service_name,
        service_tags: def.service_tags,
        kind: def.kind,
        interval: def.interval,
        timeout: def.timeout,
        definition: def
            .definition
            .unwrap_or_else(|| Value::Object(Default::default())),
        create_index: 0,
        modify_index: 0,
    })
}

/// Validates a register body and fills Consul's defaults. Pure, so it is unit-tested.
pub fn registration_from(req: RegisterRequest, datacenter: &str) -> Result<Registration, ApiError> {
    if req.node.is_empty() {
        return Err(ApiError::bad_request("Must provide node"));
    }
    if req.address.is_empty() && !req.skip_node_update {
        return Err(ApiError::bad_request(
            "Must provide address if SkipNodeUpdate is not set",
        ));
    }
    if !req.id.is_empty() && uuid::Uuid::parse_str(&req.id).is_err() {
        return Err(ApiError::bad_request(format!(
            "Bad node ID '{}': must be a UUID",
            req.id
        )));
    }
    if !req.datacenter.is_empty() && req.datacenter != datacenter {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No path to datacenter",
        ));
    }
    let service = match req.service {
        None => None,
        Some(s) => {
            if s.service.is_empty() {
                return Err(ApiError::bad_request(
                    "Must provide service name (Service.Service)",
                ));
            }
            let weights = s.weights.unwrap_or_default();
            if weights.passing < 1 {
                return Err(ApiError::bad_request("Passing must be greater than 0"));
            }
            Some(AgentService {
                kind: s.kind,
                id: if s.id.is_empty() {
                    s.service.clone()
                } else {
                    s.id
                },
                service: s.service,
                tags: s.tags,
                meta: s.meta,
                port: s.port,
                address: s.address,
                tagged_addresses: s.tagged_addresses,
                weights,
                enable_tag_override: s.enable_tag_override,
                proxy: s.proxy,
                connect: s.connect,
                locality: s.locality,
                create_index: 0,
                modify_index: 0,
            })
        }
    };
    let mut checks = Vec::new();
    for def in req.check.into_iter().chain(req.checks) {
        checks.push(check_from(def, &req.node)?);
    }
    Ok(Registration {
        node: Node {
            id: req.id,
            node: req.node,
            address: req.address,
            datacenter: datacenter.to_string(),
            tagged_addresses: req.tagged_addresses,
            meta: req.node_meta,
            locality: req.locality,
            create_index: 0,
            modify_index: 0,
        },
        skip_node_update: req.skip_node_update,
        service,
        checks,
    })
}

/// What a registration needs: node write unless the node is left alone, service write on the
/// service, and write on what each check belongs to.
fn vet_registration(
    acl: &Identity,
    st: &crate::state::State,
    reg: &Registration,
) -> Result<(), ApiError> {
    let node = &reg.node.node;
    let node_unchanged = st.catalog.get(node).is_some_and(|r| {
        reg.skip_node_update || (r.node.address == reg.node.address && r.node.meta == reg.node.meta)
    });
    if !node_unchanged {
        acl.check(Resource::Node, node, Access::Write)?;
    }
    if let Some(svc) = &reg.service {
        acl.check(Resource::Service, &svc.service, Access::Write)?;
    }
    for c in &reg.checks {
        if c.service_id.is_empty() {
            acl.check(Resource::Node, node, Access::Write)?;
        } else {
            let name = reg
                .service
                .as_ref()
                .filter(|s| s.id == c.service_id)
                .map(|s| s.service.clone())
                .or_else(|| {
                    st.catalog
                        .get(node)
                        .and_then(|r| r.services.get(&c.service_id))
                        .map(|s| s.service.clone())
                })
                .unwrap_or_default();
            acl.check(Resource::Service, &name, Access::Write)?;
        }
    }
    Ok(())
}

/// Whether a row about `service` on `node` is visible to the token.
pub fn visible(acl: &Identity, node: &str, service: &str) -> bool {
    acl.can(Resource::Node, node, Access::Read)
        && (service.is_empty() || acl.can(Resource::Service, service, Access::Read))
}

pub async fn register(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: RegisterRequest = decode_body(&body)?;
    let reg = registration_from(req, &node.cfg.datacenter)?;
    {
        let st = node.store.read();
        st.check_registration(&reg).map_err(ApiError::bad_request)?;
        vet_registration(&acl, &st, &reg)?;
    }
    write(&node, Command::Catalog(CatalogOp::Register(Box::new(reg)))).await?;
    Ok(json(&true))
}

pub async fn deregister(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: DeregisterRequest = decode_body(&body)?;
    if req.node.is_empty() {
        return Err(ApiError::bad_request("Must provide node"));
    }
    if !req.datacenter.is_empty() && req.datacenter != node.cfg.datacenter {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No path to datacenter",
        ));
    }
    {
        let st = node.store.read();
        let rec = st.catalog.get(&req.node);
        let service_of = |sid: &str| {
            rec.and_then(|r| r.services.get(sid))
                .map(|s| s.service.clone())
                .unwrap_or_default()
        };
        if !req.service_id.is_empty() {
            acl.check(
                Resource::Service,
                &service_of(&req.service_id),
                Access::Write,
            )?;
        } else if !req.check_id.is_empty() {
            let sid = rec
                .and_then(|r| r.checks.get(&req.check_id))
                .map(|c| c.service_id.clone())
                .unwrap_or_default();
            if sid.is_empty() {
                acl.check(Resource::Node, &req.node, Access::Write)?;
            } else {
                acl.check(Resource::Service, &service_of(&sid), Access::Write)?;
            }
        } else {
            acl.check(Resource::Node, &req.node, Access::Write)?;
        }
    }
    let op = CatalogOp::Deregister {
        node: req.node,
        service_id: (!req.service_id.is_empty()).then_some(req.service_id),
        check_id: (!req.check_id.is_empty()).then_some(req.check_id),
    };
    write(&node, Command::Catalog(op)).await?;
    Ok(json(&true))
}

pub async fn datacenters(State(node): State<Arc<Server>>) -> Response {
    json(std::slice::from_ref(&node.cfg.datacenter))
}

/// `?node-meta=key:value` (repeatable in Consul; the last one counts here).
fn node_meta_matches(q: &Query, n: &Node) -> bool {
    match q.value("node-meta").and_then(|m| m.split_once(':')) {
        Some((k, v)) => n.meta.get(k).is_some_and(|x| x == v),
        None => true,
    }
}

pub async fn nodes(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    let (idx, mut list) = read(&node, &opts, WatchTarget::Table(Table::Nodes), |s| {
        let list: Vec<Node> = s
            .catalog
            .values()
            .map(|r| r.node.clone())
            .filter(|n| node_meta_matches(&q, n))
            .collect();
        (s.max_index(&[Table::Nodes]), list)
    })
    .await?;
    let before = list.len();
    list.retain(|n| acl.can(Resource::Node, &n.node, Access::Read));
    let cut = list.len() < before;
    retain(filter.as_ref(), &mut list);
    Ok(with_meta(
        &node,
        opts.mode,
        idx,
        filtered_by_acls(json(&list), cut),
    ))
}

pub async fn services(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    let (idx, map) = read(&node, &opts, WatchTarget::Table(Table::Services), |s| {
        let map = match &filter {
            None => s.service_tags(),
            // A filter applies to each instance (as a catalog/service row); the names and
            // tags of the instances that match are what is listed.
            Some(f) => {
                let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for rec in s.catalog.values() {
                    for svc in rec.services.values() {
                        if f.matches_row(&catalog_row(&rec.node, svc)) {
                            out.entry(svc.service.clone())
                                .or_default()
                                .extend(svc.tags.iter().cloned());
                        }
                    }
                }
                out
            }
        };
        (s.max_index(&[Table::Services]), map)
    })
    .await?;
    let mut map = map;
    let before = map.len();
    map.retain(|name, _| acl.can(Resource::Service, name, Access::Read));
    let cut = map.len() < before;
    Ok(with_meta(
        &node,
        opts.mode,
        idx,
        filtered_by_acls(json(&map), cut),
    ))
}

pub fn catalog_row(n: &Node, s: &AgentService) -> CatalogService {
    CatalogService {
        id: n.id.clone(),
        node: n.node.clone(),
        address: n.address.clone(),
        datacenter: n.datacenter.clone(),
        tagged_addresses: n.tagged_addresses.clone(),
        node_meta: n.meta.clone(),
        service_kind: s.kind.clone(),
        service_id: s.id.clone(),
        service_name: s.service.clone(),
        service_tags: s.tags.clone(),
        service_address: s.address.clone(),
        service_tagged_addresses: s.tagged_addresses.clone(),
        service_weights: s.weights,
        service_meta: s.meta.clone(),
        service_port: s.port,
        service_enable_tag_override: s.enable_tag_override,
        service_proxy: s.proxy.clone(),
        service_connect: s.connect.clone(),
        create_index: s.create_index,
        modify_index: s.modify_index,
    }
}

pub async fn service(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let tag = q.value("tag").map(str::to_string);
    let filter = q.filter()?;
    let (idx, mut rows) = read(&node, &opts, WatchTarget::Service(name.clone()), |s| {
        let rows: Vec<CatalogService> = s
            .service_instances(&name)
            .into_iter()
            // Berth has no cluster peering: no instance was imported from any peer.
            .filter(|_| q.value("peer").is_none())
            .filter(|(n, svc)| {
                node_meta_matches(&q, n) && tag.as_ref().is_none_or(|t| svc.tags.contains(t))
            })
            .map(|(n, svc)| catalog_row(n, svc))
            .collect();
        (s.service_read_index(&name), rows)
    })
    .await?;
    let before = rows.len();
    rows.retain(|r| visible(&acl, &r.node, &r.service_name));
    let cut = rows.len() < before;
    retain(filter.as_ref(), &mut rows);
    let rows = filtered_by_acls(json(&rows), cut);
    Ok(with_meta(&node, opts.mode, idx, rows))
}

/// Proxies and native instances that carry mesh traffic for a service.
pub async fn connect(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    let (idx, mut rows) = read(&node, &opts, WatchTarget::Table(Table::Services), |s| {
        let rows: Vec<CatalogService> = super::health::connect_instances(s, &name)
            .into_iter()
            .map(|(n, svc)| catalog_row(n, svc))
            .collect();
        (s.max_index(&[Table::Services, Table::Nodes]), rows)
    })
    .await?;
    let before = rows.len();
    rows.retain(|r| visible(&acl, &r.node, &r.service_name));
    let cut = rows.len() < before;
    retain(filter.as_ref(), &mut rows);
    let rows = filtered_by_acls(json(&rows), cut);
    Ok(with_meta(&node, opts.mode, idx, rows))
}

async fn node_view(
    node: Arc<Server>,
    acl: Arc<Identity>,
    name: String,
    raw: Option<String>,
    as_map: bool,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    let (idx, found) = read(&node, &opts, WatchTarget::Node(name.clone()), |s| {
        let found = s
            .catalog
            .get(&name)
            .filter(|_| acl.can(Resource::Node, &name, Access::Read))
            .map(|r| {
                // The filter applies to each service of the node, not to the node itself.
                let kept = r
                    .services
                    .iter()
                    .filter(|(_, svc)| acl.can(Resource::Service, &svc.service, Access::Read))
                    .filter(|(_, svc)| filter.as_ref().is_none_or(|f| f.matches_row(svc)));
                let services: Value = if as_map {
                    serde_json::to_value(kept.collect::<BTreeMap<_, _>>()).unwrap_or(Value::Null)
                } else {
                    serde_json::to_value(kept.map(|(_, v)| v).collect::<Vec<_>>())
                        .unwrap_or(Value::Null)
                };
                serde_json::json!({ "Node": r.node, "Services": services })
            });
        (s.max_index(&[Table::Nodes, Table::Services]), found)
    })
    .await?;
    Ok(match found {
        Some(v) => with_meta(&node, opts.mode, idx, json(&v)),
        None => with_meta(
            &node,
            opts.mode,
            idx,
            (StatusCode::NOT_FOUND, json(&Value::Null)).into_response(),
        ),
    })
}

pub async fn node(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    node_view(node, acl, name, raw, true).await
}

pub async fn node_services(
    State(node): State<Arc<Server>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    node_view(node, acl, name, raw, false).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::catalog::Weights;
    use serde_json::json;

    fn reg(v: Value) -> Result<Registration, ApiError> {
        let req: RegisterRequest = decode_body(v.to_string().as_bytes())?;
        registration_from(req, "dc1")
    }

    #[test]
    fn defaults_follow_consul() {
        let r = reg(json!({
            "node": "n1", "address": "10.0.0.1",
            "service": {"service": "web", "port": 80},
            "check": {"name": "web alive", "serviceid": "web"}
        }))
        .unwrap();
        let s = r.service.unwrap();
        assert_eq!(
            (s.id.as_str(), s.weights),
            (
                "web",
                Weights {
                    passing: 1,
                    warning: 1
                }
            )
        );
        assert_eq!(r.checks[0].check_id, "web alive");
        assert_eq!(r.checks[0].status, "critical");
        assert_eq!(r.node.datacenter, "dc1");
    }

    #[test]
    fn bad_registrations_are_400s_naming_the_problem() {
        for (body, needle) in [
            (json!({"Address": "1.2.3.4"}), "Must provide node"),
            (json!({"Node": "n"}), "Must provide address"),
            (
                json!({"Node": "n", "Address": "a", "ID": "nope"}),
                "Bad node ID",
            ),
            (
                json!({"Node": "n", "Address": "a", "Service": {"Port": 1}}),
                "service name",
            ),
            (
                json!({"Node": "n", "Address": "a", "Check": {"Name": "c", "Status": "sleepy"}}),
                "Invalid check status",
            ),
            (
                json!({"Node": "n", "Address": "a", "Service": {"Service": "s", "Port": "eighty"}}),
                "Service.Port",
            ),
            (
                json!({"Node": "n", "Address": "a", "Servise": {}}),
                "Servise",
            ),
        ] {
            let e = reg(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
    }
}
