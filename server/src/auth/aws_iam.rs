//! The `aws-iam` auth method, as Consul's: the bearer token carries a signed, unsent
//! `sts:GetCallerIdentity` request. Everything about that request is checked before anything
//! is sent (method, host, path, body, headers, the server-ID header and its signature, the
//! signature's age and whether it was used before); then it is sent to STS, which answers
//! with the caller's ARN only if the signature is good. With `EnableIAMEntityDetails` a second
//! signed request (`iam:GetRole`/`GetUser`, in `X-Consul-IAM-GetEntity-*` headers) recovers
//! the role's path and tags.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use berth_api::iam::{
    BearerToken, GET_ENTITY_BODY_HEADER, GET_ENTITY_HEADERS_HEADER, GET_ENTITY_METHOD_HEADER,
    GET_ENTITY_URL_HEADER, SERVER_ID_HEADER, entity_of_arn, xml_text,
};

use super::{LoginError, Verified, denied};

/// AWS refuses SigV4 signatures older than this; Berth remembers used ones for as long.
pub const SIGNATURE_LIFETIME_MS: u64 = 15 * 60 * 1000;

/// The method's `Config`, with Consul's field names.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct Config {
    #[serde(rename = "BoundIAMPrincipalARNs")]
    pub bound_iam_principal_arns: Vec<String>,
    #[serde(rename = "EnableIAMEntityDetails")]
    pub enable_iam_entity_details: bool,
    #[serde(rename = "IAMEntityTags")]
    pub iam_entity_tags: Vec<String>,
    #[serde(rename = "ServerIDHeaderValue")]
    pub server_id_header_value: String,
    pub max_retries: u32,
    #[serde(rename = "IAMEndpoint")]
    pub iam_endpoint: String,
    #[serde(rename = "STSEndpoint")]
    pub sts_endpoint: String,
    #[serde(rename = "STSRegion")]
    pub sts_region: String,
    #[serde(rename = "AllowedSTSHeaderValues")]
    pub allowed_sts_header_values: Vec<String>,
}

impl Config {
    pub fn from_value(v: &Value) -> Result<Config, String> {
        let v = if v.is_null() { json!({}) } else { v.clone() };
        let c: Config = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        if self.bound_iam_principal_arns.is_empty() {
            return Err("BoundIAMPrincipalARNs is required and must have at least 1 entry".into());
        }
        for arn in &self.bound_iam_principal_arns {
            if arn == "*" {
                continue;
            }
            if !arn.starts_with("arn:") {
                return Err(format!(
                    "Invalid principal ARN in BoundIAMPrincipalARNs: {arn:?}"
                ));
            }
            let stars = arn.matches('*').count();
            if stars > 0 && !self.enable_iam_entity_details {
                return Err(
                    "Must set EnableIAMEntityDetails=true to use wildcards in BoundIAMPrincipalARNs"
                        .into(),
                );
            }
            if stars > 1 || (stars == 1 && !arn.ends_with('*')) {
                return Err(format!(
                    "Only one wildcard is allowed, at the end of the ARN: {arn:?}"
                ));
            }
        }
        if !self.iam_entity_tags.is_empty() && !self.enable_iam_entity_details {
            return Err("Must set EnableIAMEntityDetails=true to use IAMEntityTags".into());
        }
        for (name, url) in [
            ("STSEndpoint", &self.sts_endpoint),
            ("IAMEndpoint", &self.iam_endpoint),
        ] {
            if !url.is_empty() {
                let u = reqwest::Url::parse(url).map_err(|e| format!("{name}: {e}"))?;
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    return Err(format!("{name} must be an http(s) URL, got {url:?}"));
                }
            }
        }
        Ok(())
    }
}

/// Headers a login request may carry besides the configured `AllowedSTSHeaderValues`.
const ALLOWED_HEADERS: &[&str] = &[
    "accept-encoding",
    "authorization",
    "content-length",
    "content-type",
    "host",
    "user-agent",
    "x-amz-content-sha256",
    "x-amz-date",
    "x-amz-security-token",
    "x-consul-iam-serverid",
    "x-consul-iam-getentity-method",
    "x-consul-iam-getentity-url",
    "x-consul-iam-getentity-headers",
    "x-consul-iam-getentity-body",
];

/// A decoded request from the bearer token.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub url: reqwest::Url,
    pub body: String,
    /// (name as sent, value), in order.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The parts of a SigV4 `Authorization` header that matter here.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    pub signed_headers: BTreeSet<String>,
    pub signature: String,
}

pub fn parse_authorization(v: &str) -> Option<Authorization> {
    let rest = v.strip_prefix("AWS4-HMAC-SHA256")?.trim();
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(s) = part.strip_prefix("SignedHeaders=") {
            signed = Some(s.split(';').map(|h| h.to_ascii_lowercase()).collect());
        } else if let Some(s) = part.strip_prefix("Signature=") {
            signature = Some(s.to_string());
        }
    }
    let signature: String = signature?;
    if signature.is_empty() || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Authorization {
        signed_headers: signed?,
        signature,
    })
}

fn headers_from_json(raw: &[u8]) -> Result<Vec<(String, String)>, String> {
    let v: Map<String, Value> = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (k, v) in v {
        match v {
            Value::String(s) => out.push((k, s)),
            Value::Array(a) => {
                for x in a {
                    let s = x
                        .as_str()
                        .ok_or_else(|| format!("header {k:?} has a non-string value"))?;
                    out.push((k.clone(), s.to_string()));
                }
            }
            _ => return Err(format!("header {k:?} has a non-string value")),
        }
    }
    Ok(out)
}

/// Decodes the bearer token's JSON and base64 parts.
pub fn decode_bearer(bearer: &str) -> Result<Request, LoginError> {
    let t: BearerToken = serde_json::from_str(bearer).map_err(|e| {
        denied(format!(
            "the bearer token is not an aws-iam login token: {e}"
        ))
    })?;
    let b64 = |what: &str, s: &str| -> Result<Vec<u8>, LoginError> {
        B64.decode(s)
            .map_err(|e| denied(format!("the bearer token's {what} is not base64: {e}")))
    };
    let url = String::from_utf8(b64("iam_request_url", &t.iam_request_url)?)
        .map_err(|_| denied("the request URL is not UTF-8"))?;
    let url = reqwest::Url::parse(&url).map_err(|e| denied(format!("bad request URL: {e}")))?;
    let body = String::from_utf8(b64("iam_request_body", &t.iam_request_body)?)
        .map_err(|_| denied("the request body is not UTF-8"))?;
    let headers = headers_from_json(&b64("iam_request_headers", &t.iam_request_headers)?)
        .map_err(|e| denied(format!("bad request headers: {e}")))?;
    Ok(Request {
        method: t.iam_http_request_method,
        url,
        body,
        headers,
    })
}

fn same_origin(url: &reqwest::Url, endpoint: &str) -> bool {
    reqwest::Url::parse(endpoint).is_ok_and(|e| e.origin() == url.origin())
}

/// Whether `host` names an AWS STS endpoint (global, regional, FIPS, China).
fn is_aws_host(host: &str, service: &str) -> bool {
    let Some(rest) = host.strip_prefix(service) else {
        return false;
    };
    let rest = rest.strip_prefix("-fips").unwrap_or(rest);
    let Some(rest) = rest.strip_prefix('.') else {
        return false;
    };
    let rest = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
        .map(Some)
        .unwrap_or_else(|| (rest == "amazonaws.com" || rest == "amazonaws.com.cn").then_some(""));
    match rest {
        Some("") => true,
        Some(region) => region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        None => false,
    }
}

fn check_target(url: &reqwest::Url, endpoint: &str, service: &str) -> Result<(), LoginError> {
    let host = url.host_str().unwrap_or("");
    let allowed = if endpoint.is_empty() {
        url.scheme() == "https" && url.port().is_none() && is_aws_host(host, service)
    } else {
        same_origin(url, endpoint)
    };
    if !allowed {
        return Err(denied(format!(
            "the {service} request is addressed to {host:?}, which this auth method does not allow"
        )));
    }
    if url.query().is_some() {
        return Err(denied(format!(
            "the {service} request must not have a query string"
        )));
    }
    if url.path() != "/" {
        return Err(denied(format!("the {service} request must be for path /")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(denied(format!(
            "the {service} request URL must not carry userinfo"
        )));
    }
    Ok(())
}

fn form(body: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn check_headers(req: &Request, extra: &[String], what: &str) -> Result<(), LoginError> {
    for (k, _) in &req.headers {
        let lower = k.to_ascii_lowercase();
        if !ALLOWED_HEADERS.contains(&lower.as_str())
            && !extra.iter().any(|e| e.eq_ignore_ascii_case(k))
        {
            return Err(denied(format!(
                "the {what} request has a header that is not allowed: {k}"
            )));
        }
    }
    if let Some(h) = req.header("host")
        && Some(h) != host_with_port(&req.url).as_deref()
    {
        return Err(denied(format!(
            "the {what} request's Host header does not match its URL"
        )));
    }
    Ok(())
}

fn host_with_port(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// `20261201T120000Z` → unix ms.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, &fmt).ok()?.assume_utc();
    u64::try_from(t.unix_timestamp()).ok().map(|s| s * 1000)
}

/// What passed the checks: the STS request, the entity request (when the method wants entity
/// details), and the replay key (signature, remembered until).
#[derive(Debug)]
pub struct Checked {
    pub sts: Request,
    pub entity: Option<Request>,
    pub replay: (String, u64),
}

/// The checks made before anything is sent. Returns the decoded STS request, the entity
/// request (when the method wants entity details), and the replay key.
pub fn precheck(cfg: &Config, bearer: &str, now_ms: u64) -> Result<Checked, LoginError> {
    let req = decode_bearer(bearer)?;
    if req.method != "POST" {
        return Err(denied(format!(
            "the STS request must be a POST, not {:?}",
            req.method
        )));
    }
    check_target(&req.url, &cfg.sts_endpoint, "sts")?;
    let f = form(&req.body);
    if f.len() != 2
        || f.get("Action").map(String::as_str) != Some("GetCallerIdentity")
        || f.get("Version").map(String::as_str) != Some("2011-06-15")
    {
        return Err(denied(
            "the STS request body must be exactly Action=GetCallerIdentity&Version=2011-06-15",
        ));
    }
    check_headers(&req, &cfg.allowed_sts_header_values, "STS")?;
    let auth = req
        .header("authorization")
        .and_then(parse_authorization)
        .ok_or_else(|| denied("the STS request has no SigV4 Authorization header"))?;

    if !cfg.server_id_header_value.is_empty() {
        match req.header(SERVER_ID_HEADER) {
            None => {
                return Err(denied(format!(
                    "the request has no {SERVER_ID_HEADER} header"
                )));
            }
            Some(v) if v != cfg.server_id_header_value => {
                return Err(denied(format!(
                    "the {SERVER_ID_HEADER} header does not name this server"
                )));
            }
            Some(_) => {}
        }
        if !auth
            .signed_headers
            .contains(&SERVER_ID_HEADER.to_ascii_lowercase())
        {
            return Err(denied(format!(
                "the {SERVER_ID_HEADER} header is not among the signed headers"
            )));
        }
    }

    let date = req
        .header("x-amz-date")
        .and_then(parse_amz_date)
        .ok_or_else(|| denied("the STS request has no valid X-Amz-Date"))?;
    if date + SIGNATURE_LIFETIME_MS < now_ms {
        return Err(denied(
            "the signed request has expired: its X-Amz-Date is more than 15 minutes old",
        ));
    }
    if date > now_ms + SIGNATURE_LIFETIME_MS {
        return Err(denied(
            "the signed request's X-Amz-Date is more than 15 minutes in the future",
        ));
    }

    let entity = if cfg.enable_iam_entity_details {
        Some(entity_request(cfg, &req, &auth)?)
    } else {
        None
    };
    Ok(Checked {
        sts: req,
        entity,
        replay: (auth.signature, date + SIGNATURE_LIFETIME_MS),
    })
}

fn entity_request(
    cfg: &Config,
    sts: &Request,
    auth: &Authorization,
) -> Result<Request, LoginError> {
    let names = [
        GET_ENTITY_METHOD_HEADER,
        GET_ENTITY_URL_HEADER,
        GET_ENTITY_HEADERS_HEADER,
        GET_ENTITY_BODY_HEADER,
    ];
    let mut vals = Vec::new();
    for n in names {
        let v = sts.header(n).ok_or_else(|| {
            denied(format!(
                "the auth method needs IAM entity details: the request has no {n} header"
            ))
        })?;
        if !auth.signed_headers.contains(&n.to_ascii_lowercase()) {
            return Err(denied(format!(
                "the {n} header is not among the signed headers"
            )));
        }
        vals.push(v.to_string());
    }
    let url =
        reqwest::Url::parse(&vals[1]).map_err(|e| denied(format!("bad GetEntity URL: {e}")))?;
    let headers = headers_from_json(vals[2].as_bytes())
        .map_err(|e| denied(format!("bad GetEntity headers: {e}")))?;
    let req = Request {
        method: vals[0].clone(),
        url,
        body: vals[3].clone(),
        headers,
    };
    if req.method != "POST" {
        return Err(denied("the GetEntity request must be a POST"));
    }
    check_target(&req.url, &cfg.iam_endpoint, "iam")?;
    let f = form(&req.body);
    let ok = f.len() == 3
        && f.get("Version").map(String::as_str) == Some("2010-05-08")
        && match f.get("Action").map(String::as_str) {
            Some("GetRole") => f.contains_key("RoleName"),
            Some("GetUser") => f.contains_key("UserName"),
            _ => false,
        };
    if !ok {
        return Err(denied(
            "the GetEntity request body must be exactly an iam:GetRole or iam:GetUser call",
        ));
    }
    check_headers(&req, &cfg.allowed_sts_header_values, "GetEntity")?;
    Ok(req)
}

/// Sends a checked request; retries connection failures and 5xx answers `retries` times.
async fn send(
    http: &reqwest::Client,
    req: &Request,
    retries: u32,
    what: &str,
) -> Result<(u16, String), LoginError> {
    let mut attempt = 0;
    loop {
        let mut b = http.post(req.url.clone()).body(req.body.clone());
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("content-length") {
                continue;
            }
            b = b.header(k.as_str(), v.as_str());
        }
        let outcome = match b.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.text().await {
                    Ok(body) => Ok((status, body)),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((s, body)) if s < 500 || attempt >= retries => return Ok((s, body)),
            Err(reason) if attempt >= retries => {
                return Err(LoginError::Upstream {
                    what: what.to_string(),
                    reason,
                });
            }
            _ => {}
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
}

/// `<Code>` and `<Message>` of an AWS error answer.
fn aws_error(body: &str) -> String {
    match (xml_text(body, "Code"), xml_text(body, "Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => body.chars().take(200).collect(),
    }
}

/// The `<Tags>` of a GetRole/GetUser answer.
fn xml_tags(doc: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(start) = doc.find("<Tags>") else {
        return out;
    };
    let end = doc[start..]
        .find("</Tags>")
        .map_or(doc.len(), |e| e + start);
    for member in doc[start..end].split("<member>").skip(1) {
        if let (Some(k), Some(v)) = (xml_text(member, "Key"), xml_text(member, "Value")) {
            out.insert(k, v);
        }
    }
    out
}

/// The facts an STS and (optionally) an IAM answer establish.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Caller {
    pub arn: String,
    pub account: String,
    pub user_id: String,
    pub is_role: bool,
    pub name: String,
    /// `arn:aws:iam::<account>:role/<name>`: the ARN without path.
    pub canonical_arn: String,
    /// With entity details: the ARN with its path, the path, the entity's ID and tags.
    pub full_arn: Option<String>,
    pub path: Option<String>,
    pub entity_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

pub fn parse_caller(sts_answer: &str) -> Result<Caller, LoginError> {
    let arn = xml_text(sts_answer, "Arn").ok_or_else(|| denied("STS answered without an Arn"))?;
    let account = xml_text(sts_answer, "Account").unwrap_or_default();
    let user_id = xml_text(sts_answer, "UserId").unwrap_or_default();
    let (is_role, name) =
        entity_of_arn(&arn).map_err(|_| denied(format!("unsupported IAM principal {arn:?}")))?;
    let partition = arn.split(':').nth(1).unwrap_or("aws");
    let kind = if is_role { "role" } else { "user" };
    Ok(Caller {
        canonical_arn: format!("arn:{partition}:iam::{account}:{kind}/{name}"),
        arn,
        account,
        user_id,
        is_role,
        name,
        ..Default::default()
    })
}

/// Adds what an IAM GetRole/GetUser answer says, after checking it is about the same entity.
pub fn add_entity(caller: &mut Caller, iam_answer: &str) -> Result<(), LoginError> {
    let (name_tag, id_tag) = if caller.is_role {
        ("RoleName", "RoleId")
    } else {
        ("UserName", "UserId")
    };
    let name = xml_text(iam_answer, name_tag).unwrap_or_default();
    let id = xml_text(iam_answer, id_tag).unwrap_or_default();
    if name != caller.name {
        return Err(denied(format!(
            "the GetEntity request is about {name:?}, not the caller {:?}",
            caller.name
        )));
    }
    // An assumed role's caller ID is `<RoleId>:<session>`; a user's is its user ID.
    let caller_id = caller.user_id.split(':').next().unwrap_or("");
    if id.is_empty() || id != caller_id {
        return Err(denied(
            "the IAM entity's unique ID does not match the caller's",
        ));
    }
    caller.full_arn = xml_text(iam_answer, "Arn");
    caller.path = xml_text(iam_answer, "Path");
    caller.entity_id = Some(id);
    caller.tags = xml_tags(iam_answer);
    Ok(())
}

/// Whether the method's bound principals admit the caller.
pub fn bound(cfg: &Config, caller: &Caller) -> bool {
    cfg.bound_iam_principal_arns.iter().any(|b| {
        if b == "*" {
            return cfg.enable_iam_entity_details;
        }
        if *b == caller.canonical_arn {
            return true;
        }
        let Some(full) = &caller.full_arn else {
            return false;
        };
        match b.strip_suffix('*') {
            Some(prefix) => full.starts_with(prefix),
            None => b == full,
        }
    })
}

pub fn variables(cfg: &Config, caller: &Caller) -> Verified {
    let mut vars = BTreeMap::new();
    let entity_id = caller
        .entity_id
        .clone()
        .unwrap_or_else(|| caller.user_id.split(':').next().unwrap_or("").to_string());
    vars.insert("entity_name".to_string(), caller.name.clone());
    vars.insert("entity_id".to_string(), entity_id.clone());
    vars.insert("account_id".to_string(), caller.account.clone());
    let mut sel = Map::new();
    sel.insert("entity_name".into(), json!(caller.name));
    sel.insert("entity_id".into(), json!(entity_id));
    sel.insert("account_id".into(), json!(caller.account));
    if cfg.enable_iam_entity_details {
        let path = caller.path.clone().unwrap_or_default();
        vars.insert("entity_path".to_string(), path.clone());
        sel.insert("entity_path".into(), json!(path));
        let mut tags = Map::new();
        for t in &cfg.iam_entity_tags {
            let v = caller.tags.get(t).cloned().unwrap_or_default();
            if caller.tags.contains_key(t) {
                vars.insert(format!("entity_tags.{t}"), v.clone());
            }
            tags.insert(t.clone(), Value::String(v));
        }
        sel.insert("entity_tags".into(), Value::Object(tags));
    }
    Verified {
        vars,
        selectable: Value::Object(sel),
        replay_key: None,
    }
}

/// The whole validation. `seen` says whether a signature was already used to log in.
pub async fn validate(
    cfg: &Config,
    bearer: &str,
    seen: &(dyn Fn(&str) -> bool + Sync),
    http: &reqwest::Client,
    now_ms: u64,
) -> Result<Verified, LoginError> {
    let Checked {
        sts,
        entity,
        replay,
    } = precheck(cfg, bearer, now_ms)?;
    if seen(&replay.0) {
        return Err(denied(
            "this signed request was already used to log in; sign a new one",
        ));
    }
    let (status, body) = send(http, &sts, cfg.max_retries, "STS").await?;
    if status != 200 {
        return Err(denied(format!(
            "STS rejected the signed request ({status}): {}",
            aws_error(&body)
        )));
    }
    let mut caller = parse_caller(&body)?;
    if let Some(e) = entity {
        let (status, body) = send(http, &e, cfg.max_retries, "IAM").await?;
        if status != 200 {
            return Err(denied(format!(
                "IAM rejected the signed GetEntity request ({status}): {}",
                aws_error(&body)
            )));
        }
        add_entity(&mut caller, &body)?;
    }
    if !bound(cfg, &caller) {
        return Err(denied(format!(
            "IAM principal {} is not in the auth method's BoundIAMPrincipalARNs",
            caller.full_arn.as_deref().unwrap_or(&caller.arn)
        )));
    }
    let mut v = variables(cfg, &caller);
    v.replay_key = Some(replay);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use aws_credential_types::Credentials;
    use berth_api::iam::{LoginOptions, login_request};

    fn creds() -> Credentials {
        Credentials::new("AKID", "secret", None, None, "t")
    }

    fn cfg() -> Config {
        Config {
            bound_iam_principal_arns: vec!["arn:aws:iam::123456789012:role/web".into()],
            server_id_header_value: "berth.test".into(),
            sts_endpoint: "http://127.0.0.1:5000".into(),
            ..Default::default()
        }
    }

    fn bearer(opts: &LoginOptions, entity: Option<(bool, &str)>, at: SystemTime) -> String {
        login_request(&creds(), opts, None, entity, at)
            .unwrap()
            .into_bearer()
            .unwrap()
    }

    fn opts() -> LoginOptions {
        LoginOptions {
            server_id_header_value: Some("berth.test".into()),
            sts_endpoint: Some("http://127.0.0.1:5000".into()),
            ..Default::default()
        }
    }

    fn now() -> u64 {
        crate::acl::now_ms()
    }

    fn reason(r: Result<Checked, LoginError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_good_request_passes_the_prechecks() {
        let b = bearer(&opts(), None, SystemTime::now());
        let Checked {
            sts: req,
            entity,
            replay: (sig, until),
        } = precheck(&cfg(), &b, now()).unwrap();
        assert_eq!(req.url.as_str(), "http://127.0.0.1:5000/");
        assert!(entity.is_none());
        assert_eq!(sig.len(), 64);
        assert!(until > now());
    }

    #[test]
    fn server_id_header_missing_wrong_or_unsigned() {
        let mut o = opts();
        o.server_id_header_value = None;
        let b = bearer(&o, None, SystemTime::now());
        assert!(reason(precheck(&cfg(), &b, now())).contains("no X-Consul-IAM-ServerID"));

        o.server_id_header_value = Some("other".into());
        let b = bearer(&o, None, SystemTime::now());
        assert!(reason(precheck(&cfg(), &b, now())).contains("does not name this server"));

        // Added after signing: present with the right value, but not signed.
        let mut req = login_request(&creds(), &opts(), None, None, SystemTime::now()).unwrap();
        let auth = req.headers["Authorization"][0].replace(";x-consul-iam-serverid", "");
        req.headers.insert("Authorization".into(), vec![auth]);
        let b = req.into_bearer().unwrap();
        assert!(reason(precheck(&cfg(), &b, now())).contains("not among the signed headers"));
    }

    #[test]
    fn hosts_bodies_methods_and_queries() {
        let mut o = opts();
        o.sts_endpoint = Some("http://127.0.0.2:5000".into());
        let b = bearer(&o, None, SystemTime::now());
        assert!(reason(precheck(&cfg(), &b, now())).contains("does not allow"));

        let mut req = login_request(&creds(), &opts(), None, None, SystemTime::now()).unwrap();
        req.body = "Action=GetSessionToken&Version=2011-06-15".into();
        assert!(
            reason(precheck(&cfg(), &req.clone().into_bearer().unwrap(), now()))
                .contains("exactly Action=GetCallerIdentity")
        );
        req.body = berth_api::iam::GET_CALLER_IDENTITY_BODY.into();
        req.method = "GET".into();
        assert!(
            reason(precheck(&cfg(), &req.clone().into_bearer().unwrap(), now()))
                .contains("must be a POST")
        );
        req.method = "POST".into();
        req.url = "http://127.0.0.1:5000/?Action=GetCallerIdentity".into();
        assert!(
            reason(precheck(&cfg(), &req.clone().into_bearer().unwrap(), now()))
                .contains("query string")
        );
        req.url = "http://127.0.0.1:5000/".into();
        req.headers.insert("X-Amz-Target".into(), vec!["x".into()]);
        assert!(
            reason(precheck(&cfg(), &req.clone().into_bearer().unwrap(), now()))
                .contains("not allowed: X-Amz-Target")
        );
        let mut c = cfg();
        c.allowed_sts_header_values = vec!["X-Amz-Target".into()];
        assert!(precheck(&c, &req.into_bearer().unwrap(), now()).is_ok());
    }

    #[test]
    fn aws_hosts() {
        for h in [
            "sts.amazonaws.com",
            "sts.eu-west-1.amazonaws.com",
            "sts-fips.us-east-1.amazonaws.com",
            "sts.cn-north-1.amazonaws.com.cn",
        ] {
            assert!(is_aws_host(h, "sts"), "{h}");
        }
        for h in [
            "sts.amazonaws.com.evil.com",
            "evil.com",
            "sts.eu_west.amazonaws.com",
            "stsx.amazonaws.com",
        ] {
            assert!(!is_aws_host(h, "sts"), "{h}");
        }
        let mut c = cfg();
        c.sts_endpoint.clear();
        let mut o = opts();
        o.sts_endpoint = None;
        o.region = Some("eu-west-1".into());
        assert!(precheck(&c, &bearer(&o, None, SystemTime::now()), now()).is_ok());
    }

    #[test]
    fn old_and_future_signatures() {
        let old = SystemTime::now() - Duration::from_secs(16 * 60);
        assert!(reason(precheck(&cfg(), &bearer(&opts(), None, old), now())).contains("expired"));
        let future = SystemTime::now() + Duration::from_secs(16 * 60);
        assert!(reason(precheck(&cfg(), &bearer(&opts(), None, future), now())).contains("future"));
    }

    #[test]
    fn entity_details_are_required_and_signed() {
        let mut c = cfg();
        c.enable_iam_entity_details = true;
        c.iam_endpoint = "http://127.0.0.1:5000".into();
        let b = bearer(&opts(), None, SystemTime::now());
        assert!(reason(precheck(&c, &b, now())).contains("needs IAM entity details"));
        let mut o = opts();
        o.iam_endpoint = Some("http://127.0.0.1:5000".into());
        let b = bearer(&o, Some((true, "web")), SystemTime::now());
        let entity = precheck(&c, &b, now()).unwrap().entity;
        assert_eq!(
            entity.unwrap().body,
            "Action=GetRole&RoleName=web&Version=2010-05-08"
        );
    }

    #[test]
    fn callers_entities_and_bindings() {
        let sts = "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/web/s1</Arn><UserId>AROAXYZ:s1</UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";
        let mut caller = parse_caller(sts).unwrap();
        assert_eq!(caller.canonical_arn, "arn:aws:iam::123456789012:role/web");
        assert!(bound(&cfg(), &caller));

        let iam = "<GetRoleResponse><GetRoleResult><Role><Path>/berth/</Path><Arn>arn:aws:iam::123456789012:role/berth/web</Arn><RoleName>web</RoleName><RoleId>AROAXYZ</RoleId><Tags><member><Key>berth.service-name</Key><Value>web</Value></member></Tags></Role></GetRoleResult></GetRoleResponse>";
        let mut wrong = caller.clone();
        wrong.user_id = "AROAOTHER:s1".into();
        assert!(
            add_entity(&mut wrong, iam)
                .unwrap_err()
                .to_string()
                .contains("unique ID")
        );
        add_entity(&mut caller, iam).unwrap();

        let mut c = cfg();
        c.enable_iam_entity_details = true;
        c.iam_entity_tags = vec!["berth.service-name".into(), "team".into()];
        c.bound_iam_principal_arns = vec!["arn:aws:iam::123456789012:role/berth/*".into()];
        assert!(bound(&c, &caller));
        c.bound_iam_principal_arns = vec!["arn:aws:iam::123456789012:role/other/*".into()];
        assert!(!bound(&c, &caller));

        let v = variables(&c, &caller);
        assert_eq!(v.vars["entity_tags.berth.service-name"], "web");
        assert_eq!(v.vars["entity_path"], "/berth/");
        assert_eq!(v.vars["entity_id"], "AROAXYZ");
        assert!(!v.vars.contains_key("entity_tags.team"));
        assert_eq!(v.selectable["entity_tags"]["team"], "");
    }

    #[test]
    fn configs() {
        let ok = json!({"BoundIAMPrincipalARNs": ["arn:aws:iam::1:role/x"]});
        assert!(Config::from_value(&ok).is_ok());
        for (bad, why) in [
            (json!({}), "BoundIAMPrincipalARNs is required"),
            (
                json!({"BoundIAMPrincipalARNs": ["arn:aws:iam::1:role/*"]}),
                "EnableIAMEntityDetails",
            ),
            (
                json!({"BoundIAMPrincipalARNs": ["x"]}),
                "Invalid principal ARN",
            ),
            (
                json!({"BoundIAMPrincipalARNs": ["arn:a"], "IAMEntityTags": ["t"]}),
                "IAMEntityTags",
            ),
            (
                json!({"BoundIAMPrincipalARNs": ["arn:a"], "Bogus": 1}),
                "unknown field",
            ),
            (
                json!({"BoundIAMPrincipalARNs": ["arn:a"], "STSEndpoint": "ftp://x"}),
                "http(s)",
            ),
        ] {
            let e = Config::from_value(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn xml_answers() {
        assert_eq!(
            aws_error(
                "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error></ErrorResponse>"
            ),
            "SignatureDoesNotMatch: bad"
        );
        assert_eq!(berth_api::iam::xml_unescape("a&amp;lt;"), "a&lt;");
    }
}
