//! The `/v1/agent` routes for services, checks, maintenance and metrics. A host (server or
//! client agent) merges this router into its own, next to its `agent/self` and `members`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::Value;

use berth_api::agent::{CheckRegistration, CheckUpdate, ServiceRegistration};
use berth_api::catalog::{CRITICAL, MAINTENANCE, PASSING, WARNING};

use berth_acl::{Access, Identity, Resource};

use crate::http_util::{ApiError, Id, Query, decode_body, filtered_by_acls, json};
use crate::local::RegisterError;
use crate::{Agent, checks};

/// How long a write to the agent waits for the catalog to carry it before answering anyway.
const SYNC_WAIT: Duration = Duration::from_secs(2);

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{id}", get(service))
        .route("/v1/agent/checks", get(list_checks))
        .route("/v1/agent/service/register", put(register_service))
        .route("/v1/agent/service/deregister/{id}", put(deregister_service))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(service_maintenance),
        )
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{id}", put(deregister_check))
        .route(
            "/v1/agent/check/pass/{id}",
            put(|State(a), axum::Extension(acl), Path(id), RawQuery(q)| {
                check_mark(a, acl, id, q, PASSING)
            }),
        )
        .route(
            "/v1/agent/check/warn/{id}",
            put(|State(a), axum::Extension(acl), Path(id), RawQuery(q)| {
                check_mark(a, acl, id, q, WARNING)
            }),
        )
        .route(
            "/v1/agent/check/fail/{id}",
            put(|State(a), axum::Extension(acl), Path(id), RawQuery(q)| {
                check_mark(a, acl, id, q, CRITICAL)
            }),
        )
        .route("/v1/agent/check/update/{id}", put(check_update))
        .route("/v1/agent/checks/update", put(checks_update))
        .route("/v1/agent/health/service/id/{id}", get(health_by_id))
        .route("/v1/agent/health/service/name/{name}", get(health_by_name))
        .route("/v1/agent/metrics", get(metrics))
        .with_state(agent)
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Invalid(m) => ApiError::bad_request(m),
            RegisterError::NotFound(m) => ApiError::not_found(m),
        }
    }
}

/// Records a change and waits briefly for the catalog to carry it.
async fn commit(agent: &Agent) -> Response {
    let generation = agent.changed();
    if !agent.wait_synced(generation, SYNC_WAIT).await {
        tracing::debug!(
            generation,
            "agent change answered before the catalog carried it"
        );
    }
    StatusCode::OK.into_response()
}

fn service_json(agent: &Agent, svc: &berth_api::catalog::AgentService) -> Value {
    let mut v = serde_json::to_value(svc).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "Datacenter".into(),
            Value::String(agent.cfg.node.datacenter.clone()),
        );
        m.remove("CreateIndex");
        m.remove("ModifyIndex");
    }
    v
}

async fn services(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let filter = Query::parse(raw.as_deref()).filter()?;
    let st = agent.state();
    let readable = |name: &str| acl.can(Resource::Service, name, Access::Read);
    let cut = st.services.values().any(|s| !readable(&s.service.service));
    let map: BTreeMap<&String, Value> = st
        .services
        .iter()
        .filter(|(_, s)| readable(&s.service.service))
        .map(|(id, s)| (id, service_json(&agent, &s.service)))
        .filter(|(_, v)| filter.as_ref().is_none_or(|f| f.matches(v)))
        .collect();
    Ok(filtered_by_acls(json(&map), cut))
}

async fn service(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let st = agent.state();
    match st.services.get(&id) {
        Some(s) => {
            acl.check(Resource::Service, &s.service.service, Access::Read)?;
            Ok(json(&service_json(&agent, &s.service)))
        }
        None => Err(ApiError::not_found(format!("unknown service ID: {id}"))),
    }
}

/// Write on what a check belongs to: its service, or the node.
fn check_owner_write(agent: &Agent, acl: &Identity, service_name: &str) -> Result<(), ApiError> {
    if service_name.is_empty() {
        acl.check(Resource::Node, &agent.cfg.node.node, Access::Write)?;
    } else {
        acl.check(Resource::Service, service_name, Access::Write)?;
    }
    Ok(())
}

fn check_readable(agent: &Agent, acl: &Identity, service_name: &str) -> bool {
    if service_name.is_empty() {
        acl.can(Resource::Node, &agent.cfg.node.node, Access::Read)
    } else {
        acl.can(Resource::Service, service_name, Access::Read)
    }
}

/// The service name of a local service ID, for authorizing writes on it.
fn local_service_name(agent: &Agent, id: &str) -> Option<String> {
    agent
        .state()
        .services
        .get(id)
        .map(|s| s.service.service.clone())
}

/// The service name a local check belongs to ("" for node checks), if the check exists.
fn check_service_name(agent: &Agent, id: &str) -> Option<String> {
    agent
        .state()
        .checks
        .get(id)
        .map(|c| c.check.service_name.clone())
}

async fn list_checks(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let filter = Query::parse(raw.as_deref()).filter()?;
    let st = agent.state();
    let readable =
        |c: &crate::local::LocalCheck| check_readable(&agent, &acl, &c.check.service_name);
    let cut = st.checks.values().any(|c| !readable(c));
    let map: BTreeMap<&String, Value> = st
        .checks
        .iter()
        .filter(|(_, c)| readable(c))
        .map(|(id, c)| (id, serde_json::to_value(&c.check).unwrap_or(Value::Null)))
        .filter(|(_, v)| filter.as_ref().is_none_or(|f| f.matches(v)))
        .collect();
    Ok(filtered_by_acls(json(&map), cut))
}

async fn register_service(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    token: Option<axum::Extension<crate::http_util::RequestToken>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let replace = q.bool("replace-existing-checks")?.unwrap_or(false);
    let reg: ServiceRegistration = decode_body(&body)?;
    let started = {
        let mut st = agent.state();
        let new = st.build_service(reg)?;
        acl.check(Resource::Service, &new.service.service, Access::Write)?;
        if let Some(side) = &new.sidecar {
            acl.check(Resource::Service, &side.service.service, Access::Write)?;
        }
        let ids: Vec<String> = std::iter::once(new.service.id.clone())
            .chain(new.sidecar.as_ref().map(|s| s.service.id.clone()))
            .collect();
        let started = st.add_service(new, None, replace);
        if let Some(axum::Extension(crate::http_util::RequestToken(Some(t)))) = token
            && !t.is_empty()
        {
            for id in ids {
                st.tokens.insert(id, t.clone());
            }
        }
        started
    };
    for id in started {
        checks::start(&agent, &id);
    }
    Ok(commit(&agent).await)
}

async fn deregister_service(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(name) = local_service_name(&agent, &id) {
        acl.check(Resource::Service, &name, Access::Write)?;
    }
    if !agent.state().remove_service(&id) {
        return Err(ApiError::not_found(format!("Unknown service ID \"{id}\"")));
    }
    Ok(commit(&agent).await)
}

fn enable_param(q: &Query) -> Result<bool, ApiError> {
    match q.get("enable") {
        None | Some("") => Err(ApiError::bad_request("Missing value for enable")),
        Some(v) => v
            .parse::<bool>()
            .map_err(|_| ApiError::bad_request(format!("Invalid value for enable: {v:?}"))),
    }
}

async fn service_maintenance(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    if let Some(name) = local_service_name(&agent, &id) {
        acl.check(Resource::Service, &name, Access::Write)?;
    }
    let q = Query::parse(raw.as_deref());
    let enable = enable_param(&q)?;
    let reason = q.get("reason").unwrap_or_default().to_string();
    agent.state().service_maintenance(&id, enable, &reason)?;
    Ok(commit(&agent).await)
}

async fn node_maintenance(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.check(Resource::Node, &agent.cfg.node.node, Access::Write)?;
    let q = Query::parse(raw.as_deref());
    let enable = enable_param(&q)?;
    let reason = q.get("reason").unwrap_or_default().to_string();
    agent.state().node_maintenance(enable, &reason);
    Ok(commit(&agent).await)
}

async fn register_check(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    let def: CheckRegistration = decode_body(&body)?;
    if def.name.is_empty() && def.check_id.is_empty() && def.id.is_empty() {
        return Err(ApiError::bad_request("Missing check name"));
    }
    let id = {
        let mut st = agent.state();
        let (check, spec) = st.build_check(def, None, "")?;
        check_owner_write(&agent, &acl, &check.service_name)?;
        st.add_check(check, spec)
    };
    checks::start(&agent, &id);
    Ok(commit(&agent).await)
}

async fn deregister_check(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(name) = check_service_name(&agent, &id) {
        check_owner_write(&agent, &acl, &name)?;
    }
    if !agent.state().remove_check(&id) {
        return Err(ApiError::not_found(format!("Unknown check ID \"{id}\"")));
    }
    Ok(commit(&agent).await)
}

async fn ttl_update(
    agent: &Agent,
    acl: &Identity,
    id: &str,
    status: &str,
    output: String,
) -> Result<Response, ApiError> {
    if let Some(name) = check_service_name(agent, id) {
        check_owner_write(agent, acl, &name)?;
    }
    let changed = agent.state().update_ttl(id, status, output)?;
    if changed {
        Ok(commit(agent).await)
    } else {
        Ok(StatusCode::OK.into_response())
    }
}

/// `PUT /v1/agent/check/pass|warn|fail/<id>?note=`: the route fixes the status.
async fn check_mark(
    a: Arc<Agent>,
    acl: Arc<Identity>,
    id: String,
    raw: Option<String>,
    status: &'static str,
) -> Result<Response, ApiError> {
    let note = Query::parse(raw.as_deref())
        .get("note")
        .unwrap_or_default()
        .to_string();
    ttl_update(&a, &acl, &id, status, note).await
}

async fn check_update(
    State(a): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let u: CheckUpdate = decode_body(&body)?;
    if ![PASSING, WARNING, CRITICAL].contains(&u.status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid check status: \"{}\"",
            u.status
        )));
    }
    ttl_update(&a, &acl, &id, &u.status, u.output).await
}

/// `PUT /v1/agent/checks/update`: every check of the body is checked (ACL, existence, TTL
/// type, status) before any changes, so a bad entry changes nothing; one catalog sync follows.
async fn checks_update(
    State(a): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    let updates: Vec<berth_api::agent::CheckStatusUpdate> = decode_body(&body)?;
    for u in &updates {
        if ![PASSING, WARNING, CRITICAL].contains(&u.status.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Invalid check status: \"{}\" (CheckID \"{}\")",
                u.status, u.check_id
            )));
        }
        match check_service_name(&a, &u.check_id) {
            Some(name) => check_owner_write(&a, &acl, &name)?,
            None => {
                return Err(ApiError::not_found(format!(
                    "Unknown check ID \"{}\"",
                    u.check_id
                )));
            }
        }
    }
    let changed = a.state().update_ttls(
        updates
            .into_iter()
            .map(|u| (u.check_id, u.status, u.output))
            .collect(),
    )?;
    if changed {
        Ok(commit(&a).await)
    } else {
        Ok(StatusCode::OK.into_response())
    }
}

/// Consul's aggregate: maintenance beats critical beats warning beats passing.
fn aggregate<'a>(statuses: impl Iterator<Item = &'a str>) -> &'static str {
    let mut worst = PASSING;
    for s in statuses {
        worst = match (worst, s) {
            (MAINTENANCE, _) | (_, MAINTENANCE) => MAINTENANCE,
            (CRITICAL, _) | (_, CRITICAL) => CRITICAL,
            (WARNING, _) | (_, WARNING) => WARNING,
            _ => PASSING,
        };
    }
    worst
}

fn health_status(agent: &Agent, service_id: &str) -> &'static str {
    let st = agent.state();
    let maintenance = format!("{}{service_id}", crate::local::SERVICE_MAINTENANCE_PREFIX);
    aggregate(
        st.checks
            .values()
            .filter(|c| c.check.service_id == service_id || c.check.service_id.is_empty())
            .map(|c| {
                if c.check.check_id == maintenance
                    || c.check.check_id == crate::local::NODE_MAINTENANCE
                {
                    MAINTENANCE
                } else {
                    c.check.status.as_str()
                }
            }),
    )
}

fn health_code(status: &str) -> StatusCode {
    match status {
        PASSING => StatusCode::OK,
        WARNING => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn health_by_id(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(name) = local_service_name(&agent, &id) {
        acl.check(Resource::Service, &name, Access::Read)?;
    }
    let svc = agent
        .state()
        .services
        .get(&id)
        .map(|s| service_json(&agent, &s.service));
    let Some(svc) = svc else {
        return Err(ApiError::not_found(format!("ServiceId {id} not found")));
    };
    let status = health_status(&agent, &id);
    Ok((
        health_code(status),
        json(&serde_json::json!({"AggregatedStatus": status, "Service": svc, "Checks": []})),
    )
        .into_response())
}

async fn health_by_name(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    acl.check(Resource::Service, &name, Access::Read)?;
    let ids: Vec<(String, Value)> = agent
        .state()
        .services
        .values()
        .filter(|s| s.service.service == name)
        .map(|s| (s.service.id.clone(), service_json(&agent, &s.service)))
        .collect();
    if ids.is_empty() {
        return Err(ApiError::not_found(format!("ServiceName {name} Not Found")));
    }
    let rows: Vec<(&'static str, Value)> = ids
        .into_iter()
        .map(|(id, svc)| (health_status(&agent, &id), svc))
        .collect();
    let overall = aggregate(rows.iter().map(|(s, _)| *s));
    let body: Vec<Value> = rows
        .into_iter()
        .map(|(s, svc)| serde_json::json!({"AggregatedStatus": s, "Service": svc, "Checks": []}))
        .collect();
    Ok((health_code(overall), json(&body)).into_response())
}

async fn metrics(
    State(agent): State<Arc<Agent>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.check(Resource::Agent, &agent.cfg.node.node, Access::Read)?;
    let q = Query::parse(raw.as_deref());
    match q.get("format") {
        None | Some("") => Ok(json(&agent.metrics.render_json())),
        Some("prometheus") => Ok((
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            agent.metrics.render_prometheus(),
        )
            .into_response()),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid format {other:?}: use prometheus or leave it out"
        ))),
    }
}
