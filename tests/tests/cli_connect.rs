//! `berth config` and `berth intention` as real processes against a real ACL-enabled
//! `berth-server` (default deny): config entries written from HCL and JSON, read, listed,
//! compared-and-set and deleted; intentions created, replaced, checked, matched, listed, read
//! and deleted; and what a token without `intentions:write` gets. Every result is read back
//! through the HTTP API, not taken from the exit code alone.

use berth_tests::acl_server::AclServer;
use serde_json::{Value, json};

use berth_tests::cli::Run;

fn berth(args: &[&str], stdin: Option<&str>) -> Run {
    berth_tests::cli::berth(args, &[], stdin)
}

/// An ACL server and a directory for the files handed to `berth`.
struct Mesh {
    dir: tempfile::TempDir,
    a: AclServer,
}

impl Mesh {
    async fn start() -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = AclServer::start(dir.path()).await;
        Mesh { dir, a }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.a.server.http_port)
    }

    /// `berth args... -token <token> -http-addr <this server>`, `stdin` on standard input.
    fn run_as(&self, token: &str, args: &[&str], stdin: Option<&str>) -> Run {
        let addr = self.addr();
        let mut all = args.to_vec();
        all.extend(["-token", token, "-http-addr", &addr]);
        berth(&all, stdin)
    }

    /// `berth args...` with the management token.
    fn root(&self, args: &[&str]) -> Run {
        self.run_as(&self.a.root, args, None)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p.display().to_string()
    }

    /// `GET path` with the management token: the status and the body.
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self.a.call("GET", path, Some(&self.a.root), None).await;
        (r.status, r.text())
    }

    async fn entry(&self, kind: &str, name: &str) -> Value {
        self.a.admin_get(&format!("/v1/config/{kind}/{name}")).await
    }

    async fn intention(&self, source: &str, destination: &str) -> (u16, String) {
        let src = source.replace('*', "%2A");
        let dst = destination.replace('*', "%2A");
        self.get(&format!(
            "/v1/connect/intentions/exact?source={src}&destination={dst}"
        ))
        .await
    }
}

fn names(list: &Value) -> Vec<&str> {
    let mut n: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["Name"].as_str())
        .collect();
    n.sort_unstable();
    n
}

#[tokio::test]
async fn config_entries_from_hcl_and_json_are_written_read_listed_and_deleted() {
    let m = Mesh::start().await;

    // HCL with Consul's snake_case keys.
    let api = m.file(
        "api.hcl",
        "kind     = \"service-defaults\"\nname     = \"api\"\nprotocol = \"http\"\n",
    );
    assert_eq!(
        m.root(&["config", "write", &api]).ok().trim(),
        "Config entry written: service-defaults/api"
    );
    let e = m.entry("service-defaults", "api").await;
    assert_eq!(
        (
            e["Kind"].as_str(),
            e["Name"].as_str(),
            e["Protocol"].as_str()
        ),
        (Some("service-defaults"), Some("api"), Some("http"))
    );

    // JSON from a file, and from standard input (keys in either spelling).
    let web = m.file(
        "web.json",
        r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}"#,
    );
    m.root(&["config", "write", &web]).ok();
    assert_eq!(m.entry("service-defaults", "web").await["Protocol"], "grpc");
    let proxy = r#"{"kind": "proxy-defaults", "name": "global", "config": {"protocol": "http"}}"#;
    let run = m.run_as(&m.a.root, &["config", "write", "-"], Some(proxy));
    assert_eq!(
        run.ok().trim(),
        "Config entry written: proxy-defaults/global"
    );
    let e = m.entry("proxy-defaults", "global").await;
    assert_eq!(e["Config"], json!({"protocol": "http"}), "{e}");

    // L7 intentions for the http service, snake_case and HCL 1's nested `http { }` block.
    let ixn = m.file(
        "api-intentions.hcl",
        r#"
kind = "service-intentions"
name = "api"
sources = [
  {
    name = "web"
    permissions = [
      {
        action = "allow"
        http {
          path_prefix = "/v1"
          methods     = ["GET", "HEAD"]
        }
      }
    ]
  },
  {
    name        = "*"
    action      = "deny"
    description = "nobody else"
  }
]
"#,
    );
    m.root(&["config", "write", &ixn]).ok();
    let e = m.entry("service-intentions", "api").await;
    let sources = e["Sources"].as_array().expect("Sources");
    let web_src = sources.iter().find(|s| s["Name"] == "web").expect("web");
    assert_eq!(
        web_src["Permissions"][0]["HTTP"],
        json!({"PathPrefix": "/v1", "Methods": ["GET", "HEAD"]}),
        "{e}"
    );
    assert_eq!(web_src["Permissions"][0]["Action"], "allow");
    let any = sources.iter().find(|s| s["Name"] == "*").expect("*");
    assert_eq!(
        (any["Action"].as_str(), any["Description"].as_str()),
        (Some("deny"), Some("nobody else"))
    );

    // Read: JSON in both formats, the server's entry as it is.
    let api_entry = m.entry("service-defaults", "api").await;
    let read = [
        "config",
        "read",
        "-kind",
        "service-defaults",
        "-name",
        "api",
    ];
    assert_eq!(
        m.root(&[&read[..], &["-format", "json"]].concat()).json(),
        api_entry
    );
    assert_eq!(m.root(&read).json(), api_entry);

    // List: names, one a line; the entries with -format json.
    let listed = m.root(&["config", "list", "-kind", "service-defaults"]);
    let mut lines = listed.lines();
    lines.sort_unstable();
    assert_eq!(lines, ["api", "web"]);
    let listed = m.root(&[
        "config",
        "list",
        "-kind",
        "service-defaults",
        "-format",
        "json",
    ]);
    assert_eq!(names(&listed.json()), ["api", "web"]);

    // Compare-and-set: a stale index writes nothing.
    let index = api_entry["ModifyIndex"].as_u64().expect("ModifyIndex");
    let stale = (index + 1000).to_string();
    let api_tcp = m.file(
        "api-tcp.hcl",
        "Kind = \"service-defaults\"\nName = \"api\"\nProtocol = \"tcp\"\n",
    );
    let err = m
        .root(&["config", "write", "-cas", "-modify-index", &stale, &api_tcp])
        .failed();
    assert_eq!(
        err,
        format!("Error: config entry was not written: its ModifyIndex is not {stale}")
    );
    // Without -modify-index the file's (none: 0, "only if new") is compared.
    let err = m.root(&["config", "write", "-cas", &api_tcp]).failed();
    assert_eq!(
        err,
        "Error: config entry was not written: its ModifyIndex is not 0"
    );
    assert_eq!(m.entry("service-defaults", "api").await, api_entry);
    let current = index.to_string();
    m.root(&[
        "config",
        "write",
        "-cas",
        "-modify-index",
        &current,
        &api_tcp,
    ])
    .ok();
    let e = m.entry("service-defaults", "api").await;
    assert_eq!(e["Protocol"], "tcp");
    assert!(e["ModifyIndex"].as_u64() > Some(index), "{e}");

    // Delete: a stale CAS deletes nothing, then the entry is gone.
    let web_index = m.entry("service-defaults", "web").await["ModifyIndex"]
        .as_u64()
        .expect("ModifyIndex");
    let stale = (web_index + 1000).to_string();
    let del = [
        "config",
        "delete",
        "-kind",
        "service-defaults",
        "-name",
        "web",
    ];
    let err = m
        .root(&[&del[..], &["-cas", "-modify-index", &stale]].concat())
        .failed();
    assert_eq!(
        err,
        format!("Error: config entry was not deleted: its ModifyIndex is not {stale}")
    );
    assert_eq!(
        m.get("/v1/config/service-defaults/web").await.0,
        200,
        "still there"
    );
    assert_eq!(
        m.root(&del).ok().trim(),
        "Config entry deleted: service-defaults/web"
    );
    assert_eq!(m.get("/v1/config/service-defaults/web").await.0, 404);
    let err = m
        .root(&[
            "config",
            "read",
            "-kind",
            "service-defaults",
            "-name",
            "web",
        ])
        .failed();
    assert!(err.contains("404"), "{err}");
    let listed = m.root(&["config", "list", "-kind", "service-defaults"]);
    assert_eq!(listed.lines(), ["api"]);
}

#[tokio::test]
async fn bad_entries_are_refused_by_the_server_and_bad_files_before_anything_is_sent() {
    let m = Mesh::start().await;

    // The server's 400, on one line.
    let bogus = m.file("bogus.hcl", "Kind = \"service-bogus\"\nName = \"x\"\n");
    let err = m.root(&["config", "write", &bogus]).failed();
    assert!(err.contains("400"), "{err}");
    assert!(
        err.contains("invalid config entry kind: service-bogus"),
        "{err}"
    );
    let bad_protocol = m.file(
        "bad-protocol.json",
        r#"{"Kind": "service-defaults", "Name": "x", "Protocol": "carrier-pigeon"}"#,
    );
    let err = m.root(&["config", "write", &bad_protocol]).failed();
    assert!(
        err.contains("400") && err.contains("carrier-pigeon"),
        "{err}"
    );

    // A file that does not parse: named, and not even a connection is made (a listener
    // that is never accepted from stands in for the server).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let silent = listener.local_addr().expect("addr").to_string();
    let broken = m.file("broken.hcl", "Kind = \"service-defaults\"\nName = \n{{\n");
    let broken_json = m.file("broken.json", r#"{"Kind": "service-defaults", "#);
    let no_kind = m.file("no-kind.hcl", "Name = \"x\"\nProtocol = \"http\"\n");
    for (file, want) in [
        (&broken, "is not valid HCL"),
        (&broken_json, "is not valid JSON"),
        (&no_kind, "is not a config entry: no Kind"),
    ] {
        for addr in [silent.as_str(), m.addr().as_str()] {
            let run = berth(
                &[
                    "config",
                    "write",
                    file,
                    "-token",
                    &m.a.root,
                    "-http-addr",
                    addr,
                ],
                None,
            );
            let err = run.failed();
            assert!(err.contains(file.as_str()), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }
    let err = m
        .run_as(&m.a.root, &["config", "write", "-"], Some("{\"Kind\": "))
        .failed();
    assert!(err.contains("standard input is not valid JSON"), "{err}");
    let missing = m.dir.path().join("missing.hcl").display().to_string();
    let err = m.root(&["config", "write", &missing]).failed();
    assert!(err.contains(&missing), "{err}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "berth connected for a file that does not parse"
    );
    assert_eq!(
        m.a.admin_get("/v1/config/service-defaults").await,
        json!([]),
        "nothing was written"
    );
}

#[tokio::test]
async fn intentions_are_created_checked_matched_listed_and_deleted() {
    let m = Mesh::start().await;

    assert_eq!(
        m.root(&["intention", "create", "web", "api"]).ok().trim(),
        "Created: web => api (allow)"
    );
    let (status, body) = m.intention("web", "api").await;
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(got["Action"], "allow");
    m.root(&[
        "intention",
        "create",
        "-deny",
        "-description",
        "default deny",
        "*",
        "api",
    ])
    .ok();
    let (_, body) = m.intention("*", "api").await;
    let got: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (got["Action"].as_str(), got["Description"].as_str()),
        (Some("deny"), Some("default deny"))
    );
    m.root(&["intention", "create", "-allow", "billing", "*"])
        .ok();

    // check: exit 0 and Allowed, exit 2 and Denied (not an error).
    let run = m.root(&["intention", "check", "web", "api"]);
    assert_eq!(run.ok(), "Allowed\n");
    let run = m.root(&["intention", "check", "billing", "api"]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (Some(2), "Denied\n", "")
    );

    // An existing pair is refused without -replace, and replaced with it.
    let err = m
        .root(&["intention", "create", "-deny", "web", "api"])
        .failed();
    assert!(
        err.contains("Intention with source \"web\" and destination \"api\" already exists"),
        "{err}"
    );
    let (_, body) = m.intention("web", "api").await;
    assert!(body.contains("\"allow\""), "unchanged: {body}");
    m.root(&["intention", "create", "-deny", "-replace", "web", "api"])
        .ok();
    let (_, body) = m.intention("web", "api").await;
    assert!(body.contains("\"deny\""), "replaced: {body}");
    assert_eq!(m.root(&["intention", "check", "web", "api"]).code, Some(2));
    // And from a file.
    let body_file = m.file(
        "web-api.hcl",
        "action = \"allow\"\ndescription = \"from a file\"\nmeta = { team_name = \"web\" }\n",
    );
    m.root(&[
        "intention",
        "create",
        "-replace",
        "-file",
        &body_file,
        "web",
        "api",
    ])
    .ok();
    let (_, body) = m.intention("web", "api").await;
    let got: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (
            got["Action"].as_str(),
            got["Description"].as_str(),
            got["Meta"]["team_name"].as_str()
        ),
        (Some("allow"), Some("from a file"), Some("web")),
        "{got}"
    );
    assert_eq!(
        m.root(&["intention", "check", "web", "api"]).ok(),
        "Allowed\n"
    );

    // list: a table, highest precedence first.
    let listed = m.root(&["intention", "list"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["Source", "Destination", "Action", "Precedence"],
            vec!["web", "api", "allow", "9"],
            vec!["*", "api", "deny", "8"],
            vec!["billing", "*", "allow", "6"],
        ]
    );
    let listed = m.root(&["intention", "list", "-format", "json"]).json();
    let pairs: Vec<(&str, &str)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            (
                i["SourceName"].as_str().unwrap_or_default(),
                i["DestinationName"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(pairs, [("web", "api"), ("*", "api"), ("billing", "*")]);

    // match: by destination (default) or by source, in precedence order.
    assert_eq!(
        m.root(&["intention", "match", "api"]).lines(),
        [
            "web => api (allow)",
            "* => api (deny)",
            "billing => * (allow)"
        ]
    );
    assert_eq!(
        m.root(&["intention", "match", "-source", "billing"])
            .lines(),
        ["* => api (deny)", "billing => * (allow)"]
    );
    let matched = m
        .root(&["intention", "match", "-format", "json", "api"])
        .json();
    assert_eq!(matched.as_array().map(Vec::len), Some(3), "{matched}");

    // get: Consul's fields; JSON with -format json.
    let got = m.root(&["intention", "get", "web", "api"]);
    assert_eq!(got.field("Source"), "web");
    assert_eq!(got.field("Destination"), "api");
    assert_eq!(got.field("Action"), "allow");
    assert_eq!(got.field("Description"), "from a file");
    assert_eq!(got.field("Precedence"), "9");
    assert_eq!(got.field("Meta[team_name]"), "web");
    let got = m
        .root(&["intention", "get", "-format", "json", "*", "api"])
        .json();
    assert_eq!(
        (got["SourceName"].as_str(), got["Action"].as_str()),
        (Some("*"), Some("deny"))
    );

    // delete: gone from the API, and the wildcard deny decides again.
    assert_eq!(
        m.root(&["intention", "delete", "web", "api"]).ok().trim(),
        "Intention deleted: web => api"
    );
    assert_eq!(m.intention("web", "api").await.0, 404);
    let err = m.root(&["intention", "get", "web", "api"]).failed();
    assert!(err.contains("Intention not found"), "{err}");
    let run = m.root(&["intention", "check", "web", "api"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(2), "Denied\n"));
}

#[tokio::test]
async fn a_token_without_intentions_write_is_denied() {
    let m = Mesh::start().await;
    m.a.admin(
        "PUT",
        "/v1/acl/policy",
        json!({"Name": "web-write", "Rules": "service \"web\" { policy = \"write\" }"}),
    )
    .await;
    let token =
        m.a.admin(
            "PUT",
            "/v1/acl/token",
            json!({"Policies": [{"Name": "web-write"}]}),
        )
        .await;
    let secret = token["SecretID"].as_str().expect("SecretID").to_string();

    // service:write on web reads web's intentions (so the existence check passes) but may
    // not write them.
    for args in [
        &["intention", "create", "billing", "web"][..],
        &["intention", "create", "-replace", "billing", "web"],
        &["intention", "create", "-deny", "-replace", "web", "api"],
    ] {
        let err = m.run_as(&secret, args, None).failed();
        assert!(err.contains("Permission denied"), "{err}");
        assert!(err.contains("intentions:write"), "{err}");
    }
    assert_eq!(m.intention("billing", "web").await.0, 404);
    assert_eq!(m.intention("web", "api").await.0, 404);

    let entry = m.file(
        "web-intentions.hcl",
        "Kind = \"service-intentions\"\nName = \"web\"\nSources = [{ Name = \"billing\", Action = \"allow\" }]\n",
    );
    let err = m
        .run_as(&secret, &["config", "write", &entry], None)
        .failed();
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(m.get("/v1/config/service-intentions/web").await.0, 404);

    // Reading what the token may read works.
    let run = m.run_as(&secret, &["intention", "check", "billing", "web"], None);
    assert_eq!((run.code, run.stdout.as_str()), (Some(2), "Denied\n"));
}
