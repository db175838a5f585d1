//! ACLs end to end on a real server: default deny, policies and precedence, identities,
//! filtering with the Consul header, ACL management rights, bootstrap, expiry, agent tokens.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use berth_tests::{Server, eventually, free_port, http_client, send};
use serde_json::{Value, json};

const ANON: &str = "00000000-0000-0000-0000-000000000002";

struct Acl {
    _dir: tempfile::TempDir,
    s: Server,
    root: String,
}

async fn start(default_policy: &str, extra_hcl: &str, data_dir: bool) -> Acl {
    let dir = tempfile::tempdir().unwrap();
    let root = uuid_like();
    let conf = dir.path().join("acl.hcl");
    std::fs::write(
        &conf,
        format!(
            "acl {{\n  enabled = true\n  default_policy = \"{default_policy}\"\n  {extra_hcl}\n  tokens {{\n    initial_management = \"{root}\"\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let mut args = vec!["-config-file".to_string(), conf.display().to_string()];
    if data_dir {
        args.extend(["-bootstrap-expect".into(), "1".into()]);
    } else {
        args.push("-dev".into());
    }
    let s = Server::start(dir.path(), "acl", free_port(), free_port(), &args);
    s.wait_ready(Duration::from_secs(10)).await;
    let a = Acl { _dir: dir, s, root };
    eventually(Duration::from_secs(10), "the management token", || async {
        (a.call("GET", "/v1/acl/token/self", Some(&a.root), None)
            .await
            .status
            == 200)
            .then_some(())
    })
    .await;
    a
}

fn uuid_like() -> String {
    let n: u128 = rand_u128();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn rand_u128() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    t.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ u128::from(std::process::id())
}

impl Acl {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> berth_tests::Reply {
        let c = http_client();
        let mut r = c.request(method.parse().unwrap(), self.s.url(path));
        if let Some(t) = token {
            r = r.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        send(r).await
    }

    async fn token(&self, body: Value) -> String {
        let r = self
            .call("PUT", "/v1/acl/token", Some(&self.root), Some(body))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["SecretID"].as_str().unwrap().to_string()
    }

    async fn policy(&self, name: &str, rules: &str) -> String {
        let r = self
            .call(
                "PUT",
                "/v1/acl/policy",
                Some(&self.root),
                Some(json!({"Name": name, "Rules": rules})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["ID"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn default_deny_policies_and_filtering() {
    let a = start("deny", "", false).await;
    // Anonymous: denied with Consul's words; lists come back filtered and say so.
    let r = a.call("GET", "/v1/kv/app/x", None, None).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        format!(
            "Permission denied: token with AccessorID '{ANON}' lacks permission 'key:read' on \"app/x\""
        )
    );
    let r = a.call("GET", "/v1/catalog/nodes", None, None).await;
    assert_eq!((r.status, r.json()), (200, json!([])));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), "true");
    let r = a
        .call("GET", "/v1/kv/app/x", Some("not-a-token"), None)
        .await;
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    assert_eq!(
        a.call("GET", "/v1/acl/tokens", None, None).await.status,
        403
    );
    assert_eq!(
        a.call("GET", "/v1/agent/self", None, None).await.status,
        403
    );
    assert_eq!(
        a.call("GET", "/v1/status/leader", None, None).await.status,
        200,
        "status needs no token"
    );

    // A policy: exact beats prefix, longest prefix wins, deny beats grants.
    let pid = a
        .policy(
            "app",
            "key_prefix \"app/\" {\n policy = \"write\"\n}\nkey_prefix \"app/secret/\" {\n policy = \"deny\"\n}\nkey \"app/secret/open\" {\n policy = \"read\"\n}",
        )
        .await;
    let t = a.token(json!({"Policies": [{"ID": pid}]})).await;
    for (key, value) in [
        ("app/x", "1"),
        ("app/secret/y", "2"),
        ("app/secret/open", "3"),
    ] {
        let r = a
            .call("PUT", &format!("/v1/kv/{key}"), Some(&a.root), None)
            .await;
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        let _ = value;
    }
    assert_eq!(
        a.call("PUT", "/v1/kv/app/z", Some(&t), None).await.status,
        200
    );
    assert_eq!(
        a.call("GET", "/v1/kv/app/secret/y", Some(&t), None)
            .await
            .status,
        403
    );
    assert_eq!(
        a.call("GET", "/v1/kv/app/secret/open", Some(&t), None)
            .await
            .status,
        200
    );
    assert_eq!(
        a.call("PUT", "/v1/kv/app/secret/open", Some(&t), None)
            .await
            .status,
        403
    );
    assert_eq!(
        a.call("PUT", "/v1/kv/other", Some(&t), None).await.status,
        403
    );
    let r = a.call("GET", "/v1/kv/app/?keys", Some(&t), None).await;
    assert_eq!(r.json(), json!(["app/secret/open", "app/x", "app/z"]));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), "true");
    let r = a
        .call("DELETE", "/v1/kv/app/?recurse", Some(&t), None)
        .await;
    assert_eq!(
        r.status,
        403,
        "a recursive delete over a denied key is refused: {}",
        r.text()
    );

    // A bad policy is a 400 naming the problem, and nothing is stored.
    let r = a
        .call(
            "PUT",
            "/v1/acl/policy",
            Some(&a.root),
            Some(json!({"Name": "bad", "Rules": "key \"a\" { policy = \"admin\" }"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid policy"), "{}", r.text());
    let names: Vec<Value> = a
        .call("GET", "/v1/acl/policies", Some(&a.root), None)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].clone())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn a_service_identity_may_register_only_its_service() {
    let a = start("deny", "", false).await;
    let t = a
        .token(json!({"ServiceIdentities": [{"ServiceName": "web"}]}))
        .await;
    let r = a
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(&t),
            Some(json!({"Name": "web", "Port": 80})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(&t),
            Some(json!({"Name": "db", "Port": 5432})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.text()
            .contains("lacks permission 'service:write' on \"db\""),
        "{}",
        r.text()
    );
    // Catalog registration needs node write besides: a service identity has only node read.
    let r = a
        .call(
            "PUT",
            "/v1/catalog/register",
            Some(&t),
            Some(json!({"Node": "n9", "Address": "10.0.0.9", "Service": {"Service": "web"}})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("node:write"), "{}", r.text());
    // Discovery works: read on every service and node.
    let rows = a
        .call("GET", "/v1/health/service/web", Some(&t), None)
        .await;
    assert_eq!(rows.json().as_array().unwrap().len(), 1);
    let services = a
        .call("GET", "/v1/agent/services", Some(&t), None)
        .await
        .json();
    assert!(services.get("web").is_some());
    // A templated policy is the same thing.
    let t2 = a.token(json!({"TemplatedPolicies": [{"TemplateName": "builtin/service", "TemplateVariables": {"Name": "db"}}]})).await;
    let r = a
        .call(
            "PUT",
            "/v1/agent/service/register",
            Some(&t2),
            Some(json!({"Name": "db", "Port": 5432})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn acl_management_needs_acl_write_even_when_default_allow() {
    let a = start("allow", "", false).await;
    assert_eq!(
        a.call("PUT", "/v1/kv/anything", None, None).await.status,
        200,
        "default allow"
    );
    let r = a.call("GET", "/v1/acl/tokens", None, None).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("acl:read"), "{}", r.text());
    assert_eq!(
        a.call("PUT", "/v1/acl/token", None, Some(json!({})))
            .await
            .status,
        403
    );
    let r = a.call("PUT", "/v1/acl/bootstrap", None, None).await;
    assert_eq!(
        r.status, 403,
        "the initial management token bootstrapped the system"
    );
    assert!(r.text().contains("reset index"), "{}", r.text());
    // Bad token requests.
    for (body, needle) in [
        (
            json!({"Policies": [{"Name": "nope"}]}),
            "cannot find policy",
        ),
        (json!({"AccessorID": "not-a-uuid"}), "not a valid UUID"),
        (json!({"ExpirationTTL": "10s"}), "between 1m0s and 24h0m0s"),
        (json!({"NodeIdentities": [{"NodeName": "n"}]}), "Datacenter"),
        (json!({"Policies": "all"}), "Request decode failed"),
    ] {
        let r = a
            .call("PUT", "/v1/acl/token", Some(&a.root), Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(needle), "{body}: {}", r.text());
    }
}

#[tokio::test]
async fn acls_disabled_answer_401() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::dev(dir.path());
    s.wait_ready(Duration::from_secs(10)).await;
    let r = send(http_client().get(s.url("/v1/acl/tokens"))).await;
    assert_eq!((r.status, r.text().as_str()), (401, "ACL support disabled"));
}

#[tokio::test]
async fn bootstrap_once_then_refused_naming_the_reset_index() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("acl.json");
    std::fs::write(
        &conf,
        r#"{"acl": {"enabled": true, "default_policy": "deny"}}"#,
    )
    .unwrap();
    let s = Server::start(
        dir.path(),
        "b",
        free_port(),
        free_port(),
        &[
            "-dev".into(),
            "-config-file".into(),
            conf.display().to_string(),
        ],
    );
    s.wait_ready(Duration::from_secs(10)).await;
    let c = http_client();
    let first = send(c.put(s.url("/v1/acl/bootstrap"))).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let secret = first.json()["SecretID"].as_str().unwrap().to_string();
    let again = send(c.put(s.url("/v1/acl/bootstrap"))).await;
    assert_eq!(again.status, 403);
    assert!(
        again
            .text()
            .contains("ACL bootstrap no longer allowed (reset index:"),
        "{}",
        again.text()
    );
    let me = send(
        c.get(s.url("/v1/acl/token/self"))
            .header("X-Consul-Token", &secret),
    )
    .await;
    assert_eq!(me.json()["Policies"][0]["Name"], "global-management");
}

#[tokio::test]
async fn expired_tokens_are_refused_at_once_and_removed() {
    let a = start("deny", "", false).await;
    let r = a
        .call(
            "PUT",
            "/v1/acl/token",
            Some(&a.root),
            Some(json!({"ExpirationTTL": "1m", "ServiceIdentities": [{"ServiceName": "web"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let secret = r.json()["SecretID"].as_str().unwrap().to_string();
    let accessor = r.json()["AccessorID"].as_str().unwrap().to_string();
    assert!(r.json()["ExpirationTime"].is_string());
    assert_eq!(
        a.call("GET", "/v1/acl/token/self", Some(&secret), None)
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    eventually(
        Duration::from_secs(5),
        "the expired token to be refused",
        || async {
            let r = a
                .call("GET", "/v1/acl/token/self", Some(&secret), None)
                .await;
            (r.status == 403 && r.text() == "ACL not found").then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the expired token to leave the store",
        || async {
            let r = a
                .call(
                    "GET",
                    &format!("/v1/acl/token/{accessor}"),
                    Some(&a.root),
                    None,
                )
                .await;
            (r.status == 403).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn agent_tokens_persist_0600_and_secrets_stay_out_of_logs() {
    let a = start("deny", "enable_token_persistence = true", true).await;
    let r = a
        .call(
            "PUT",
            "/v1/agent/token/agent",
            Some(&a.root),
            Some(json!({"Token": "5ec12e7a-0000-4000-8000-000000000001"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let file = a.s.data_dir.join("acl-tokens.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        a.call(
            "PUT",
            "/v1/agent/token/agent",
            None,
            Some(json!({"Token": "x"}))
        )
        .await
        .status,
        403
    );
    assert_eq!(
        a.call(
            "PUT",
            "/v1/agent/token/bogus",
            Some(&a.root),
            Some(json!({"Token": "x"}))
        )
        .await
        .status,
        404
    );
    let log = std::fs::read_to_string(&a.s.log).unwrap();
    assert!(
        !log.contains(&a.root),
        "the management token leaked into the log"
    );
    assert!(
        !log.contains("5ec12e7a"),
        "an agent token leaked into the log"
    );
}
