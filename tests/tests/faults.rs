//! Crashes, restarts and a stalled follower: no acknowledged write may be lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::{Cluster, Kv, eventually, http_client};

/// Writers that put keys until told to stop, recording every write the cluster acknowledged.
async fn run_writers(
    urls: Vec<String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
) {
    let mut tasks = Vec::new();
    for w in 0..4 {
        let urls = urls.clone();
        let stop = stop.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let key = format!("w{w}/k{i}");
                let value = format!("v{i}");
                // Any server: followers forward; a dead one just fails this attempt.
                let url = &urls[(i as usize + w) % urls.len()];
                let sent = client
                    .put(format!("{url}/v1/kv/{key}"))
                    .body(value.clone())
                    .send()
                    .await;
                if let Ok(r) = sent
                    && r.status().is_success()
                    && r.text().await.unwrap_or_default() == "true"
                {
                    acked.lock().unwrap().insert(key, value);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test]
async fn leader_kill9_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(10))
        .await;
    let urls: Vec<String> = c.servers.iter().map(|s| s.url("")).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let writers = tokio::spawn(run_writers(urls, stop.clone(), acked.clone()));
    eventually(Duration::from_secs(20), "writes flowing", || async {
        (acked.lock().unwrap().len() > 200).then_some(())
    })
    .await;

    c.servers[leader].kill9();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let client = http_client();
    // A new leader takes a write within 5 s.
    let mut n = 0;
    let elapsed = loop {
        let s = &c.servers[survivors[n % 2]];
        n += 1;
        let kv = Kv {
            client: &client,
            base: s.url(""),
        };
        let put = tokio::time::timeout(Duration::from_secs(2), kv.put("probe/after-kill", "x", ""));
        if let Ok(r) = put.await
            && r.status == 200
            && r.text() == "true"
        {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no leader serving writes 15 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("a new leader served a write {elapsed:?} after kill -9 of the old one");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writers.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    println!("{} acknowledged writes", acked.len());
    for &i in &survivors {
        let kv = Kv {
            client: &client,
            base: c.servers[i].url(""),
        };
        for prefix in ["w0/", "w1/", "w2/", "w3/"] {
            let r = kv.get(prefix, "?recurse&consistent").await;
            assert_eq!(r.status, 200, "{}", r.text());
            let got: BTreeMap<String, String> = r
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let v = e["Value"].as_str().unwrap_or_default();
                    let v = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v)
                        .unwrap();
                    (
                        e["Key"].as_str().unwrap().to_string(),
                        String::from_utf8(v).unwrap(),
                    )
                })
                .collect();
            for (k, v) in acked.iter().filter(|(k, _)| k.starts_with(prefix)) {
                assert_eq!(
                    got.get(k),
                    Some(v),
                    "acknowledged write {k} lost on {}",
                    c.servers[i].name
                );
            }
        }
    }
}

#[tokio::test]
async fn full_restart_keeps_data_and_indexes() {
    let mut c = Cluster::start(3, &[]).await;
    let client = http_client();
    let kv = Kv {
        client: &client,
        base: c.servers[0].url(""),
    };
    for i in 0..50 {
        assert_eq!(
            kv.put(&format!("r/{i}"), format!("{i}"), "").await.status,
            200
        );
    }
    let before = kv.get("r/", "?recurse&consistent").await.json();
    for s in &mut c.servers {
        s.kill9();
    }
    for s in &mut c.servers {
        s.restart();
    }
    c.wait_agreed_leader(&[0, 1, 2], Duration::from_secs(30))
        .await;
    for s in &c.servers {
        let kv = Kv {
            client: &client,
            base: s.url(""),
        };
        let after = kv.get("r/", "?recurse&consistent").await.json();
        assert_eq!(
            after, before,
            "data or indexes changed across a restart (via {})",
            s.name
        );
    }
}

#[tokio::test]
async fn stopped_follower_catches_up_by_snapshot_install() {
    // Batching folds concurrent writes into fewer log entries, so the thresholds are low
    // enough that 10,000 writes still compact the log many times.
    let c = Cluster::start(
        3,
        &[
            "-raft-snapshot-threshold",
            "100",
            "-raft-trailing-logs",
            "20",
        ],
    )
    .await;
    let leader = c
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(10))
        .await;
    let follower = (leader + 1) % 3;
    c.servers[follower].sigstop();

    let url = c.servers[leader].url("");
    let mut tasks = Vec::new();
    for w in 0..32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in (w..10_000).step_by(32) {
                let r = client
                    .put(format!("{url}/v1/kv/bulk/{i:05}"))
                    .body(format!("{i}"))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let snap: u64 = c.servers[leader]
        .raft_stat("last_snapshot_index")
        .await
        .parse()
        .unwrap();
    assert!(snap > 0, "the leader never compacted its log");

    c.servers[follower].sigcont();
    let client = http_client();
    let kv = Kv {
        client: &client,
        base: c.servers[follower].url(""),
    };
    eventually(
        Duration::from_secs(30),
        "the follower to catch up",
        || async { kv.value("bulk/09999", "?stale").await.map(|_| ()) },
    )
    .await;
    let installs: u64 = c.servers[follower]
        .raft_stat("snapshot_installs")
        .await
        .parse()
        .unwrap();
    assert!(installs >= 1, "caught up without a snapshot install");
    let keys = kv.get("bulk/", "?keys&stale").await.json();
    assert_eq!(keys.as_array().unwrap().len(), 10_000);
}
