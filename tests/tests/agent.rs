//! The agent API of a server: local services and checks synced to the catalog, each check
//! kind probing a real endpoint that the test runs, maintenance, bad input, and the
//! process endpoints (metrics, reload, monitor, leave).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use berth_tests::{Cluster, Server, eventually, get_json, http_client, send};
use serde_json::{Value, json};

async fn dev() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::dev(dir.path());
    s.wait_ready(Duration::from_secs(10)).await;
    (dir, s)
}

async fn put(s: &Server, path: &str, body: Value) -> berth_tests::Reply {
    send(http_client().put(s.url(path)).json(&body)).await
}

/// Status of a check as the catalog (not the agent) reports it.
async fn catalog_status(s: &Server, service: &str, check: &str) -> Option<String> {
    let checks = get_json(&s.url(&format!("/v1/health/checks/{service}"))).await;
    checks
        .as_array()?
        .iter()
        .find(|c| c["CheckID"] == check)
        .map(|c| c["Status"].as_str().unwrap_or_default().to_string())
}

async fn wait_status(s: &Server, service: &str, check: &str, want: &str, within: Duration) {
    eventually(
        within,
        &format!("{check} to be {want} in the catalog"),
        || async {
            (catalog_status(s, service, check).await.as_deref() == Some(want)).then_some(())
        },
    )
    .await
}

/// An HTTP endpoint whose answer the test switches between 200, 429 and 503.
async fn http_target() -> (SocketAddr, Arc<AtomicU16>) {
    let code = Arc::new(AtomicU16::new(200));
    let c = code.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let c = c.clone();
            async move {
                let code = axum::http::StatusCode::from_u16(c.load(Ordering::SeqCst)).unwrap();
                (code, "app says hi")
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, code)
}

#[tokio::test]
async fn ttl_checks_pass_warn_fail_and_expire() {
    let (_d, s) = dev().await;
    let r = put(
        &s,
        "/v1/agent/service/register",
        json!({
            "Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"],
            "Check": {"TTL": "1s"}
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Synced before the answer: the catalog already has it, critical until the first pass.
    assert_eq!(
        catalog_status(&s, "web", "service:web-1").await.as_deref(),
        Some("critical")
    );
    let rows = get_json(&s.url("/v1/catalog/service/web")).await;
    assert_eq!(rows[0]["ServiceTags"], json!(["v1"]));
    assert_eq!(rows[0]["Node"], "dev");

    let c = http_client();
    let r = send(c.put(s.url("/v1/agent/check/pass/service:web-1?note=all%20good"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        catalog_status(&s, "web", "service:web-1").await.as_deref(),
        Some("passing")
    );
    let passing = get_json(&s.url("/v1/health/service/web?passing")).await;
    assert_eq!(passing.as_array().unwrap().len(), 1);
    assert_eq!(
        passing[0]["Checks"].as_array().unwrap().len(),
        2,
        "serfHealth and the TTL"
    );
    let checks = get_json(&s.url("/v1/agent/checks")).await;
    assert_eq!(checks["service:web-1"]["Output"], "all good");

    send(c.put(s.url("/v1/agent/check/warn/service:web-1"))).await;
    assert_eq!(
        catalog_status(&s, "web", "service:web-1").await.as_deref(),
        Some("warning")
    );
    let r = put(
        &s,
        "/v1/agent/check/update/service:web-1",
        json!({"Status": "passing", "Output": "via update"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        catalog_status(&s, "web", "service:web-1").await.as_deref(),
        Some("passing")
    );
    // No further update: the TTL runs out and the check turns critical in the catalog.
    wait_status(
        &s,
        "web",
        "service:web-1",
        "critical",
        Duration::from_secs(5),
    )
    .await;
    let out = get_json(&s.url("/v1/agent/checks")).await["service:web-1"]["Output"].clone();
    assert!(out.as_str().unwrap().contains("TTL expired"), "{out}");
    assert!(
        get_json(&s.url("/v1/health/service/web?passing"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    let r = send(c.put(s.url("/v1/agent/service/deregister/web-1"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(get_json(&s.url("/v1/catalog/service/web")).await, json!([]));
    assert_eq!(get_json(&s.url("/v1/health/checks/web")).await, json!([]));
}

#[tokio::test]
async fn http_tcp_and_grpc_checks_probe_their_targets() {
    let (_d, s) = dev().await;
    let (http_addr, code) = http_target().await;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let (reporter, health_svc) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    let grpc_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc_l.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health_svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc_l))
            .await
    });

    let r = put(&s, "/v1/agent/service/register", json!({
        "Name": "shop", "Port": 9000,
        "Checks": [
            {"CheckID": "http", "HTTP": format!("http://{http_addr}/health"), "Interval": "1s", "Timeout": "1s"},
            {"CheckID": "tcp", "TCP": tcp_addr.to_string(), "Interval": "1s"},
            {"CheckID": "grpc", "GRPC": format!("{grpc_addr}/shop.Cart"), "Interval": "1s"}
        ]
    }))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for id in ["http", "tcp", "grpc"] {
        wait_status(&s, "shop", id, "passing", Duration::from_secs(10)).await;
    }
    let agent = get_json(&s.url("/v1/agent/checks")).await;
    assert!(
        agent["http"]["Output"]
            .as_str()
            .unwrap()
            .contains("app says hi"),
        "{}",
        agent["http"]
    );
    assert_eq!(agent["http"]["Type"], "http");

    code.store(429, Ordering::SeqCst);
    wait_status(&s, "shop", "http", "warning", Duration::from_secs(10)).await;
    code.store(503, Ordering::SeqCst);
    wait_status(&s, "shop", "http", "critical", Duration::from_secs(10)).await;
    drop(tcp);
    wait_status(&s, "shop", "tcp", "critical", Duration::from_secs(10)).await;
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::NotServing)
        .await;
    wait_status(&s, "shop", "grpc", "critical", Duration::from_secs(10)).await;
    code.store(200, Ordering::SeqCst);
    wait_status(&s, "shop", "http", "passing", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn critical_services_are_reaped_and_maintenance_takes_instances_out() {
    let (_d, s) = dev().await;
    put(
        &s,
        "/v1/agent/service/register",
        json!({
            "Name": "batch", "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "1s"}
        }),
    )
    .await;
    put(
        &s,
        "/v1/agent/service/register",
        json!({
            "Name": "api", "Port": 80, "Check": {"TTL": "30s", "Status": "passing"}
        }),
    )
    .await;
    // `batch` stays critical (never passed) and goes after 1 s.
    eventually(
        Duration::from_secs(10),
        "the critical service to be reaped",
        || async {
            get_json(&s.url("/v1/catalog/service/batch"))
                .await
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert!(
        get_json(&s.url("/v1/agent/services"))
            .await
            .get("batch")
            .is_none()
    );

    let c = http_client();
    assert_eq!(
        get_json(&s.url("/v1/health/service/api?passing"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r =
        send(c.put(s.url("/v1/agent/service/maintenance/api?enable=true&reason=deploying"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        get_json(&s.url("/v1/health/service/api?passing"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let m = get_json(&s.url("/v1/health/checks/api")).await;
    let maint = m
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "_service_maintenance:api")
        .unwrap();
    assert_eq!(
        (maint["Status"].as_str(), maint["Notes"].as_str()),
        (Some("critical"), Some("deploying"))
    );
    send(c.put(s.url("/v1/agent/service/maintenance/api?enable=false"))).await;
    assert_eq!(
        get_json(&s.url("/v1/health/service/api?passing"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    send(c.put(s.url("/v1/agent/maintenance?enable=true"))).await;
    assert!(
        get_json(&s.url("/v1/health/service/api?passing"))
            .await
            .as_array()
            .unwrap()
            .is_empty(),
        "node maintenance covers every service"
    );
    send(c.put(s.url("/v1/agent/maintenance?enable=false"))).await;
    assert_eq!(
        get_json(&s.url("/v1/health/service/api?passing"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Aggregated local health, as load balancers poll it.
    let r = send(c.get(s.url("/v1/agent/health/service/name/api"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["AggregatedStatus"], "passing");
}

#[tokio::test]
async fn anti_entropy_restores_what_the_catalog_lost() {
    let (_d, s) = dev().await;
    put(
        &s,
        "/v1/agent/service/register",
        json!({"Name": "web", "Check": {"TTL": "30s", "Status": "passing"}}),
    )
    .await;
    // Someone deregisters the agent's service behind its back...
    let r = put(
        &s,
        "/v1/catalog/deregister",
        json!({"Node": "dev", "ServiceID": "web"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(get_json(&s.url("/v1/catalog/service/web")).await, json!([]));
    // ...and registers a stray check on its node. The next sync repairs both.
    put(
        &s,
        "/v1/catalog/register",
        json!({"Node": "dev", "Address": "127.0.0.1", "SkipNodeUpdate": true,
        "Check": {"CheckID": "stray", "Name": "stray", "Status": "passing"}}),
    )
    .await;
    put(&s, "/v1/agent/service/register", json!({"Name": "other"})).await;
    eventually(
        Duration::from_secs(5),
        "web to be back in the catalog",
        || async {
            (get_json(&s.url("/v1/catalog/service/web"))
                .await
                .as_array()
                .unwrap()
                .len()
                == 1)
                .then_some(())
        },
    )
    .await;
    let node_checks = get_json(&s.url("/v1/health/node/dev")).await;
    let ids: Vec<&str> = node_checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"stray"), "{ids:?}");
    assert!(
        ids.contains(&"serfHealth") && ids.contains(&"service:web"),
        "{ids:?}"
    );
}

#[tokio::test]
async fn bad_agent_requests_are_refused_and_change_nothing() {
    let (_d, s) = dev().await;
    let c = http_client();
    for (path, body, status, needle) in [
        (
            "/v1/agent/service/register",
            "{not json",
            400,
            "Request decode failed",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name": "w", "Port": "eighty"}"#,
            400,
            "Port",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name": "w", "Chekc": {}}"#,
            400,
            "Chekc",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Port": 1}"#,
            400,
            "Missing service name",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name": "w", "Check": {"Args": ["/bin/true"], "Interval": "1s"}}"#,
            400,
            "Script checks are not supported",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name": "w", "Check": {"TTL": "soon"}}"#,
            400,
            "TTL",
        ),
        (
            "/v1/agent/check/register",
            r#"{"Name": "c", "TTL": "1s", "ServiceID": "ghost"}"#,
            404,
            "does not exist",
        ),
        (
            "/v1/agent/check/register",
            r#"{"TTL": "1s"}"#,
            400,
            "Missing check name",
        ),
        (
            "/v1/agent/check/update/ghost",
            r#"{"Status": "passing"}"#,
            404,
            "Unknown check ID",
        ),
        (
            "/v1/agent/check/update/ghost",
            r#"{"Status": "sleepy"}"#,
            400,
            "Invalid check status",
        ),
        ("/v1/agent/check/pass/ghost", "", 404, "Unknown check ID"),
        (
            "/v1/agent/check/deregister/ghost",
            "",
            404,
            "Unknown check ID",
        ),
        (
            "/v1/agent/service/deregister/ghost",
            "",
            404,
            "Unknown service ID",
        ),
        (
            "/v1/agent/service/maintenance/ghost?enable=true",
            "",
            404,
            "Unknown service ID",
        ),
        ("/v1/agent/maintenance", "", 400, "Missing value for enable"),
        (
            "/v1/agent/maintenance?enable=maybe",
            "",
            400,
            "Invalid value for enable",
        ),
    ] {
        let r = send(c.put(s.url(path)).body(body)).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.text());
        assert!(r.text().contains(needle), "{path} {body}: {}", r.text());
    }
    // A TTL update on a check that is not a TTL check.
    let (addr, _code) = http_target().await;
    put(
        &s,
        "/v1/agent/check/register",
        json!({"Name": "h", "HTTP": format!("http://{addr}/health"), "Interval": "10s"}),
    )
    .await;
    let r = send(c.put(s.url("/v1/agent/check/pass/h"))).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("does not have associated TTL"));
    for path in [
        "/v1/agent/services?filter=Service%20%3D%3D",
        "/v1/agent/checks?filter=((",
        "/v1/catalog/nodes?filter=Node%20~%20x",
    ] {
        let r = send(c.get(s.url(path))).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            r.text()
                .contains("Failed to create boolean expression evaluator"),
            "{}",
            r.text()
        );
    }
    let r = send(c.get(s.url("/v1/agent/service/ghost"))).await;
    assert_eq!(r.status, 404);
    let services = get_json(&s.url("/v1/agent/services")).await;
    assert_eq!(
        services.as_object().unwrap().len(),
        0,
        "nothing was registered: {services}"
    );
    assert_eq!(
        get_json(&s.url("/v1/agent/checks"))
            .await
            .as_object()
            .unwrap()
            .len(),
        1,
        "only h"
    );
    let r = send(c.get(s.url("/v1/agent/metrics?format=xml"))).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn sidecar_services_and_filters() {
    let (_d, s) = dev().await;
    let r = put(&s, "/v1/agent/service/register", json!({
        "name": "web", "port": 8080, "tags": ["prod"], "meta": {"team": "a"},
        "connect": {"sidecar_service": {"proxy": {"upstreams": [{"destination_name": "db", "local_bind_port": 9191}]}}}
    }))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let services = get_json(&s.url("/v1/agent/services")).await;
    let side = &services["web-sidecar-proxy"];
    assert_eq!(side["Kind"], "connect-proxy");
    assert_eq!(side["Port"], 21000);
    assert_eq!(side["Proxy"]["DestinationServiceName"], "web");
    assert_eq!(side["Proxy"]["LocalServicePort"], 8080);
    assert_eq!(side["Proxy"]["Upstreams"][0]["DestinationName"], "db");
    let connect = get_json(&s.url("/v1/catalog/connect/web")).await;
    assert_eq!(connect[0]["ServiceID"], "web-sidecar-proxy");
    let filtered =
        get_json(&s.url("/v1/agent/services?filter=Kind%20%3D%3D%20%22connect-proxy%22")).await;
    assert_eq!(
        filtered.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["web-sidecar-proxy"]
    );
    let by_meta =
        get_json(&s.url("/v1/catalog/service/web?filter=ServiceMeta.team%20%3D%3D%20a")).await;
    assert_eq!(by_meta.as_array().unwrap().len(), 1);
    let none = get_json(&s.url("/v1/health/service/web?filter=%22qa%22%20in%20Service.Tags")).await;
    assert_eq!(none, json!([]));
    let r = send(http_client().put(s.url("/v1/agent/service/deregister/web"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get_json(&s.url("/v1/agent/services")).await,
        json!({}),
        "the sidecar went with web"
    );
}

#[tokio::test]
async fn metrics_reload_monitor_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("extra.hcl");
    std::fs::write(&conf, "log_level = \"info\"\n").unwrap();
    let mut s = Server::start(
        dir.path(),
        "dev",
        berth_tests::free_port(),
        berth_tests::free_port(),
        &[
            "-dev".into(),
            "-config-file".into(),
            conf.display().to_string(),
        ],
    );
    s.wait_ready(Duration::from_secs(10)).await;
    let c = http_client();
    let prom = send(c.get(s.url("/v1/agent/metrics?format=prometheus"))).await;
    assert_eq!(prom.status, 200);
    let text = prom.text();
    assert!(text.contains("# TYPE berth_raft_term gauge"), "{text}");
    assert!(text.contains("berth_catalog_nodes 1"), "{text}");
    assert!(
        text.contains(
            "berth_http_requests_total{method=\"GET\",path=\"/v1/status/leader\",code=\"200\"}"
        ),
        "{text}"
    );
    let j = get_json(&s.url("/v1/agent/metrics")).await;
    assert!(
        j["Gauges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["Name"] == "berth.server.is_leader" && g["Value"] == 1.0)
    );

    // A monitor sees the reload's log line.
    let mut mon = c
        .get(s.url("/v1/agent/monitor?loglevel=info"))
        .send()
        .await
        .unwrap();
    assert_eq!(mon.status(), 200);
    let bad = send(c.get(s.url("/v1/agent/monitor?loglevel=loud"))).await;
    assert_eq!(bad.status, 400);
    let r = send(c.put(s.url("/v1/agent/reload"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let line = tokio::time::timeout(Duration::from_secs(5), mon.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&line).contains("configuration reloaded"));
    // A broken config file: the reload fails naming it, and the server keeps running.
    std::fs::write(&conf, "log_levle = \"debug\"\n").unwrap();
    let r = send(c.put(s.url("/v1/agent/reload"))).await;
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("extra.hcl") && r.text().contains("log_levle"),
        "{}",
        r.text()
    );
    assert_eq!(
        get_json(&s.url("/v1/status/leader"))
            .await
            .as_str()
            .map(|l| !l.is_empty()),
        Some(true)
    );

    let self_keys: Vec<String> = get_json(&s.url("/v1/agent/self"))
        .await
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for k in [
        "Config",
        "Member",
        "Stats",
        "xDS",
        "Coord",
        "DebugConfig",
        "Meta",
    ] {
        assert!(
            self_keys.contains(&k.to_string()),
            "{k} missing from {self_keys:?}"
        );
    }
    let r = send(c.put(s.url("/v1/agent/token/default")).body("{}")).await;
    assert_eq!((r.status, r.text().as_str()), (401, "ACL support disabled"));
    let r = send(c.put(s.url("/v1/agent/force-leave/ghost"))).await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("No node found"));

    let r = send(c.put(s.url("/v1/agent/leave"))).await;
    assert_eq!(r.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server still runs after leave"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_followers_agent_syncs_through_the_leader_and_a_dead_servers_services_stop_passing() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(30))
        .await;
    let f = (leader + 1) % 3;
    let r = put(
        &c.servers[f],
        "/v1/agent/service/register",
        json!({
            "Name": "cache", "Port": 6379, "Check": {"TTL": "1h", "Status": "passing"}
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let on_leader = get_json(&c.servers[leader].url("/v1/health/service/cache?passing")).await;
    assert_eq!(on_leader.as_array().unwrap().len(), 1, "{on_leader}");
    assert_eq!(on_leader[0]["Node"]["Node"], c.servers[f].name.as_str());

    c.servers[f].kill9();
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(15),
        "the dead server's service to leave ?passing",
        || async {
            get_json(&c.servers[leader].url("/v1/health/service/cache?passing"))
                .await
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    println!(
        "dropped out of ?passing {:?} after kill -9",
        started.elapsed()
    );
    let all = get_json(&c.servers[leader].url("/v1/health/service/cache")).await;
    let serf = all[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "serfHealth")
        .cloned()
        .unwrap();
    assert_eq!(serf["Status"], "critical");
}

/// `PUT /v1/agent/checks/update` changes several TTL checks in one request, or none of them
/// when one entry is bad.
#[tokio::test]
async fn checks_update_applies_all_entries_or_none() {
    let (_d, s) = dev().await;
    let r = put(
        &s,
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "web-1", "Checks": [
            {"CheckID": "web-1-app", "Name": "app", "TTL": "87600h", "Status": "critical"},
            {"CheckID": "web-1-side", "Name": "side", "TTL": "87600h", "Status": "critical"}
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        catalog_status(&s, "web", "web-1-app").await.as_deref(),
        Some("critical")
    );

    let r = put(
        &s,
        "/v1/agent/checks/update",
        json!([
            {"CheckID": "web-1-app", "Status": "passing", "Output": "HEALTHY"},
            {"CheckID": "web-1-side", "Status": "warning", "Output": "UNKNOWN"}
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The answer comes once the catalog carries the change.
    assert_eq!(
        catalog_status(&s, "web", "web-1-app").await.as_deref(),
        Some("passing")
    );
    assert_eq!(
        catalog_status(&s, "web", "web-1-side").await.as_deref(),
        Some("warning")
    );

    for (body, code, text) in [
        (
            json!([{"CheckID": "web-1-app", "Status": "critical"}, {"CheckID": "ghost", "Status": "passing"}]),
            404,
            "Unknown check ID \"ghost\"",
        ),
        (
            json!([{"CheckID": "web-1-app", "Status": "critical"}, {"CheckID": "web-1-side", "Status": "sleepy"}]),
            400,
            "Invalid check status",
        ),
        (
            json!({"CheckID": "web-1-app"}),
            400,
            "Request decode failed",
        ),
    ] {
        let r = put(&s, "/v1/agent/checks/update", body).await;
        assert_eq!(r.status, code, "{}", r.text());
        assert!(r.text().contains(text), "{}", r.text());
    }
    // Nothing of the refused requests was applied.
    let checks = get_json(&s.url("/v1/agent/checks")).await;
    assert_eq!(checks["web-1-app"]["Status"], "passing");
    assert_eq!(checks["web-1-side"]["Status"], "warning");
}
