//! `berth-acl-controller` against a real ACL-enabled server, moto's ECS, IAM and STS, and
//! tasks run by `berth-ecs-local` (registered with moto's ECS).

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::acl_server::AclServer;
use berth_tests::controller::{Controller, Relay, metric_in};
use berth_tests::lifecycle::{CLUSTER, CLUSTER_ARN, Mesh, task_id};
use berth_tests::{bin, eventually, free_port};
use serde_json::{Value, json};

const SERVICE_METHOD: &str = "berth-ecs-service";
const CLIENT_METHOD: &str = "berth-ecs-client";
const INTERVAL: &str = "2s";
const ACTIVE: &str = "berth_acl_controller_active";
const OK: &str = "berth_acl_controller_reconciles_total{result=\"ok\"}";

fn once(acl: &AclServer, extra: &[&str]) -> std::process::Output {
    Command::new(bin("berth-acl-controller"))
        .args(["-http-addr", &acl.server.url("")])
        .args(["-token", &acl.root, "-account", "123456789012", "-once"])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run berth-acl-controller")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every ACL object the setup owns, with its ModifyIndex.
async fn setup_objects(acl: &AclServer) -> Value {
    let mut methods = Vec::new();
    for m in [SERVICE_METHOD, CLIENT_METHOD] {
        methods.push(acl.admin_get(&format!("/v1/acl/auth-method/{m}")).await);
    }
    json!({
        "methods": methods,
        "policy": acl.admin_get("/v1/acl/policy/name/berth-ecs-client-policy").await,
        "role": acl.admin_get("/v1/acl/role/name/berth-ecs-client-role").await,
        "rules": acl.admin_get("/v1/acl/binding-rules").await,
    })
}

#[tokio::test]
async fn setup_is_complete_idempotent_and_keeps_what_operators_added() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    let sts = "http://127.0.0.1:1/sts";
    let first = once(&acl, &["-sts-endpoint", sts, "-iam-role-path", "/berth/"]);
    assert!(first.status.success(), "{}", stderr(&first));

    let objs = setup_objects(&acl).await;
    let bound = "arn:aws:iam::123456789012:role/berth/*";
    for m in objs["methods"].as_array().unwrap() {
        assert_eq!(m["Type"], "aws-iam", "{m}");
        assert_eq!(m["Config"]["BoundIAMPrincipalARNs"], json!([bound]), "{m}");
        assert_eq!(m["Config"]["EnableIAMEntityDetails"], true, "{m}");
        assert_eq!(
            m["Config"]["IAMEntityTags"],
            json!(["berth.service-name"]),
            "{m}"
        );
        assert_eq!(m["Config"]["STSEndpoint"], sts, "{m}");
    }
    let rules = objs["policy"]["Rules"].as_str().unwrap();
    assert!(
        rules.contains("node_prefix") && rules.contains("write"),
        "{rules}"
    );
    assert!(rules.contains("service_prefix"), "{rules}");
    assert_eq!(
        objs["role"]["Policies"][0]["Name"],
        "berth-ecs-client-policy"
    );
    let rules = objs["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["AuthMethod"] == SERVICE_METHOD
        && r["BindType"] == "service"
        && r["BindName"] == "${entity_tags.berth.service-name}"));
    assert!(rules.iter().any(|r| r["AuthMethod"] == CLIENT_METHOD
        && r["BindType"] == "role"
        && r["BindName"] == "berth-ecs-client-role"));
    assert_eq!(rules.len(), 2, "{rules:?}");

    // Again: nothing changes, not even a ModifyIndex.
    let second = once(&acl, &["-sts-endpoint", sts]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("ACL setup already complete"),
        "{}",
        stderr(&second)
    );
    assert_eq!(setup_objects(&acl).await, objs);

    // An operator adds a bound ARN; a restart keeps it beside the controller's.
    let mut m = objs["methods"][0].clone();
    let extra = "arn:aws:iam::123456789012:role/legacy-app";
    m["Config"]["BoundIAMPrincipalARNs"] = json!([bound, extra]);
    acl.admin("PUT", &format!("/v1/acl/auth-method/{SERVICE_METHOD}"), m)
        .await;
    let third = once(&acl, &["-sts-endpoint", sts]);
    assert!(third.status.success(), "{}", stderr(&third));
    let after = acl
        .admin_get(&format!("/v1/acl/auth-method/{SERVICE_METHOD}"))
        .await;
    let arns = after["Config"]["BoundIAMPrincipalARNs"].as_array().unwrap();
    assert!(arns.contains(&json!(extra)), "{after}");
    assert!(arns.contains(&json!(bound)), "{after}");
}

#[tokio::test]
async fn bad_input_and_unreachable_peers_give_one_line() {
    let run = |args: &[&str]| {
        Command::new(bin("berth-acl-controller"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("run berth-acl-controller")
    };
    let last_line = |o: &std::process::Output| {
        let e = stderr(o);
        e.trim().lines().last().unwrap_or_default().to_string()
    };
    // Settings: exit 2 with exactly one line, before anything is contacted.
    for (args, needle) in [
        (vec!["-once"], "no AWS account"),
        (vec!["-account", "123456789012"], "no ECS cluster"),
        (
            vec!["-account", "123456789012", "-cluster", "mesh"],
            "give -region",
        ),
        (
            vec![
                "-account",
                "123456789012",
                "-cluster",
                "m",
                "-region",
                "r",
                "-interval",
                "often",
            ],
            "-interval \"often\"",
        ),
        (
            vec!["-account", "123456789012", "-once", "-http-addr", "host:1"],
            "must be a URL",
        ),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }

    let closed = format!("http://127.0.0.1:{}", free_port());
    // No server.
    let o = run(&["-account", "123456789012", "-once", "-http-addr", &closed]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        last_line(&o).starts_with("berth-acl-controller: cannot reach the Berth server"),
        "{}",
        stderr(&o)
    );
    // A token file that is not there.
    let o = run(&[
        "-account",
        "123456789012",
        "-once",
        "-token-file",
        "/nonexistent/token",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        last_line(&o).contains("cannot read token file /nonexistent/token"),
        "{}",
        stderr(&o)
    );

    // A CA that is not PEM.
    let o = Command::new(bin("berth-acl-controller"))
        .args(["-account", "123456789012", "-once", "-http-addr", &closed])
        .env_clear()
        .env("BERTH_CA_CERT_PEM", "not a certificate")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        last_line(&o).contains("BERTH_CA_CERT_PEM holds no PEM certificate"),
        "{}",
        stderr(&o)
    );

    // A wrong token: the servers refuse it, and the line says so.
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    let http = acl.server.url("");
    let o = run(&[
        "-account",
        "123456789012",
        "-once",
        "-http-addr",
        &http,
        "-token",
        "00000000-0000-0000-0000-000000000000",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(last_line(&o).contains("403"), "{}", stderr(&o));

    // ECS unreachable: -once fails naming the call, and removes nothing. A token that looks
    // like a stopped task's login must survive.
    let bait = acl
        .admin(
            "PUT",
            "/v1/acl/token",
            json!({"Description": format!(
                "token created via login: {}",
                json!({"berth/cluster": CLUSTER_ARN, "berth/task-id": "gone"})
            )}),
        )
        .await;
    let o = run(&[
        "-account",
        "123456789012",
        "-once",
        "-http-addr",
        &http,
        "-token",
        &acl.root,
        "-cluster",
        CLUSTER,
        "-region",
        "us-east-1",
        "-ecs-endpoint",
        &closed,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        last_line(&o).contains("ECS ListTasks failed"),
        "{}",
        stderr(&o)
    );
    let id = bait["AccessorID"].as_str().unwrap();
    assert_eq!(
        acl.call("GET", &format!("/v1/acl/token/{id}"), Some(&acl.root), None)
            .await
            .status,
        200
    );
}

/// A login made outside any task of this cluster, claiming `cluster` and `task`.
fn outside_login(mesh: &Mesh, dir: &std::path::Path, cluster: &str, task: &str) -> String {
    let sink = dir.join(format!("token-{task}"));
    let out = Command::new(bin("berth"))
        .args(["login", "-type", "aws-iam", "-method", SERVICE_METHOD])
        .args(["-aws-auto-bearer-token", "-aws-include-entity"])
        .args(["-aws-sts-endpoint", &mesh.aws_endpoint()])
        .args(["-aws-iam-endpoint", &mesh.aws_endpoint()])
        .args(["-aws-region", "us-east-1"])
        .args([
            "-http-addr",
            &format!("127.0.0.1:{}", mesh.acl.server.http_port),
        ])
        .args(["-token-sink-file", &sink.display().to_string()])
        .args(["-meta", &format!("berth/cluster={cluster}")])
        .args(["-meta", &format!("berth/task-id={task}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(mesh.moto.env_for("api-task"))
        .output()
        .expect("berth login");
    assert!(
        out.status.success(),
        "berth login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&sink).unwrap().trim().to_string()
}

async fn token_exists(mesh: &Mesh, accessor: &str) -> bool {
    mesh.acl
        .call(
            "GET",
            &format!("/v1/acl/token/{accessor}"),
            Some(&mesh.acl.root),
            None,
        )
        .await
        .status
        == 200
}

/// What a task left in the servers: (login tokens, service instances, its node).
async fn leftovers(mesh: &Mesh, task: &str) -> (usize, usize, bool) {
    // Only logins: the hand-made imitation of a login must stay, and is checked apart.
    let tokens = mesh
        .tokens_of(task)
        .await
        .iter()
        .filter(|t| t["AuthMethod"].as_str().is_some_and(|m| !m.is_empty()))
        .count();
    let services = mesh
        .instances("api")
        .await
        .iter()
        .filter(|(id, _)| id.ends_with(task))
        .count();
    let proxies = mesh
        .instances("api-sidecar-proxy")
        .await
        .iter()
        .filter(|(id, _)| id.contains(task))
        .count();
    let node = mesh
        .acl
        .call(
            "GET",
            &format!("/v1/catalog/node/{task}"),
            Some(&mesh.acl.root),
            None,
        )
        .await;
    (tokens, services + proxies, node.status == 200)
}

async fn wait_gone(mesh: &Mesh, c: &Controller, task: &str, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let left = leftovers(mesh, task).await;
        if left == (0, 0, false) {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(40) {
            let log = c.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "timed out waiting for {what}: (tokens, services, node) = {left:?}; {} log tail:\n{}",
                c.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_stopped(mesh: &Mesh, arn: &str) {
    let ecs = &mesh.ecs;
    ecs.wait_describe(
        arn,
        "the killed task to stop",
        Duration::from_secs(30),
        |d| d["KnownStatus"] == "STOPPED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removes_what_stopped_tasks_left_and_nothing_else() {
    let mesh = Mesh::start_registered().await;
    let relay = Relay::start(format!("127.0.0.1:{}", mesh.moto.port)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = mesh.moto.env_for("admin");
    env.retain(|(k, _)| k != "AWS_SESSION_TOKEN");
    let args: Vec<String> = [
        "-http-addr",
        &mesh.acl.server.url(""),
        "-token",
        &mesh.acl.root,
        "-account",
        "123456789012",
        "-cluster",
        CLUSTER,
        "-region",
        "us-east-1",
        "-ecs-endpoint",
        &relay.url(),
        "-sts-endpoint",
        &mesh.aws_endpoint(),
        "-iam-endpoint",
        &mesh.aws_endpoint(),
        "-interval",
        INTERVAL,
        "-session-ttl",
        "10s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut c1 = Controller::start("c1", dir.path(), &args, &env);
    c1.wait_for(
        "c1 to be active and reconcile",
        Duration::from_secs(30),
        |t| metric_in(t, ACTIVE) == Some(1.0) && metric_in(t, OK).is_some_and(|n| n >= 1.0),
    )
    .await;

    let def = mesh.task_definition("api");
    let arns: Vec<String> = (0..3).map(|_| mesh.run(&def).0).collect();
    let ids: Vec<String> = arns.iter().map(|a| task_id(a)).collect();
    for id in &ids {
        eventually(
            Duration::from_secs(30),
            "each task's logins and services",
            || async { (leftovers(&mesh, id).await == (2, 2, true)).then_some(()) },
        )
        .await;
    }
    let secrets: Vec<String> = mesh
        .tokens_of(&ids[0])
        .await
        .iter()
        .map(|t| t["SecretID"].as_str().unwrap().to_string())
        .collect();

    // A real login claiming another cluster, and a token made by hand that imitates the
    // first task's login exactly: neither is ever the controller's to delete.
    let other_cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/other";
    let other = outside_login(&mesh, dir.path(), other_cluster, "0123456789abcdef");
    let other = mesh
        .acl
        .call("GET", "/v1/acl/token/self", Some(&other), None)
        .await
        .json()["AccessorID"]
        .as_str()
        .unwrap()
        .to_string();
    let by_hand = mesh
        .acl
        .admin(
            "PUT",
            "/v1/acl/token",
            json!({"Description": format!(
                "token created via login: {}",
                json!({"berth/cluster": CLUSTER_ARN, "berth/task-id": ids[0]})
            )}),
        )
        .await["AccessorID"]
        .as_str()
        .unwrap()
        .to_string();

    // 1. kill -9 of every process of the first task: nothing logs out, the controller
    // removes its tokens, services and node; the others' stay.
    mesh.kill_task(&arns[0]);
    wait_stopped(&mesh, &arns[0]).await;
    let took = wait_gone(&mesh, &c1, &ids[0], "the killed task's leftovers to go").await;
    eprintln!(
        "killed task's tokens, services and node removed {took:?} after it stopped (interval {INTERVAL})"
    );
    for id in &ids[1..] {
        assert_eq!(leftovers(&mesh, id).await, (2, 2, true), "task {id}");
    }
    assert!(token_exists(&mesh, &other).await, "another cluster's login");
    assert!(token_exists(&mesh, &by_hand).await, "a token made by hand");
    let log = c1.log_text();
    assert!(
        log.contains("deleted login token")
            && log.contains(&format!(
                "reason=task {} (service api) STOPPED: Essential container in task exited",
                ids[0]
            )),
        "{log}"
    );
    assert!(log.contains("deregistered service") && log.contains("deregistered node"));
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret reached the log");
    }

    // 2. ECS away: the second task stops meanwhile, and nothing is removed until ECS
    // answers again.
    let errors = "berth_acl_controller_ecs_errors_total{operation=\"ListTasks\"}";
    let before = c1.metric(errors).await.unwrap_or(0.0);
    relay.set_up(false);
    mesh.kill_task(&arns[1]);
    wait_stopped(&mesh, &arns[1]).await;
    c1.wait_for("three failed ECS rounds", Duration::from_secs(60), |t| {
        metric_in(t, errors).is_some_and(|n| n >= before + 3.0)
    })
    .await;
    assert_eq!(
        leftovers(&mesh, &ids[1]).await,
        (2, 2, true),
        "nothing may go while ECS does not answer"
    );
    assert!(
        c1.log_text()
            .contains("ECS did not answer; nothing was removed")
    );
    relay.set_up(true);
    let took = wait_gone(
        &mesh,
        &c1,
        &ids[1],
        "the second task's leftovers once ECS is back",
    )
    .await;
    eprintln!("after ECS came back, the stopped task's leftovers went in {took:?}");

    // 3. Two controllers: the standby takes over when the active one is killed, and goes on.
    let c2 = Controller::start("c2", dir.path(), &args, &env);
    c2.wait_for("c2 to stand by", Duration::from_secs(30), |t| {
        metric_in(t, ACTIVE) == Some(0.0)
    })
    .await;
    assert_eq!(c1.metric(ACTIVE).await, Some(1.0));
    c1.kill9();
    let killed = Instant::now();
    c2.wait_for("c2 to take over", Duration::from_secs(40), |t| {
        metric_in(t, ACTIVE) == Some(1.0)
    })
    .await;
    eprintln!(
        "standby took over {:?} after the active controller was killed (session TTL 10s)",
        killed.elapsed()
    );
    mesh.kill_task(&arns[2]);
    wait_stopped(&mesh, &arns[2]).await;
    wait_gone(
        &mesh,
        &c2,
        &ids[2],
        "the third task's leftovers, removed by c2",
    )
    .await;
    let scrape = c2.metrics().await.unwrap_or_default();
    let removed = metric_in(&scrape, "berth_acl_controller_tokens_removed_total").unwrap_or(0.0);
    assert!(removed >= 2.0, "c2 removed {removed} tokens");
    for m in [
        "berth_acl_controller_reconcile_duration_ms_sum",
        "berth_acl_controller_reconcile_duration_ms_count",
        "berth_acl_controller_services_removed_total",
        "berth_acl_controller_nodes_removed_total",
        "berth_acl_controller_ecs_errors_total{operation=\"DescribeTasks\"}",
    ] {
        assert!(scrape.contains(m), "{m} in\n{scrape}");
    }
    assert!(token_exists(&mesh, &other).await, "another cluster's login");
    assert!(token_exists(&mesh, &by_hand).await, "a token made by hand");

    // 4. A controller that is stopped (SIGTERM) lets the lock go at once.
    let c3 = Controller::start("c3", dir.path(), &args, &env);
    c3.wait_for("c3 to stand by", Duration::from_secs(30), |t| {
        metric_in(t, ACTIVE) == Some(0.0)
    })
    .await;
    let mut c2 = c2;
    let stopping = Instant::now();
    assert_eq!(c2.terminate(), Some(0), "{}", c2.log_text());
    assert!(c2.log_text().contains("released the controller lock"));
    c3.wait_for(
        "c3 to take over from a stopped c2",
        Duration::from_secs(10),
        |t| metric_in(t, ACTIVE) == Some(1.0),
    )
    .await;
    eprintln!(
        "after SIGTERM to the active controller, the standby took over in {:?}",
        stopping.elapsed()
    );
}
