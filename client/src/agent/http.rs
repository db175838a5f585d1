//! The agent's HTTP API on the task's loopback: the `/v1/agent` service and check routes of
//! `berth-agent`, the Connect routes (leaf certificates, roots, authorize), and everything
//! else forwarded to the servers over the RPC port with the caller's token, as a Consul
//! client agent does.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use berth_acl::{Access, Resource};
use berth_agent::Agent;
use berth_agent::http_util::{
    ApiError, Id, Query, RequestToken, decode_body, json as json_reply, request_token,
};

use super::acl::{ResolveError, Resolver};
use super::leaf::Leaves;
use super::servers::Servers;

#[derive(Clone)]
pub struct Ctx {
    pub agent: Arc<Agent>,
    pub servers: Arc<Servers>,
    pub resolver: Arc<Resolver>,
    pub leaves: Arc<Leaves>,
    pub datacenter: String,
    pub node_id: String,
}

async fn resolve_token(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    let token = request_token(req.headers(), req.uri().query());
    // Requests for the servers are checked there; only the agent's own routes need it here.
    if req.uri().path().starts_with("/v1/agent/") {
        match ctx.resolver.resolve(token.as_deref()).await {
            Ok(id) => {
                req.extensions_mut().insert(id);
            }
            Err(ResolveError::NotFound) => {
                return ApiError::new(StatusCode::FORBIDDEN, "ACL not found").into_response();
            }
            Err(e) => {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    .into_response();
            }
        }
    }
    req.extensions_mut().insert(RequestToken(token));
    next.run(req).await
}

async fn agent_self(State(ctx): State<Ctx>) -> Response {
    let node = &ctx.agent.cfg.node;
    json_reply(&json!({
        "Config": {
            "Datacenter": ctx.datacenter,
            "NodeName": node.node,
            "NodeID": ctx.node_id,
            "Server": false,
            "Version": env!("CARGO_PKG_VERSION"),
            "Revision": "berth",
        },
        "Member": {"Name": node.node, "Addr": node.address, "Status": 1, "Tags": {"role": "node", "dc": ctx.datacenter}},
        "Meta": {},
        "Stats": {},
    }))
}

/// Relays a request to the servers and their answer back.
async fn forward(
    ctx: &Ctx,
    method: &Method,
    uri: &str,
    headers: &HeaderMap,
    token: Option<&str>,
    body: Bytes,
) -> Response {
    let hs: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length" | "x-berth-forwarded"))
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    // Blocking queries wait up to 10 minutes on the server.
    let timeout = Duration::from_secs(620);
    match ctx
        .servers
        .http(method.as_str(), uri, token, hs, body.to_vec(), timeout)
        .await
    {
        Ok(r) => {
            let mut resp = (
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY),
                r.body,
            )
                .into_response();
            for (k, v) in r.headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    axum::http::HeaderValue::from_str(&v),
                ) && k != axum::http::header::CONTENT_LENGTH
                {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn to_servers(
    State(ctx): State<Ctx>,
    axum::Extension(RequestToken(token)): axum::Extension<RequestToken>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path())
        .to_string();
    if !pq.starts_with("/v1/") || pq.starts_with("/v1/agent/") {
        return ApiError::not_found(format!("Unsupported endpoint {}", uri.path())).into_response();
    }
    forward(&ctx, &method, &pq, &headers, token.as_deref(), body).await
}

async fn roots(
    State(ctx): State<Ctx>,
    axum::Extension(RequestToken(token)): axum::Extension<RequestToken>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let uri = match raw {
        Some(q) => format!("/v1/connect/ca/roots?{q}"),
        None => "/v1/connect/ca/roots".to_string(),
    };
    forward(
        &ctx,
        &Method::GET,
        &uri,
        &headers,
        token.as_deref(),
        Bytes::new(),
    )
    .await
}

/// `GET /v1/agent/connect/ca/leaf/<service>`: the service's current leaf (with its key);
/// with `?index=N`, waits until the leaf is newer than N.
async fn leaf(
    State(ctx): State<Ctx>,
    axum::Extension(id): Id,
    axum::Extension(RequestToken(token)): axum::Extension<RequestToken>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    id.check(Resource::Service, &service, Access::Write)?;
    let q = Query::parse(raw.as_deref());
    let index = q.num("index", "index")?.unwrap_or(0);
    let wait = q
        .value("wait")
        .and_then(|w| berth_api::parse_duration(w).ok())
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(600));
    let mut rx = ctx.leaves.watch(&service, token.as_deref());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = rx.borrow().clone();
        if let Some(l) = current
            && (index == 0 || l.generation != index)
        {
            let mut resp = json_reply(&l.issued);
            if let Ok(v) = l.generation.to_string().parse() {
                resp.headers_mut().insert("x-consul-index", v);
            }
            return Ok(resp);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() {
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "leaf certificate manager stopped"));
            },
            _ = tokio::time::sleep_until(deadline) => {
                let l = rx.borrow().clone();
                return match l {
                    Some(l) => Ok(json_reply(&l.issued)),
                    None => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no leaf certificate yet; see the agent's log")),
                };
            }
        }
    }
}

/// `POST /v1/agent/connect/authorize`: may the client with this certificate URI connect to
/// the target? Intentions decide.
async fn authorize(
    State(ctx): State<Ctx>,
    axum::Extension(id): Id,
    axum::Extension(RequestToken(token)): axum::Extension<RequestToken>,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct Req {
        target: String,
        #[serde(rename = "ClientCertURI")]
        client_cert_uri: String,
    }
    let req: Req = decode_body(&body)?;
    if req.target.is_empty() {
        return Err(ApiError::bad_request("Target service must be specified"));
    }
    id.check(Resource::Service, &req.target, Access::Write)?;
    let Some(source) = req
        .client_cert_uri
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once("/svc/"))
        .map(|(_, s)| s.to_string())
        .filter(|s| !s.is_empty() && !s.contains('/'))
    else {
        return Err(ApiError::bad_request(format!(
            "ClientCertURI is not a service's SPIFFE ID: {:?}",
            req.client_cert_uri
        )));
    };
    let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let uri = format!(
        "/v1/connect/intentions/check?source={}&destination={}",
        enc(&source),
        enc(&req.target)
    );
    let (_, v): (u64, Value) = ctx
        .servers
        .get_json(&uri, token.as_deref(), Duration::from_secs(10))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let allowed = v["Allowed"].as_bool().unwrap_or(false);
    Ok(json_reply(&json!({
        "Authorized": allowed,
        "Reason": if allowed { "ACL or intention allows the connection" } else { "ACL or intention denies the connection" },
    })))
}

pub fn router(ctx: Ctx) -> Router {
    let own = Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/connect/ca/roots", get(roots))
        .route("/v1/agent/connect/ca/leaf/{service}", get(leaf))
        .route("/v1/agent/connect/authorize", post(authorize))
        .fallback(to_servers)
        .with_state(ctx.clone());
    own.merge(berth_agent::api::router(ctx.agent.clone()))
        .layer(middleware::from_fn_with_state(ctx, resolve_token))
}
