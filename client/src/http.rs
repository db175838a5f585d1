//! Where the server is, which token to send, and a small typed helper over reqwest that turns
//! an answer other than 2xx into an error carrying the server's status and text.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8500";
pub const TOKEN_ENV: &str = "BERTH_HTTP_TOKEN";
pub const TOKEN_FILE_ENV: &str = "BERTH_HTTP_TOKEN_FILE";
pub const TOKEN_HEADER: &str = "X-Consul-Token";

/// The flags every command that talks to a server takes (Consul's HTTP API flags).
#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// The server's HTTP API: `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`.
    #[arg(
        long = "http-addr",
        global = true,
        help_heading = "HTTP API Options",
        env = "BERTH_HTTP_ADDR",
        default_value = DEFAULT_ADDR,
        value_name = "ADDR"
    )]
    pub http_addr: String,

    /// ACL token sent as X-Consul-Token [env: BERTH_HTTP_TOKEN]. Precedence: -token,
    /// -token-file, BERTH_HTTP_TOKEN, BERTH_HTTP_TOKEN_FILE.
    #[arg(
        long,
        global = true,
        help_heading = "HTTP API Options",
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// File holding the ACL token; surrounding whitespace is trimmed [env: BERTH_HTTP_TOKEN_FILE].
    #[arg(
        long = "token-file",
        global = true,
        help_heading = "HTTP API Options",
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,

    /// CA certificate (PEM) to verify an HTTPS server with, instead of the system roots.
    #[arg(
        long = "ca-file",
        global = true,
        help_heading = "HTTP API Options",
        env = "BERTH_CACERT",
        value_name = "FILE"
    )]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for servers that verify HTTPS clients; needs --client-key.
    #[arg(
        long = "client-cert",
        global = true,
        help_heading = "HTTP API Options",
        env = "BERTH_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,

    /// Private key (PEM) of --client-cert.
    #[arg(
        long = "client-key",
        global = true,
        help_heading = "HTTP API Options",
        env = "BERTH_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

impl HttpArgs {
    /// The token to send: the flags first, then the environment.
    pub fn resolve_token(&self) -> anyhow::Result<Option<String>> {
        let env = std::env::var(TOKEN_ENV).ok();
        let env_file = std::env::var_os(TOKEN_FILE_ENV).map(PathBuf::from);
        resolve_token(
            self.token.as_deref(),
            self.token_file.as_deref(),
            env.as_deref(),
            env_file.as_deref(),
        )
    }
}

/// `-token` > `-token-file` > `BERTH_HTTP_TOKEN` > `BERTH_HTTP_TOKEN_FILE`; empty values count
/// as unset. A token file that cannot be read, or holds only whitespace, is an error.
pub fn resolve_token(
    flag: Option<&str>,
    flag_file: Option<&Path>,
    env: Option<&str>,
    env_file: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    fn given(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    fn given_path(p: Option<&Path>) -> Option<&Path> {
        p.filter(|p| !p.as_os_str().is_empty())
    }
    for (token, file) in [(flag, flag_file), (env, env_file)] {
        if let Some(t) = given(token) {
            return Ok(Some(t.to_string()));
        }
        if let Some(f) = given_path(file) {
            return read_secret_file(f, "token file").map(Some);
        }
    }
    Ok(None)
}

/// The content of `path` without surrounding whitespace; `what` (e.g. "token file") names the
/// file in errors. A file holding only whitespace is an error too.
pub fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("{what} {} is empty", path.display());
    }
    Ok(secret.to_string())
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// `host:port` becomes `http://host:port`; `http://` and `https://` are kept; anything else
/// (another scheme, no host) is refused.
pub fn parse_addr(addr: &str) -> anyhow::Result<Url> {
    let addr = addr.trim();
    if addr.is_empty() {
        bail!("-http-addr is empty");
    }
    let full = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let url = Url::parse(&full).with_context(|| format!("invalid -http-addr {addr:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "invalid -http-addr {addr:?}: scheme {:?} is not supported (http or https)",
            url.scheme()
        );
    }
    if url.host_str().is_none_or(str::is_empty) || url.cannot_be_a_base() {
        bail!("invalid -http-addr {addr:?}: no host");
    }
    Ok(url)
}

/// A request that did not come back with 2xx and JSON.
#[derive(Debug)]
pub enum ApiError {
    /// The server answered with this status and (plain-text) body.
    Status { status: StatusCode, body: String },
    /// No answer: connection refused, TLS failure, timeout...
    Transport { url: String, reason: String },
    /// A 2xx answer that is not JSON.
    Decode { url: String, reason: String },
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Status { status, body } => {
                let body = body.trim();
                if body.is_empty() || body == "null" {
                    write!(f, "{status}")
                } else {
                    write!(f, "{status}: {body}")
                }
            }
            ApiError::Transport { url, reason } => write!(f, "cannot reach {url}: {reason}"),
            ApiError::Decode { url, reason } => {
                write!(f, "the answer of {url} is not JSON: {reason}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// The causes of a reqwest error, without the top line (which repeats the URL with its query).
fn reason_of(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        src = s.source();
    }
    if parts.is_empty() {
        if e.is_timeout() {
            return "timed out".to_string();
        }
        return e.to_string();
    }
    parts.join(": ")
}

/// A client of one server's `/v1` API with one token.
pub struct Api {
    base: Url,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    /// The address and TLS settings of `args`, and the token they (or the environment) name.
    pub fn new(args: &HttpArgs) -> anyhow::Result<Api> {
        let token = args.resolve_token()?;
        Api::with_token(args, token)
    }

    pub fn with_token(args: &HttpArgs, token: Option<String>) -> anyhow::Result<Api> {
        let base = parse_addr(&args.http_addr)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &args.ca_file {
            let pem = read_file(ca, "CA file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("CA file {} is not PEM", ca.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            let mut pem = read_file(cert, "client certificate")?;
            pem.push(b'\n');
            pem.extend(read_file(key, "client key")?);
            let id = reqwest::Identity::from_pem(&pem).with_context(|| {
                format!(
                    "invalid client certificate {} or key {}",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(id);
        }
        let client = builder.build().context("cannot set up the HTTP client")?;
        Ok(Api {
            base,
            token,
            client,
        })
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `base` + `/v1/<segments...>` (each segment percent-encoded) + the non-empty query pairs.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        let pairs: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !pairs.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
        }
        url
    }

    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = self.url(segments, query);
        let shown = {
            let mut u = url.clone();
            u.set_query(None);
            u.to_string()
        };
        let mut req = self.client.request(method, url);
        if let Some(t) = &self.token {
            req = req.header(TOKEN_HEADER, t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let transport = |e: reqwest::Error| ApiError::Transport {
            url: shown.clone(),
            reason: reason_of(&e),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ApiError::Status { status, body: text });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ApiError::Decode {
            url: shown,
            reason: e.to_string(),
        })
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Value, ApiError> {
        self.request(Method::GET, segments, query, None).await
    }

    pub async fn put(&self, segments: &[&str], body: Option<&Value>) -> Result<Value, ApiError> {
        self.request(Method::PUT, segments, &[], body).await
    }

    pub async fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Value, ApiError> {
        self.request(Method::POST, segments, &[], body).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value, ApiError> {
        self.request(Method::DELETE, segments, &[], None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme_and_bad_ones_are_refused() {
        assert_eq!(
            parse_addr("127.0.0.1:8500").unwrap().as_str(),
            "http://127.0.0.1:8500/"
        );
        assert_eq!(
            parse_addr("https://berth.example:8501").unwrap().as_str(),
            "https://berth.example:8501/"
        );
        assert_eq!(
            parse_addr(" http://localhost:1/ ").unwrap().as_str(),
            "http://localhost:1/"
        );
        assert!(parse_addr("").is_err());
        assert!(parse_addr("unix:///tmp/sock").is_err());
        assert!(parse_addr("http://").is_err());
    }

    #[test]
    fn urls_encode_segments_and_skip_empty_query_values() {
        let api = Api::with_token(
            &HttpArgs {
                http_addr: "127.0.0.1:8500".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(
            api.url(&["acl", "policy", "name", "a b/c"], &[]).as_str(),
            "http://127.0.0.1:8500/v1/acl/policy/name/a%20b%2Fc"
        );
        assert_eq!(
            api.url(&["acl", "tokens"], &[("policy", "p1"), ("role", "")])
                .as_str(),
            "http://127.0.0.1:8500/v1/acl/tokens?policy=p1"
        );
    }

    #[test]
    fn token_precedence_is_flag_then_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let f1 = dir.path().join("flag-file");
        let f2 = dir.path().join("env-file");
        std::fs::write(&f1, "  from-flag-file\n").unwrap();
        std::fs::write(&f2, "from-env-file\n").unwrap();
        let r = |a, b, c, d| resolve_token(a, b, c, d).unwrap();
        assert_eq!(
            r(
                Some("flag"),
                Some(f1.as_path()),
                Some("env"),
                Some(f2.as_path())
            )
            .as_deref(),
            Some("flag")
        );
        assert_eq!(
            r(None, Some(f1.as_path()), Some("env"), Some(f2.as_path())).as_deref(),
            Some("from-flag-file")
        );
        assert_eq!(
            r(None, None, Some("env"), Some(f2.as_path())).as_deref(),
            Some("env")
        );
        assert_eq!(
            r(Some(""), None, Some(""), Some(f2.as_path())).as_deref(),
            Some("from-env-file")
        );
        assert_eq!(r(None, None, None, None), None);
    }

    #[test]
    fn missing_or_empty_token_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = resolve_token(None, Some(&missing), None, None).unwrap_err();
        assert!(format!("{e:#}").contains(&missing.display().to_string()));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = resolve_token(None, None, None, Some(&empty)).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }

    #[test]
    fn status_errors_show_status_and_text() {
        let e = ApiError::Status {
            status: StatusCode::FORBIDDEN,
            body: "ACL not found\n".into(),
        };
        assert_eq!(e.to_string(), "403 Forbidden: ACL not found");
        let e = ApiError::Status {
            status: StatusCode::NOT_FOUND,
            body: "null".into(),
        };
        assert_eq!(e.to_string(), "404 Not Found");
    }
}
