//! `berth-controller-bench [TASKS] [STOPPED]`: one reconcile of `berth-acl-controller -once`
//! at scale. moto's ECS holds TASKS tasks (default 5,000) of which STOPPED (default 2,000)
//! are stopped; a dev `berth-server` with ACLs holds one login token per task, made by real
//! logins (a `jwt` auth method, so that thousands of logins need no STS round trip), with the
//! task's ID and the cluster in their meta. Prints the controller's own figures for the
//! first reconcile (which deletes the stopped tasks' tokens) and a second, steady one,
//! against the goal of 5 s and ceil(TASKS/100) DescribeTasks calls. Asserts no
//! timing.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::acl_server::AclServer;
use berth_tests::lifecycle::{CLUSTER, CLUSTER_ARN};
use berth_tests::moto::{Moto, repo_root, venv_bin};
use berth_tests::{bin, http_client};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const GOAL: Duration = Duration::from_secs(5);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A jwt auth method and a binding rule, and a JWT it accepts.
async fn jwt_method(acl: &AclServer) -> String {
    let kp = rcgen::KeyPair::generate().expect("key pair");
    let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("EC key");
    acl.admin(
        "PUT",
        "/v1/acl/auth-method",
        json!({"Name": "bench", "Type": "jwt", "Config": {
            "JWTValidationPubKeys": [kp.public_key_pem()],
            "JWTSupportedAlgs": ["ES256"],
            "BoundAudiences": ["berth"],
        }}),
    )
    .await;
    acl.admin(
        "PUT",
        "/v1/acl/binding-rule",
        json!({"AuthMethod": "bench", "BindType": "service", "BindName": "bench"}),
    )
    .await;
    let claims = json!({"aud": "berth", "sub": "bench", "iat": now(), "exp": now() + 3600});
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).expect("sign JWT")
}

/// The controller's `reconciled` line (JSON logs), or its error.
fn run_once(acl: &AclServer, moto: &Moto) -> (Duration, Result<Value, String>) {
    let mut env = moto.env_for("admin");
    env.retain(|(k, _)| k != "AWS_SESSION_TOKEN");
    let start = Instant::now();
    let out = Command::new(bin("berth-acl-controller"))
        .args(["-http-addr", &acl.server.url(""), "-token", &acl.root])
        .args(["-account", "123456789012", "-cluster", CLUSTER])
        .args(["-region", "us-east-1", "-ecs-endpoint", &moto.url()])
        .args(["-once", "-log-json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .expect("run berth-acl-controller");
    let wall = start.elapsed();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return (wall, Err(text));
    }
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "reconciled");
    (wall, line.map(|v| v["fields"].clone()).ok_or(text))
}

fn print(label: &str, wall: Duration, f: &Value, tasks: usize) {
    let total = f["total_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let max_calls = tasks.div_ceil(100);
    println!("{label}");
    println!(
        "  ListTasks (RUNNING) returned {}; tasks the servers name {}; described {} in {} DescribeTasks calls (at most {max_calls} allowed)",
        f["tasks_listed"], f["tasks_referenced"], f["tasks_described"], f["describe_calls"]
    );
    println!(
        "  tokens seen {}, removed {}; services removed {}, nodes removed {}",
        f["tokens_seen"], f["tokens_removed"], f["services_removed"], f["nodes_removed"]
    );
    println!(
        "  reconcile {total:.2} s = servers read {} ms + ECS {} ms + removals {} ms; process wall {:.2} s",
        f["read_servers_ms"],
        f["read_ecs_ms"],
        f["remove_ms"],
        wall.as_secs_f64()
    );
    println!(
        "  goal {:.0} s: reconcile took {:.2}x the goal",
        GOAL.as_secs_f64(),
        total / GOAL.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let stopped: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    assert!(stopped <= tasks, "STOPPED must not exceed TASKS");

    let moto = Moto::start_with("127.0.0.1", "tests/moto/setup_mesh.py", &["web"]).await;
    moto.pin_ecs_tasks().await;
    let t = Instant::now();
    let out = Command::new(venv_bin("python"))
        .arg(repo_root().join("tests/moto/bench_tasks.py"))
        .arg(moto.url())
        .arg(moto.creds["admin"].to_string())
        .arg(moto.creds["subnet"].as_str().unwrap_or_default())
        .arg(moto.creds["security_group"].as_str().unwrap_or_default())
        .arg(tasks.to_string())
        .arg(stopped.to_string())
        .output()
        .expect("run bench_tasks.py");
    assert!(
        out.status.success(),
        "bench_tasks.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Value = serde_json::from_slice(&out.stdout).expect("bench_tasks.py prints JSON");
    let all: Vec<String> = ["stopped", "running"]
        .iter()
        .flat_map(|k| ids[k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    println!(
        "moto ECS: {tasks} tasks, {stopped} stopped, made in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let acl = AclServer::start(dir.path()).await;
    let jwt = jwt_method(&acl).await;
    let t = Instant::now();
    let url = acl.server.url("/v1/acl/login");
    let client = http_client();
    let made = futures::stream::iter(all.iter())
        .map(|id| {
            let body = json!({"AuthMethod": "bench", "BearerToken": jwt,
                              "Meta": {"berth/cluster": CLUSTER_ARN, "berth/task-id": id}});
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .put(url)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .buffer_unordered(32)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(made, all.len(), "every login must succeed");
    println!(
        "servers: {made} login tokens made in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let (wall, first) = run_once(&acl, &moto);
    match first {
        Ok(f) => print(
            "first reconcile (removes the stopped tasks' tokens):",
            wall,
            &f,
            tasks,
        ),
        Err(e) => panic!("berth-acl-controller -once failed: {e}"),
    }
    let (wall, second) = run_once(&acl, &moto);
    match second {
        Ok(f) => print("second reconcile (nothing to remove):", wall, &f, tasks),
        Err(e) => panic!("berth-acl-controller -once failed: {e}"),
    }
    let left = acl.admin_get("/v1/acl/tokens?authmethod=bench").await;
    println!(
        "login tokens left: {} (expected {})",
        left.as_array().map(Vec::len).unwrap_or(0),
        tasks - stopped
    );
}
