//! The KV API of a dev-mode server, as a Consul client sees it.

use std::time::{Duration, Instant};

use base64::Engine;
use berth_tests::{Kv, Server, http_client, send};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A GET running in the background, for blocking queries.
fn spawn_get(c: &reqwest::Client, url: String) -> tokio::task::JoinHandle<berth_tests::Reply> {
    let c = c.clone();
    tokio::spawn(async move { send(c.get(url)).await })
}

async fn dev() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::dev(dir.path());
    s.wait_ready(Duration::from_secs(10)).await;
    (dir, s)
}

#[tokio::test]
async fn put_get_delete_with_base64_values_and_indexes() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };

    let r = kv.put("app/config", "hello world", "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "true"));
    let r = kv.get("app/config", "").await;
    assert_eq!(r.status, 200);
    let e = &r.json()[0];
    assert_eq!(e["Key"], "app/config");
    assert_eq!(e["Value"], B64.encode("hello world"));
    assert_eq!(e["Flags"], 0);
    assert_eq!(e["LockIndex"], 0);
    let created = e["CreateIndex"].as_u64().unwrap();
    assert_eq!(e["ModifyIndex"].as_u64().unwrap(), created);
    assert_eq!(
        r.index(),
        created,
        "X-Consul-Index of a key is its ModifyIndex"
    );
    assert_eq!(r.header("x-consul-knownleader"), "true");
    assert_eq!(r.header("x-consul-effective-consistency"), "leader");

    kv.put("app/config", "v2", "?flags=42").await;
    let e = kv.get("app/config", "").await.json()[0].clone();
    assert_eq!(e["CreateIndex"].as_u64().unwrap(), created);
    assert!(e["ModifyIndex"].as_u64().unwrap() > created);
    assert_eq!(e["Flags"], 42);
    assert_eq!(kv.value("app/config", "").await.unwrap(), b"v2");

    // An empty value reads back as null, as in Consul.
    kv.put("empty", "", "").await;
    assert!(kv.get("empty", "").await.json()[0]["Value"].is_null());

    let r = kv.delete("app/config", "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "true"));
    let r = kv.get("app/config", "").await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert!(r.index() > created, "a 404 still carries an index");
}

#[tokio::test]
async fn recurse_keys_and_separator() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };
    for k in ["web/a", "web/b/c", "web/b/d", "webhook", "db/x"] {
        assert_eq!(kv.put(k, k, "").await.status, 200);
    }
    let r = kv.get("web/", "?recurse").await;
    let keys: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["web/a", "web/b/c", "web/b/d"]);
    let r = kv.get("web", "?keys").await;
    assert_eq!(
        r.json(),
        serde_json::json!(["web/a", "web/b/c", "web/b/d", "webhook"])
    );
    let r = kv.get("web/", "?keys&separator=/").await;
    assert_eq!(r.json(), serde_json::json!(["web/a", "web/b/"]));
    let r = kv.get("", "?keys&separator=/").await;
    assert_eq!(r.json(), serde_json::json!(["db/", "web/", "webhook"]));
    assert_eq!(kv.get("nothing/", "?recurse").await.status, 404);

    assert_eq!(kv.delete("web/", "?recurse").await.status, 200);
    assert_eq!(kv.get("web/", "?recurse").await.status, 404);
    assert_eq!(kv.value("webhook", "").await.unwrap(), b"webhook");
}

#[tokio::test]
async fn check_and_set() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };
    assert_eq!(kv.put("k", "1", "?cas=0").await.text(), "true");
    assert_eq!(
        kv.put("k", "2", "?cas=0").await.text(),
        "false",
        "cas=0 only creates"
    );
    let idx = kv.get("k", "").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        kv.put("k", "3", &format!("?cas={}", idx + 100))
            .await
            .text(),
        "false"
    );
    assert_eq!(
        kv.put("k", "3", &format!("?cas={idx}")).await.text(),
        "true"
    );
    assert_eq!(kv.value("k", "").await.unwrap(), b"3");
    assert_eq!(
        kv.delete("k", &format!("?cas={idx}")).await.text(),
        "false",
        "stale cas delete"
    );
    let idx = kv.get("k", "").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(kv.delete("k", &format!("?cas={idx}")).await.text(), "true");
    assert!(kv.value("k", "").await.is_none());
}

#[tokio::test]
async fn bad_input_is_rejected_and_loses_nothing() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };
    kv.put("keep", "safe", "").await;

    let limit = 512 * 1024;
    let r = kv.put("big", vec![b'x'; limit], "").await;
    assert_eq!(r.status, 200, "exactly 512 KiB is accepted: {}", r.text());
    assert_eq!(kv.value("big", "").await.unwrap().len(), limit);
    let r = kv.put("big", vec![b'y'; limit + 1], "").await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("too large"), "{}", r.text());
    assert_eq!(
        kv.value("big", "").await.unwrap()[0],
        b'x',
        "the old value survives"
    );

    let r = kv.put("k", "v", "?flags=notanumber").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("flags"), "{}", r.text());
    assert_eq!(kv.put("k", "v", "?cas=-1").await.status, 400);
    let r = send(c.put(s.url("/v1/kv/"))).await;
    assert_eq!((r.status, r.text().as_str()), (400, "Missing key name"));
    assert_eq!(kv.put("k", "v", "?acquire=a&release=b").await.status, 400);
    let r = kv.get("keep", "?stale&consistent").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("conflicting semantics"), "{}", r.text());
    assert_eq!(kv.get("keep", "?index=abc").await.status, 400);
    assert_eq!(kv.get("keep", "?index=1&wait=soon").await.status, 400);
    assert_eq!(send(c.get(s.url("/v1/nope"))).await.status, 404);
    assert!(
        kv.value("k", "").await.is_none(),
        "rejected writes wrote nothing"
    );
    assert_eq!(kv.value("keep", "").await.unwrap(), b"safe");
}

#[tokio::test]
async fn consistency_modes_report_themselves() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };
    kv.put("m", "1", "").await;
    for (q, mode) in [
        ("", "leader"),
        ("?consistent", "consistent"),
        ("?stale", "stale"),
    ] {
        let r = kv.get("m", q).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-consul-effective-consistency"), mode);
        assert_eq!(r.header("x-consul-knownleader"), "true");
        assert_eq!(r.header("x-consul-lastcontact"), "0");
    }
}

#[tokio::test]
async fn blocking_query_returns_on_change_and_not_for_other_keys() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };
    kv.put("watched", "1", "").await;
    kv.put("other", "1", "").await;
    let idx = kv.get("watched", "").await.index();

    // A write to another key must not wake the watcher: it returns at its wait, unchanged.
    let started = Instant::now();
    let waiter = spawn_get(&c, s.url(&format!("/v1/kv/watched?index={idx}&wait=2s")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    kv.put("other", "2", "").await;
    let r = waiter.await.unwrap();
    assert_eq!(r.index(), idx, "woken by a change to another key");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "returned before its wait"
    );

    // A write to the key wakes it long before its wait.
    let started = Instant::now();
    let waiter = spawn_get(&c, s.url(&format!("/v1/kv/watched?index={idx}&wait=60s")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    kv.put("watched", "2", "").await;
    let r = waiter.await.unwrap();
    assert!(r.index() > idx);
    assert_eq!(r.json()[0]["Value"], B64.encode("2"));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not woken by the change"
    );

    // Prefix watchers wake for a key below them, including its deletion.
    let pidx = kv.get("dir/", "?recurse").await.index();
    let waiter = spawn_get(
        &c,
        s.url(&format!("/v1/kv/dir/?recurse&index={pidx}&wait=60s")),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    kv.put("dir/sub/key", "x", "").await;
    let r = waiter.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.index() > pidx);
    let pidx = r.index();
    let waiter = spawn_get(
        &c,
        s.url(&format!("/v1/kv/dir/?recurse&index={pidx}&wait=60s")),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    kv.delete("dir/sub/key", "").await;
    let r = waiter.await.unwrap();
    assert_eq!(r.status, 404);
    assert!(
        r.index() > pidx,
        "a deletion moves the prefix index forward"
    );
}

#[tokio::test]
async fn status_and_agent_endpoints() {
    let (_d, s) = dev().await;
    let leader: String = berth_tests::get_json(&s.url("/v1/status/leader"))
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(leader, s.rpc_addr());
    let peers = berth_tests::get_json(&s.url("/v1/status/peers")).await;
    assert_eq!(peers, serde_json::json!([s.rpc_addr()]));
    let me = s.agent_self().await;
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["NodeName"], "dev");
    assert_eq!(me["Config"]["Server"], true);
    assert!(me["Config"]["Version"].as_str().unwrap().starts_with("1."));
    assert_eq!(me["Stats"]["raft"]["state"], "Leader");
    let conf = berth_tests::get_json(&s.url("/v1/operator/raft/configuration")).await;
    let servers = conf["Servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["Leader"], true);
    assert_eq!(servers[0]["Voter"], true);
    assert_eq!(servers[0]["Address"], s.rpc_addr());
    assert_eq!(servers[0]["ID"], me["Config"]["NodeID"]);
    let members = berth_tests::get_json(&s.url("/v1/agent/members")).await;
    assert_eq!(members[0]["Name"], "dev");
    assert_eq!(members[0]["Status"], 1);
    assert_eq!(members[0]["Tags"]["role"], "consul");
}
