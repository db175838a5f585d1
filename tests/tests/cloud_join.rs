//! Cloud auto-join against moto's EC2 (SigV4 checked): three servers find each other by an
//! instance tag and form a cluster, an agent finds them the same way, and the instances of
//! another tag value or that are terminated are never joined. The servers listen on the
//! loopback addresses the instances are given (127.213.N.x), so what EC2 answers is real.

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_tests::moto::{Moto, repo_root, venv_bin};
use berth_tests::{Server, bin, eventually, free_port, http_client};
use serde_json::Value;

fn admin_env(moto: &Moto) -> Vec<(String, String)> {
    let mut env = moto.env_for("admin");
    env.retain(|(k, _)| k != "AWS_SESSION_TOKEN");
    env
}

async fn json(url: &str) -> Option<Value> {
    let r = http_client()
        .get(url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

#[tokio::test]
async fn servers_and_agents_join_by_ec2_tag() {
    let moto = Moto::start().await;
    let net = format!("127.213.{}", 1 + std::process::id() % 250);
    let tag = format!("join-{}", std::process::id());
    let out = Command::new(venv_bin("python"))
        .arg(repo_root().join("tests/moto/setup_ec2.py"))
        .arg(moto.url())
        .arg(moto.creds["admin"].to_string())
        .args([&net, &tag])
        .output()
        .expect("run setup_ec2.py");
    assert!(
        out.status.success(),
        "setup_ec2.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ec2: Value = serde_json::from_slice(&out.stdout).unwrap();
    let join = format!(
        "provider=aws tag_key=berth-cluster tag_value={tag} region=us-east-1 endpoint={}",
        moto.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let env = admin_env(&moto);
    let mut servers = Vec::new();
    for (i, ip) in ec2["servers"].as_array().unwrap().iter().enumerate() {
        let ip = ip.as_str().unwrap();
        let http = free_port();
        let args: Vec<String> = ["-bootstrap-expect", "3", "-retry-join", &join]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = Server::start_bound_env(dir.path(), &format!("s{i}"), ip, http, 8300, &args, &env);
        servers.push((ip.to_string(), http, s));
    }
    let want: Vec<String> = servers
        .iter()
        .map(|(ip, _, _)| format!("{ip}:8300"))
        .collect();
    for (ip, http, s) in &servers {
        let url = format!("http://{ip}:{http}/v1/status/peers");
        let peers = eventually(
            Duration::from_secs(60),
            "a cluster of the three",
            || async {
                let mut p: Vec<String> = serde_json::from_value(json(&url).await?).ok()?;
                p.sort();
                (p == want).then_some(p)
            },
        )
        .await;
        for d in ec2["decoys"].as_array().unwrap() {
            assert!(!peers.iter().any(|p| p.starts_with(d.as_str().unwrap())));
        }
        let log = std::fs::read_to_string(&s.log).unwrap_or_default();
        assert!(!log.contains("cloud auto-join failed"), "{log}");
    }
    let leader_url = format!("http://{}:{}/v1/status/leader", servers[0].0, servers[0].1);
    eventually(Duration::from_secs(30), "a leader", || async {
        json(&leader_url)
            .await?
            .as_str()
            .filter(|l| !l.is_empty())
            .map(|_| ())
    })
    .await;

    // An agent joins by the same tag.
    let agent_http = free_port();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut agent = Command::new(bin("berth"))
        .args(["agent", "-retry-join", &join, "-node", "cloud-joined"])
        .args(["-advertise", "127.0.0.1"])
        .args(["-http-addr", &format!("127.0.0.1:{agent_http}")])
        .args(["-xds-addr", &format!("127.0.0.1:{}", free_port())])
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let nodes_url = format!("http://{}:{}/v1/catalog/nodes", servers[1].0, servers[1].1);
    eventually(
        Duration::from_secs(30),
        "the agent's node in the catalog",
        || async {
            let nodes = json(&nodes_url).await?;
            nodes
                .as_array()?
                .iter()
                .any(|n| n["Node"] == "cloud-joined")
                .then_some(())
        },
    )
    .await;
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test]
async fn bad_or_unreachable_clouds_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    // A wrong entry: one line naming it (the server's settings errors exit 2, the agent's 1,
    // as for their other settings).
    for (entry, needle) in [
        ("provider=gce tag_key=k tag_value=v", "only provider=aws"),
        (
            "provider=aws tag_value=v",
            "tag_key and tag_value are required",
        ),
        (
            "provider=aws tag_key=k tag_value=v zone=a",
            "unknown key \"zone\"",
        ),
    ] {
        for (cmd, code) in [
            (vec!["berth-server", "-dev", "-retry-join", entry], 2),
            (vec!["berth", "agent", "-retry-join", entry], 1),
        ] {
            let out = Command::new(bin(cmd[0])).args(&cmd[1..]).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{cmd:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{cmd:?}: {err}");
            assert!(
                err.contains(needle) && err.contains("retry"),
                "{cmd:?}: {err}"
            );
        }
    }
    // EC2 unreachable: the server stays up and says why it cannot join.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let join = format!("provider=aws tag_key=k tag_value=v region=us-east-1 endpoint={closed}");
    let args: Vec<String> = ["-bootstrap-expect", "3", "-retry-join", &join]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "x".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "y".to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    let mut s = Server::start_bound_env(
        dir.path(),
        "lonely",
        "127.0.0.1",
        free_port(),
        free_port(),
        &args,
        &env,
    );
    let log = s.log.clone();
    eventually(
        Duration::from_secs(30),
        "the auto-join failure in the log",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("cloud auto-join failed").then_some(())
        },
    )
    .await;
    assert!(s.is_running(), "the server must keep running and retrying");
}
