//! The task lifecycle end to end: the example task definitions (`examples/ecs/`) run under
//! `berth-ecs-local` with real Envoy, a real ACL-enabled `berth-server` and moto for
//! STS/IAM. Tasks join with their IAM roles, talk over mTLS, mirror ECS health, and leave
//! without dropping a request.

use std::time::{Duration, Instant};

use berth_tests::lifecycle::{Mesh, container, task_id};
use berth_tests::mesh::Load;
use berth_tests::{eventually, http_client};

/// Which api task answered, from web's body (`web -> hello from api (task <id>)`).
fn served_by(body: &str) -> Option<String> {
    let start = body.find("(task ")? + "(task ".len();
    let rest = &body[start..];
    Some(rest[..rest.find(')')?].to_string())
}

/// The tasks web's calls reached over `n` requests.
async fn reached(web_ip: &str, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        if let Ok(r) = http_client()
            .get(format!("http://{web_ip}:9090/"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            && r.status() == 200
            && let Some(t) = r.text().await.ok().as_deref().and_then(served_by)
            && !seen.contains(&t)
        {
            seen.push(t);
        }
    }
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_join_follow_their_health_and_leave_without_dropping_requests() {
    let mesh = Mesh::start().await;
    let api_def = mesh.task_definition("api");
    let (api1, api1_ip) = mesh.run(&api_def);
    let (api2, _) = mesh.run(&api_def);
    let (web, web_ip) = mesh.run(&mesh.task_definition("web"));
    let (id1, id2, web_id) = (task_id(&api1), task_id(&api2), task_id(&web));

    // 1. web reaches api through both proxies, and each task's logins name it.
    mesh.wait_body(
        &format!("http://{web_ip}:9090/"),
        "web -> hello from api",
        Duration::from_secs(30),
    )
    .await;
    let both = eventually(
        Duration::from_secs(20),
        "web to reach both api tasks",
        || async {
            let r = reached(&web_ip, 20).await;
            (r.len() == 2).then_some(r)
        },
    )
    .await;
    let mut want = vec![id1.clone(), id2.clone()];
    want.sort();
    assert_eq!(both, want);
    for (id, family) in [(&id1, "api"), (&id2, "api"), (&web_id, "web")] {
        let tokens = mesh.tokens_of(id).await;
        assert_eq!(
            tokens.len(),
            2,
            "a service and an agent token for {family} {id}: {tokens:?}"
        );
        for t in &tokens {
            assert!(
                berth_tests::lifecycle::login_meta(t)["berth/cluster"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with(":cluster/default"),
                "{t}"
            );
            assert!(
                t["Description"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("login"),
                "{t}"
            );
        }
        assert!(
            tokens
                .iter()
                .any(|t| t["ServiceIdentities"][0]["ServiceName"] == family),
            "{tokens:?}"
        );
    }
    let token_file = mesh.ecs.volume(&api1, "berth-data").join("service-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file)
            .expect("service-token")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // 2. api1's app turns unhealthy: its check goes critical and web's Envoy stops sending
    //    to it; recovery brings it back.
    let r = http_client()
        .post(format!("http://{api1_ip}:9090/fail"))
        .send()
        .await
        .expect("fail");
    assert_eq!(r.status(), 200);
    let sid1 = format!("api-{id1}");
    eventually(
        Duration::from_secs(15),
        "api1's check to turn critical",
        || async {
            mesh.instances("api")
                .await
                .iter()
                .any(|(id, checks)| id == &sid1 && checks.iter().any(|c| c == "critical"))
                .then_some(())
        },
    )
    .await;
    let critical_at = Instant::now();
    eventually(
        Duration::from_secs(15),
        "web to send only to api2",
        || async { (reached(&web_ip, 20).await == [id2.clone()]).then_some(()) },
    )
    .await;
    println!(
        "web's Envoy left api1 {:?} after its check turned critical",
        critical_at.elapsed()
    );
    http_client()
        .post(format!("http://{api1_ip}:9090/recover"))
        .send()
        .await
        .expect("recover");
    eventually(
        Duration::from_secs(20),
        "web to reach api1 again",
        || async { (reached(&web_ip, 20).await.len() == 2).then_some(()) },
    )
    .await;

    // 3. Stopping api1 under load drops nothing; its checks turn critical before its Envoy
    //    stops, and it leaves no registration or token behind.
    let load = Load::start(format!("http://{web_ip}:9090/"));
    load.more_ok(50).await;
    let stopper = {
        let dir = mesh.ecs.state_dir().to_path_buf();
        let arn = api1.clone();
        std::thread::spawn(move || {
            std::process::Command::new(berth_tests::bin("berth-ecs-local"))
                .arg("--state-dir")
                .arg(dir)
                .args(["stop", &arn])
                .output()
        })
    };
    let saw_critical = eventually(
        Duration::from_secs(10),
        "api1's checks to turn critical",
        || async {
            let inst = mesh.instances("api").await;
            let all_critical = inst
                .iter()
                .find(|(id, _)| id == &sid1)
                .is_none_or(|(_, checks)| checks.iter().all(|c| c == "critical"));
            all_critical.then(std::time::SystemTime::now)
        },
    )
    .await;
    let out = tokio::task::spawn_blocking(move || stopper.join())
        .await
        .expect("join")
        .expect("stop thread")
        .expect("run stop");
    assert!(
        out.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    load.more_ok(50).await;
    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    let d = mesh.ecs.describe(&api1);
    assert_eq!(d["KnownStatus"], "STOPPED", "{d}");
    let proxy_finished = container(&d, "berth-proxy")["FinishedAt"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let proxy_finished = time::OffsetDateTime::parse(
        &proxy_finished,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("FinishedAt {proxy_finished:?}: {e}"));
    let saw: time::OffsetDateTime = saw_critical.into();
    assert!(
        saw < proxy_finished,
        "checks critical at {saw}, proxy stopped at {proxy_finished}"
    );
    assert_eq!(
        container(&d, "berth-health-sync")["ExitCode"],
        0,
        "{}",
        mesh.task_logs(&api1)
    );
    assert!(
        !mesh
            .instances("api")
            .await
            .iter()
            .any(|(id, _)| id == &sid1),
        "api1 is still registered"
    );
    assert!(
        !mesh
            .instances("api-sidecar-proxy")
            .await
            .iter()
            .any(|(id, _)| id.starts_with(&sid1)),
        "api1's proxy is still registered"
    );
    assert!(
        mesh.tokens_of(&id1).await.is_empty(),
        "api1's tokens are left"
    );

    // 4. An essential app container that crashes stops the task; its registrations go.
    // The app exits at once; the request itself may not get its answer.
    let _ = http_client()
        .post(format!(
            "http://{}:9090/crash",
            berth_tests::lifecycle::task_ip(&mesh.ecs.describe(&api2))
        ))
        .send()
        .await;
    let d = mesh
        .ecs
        .wait_describe(&api2, "api2 to stop", Duration::from_secs(60), |d| {
            d["KnownStatus"] == "STOPPED"
        });
    assert!(
        d["StoppedReason"]
            .as_str()
            .unwrap_or_default()
            .contains("Essential container"),
        "{d}"
    );
    let sid2 = format!("api-{id2}");
    eventually(
        Duration::from_secs(20),
        "api2's registrations to go",
        || async {
            (!mesh
                .instances("api")
                .await
                .iter()
                .any(|(id, _)| id == &sid2)
                && mesh.tokens_of(&id2).await.is_empty())
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        mesh.tokens_of(&web_id).await.len(),
        2,
        "web's tokens are untouched"
    );

    // 5. A task role outside the bound path: the logins of mesh-init and of the agent (same
    //    role) are refused, each in one line, and the task never gets a proxy. The agent is
    //    essential, so whichever refusal comes first stops the task: mesh-init exits 1 by
    //    itself, or 143 when the task's stop reaches it during its retries.
    let mut rogue = mesh.task_definition("api");
    rogue["taskRoleArn"] = mesh.moto.creds["roles"]["rogue"].clone();
    let arn = mesh.ecs.run(&rogue);
    let d = mesh.ecs.wait_describe(
        &arn,
        "the rogue task to stop",
        Duration::from_secs(60),
        |d| d["KnownStatus"] == "STOPPED",
    );
    assert_ne!(
        container(&d, "berth-proxy")["KnownStatus"],
        "RUNNING",
        "{d}"
    );
    let init_code = container(&d, "berth-mesh-init")["ExitCode"].clone();
    let agent_code = container(&d, "berth-agent")["ExitCode"].clone();
    assert!(init_code == 1 || init_code == 143, "{d}");
    assert!(
        init_code == 1 || agent_code == 1,
        "no login refusal ended a container: {d}"
    );
    let init_log = mesh.ecs.logs(&arn, "berth-mesh-init");
    let agent_log = mesh.ecs.logs(&arn, "berth-agent");
    for (code, log, prefix) in [
        (&init_code, &init_log, "berth-mesh-init: "),
        (&agent_code, &agent_log, "Error: "),
    ] {
        if *code == 1 {
            let last = log.lines().last().unwrap_or_default();
            assert!(
                last.starts_with(prefix) && last.contains("refused"),
                "{log}"
            );
        }
    }
    let log = format!("{init_log}{agent_log}");
    assert!(
        !log.contains(
            mesh.moto.creds["admin"]["SecretAccessKey"]
                .as_str()
                .unwrap_or("-")
        )
    );
}

/// Runs a per-task binary with `env` only (plus PATH); `(exit code, stderr)`.
fn run_bare(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(berth_tests::bin(bin))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bad input to the task's binaries: one clear line on stderr and a non-zero exit.
#[test]
fn bad_task_input_gives_one_clear_line() {
    let good = r#"{"servers": {"hosts": ["127.0.0.1"]}, "service": {"port": 9090}}"#;
    let closed = format!("http://127.0.0.1:{}/v4/x", berth_tests::free_port());
    // (binary, arguments, environment, exit code, the line's gist)
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, &'a str);
    let cases: Vec<Case> = vec![
        (
            "berth-mesh-init",
            vec![],
            vec![("BERTH_ECS_CONFIG_JSON", good)],
            1,
            "ECS_CONTAINER_METADATA_URI_V4 is not set",
        ),
        (
            "berth-health-sync",
            vec![],
            vec![("BERTH_ECS_CONFIG_JSON", good)],
            1,
            "ECS_CONTAINER_METADATA_URI_V4 is not set",
        ),
        (
            "berth-mesh-init",
            vec![],
            vec![
                ("BERTH_ECS_CONFIG_JSON", good),
                ("ECS_CONTAINER_METADATA_URI_V4", &closed),
            ],
            1,
            "cannot reach the ECS task metadata endpoint",
        ),
        (
            "berth-mesh-init",
            vec![],
            vec![(
                "BERTH_ECS_CONFIG_JSON",
                r#"{"servers": {"hosts": ["a"]}, "service": {"port": "x"}}"#,
            )],
            2,
            "BERTH_ECS_CONFIG_JSON: service.port: invalid type",
        ),
        (
            "berth-health-sync",
            vec![],
            vec![(
                "BERTH_ECS_CONFIG_JSON",
                r#"{"servers": {"hosts": ["a"]}, "sevrice": {}}"#,
            )],
            2,
            "unknown field `sevrice`",
        ),
        (
            "berth-mesh-init",
            vec![],
            vec![],
            2,
            "BERTH_ECS_CONFIG_JSON is not set",
        ),
        // The CA from Secrets Manager must be PEM, and needs a caCertFile to go to.
        (
            "berth-mesh-init",
            vec![],
            vec![
                ("BERTH_ECS_CONFIG_JSON", good),
                (
                    "BERTH_CA_CERT_PEM",
                    "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
                ),
            ],
            2,
            "BERTH_CA_CERT_PEM is set but BERTH_ECS_CONFIG_JSON names no caCertFile",
        ),
        (
            "berth-health-sync",
            vec![],
            vec![
                ("BERTH_ECS_CONFIG_JSON", good),
                ("BERTH_CA_CERT_PEM", "junk"),
            ],
            2,
            "BERTH_CA_CERT_PEM holds no PEM certificate",
        ),
        (
            "berth",
            vec!["agent"],
            vec![
                ("BERTH_ECS_CONFIG_JSON", good),
                ("BERTH_CA_CERT_PEM", "junk"),
            ],
            2,
            "BERTH_CA_CERT_PEM holds no PEM certificate",
        ),
        (
            "berth",
            vec!["agent"],
            vec![("BERTH_ECS_CONFIG_JSON", "{not json")],
            2,
            "BERTH_ECS_CONFIG_JSON: not valid JSON",
        ),
        (
            "berth",
            vec!["agent"],
            vec![
                ("BERTH_ECS_CONFIG_JSON", good),
                ("ECS_CONTAINER_METADATA_URI_V4", &closed),
            ],
            1,
            "cannot reach the ECS task metadata endpoint",
        ),
    ];
    for (bin, args, env, code, want) in cases {
        let (got, stderr) = run_bare(bin, &args, &env);
        assert_eq!(got, code, "{bin} {env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{bin} {env:?}: one line expected: {stderr}");
        assert!(lines[0].contains(want), "{bin} {env:?}: {stderr}");
    }
}
