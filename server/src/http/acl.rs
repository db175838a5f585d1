//! `/v1/acl`: bootstrap, tokens, policies, roles, auth methods, binding rules, templated
//! policies, login and logout. Every endpoint needs `acl:read` or `acl:write` (even with
//! `default_policy = "allow"`), except `token/self`, login and logout.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use berth_acl::{
    ANONYMOUS_ACCESSOR, Access, GLOBAL_MANAGEMENT_ID, Identity, Resource, parse_rules,
    template_rules, templates,
};
use berth_api::acl::{
    AuthMethod, BindingRule, Link, LoginRequest, Policy, Role, TemplatedPolicy, Token, TokenRequest,
};

use super::{ApiError, Query, decode_body, json};
use crate::acl::{now_ms, parse_rfc3339, rfc3339};
use crate::node::{Node, WriteError};
use crate::state::Command;
use crate::state::acl::{AclOp, AclTables};

type Id = Extension<Arc<Identity>>;

const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

fn disabled() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "ACL support disabled")
}

fn denied(e: berth_acl::Denied) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, e.to_string())
}

fn acl_not_found() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "ACL not found")
}

fn need(node: &Node, id: &Identity, want: Access) -> Result<(), ApiError> {
    if !node.cfg.acl.enabled {
        return Err(disabled());
    }
    id.check(Resource::Acl, "", want).map_err(denied)
}

/// Writes an ACL change; a refusal by the state is the client's fault (400), or a 403 when
/// Consul says "Permission denied".
async fn apply(node: &Node, op: AclOp) -> Result<(), ApiError> {
    match tokio::time::timeout(Duration::from_secs(30), node.write(Command::Acl(op))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(WriteError::Rejected(m))) if m.starts_with("Permission denied") => {
            Err(ApiError::new(StatusCode::FORBIDDEN, m))
        }
        Ok(Err(WriteError::Rejected(m))) => Err(ApiError::bad_request(m)),
        Ok(Err(e)) => Err(ApiError::from(e)),
        Err(_) => Err(ApiError::internal(
            "timed out waiting for the write to commit (no quorum?)",
        )),
    }
}

fn valid_uuid(what: &str, s: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(s)
        .map(|_| ())
        .map_err(|_| ApiError::bad_request(format!("{what} {s:?} is not a valid UUID")))
}

fn valid_name(what: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid {what} Name: {s:?} (1 to 128 letters, digits, '-' or '_')"
        )))
    }
}

fn resolve_links(acl: &AclTables, links: &[Link], roles: bool) -> Result<Vec<Link>, ApiError> {
    let mut out: Vec<Link> = Vec::new();
    for l in links {
        let found = if roles {
            acl.roles
                .get(&l.id)
                .or_else(|| acl.role_by_name(&l.name))
                .map(|r| Link {
                    id: r.id.clone(),
                    name: r.name.clone(),
                })
        } else {
            acl.policies
                .get(&l.id)
                .or_else(|| acl.policy_by_name(&l.name))
                .map(|p| Link {
                    id: p.id.clone(),
                    name: p.name.clone(),
                })
        };
        let Some(found) = found else {
            let what = if roles { "role" } else { "policy" };
            let key = if l.id.is_empty() { &l.name } else { &l.id };
            return Err(ApiError::bad_request(format!("cannot find {what} {key:?}")));
        };
        if !out.iter().any(|o| o.id == found.id) {
            out.push(found);
        }
    }
    Ok(out)
}

/// Template variables as Consul stores them: lower-case `name`.
fn normalize_templates(list: &[TemplatedPolicy]) -> Result<Vec<TemplatedPolicy>, ApiError> {
    list.iter()
        .map(|tp| {
            let vars = tp.template_variables.clone().unwrap_or_else(|| json!({}));
            template_rules(&tp.template_name, &vars)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let name = vars
                .as_object()
                .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("name")))
                .map(|(_, v)| v.clone());
            Ok(TemplatedPolicy {
                template_name: tp.template_name.clone(),
                template_variables: name.map(|n| json!({ "name": n })),
                datacenters: tp.datacenters.clone(),
            })
        })
        .collect()
}

fn check_identities(t: &Token) -> Result<(), ApiError> {
    for s in &t.service_identities {
        if s.service_name.is_empty() {
            return Err(ApiError::bad_request(
                "Service identity is missing the service name field",
            ));
        }
        if t.local && !s.datacenters.is_empty() {
            return Err(ApiError::bad_request(
                "Service identity cannot specify a list of datacenters on a local token",
            ));
        }
    }
    for n in &t.node_identities {
        if n.node_name.is_empty() || n.datacenter.is_empty() {
            return Err(ApiError::bad_request(
                "Node identity needs both NodeName and Datacenter",
            ));
        }
    }
    Ok(())
}

/// Fills in and validates a token from a create or update request.
fn prepare_token(
    node: &Node,
    req: TokenRequest,
    existing: Option<&Token>,
) -> Result<Token, ApiError> {
    let st = node.store.read();
    let mut t = req.token;
    match existing {
        Some(old) => {
            if !t.secret_id.is_empty() && t.secret_id != old.secret_id {
                return Err(ApiError::bad_request(
                    "Changing a token's SecretID is not permitted",
                ));
            }
            t.secret_id = old.secret_id.clone();
            t.auth_method = old.auth_method.clone();
            t.create_time = old.create_time.clone();
            if t.expiration_time.is_some() && t.expiration_time != old.expiration_time
                || req.expiration_ttl.0.is_some()
            {
                return Err(ApiError::bad_request(
                    "Cannot change expiration time of a token",
                ));
            }
            t.expiration_time = old.expiration_time.clone();
        }
        None => {
            if t.accessor_id.is_empty() {
                t.accessor_id = uuid::Uuid::new_v4().to_string();
            } else {
                valid_uuid("AccessorID", &t.accessor_id)?;
                if st.acl.tokens.contains_key(&t.accessor_id) {
                    return Err(ApiError::bad_request(
                        "Invalid Token: AccessorID is already in use",
                    ));
                }
            }
            if t.secret_id.is_empty() {
                t.secret_id = uuid::Uuid::new_v4().to_string();
            } else {
                valid_uuid("SecretID", &t.secret_id)?;
                if st.acl.token_by_secret(&t.secret_id).is_some() {
                    return Err(ApiError::bad_request(
                        "Invalid Token: SecretID is already in use",
                    ));
                }
            }
            t.auth_method.clear();
            let now = now_ms();
            t.create_time = rfc3339(now);
            t.expiration_time = match (req.expiration_ttl.0, t.expiration_time.take()) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        "Expiration TTL and Expiration Time cannot both be set",
                    ));
                }
                (Some(ttl), None) => {
                    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
                        return Err(ApiError::bad_request(
                            "Invalid Token: ExpirationTTL must be between 1m0s and 24h0m0s",
                        ));
                    }
                    Some(rfc3339(now + ttl.as_millis() as u64))
                }
                (None, Some(at)) => {
                    let ms = parse_rfc3339(&at).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Invalid Token: ExpirationTime {at:?} is not RFC 3339"
                        ))
                    })?;
                    if ms < now + MIN_TTL.as_millis() as u64
                        || ms > now + MAX_TTL.as_millis() as u64
                    {
                        return Err(ApiError::bad_request(
                            "Invalid Token: ExpirationTime must be between 1m0s and 24h0m0s from now",
                        ));
                    }
                    Some(rfc3339(ms))
                }
                (None, None) => None,
            };
        }
    }
    t.policies = resolve_links(&st.acl, &t.policies, false)?;
    t.roles = resolve_links(&st.acl, &t.roles, true)?;
    t.templated_policies = normalize_templates(&t.templated_policies)?;
    check_identities(&t)?;
    t.create_index = 0;
    t.modify_index = 0;
    Ok(t)
}

pub async fn bootstrap(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    if !node.cfg.acl.enabled {
        return Err(disabled());
    }
    let t = Token {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_id: uuid::Uuid::new_v4().to_string(),
        description: "Bootstrap Token (Global Management)".into(),
        policies: vec![Link {
            id: GLOBAL_MANAGEMENT_ID.into(),
            name: berth_acl::GLOBAL_MANAGEMENT_NAME.into(),
        }],
        create_time: rfc3339(now_ms()),
        ..Default::default()
    };
    let accessor = t.accessor_id.clone();
    apply(&node, AclOp::Bootstrap(t)).await?;
    token_reply(&node, &accessor)
}

fn token_reply(node: &Node, accessor: &str) -> Result<Response, ApiError> {
    let st = node.store.read();
    st.acl
        .tokens
        .get(accessor)
        .map(json)
        .ok_or_else(acl_not_found)
}

pub async fn token_create(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    let req: TokenRequest = decode_body(&body)?;
    let t = prepare_token(&node, req, None)?;
    let accessor = t.accessor_id.clone();
    apply(&node, AclOp::SetToken(t)).await?;
    token_reply(&node, &accessor)
}

pub async fn token_read(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(accessor): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    valid_uuid("AccessorID", &accessor)?;
    token_reply(&node, &accessor)
}

pub async fn token_self(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
) -> Result<Response, ApiError> {
    if !node.cfg.acl.enabled {
        return Err(disabled());
    }
    token_reply(&node, &id.accessor_id)
}

pub async fn token_update(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(accessor): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("AccessorID", &accessor)?;
    let mut req: TokenRequest = decode_body(&body)?;
    if !req.token.accessor_id.is_empty() && req.token.accessor_id != accessor {
        return Err(ApiError::bad_request(
            "AccessorID in the body does not match the URL",
        ));
    }
    req.token.accessor_id = accessor.clone();
    let existing = node.store.read().acl.tokens.get(&accessor).cloned();
    let existing = existing.ok_or_else(acl_not_found)?;
    let t = prepare_token(&node, req, Some(&existing))?;
    apply(&node, AclOp::SetToken(t)).await?;
    token_reply(&node, &accessor)
}

pub async fn token_clone(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(accessor): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("AccessorID", &accessor)?;
    let req: TokenRequest = decode_body(&body)?;
    let original = node.store.read().acl.tokens.get(&accessor).cloned();
    let original = original.ok_or_else(acl_not_found)?;
    if !original.auth_method.is_empty() {
        return Err(ApiError::bad_request(
            "Cannot clone a token created from an auth method",
        ));
    }
    let t = Token {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_id: uuid::Uuid::new_v4().to_string(),
        description: if req.token.description.is_empty() {
            original.description.clone()
        } else {
            req.token.description
        },
        create_time: rfc3339(now_ms()),
        create_index: 0,
        modify_index: 0,
        ..original
    };
    let new_id = t.accessor_id.clone();
    apply(&node, AclOp::SetToken(t)).await?;
    token_reply(&node, &new_id)
}

pub async fn token_delete(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(accessor): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("AccessorID", &accessor)?;
    if accessor == ANONYMOUS_ACCESSOR {
        return Err(ApiError::bad_request(
            "Delete operation not permitted on the anonymous token",
        ));
    }
    if accessor == id.accessor_id {
        return Err(ApiError::bad_request(
            "Deletion of the request's authorization token is not permitted",
        ));
    }
    apply(&node, AclOp::DeleteToken(accessor)).await?;
    Ok(json(&true))
}

pub async fn token_list(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    let q = Query::parse(raw.as_deref());
    let st = node.store.read();
    let list: Vec<&Token> = st
        .acl
        .tokens
        .values()
        .filter(|t| {
            q.value("policy")
                .is_none_or(|p| t.policies.iter().any(|l| l.id == p))
        })
        .filter(|t| {
            q.value("role")
                .is_none_or(|r| t.roles.iter().any(|l| l.id == r))
        })
        .filter(|t| q.value("authmethod").is_none_or(|m| t.auth_method == m))
        .filter(|t| {
            q.value("servicename")
                .is_none_or(|s| t.service_identities.iter().any(|i| i.service_name == s))
        })
        .collect();
    Ok(json(&list))
}

fn check_policy_rules(p: &Policy) -> Result<(), ApiError> {
    parse_rules(&p.rules)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("Invalid Policy: {e}")))
}

async fn policy_set(
    node: &Node,
    mut p: Policy,
    existing: Option<&Policy>,
) -> Result<Response, ApiError> {
    valid_name("Policy", &p.name)?;
    check_policy_rules(&p)?;
    if let Some(old) = existing
        && old.id == GLOBAL_MANAGEMENT_ID
        && (old.rules != p.rules || !p.datacenters.is_empty())
    {
        return Err(ApiError::bad_request(
            "Changing the Rules for the builtin global-management policy is not permitted",
        ));
    }
    p.create_index = 0;
    p.modify_index = 0;
    let id = p.id.clone();
    apply(node, AclOp::SetPolicy(p)).await?;
    let st = node.store.read();
    Ok(json(&st.acl.policies.get(&id)))
}

pub async fn policy_create(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    let mut p: Policy = decode_body(&body)?;
    if !p.id.is_empty() {
        return Err(ApiError::bad_request(
            "Cannot specify an ID when creating a policy",
        ));
    }
    p.id = uuid::Uuid::new_v4().to_string();
    policy_set(&node, p, None).await
}

pub async fn policy_update(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(pid): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("Policy ID", &pid)?;
    let mut p: Policy = decode_body(&body)?;
    p.id = pid.clone();
    let existing = node.store.read().acl.policies.get(&pid).cloned();
    let existing =
        existing.ok_or_else(|| ApiError::bad_request(format!("Cannot find policy {pid:?}")))?;
    policy_set(&node, p, Some(&existing)).await
}

fn found_or_404<T: serde::Serialize>(v: Option<&T>) -> Response {
    match v {
        Some(v) => json(v),
        None => {
            let mut r = json(&Value::Null);
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

pub async fn policy_read(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(pid): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    valid_uuid("Policy ID", &pid)?;
    Ok(found_or_404(node.store.read().acl.policies.get(&pid)))
}

pub async fn policy_read_by_name(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    Ok(found_or_404(node.store.read().acl.policy_by_name(&name)))
}

pub async fn policy_delete(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(pid): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("Policy ID", &pid)?;
    if pid == GLOBAL_MANAGEMENT_ID {
        return Err(ApiError::bad_request(
            "Delete operation not permitted on the builtin global-management policy",
        ));
    }
    apply(&node, AclOp::DeletePolicy(pid)).await?;
    Ok(json(&true))
}

pub async fn policy_list(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    let st = node.store.read();
    Ok(json(&st.acl.policies.values().collect::<Vec<_>>()))
}

async fn role_set(node: &Node, mut r: Role) -> Result<Response, ApiError> {
    valid_name("Role", &r.name)?;
    {
        let st = node.store.read();
        r.policies = resolve_links(&st.acl, &r.policies, false)?;
    }
    r.templated_policies = normalize_templates(&r.templated_policies)?;
    for n in &r.node_identities {
        if n.node_name.is_empty() || n.datacenter.is_empty() {
            return Err(ApiError::bad_request(
                "Node identity needs both NodeName and Datacenter",
            ));
        }
    }
    if r.service_identities
        .iter()
        .any(|s| s.service_name.is_empty())
    {
        return Err(ApiError::bad_request(
            "Service identity is missing the service name field",
        ));
    }
    r.create_index = 0;
    r.modify_index = 0;
    let id = r.id.clone();
    apply(node, AclOp::SetRole(r)).await?;
    let st = node.store.read();
    Ok(json(&st.acl.roles.get(&id)))
}

pub async fn role_create(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    let mut r: Role = decode_body(&body)?;
    if !r.id.is_empty() {
        return Err(ApiError::bad_request(
            "Cannot specify an ID when creating a role",
        ));
    }
    r.id = uuid::Uuid::new_v4().to_string();
    role_set(&node, r).await
}

pub async fn role_update(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(rid): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("Role ID", &rid)?;
    let mut r: Role = decode_body(&body)?;
    if !node.store.read().acl.roles.contains_key(&rid) {
        return Err(ApiError::bad_request(format!("Cannot find role {rid:?}")));
    }
    r.id = rid;
    role_set(&node, r).await
}

pub async fn role_read(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(rid): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    valid_uuid("Role ID", &rid)?;
    Ok(found_or_404(node.store.read().acl.roles.get(&rid)))
}

pub async fn role_read_by_name(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    Ok(found_or_404(node.store.read().acl.role_by_name(&name)))
}

pub async fn role_delete(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(rid): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("Role ID", &rid)?;
    apply(&node, AclOp::DeleteRole(rid)).await?;
    Ok(json(&true))
}

pub async fn role_list(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    let q = Query::parse(raw.as_deref());
    let st = node.store.read();
    let list: Vec<&Role> = st
        .acl
        .roles
        .values()
        .filter(|r| {
            q.value("policy")
                .is_none_or(|p| r.policies.iter().any(|l| l.id == p))
        })
        .collect();
    Ok(json(&list))
}

/// What each method type needs in its `Config`.
fn check_method(m: &AuthMethod) -> Result<(), ApiError> {
    valid_name("Auth Method", &m.name)?;
    crate::auth::check_config(m)
        .map_err(|e| ApiError::bad_request(format!("Invalid Auth Method: {e}")))?;
    if !m.max_token_ttl.is_empty() {
        let ttl = berth_api::parse_duration(&m.max_token_ttl)
            .map_err(|e| ApiError::bad_request(format!("Invalid Auth Method: MaxTokenTTL: {e}")))?;
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(ApiError::bad_request(
                "Invalid Auth Method: MaxTokenTTL must be between 1m0s and 24h0m0s",
            ));
        }
    }
    Ok(())
}

async fn method_set(node: &Node, mut m: AuthMethod) -> Result<Response, ApiError> {
    check_method(&m)?;
    m.create_index = 0;
    m.modify_index = 0;
    let name = m.name.clone();
    apply(node, AclOp::SetMethod(m)).await?;
    let st = node.store.read();
    Ok(json(&st.acl.methods.get(&name)))
}

pub async fn method_create(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    let m: AuthMethod = decode_body(&body)?;
    if node.store.read().acl.methods.contains_key(&m.name) {
        return Err(ApiError::bad_request(format!(
            "Invalid Auth Method: a method named {:?} already exists",
            m.name
        )));
    }
    method_set(&node, m).await
}

pub async fn method_update(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    let mut m: AuthMethod = decode_body(&body)?;
    let old = node.store.read().acl.methods.get(&name).cloned();
    let old =
        old.ok_or_else(|| ApiError::bad_request(format!("Cannot find auth method {name:?}")))?;
    if !m.name.is_empty() && m.name != name {
        return Err(ApiError::bad_request(
            "Auth method name in the body does not match the URL",
        ));
    }
    m.name = name;
    if m.kind.is_empty() {
        m.kind = old.kind.clone();
    }
    if m.kind != old.kind {
        return Err(ApiError::bad_request(
            "Cannot change the Type of an auth method",
        ));
    }
    method_set(&node, m).await
}

pub async fn method_read(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    Ok(found_or_404(node.store.read().acl.methods.get(&name)))
}

pub async fn method_delete(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    apply(&node, AclOp::DeleteMethod(name)).await?;
    Ok(json(&true))
}

pub async fn method_list(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    let st = node.store.read();
    Ok(json(&st.acl.methods.values().collect::<Vec<_>>()))
}

async fn rule_set(node: &Node, mut r: BindingRule) -> Result<Response, ApiError> {
    if !node.store.read().acl.methods.contains_key(&r.auth_method) {
        return Err(ApiError::bad_request(format!(
            "Invalid Binding Rule: unknown auth method {:?}",
            r.auth_method
        )));
    }
    if !["service", "node", "role", "policy", "templated-policy"].contains(&r.bind_type.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid Binding Rule: BindType {:?} (service, node, role, policy or templated-policy)",
            r.bind_type
        )));
    }
    if r.bind_name.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid Binding Rule: no BindName is set",
        ));
    }
    if !r.selector.trim().is_empty() {
        berth_api::filter::Filter::parse(&r.selector).map_err(|e| {
            ApiError::bad_request(format!("Invalid Binding Rule: invalid Selector: {e}"))
        })?;
    }
    r.create_index = 0;
    r.modify_index = 0;
    let id = r.id.clone();
    apply(node, AclOp::SetBindingRule(r)).await?;
    let st = node.store.read();
    Ok(json(&st.acl.binding_rules.get(&id)))
}

pub async fn rule_create(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    let mut r: BindingRule = decode_body(&body)?;
    if !r.id.is_empty() {
        return Err(ApiError::bad_request(
            "Cannot specify an ID when creating a binding rule",
        ));
    }
    r.id = uuid::Uuid::new_v4().to_string();
    rule_set(&node, r).await
}

pub async fn rule_update(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(rid): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("Binding Rule ID", &rid)?;
    let mut r: BindingRule = decode_body(&body)?;
    if !node.store.read().acl.binding_rules.contains_key(&rid) {
        return Err(ApiError::bad_request(format!(
            "Cannot find binding rule {rid:?}"
        )));
    }
    r.id = rid;
    rule_set(&node, r).await
}

pub async fn rule_read(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(rid): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    valid_uuid("Binding Rule ID", &rid)?;
    Ok(found_or_404(node.store.read().acl.binding_rules.get(&rid)))
}

pub async fn rule_delete(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(rid): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Write)?;
    valid_uuid("Binding Rule ID", &rid)?;
    apply(&node, AclOp::DeleteBindingRule(rid)).await?;
    Ok(json(&true))
}

pub async fn rule_list(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    let q = Query::parse(raw.as_deref());
    let st = node.store.read();
    let list: Vec<&BindingRule> = st
        .acl
        .binding_rules
        .values()
        .filter(|r| q.value("authmethod").is_none_or(|m| r.auth_method == m))
        .collect();
    Ok(json(&list))
}

pub async fn templated_list(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    Ok(json(&templates()))
}

pub async fn templated_read(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    // The name may arrive with its slash encoded.
    let name = name.replace("%2F", "/").replace("%2f", "/");
    let all = templates();
    match all.get(&name) {
        Some(t) => Ok(json(t)),
        None => Err(ApiError::not_found(format!(
            "Invalid templated policy Name: {name:?}"
        ))),
    }
}

pub async fn templated_preview(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    need(&node, &id, Access::Read)?;
    let name = name.replace("%2F", "/").replace("%2f", "/");
    let vars: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?
    };
    let (_, rules) =
        template_rules(&name, &vars).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let synthetic = uuid::Uuid::new_v4().simple().to_string();
    Ok(json(&json!({
        "ID": uuid::Uuid::new_v4().to_string(),
        "Name": format!("synthetic-policy-{}", &synthetic[..16]),
        "Description": format!("synthetic policy generated from templated policy: {name}"),
        "Rules": rules,
    })))
}

fn login_error(e: crate::auth::LoginError) -> ApiError {
    use crate::auth::LoginError;
    match e {
        LoginError::Denied(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
        LoginError::BadConfig(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        LoginError::Upstream { .. } => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// `PUT /v1/acl/login`: the method's validator proves who the caller is, the binding rules
/// say what that is worth, and the answer is a new token made by the method.
pub async fn login(State(node): State<Arc<Node>>, body: Bytes) -> Result<Response, ApiError> {
    if !node.cfg.acl.enabled {
        return Err(disabled());
    }
    let req: LoginRequest = decode_body(&body)?;
    if req.auth_method.is_empty() {
        return Err(ApiError::bad_request("Missing auth method name"));
    }
    if req.bearer_token.is_empty() {
        return Err(ApiError::bad_request("Missing auth method bearer token"));
    }
    let method = node.store.read().acl.methods.get(&req.auth_method).cloned();
    let Some(method) = method else {
        return Err(acl_not_found());
    };
    let seen = |sig: &str| {
        let now = now_ms();
        node.store
            .read()
            .acl
            .login_replays
            .get(sig)
            .is_some_and(|until| *until > now)
    };
    let verified = crate::auth::validate(&method, &req.bearer_token, &seen, crate::auth::http())
        .await
        .map_err(login_error)?;
    let now = now_ms();
    let bindings = {
        let st = node.store.read();
        crate::auth::bind(&st.acl, &method.name, &verified, &node.cfg.datacenter)
    };
    if bindings.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Permission denied: no binding rule of the auth method matched the caller",
        ));
    }
    let mut description = "token created via login".to_string();
    if !req.meta.is_empty() {
        let meta = serde_json::to_string(&req.meta)
            .map_err(|e| ApiError::bad_request(format!("Meta: {e}")))?;
        description.push_str(": ");
        description.push_str(&meta);
    }
    let expiration_time = if method.max_token_ttl.is_empty() {
        None
    } else {
        let ttl = berth_api::parse_duration(&method.max_token_ttl).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("auth method MaxTokenTTL: {e}"),
            )
        })?;
        Some(rfc3339(now + ttl.as_millis() as u64))
    };
    let t = Token {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_id: uuid::Uuid::new_v4().to_string(),
        description,
        policies: bindings.policies,
        roles: bindings.roles,
        service_identities: bindings.service_identities,
        node_identities: bindings.node_identities,
        templated_policies: bindings.templated_policies,
        local: method.token_locality != "global",
        auth_method: method.name.clone(),
        expiration_time,
        create_time: rfc3339(now),
        ..Default::default()
    };
    let accessor = t.accessor_id.clone();
    apply(
        &node,
        AclOp::Login {
            token: t,
            replay: verified.replay_key,
            now_ms: now,
        },
    )
    .await?;
    token_reply(&node, &accessor)
}

pub async fn logout(
    State(node): State<Arc<Node>>,
    Extension(id): Id,
) -> Result<Response, ApiError> {
    if !node.cfg.acl.enabled {
        return Err(disabled());
    }
    let token = node.store.read().acl.tokens.get(&id.accessor_id).cloned();
    let token = token.ok_or_else(acl_not_found)?;
    if token.auth_method.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Permission denied: token wasn't created via login",
        ));
    }
    apply(&node, AclOp::DeleteToken(token.accessor_id)).await?;
    Ok(json(&true))
}
