//! `berth login` and `berth logout`: trade a bearer token (a JWT, or a signed AWS request) for
//! an ACL token, written to a 0600 file; and destroy such a token again.
//!
//! Neither the bearer token nor the SecretID is ever printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::Usage;
use crate::http::{Api, HttpArgs, read_secret_file};

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub http: HttpArgs,

    /// The auth method to log in with.
    #[arg(long)]
    pub method: String,

    /// The auth method's type; -aws-auto-bearer-token needs aws-iam.
    #[arg(long = "type", value_parser = ["aws-iam", "jwt"])]
    pub kind: Option<String>,

    /// File holding the bearer token (e.g. a JWT).
    #[arg(long = "bearer-token-file", value_name = "FILE")]
    pub bearer_token_file: Option<PathBuf>,

    /// Where to write the SecretID of the new token (mode 0600).
    #[arg(long = "token-sink-file", value_name = "FILE")]
    pub token_sink_file: PathBuf,

    /// Metadata for the new token, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,

    /// Build the bearer token from the AWS credentials found the SDK's usual way (aws-iam).
    #[arg(long = "aws-auto-bearer-token", conflicts_with = "bearer_token_file")]
    pub aws_auto_bearer_token: bool,

    /// Also sign an iam:GetRole (or GetUser) request, for methods with EnableIAMEntityDetails.
    #[arg(long = "aws-include-entity", requires = "aws_auto_bearer_token")]
    pub aws_include_entity: bool,

    /// The X-Consul-IAM-ServerID header value the auth method expects.
    #[arg(
        long = "aws-server-id-header-value",
        value_name = "VALUE",
        requires = "aws_auto_bearer_token"
    )]
    pub aws_server_id_header_value: Option<String>,

    /// The STS endpoint to sign for (default: the region's).
    #[arg(
        long = "aws-sts-endpoint",
        value_name = "URL",
        requires = "aws_auto_bearer_token"
    )]
    pub aws_sts_endpoint: Option<String>,

    /// The region to sign the STS request for (default: the SDK's, else us-east-1).
    #[arg(
        long = "aws-region",
        value_name = "REGION",
        requires = "aws_auto_bearer_token"
    )]
    pub aws_region: Option<String>,

    /// The IAM endpoint to sign for (default: https://iam.amazonaws.com).
    #[arg(
        long = "aws-iam-endpoint",
        value_name = "URL",
        requires = "aws_auto_bearer_token"
    )]
    pub aws_iam_endpoint: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub http: HttpArgs,
}

/// `key=value`; the value may be empty, the key may not.
pub fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        Some(_) => Err(format!("{s:?} has no key (expected KEY=VALUE)")),
        None => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The body of `POST /v1/acl/login`.
pub fn login_body(method: &str, bearer: &str, meta: &[(String, String)]) -> Value {
    let meta: BTreeMap<&str, &str> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut body = json!({ "AuthMethod": method, "BearerToken": bearer });
    if !meta.is_empty() {
        body["Meta"] = json!(meta);
    }
    body
}

/// How the bearer token is obtained.
#[derive(Debug, PartialEq, Eq)]
enum Bearer<'a> {
    File(&'a Path),
    Aws,
}

fn bearer_source(a: &LoginArgs) -> Result<Bearer<'_>, Usage> {
    match (&a.bearer_token_file, a.aws_auto_bearer_token) {
        (Some(_), true) => Err(Usage(
            "-bearer-token-file and -aws-auto-bearer-token cannot be used together".into(),
        )),
        (Some(f), false) => Ok(Bearer::File(f)),
        (None, true) => match a.kind.as_deref() {
            None | Some("aws-iam") => Ok(Bearer::Aws),
            Some(other) => Err(Usage(format!(
                "-aws-auto-bearer-token needs -type aws-iam, not {other:?}"
            ))),
        },
        (None, false) => Err(Usage(
            "missing -bearer-token-file (or -type aws-iam -aws-auto-bearer-token)".into(),
        )),
    }
}

/// Writes `secret` to `path` with mode 0600, atomically.
pub fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    berth_api::secret_file::write_secret_file(path, secret)
        .map_err(|e| anyhow::anyhow!("cannot write the token to {}: {e}", path.display()))
}

/// Replaces every occurrence of the secrets in `text`.
fn redact(text: String, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 8)
        .fold(text, |t, s| t.replace(s, "<redacted>"))
}

pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    let source = bearer_source(&a)?;
    // Login needs no token; do not send one that happens to be in the environment.
    let api = Api::with_token(&a.http, None)?;
    let bearer = match source {
        Bearer::File(f) => read_secret_file(f, "bearer token file")?,
        Bearer::Aws => {
            let opts = berth_api::iam::LoginOptions {
                include_entity: a.aws_include_entity,
                server_id_header_value: a.aws_server_id_header_value.clone(),
                sts_endpoint: a.aws_sts_endpoint.clone(),
                region: a.aws_region.clone(),
                iam_endpoint: a.aws_iam_endpoint.clone(),
            };
            berth_api::iam::bearer_token(&opts)
                .await
                .map_err(|e| anyhow::anyhow!("cannot build the AWS bearer token: {e}"))?
        }
    };
    let body = login_body(&a.method, &bearer, &a.meta);
    let token = match api.post(&["acl", "login"], Some(&body)).await {
        Ok(t) => t,
        Err(e) => bail!(
            "cannot log in with auth method {:?}: {}",
            a.method,
            redact(e.to_string(), &[&bearer])
        ),
    };
    let secret = token
        .get("SecretID")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .context("the server's answer to the login has no SecretID")?;
    write_secret_file(&a.token_sink_file, secret)
}

pub async fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.http)?;
    if api.token().is_none() {
        return Err(Usage(
            "no token to log out: give -token or -token-file (or set BERTH_HTTP_TOKEN)".into(),
        )
        .into());
    }
    api.post(&["acl", "logout"], None)
        .await
        .context("cannot log out")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn meta_is_key_equals_value() {
        assert_eq!(
            parse_meta("task=abc").unwrap(),
            ("task".into(), "abc".into())
        );
        assert_eq!(parse_meta("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_meta("empty=").unwrap(), ("empty".into(), "".into()));
        assert!(parse_meta("novalue").is_err());
        assert!(parse_meta("=v").is_err());
    }

    #[test]
    fn login_body_carries_method_bearer_and_meta() {
        assert_eq!(
            login_body("jwt", "eyJ.x.y", &[]),
            json!({"AuthMethod": "jwt", "BearerToken": "eyJ.x.y"})
        );
        assert_eq!(
            login_body(
                "jwt",
                "b",
                &[("k".into(), "1".into()), ("k".into(), "2".into())]
            ),
            json!({"AuthMethod": "jwt", "BearerToken": "b", "Meta": {"k": "2"}})
        );
    }

    #[test]
    fn sink_files_are_0600_even_when_they_existed() {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("token");
        std::fs::write(&sink, "old").unwrap();
        std::fs::set_permissions(&sink, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret_file(&sink, "s3cr3t").unwrap();
        assert_eq!(std::fs::read_to_string(&sink).unwrap(), "s3cr3t");
        let mode = std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file is left behind");
        let e = write_secret_file(&dir.path().join("no/such/dir/token"), "x").unwrap_err();
        assert!(e.to_string().contains("no/such/dir/token"), "{e}");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("bad token abcdefghij here".into(), &["abcdefghij"]),
            "bad token <redacted> here"
        );
    }
}
