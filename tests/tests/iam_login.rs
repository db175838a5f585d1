//! The aws-iam auth method end to end: a real moto server that verifies SigV4 signatures and
//! enforces IAM policies, a real berth-server, and the `berth login` CLI. A role at path
//! /berth/ tagged `berth.service-name=web`, assumed through STS, logs in and gets a token
//! whose service identity is `web`; every forged, altered, misaddressed, unbound, stale or
//! replayed login is refused with a 403 and a reason.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use berth_api::iam::{LoginOptions, login_request, sign_post};
use berth_tests::acl_server::AclServer;
use berth_tests::bin;
use berth_tests::moto::Moto;
use serde_json::{Value, json};

const METHOD: &str = "berth-ecs-service";
const SERVER_ID: &str = "berth.test.example";

struct Env {
    _dir: tempfile::TempDir,
    acl: AclServer,
    moto: Moto,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (acl, moto) = tokio::join!(AclServer::start(dir.path()), Moto::start());
        let config = json!({
            "BoundIAMPrincipalARNs": ["arn:aws:iam::123456789012:role/berth/*"],
            "EnableIAMEntityDetails": true,
            "IAMEntityTags": ["berth.service-name"],
            "ServerIDHeaderValue": SERVER_ID,
            "STSEndpoint": moto.url(),
            "IAMEndpoint": moto.url(),
            "STSRegion": "us-east-1",
        });
        acl.admin(
            "PUT",
            "/v1/acl/auth-method",
            json!({"Name": METHOD, "Type": "aws-iam", "Config": config, "MaxTokenTTL": "1h"}),
        )
        .await;
        acl.admin(
            "PUT",
            "/v1/acl/binding-rule",
            json!({
                "AuthMethod": METHOD,
                "BindType": "service",
                "BindName": "${entity_tags.berth.service-name}",
                "Selector": "entity_tags[\"berth.service-name\"] != \"\"",
            }),
        )
        .await;
        Env {
            _dir: dir,
            acl,
            moto,
        }
    }

    fn creds(&self, who: &str) -> Credentials {
        let c = &self.moto.creds[who];
        Credentials::new(
            c["AccessKeyId"].as_str().unwrap(),
            c["SecretAccessKey"].as_str().unwrap(),
            c["SessionToken"].as_str().map(str::to_string),
            None,
            "moto",
        )
    }

    fn opts(&self) -> LoginOptions {
        LoginOptions {
            include_entity: true,
            server_id_header_value: Some(SERVER_ID.into()),
            sts_endpoint: Some(self.moto.url()),
            region: Some("us-east-1".into()),
            iam_endpoint: Some(self.moto.url()),
        }
    }

    /// A bearer token signed with `creds` for the `web` role's entity.
    fn bearer(&self, creds: &Credentials, opts: &LoginOptions, at: SystemTime) -> String {
        login_request(creds, opts, None, Some((true, "web")), at)
            .unwrap()
            .into_bearer()
            .unwrap()
    }

    async fn login(&self, bearer: &str) -> berth_tests::Reply {
        self.acl
            .call(
                "PUT",
                "/v1/acl/login",
                None,
                Some(json!({"AuthMethod": METHOD, "BearerToken": bearer, "Meta": {"berth/task-id": "t1"}})),
            )
            .await
    }

    async fn refused(&self, bearer: &str, why: &str) {
        let r = self.login(bearer).await;
        assert_eq!(r.status, 403, "expected a 403 ({why}): {}", r.text());
        assert!(
            r.text().contains("Permission denied") && r.text().contains(why),
            "expected {why:?} in: {}",
            r.text()
        );
        // Nothing was made.
        let tokens = self
            .acl
            .admin_get(&format!("/v1/acl/tokens?authmethod={METHOD}"))
            .await;
        assert_eq!(tokens, json!([]), "a refused login left a token");
    }
}

/// An agent registration: a service identity grants `service:write` on its service (and
/// only `node:read`), which is what the agent endpoint asks for.
fn register(service: &str) -> Value {
    json!({"Name": service, "ID": format!("{service}-1"), "Port": 8080})
}

#[tokio::test]
async fn berth_login_with_a_task_role_gets_exactly_its_service() {
    let env = Env::start().await;
    let sink = env._dir.path().join("service-token");
    let mut cmd = Command::new(bin("berth"));
    cmd.args([
        "login",
        "-type",
        "aws-iam",
        "-method",
        METHOD,
        "-aws-auto-bearer-token",
        "-aws-include-entity",
        "-aws-server-id-header-value",
        SERVER_ID,
        "-aws-sts-endpoint",
        &env.moto.url(),
        "-aws-iam-endpoint",
        &env.moto.url(),
        "-aws-region",
        "us-east-1",
        "-http-addr",
        &format!("127.0.0.1:{}", env.acl.server.http_port),
        "-token-sink-file",
        sink.to_str().unwrap(),
        "-meta",
        "berth/task-id=abc123",
    ]);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env.moto.env_for("web") {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "berth login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = std::fs::read_to_string(&sink).unwrap().trim().to_string();
    let mode = std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token sink file must be 0600");
    // The secret never reaches the terminal.
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains(&secret),
        "login printed the secret: {printed}"
    );

    let me = env
        .acl
        .call("GET", "/v1/acl/token/self", Some(&secret), None)
        .await;
    assert_eq!(me.status, 200, "{}", me.text());
    let me = me.json();
    assert_eq!(me["AuthMethod"], METHOD);
    assert_eq!(me["ServiceIdentities"], json!([{"ServiceName": "web"}]));
    assert_eq!(
        me["Description"],
        r#"token created via login: {"berth/task-id":"abc123"}"#
    );
    assert!(
        me["ExpirationTime"].is_string(),
        "MaxTokenTTL sets an expiry: {me}"
    );

    let ok = env
        .acl
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(&secret),
            Some(register("web")),
        )
        .await;
    assert_eq!(ok.status, 200, "web may register web: {}", ok.text());
    let no = env
        .acl
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(&secret),
            Some(register("db")),
        )
        .await;
    assert_eq!(no.status, 403, "web may not register db: {}", no.text());
    assert!(no.text().contains("Permission denied"), "{}", no.text());

    // Neither the new token's secret nor the signed request reached the server's log.
    let log = std::fs::read_to_string(&env.acl.server.log).unwrap();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "the server logs at debug level"
    );
    assert!(!log.contains(&secret), "the server logged a token secret");
    let web_secret = env.moto.creds["web"]["SessionToken"].as_str().unwrap();
    assert!(
        !log.contains(web_secret),
        "the server logged the caller's session token"
    );

    // berth logout deletes the login token.
    let out = Command::new(bin("berth"))
        .args([
            "logout",
            "-http-addr",
            &format!("127.0.0.1:{}", env.acl.server.http_port),
            "-token-file",
            sink.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = env
        .acl
        .call("GET", "/v1/acl/token/self", Some(&secret), None)
        .await;
    assert_eq!(gone.status, 403);
    assert!(gone.text().contains("ACL not found"), "{}", gone.text());
}

#[tokio::test]
async fn a_signed_request_logs_in_once() {
    let env = Env::start().await;
    let bearer = env.bearer(&env.creds("web"), &env.opts(), SystemTime::now());
    let first = env.login(&bearer).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = env.login(&bearer).await;
    assert_eq!(second.status, 403, "{}", second.text());
    assert!(second.text().contains("already used"), "{}", second.text());
    let tokens = env
        .acl
        .admin_get(&format!("/v1/acl/tokens?authmethod={METHOD}"))
        .await;
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
}

#[tokio::test]
async fn forged_and_unknown_credentials_are_refused_by_sts() {
    let env = Env::start().await;
    let good = env.creds("web");
    let wrong_secret = Credentials::new(
        good.access_key_id(),
        "not-the-secret",
        good.session_token().map(str::to_string),
        None,
        "forged",
    );
    env.refused(
        &env.bearer(&wrong_secret, &env.opts(), SystemTime::now()),
        "SignatureDoesNotMatch",
    )
    .await;
    let unknown = Credentials::new("AKIAUNKNOWNKEY000000", "whatever", None, None, "forged");
    env.refused(
        &env.bearer(&unknown, &env.opts(), SystemTime::now()),
        "InvalidClientTokenId",
    )
    .await;
}

#[tokio::test]
async fn requests_for_other_hosts_are_refused_without_a_connection() {
    let env = Env::start().await;
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let mut opts = env.opts();
    opts.sts_endpoint = Some(format!("http://{}", trap.local_addr().unwrap()));
    env.refused(
        &env.bearer(&env.creds("web"), &opts, SystemTime::now()),
        "which this auth method does not allow",
    )
    .await;
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the server connected to a host outside the allow-list"
    );
    // The entity request is held to the same rule.
    let mut opts = env.opts();
    opts.iam_endpoint = Some(format!("http://{}", trap.local_addr().unwrap()));
    env.refused(
        &env.bearer(&env.creds("web"), &opts, SystemTime::now()),
        "which this auth method does not allow",
    )
    .await;
    assert!(matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
}

#[tokio::test]
async fn the_server_id_header_must_be_present_right_and_signed() {
    let env = Env::start().await;
    let creds = env.creds("web");
    let mut opts = env.opts();
    opts.server_id_header_value = None;
    env.refused(
        &env.bearer(&creds, &opts, SystemTime::now()),
        "no X-Consul-IAM-ServerID header",
    )
    .await;
    opts.server_id_header_value = Some("another-berth".into());
    env.refused(
        &env.bearer(&creds, &opts, SystemTime::now()),
        "does not name this server",
    )
    .await;
    // Signed without it, then added: the value is right, the signature does not cover it.
    opts.server_id_header_value = None;
    let mut req =
        login_request(&creds, &opts, None, Some((true, "web")), SystemTime::now()).unwrap();
    req.headers
        .insert("X-Consul-IAM-ServerID".into(), vec![SERVER_ID.into()]);
    env.refused(&req.into_bearer().unwrap(), "not among the signed headers")
        .await;
}

#[tokio::test]
async fn another_action_a_stale_signature_and_an_unbound_role_are_refused() {
    let env = Env::start().await;
    let creds = env.creds("web");
    // Validly signed, but not GetCallerIdentity.
    let other = sign_post(
        &creds,
        "sts",
        "us-east-1",
        &env.moto.url(),
        "Action=GetSessionToken&Version=2011-06-15",
        &[("X-Consul-IAM-ServerID".to_string(), SERVER_ID.to_string())],
        SystemTime::now(),
    )
    .unwrap();
    env.refused(
        &other.into_bearer().unwrap(),
        "must be exactly Action=GetCallerIdentity",
    )
    .await;

    let stale = SystemTime::now() - Duration::from_secs(20 * 60);
    env.refused(&env.bearer(&creds, &env.opts(), stale), "expired")
        .await;

    // The outsider role is real and signs correctly, but lives at /other/.
    let outsider = login_request(
        &env.creds("outsider"),
        &env.opts(),
        None,
        Some((true, "outsider")),
        SystemTime::now(),
    )
    .unwrap();
    env.refused(
        &outsider.into_bearer().unwrap(),
        "is not in the auth method's BoundIAMPrincipalARNs",
    )
    .await;

    // The entity request names another entity than the caller (an administrator, who may
    // read the web role, signs for it).
    let mismatched = login_request(
        &env.creds("admin"),
        &env.opts(),
        None,
        Some((true, "web")),
        SystemTime::now(),
    )
    .unwrap();
    env.refused(&mismatched.into_bearer().unwrap(), "not the caller")
        .await;
}

#[tokio::test]
async fn login_input_errors() {
    let env = Env::start().await;
    for (body, status, why) in [
        (json!({"BearerToken": "x"}), 400, "Missing auth method name"),
        (
            json!({"AuthMethod": METHOD}),
            400,
            "Missing auth method bearer token",
        ),
        (
            json!({"AuthMethod": "nope", "BearerToken": "x"}),
            403,
            "ACL not found",
        ),
        (
            json!({"AuthMethod": METHOD, "BearerToken": "{not json"}),
            403,
            "not an aws-iam login token",
        ),
    ] {
        let r = env
            .acl
            .call("PUT", "/v1/acl/login", None, Some(body.clone()))
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.text().contains(why), "{body}: {}", r.text());
    }
    // A method config that cannot work is refused when written.
    let r = env
        .acl
        .call(
            "PUT",
            "/v1/acl/auth-method",
            Some(&env.acl.root),
            Some(json!({"Name": "bad", "Type": "aws-iam", "Config": {"BoundIAMPrincipalARNs": ["arn:aws:iam::1:role/*"]}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("EnableIAMEntityDetails"), "{}", r.text());
}
