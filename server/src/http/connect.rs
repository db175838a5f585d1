//! `/v1/connect/ca/*`, `/v1/config/*` and `/v1/connect/intentions/*`: the mesh CA (roots,
//! configuration and rotation, CSR signing for agents), config entries and the intentions
//! view on `service-intentions` entries.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use berth_acl::{Access, Identity, Resource};
use berth_api::connect::{
    CaConfiguration, CaRoots, ConfigEntry, Intention, IssuedCert, SignRequest, SourceIntention,
};

use super::{ApiError, Id, Query, ReadOpts, decode_body, filtered_by_acls, read, with_meta, write};
use crate::acl::{now_ms, parse_rfc3339, rfc3339};
use crate::connect::{ca, intentions, parse_settings, redacted, stored_root};
use crate::node::Node;
use crate::state::connect::{CaState, ConnectOp, ConnectTables, StoredRoot};
use crate::state::watch::WatchTarget;
use crate::state::{Command, CommandResult, State as Tables, Table};

/// On `/v1/connect/intentions/match`: what applies when no intention matches.
pub const DEFAULT_INTENTION_HEADER: &str = "x-berth-default-intention";

fn denied(e: berth_acl::Denied) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, e.to_string())
}

fn no_ca() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the mesh CA is not initialized yet; retry shortly",
    )
}

fn roots_view(ca: Option<&CaState>) -> CaRoots {
    match ca {
        None => CaRoots::default(),
        Some(ca) => CaRoots {
            active_root_id: ca.active().map(|r| r.root.id.clone()).unwrap_or_default(),
            trust_domain: ca.trust_domain.clone(),
            roots: ca.roots.iter().map(|r| r.root.clone()).collect(),
        },
    }
}

/// `GET /v1/connect/ca/roots` (`?pem` for the certificates alone). Public, as in Consul: the
/// roots are what every peer must trust.
pub async fn roots(
    State(node): State<Arc<Node>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let (idx, roots) = read(&node, &opts, WatchTarget::Table(Table::ConnectCa), |s| {
        (s.index(Table::ConnectCa), roots_view(s.connect.ca.as_ref()))
    })
    .await?;
    if q.has("pem") {
        let pem: String = roots.roots.iter().map(|r| r.root_cert.clone()).collect();
        return Ok(with_meta(
            &node,
            opts.mode,
            idx,
            ([("content-type", "application/pem-certificate-chain")], pem),
        ));
    }
    Ok(with_meta(&node, opts.mode, idx, super::json(&roots)))
}

fn config_view(ca: &CaState) -> CaConfiguration {
    CaConfiguration {
        provider: ca.provider.clone(),
        cluster_id: ca.cluster_id.clone(),
        config: redacted(&ca.config),
        state: None,
        force_without_cross_signing: false,
        create_index: ca.create_index,
        modify_index: ca.modify_index,
    }
}

pub async fn config_get(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
) -> Result<Response, ApiError> {
    id.check(Resource::Operator, "", Access::Read)
        .map_err(denied)?;
    let st = node.store.read();
    let ca = st.connect.ca.as_ref().ok_or_else(no_ca)?;
    Ok(super::json(&config_view(ca)))
}

fn material_of(r: &StoredRoot) -> ca::RootMaterial {
    let signing = if r.signing_cert.is_empty() {
        r.root.root_cert.clone()
    } else {
        r.signing_cert.clone()
    };
    ca::RootMaterial {
        anchor_pem: r.root.root_cert.clone(),
        chain: Vec::new(),
        cert_pem: signing,
        key_pem: r.key_pem.clone(),
        id: r.root.id.clone(),
        serial: r.root.serial_number,
        signing_key_id: r.root.signing_key_id.clone(),
        not_before_ms: parse_rfc3339(&r.root.not_before).unwrap_or(0),
        not_after_ms: parse_rfc3339(&r.root.not_after).unwrap_or(0),
    }
}

/// `PUT /v1/connect/ca/configuration`: a new provider or new root material rotates the root;
/// the new root is cross-signed by the old one (unless `ForceWithoutCrossSigning`), and the
/// old root stays trusted until the leaves it signed have expired.
pub async fn config_put(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    id.check(Resource::Operator, "", Access::Write)
        .map_err(denied)?;
    let req: CaConfiguration = decode_body(&body)?;
    let provider = if req.provider.is_empty() {
        "berth".to_string()
    } else {
        req.provider.to_ascii_lowercase()
    };
    let settings = parse_settings(&provider, &req.config)
        .map_err(|e| ApiError::bad_request(format!("Invalid CA configuration: {e}")))?;
    let (old, old_settings, trust_domain) = {
        let st = node.store.read();
        let ca = st.connect.ca.as_ref().ok_or_else(no_ca)?;
        let active = ca.active().cloned().ok_or_else(no_ca)?;
        let old_settings = parse_settings(&ca.provider, &ca.config).ok();
        (active, old_settings, ca.trust_domain.clone())
    };
    let now = now_ms();
    // A user's material is checked even when it is the current root: a wrong key must not
    // be stored for later.
    let loaded = match &settings.material {
        Some((cert, key)) => Some(
            ca::load_root(cert, key, now)
                .map_err(|e| ApiError::bad_request(format!("Invalid CA configuration: {e}")))?,
        ),
        None => None,
    };
    let had_material = old_settings.as_ref().is_some_and(|s| s.material.is_some());
    let old_signing = if old.signing_cert.is_empty() {
        &old.root.root_cert
    } else {
        &old.signing_cert
    };
    let rotate = match &loaded {
        Some(m) => m.cert_pem.trim() != old_signing.trim(),
        // Back from a user's CA to one of Berth's own.
        None => had_material,
    };
    let new_root = if rotate {
        let m = crate::connect::make_root(&settings, &trust_domain, now)
            .map_err(|e| ApiError::bad_request(format!("Invalid CA configuration: {e}")))?;
        let mut r = stored_root(&m, &trust_domain, "Berth CA Primary Cert");
        // A user's intermediate chains to its own root; cross-signing is for our roots.
        if !req.force_without_cross_signing && !old.key_pem.is_empty() && m.chain.is_empty() {
            let cross = ca::cross_sign(&m, &material_of(&old)).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot cross-sign the new root: {e}"),
                )
            })?;
            r.root.intermediate_certs = vec![cross];
        }
        Some(r)
    } else {
        None
    };
    let old_leaf_ttl = old_settings
        .as_ref()
        .map_or(crate::connect::DEFAULT_LEAF_TTL_MS, |s| s.leaf_ttl_ms);
    let op = ConnectOp::SetCaConfig {
        provider,
        config: req.config,
        new_root,
        // Every leaf the old root signed expires within its TTL of now; 5 s for clock skew.
        drop_old_after_ms: now + old_leaf_ttl + 5_000,
    };
    match write(&node, Command::Connect(op)).await?.1 {
        CommandResult::Rejected(m) => Err(ApiError::bad_request(m)),
        _ => Ok(super::json(&Value::Null)),
    }
}

/// `PUT /v1/connect/ca/sign` (Berth's own; Consul's agents use an RPC): signs a CSR for a
/// service the token may write, with that service's SPIFFE ID and no other name.
pub async fn sign(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: SignRequest = decode_body(&body)?;
    if !crate::auth::valid_identity_name(&req.service) {
        return Err(ApiError::bad_request(format!(
            "Invalid service name {:?}",
            req.service
        )));
    }
    id.check(Resource::Service, &req.service, Access::Write)
        .map_err(denied)?;
    let (root, trust_domain, settings) = {
        let st = node.store.read();
        let ca = st.connect.ca.as_ref().ok_or_else(no_ca)?;
        let root = ca.active().cloned().ok_or_else(no_ca)?;
        let settings = parse_settings(&ca.provider, &ca.config)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        (root, ca.trust_domain.clone(), settings)
    };
    if !crate::connect::take_csr_slot(settings.csr_max_per_second) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded, try again later",
        ));
    }
    let uri = ca::spiffe_service(&trust_domain, &node.cfg.datacenter, &req.service);
    let leaf = ca::sign_leaf(
        &req.csr,
        &material_of(&root),
        &uri,
        &req.service,
        now_ms(),
        settings.leaf_ttl_ms,
    )
    .map_err(|e| match e {
        ca::CaError::Csr(_) => ApiError::bad_request(e.to_string()),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    let mut chain = leaf.cert_pem.clone();
    for c in &root.root.intermediate_certs {
        chain.push_str(c);
    }
    Ok(super::json(&IssuedCert {
        serial_number: leaf.serial,
        cert_pem: chain,
        private_key_pem: String::new(),
        service: req.service.clone(),
        service_uri: uri,
        valid_after: rfc3339(leaf.valid_after_ms),
        valid_before: rfc3339(leaf.valid_before_ms),
        create_index: root.root.modify_index,
        modify_index: root.root.modify_index,
    }))
}

// ---- config entries ----

const KINDS: &[&str] = &["service-defaults", "proxy-defaults", intentions::KIND];
const PROTOCOLS: &[&str] = &["tcp", "http", "http2", "grpc"];

/// The protocol a service speaks: its `service-defaults`, else `proxy-defaults`, else tcp.
pub fn protocol_of(t: &ConnectTables, service: &str) -> String {
    if let Some(p) = t
        .entry("service-defaults", service)
        .map(|e| e.protocol.clone())
        .filter(|p| !p.is_empty())
    {
        return p;
    }
    t.entry("proxy-defaults", "global")
        .and_then(|e| e.config.as_ref())
        .and_then(|c| c.get("protocol").or_else(|| c.get("Protocol")))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| "tcp".into())
}

fn kind_of(raw: &str) -> Result<String, ApiError> {
    let k = raw.to_ascii_lowercase();
    if KINDS.contains(&k.as_str()) {
        Ok(k)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid config entry kind: {raw}"
        )))
    }
}

fn can_read(id: &Identity, kind: &str, name: &str) -> Result<(), berth_acl::Denied> {
    match kind {
        "service-defaults" => id.check(Resource::Service, name, Access::Read),
        "proxy-defaults" => Ok(()),
        _ => id.check_intentions(name, Access::Read),
    }
}

fn can_write(id: &Identity, kind: &str, name: &str) -> Result<(), berth_acl::Denied> {
    match kind {
        "service-defaults" => id.check(Resource::Service, name, Access::Write),
        "proxy-defaults" => id.check(Resource::Operator, "", Access::Write),
        _ => id.check_intentions(name, Access::Write),
    }
}

/// Checks and normalizes an entry of any kind against the current tables.
fn normalize(t: &ConnectTables, mut e: ConfigEntry) -> Result<ConfigEntry, ApiError> {
    e.kind = kind_of(&e.kind)?;
    if e.name.is_empty() {
        return Err(ApiError::bad_request("config entry Name is required"));
    }
    let bad = |m: String| ApiError::bad_request(format!("Invalid config entry: {m}"));
    match e.kind.as_str() {
        "service-defaults" => {
            e.protocol = if e.protocol.is_empty() {
                "tcp".into()
            } else {
                e.protocol.to_ascii_lowercase()
            };
            if !PROTOCOLS.contains(&e.protocol.as_str()) {
                return Err(bad(format!(
                    "Protocol {:?} is not one of tcp, http, http2, grpc",
                    e.protocol
                )));
            }
            e.sources = None;
            e.config = None;
            Ok(e)
        }
        "proxy-defaults" => {
            if e.name != "global" {
                return Err(bad("proxy-defaults Name must be \"global\"".into()));
            }
            if let Some(p) = e
                .config
                .as_ref()
                .and_then(|c| c.get("protocol").or_else(|| c.get("Protocol")))
            {
                let ok = p
                    .as_str()
                    .is_some_and(|s| PROTOCOLS.contains(&s.to_ascii_lowercase().as_str()));
                if !ok {
                    return Err(bad(format!(
                        "Config.protocol {p} is not one of tcp, http, http2, grpc"
                    )));
                }
            }
            e.sources = None;
            e.protocol.clear();
            Ok(e)
        }
        _ => {
            let protocol = protocol_of(t, &e.name);
            intentions::normalize(e, &protocol).map_err(bad)
        }
    }
}

fn cas_of(q: &Query) -> Result<Option<u64>, ApiError> {
    q.num("cas", "cas index")
}

async fn commit(node: &Node, op: ConnectOp) -> Result<bool, ApiError> {
    match write(node, Command::Connect(op)).await?.1 {
        CommandResult::Bool(b) => Ok(b),
        CommandResult::Rejected(m) => Err(ApiError::bad_request(m)),
        _ => Ok(true),
    }
}

/// `PUT /v1/config` (`?cas=<index>`).
pub async fn entry_put(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let cas = cas_of(&q)?;
    let e: ConfigEntry = decode_body(&body)?;
    let e = {
        let st = node.store.read();
        normalize(&st.connect, e)?
    };
    can_write(&id, &e.kind, &e.name).map_err(denied)?;
    let ok = commit(&node, ConnectOp::SetEntry { entry: e, cas }).await?;
    Ok(super::json(&ok))
}

pub async fn entry_get(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    Path((kind, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let kind = kind_of(&kind)?;
    can_read(&id, &kind, &name).map_err(denied)?;
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let (idx, e) = read(
        &node,
        &opts,
        WatchTarget::Table(Table::ConfigEntries),
        |s| {
            (
                s.index(Table::ConfigEntries),
                s.connect.entry(&kind, &name).cloned(),
            )
        },
    )
    .await?;
    Ok(match e {
        Some(e) => with_meta(&node, opts.mode, idx, super::json(&e)),
        None => with_meta(
            &node,
            opts.mode,
            idx,
            (
                StatusCode::NOT_FOUND,
                format!("Config entry not found for {kind:?} / {name:?}"),
            ),
        ),
    })
}

pub async fn entry_list(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    Path(kind): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let kind = kind_of(&kind)?;
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let (idx, (list, hidden)) = read(
        &node,
        &opts,
        WatchTarget::Table(Table::ConfigEntries),
        |s| {
            let all: Vec<ConfigEntry> = s.connect.entries_of(&kind).cloned().collect();
            let n = all.len();
            let list: Vec<ConfigEntry> = all
                .into_iter()
                .filter(|e| can_read(&id, &kind, &e.name).is_ok())
                .collect();
            let hidden = list.len() < n;
            (s.index(Table::ConfigEntries), (list, hidden))
        },
    )
    .await?;
    let resp = with_meta(&node, opts.mode, idx, super::json(&list));
    Ok(filtered_by_acls(resp, hidden))
}

pub async fn entry_delete(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    Path((kind, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let kind = kind_of(&kind)?;
    can_write(&id, &kind, &name).map_err(denied)?;
    let cas = cas_of(&Query::parse(raw.as_deref()))?;
    let ok = commit(&node, ConnectOp::DeleteEntry { kind, name, cas }).await?;
    Ok(super::json(&ok))
}

// ---- intentions ----

fn pair(q: &Query) -> Result<(String, String), ApiError> {
    let s = q
        .value("source")
        .ok_or_else(|| ApiError::bad_request("required query parameter 'source' not set"))?;
    let d = q
        .value("destination")
        .ok_or_else(|| ApiError::bad_request("required query parameter 'destination' not set"))?;
    // Consul accepts `ns/name` and `partition/ns/name`; only the default namespace exists here.
    let strip = |v: &str| v.rsplit('/').next().unwrap_or(v).to_string();
    Ok((strip(s), strip(d)))
}

fn all_intentions(s: &Tables) -> Vec<Intention> {
    let mut out = Vec::new();
    for e in s.connect.entries_of(intentions::KIND) {
        for src in e.sources.iter().flatten() {
            out.push(intentions::legacy(&e.name, src, e));
        }
    }
    out.sort_by(|a, b| {
        b.precedence
            .cmp(&a.precedence)
            .then(a.destination_name.cmp(&b.destination_name))
            .then(a.source_name.cmp(&b.source_name))
    });
    out
}

pub async fn intention_list(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let opts = ReadOpts::parse(&q)?;
    let filter = q.filter()?;
    let (idx, (mut list, hidden)) = read(
        &node,
        &opts,
        WatchTarget::Table(Table::ConfigEntries),
        |s| {
            let all = all_intentions(s);
            let n = all.len();
            let list: Vec<Intention> = all
                .into_iter()
                .filter(|i| {
                    id.check_intentions(&i.destination_name, Access::Read)
                        .is_ok()
                })
                .collect();
            let hidden = list.len() < n;
            (s.index(Table::ConfigEntries), (list, hidden))
        },
    )
    .await?;
    berth_api::filter::retain(filter.as_ref(), &mut list);
    let resp = with_meta(&node, opts.mode, idx, super::json(&list));
    Ok(filtered_by_acls(resp, hidden))
}

pub async fn intention_exact_get(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let (source, dest) = pair(&q)?;
    id.check_intentions(&dest, Access::Read).map_err(denied)?;
    let st = node.store.read();
    let found = st.connect.entry(intentions::KIND, &dest).and_then(|e| {
        e.sources
            .iter()
            .flatten()
            .find(|s| s.name == source)
            .map(|s| intentions::legacy(&dest, s, e))
    });
    match found {
        Some(i) => Ok(super::json(&i)),
        None => Ok((StatusCode::NOT_FOUND, "Intention not found").into_response()),
    }
}

pub async fn intention_exact_put(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let (source, dest) = pair(&q)?;
    id.check_intentions(&dest, Access::Write).map_err(denied)?;
    let i: Intention = decode_body(&body)?;
    let entry = {
        let st = node.store.read();
        let old = st.connect.entry(intentions::KIND, &dest);
        let src = SourceIntention {
            name: source,
            action: i.action,
            permissions: i.permissions,
            kind: if i.source_type.is_empty() {
                "consul".into()
            } else {
                i.source_type
            },
            description: i.description,
            legacy_meta: i.meta,
            ..Default::default()
        };
        normalize(&st.connect, intentions::upsert_source(old, &dest, src))?
    };
    let ok = commit(&node, ConnectOp::SetEntry { entry, cas: None }).await?;
    Ok(super::json(&ok))
}

pub async fn intention_exact_delete(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let (source, dest) = pair(&q)?;
    id.check_intentions(&dest, Access::Write).map_err(denied)?;
    let op = {
        let st = node.store.read();
        let Some(mut e) = st.connect.entry(intentions::KIND, &dest).cloned() else {
            return Ok(super::json(&true));
        };
        let mut sources = e.sources.take().unwrap_or_default();
        sources.retain(|s| s.name != source);
        if sources.is_empty() {
            ConnectOp::DeleteEntry {
                kind: intentions::KIND.into(),
                name: dest,
                cas: Some(e.modify_index),
            }
        } else {
            let cas = Some(e.modify_index);
            e.sources = Some(sources);
            ConnectOp::SetEntry { entry: e, cas }
        }
    };
    commit(&node, op).await?;
    Ok(super::json(&true))
}

/// Whether intentions let a connection in when none matches: the ACL default policy, or
/// allow when ACLs are off.
pub fn default_allow(node: &Node) -> bool {
    !node.cfg.acl.enabled || node.cfg.acl.default_allow
}

pub async fn intention_check(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let (source, dest) = pair(&q)?;
    id.check_intentions(&dest, Access::Read).map_err(denied)?;
    let st = node.store.read();
    let allowed = intentions::allowed(&st.connect, &source, &dest, default_allow(&node));
    Ok(super::json(&json!({ "Allowed": allowed })))
}

pub async fn intention_match(
    State(node): State<Arc<Node>>,
    axum::Extension(id): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let by = q.value("by").unwrap_or("");
    if by != "source" && by != "destination" {
        return Err(ApiError::bad_request(
            "required query parameter 'by' must be source or destination",
        ));
    }
    let names: Vec<String> = raw
        .as_deref()
        .map(|r| {
            form_urlencoded::parse(r.as_bytes())
                .filter(|(k, _)| k == "name")
                .map(|(_, v)| v.rsplit('/').next().unwrap_or(&v).to_string())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "required query parameter 'name' not set",
        ));
    }
    let opts = ReadOpts::parse(&q)?;
    let (idx, out) = read(
        &node,
        &opts,
        WatchTarget::Table(Table::ConfigEntries),
        |s| {
            let all = all_intentions(s);
            let mut out = serde_json::Map::new();
            for n in &names {
                let list: Vec<&Intention> = all
                    .iter()
                    .filter(|i| {
                        id.check_intentions(&i.destination_name, Access::Read)
                            .is_ok()
                    })
                    .filter(|i| {
                        if by == "destination" {
                            i.destination_name == *n || i.destination_name == "*"
                        } else {
                            i.source_name == *n || i.source_name == "*"
                        }
                    })
                    .collect();
                out.insert(n.clone(), json!(list));
            }
            (s.index(Table::ConfigEntries), Value::Object(out))
        },
    )
    .await?;
    // Agents build proxy RBAC from these and need the decision for an unmatched source.
    let default = if default_allow(&node) {
        "allow"
    } else {
        "deny"
    };
    Ok(with_meta(
        &node,
        opts.mode,
        idx,
        ([(DEFAULT_INTENTION_HEADER, default)], super::json(&out)),
    ))
}
