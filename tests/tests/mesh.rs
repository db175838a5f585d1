//! The mesh end to end with every part real: a berth-server, two `berth agent` processes,
//! two Envoys started by `berth connect envoy` and configured by the agents over delta xDS,
//! and two small HTTP services. `web` reaches `api` through its upstream on loopback; the
//! intentions, L7 permissions and api's health decide what gets through.

use std::time::{Duration, Instant};

use berth_tests::mesh::{AgentProc, EnvoyProc, Load};
use berth_tests::{Server, eventually, free_port, http_client, try_json};
use serde_json::{Value, json};

/// The `api` app: answers with the client certificate its sidecar saw.
async fn api_app() -> u16 {
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let app = axum::Router::new().fallback(
        |method: axum::http::Method, uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
            let xfcc = headers
                .get("x-forwarded-client-cert")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            format!("api {method} {} xfcc={xfcc}", uri.path())
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

struct Mesh {
    _dir: tempfile::TempDir,
    server: Server,
    web_agent: AgentProc,
    api_agent: AgentProc,
    web_envoy: EnvoyProc,
    api_envoy: EnvoyProc,
    upstream: u16,
}

async fn put(url: String, body: Value) -> (u16, String) {
    let r = http_client().put(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

impl Mesh {
    async fn start() -> Mesh {
        Mesh::start_with(false).await
    }

    /// With `data_dirs`, each agent keeps its local state in a directory of its own.
    async fn start_with(data_dirs: bool) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::dev(dir.path());
        server.wait_ready(Duration::from_secs(10)).await;
        let rpc = server.rpc_addr();
        let data = |n: &str| {
            if data_dirs {
                vec![
                    "-data-dir".to_string(),
                    dir.path().join(n).display().to_string(),
                ]
            } else {
                Vec::new()
            }
        };
        let (wd, ad) = (data("web-agent"), data("api-agent"));
        let web_agent = AgentProc::start(
            dir.path(),
            "web-node",
            &rpc,
            &wd.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let api_agent = AgentProc::start(
            dir.path(),
            "api-node",
            &rpc,
            &ad.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        web_agent.wait_ready().await;
        api_agent.wait_ready().await;

        let api_port = api_app().await;
        let upstream = free_port();
        let (s, t) = put(
            api_agent.url("/v1/agent/service/register"),
            json!({"Name": "api", "Port": api_port, "Connect": {"SidecarService": {"Port": free_port()}}}),
        )
        .await;
        assert_eq!(s, 200, "{t}");
        let (s, t) = put(
            web_agent.url("/v1/agent/service/register"),
            json!({"Name": "web", "Port": free_port(), "Connect": {"SidecarService": {
                "Port": free_port(),
                "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}
            }}}),
        )
        .await;
        assert_eq!(s, 200, "{t}");
        let api_envoy = EnvoyProc::start(dir.path(), &api_agent, "api-sidecar-proxy", None).await;
        let web_envoy = EnvoyProc::start(dir.path(), &web_agent, "web-sidecar-proxy", None).await;
        Mesh {
            _dir: dir,
            server,
            web_agent,
            api_agent,
            web_envoy,
            api_envoy,
            upstream,
        }
    }

    /// A request from `web`'s app through its upstream listener.
    async fn call(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http_client()
            .request(m, format!("http://127.0.0.1:{}{path}", self.upstream))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status().as_u16(), r.text().await.unwrap_or_default()))
    }

    fn diagnostics(&self) -> String {
        format!(
            "web agent:\n{}\napi agent:\n{}\nweb envoy:\n{}\napi envoy:\n{}",
            tail(&self.web_agent.log_text()),
            tail(&self.api_agent.log_text()),
            tail(&self.web_envoy.log_text()),
            tail(&self.api_envoy.log_text())
        )
    }

    async fn intention(&self, body: Value) {
        let (s, t) = put(self.server.url("/v1/config"), body).await;
        assert_eq!(s, 200, "{t}");
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_reaches_api_over_mtls_and_intentions_decide() {
    let m = Mesh::start().await;
    let td = eventually(Duration::from_secs(20), "the trust domain", || async {
        let v: Value = try_json(&m.server.url("/v1/connect/ca/roots")).await?;
        v["TrustDomain"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
    .await;

    // 1. No intention, ACLs off: allowed; api's Envoy saw web's certificate.
    let started = Instant::now();
    let body = {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            match m.call("GET", "/hello").await {
                Ok((200, b)) => break b,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "web never reached api: {other:?}\n{}",
                        m.diagnostics()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    println!(
        "first request through the mesh after {:?}",
        started.elapsed()
    );
    assert!(body.starts_with("api GET /hello"), "{body}");

    // 2. L4 deny (tcp): the connection is refused at api's sidecar.
    m.intention(json!({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Action": "deny"}]})).await;
    eventually(
        Duration::from_secs(10),
        "the deny to take effect",
        || async { m.call("GET", "/hello").await.is_err().then_some(()) },
    )
    .await;

    // 1. With protocol http and an allow, api's sidecar passes on web's certificate.
    m.intention(json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}))
        .await;
    m.intention(json!({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Action": "allow"}]})).await;
    let body = eventually(
        Duration::from_secs(10),
        "an allowed HTTP request",
        || async {
            match m.call("GET", "/hello").await {
                Ok((200, b)) if b.contains("xfcc=") && !b.ends_with("xfcc=") => Some(b),
                _ => None,
            }
        },
    )
    .await;
    let web_id = format!("spiffe://{td}/ns/default/dc/dc1/svc/web");
    assert!(
        body.contains(&format!("URI={web_id}")),
        "no web SPIFFE ID in {body}"
    );

    // 2b. L7 deny: a 403 from api's sidecar.
    m.intention(json!({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Action": "deny"}]})).await;
    eventually(Duration::from_secs(20), "an L7 403", || async {
        matches!(m.call("GET", "/hello").await, Ok((403, _))).then_some(())
    })
    .await;

    // 3. L7 permissions: only POST /orders. A request no permission matches gets the
    // default decision, which is allow with ACLs off (as in Consul), hence the last rule.
    m.intention(json!({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Permissions": [
        {"Action": "allow", "HTTP": {"PathExact": "/orders", "Methods": ["POST"]}},
        {"Action": "deny", "HTTP": {"PathPrefix": "/"}}
    ]}]}))
    .await;
    // Connections made under the earlier configuration live until Envoy has drained them
    // (--drain-time-s 1), so the new rules are awaited as a whole and must hold for longer
    // than a drain before every answer is required to follow them.
    let steady_since = std::sync::Mutex::new(None::<std::time::Instant>);
    eventually(
        Duration::from_secs(30),
        "POST /orders alone allowed, for longer than a drain",
        || async {
            let post = m.call("POST", "/orders").await.map(|r| r.0);
            let get = m.call("GET", "/orders").await.map(|r| r.0);
            let admin = m.call("POST", "/admin").await.map(|r| r.0);
            let ok = post == Ok(200) && get == Ok(403) && admin == Ok(403);
            let mut since = steady_since.lock().unwrap();
            if !ok {
                *since = None;
                return None;
            }
            let at = *since.get_or_insert_with(std::time::Instant::now);
            (at.elapsed() >= Duration::from_secs(3)).then_some(())
        },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(m.call("POST", "/orders").await.map(|r| r.0), Ok(200));
        assert_eq!(m.call("GET", "/orders").await.map(|r| r.0), Ok(403));
        assert_eq!(m.call("POST", "/admin").await.map(|r| r.0), Ok(403));
    }

    // 5. api turns critical: gone from web's healthy endpoints; a second instance appears.
    let sni = "api.default.dc1.internal.";
    let healthy =
        |hosts: Vec<(String, String)>| hosts.iter().filter(|(_, h)| h == "HEALTHY").count();
    let (s, t) = put(
        m.api_agent.url("/v1/agent/check/register"),
        json!({"Name": "api alive", "CheckID": "api-alive", "ServiceID": "api", "TTL": "60s", "Status": "passing"}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let wait_healthy = Instant::now();
    eventually(
        Duration::from_secs(30),
        "api healthy in web's Envoy",
        || async { (healthy(m.web_envoy.hosts(sni).await) == 1).then_some(()) },
    )
    .await;
    println!(
        "api healthy in web's Envoy after {:?}",
        wait_healthy.elapsed()
    );
    let (s, _) = put(m.api_agent.url("/v1/agent/check/fail/api-alive"), json!({})).await;
    assert_eq!(s, 200);
    let t0 = Instant::now();
    eventually(
        Duration::from_secs(10),
        "api unhealthy in web's Envoy",
        || async {
            let hosts = m.web_envoy.hosts(sni).await;
            (hosts.len() == 1 && healthy(hosts) == 0).then_some(())
        },
    )
    .await;
    println!(
        "critical api left web's healthy endpoints after {:?}",
        t0.elapsed()
    );

    let second = free_port();
    let (s, t) = put(
        m.server.url("/v1/catalog/register"),
        json!({"Node": "api-2", "Address": "127.0.0.2", "Service": {
            "Kind": "connect-proxy", "ID": "api-2-sidecar-proxy", "Service": "api-sidecar-proxy", "Port": second,
            "Proxy": {"DestinationServiceName": "api", "DestinationServiceID": "api-2"}
        }}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let (s, t) = put(
        m.server.url("/v1/catalog/register"),
        json!({"Node": "api-2", "Address": "127.0.0.2", "Service": {"ID": "api-2", "Service": "api", "Port": 8080}}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let t1 = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the second api instance in web's Envoy",
        || async {
            let hosts = m.web_envoy.hosts(sni).await;
            hosts
                .iter()
                .any(|(a, _)| a == &format!("127.0.0.2:{second}"))
                .then_some(())
        },
    )
    .await;
    println!(
        "second api instance reached web's Envoy after {:?}",
        t1.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_loses_no_request_and_no_registration() {
    let mut m = Mesh::start_with(true).await;
    eventually(Duration::from_secs(40), "the first request", || async {
        matches!(m.call("GET", "/x").await, Ok((200, _))).then_some(())
    })
    .await;
    let state = m._dir.path().join("web-agent/local-state.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&state).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the saved state holds tokens");

    // Requests keep flowing while the agent is killed and started again.
    let load = Load::start(format!("http://127.0.0.1:{}/during", m.upstream));
    load.more_ok(5).await;
    m.web_agent.kill9();
    // The outage itself: requests must keep succeeding while no agent runs.
    load.more_ok(50).await;
    m.web_agent.restart();
    m.web_agent.wait_ready().await;
    eventually(
        Duration::from_secs(20),
        "web's Envoy reconnected",
        || async {
            let v = m
                .web_envoy
                .admin_json("/stats?format=json&filter=control_plane.connected_state")
                .await?;
            (v.to_string().contains("\"value\":1")).then_some(())
        },
    )
    .await;
    load.more_ok(10).await;
    let (ok, failed) = load.finish().await;
    println!("{ok} requests succeeded across the agent restart");
    assert!(
        failed.is_empty(),
        "requests failed across the restart: {failed:?}"
    );
    assert!(ok > 10, "too few requests ran: {ok}");
    assert!(
        m.web_agent.log_text().contains("restored the local state"),
        "{}",
        m.diagnostics()
    );
    // The restarted agent kept its services: they are still in the catalog and on the agent.
    let services: Value = http_client()
        .get(m.web_agent.url("/v1/agent/services"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(services.get("web-sidecar-proxy").is_some(), "{services}");
    let catalog: Value = http_client()
        .get(m.server.url("/v1/catalog/service/web-sidecar-proxy"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog.as_array().map(Vec::len), Some(1), "{catalog}");
    assert!(matches!(m.call("GET", "/after").await, Ok((200, _))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_under_load_fails_no_request() {
    let m = Mesh::start().await;
    eventually(Duration::from_secs(40), "the first request", || async {
        matches!(m.call("GET", "/x").await, Ok((200, _))).then_some(())
    })
    .await;
    // Short leaves, so that the old root's time runs out within the test.
    let (s, t) = put(
        m.server.url("/v1/connect/ca/configuration"),
        json!({"Provider": "berth", "Config": {"LeafCertTTL": "10s"}}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let old: Value = http_client()
        .get(m.server.url("/v1/connect/ca/roots"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let load = Load::start(format!("http://127.0.0.1:{}/rotation", m.upstream));

    // The new CA is a corporate intermediate (with its chain up to the corporate root):
    // Envoys must accept leaves that chain through it.
    let root_key = rcgen::KeyPair::generate().unwrap();
    let ca_params = |cn: &str| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p
    };
    let rp = ca_params("Corp Root CA");
    let corp_root = rp.self_signed(&root_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(rp, &root_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let intermediate = ca_params("Corp Mesh Intermediate")
        .signed_by(&key, &issuer)
        .unwrap()
        .pem();
    let (s, t) = put(
        m.server.url("/v1/connect/ca/configuration"),
        json!({"Provider": "file", "Config": {"LeafCertTTL": "10s", "RootCert": format!("{intermediate}{corp_root}"), "PrivateKey": key.serialize_pem()}}),
    )
    .await;
    assert_eq!(s, 200, "{t}");

    // New leaves chain to the new CA, and web's Envoy has one.
    let (_, int_pem) = x509_parser::pem::parse_x509_pem(intermediate.as_bytes()).unwrap();
    let (_, int_cert) = x509_parser::parse_x509_certificate(&int_pem.contents).unwrap();
    let new_root_key = int_cert.public_key().clone();
    // Leaves are renewed every few seconds here, so each poll compares the agent's current
    // leaf with what web's Envoy holds.
    eventually(
        Duration::from_secs(60),
        "web's Envoy to hold a leaf of the new root",
        || async {
            let leaf: Value = try_json(&m.web_agent.url("/v1/agent/connect/ca/leaf/web")).await?;
            let pem = leaf["CertPEM"].as_str()?.to_string();
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
            let (_, c) = x509_parser::parse_x509_certificate(&p.contents).ok()?;
            c.verify_signature(Some(&new_root_key)).ok()?;
            let serial = c.raw_serial_as_string().replace(':', "").to_lowercase();
            let serial = serial.trim_start_matches('0').to_string();
            let certs = m
                .web_envoy
                .admin_json("/certs")
                .await?
                .to_string()
                .to_lowercase();
            certs.contains(&serial).then_some(())
        },
    )
    .await;
    // The old root goes once its leaves have expired; traffic goes on throughout.
    let old_id = old["ActiveRootID"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(60),
        "the old root to be dropped",
        || async {
            let v: Value = try_json(&m.server.url("/v1/connect/ca/roots")).await?;
            let ids: Vec<String> = v["Roots"]
                .as_array()?
                .iter()
                .filter_map(|r| r["ID"].as_str().map(str::to_string))
                .collect();
            (ids.len() == 1 && ids[0] != old_id).then_some(())
        },
    )
    .await;
    load.more_ok(20).await;
    let (ok, failed) = load.finish().await;
    println!("{ok} requests succeeded across the rotation");
    assert!(
        failed.is_empty(),
        "requests failed during the rotation: {failed:?}\n{}",
        m.diagnostics()
    );
    assert!(ok > 50, "too few requests ran: {ok}");
}

/// A token made by the management token of `acl`.
async fn token(acl: &berth_tests::acl_server::AclServer, body: Value) -> String {
    acl.admin("PUT", "/v1/acl/token", body).await["SecretID"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acls_default_deny_tokens_decide_everything() {
    let dir = tempfile::tempdir().unwrap();
    let acl = berth_tests::acl_server::AclServer::start(dir.path()).await;
    let rpc = acl.server.rpc_addr();
    // Each agent writes its node with a node identity; each service registers with its own
    // service identity, and its Envoy streams with that token.
    let web_agent_token = token(
        &acl,
        json!({"NodeIdentities": [{"NodeName": "web-node", "Datacenter": "dc1"}]}),
    )
    .await;
    let api_agent_token = token(
        &acl,
        json!({"NodeIdentities": [{"NodeName": "api-node", "Datacenter": "dc1"}]}),
    )
    .await;
    let web_token = token(&acl, json!({"ServiceIdentities": [{"ServiceName": "web"}]})).await;
    let api_token = token(&acl, json!({"ServiceIdentities": [{"ServiceName": "api"}]})).await;
    let web_agent = AgentProc::start(dir.path(), "web-node", &rpc, &["-token", &web_agent_token]);
    let api_agent = AgentProc::start(dir.path(), "api-node", &rpc, &["-token", &api_agent_token]);
    web_agent.wait_ready().await;
    api_agent.wait_ready().await;

    let register = |agent: &AgentProc, token: &str, body: Value| {
        let url = agent.url("/v1/agent/service/register");
        let token = token.to_string();
        async move {
            let r = http_client()
                .put(url)
                .header("X-Consul-Token", token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    // web's token may not register api.
    let (s, t) = register(&api_agent, &web_token, json!({"Name": "api", "Port": 1})).await;
    assert_eq!(s, 403, "{t}");
    assert!(t.contains("Permission denied"), "{t}");

    let api_port = api_app().await;
    let upstream = free_port();
    let (s, t) = register(
        &api_agent,
        &api_token,
        json!({"Name": "api", "Port": api_port, "Connect": {"SidecarService": {"Port": free_port()}}}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let (s, t) = register(
        &web_agent,
        &web_token,
        json!({"Name": "web", "Port": free_port(), "Connect": {"SidecarService": {
            "Port": free_port(),
            "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}
        }}}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    // Anti-entropy wrote them with the services' tokens.
    eventually(
        Duration::from_secs(10),
        "both sidecars in the catalog",
        || async {
            let r = acl.admin_get("/v1/catalog/services").await;
            (r.get("web-sidecar-proxy").is_some() && r.get("api-sidecar-proxy").is_some())
                .then_some(())
        },
    )
    .await;

    let _api_envoy = EnvoyProc::start(
        dir.path(),
        &api_agent,
        "api-sidecar-proxy",
        Some(&api_token),
    )
    .await;
    let web_envoy = EnvoyProc::start(
        dir.path(),
        &web_agent,
        "web-sidecar-proxy",
        Some(&web_token),
    )
    .await;
    let call = || async {
        http_client()
            .get(format!("http://127.0.0.1:{upstream}/hello"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    };
    // web's Envoy is configured (its listener for api exists) ...
    eventually(
        Duration::from_secs(20),
        "web's upstream listener",
        || async {
            let v = web_envoy.admin_json("/listeners?format=json").await?;
            v.to_string()
                .contains(&format!("\"port_value\":{upstream}"))
                .then_some(())
        },
    )
    .await;
    // ... but with default deny and no intention, api's sidecar refuses it.
    for _ in 0..3 {
        assert!(
            call().await.is_err(),
            "default deny must refuse the connection"
        );
    }
    acl.admin("PUT", "/v1/config", json!({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Action": "allow"}]})).await;
    eventually(Duration::from_secs(30), "the allowed request", || async {
        (call().await == Ok(200)).then_some(())
    })
    .await;

    // An Envoy with a token that may not write web gets no configuration.
    let stranger = EnvoyProc::start(
        dir.path(),
        &web_agent,
        "web-sidecar-proxy",
        Some(&api_token),
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the stream refusal in the agent's log",
        || async {
            web_agent
                .log_text()
                .contains("lacks permission 'service:write' on \"web\"")
                .then_some(())
        },
    )
    .await;
    let listeners = stranger
        .admin_json("/listeners?format=json")
        .await
        .unwrap_or_default();
    assert!(
        !listeners
            .to_string()
            .contains(&format!("\"port_value\":{upstream}")),
        "a proxy streamed with another service's token got web's listeners: {listeners}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_services_leave_passing_reads_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path());
    server.wait_ready(Duration::from_secs(10)).await;
    let data = dir.path().join("agent-data").display().to_string();
    let mut agent = AgentProc::start(
        dir.path(),
        "task-node",
        &server.rpc_addr(),
        &["-data-dir", &data],
    );
    agent.wait_ready().await;
    let (s, t) = put(
        agent.url("/v1/agent/service/register"),
        json!({"Name": "pinger", "Port": 7000}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let passing = || async {
        let v: Value = try_json(&server.url("/v1/health/service/pinger?passing")).await?;
        v.as_array().map(Vec::len)
    };
    let serf = || async {
        let v: Value = try_json(&server.url("/v1/health/node/task-node")).await?;
        v.as_array()?
            .iter()
            .find(|c| c["CheckID"] == "serfHealth")
            .and_then(|c| c["Status"].as_str().map(str::to_string))
    };
    eventually(
        Duration::from_secs(15),
        "the agent's node alive and its service passing",
        || async {
            (serf().await.as_deref() == Some("passing") && passing().await == Some(1)).then_some(())
        },
    )
    .await;

    agent.kill9();
    let t0 = Instant::now();
    eventually(
        Duration::from_secs(30),
        "the dead agent's node critical",
        || async {
            (serf().await.as_deref() == Some("critical") && passing().await == Some(0))
                .then_some(())
        },
    )
    .await;
    println!("dead agent detected after {:?}", t0.elapsed());

    agent.restart();
    agent.wait_ready().await;
    eventually(
        Duration::from_secs(15),
        "the restarted agent's node alive again",
        || async {
            (serf().await.as_deref() == Some("passing") && passing().await == Some(1)).then_some(())
        },
    )
    .await;
}

#[test]
fn bad_agent_settings_exit_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("agent.hcl");
    std::fs::write(&bad, "retry_joinx = [\"127.0.0.1\"]\n").unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().to_string();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        format!(r#"{{"retry_join": ["127.0.0.1:1"], "http_addr": "{busy}"}}"#),
    )
    .unwrap();
    for (args, env, why) in [
        (vec!["agent"], vec![], "no servers to join"),
        (
            vec!["agent", "-retry-join", "x", "-xds-addr", "nope"],
            vec![],
            "xds_addr",
        ),
        (
            vec!["agent", "-config-file", bad.to_str().unwrap()],
            vec![],
            "unknown key",
        ),
        (
            vec!["agent"],
            vec![("BERTH_AGENT_CONFIG_FILE", "/nonexistent/agent.hcl")],
            "/nonexistent/agent.hcl",
        ),
        (
            vec![
                "agent",
                "-retry-join",
                "x",
                "-token-file",
                "/nonexistent/token",
            ],
            vec![],
            "/nonexistent/token",
        ),
    ] {
        let out = std::process::Command::new(berth_tests::bin("berth"))
            .args(&args)
            .envs(env)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // The config file's settings are used: its HTTP address is in use, and the agent says so.
    let out = std::process::Command::new(berth_tests::bin("berth"))
        .args(["agent", "-config-file", good.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    drop(held);
    assert!(
        err.contains("waiting for the servers") || err.contains(&busy),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_and_the_printed_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path());
    server.wait_ready(Duration::from_secs(10)).await;
    let agent = AgentProc::start(dir.path(), "solo", &server.rpc_addr(), &[]);
    agent.wait_ready().await;
    let td = eventually(Duration::from_secs(10), "the trust domain", || async {
        let v: Value = try_json(&agent.url("/v1/agent/connect/ca/roots")).await?;
        v["TrustDomain"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
    .await;
    let authorize = |uri: String| {
        let url = agent.url("/v1/agent/connect/authorize");
        async move {
            let r = http_client()
                .post(url)
                .json(&json!({"Target": "api", "ClientCertURI": uri}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or_default(),
            )
        }
    };
    let web = format!("spiffe://{td}/ns/default/dc/dc1/svc/web");
    let (s, v) = authorize(web.clone()).await;
    assert_eq!(
        (s, v["Authorized"].clone()),
        (200, json!(true)),
        "ACLs off, no intention: {v}"
    );
    let (s, t) = put(
        server.url("/v1/config"),
        json!({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Action": "deny"}]}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let (_, v) = authorize(web).await;
    assert_eq!(v["Authorized"], json!(false), "{v}");
    let (s, _) = authorize("https://example.com/not-spiffe".into()).await;
    assert_eq!(s, 400);

    // `berth connect envoy -bootstrap` prints a bootstrap Envoy accepts.
    let (s, t) = put(
        agent.url("/v1/agent/service/register"),
        json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let out = std::process::Command::new(berth_tests::bin("berth"))
        .args([
            "connect",
            "envoy",
            "-bootstrap",
            "-proxy-id",
            "web-sidecar-proxy",
            "-http-addr",
            &format!("127.0.0.1:{}", agent.http_port),
            "-xds-addr",
            &format!("127.0.0.1:{}", agent.xds_port),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let boot: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(boot["node"]["id"], "web-sidecar-proxy");
    assert_eq!(boot["node"]["cluster"], "web");
    assert_eq!(
        boot["admin"]["address"]["socket_address"]["port_value"],
        19000
    );
    let file = dir.path().join("printed.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let v = std::process::Command::new(berth_tests::venv_bin("envoy"))
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-c",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "envoy refused the bootstrap: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    // An unknown proxy ID is an error naming it.
    let out = std::process::Command::new(berth_tests::bin("berth"))
        .args([
            "connect",
            "envoy",
            "-bootstrap",
            "-proxy-id",
            "nope",
            "-http-addr",
            &format!("127.0.0.1:{}", agent.http_port),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
}
