//! The jwt auth method end to end, for workloads outside AWS: `berth login -type jwt` with a
//! JWT verified by a static public key, and one verified through a JWKS URL (served by the
//! test on loopback); claims mapped to variables drive the binding rules.

use std::process::Command;

use berth_tests::acl_server::AclServer;
use berth_tests::{bin, free_port};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.berth.test";

fn keypair() -> (EncodingKey, String) {
    let kp = rcgen::KeyPair::generate().unwrap();
    let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    (enc, kp.public_key_pem())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(key: &EncodingKey, kid: Option<&str>, claims: Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn claims(service: &str, groups: &[&str], exp_in: i64) -> Value {
    json!({
        "iss": ISSUER,
        "aud": "berth",
        "sub": "ci-runner",
        "service": service,
        "groups": groups,
        "iat": now(),
        "exp": (now() as i64 + exp_in),
    })
}

fn method_config(source: Value) -> Value {
    let mut c = json!({
        "JWTSupportedAlgs": ["ES256"],
        "BoundIssuer": ISSUER,
        "BoundAudiences": ["berth"],
        "ClaimMappings": {"service": "service"},
        "ListClaimMappings": {"groups": "groups"},
    });
    for (k, v) in source.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

async fn setup(acl: &AclServer, name: &str, config: Value) {
    acl.admin(
        "PUT",
        "/v1/acl/auth-method",
        json!({"Name": name, "Type": "jwt", "Config": config}),
    )
    .await;
    acl.admin(
        "PUT",
        "/v1/acl/binding-rule",
        json!({
            "AuthMethod": name,
            "BindType": "service",
            "BindName": "${value.service}",
            "Selector": "\"mesh\" in list.groups",
        }),
    )
    .await;
}

/// `berth login -type jwt`; returns (exit ok, stderr, the sink's token if any).
fn cli_login(
    acl: &AclServer,
    dir: &std::path::Path,
    method: &str,
    token: &str,
) -> (bool, String, Option<String>) {
    let bearer = dir.join(format!("{method}.jwt"));
    std::fs::write(&bearer, token).unwrap();
    let sink = dir.join(format!("{method}.token"));
    let _ = std::fs::remove_file(&sink);
    let out = Command::new(bin("berth"))
        .args([
            "login",
            "-type",
            "jwt",
            "-method",
            method,
            "-bearer-token-file",
            bearer.to_str().unwrap(),
            "-token-sink-file",
            sink.to_str().unwrap(),
            "-http-addr",
            &format!("127.0.0.1:{}", acl.server.http_port),
        ])
        .output()
        .unwrap();
    let secret = std::fs::read_to_string(&sink)
        .ok()
        .map(|s| s.trim().to_string());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        secret,
    )
}

async fn service_identities(acl: &AclServer, secret: &str) -> Value {
    let r = acl
        .call("GET", "/v1/acl/token/self", Some(secret), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["ServiceIdentities"].clone()
}

#[tokio::test]
async fn a_jwt_signed_by_a_configured_key_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    let (key, public) = keypair();
    setup(
        &acl,
        "ci",
        method_config(json!({"JWTValidationPubKeys": [public]})),
    )
    .await;

    let (ok, err, secret) = cli_login(
        &acl,
        dir.path(),
        "ci",
        &jwt(&key, None, claims("web", &["mesh"], 600)),
    );
    assert!(ok, "login failed: {err}");
    let secret = secret.expect("the sink file has the token");
    assert_eq!(
        service_identities(&acl, &secret).await,
        json!([{"ServiceName": "web"}])
    );

    // Not in the group the selector wants: nothing binds.
    let (ok, err, secret) = cli_login(
        &acl,
        dir.path(),
        "ci",
        &jwt(&key, None, claims("web", &["other"], 600)),
    );
    assert!(!ok && secret.is_none());
    assert!(err.contains("no binding rule"), "{err}");

    // Expired (an hour ago, beyond the leeways).
    let (ok, err, _) = cli_login(
        &acl,
        dir.path(),
        "ci",
        &jwt(&key, None, claims("web", &["mesh"], -3600)),
    );
    assert!(!ok);
    assert!(err.contains("expired"), "{err}");

    // Signed by a key the method does not have.
    let (stranger, _) = keypair();
    let (ok, err, _) = cli_login(
        &acl,
        dir.path(),
        "ci",
        &jwt(&stranger, None, claims("web", &["mesh"], 600)),
    );
    assert!(!ok);
    assert!(err.contains("does not verify"), "{err}");

    // Another issuer.
    let mut c = claims("web", &["mesh"], 600);
    c["iss"] = json!("https://elsewhere");
    let (ok, err, _) = cli_login(&acl, dir.path(), "ci", &jwt(&key, None, c));
    assert!(!ok);
    assert!(err.contains("BoundIssuer"), "{err}");

    let tokens = acl.admin_get("/v1/acl/tokens?authmethod=ci").await;
    assert_eq!(
        tokens.as_array().unwrap().len(),
        1,
        "only the good login made a token"
    );
}

// The JWKS server runs on the test's runtime while the CLI blocks the test's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_verified_through_a_jwks_url_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    let (key, _) = keypair();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let set = JwkSet { keys: vec![jwk] };
    let body = serde_json::to_string(&set).unwrap();
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let b = body.clone();
            async move { ([("content-type", "application/json")], b) }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    setup(
        &acl,
        "oidc",
        method_config(json!({"JWKSURL": format!("http://127.0.0.1:{port}/jwks")})),
    )
    .await;
    let (ok, err, secret) = cli_login(
        &acl,
        dir.path(),
        "oidc",
        &jwt(&key, Some("k1"), claims("api", &["mesh"], 600)),
    );
    assert!(ok, "login failed: {err}");
    assert_eq!(
        service_identities(&acl, &secret.unwrap()).await,
        json!([{"ServiceName": "api"}])
    );
    // A kid the JWKS does not have.
    let (ok, err, _) = cli_login(
        &acl,
        dir.path(),
        "oidc",
        &jwt(&key, Some("k2"), claims("api", &["mesh"], 600)),
    );
    assert!(!ok);
    assert!(err.contains("does not verify"), "{err}");
    // The JWKS URL gone: the login fails with a reason and makes nothing.
    server.abort();
    let _ = server.await;
    let (ok, err, _) = cli_login(
        &acl,
        dir.path(),
        "oidc",
        &jwt(&key, Some("k1"), claims("api", &["mesh"], 600)),
    );
    assert!(!ok);
    assert!(err.contains("cannot reach the JWKS"), "{err}");
    assert_eq!(
        acl.admin_get("/v1/acl/tokens?authmethod=oidc")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_jwt_method_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    for (config, why) in [
        (json!({}), "exactly one of"),
        (
            json!({"JWTValidationPubKeys": ["not a key"]}),
            "not an RSA, EC or Ed25519",
        ),
        (
            json!({"JWKSURL": "https://x", "JWTSupportedAlgs": ["HS256"]}),
            "HMAC",
        ),
        (
            json!({"JWKSURL": "https://x", "Bogus": true}),
            "unknown field",
        ),
    ] {
        let r = acl
            .call(
                "PUT",
                "/v1/acl/auth-method",
                Some(&acl.root),
                Some(json!({"Name": "bad", "Type": "jwt", "Config": config})),
            )
            .await;
        assert_eq!(r.status, 400, "{config}: {}", r.text());
        assert!(r.text().contains(why), "{config}: {}", r.text());
    }
    assert_eq!(acl.admin_get("/v1/acl/auth-methods").await, json!([]));
}
