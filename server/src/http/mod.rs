//! The Consul-compatible HTTP API.
//!
//! A middleware sends every request that needs the leader (writes, default and `?consistent`
//! reads) to it over the RPC port, where it runs through this same router; `/v1/agent/*`,
//! `/v1/status/*` and `?stale` reads are answered locally.

mod acl;
mod agent_host;
mod catalog;
mod connect;
mod health;
mod kv;
mod session;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use rand::Rng;

use crate::node::{Node, WriteError};
use crate::rpc::{self, ForwardReply, ForwardRequest};
use crate::state::watch::WatchTarget;
use crate::state::{Command, CommandResult, State as Tables};

/// Set on requests that arrived from another server; its value counts the hops.
pub const FORWARDED_HEADER: &str = "x-berth-forwarded";
const MAX_HOPS: u8 = 3;
/// Consul's defaults for blocking queries.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// A write that cannot commit (no quorum) fails after this long instead of hanging.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body the forwarder carries (KV values are capped lower, at 512 KiB).
const MAX_FORWARD_BODY: usize = 4 << 20;

pub fn router(node: Arc<Node>, agent: Arc<berth_agent::Agent>) -> Router {
    let server_routes = Router::new()
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .route(
            "/v1/operator/raft/configuration",
            get(status::raft_configuration),
        )
        .route("/v1/operator/raft/peer", delete(status::remove_peer))
        .route(
            "/v1/operator/raft/transfer-leader",
            post(status::transfer_leader),
        )
        .route("/v1/agent/self", get(status::agent_self))
        .route("/v1/agent/members", get(status::members))
        .route("/v1/agent/reload", put(agent_host::reload))
        .route("/v1/agent/leave", put(agent_host::leave))
        .route("/v1/agent/force-leave/{node}", put(agent_host::force_leave))
        .route("/v1/agent/monitor", get(agent_host::monitor))
        .route("/v1/agent/token/{kind}", put(agent_host::token))
        .route(
            "/v1/kv/",
            get(kv::get_root).put(kv::put_root).delete(kv::delete_root),
        )
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/catalog/register", put(catalog::register))
        .route("/v1/catalog/deregister", put(catalog::deregister))
        .route("/v1/catalog/datacenters", get(catalog::datacenters))
        .route("/v1/catalog/nodes", get(catalog::nodes))
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/service/{name}", get(catalog::service))
        .route("/v1/catalog/connect/{name}", get(catalog::connect))
        .route("/v1/catalog/node/{name}", get(catalog::node))
        .route(
            "/v1/catalog/node-services/{name}",
            get(catalog::node_services),
        )
        .route("/v1/health/service/{name}", get(health::service))
        .route("/v1/health/connect/{name}", get(health::connect))
        .route("/v1/health/checks/{name}", get(health::checks))
        .route("/v1/health/node/{name}", get(health::node))
        .route("/v1/health/state/{state}", get(health::state))
        .route("/v1/session/create", put(session::create))
        .route("/v1/session/destroy/{id}", put(session::destroy))
        .route("/v1/session/info/{id}", get(session::info))
        .route("/v1/session/list", get(session::list))
        .route("/v1/session/node/{node}", get(session::node))
        .route("/v1/session/renew/{id}", put(session::renew))
        .route("/v1/acl/bootstrap", put(acl::bootstrap))
        .route("/v1/acl/login", put(acl::login).post(acl::login))
        .route("/v1/acl/logout", put(acl::logout).post(acl::logout))
        .route("/v1/acl/token", put(acl::token_create))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route(
            "/v1/acl/token/{id}",
            get(acl::token_read)
                .put(acl::token_update)
                .delete(acl::token_delete),
        )
        .route("/v1/acl/token/{id}/clone", put(acl::token_clone))
        .route("/v1/acl/tokens", get(acl::token_list))
        .route("/v1/acl/policy", put(acl::policy_create))
        .route(
            "/v1/acl/policy/{id}",
            get(acl::policy_read)
                .put(acl::policy_update)
                .delete(acl::policy_delete),
        )
        .route("/v1/acl/policy/name/{name}", get(acl::policy_read_by_name))
        .route("/v1/acl/policies", get(acl::policy_list))
        .route("/v1/acl/role", put(acl::role_create))
        .route(
            "/v1/acl/role/{id}",
            get(acl::role_read)
                .put(acl::role_update)
                .delete(acl::role_delete),
        )
        .route("/v1/acl/role/name/{name}", get(acl::role_read_by_name))
        .route("/v1/acl/roles", get(acl::role_list))
        .route("/v1/acl/auth-method", put(acl::method_create))
        .route(
            "/v1/acl/auth-method/{name}",
            get(acl::method_read)
                .put(acl::method_update)
                .delete(acl::method_delete),
        )
        .route("/v1/acl/auth-methods", get(acl::method_list))
        .route("/v1/acl/binding-rule", put(acl::rule_create))
        .route(
            "/v1/acl/binding-rule/{id}",
            get(acl::rule_read)
                .put(acl::rule_update)
                .delete(acl::rule_delete),
        )
        .route("/v1/acl/binding-rules", get(acl::rule_list))
        .route("/v1/connect/ca/roots", get(connect::roots))
        .route(
            "/v1/connect/ca/configuration",
            get(connect::config_get).put(connect::config_put),
        )
        .route("/v1/connect/ca/sign", put(connect::sign))
        .route("/v1/config", put(connect::entry_put))
        .route("/v1/config/{kind}", get(connect::entry_list))
        .route(
            "/v1/config/{kind}/{name}",
            get(connect::entry_get).delete(connect::entry_delete),
        )
        .route("/v1/connect/intentions", get(connect::intention_list))
        .route(
            "/v1/connect/intentions/exact",
            get(connect::intention_exact_get)
                .put(connect::intention_exact_put)
                .delete(connect::intention_exact_delete),
        )
        .route(
            "/v1/connect/intentions/check",
            get(connect::intention_check),
        )
        .route(
            "/v1/connect/intentions/match",
            get(connect::intention_match),
        )
        .route("/v1/acl/templated-policies", get(acl::templated_list))
        .route(
            "/v1/acl/templated-policy/name/{*name}",
            get(acl::templated_read),
        )
        .route(
            "/v1/acl/templated-policy/preview/{*name}",
            post(acl::templated_preview).put(acl::templated_preview),
        )
        .with_state(node.clone());
    server_routes
        .route("/", get(root))
        .merge(berth_agent::api::router(agent.clone()))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(node.clone(), resolve_token))
        .layer(middleware::from_fn_with_state(node, route_to_leader))
        .layer(middleware::from_fn_with_state(agent, count_requests))
}

tokio::task_local! {
    /// The token of the request being served, for checks made deeper down.
    static REQUEST_TOKEN: Option<String>;
}

pub use berth_agent::http_util::RequestToken;

/// Resolves the request's token into an [`berth_acl::Identity`] for the handlers. An unknown
/// or expired token is a 403 "ACL not found", except where no token is needed.
async fn resolve_token(State(node): State<Arc<Node>>, mut req: Request, next: Next) -> Response {
    let token = berth_agent::http_util::request_token(req.headers(), req.uri().query());
    let path = req.uri().path();
    let tokenless = path == "/"
        || path.starts_with("/v1/status/")
        || path == "/v1/acl/login"
        || path == "/v1/acl/bootstrap";
    let identity = match node.identity(token.as_deref()) {
        Ok(id) => id,
        // These paths decide for themselves; before the anonymous token exists (a new
        // cluster), they see an identity that may do nothing.
        Err(_) if tokenless => node
            .identity(None)
            .unwrap_or_else(|_| Arc::new(berth_acl::Identity::nobody())),
        Err(e) => return ApiError::new(StatusCode::FORBIDDEN, e.to_string()).into_response(),
    };
    req.extensions_mut().insert(identity);
    req.extensions_mut().insert(RequestToken(token.clone()));
    // Blocking reads re-resolve the token on every wake (see `read`).
    REQUEST_TOKEN.scope(token, next.run(req)).await
}

/// The endpoint family of a path, for metrics: `/v1/catalog/service`, but `/v1/kv` alone,
/// since what follows is a user's key.
fn route_family(path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
    match parts.as_slice() {
        ["v1", "kv", ..] => "/v1/kv".to_string(),
        ["v1", a, b, ..] => format!("/v1/{a}/{b}"),
        ["v1", a] => format!("/v1/{a}"),
        _ => "other".to_string(),
    }
}

async fn count_requests(
    State(agent): State<Arc<berth_agent::Agent>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let labels = vec![
        ("method".to_string(), req.method().to_string()),
        ("path".to_string(), route_family(req.uri().path())),
    ];
    let resp = next.run(req).await;
    let mut with_code = labels.clone();
    with_code.push(("code".to_string(), resp.status().as_u16().to_string()));
    agent
        .metrics
        .incr_labeled("berth.http.requests", with_code, 1);
    agent
        .metrics
        .observe("berth.http.request_ms", labels, start.elapsed());
    resp
}

/// Consul answers `/` with this kind of note when its UI is off; HTTP checks aimed at an
/// agent's bare address rely on the 200.
async fn root() -> &'static str {
    "Berth agent: there is no web UI. The HTTP API is under /v1/.\n"
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Not found: {method} {}", uri.path()),
    )
    .into_response()
}

pub use berth_agent::http_util::{ApiError, Id, Query, decode_body, filtered_by_acls, json};

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Leader,
    Consistent,
    Stale,
}

impl Mode {
    fn header(self) -> &'static str {
        match self {
            Mode::Leader => "leader",
            Mode::Consistent => "consistent",
            Mode::Stale => "stale",
        }
    }
}

/// Consistency mode and blocking parameters of a read.
#[derive(Debug, Clone)]
pub struct ReadOpts {
    pub mode: Mode,
    pub index: u64,
    pub wait: Duration,
}

impl ReadOpts {
    pub fn parse(q: &Query) -> Result<Self, ApiError> {
        let mode = match (q.has("stale"), q.has("consistent")) {
            (true, true) => return Err(conflicting_modes()),
            (true, false) => Mode::Stale,
            (false, true) => Mode::Consistent,
            (false, false) => Mode::Leader,
        };
        let index = q
            .value("index")
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("Invalid index"))
            })
            .transpose()?
            .unwrap_or(0);
        let wait = q
            .value("wait")
            .map(|v| {
                berth_api::parse_duration(v).map_err(|_| ApiError::bad_request("Invalid wait time"))
            })
            .transpose()?
            .unwrap_or(DEFAULT_WAIT)
            .min(MAX_WAIT);
        Ok(ReadOpts { mode, index, wait })
    }
}

fn conflicting_modes() -> ApiError {
    ApiError::bad_request("Cannot specify ?stale with ?consistent, conflicting semantics.")
}

/// Runs `f` against the tables, blocking while `opts.index` is given and the result's index
/// still equals it (Consul's rule: any other index, higher or reset lower, returns at once).
pub async fn read<T>(
    node: &Node,
    opts: &ReadOpts,
    target: WatchTarget,
    f: impl Fn(&Tables) -> (u64, T),
) -> Result<(u64, T), ApiError> {
    if opts.mode == Mode::Consistent {
        node.linearize().await?;
    }
    let run = || {
        let (idx, v) = f(&node.store.read());
        (idx.max(1), v)
    };
    if opts.index == 0 {
        return Ok(run());
    }
    // Jitter spreads the wake-ups of many watchers that share a wait, as Consul does.
    let jitter = opts.wait.as_millis() as u64 / 16;
    let extra = if jitter > 0 {
        rand::rng().random_range(0..jitter)
    } else {
        0
    };
    let deadline = tokio::time::Instant::now() + opts.wait + Duration::from_millis(extra);
    loop {
        let mut rx = node.store.watches.subscribe(&target);
        // A token deleted or expired while its query waited ends the query.
        let token = REQUEST_TOKEN.try_with(Clone::clone).ok().flatten();
        if let Err(e) = node.identity(token.as_deref()) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string()));
        }
        let (idx, v) = run();
        if idx != opts.index {
            return Ok((idx, v));
        }
        // Thousands of queries may wait at once; none keeps a result it will not send.
        drop(v);
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(run()),
        }
    }
}

/// Commits a command on the leader.
pub async fn write(node: &Node, cmd: Command) -> Result<(u64, CommandResult), ApiError> {
    match tokio::time::timeout(WRITE_TIMEOUT, node.write(cmd)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "timed out waiting for the write to commit (no quorum?)",
        )),
    }
}

/// Adds Consul's query-metadata headers.
pub fn with_meta(node: &Node, mode: Mode, index: u64, resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(h, "x-consul-index", index.max(1).to_string());
    set(
        h,
        "x-consul-knownleader",
        node.leader().is_some().to_string(),
    );
    set(
        h,
        "x-consul-lastcontact",
        node.last_contact_ms().to_string(),
    );
    set(
        h,
        "x-consul-effective-consistency",
        mode.header().to_string(),
    );
    resp
}

/// Sends to the leader what only the leader may answer.
async fn route_to_leader(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let q = Query::parse(req.uri().query());
    if q.has("stale") && q.has("consistent") {
        return conflicting_modes().into_response();
    }
    // One datacenter per cluster for now: another one cannot be reached, as Consul says when it
    // has no route to it.
    if let Some(dc) = q.value("dc")
        && dc != node.cfg.datacenter
    {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter")
            .into_response();
    }
    let path = req.uri().path();
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    let local = !path.starts_with("/v1/")
        || path.starts_with("/v1/agent/")
        || path.starts_with("/v1/status/")
        || (is_read && q.has("stale"));
    if local || node.is_leader() {
        return next.run(req).await;
    }
    let hops: u8 = req
        .headers()
        .get(FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let Some((_, leader)) = node.leader().filter(|_| hops < MAX_HOPS) else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader")
            .into_response();
    };
    let wait = ReadOpts::parse(&q).map(|o| o.wait).unwrap_or(DEFAULT_WAIT);
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_FORWARD_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
                .into_response();
        }
    };
    let fwd = ForwardRequest {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        headers: parts
            .headers
            .iter()
            .filter(|(k, _)| *k != FORWARDED_HEADER && *k != "host" && *k != "content-length")
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        hops: hops + 1,
    };
    let started = Instant::now();
    let json = match serde_json::to_vec(&fwd) {
        Ok(j) => j,
        Err(e) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let timeout = wait + WRITE_TIMEOUT + Duration::from_secs(10);
    match node
        .clients
        .call(
            &leader.rpc_addr,
            rpc::HTTP_FORWARD,
            json,
            body.to_vec(),
            timeout,
        )
        .await
    {
        Ok(env) => {
            let Ok(reply) = serde_json::from_slice::<ForwardReply>(&env.json) else {
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "bad reply from the leader",
                )
                .into_response();
            };
            let mut resp = Response::new(axum::body::Body::from(env.data));
            *resp.status_mut() =
                StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in reply.headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    resp.headers_mut().insert(k, v);
                }
            }
            tracing::trace!(elapsed = ?started.elapsed(), "forwarded to the leader");
            resp
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rpc error forwarding to the leader: {e}"),
        )
        .into_response(),
    }
}

/// The HTTPS API: TLS handshakes run per connection so a slow client cannot stall accepts.
pub async fn serve_https(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
        });
    }
}
