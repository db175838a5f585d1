//! The catalog and health API of a dev server: register, read, deregister, block per service.

use std::time::{Duration, Instant};

use berth_tests::{Server, get_json, http_client, send};
use serde_json::{Value, json};

async fn dev() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::dev(dir.path());
    s.wait_ready(Duration::from_secs(10)).await;
    // The leader registers itself as the `consul` service; wait so that node lists are stable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_json(&s.url("/v1/catalog/service/consul"))
        .await
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the server never registered itself"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (dir, s)
}

async fn register(c: &reqwest::Client, s: &Server, body: Value) -> berth_tests::Reply {
    send(c.put(s.url("/v1/catalog/register")).json(&body)).await
}

fn web(node: &str, addr: &str, id: &str, tags: &[&str], status: &str) -> Value {
    json!({
        "Node": node, "Address": addr, "NodeMeta": {"rack": "r1"},
        "Service": {"ID": id, "Service": "web", "Tags": tags, "Port": 8080, "Meta": {"version": "2"}},
        "Check": {"CheckID": format!("{id}-alive"), "Name": "alive", "ServiceID": id, "Status": status}
    })
}

#[tokio::test]
async fn register_read_and_deregister() {
    let (_d, s) = dev().await;
    let c = http_client();
    assert_eq!(
        register(
            &c,
            &s,
            web("n1", "10.0.0.1", "web-1", &["v2", "blue"], "passing")
        )
        .await
        .text(),
        "true"
    );
    // py-consul style lowercase keys work as well.
    let r = register(&c, &s, json!({
        "node": "n2", "address": "10.0.0.2",
        "service": {"service": "web", "id": "web-2", "tags": ["v2"], "port": 8080},
        "check": {"checkid": "web-2-alive", "name": "alive", "serviceid": "web-2", "status": "critical"}
    }))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    register(
        &c,
        &s,
        json!({"Node": "n2", "Address": "10.0.0.2", "Service": {"Service": "db", "Port": 5432}}),
    )
    .await;

    assert_eq!(
        get_json(&s.url("/v1/catalog/datacenters")).await,
        json!(["dc1"])
    );
    let nodes = get_json(&s.url("/v1/catalog/nodes")).await;
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev", "n1", "n2"], "the server itself is a node");
    assert_eq!(nodes[1]["Meta"]["rack"], "r1");
    assert_eq!(nodes[1]["Datacenter"], "dc1");
    let rack = get_json(&s.url("/v1/catalog/nodes?node-meta=rack:r1")).await;
    assert_eq!(rack.as_array().unwrap().len(), 1);

    let services = get_json(&s.url("/v1/catalog/services")).await;
    assert_eq!(services["db"], json!([]));
    assert_eq!(services["web"], json!(["blue", "v2"]));

    let rows = get_json(&s.url("/v1/catalog/service/web")).await;
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["ServiceID"], "web-1");
    assert_eq!(rows[0]["Address"], "10.0.0.1");
    assert_eq!(rows[0]["ServicePort"], 8080);
    assert_eq!(rows[0]["ServiceMeta"]["version"], "2");
    assert_eq!(
        rows[0]["ServiceWeights"],
        json!({"Passing": 1, "Warning": 1})
    );
    let blue = get_json(&s.url("/v1/catalog/service/web?tag=blue")).await;
    assert_eq!(blue.as_array().unwrap().len(), 1);
    assert_eq!(
        get_json(&s.url("/v1/catalog/service/nope")).await,
        json!([]),
        "unknown service: []"
    );

    let n1 = get_json(&s.url("/v1/catalog/node/n1")).await;
    assert_eq!(n1["Node"]["Address"], "10.0.0.1");
    assert_eq!(n1["Services"]["web-1"]["Service"], "web");
    let n2 = get_json(&s.url("/v1/catalog/node-services/n2")).await;
    assert_eq!(n2["Services"].as_array().unwrap().len(), 2);
    let missing = send(c.get(s.url("/v1/catalog/node/ghost"))).await;
    assert_eq!((missing.status, missing.text().as_str()), (404, "null"));

    let health = get_json(&s.url("/v1/health/service/web")).await;
    assert_eq!(health.as_array().unwrap().len(), 2);
    assert_eq!(health[0]["Node"]["Node"], "n1");
    assert_eq!(health[0]["Service"]["ID"], "web-1");
    assert_eq!(health[0]["Checks"][0]["Status"], "passing");
    assert_eq!(health[0]["Checks"][0]["ServiceName"], "web");
    let passing = get_json(&s.url("/v1/health/service/web?passing")).await;
    assert_eq!(
        passing.as_array().unwrap().len(),
        1,
        "the critical instance is left out"
    );
    assert_eq!(passing[0]["Service"]["ID"], "web-1");
    let checks = get_json(&s.url("/v1/health/checks/web")).await;
    assert_eq!(checks.as_array().unwrap().len(), 2);
    let critical = get_json(&s.url("/v1/health/state/critical")).await;
    assert_eq!(critical.as_array().unwrap().len(), 1);
    assert_eq!(critical[0]["CheckID"], "web-2-alive");
    assert_eq!(
        get_json(&s.url("/v1/health/node/n1"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(get_json(&s.url("/v1/health/node/ghost")).await, json!([]));
    assert_eq!(
        send(c.get(s.url("/v1/health/state/sleepy"))).await.status,
        400
    );

    // Deregister a service (its checks go with it), then a whole node.
    let r = send(
        c.put(s.url("/v1/catalog/deregister"))
            .json(&json!({"Node": "n2", "ServiceID": "web-2"})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get_json(&s.url("/v1/catalog/service/web"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        get_json(&s.url("/v1/health/state/critical"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    send(
        c.put(s.url("/v1/catalog/deregister"))
            .json(&json!({"Node": "n2"})),
    )
    .await;
    assert_eq!(get_json(&s.url("/v1/catalog/service/db")).await, json!([]));
    assert_eq!(send(c.get(s.url("/v1/catalog/node/n2"))).await.status, 404);
}

#[tokio::test]
async fn bad_registrations_are_refused_and_change_nothing() {
    let (_d, s) = dev().await;
    let c = http_client();
    register(&c, &s, web("n1", "10.0.0.1", "web-1", &[], "passing")).await;
    let before = get_json(&s.url("/v1/health/node/n1")).await;
    for (body, needle) in [
        (
            json!({"Node": "n1", "Address": "10.0.0.1", "Check": {"Name": "c", "ServiceID": "nope"}}),
            "Unknown service ID",
        ),
        (
            json!({"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": "http"}}),
            "Port",
        ),
        (json!({"Address": "10.0.0.1"}), "Must provide node"),
        (
            json!({"Node": "n1", "Address": "10.0.0.1", "Check": {"Name": "c", "Status": "fine"}}),
            "Invalid check status",
        ),
    ] {
        let r = register(&c, &s, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(needle), "{body}: {}", r.text());
    }
    let r = send(c.put(s.url("/v1/catalog/register")).body("{not json")).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        get_json(&s.url("/v1/health/node/n1")).await,
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_change_to_one_service_wakes_only_its_watchers() {
    let (_d, s) = dev().await;
    let c = http_client();
    register(&c, &s, web("n1", "10.0.0.1", "web-1", &[], "passing")).await;
    // Same node fields: a node change would rightly concern every service on it.
    register(&c, &s, json!({"Node": "n1", "Address": "10.0.0.1", "NodeMeta": {"rack": "r1"}, "Service": {"Service": "api", "Port": 9000}})).await;
    let web_idx = send(c.get(s.url("/v1/health/service/web"))).await.index();
    let api_idx = send(c.get(s.url("/v1/health/service/api"))).await.index();

    let watch = |name: &str, idx: u64, wait: &str| {
        let c = c.clone();
        let url = s.url(&format!(
            "/v1/health/service/{name}?index={idx}&wait={wait}"
        ));
        tokio::spawn(async move { send(c.get(url)).await })
    };
    let api_watcher = watch("api", api_idx, "2s");
    let web_watcher = watch("web", web_idx, "60s");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    // The web instance turns critical.
    register(&c, &s, web("n1", "10.0.0.1", "web-1", &[], "critical")).await;
    let r = web_watcher.await.unwrap();
    assert!(r.index() > web_idx);
    assert_eq!(r.json()[0]["Checks"][0]["Status"], "critical");
    assert!(started.elapsed() < Duration::from_secs(30));
    let r = api_watcher.await.unwrap();
    assert_eq!(
        r.index(),
        api_idx,
        "the api watcher was woken by a change to web"
    );
}

#[tokio::test]
async fn catalog_writes_replicate_and_forward_in_a_cluster() {
    let c3 = berth_tests::Cluster::start(3, &[]).await;
    let leader = c3
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(10))
        .await;
    let follower = &c3.servers[(leader + 1) % 3];
    let c = http_client();
    let r = register(&c, follower, web("n1", "10.0.0.1", "web-1", &[], "passing")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let other = &c3.servers[(leader + 2) % 3];
    berth_tests::eventually(
        Duration::from_secs(10),
        "replicated registration",
        || async {
            let v = get_json(&other.url("/v1/health/service/web?stale")).await;
            (v.as_array().map(|a| a.len()) == Some(1)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_server_service_name_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        "dev",
        berth_tests::free_port(),
        berth_tests::free_port(),
        &[
            "-dev".into(),
            "-server-service-name".into(),
            "berth-servers".into(),
        ],
    );
    s.wait_ready(Duration::from_secs(10)).await;
    let rows = berth_tests::eventually(
        Duration::from_secs(10),
        "the server's registration",
        || async {
            let rows = get_json(&s.url("/v1/catalog/service/berth-servers")).await;
            (!rows.as_array().unwrap().is_empty()).then_some(rows)
        },
    )
    .await;
    assert_eq!(rows[0]["ServicePort"], s.rpc_port);
    assert_eq!(
        get_json(&s.url("/v1/catalog/service/consul")).await,
        json!([])
    );
    let bad = std::process::Command::new(berth_tests::bin("berth-server"))
        .args(["-dev", "-server-service-name", "no spaces"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("server_service_name"));
}
