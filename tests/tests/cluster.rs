//! Cluster formation, forwarding, membership changes and leadership transfer with real
//! server processes.

use std::time::Duration;

use berth_tests::{Cluster, Kv, Server, eventually, get_json, http_client, send};

async fn voters(s: &Server) -> Vec<(String, bool)> {
    let conf = get_json(&s.url("/v1/operator/raft/configuration?stale")).await;
    conf["Servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["Node"].as_str().unwrap().to_string(),
                v["Voter"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn three_servers_form_one_cluster_in_any_start_order() {
    let (dir, plans) = Cluster::plan(3, &[]);
    // The last one first, the others a while later.
    let s3 = plans[2].start(dir.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s3.leader().await.unwrap_or_default(),
        "",
        "one server alone must not bootstrap"
    );
    let mut servers: Vec<Server> = plans[..2].iter().map(|p| p.start(dir.path())).collect();
    servers.push(s3);
    let c = Cluster { dir, servers };
    let leader = c
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(30))
        .await;
    for s in &c.servers {
        let v = voters(s).await;
        assert_eq!(v.len(), 3, "{}: {v:?}", s.name);
        assert!(v.iter().all(|(_, voter)| *voter));
    }
    let peers = get_json(&c.servers[leader].url("/v1/status/peers")).await;
    assert_eq!(peers.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn followers_forward_writes_and_reads_to_the_leader() {
    let c = Cluster::start(3, &[]).await;
    let leader = c
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(10))
        .await;
    let follower = (leader + 1) % 3;
    let client = http_client();
    let kv = Kv {
        client: &client,
        base: c.servers[follower].url(""),
    };
    let r = kv.put("via/follower", "v", "").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "true"),
        "forwarded write"
    );
    let r = kv.get("via/follower", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-consul-effective-consistency"), "leader");
    let r = kv.get("via/follower", "?consistent").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-consul-effective-consistency"), "consistent");
    // A stale read is answered by the follower itself once it has applied the write.
    let r = eventually(
        Duration::from_secs(10),
        "stale read on the follower",
        || async {
            let r = kv.get("via/follower", "?stale").await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(r.header("x-consul-effective-consistency"), "stale");
    assert_eq!(r.header("x-consul-knownleader"), "true");
    let contact: u64 = r.header("x-consul-lastcontact").parse().unwrap();
    assert!(contact < 60_000, "follower lost contact: {contact} ms");
    // Sessions created through a follower land on the leader too.
    let r = send(
        client
            .put(c.servers[follower].url("/v1/session/create"))
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_later_server_joins_as_voter_and_can_be_removed() {
    let mut c = Cluster::start(3, &[]).await;
    let join: Vec<String> = vec![
        "-retry-join".into(),
        c.servers[0].rpc_addr(),
        "-retry-interval".into(),
        "200ms".into(),
    ];
    let s4 = Server::start(
        c.dir.path(),
        "s4",
        berth_tests::free_port(),
        berth_tests::free_port(),
        &join,
    );
    s4.wait_ready(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "four voters", || async {
        let v = voters(&c.servers[0]).await;
        (v.len() == 4 && v.iter().all(|(_, voter)| *voter)).then_some(())
    })
    .await;
    // The newcomer has the data written before it came.
    let client = http_client();
    let kv = Kv {
        client: &client,
        base: c.servers[0].url(""),
    };
    kv.put("before", "x", "").await;
    let kv4 = Kv {
        client: &client,
        base: s4.url(""),
    };
    eventually(Duration::from_secs(10), "replicated to s4", || async {
        kv4.value("before", "?stale").await.map(|_| ())
    })
    .await;

    let id4 = s4.node_id().await;
    c.servers.push(s4);
    c.servers[3].kill9();
    let r =
        send(client.delete(c.servers[0].url(&format!("/v1/operator/raft/peer?id={id4}")))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = voters(&c.servers[0]).await;
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(!v.iter().any(|(n, _)| n == "s4"));
    let r = send(client.delete(c.servers[0].url("/v1/operator/raft/peer?id=not-a-server"))).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not found"), "{}", r.text());
    assert_eq!(
        kv.put("after", "y", "").await.status,
        200,
        "the three keep serving"
    );
}

#[tokio::test]
async fn transfer_leader_moves_leadership_to_the_named_server() {
    let c = Cluster::start(3, &[]).await;
    let leader = c
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(10))
        .await;
    let target = (leader + 2) % 3;
    let id = c.servers[target].node_id().await;
    let client = http_client();
    let r = send(
        client.post(c.servers[leader].url(&format!("/v1/operator/raft/transfer-leader?id={id}"))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Success"], true);
    let now = c
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(10))
        .await;
    assert_eq!(now, target);
    let kv = Kv {
        client: &client,
        base: c.servers[leader].url(""),
    };
    assert_eq!(kv.put("after/transfer", "x", "").await.text(), "true");
    let r = send(client.post(c.servers[target].url("/v1/operator/raft/transfer-leader?id=bogus")))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn servers_register_as_the_consul_service_and_report_liveness() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c
        .wait_agreed_leader(&[0, 1, 2], Duration::from_secs(10))
        .await;
    let url = c.servers[leader].url("/v1/health/service/consul?passing");
    eventually(
        Duration::from_secs(15),
        "three passing consul instances",
        || async {
            let v = get_json(&url).await;
            (v.as_array().map(|a| a.len()) == Some(3)).then_some(())
        },
    )
    .await;
    let rows = get_json(&c.servers[leader].url("/v1/catalog/service/consul")).await;
    let ports: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ServicePort"].as_u64().unwrap())
        .collect();
    for s in &c.servers {
        assert!(
            ports.contains(&u64::from(s.rpc_port)),
            "{ports:?} lacks {}",
            s.rpc_port
        );
    }
    // A dead server's serfHealth turns critical and it drops out of ?passing.
    let victim = (leader + 1) % 3;
    let name = c.servers[victim].name.clone();
    c.servers[victim].kill9();
    eventually(
        Duration::from_secs(30),
        "the dead server to turn critical",
        || async {
            let v = get_json(&url).await;
            let names: Vec<&str> = v
                .as_array()?
                .iter()
                .filter_map(|e| e["Node"]["Node"].as_str())
                .collect();
            (names.len() == 2 && !names.contains(&name.as_str())).then_some(())
        },
    )
    .await;
}
