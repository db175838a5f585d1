//! Sessions and KV locks, the basis of leader election for Berth's controllers.

use std::time::{Duration, Instant};

use berth_tests::{Kv, Server, eventually, http_client, send};
use serde_json::{Value, json};

async fn dev() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::dev(dir.path());
    s.wait_ready(Duration::from_secs(10)).await;
    (dir, s)
}

async fn create(c: &reqwest::Client, s: &Server, body: Value) -> String {
    let r = send(c.put(s.url("/v1/session/create")).json(&body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["ID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_info_list_node_renew_destroy() {
    let (_d, s) = dev().await;
    let c = http_client();
    let id = create(
        &c,
        &s,
        json!({"Name": "lock-holder", "TTL": "30s", "LockDelay": "1s"}),
    )
    .await;
    let info = berth_tests::get_json(&s.url(&format!("/v1/session/info/{id}"))).await;
    let e = &info[0];
    assert_eq!(e["ID"], id);
    assert_eq!(e["Name"], "lock-holder");
    assert_eq!(e["Node"], "dev");
    assert_eq!(e["TTL"], "30s");
    assert_eq!(e["Behavior"], "release");
    assert_eq!(e["LockDelay"], 1_000_000_000u64);
    // py-consul sends lowercase keys; they must be understood too.
    let id2 = create(
        &c,
        &s,
        json!({"name": "second", "behavior": "delete", "node": "dev"}),
    )
    .await;
    let list = berth_tests::get_json(&s.url("/v1/session/list")).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let on_dev = berth_tests::get_json(&s.url("/v1/session/node/dev")).await;
    assert_eq!(on_dev.as_array().unwrap().len(), 2);
    assert!(
        on_dev
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["Behavior"] == "delete")
    );
    let elsewhere = berth_tests::get_json(&s.url("/v1/session/node/elsewhere")).await;
    assert!(elsewhere.as_array().unwrap().is_empty());
    // A session for a node that is not registered is refused, as in Consul.
    let r = send(
        c.put(s.url("/v1/session/create"))
            .json(&json!({"Node": "elsewhere"})),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "Missing node registration");
    // Another datacenter cannot be reached.
    let r = send(c.get(s.url("/v1/session/list?dc=dc2"))).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "No path to datacenter")
    );

    let r = send(c.put(s.url(&format!("/v1/session/renew/{id}")))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["ID"], id);
    let r = send(c.put(s.url("/v1/session/renew/00000000-0000-0000-0000-000000000000"))).await;
    assert_eq!(r.status, 404);

    for sid in [&id, &id2] {
        let r = send(c.put(s.url(&format!("/v1/session/destroy/{sid}")))).await;
        assert_eq!((r.status, r.text().as_str()), (200, "true"));
    }
    let r = send(c.get(s.url(&format!("/v1/session/info/{id}")))).await;
    assert_eq!(r.status, 404);
    let list = berth_tests::get_json(&s.url("/v1/session/list")).await;
    assert!(list.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bad_session_requests_are_400s() {
    let (_d, s) = dev().await;
    let c = http_client();
    for body in [
        json!({"TTL": "5s"}),
        json!({"Behavior": "explode"}),
        json!({"Name": 3}),
    ] {
        let r = send(c.put(s.url("/v1/session/create")).json(&body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    let r = send(c.put(s.url("/v1/session/create")).body("{nope")).await;
    assert_eq!(r.status, 400);
    let list = berth_tests::get_json(&s.url("/v1/session/list")).await;
    assert!(list.as_array().unwrap().is_empty(), "nothing was created");
}

#[tokio::test]
async fn locks_acquire_release_and_exclude_other_sessions() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };
    let a = create(&c, &s, json!({"LockDelay": "0s"})).await;
    let b = create(&c, &s, json!({"LockDelay": "0s"})).await;

    assert_eq!(
        kv.put("service/leader", "a", &format!("?acquire={a}"))
            .await
            .text(),
        "true"
    );
    let e = kv.get("service/leader", "").await.json()[0].clone();
    assert_eq!(e["Session"], a);
    assert_eq!(e["LockIndex"], 1);
    assert_eq!(
        kv.put("service/leader", "b", &format!("?acquire={b}"))
            .await
            .text(),
        "false"
    );
    assert_eq!(
        kv.put("service/leader", "b", &format!("?release={b}"))
            .await
            .text(),
        "false"
    );
    assert_eq!(kv.value("service/leader", "").await.unwrap(), b"a");

    assert_eq!(
        kv.put("service/leader", "a2", &format!("?release={a}"))
            .await
            .text(),
        "true"
    );
    let e = kv.get("service/leader", "").await.json()[0].clone();
    assert!(e.get("Session").is_none() || e["Session"].is_null());
    assert_eq!(
        kv.put("service/leader", "b", &format!("?acquire={b}"))
            .await
            .text(),
        "true"
    );
    assert_eq!(kv.get("service/leader", "").await.json()[0]["LockIndex"], 2);

    let r = kv
        .put("x", "v", "?acquire=11111111-1111-1111-1111-111111111111")
        .await;
    assert_eq!(
        r.status,
        500,
        "an unknown session is an error: {}",
        r.text()
    );
    assert!(r.text().contains("invalid session"), "{}", r.text());
}

#[tokio::test]
async fn invalidation_releases_or_deletes_and_lock_delay_holds_the_key() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };
    let rel = create(&c, &s, json!({"LockDelay": "3s"})).await;
    let del = create(&c, &s, json!({"Behavior": "delete", "LockDelay": "0s"})).await;
    let other = create(&c, &s, json!({"LockDelay": "0s"})).await;
    assert_eq!(
        kv.put("locked", "1", &format!("?acquire={rel}"))
            .await
            .text(),
        "true"
    );
    assert_eq!(
        kv.put("ephemeral", "1", &format!("?acquire={del}"))
            .await
            .text(),
        "true"
    );

    send(c.put(s.url(&format!("/v1/session/destroy/{rel}")))).await;
    let e = kv.get("locked", "").await.json()[0].clone();
    assert!(
        e.get("Session").is_none() || e["Session"].is_null(),
        "release behaviour unlocks: {e}"
    );
    assert_eq!(kv.value("locked", "").await.unwrap(), b"1");
    // Within the lock-delay nobody may take the key.
    assert_eq!(
        kv.put("locked", "2", &format!("?acquire={other}"))
            .await
            .text(),
        "false"
    );
    eventually(Duration::from_secs(15), "lock-delay to pass", || async {
        (kv.put("locked", "2", &format!("?acquire={other}"))
            .await
            .text()
            == "true")
            .then_some(())
    })
    .await;

    send(c.put(s.url(&format!("/v1/session/destroy/{del}")))).await;
    assert!(
        kv.value("ephemeral", "").await.is_none(),
        "delete behaviour removes the key"
    );
}

#[tokio::test]
async fn ttl_expiry_invalidates_the_session() {
    let (_d, s) = dev().await;
    let c = http_client();
    let kv = Kv {
        client: &c,
        base: s.url(""),
    };
    let id = create(&c, &s, json!({"TTL": "10s", "LockDelay": "0s"})).await;
    assert_eq!(
        kv.put("ttl-lock", "x", &format!("?acquire={id}"))
            .await
            .text(),
        "true"
    );
    let started = Instant::now();
    eventually(Duration::from_secs(30), "session TTL expiry", || async {
        let r = send(c.get(s.url(&format!("/v1/session/info/{id}")))).await;
        (r.status == 404).then_some(())
    })
    .await;
    // Consul's contract: never before the TTL.
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "expired early: {:?}",
        started.elapsed()
    );
    let e = kv.get("ttl-lock", "").await.json()[0].clone();
    assert!(e.get("Session").is_none() || e["Session"].is_null());
}

#[tokio::test]
async fn renew_keeps_a_ttl_session_alive() {
    let (_d, s) = dev().await;
    let c = http_client();
    let id = create(&c, &s, json!({"TTL": "10s"})).await;
    // Renewing every 3 s for 25 s keeps it past two full TTL windows.
    let until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < until {
        let r = send(c.put(s.url(&format!("/v1/session/renew/{id}")))).await;
        assert_eq!(r.status, 200, "session expired despite renewals");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let r = send(c.get(s.url(&format!("/v1/session/info/{id}")))).await;
    assert_eq!(r.status, 200);
}
