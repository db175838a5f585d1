//! The `berth` operator CLI as a real process against a real ACL-enabled `berth-server`:
//! bootstrap, policies, roles, tokens, auth methods, binding rules, login and logout. Every
//! result is read back through the HTTP API, not taken from the exit code alone.

use std::time::Duration;

use berth_tests::{Reply, Server, eventually, free_port, http_client, send};
use serde_json::{Value, json};

use berth_tests::cli::Run;

fn berth(args: &[&str], env: &[(&str, &str)]) -> Run {
    berth_tests::cli::berth(args, env, None)
}

/// The `key` of each object of a JSON list.
fn each<'v>(list: &'v Value, key: &str) -> Vec<&'v str> {
    list.as_array()
        .expect("a list")
        .iter()
        .filter_map(|x| x[key].as_str())
        .collect()
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n =
        t.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ u128::from(std::process::id());
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

/// An ACL-enabled dev server, default deny, with `root` as initial management token if given.
struct Acl {
    dir: tempfile::TempDir,
    s: Server,
    root: String,
}

impl Acl {
    async fn start(with_root: bool) -> Acl {
        let dir = tempfile::tempdir().unwrap();
        let root = if with_root {
            uuid_like()
        } else {
            String::new()
        };
        let tokens = if with_root {
            format!("  tokens {{\n    initial_management = \"{root}\"\n  }}\n")
        } else {
            String::new()
        };
        let conf = dir.path().join("acl.hcl");
        std::fs::write(
            &conf,
            format!("acl {{\n  enabled = true\n  default_policy = \"deny\"\n{tokens}}}\n"),
        )
        .unwrap();
        let s = Server::start(
            dir.path(),
            "cli",
            free_port(),
            free_port(),
            &[
                "-dev".into(),
                "-config-file".into(),
                conf.display().to_string(),
            ],
        );
        s.wait_ready(Duration::from_secs(20)).await;
        let a = Acl { dir, s, root };
        if with_root {
            eventually(Duration::from_secs(10), "the management token", || async {
                (a.get_reply("/v1/acl/token/self").await.status == 200).then_some(())
            })
            .await;
        }
        a
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.s.http_port)
    }

    /// `berth args... -http-addr <this server>`.
    fn berth(&self, args: &[&str]) -> Run {
        let addr = self.addr();
        let mut all = args.to_vec();
        all.extend(["-http-addr", &addr]);
        berth(&all, &[])
    }

    /// `berth args... -token <token> -http-addr <this server>`.
    fn berth_as(&self, token: &str, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["-token", token]);
        self.berth(&all)
    }

    fn as_root(&self, args: &[&str]) -> Run {
        self.berth_as(&self.root, args)
    }

    /// `acl auth-method create -type jwt -name <name> -config <config> args...`, as root.
    fn create_jwt_method(&self, name: &str, config: &str, args: &[&str]) -> Run {
        let mut all = vec![
            "acl",
            "auth-method",
            "create",
            "-type",
            "jwt",
            "-name",
            name,
            "-config",
            config,
        ];
        all.extend(args);
        self.as_root(&all)
    }

    /// `acl binding-rule create -method <method> -bind-type <kind> -bind-name <name> args...`,
    /// as root.
    fn create_rule(&self, method: &str, kind: &str, name: &str, args: &[&str]) -> Run {
        let mut all = vec![
            "acl",
            "binding-rule",
            "create",
            "-method",
            method,
            "-bind-type",
            kind,
            "-bind-name",
            name,
        ];
        all.extend(args);
        self.as_root(&all)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut r = http_client().request(method.parse().unwrap(), self.s.url(path));
        if let Some(t) = token {
            r = r.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        send(r).await
    }

    /// A request with the management token, which must succeed; the answer's JSON.
    async fn root_ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.call(method, path, Some(&self.root), body).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        r.json()
    }

    async fn get(&self, path: &str) -> Value {
        self.root_ok("GET", path, None).await
    }

    /// `GET path` with the management token, whatever the answer.
    async fn get_reply(&self, path: &str) -> Reply {
        self.call("GET", path, Some(&self.root), None).await
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

#[tokio::test]
async fn bootstrap_prints_a_secret_once_then_refuses() {
    let a = Acl::start(false).await;
    let first = a.berth(&["acl", "bootstrap"]);
    let secret = first.field("SecretID");
    assert_eq!(
        first.field("Description"),
        "Bootstrap Token (Global Management)"
    );
    assert!(
        first
            .ok()
            .contains("   00000000-0000-0000-0000-000000000001 - global-management\n"),
        "{}",
        first.stdout
    );
    let me = a
        .call("GET", "/v1/acl/token/self", Some(&secret), None)
        .await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["AccessorID"], first.field("AccessorID").as_str());
    assert_eq!(me.json()["Policies"][0]["Name"], "global-management");

    let again = a.berth(&["acl", "bootstrap"]);
    let err = again.failed();
    assert!(err.contains("ACL bootstrap no longer allowed"), "{err}");
    assert!(err.contains("403"), "{err}");
    assert!(again.stdout.is_empty(), "{}", again.stdout);
}

#[tokio::test]
async fn management_token_by_flag_file_or_env_manages_policies_roles_and_tokens() {
    let a = Acl::start(true).await;
    let root_file = a.write("root.token", &format!("  {}\n", a.root));
    let rules = "key_prefix \"app/\" {\n  policy = \"read\"\n}\n";
    let rules_file = a.write("rules.hcl", rules);
    let addr = a.addr();

    for way in ["flag", "file", "env"] {
        // One `berth` invocation with the management token passed this way.
        let run = |args: &[&str]| -> Run {
            match way {
                "flag" => a.as_root(args),
                "file" => {
                    let file = ["--token-file", &root_file, "--http-addr", &addr];
                    berth(&[args, &file].concat(), &[])
                }
                _ => berth(
                    args,
                    &[("BERTH_HTTP_TOKEN", &a.root), ("BERTH_HTTP_ADDR", &addr)],
                ),
            }
        };
        let pname = format!("app-read-{way}");
        let policy = run(&[
            "acl",
            "policy",
            "create",
            "-name",
            &pname,
            "-description",
            "reads app/",
            "-rules",
            &format!("@{rules_file}"),
        ]);
        let pid = policy.field("ID");
        assert_eq!(policy.field("Name"), pname);
        let p = a.get(&format!("/v1/acl/policy/{pid}")).await;
        assert_eq!(
            (
                p["Name"].as_str(),
                p["Rules"].as_str(),
                p["Description"].as_str()
            ),
            (Some(pname.as_str()), Some(rules), Some("reads app/")),
            "{way}"
        );

        let rname = format!("ops-{way}");
        let role = run(&[
            "acl",
            "role",
            "create",
            "-name",
            &rname,
            "-policy-name",
            &pname,
            "-format",
            "json",
        ])
        .json();
        let rid = role["ID"].as_str().expect("role ID").to_string();
        let r = a.get(&format!("/v1/acl/role/{rid}")).await;
        assert_eq!(r["Policies"], json!([{"ID": pid, "Name": pname}]), "{way}");

        let svc = format!("web-{way}");
        let created = run(&[
            "acl",
            "token",
            "create",
            "-description",
            &format!("token {way}"),
            "-policy-id",
            &pid,
            "-role-name",
            &rname,
            "-service-identity",
            &format!("{svc}:dc1"),
            "-format",
            "json",
        ])
        .json();
        let accessor = created["AccessorID"]
            .as_str()
            .expect("AccessorID")
            .to_string();
        let t = a.get(&format!("/v1/acl/token/{accessor}")).await;
        assert_eq!(t["Description"], format!("token {way}"));
        assert_eq!(t["Policies"], json!([{"ID": pid, "Name": pname}]), "{way}");
        assert_eq!(t["Roles"], json!([{"ID": rid, "Name": rname}]), "{way}");
        assert_eq!(
            t["ServiceIdentities"],
            json!([{"ServiceName": svc, "Datacenters": ["dc1"]}]),
            "{way}"
        );

        // read, as JSON and as Consul's layout
        let read = run(&["acl", "token", "read", "-id", &accessor, "-format", "json"]).json();
        assert_eq!(read["Policies"][0]["Name"], pname.as_str(), "{way}");
        assert_eq!(read["SecretID"], t["SecretID"]);
        let pretty = run(&["acl", "token", "read", "-id", &accessor]);
        assert_eq!(pretty.field("AccessorID"), accessor);
        assert!(
            pretty
                .ok()
                .contains(&format!("Policies:\n   {pid} - {pname}\n"))
                && pretty.ok().contains(&format!(
                    "Service Identities:\n   {svc} (Datacenters: dc1)\n"
                )),
            "{}",
            pretty.stdout
        );

        // list, filtered by the policy: exactly this token
        let listed = run(&["acl", "token", "list", "-policy", &pid, "-format", "json"]).json();
        assert_eq!(each(&listed, "AccessorID"), [accessor.as_str()], "{way}");

        // update the description; links stay
        run(&[
            "acl",
            "token",
            "update",
            "-id",
            &accessor,
            "-description",
            &format!("updated {way}"),
        ])
        .ok();
        let t = a.get(&format!("/v1/acl/token/{accessor}")).await;
        assert_eq!(t["Description"], format!("updated {way}"));
        assert_eq!(t["Policies"][0]["ID"], pid.as_str(), "{way}");
        assert_eq!(t["Roles"][0]["ID"], rid.as_str(), "{way}");

        // delete, then it is gone for the API and for `berth`
        let deleted = run(&["acl", "token", "delete", "-id", &accessor]);
        assert!(deleted.ok().contains(&accessor), "{}", deleted.stdout);
        let gone = a.get_reply(&format!("/v1/acl/token/{accessor}")).await;
        assert!(
            gone.status == 403 && gone.text().contains("ACL not found") || gone.status == 404,
            "{way}: {} {}",
            gone.status,
            gone.text()
        );
        let err = run(&["acl", "token", "read", "-id", &accessor]).failed();
        assert!(
            err.contains(&accessor) && (err.contains("ACL not found") || err.contains("404")),
            "{err}"
        );
    }

    // A flag wins over the environment.
    let bad_env = [
        ("BERTH_HTTP_TOKEN", "not-a-token"),
        ("BERTH_HTTP_ADDR", &addr),
    ];
    let listed = berth(
        &[
            "acl",
            "policy",
            "list",
            "-token-file",
            &root_file,
            "-format",
            "json",
        ],
        &bad_env,
    )
    .json();
    let names = each(&listed, "Name");
    assert!(names.contains(&"app-read-env"), "{names:?}");
    let denied = berth(&["acl", "policy", "list"], &bad_env).failed();
    assert!(denied.contains("ACL not found"), "{denied}");
}

#[tokio::test]
async fn a_token_without_acl_write_cannot_create_a_policy() {
    let a = Acl::start(true).await;
    let policy = json!({"Name": "acl-read", "Rules": "acl = \"read\""});
    a.root_ok("PUT", "/v1/acl/policy", Some(policy)).await;
    let token = json!({"Policies": [{"Name": "acl-read"}]});
    let token = a.root_ok("PUT", "/v1/acl/token", Some(token)).await;
    let reader = token["SecretID"].as_str().unwrap().to_string();

    let create = [
        "acl",
        "policy",
        "create",
        "-name",
        "sneaky",
        "-rules",
        "acl = \"write\"",
    ];
    let err = a.berth_as(&reader, &create).failed();
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("sneaky"), "names what failed: {err}");
    let r = a.get_reply("/v1/acl/policy/name/sneaky").await;
    assert_eq!(r.status, 404, "{}", r.text());
    // It can read, though.
    let listed = a
        .berth_as(&reader, &["acl", "policy", "list"])
        .ok()
        .to_string();
    assert!(listed.contains("acl-read:"), "{listed}");
}

#[tokio::test]
async fn an_auth_method_with_a_bad_json_config_is_not_sent() {
    let a = Acl::start(true).await;
    let literal = a
        .create_jwt_method("bad-literal", "{\"JWTValidationPubKeys\": [", &[])
        .failed();
    assert!(literal.contains("-config is not valid JSON"), "{literal}");
    let file = a.write("bad.json", "{\"JWTValidationPubKeys\": [\"x\"],\n}\n");
    let from_file = a
        .create_jwt_method("bad-file", &format!("@{file}"), &[])
        .failed();
    assert!(
        from_file.contains("-config is not valid JSON"),
        "{from_file}"
    );
    assert!(from_file.contains("line 2"), "names where: {from_file}");
    for name in ["bad-literal", "bad-file"] {
        let r = a.get_reply(&format!("/v1/acl/auth-method/{name}")).await;
        assert_eq!(r.status, 404, "{name}: {}", r.text());
    }
    assert_eq!(a.get("/v1/acl/auth-methods").await, json!([]));
}

#[tokio::test]
async fn binding_rules_of_a_jwt_auth_method() {
    let a = Acl::start(true).await;
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let config = a.write(
        "jwt.json",
        &json!({"JWTValidationPubKeys": [key.public_key_pem()], "BoundAudiences": ["berth"]})
            .to_string(),
    );
    let method = a.create_jwt_method(
        "ci-jwt",
        &format!("@{config}"),
        &["-display-name", "CI", "-max-token-ttl", "10m"],
    );
    assert_eq!(method.field("Name"), "ci-jwt");
    assert_eq!(method.field("Type"), "jwt");
    let m = a.get("/v1/acl/auth-method/ci-jwt").await;
    assert_eq!(m["Type"], "jwt");
    assert_eq!(m["DisplayName"], "CI");
    assert_eq!(m["MaxTokenTTL"], "10m");
    assert_eq!(
        m["Config"]["JWTValidationPubKeys"][0],
        key.public_key_pem().as_str()
    );

    let rule = a
        .create_rule(
            "ci-jwt",
            "service",
            "web",
            &[
                "-selector",
                "value.env == \"prod\"",
                "-description",
                "prod deploys",
                "-format",
                "json",
            ],
        )
        .json();
    let id = rule["ID"].as_str().expect("rule ID").to_string();
    let r = a.get(&format!("/v1/acl/binding-rule/{id}")).await;
    assert_eq!(
        (
            r["AuthMethod"].as_str(),
            r["BindType"].as_str(),
            r["BindName"].as_str(),
            r["Selector"].as_str(),
            r["Description"].as_str()
        ),
        (
            Some("ci-jwt"),
            Some("service"),
            Some("web"),
            Some("value.env == \"prod\""),
            Some("prod deploys")
        )
    );

    // A rule of another method, which the filtered list leaves out.
    let other = a.write(
        "other.json",
        &json!({"JWTValidationPubKeys": [key.public_key_pem()]}).to_string(),
    );
    a.create_jwt_method("other", &format!("@{other}"), &[]).ok();
    a.create_rule("other", "node", "n1", &[]).ok();
    let rules = || async {
        a.get("/v1/acl/binding-rules")
            .await
            .as_array()
            .map(Vec::len)
    };
    assert_eq!(rules().await, Some(2));
    let list = ["acl", "binding-rule", "list", "-method", "ci-jwt"];
    let listed = a
        .as_root(&[&list[..], &["-format", "json"]].concat())
        .json();
    assert_eq!(each(&listed, "ID"), [id.as_str()]);
    let pretty = a.as_root(&list);
    assert_eq!(pretty.field("ID"), id);
    assert_eq!(pretty.field("BindName"), "web");
    assert_eq!(pretty.field("AuthMethod"), "ci-jwt");

    // A selector the server cannot parse is the server's 400, shown as such; nothing is made.
    let err = a
        .create_rule("ci-jwt", "service", "web", &["-selector", "value.env =="])
        .failed();
    assert!(err.contains("400") && err.contains("Selector"), "{err}");
    assert_eq!(rules().await, Some(2));
}

#[tokio::test]
async fn logout_with_a_token_not_made_by_login_is_denied() {
    let a = Acl::start(true).await;
    let err = a.as_root(&["logout"]).failed();
    assert!(err.contains("Permission denied"), "{err}");
    // The token is still there.
    let r = a.get_reply("/v1/acl/token/self").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn login_with_a_missing_bearer_token_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.jwt");
    let sink = dir.path().join("token");
    let addr = format!("127.0.0.1:{}", free_port());
    let (missing_path, sink_path) = (missing.display().to_string(), sink.display().to_string());
    let login = [
        "login",
        "-method",
        "jwt",
        "-bearer-token-file",
        &missing_path,
        "-token-sink-file",
        &sink_path,
    ];
    let run = berth(
        &[&login[..], &["-type", "jwt", "-http-addr", &addr]].concat(),
        &[],
    );
    let err = run.failed();
    assert!(err.contains(&missing_path), "{err}");
    assert!(!sink.exists(), "no sink file is written");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing is left in the directory"
    );

    // `-meta` without `=` is bad usage: exit 2.
    let run = berth(&[&login[..], &["-meta", "novalue"]].concat(), &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("novalue"), "{}", run.stderr);
}

#[test]
fn a_missing_token_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.token");
    let path = missing.display().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let by_flag = berth(
        &[
            "acl",
            "token",
            "list",
            "-token-file",
            &path,
            "-http-addr",
            &addr,
        ],
        &[],
    )
    .failed();
    assert!(by_flag.contains(&path), "{by_flag}");
    let by_env = berth(
        &["acl", "token", "list"],
        &[("BERTH_HTTP_TOKEN_FILE", &path), ("BERTH_HTTP_ADDR", &addr)],
    )
    .failed();
    assert!(by_env.contains(&path), "{by_env}");
}
