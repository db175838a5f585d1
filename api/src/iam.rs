//! The client half of the `aws-iam` auth method: a bearer token that carries a SigV4-signed,
//! unsent `sts:GetCallerIdentity` request (and optionally a signed `iam:GetRole` request in
//! `X-Consul-IAM-GetEntity-*` headers), in the JSON shape Consul's login tooling produces.
//!
//! The server replays the signed request to STS, so it learns who the caller is without ever
//! seeing the caller's credentials.

use crate::error_chain;
use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

pub const SERVER_ID_HEADER: &str = "X-Consul-IAM-ServerID";
pub const GET_ENTITY_METHOD_HEADER: &str = "X-Consul-IAM-GetEntity-Method";
pub const GET_ENTITY_URL_HEADER: &str = "X-Consul-IAM-GetEntity-URL";
pub const GET_ENTITY_HEADERS_HEADER: &str = "X-Consul-IAM-GetEntity-Headers";
pub const GET_ENTITY_BODY_HEADER: &str = "X-Consul-IAM-GetEntity-Body";

pub const GET_CALLER_IDENTITY_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// IAM is a global service, signed for us-east-1 in the commercial partition.
const IAM_SIGNING_REGION: &str = "us-east-1";
const DEFAULT_IAM_ENDPOINT: &str = "https://iam.amazonaws.com";

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("no AWS credentials: {0}")]
    NoCredentials(String),
    #[error("cannot sign the request: {0}")]
    Sign(String),
    #[error("cannot reach STS at {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("STS answered {status}: {body}")]
    Aws { status: u16, body: String },
    #[error("unexpected caller ARN {0:?}")]
    BadArn(String),
}

/// What `berth login -type aws-iam` (and `berth-mesh-init`) are told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginOptions {
    /// Also sign an `iam:GetRole` request, for methods with `EnableIAMEntityDetails`.
    pub include_entity: bool,
    /// The `X-Consul-IAM-ServerID` value the auth method expects (`ServerIDHeaderValue`).
    pub server_id_header_value: Option<String>,
    /// Default: `https://sts.<region>.amazonaws.com`, or the global endpoint without a region.
    pub sts_endpoint: Option<String>,
    /// Signing region of the STS request; default: the SDK's region, else us-east-1.
    pub region: Option<String>,
    /// Default: `https://iam.amazonaws.com`.
    pub iam_endpoint: Option<String>,
}

/// The bearer token's JSON, as Consul's `iamauth` package writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BearerToken {
    pub iam_http_request_method: String,
    /// Base64.
    pub iam_request_url: String,
    /// Base64.
    pub iam_request_body: String,
    /// Base64 of a JSON object of header name to list of values.
    pub iam_request_headers: String,
}

/// A signed request, not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub method: String,
    pub url: String,
    pub body: String,
    pub headers: BTreeMap<String, Vec<String>>,
}

impl SignedRequest {
    pub fn into_bearer(self) -> Result<String, IamError> {
        let headers =
            serde_json::to_vec(&self.headers).map_err(|e| IamError::Sign(e.to_string()))?;
        let t = BearerToken {
            iam_http_request_method: self.method,
            iam_request_url: B64.encode(self.url),
            iam_request_body: B64.encode(self.body),
            iam_request_headers: B64.encode(headers),
        };
        serde_json::to_string(&t).map_err(|e| IamError::Sign(e.to_string()))
    }
}

/// The STS endpoint and signing region the options resolve to.
pub fn sts_target(opts: &LoginOptions, sdk_region: Option<&str>) -> (String, String) {
    let region = opts
        .region
        .clone()
        .or_else(|| sdk_region.map(str::to_string));
    let endpoint = match (&opts.sts_endpoint, &region) {
        (Some(e), _) => e.trim_end_matches('/').to_string(),
        (None, Some(r)) => format!("https://sts.{r}.amazonaws.com"),
        (None, None) => "https://sts.amazonaws.com".to_string(),
    };
    (endpoint, region.unwrap_or_else(|| "us-east-1".to_string()))
}

/// Signs `body` as a form POST to `url` for `service` in `region`; `extra` headers are signed
/// too. Pure apart from the clock value it is given.
pub fn sign_post(
    creds: &Credentials,
    service: &str,
    region: &str,
    url: &str,
    body: &str,
    extra: &[(String, String)],
    time: SystemTime,
) -> Result<SignedRequest, IamError> {
    // Normalized as it will be sent: `http://h:1` becomes `http://h:1/`.
    let url = reqwest::Url::parse(url)
        .map_err(|e| IamError::Sign(format!("bad endpoint {url:?}: {e}")))?
        .to_string();
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| IamError::Sign(e.to_string()))?
        .into();
    let mut headers: Vec<(String, String)> =
        vec![("Content-Type".to_string(), FORM_CONTENT_TYPE.to_string())];
    headers.extend(extra.iter().cloned());
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| IamError::Sign(e.to_string()))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| IamError::Sign(e.to_string()))?
        .into_parts();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &headers {
        out.entry(k.clone()).or_default().push(v.clone());
    }
    for (k, v) in instructions.headers() {
        out.entry(canonical_header_name(k))
            .or_default()
            .push(v.to_string());
    }
    Ok(SignedRequest {
        method: "POST".into(),
        url,
        body: body.to_string(),
        headers: out,
    })
}

/// `x-amz-date` → `X-Amz-Date`, as Go's `http.Header` keys are.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The role or user name of a caller ARN: `arn:aws:sts::1:assumed-role/R/session` → R,
/// `arn:aws:iam::1:user/path/U` → U. Also says whether it is a role.
pub fn entity_of_arn(arn: &str) -> Result<(bool, String), IamError> {
    let bad = || IamError::BadArn(arn.to_string());
    let resource = arn.splitn(6, ':').nth(5).ok_or_else(bad)?;
    let mut parts = resource.split('/');
    let kind = parts.next().ok_or_else(bad)?;
    let rest: Vec<&str> = parts.collect();
    match kind {
        "assumed-role" if rest.len() >= 2 => Ok((true, rest[0].to_string())),
        "role" if !rest.is_empty() => Ok((true, rest[rest.len() - 1].to_string())),
        "user" if !rest.is_empty() => Ok((false, rest[rest.len() - 1].to_string())),
        _ => Err(bad()),
    }
}

/// Signs the login request with explicit credentials. `entity` is the role (or user) to put in
/// a signed `GetRole`/`GetUser` request when the options ask for it.
pub fn login_request(
    creds: &Credentials,
    opts: &LoginOptions,
    sdk_region: Option<&str>,
    entity: Option<(bool, &str)>,
    time: SystemTime,
) -> Result<SignedRequest, IamError> {
    let (sts_url, region) = sts_target(opts, sdk_region);
    let mut extra = Vec::new();
    if let Some(v) = &opts.server_id_header_value {
        extra.push((SERVER_ID_HEADER.to_string(), v.clone()));
    }
    if let Some((is_role, name)) = entity {
        let iam_url = opts
            .iam_endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_IAM_ENDPOINT.to_string());
        let action = if is_role { "GetRole" } else { "GetUser" };
        let field = if is_role { "RoleName" } else { "UserName" };
        let body = format!(
            "Action={action}&{field}={}&Version=2010-05-08",
            form_escape(name)
        );
        let mut entity_extra = Vec::new();
        if let Some(v) = &opts.server_id_header_value {
            entity_extra.push((SERVER_ID_HEADER.to_string(), v.clone()));
        }
        let req = sign_post(
            creds,
            "iam",
            IAM_SIGNING_REGION,
            &iam_url,
            &body,
            &entity_extra,
            time,
        )?;
        let headers =
            serde_json::to_string(&req.headers).map_err(|e| IamError::Sign(e.to_string()))?;
        extra.push((GET_ENTITY_METHOD_HEADER.to_string(), req.method));
        extra.push((GET_ENTITY_URL_HEADER.to_string(), req.url));
        extra.push((GET_ENTITY_HEADERS_HEADER.to_string(), headers));
        extra.push((GET_ENTITY_BODY_HEADER.to_string(), req.body));
    }
    sign_post(
        creds,
        "sts",
        &region,
        &sts_url,
        GET_CALLER_IDENTITY_BODY,
        &extra,
        time,
    )
}

fn form_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The text of the first `<tag>` element of an AWS XML answer.
pub fn xml_text(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = doc.find(&open)? + open.len();
    let end = doc[start..].find(&close)? + start;
    Some(xml_unescape(&doc[start..end]))
}

pub fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Credentials and region from the SDK's default chain: environment, profile, web identity,
/// ECS container credentials, instance metadata.
pub async fn default_credentials(
    region: Option<&str>,
) -> Result<(Credentials, Option<String>), IamError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    let cfg = loader.load().await;
    let provider = cfg
        .credentials_provider()
        .ok_or_else(|| IamError::NoCredentials("no credential provider configured".into()))?;
    let creds = provider
        .provide_credentials()
        .await
        .map_err(|e| IamError::NoCredentials(error_chain(&e)))?;
    Ok((creds, cfg.region().map(|r| r.to_string())))
}

/// Sends a signed request (the client's own `GetCallerIdentity`, to learn its role name).
async fn send(req: &SignedRequest) -> Result<String, IamError> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| IamError::Http {
            url: req.url.clone(),
            reason: e.to_string(),
        })?;
    let mut b = client.post(&req.url).body(req.body.clone());
    for (k, vs) in &req.headers {
        for v in vs {
            b = b.header(k, v);
        }
    }
    let resp = b.send().await.map_err(|e| IamError::Http {
        url: req.url.clone(),
        reason: error_chain(&e),
    })?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if status != 200 {
        return Err(IamError::Aws { status, body });
    }
    Ok(body)
}

/// The whole client side: credentials from the default chain, the caller's own identity when
/// the entity is wanted, and the signed bearer token.
pub async fn bearer_token(opts: &LoginOptions) -> Result<String, IamError> {
    let (creds, sdk_region) = default_credentials(opts.region.as_deref()).await?;
    bearer_token_with(&creds, sdk_region.as_deref(), opts).await
}

pub async fn bearer_token_with(
    creds: &Credentials,
    sdk_region: Option<&str>,
    opts: &LoginOptions,
) -> Result<String, IamError> {
    let entity = if opts.include_entity {
        let plain = LoginOptions {
            include_entity: false,
            ..opts.clone()
        };
        let who = login_request(creds, &plain, sdk_region, None, SystemTime::now())?;
        let answer = send(&who).await?;
        let arn = xml_text(&answer, "Arn").ok_or_else(|| IamError::Aws {
            status: 200,
            body: format!("no Arn in GetCallerIdentity answer: {answer}"),
        })?;
        Some(entity_of_arn(&arn)?)
    } else {
        None
    };
    let entity_ref = entity.as_ref().map(|(r, n)| (*r, n.as_str()));
    login_request(creds, opts, sdk_region, entity_ref, SystemTime::now())?.into_bearer()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session".into()),
            None,
            "test",
        )
    }

    #[test]
    fn bearer_carries_a_signed_get_caller_identity() {
        let opts = LoginOptions {
            server_id_header_value: Some("berth.example".into()),
            sts_endpoint: Some("http://127.0.0.1:5000".into()),
            ..Default::default()
        };
        let req = login_request(&creds(), &opts, None, None, SystemTime::now()).unwrap();
        assert_eq!(req.url, "http://127.0.0.1:5000/");
        assert_eq!(req.body, GET_CALLER_IDENTITY_BODY);
        let auth = &req.headers["Authorization"][0];
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/sts/aws4_request"), "{auth}");
        assert!(auth.contains("x-consul-iam-serverid"), "{auth}");
        assert_eq!(req.headers["X-Amz-Security-Token"], vec!["session"]);
        let bearer: BearerToken = serde_json::from_str(&req.into_bearer().unwrap()).unwrap();
        assert_eq!(bearer.iam_http_request_method, "POST");
        assert_eq!(
            B64.decode(bearer.iam_request_url).unwrap(),
            b"http://127.0.0.1:5000/"
        );
    }

    #[test]
    fn entity_headers_are_signed() {
        let opts = LoginOptions::default();
        let req = login_request(
            &creds(),
            &opts,
            Some("eu-west-1"),
            Some((true, "web")),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(req.url, "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(
            req.headers[GET_ENTITY_BODY_HEADER],
            vec!["Action=GetRole&RoleName=web&Version=2010-05-08"]
        );
        let auth = &req.headers["Authorization"][0];
        for h in [
            "x-consul-iam-getentity-body",
            "x-consul-iam-getentity-headers",
        ] {
            assert!(auth.contains(h), "{h} unsigned: {auth}");
        }
    }

    #[test]
    fn arns() {
        assert_eq!(
            entity_of_arn("arn:aws:sts::123456789012:assumed-role/web/i-1").unwrap(),
            (true, "web".into())
        );
        assert_eq!(
            entity_of_arn("arn:aws:iam::123456789012:user/ops/alice").unwrap(),
            (false, "alice".into())
        );
        assert!(entity_of_arn("arn:aws:s3:::bucket").is_err());
        assert!(entity_of_arn("nonsense").is_err());
    }

    #[test]
    fn xml() {
        let doc = "<R><Arn>arn:a&amp;b</Arn><UserId>X</UserId></R>";
        assert_eq!(xml_text(doc, "Arn").as_deref(), Some("arn:a&b"));
        assert_eq!(xml_text(doc, "Nope"), None);
    }
}
