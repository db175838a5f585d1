//! `berth-ecs-local` end to end: a real daemon (as root) running task definitions as
//! processes in their own network namespaces, observed from inside the containers (their
//! logs), through the CLI and, for credentials and registration, through a real moto.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::ecs_local::EcsLocal;
use berth_tests::moto::Moto;
use berth_tests::{free_port, venv_bin};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// Prints `<label>=<status> <body>` for each URL given as `label=url`; used inside tasks.
const FETCH: &str = r#"
import os, sys, time, urllib.request, urllib.error
def get(url):
    try:
        r = urllib.request.urlopen(url, timeout=5)
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:
        return 0, repr(e)
for arg in sys.argv[1:]:
    label, url = arg.split("=", 1)
    deadline = time.time() + 20
    status, body = get(url)
    while status == 0 and time.time() < deadline:
        time.sleep(0.2)
        status, body = get(url)
    print(f"{label}={status} {body}", flush=True)
print("DONE", flush=True)
time.sleep(1000)
"#;

fn fetch(pairs: &[String]) -> Vec<String> {
    let mut v = vec!["python3".to_string(), "-c".to_string(), FETCH.to_string()];
    v.extend(pairs.iter().cloned());
    v
}

/// The value printed after `label=` in a log, as (status, body).
fn field(log: &str, label: &str) -> (u16, String) {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{label}=")))
        .unwrap_or_else(|| panic!("no {label}= in {log}"));
    let (status, body) = line.split_once(' ').unwrap_or((line, ""));
    (status.parse().unwrap_or(0), body.to_string())
}

fn container<'a>(desc: &'a Value, name: &str) -> &'a Value {
    desc["Containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["Name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {desc:#}"))
}

fn status_of(desc: &Value, name: &str) -> String {
    container(desc, name)["KnownStatus"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ip_of(desc: &Value) -> String {
    desc["Containers"][0]["Networks"][0]["IPv4Addresses"][0]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn stopped(d: &Value) -> bool {
    d["KnownStatus"] == "STOPPED"
}

/// A scratch path under /tmp unique to this test, removed on drop (containerPaths are created
/// on the host).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(PathBuf::from(format!(
            "/tmp/berth-ecs-local-test-{tag}-{}",
            uuid::Uuid::new_v4().simple()
        )))
    }

    fn s(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The interface index of `name`: a parallel test's daemon may take a freed bridge name at
/// once, so "gone" has to mean this very interface is gone.
fn ifindex(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The daemon's network namespaces as (name, inode), for the same reason.
fn netns_of(bridge: &str) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{bridge}-"))
        })
        .filter_map(|e| {
            let ino = e.metadata().ok()?.ino();
            Some((e.file_name().to_string_lossy().into_owned(), ino))
        })
        .collect()
}

/// Which of `before` still exist.
fn still(bridge: &str, before: &[(String, u64)]) -> Vec<(String, u64)> {
    netns_of(bridge)
        .into_iter()
        .filter(|n| before.contains(n))
        .collect()
}

#[test]
fn tasks_get_their_own_addresses_and_reach_each_other_and_the_host() {
    let ecs = EcsLocal::start(&[], &[]);
    let gw = ecs.gateway();
    // A host service on all addresses answers tasks at the gateway address.
    let host = std::net::TcpListener::bind(("0.0.0.0", free_port())).unwrap();
    let host_port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in host.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nhost-ok");
        }
    });
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("marker"), "from-a").unwrap();
    let a = ecs.run(&json!({
        "family": "server",
        "containerDefinitions": [{
            "name": "srv", "image": "python:3",
            "command": ["python3", "-m", "http.server", "8080"],
            "workingDirectory": www.path().display().to_string(),
        }]
    }));
    let a_ip = ip_of(&ecs.describe(&a));
    let b = ecs.run(&json!({
        "family": "client",
        "containerDefinitions": [{
            "name": "probe",
            "command": fetch(&[
                format!("A=http://{a_ip}:8080/marker"),
                format!("HOST=http://{gw}:{host_port}/"),
            ]),
        }]
    }));
    let b_ip = ip_of(&ecs.describe(&b));
    assert_ne!(a_ip, b_ip);
    let subnet_prefix = gw.trim_end_matches(".1");
    for ip in [&a_ip, &b_ip] {
        assert!(
            ip.starts_with(subnet_prefix) && *ip != gw,
            "{ip} in {gw}/24"
        );
    }
    let log = ecs.wait_log(&b, "probe", "DONE", T);
    assert_eq!(field(&log, "A"), (200, "from-a".to_string()), "{log}");
    assert_eq!(field(&log, "HOST"), (200, "host-ok".to_string()), "{log}");

    let ps = String::from_utf8(ecs.cli(&["ps"]).stdout).unwrap();
    let a_id = a.rsplit('/').next().unwrap();
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [a_id, "server", "RUNNING", &a_ip]),
        "{ps}"
    );
    // By unique ID prefix as well as by ARN.
    assert_eq!(ecs.describe(&a_id[..8])["TaskARN"], a.as_str());

    let bridge = ecs.info["bridge"].as_str().unwrap().to_string();
    let idx = ifindex(&bridge).expect("the bridge exists");
    let spaces = netns_of(&bridge);
    assert_eq!(spaces.len(), 2, "{spaces:?}");
    ecs.down();
    assert_ne!(
        ifindex(&bridge),
        Some(idx),
        "bridge {bridge} left after down"
    );
    assert!(still(&bridge, &spaces).is_empty(), "{spaces:?}");
}

#[test]
fn containers_read_their_metadata_documents_and_get_the_ecs_environment() {
    // The daemon's own credentials must not leak into containers; the STS endpoint is a
    // closed port so that the daemon does not try the real AWS with them.
    let sts = format!("http://127.0.0.1:{}", free_port());
    let ecs = EcsLocal::start(
        &["--sts-endpoint", &sts],
        &[
            ("AWS_ACCESS_KEY_ID".into(), "AKIADAEMONSECRET".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "daemon-secret".into()),
        ],
    );
    let env_dump =
        r#"import json, os; print("ENV=200 " + json.dumps(dict(os.environ)), flush=True)"#;
    let arn = ecs.run(&json!({
        "family": "meta", "cpu": "512", "memory": "1024",
        "containerDefinitions": [
            {"name": "app", "image": "example/app:1",
             "entryPoint": ["sh", "-c"],
             "command": [format!(
                 "python3 -c '{env_dump}'; exec python3 -c \"$1\" C=$ECS_CONTAINER_METADATA_URI_V4 T=$ECS_CONTAINER_METADATA_URI_V4/task V3=$ECS_CONTAINER_METADATA_URI/task BAD=http://169.254.170.2/v4/nope",
             ), "sh", FETCH],
             "environment": [{"name": "FOO", "value": "bar"}]},
            {"name": "side", "image": "example/side:1", "command": ["sleep", "1000"], "essential": false}
        ]
    }));
    let log = ecs.wait_log(&arn, "app", "DONE", T);
    let desc = ecs.describe(&arn);
    let task_ip = ip_of(&desc);

    let (status, env) = field(&log, "ENV");
    assert_eq!(status, 200);
    let env: Value = serde_json::from_str(&env).unwrap();
    assert_eq!(env["AWS_EXECUTION_ENV"], "AWS_ECS_FARGATE");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-1");
    assert_eq!(env["FOO"], "bar");
    assert!(env.get("AWS_ACCESS_KEY_ID").is_none(), "{env}");
    assert!(env.get("AWS_SECRET_ACCESS_KEY").is_none(), "{env}");
    assert!(
        env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_none(),
        "no task role: {env}"
    );
    assert!(
        env["PATH"].as_str().unwrap().contains("target/debug"),
        "PATH is inherited"
    );
    let uri = env["ECS_CONTAINER_METADATA_URI_V4"].as_str().unwrap();
    let docker_id = uri.strip_prefix("http://169.254.170.2/v4/").unwrap();

    let (status, c) = field(&log, "C");
    assert_eq!(status, 200, "{log}");
    let c: Value = serde_json::from_str(&c).unwrap();
    assert_eq!(c["Name"], "app");
    assert_eq!(c["DockerId"], docker_id);
    assert_eq!(c["Image"], "example/app:1");
    assert_eq!(c["KnownStatus"], "RUNNING");
    assert_eq!(c["DesiredStatus"], "RUNNING");
    assert_eq!(c["Type"], "NORMAL");
    assert!(c.get("Health").is_none(), "no healthCheck, no Health: {c}");
    assert!(c["StartedAt"].is_string());
    assert_eq!(c["Networks"][0]["NetworkMode"], "awsvpc");
    assert_eq!(c["Networks"][0]["IPv4Addresses"][0], task_ip.as_str());
    assert_eq!(c["Networks"][0]["IPv4SubnetCIDRBlock"], ecs.info["subnet"]);

    let (status, t) = field(&log, "T");
    assert_eq!(status, 200, "{log}");
    let t: Value = serde_json::from_str(&t).unwrap();
    let parsed: berth_ecs_like::Task = serde_json::from_value(t.clone()).unwrap();
    assert_eq!(parsed.task_arn, arn);
    assert_eq!(
        t["Cluster"],
        "arn:aws:ecs:us-east-1:123456789012:cluster/default"
    );
    assert!(arn.starts_with("arn:aws:ecs:us-east-1:123456789012:task/default/"));
    assert_eq!(arn.rsplit('/').next().unwrap().len(), 32);
    assert_eq!(t["Family"], "meta");
    assert_eq!(t["Revision"], "1");
    assert_eq!(t["LaunchType"], "FARGATE");
    assert_eq!(t["AvailabilityZone"], "us-east-1a");
    assert_eq!(t["KnownStatus"], "RUNNING");
    assert_eq!(t["Limits"], json!({"CPU": 0.5, "Memory": 1024}));
    let names: Vec<_> = t["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].clone())
        .collect();
    assert_eq!(names, [json!("app"), json!("side")]);
    assert_eq!(field(&log, "V3").0, 200, "the v3 URI answers too");
    assert_eq!(
        field(&log, "BAD").0,
        404,
        "an unknown container ID is 404: {log}"
    );
    assert_eq!(desc["StoppedReason"], Value::Null);

    // STS is unreachable: the credentials endpoint answers 500 with a JSON reason.
    let arn = ecs.run(&json!({
        "family": "no-sts", "taskRoleArn": "arn:aws:iam::123456789012:role/r",
        "containerDefinitions": [{
            "name": "app", "entryPoint": ["sh", "-c"],
            "command": ["exec python3 -c \"$1\" CREDS=http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "sh", FETCH]
        }]
    }));
    let log = ecs.wait_log(&arn, "app", "DONE", T);
    let (status, body) = field(&log, "CREDS");
    assert_eq!(status, 500, "{log}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("sts:AssumeRole"),
        "{body}"
    );
    assert!(ecs.daemon_log().contains("task role credentials"), "logged");

    // SIGTERM stops the tasks and removes the bridge and namespaces, as `down` does.
    let bridge = ecs.info["bridge"].as_str().unwrap().to_string();
    let pid = ecs.info["pid"].as_i64().unwrap() as i32;
    let idx = ifindex(&bridge);
    let spaces = netns_of(&bridge);
    assert_eq!(spaces.len(), 2, "{spaces:?}");
    // SAFETY: signalling the daemon this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + T;
    while ifindex(&bridge) == idx || ecs.state_dir().join("daemon.json").exists() {
        assert!(Instant::now() < deadline, "SIGTERM did not clean up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(still(&bridge, &spaces).is_empty(), "{spaces:?}");
    assert!(ecs.daemon_log().contains("shutting down"));
}

/// The few fields of the task document the test parses strictly.
mod berth_ecs_like {
    #[derive(serde::Deserialize)]
    pub struct Task {
        #[serde(rename = "TaskARN")]
        pub task_arn: String,
    }
}

#[test]
fn depends_on_start_success_and_healthy_order_the_containers() {
    let ecs = EcsLocal::start(&[], &[]);
    let v = Scratch::new("deps");
    let arn = ecs.run(&json!({
        "family": "deps",
        "volumes": [{"name": "v"}],
        "containerDefinitions": [
            {"name": "init", "essential": false, "command": ["sh", "-c", "sleep 1; exit 0"]},
            {"name": "after-init", "command": ["sleep", "1000"],
             "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
            {"name": "follower", "command": ["sleep", "1000"],
             "dependsOn": [{"containerName": "after-init", "condition": "START"}]},
            {"name": "web", "command": ["sh", "-c", format!("sleep 1; touch {}/ready; exec sleep 1000", v.s())],
             "mountPoints": [{"sourceVolume": "v", "containerPath": v.s()}],
             "healthCheck": {"command": ["CMD-SHELL", format!("test -f {}/ready", v.s())], "interval": 1}},
            {"name": "app", "command": ["sleep", "1000"],
             "dependsOn": [{"containerName": "web", "condition": "HEALTHY"}]}
        ]
    }));
    let first = ecs.describe(&arn);
    assert_eq!(first["KnownStatus"], "PENDING", "{first:#}");
    for (name, want) in [
        ("init", "RUNNING"),
        ("web", "RUNNING"),
        ("after-init", "PENDING"),
        ("app", "PENDING"),
    ] {
        assert_eq!(status_of(&first, name), want, "{name}: {first:#}");
    }
    let d = ecs.wait_describe(&arn, "every container to start", T, |d| {
        ["after-init", "follower", "app"]
            .iter()
            .all(|n| status_of(d, n) == "RUNNING")
    });
    assert_eq!(d["KnownStatus"], "RUNNING");
    let at = |name: &str, k: &str| {
        container(&d, name)[k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(container(&d, "init")["ExitCode"], 0);
    assert!(
        at("after-init", "StartedAt") >= at("init", "FinishedAt"),
        "{d:#}"
    );
    assert!(
        at("follower", "StartedAt") >= at("after-init", "StartedAt"),
        "{d:#}"
    );
    let healthy_since = container(&d, "web")["Health"]["statusSince"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(container(&d, "web")["Health"]["status"], "HEALTHY");
    assert!(at("app", "StartedAt") >= healthy_since, "{d:#}");
    ecs.stop(&arn);

    // A SUCCESS dependency that fails can never be met: the task stops and says why.
    let arn = ecs.run(&json!({
        "family": "deps-fail",
        "containerDefinitions": [
            {"name": "bad", "essential": false, "command": ["sh", "-c", "exit 4"]},
            {"name": "waiter", "command": ["sleep", "1000"],
             "dependsOn": [{"containerName": "bad", "condition": "SUCCESS"}]}
        ]
    }));
    let d = ecs.wait_describe(&arn, "the task to stop", T, stopped);
    let reason = d["StoppedReason"].as_str().unwrap();
    assert!(
        reason.contains("waiter") && reason.contains("bad") && reason.contains("SUCCESS"),
        "{reason}"
    );
    assert_eq!(status_of(&d, "waiter"), "STOPPED");
    assert!(container(&d, "waiter").get("StartedAt").is_none(), "{d:#}");
    assert_eq!(container(&d, "bad")["ExitCode"], 4);
    ecs.down();
}

#[test]
fn health_checks_go_from_unknown_to_healthy_to_unhealthy() {
    let ecs = EcsLocal::start(&[], &[]);
    let p = Scratch::new("health");
    let arn = ecs.run(&json!({
        "family": "health",
        "volumes": [{"name": "hc"}],
        "containerDefinitions": [
            {"name": "web", "command": ["sleep", "1000"],
             "mountPoints": [{"sourceVolume": "hc", "containerPath": p.s()}],
             // Probes run in the container's mount namespace: they see the volume at p.
             "healthCheck": {"command": ["CMD-SHELL", format!("echo probing; test -f {}/ok", p.s())],
                             "interval": 1, "retries": 2, "startPeriod": 60}},
            {"name": "slow", "command": ["sleep", "1000"],
             "healthCheck": {"command": ["CMD", "sleep", "10"], "interval": 1, "timeout": 1, "retries": 1}}
        ]
    }));
    let health = |d: &Value, n: &str| container(d, n)["Health"].clone();
    let d = ecs.describe(&arn);
    assert_eq!(health(&d, "web")["status"], "UNKNOWN", "{d:#}");
    // Failures inside the start period are recorded but do not make it UNHEALTHY.
    let d = ecs.wait_describe(&arn, "a failed probe", T, |d| {
        health(d, "web")["exitCode"] == 1
    });
    assert_eq!(health(&d, "web")["status"], "UNKNOWN", "{d:#}");
    assert_eq!(health(&d, "web")["output"], "probing\n");

    std::fs::write(ecs.volume(&arn, "hc").join("ok"), "").unwrap();
    let d = ecs.wait_describe(&arn, "HEALTHY", T, |d| {
        health(d, "web")["status"] == "HEALTHY"
    });
    assert_eq!(health(&d, "web")["exitCode"], 0);
    let healthy_since = health(&d, "web")["statusSince"].clone();

    std::fs::remove_file(ecs.volume(&arn, "hc").join("ok")).unwrap();
    let d = ecs.wait_describe(&arn, "UNHEALTHY", T, |d| {
        health(d, "web")["status"] == "UNHEALTHY"
    });
    assert_ne!(health(&d, "web")["statusSince"], healthy_since);
    assert_eq!(health(&d, "web")["exitCode"], 1);

    // A probe that outlives its timeout is a failure and is killed.
    let d = ecs.wait_describe(&arn, "slow UNHEALTHY", T, |d| {
        health(d, "slow")["status"] == "UNHEALTHY"
    });
    assert!(
        health(&d, "slow")["output"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{d:#}"
    );
    // An unhealthy container keeps running: ECS replaces such tasks, it does not stop them.
    assert_eq!(d["KnownStatus"], "RUNNING");
    ecs.down();
}

#[test]
fn an_essential_container_exiting_stops_the_task() {
    let ecs = EcsLocal::start(&[], &[]);
    let arn = ecs.run(&json!({
        "family": "essential",
        "containerDefinitions": [
            {"name": "main", "command": ["sh", "-c", "sleep 1; exit 3"]},
            {"name": "other", "command": ["sleep", "1000"]},
            {"name": "sidecar", "essential": false,
             "command": ["sh", "-c", "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done"]}
        ]
    }));
    let d = ecs.wait_describe(&arn, "the task to stop", T, stopped);
    assert_eq!(d["StoppedReason"], "Essential container in task exited");
    assert_eq!(d["DesiredStatus"], "STOPPED");
    assert_eq!(container(&d, "main")["ExitCode"], 3);
    assert_eq!(container(&d, "other")["ExitCode"], 143, "SIGTERM: {d:#}");
    assert_eq!(container(&d, "sidecar")["ExitCode"], 0);
    assert!(ecs.logs(&arn, "sidecar").contains("got-term"));
    for n in ["main", "other", "sidecar"] {
        assert_eq!(status_of(&d, n), "STOPPED");
        assert!(container(&d, n)["FinishedAt"].is_string());
    }
    let ps = String::from_utf8(ecs.cli(&["ps"]).stdout).unwrap();
    assert!(ps.contains("essential STOPPED"), "{ps}");
    ecs.down();
}

fn alive(pid: i32) -> bool {
    // A zombie has been killed; only its parent has not reaped it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[test]
fn stop_sends_sigterm_then_sigkills_everything_of_the_container_after_stop_timeout() {
    let ecs = EcsLocal::start(&[], &[]);
    let arn = ecs.run(&json!({
        "family": "stubborn",
        "containerDefinitions": [{
            "name": "stubborn", "stopTimeout": 2,
            // The child leaves the process group (setsid) and ignores SIGTERM too.
            "command": ["sh", "-c", "trap 'echo term-ignored' TERM; setsid sh -c 'trap \"\" TERM; echo child=$$; exec sleep 1000' & while true; do sleep 0.1; done"]
        }]
    }));
    let log = ecs.wait_log(&arn, "stubborn", "child=", T);
    let child: i32 = log
        .lines()
        .find_map(|l| l.strip_prefix("child="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    assert!(alive(child));
    let began = Instant::now();
    ecs.stop(&arn);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "stop took {took:?}, before stopTimeout"
    );
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    let d = ecs.describe(&arn);
    assert!(stopped(&d), "stop returns once STOPPED: {d:#}");
    assert_eq!(d["StoppedReason"], "Task stopped by user");
    assert_eq!(container(&d, "stubborn")["ExitCode"], 137);
    assert!(
        ecs.logs(&arn, "stubborn").contains("term-ignored"),
        "SIGTERM came first"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(child) {
        assert!(
            Instant::now() < deadline,
            "child {child} in another process group survived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ecs.down();
}

#[test]
fn mount_points_are_shared_by_a_tasks_containers_and_no_one_else() {
    let ecs = EcsLocal::start(&[], &[]);
    let p = Scratch::new("mnt");
    let mount =
        |ro: bool| json!([{"sourceVolume": "shared", "containerPath": p.s(), "readOnly": ro}]);
    let one = ecs.run(&json!({
        "family": "one",
        "volumes": [{"name": "shared"}],
        "containerDefinitions": [
            {"name": "writer", "essential": false, "mountPoints": mount(false),
             "command": ["sh", "-c", format!("echo secret > {}/file", p.s())]},
            {"name": "reader", "mountPoints": mount(true),
             "dependsOn": [{"containerName": "writer", "condition": "SUCCESS"}],
             "command": ["sh", "-c", format!(
                 "cat {0}/file; (echo x > {0}/other) 2>/dev/null && echo writable || echo read-only; echo READ; exec sleep 1000",
                 p.s())]}
        ]
    }));
    let log = ecs.wait_log(&one, "reader", "READ", T);
    assert!(log.contains("secret"), "{log}");
    assert!(log.contains("read-only"), "{log}");
    assert_eq!(
        std::fs::read_to_string(ecs.volume(&one, "shared").join("file")).unwrap(),
        "secret\n"
    );
    let two = ecs.run(&json!({
        "family": "two",
        "volumes": [{"name": "shared"}],
        "containerDefinitions": [
            {"name": "peer", "mountPoints": mount(false),
             "command": ["sh", "-c", format!("ls -A {}; echo LISTED; exec sleep 1000", p.s())]}
        ]
    }));
    let log = ecs.wait_log(&two, "peer", "LISTED", T);
    assert_eq!(
        log.trim(),
        "LISTED",
        "another task sees its own, empty volume"
    );
    // The host sees only the empty mount point.
    assert_eq!(std::fs::read_dir(&p.0).unwrap().count(), 0);
    ecs.down();
}

fn python(moto: &Moto, script: &str, args: &[&str]) -> Value {
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(moto.url())
        .args(args)
        .envs(moto.env_for("admin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_credentials_endpoint_serves_the_task_roles_credentials_from_moto() {
    let moto = Moto::start().await;
    let role = moto.creds["web"]["RoleArn"].as_str().unwrap().to_string();
    let ecs = EcsLocal::start(&["--sts-endpoint", &moto.url()], &moto.env_for("admin"));
    let arn = ecs.run(&json!({
        "family": "creds",
        "taskRoleArn": role,
        "containerDefinitions": [{
            "name": "app",
            "entryPoint": ["sh", "-c"],
            "command": ["exec python3 -c \"$1\" CREDS=http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AGAIN=http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI WRONG=http://169.254.170.2/v2/credentials/00000000-0000-4000-8000-000000000000", "sh", FETCH]
        }]
    }));
    let log = ecs.wait_log(&arn, "app", "DONE", T);
    let (status, body) = field(&log, "CREDS");
    assert_eq!(status, 200, "{log}\n{}", ecs.daemon_log());
    let c: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["RoleArn"], role.as_str());
    for k in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
        assert!(c[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {c}");
    }
    // Cached: the second read gets the same credentials.
    let again: Value = serde_json::from_str(&field(&log, "AGAIN").1).unwrap();
    assert_eq!(again["AccessKeyId"], c["AccessKeyId"]);
    assert_eq!(field(&log, "WRONG").0, 404, "{log}");

    // They are real: moto (verifying signatures) says who they belong to.
    let who = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(
            "import boto3, json, sys; print(json.dumps(boto3.client('sts', endpoint_url=sys.argv[1], region_name='us-east-1', \
             aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3], aws_session_token=sys.argv[4]).get_caller_identity()['Arn']))",
        )
        .args([
            moto.url().as_str(),
            c["AccessKeyId"].as_str().unwrap(),
            c["SecretAccessKey"].as_str().unwrap(),
            c["Token"].as_str().unwrap(),
        ])
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let who = String::from_utf8_lossy(&who.stdout);
    let task_id = arn.rsplit('/').next().unwrap();
    assert!(
        who.contains(&format!("assumed-role/web/{task_id}")),
        "{who}"
    );
    ecs.down();
}

const MOTO_NETWORK: &str = r#"
import boto3, json, sys
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1")
vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="tasks", Description="tasks", VpcId=vpc)["GroupId"]
print(json.dumps({"subnet": subnet, "sg": sg}))
"#;

const MOTO_DESCRIBE: &str = r#"
import boto3, json, sys
ecs = boto3.client("ecs", endpoint_url=sys.argv[1], region_name="us-east-1")
r = ecs.describe_tasks(cluster=sys.argv[2], tasks=[sys.argv[3]])
print(json.dumps([{"taskArn": t["taskArn"], "desiredStatus": t.get("desiredStatus"),
                   "taskDefinitionArn": t.get("taskDefinitionArn")} for t in r["tasks"]]))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn tasks_are_registered_with_the_ecs_api() {
    let moto = Moto::start().await;
    let net = python(&moto, MOTO_NETWORK, &[]);
    let ecs = EcsLocal::start(
        &[
            "--ecs-endpoint",
            &moto.url(),
            "--sts-endpoint",
            &moto.url(),
            "--subnet",
            net["subnet"].as_str().unwrap(),
            "--security-group",
            net["sg"].as_str().unwrap(),
            "--cluster",
            "mesh",
        ],
        &moto.env_for("admin"),
    );
    let def = json!({
        "family": "registered", "cpu": "256", "memory": "512",
        "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
        "containerDefinitions": [{"name": "app", "image": "x", "command": ["sleep", "1000"]}]
    });
    let arn = ecs.run(&def);
    assert!(
        arn.starts_with("arn:aws:ecs:us-east-1:123456789012:task/mesh/"),
        "{arn}"
    );
    let seen = python(&moto, MOTO_DESCRIBE, &["mesh", &arn]);
    assert_eq!(seen[0]["taskArn"], arn.as_str(), "{seen}");
    assert!(
        seen[0]["taskDefinitionArn"]
            .as_str()
            .unwrap()
            .contains("task-definition/registered:1")
    );
    let d = ecs.describe(&arn);
    assert_eq!(d["TaskARN"], arn.as_str());
    assert_eq!(
        d["Cluster"],
        "arn:aws:ecs:us-east-1:123456789012:cluster/mesh"
    );
    ecs.stop(&arn);
    let seen = python(&moto, MOTO_DESCRIBE, &["mesh", &arn]);
    assert_eq!(
        seen[0]["desiredStatus"], "STOPPED",
        "StopTask reached ECS: {seen}"
    );

    ecs.down();

    // An ECS error fails `run` with one line, and starts nothing.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let unreachable = EcsLocal::start(
        &["--ecs-endpoint", &closed, "--sts-endpoint", &closed],
        &moto.env_for("admin"),
    );
    let out = unreachable.try_run(&def);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("ECS DescribeClusters"), "{err}");
    eprintln!("the ECS error line: {err}");
    assert!(unreachable.cli(&["ps"]).stdout.is_empty());
    let bridge = unreachable.info["bridge"].as_str().unwrap().to_string();
    assert!(netns_of(&bridge).is_empty(), "nothing was set up");
    unreachable.down();
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let ecs = EcsLocal::start(&[], &[]);
    let one_line = |out: &std::process::Output, needle: &str| {
        assert!(!out.status.success(), "{needle}: should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{needle:?} in {err}");
        assert!(out.stdout.is_empty());
    };
    let file = ecs.state_dir().join("malformed.json");
    std::fs::write(&file, "{\"family\": ").unwrap();
    one_line(
        &ecs.cli(&["run", &file.display().to_string()]),
        "not valid JSON",
    );
    one_line(
        &ecs.try_run(&json!({"family": "f", "containerDefinitions": [{"name": "a", "command": ["true"], "essential": "yes"}]})),
        "containerDefinitions[0].essential: invalid type",
    );
    one_line(
        &ecs.try_run(&json!({"family": "f", "containerDefinitions": [{"name": "a", "command": ["no-such-command-for-berth"]}]})),
        "command \"no-such-command-for-berth\" not found on PATH",
    );
    one_line(
        &ecs.try_run(
            &json!({"family": "f", "containerDefinitions": [{"name": "a", "command": ["true"],
            "dependsOn": [{"containerName": "ghost", "condition": "START"}]}]}),
        ),
        "dependsOn unknown container \"ghost\"",
    );
    one_line(
        &ecs.try_run(&json!({"family": "f", "containerDefinitions": [
            {"name": "a", "command": ["true"], "dependsOn": [{"containerName": "b", "condition": "SUCCESS"}]},
            {"name": "b", "command": ["true"]}]})),
        "only non-essential containers can be COMPLETE or SUCCESS dependencies",
    );
    one_line(&ecs.cli(&["describe", "0123456789"]), "no task");
    assert!(ecs.cli(&["ps"]).stdout.is_empty(), "nothing was started");

    let nobody = tempfile::tempdir().unwrap();
    let out = Command::new(berth_tests::bin("berth-ecs-local"))
        .args(["ps", "--state-dir"])
        .arg(nobody.path())
        .output()
        .unwrap();
    one_line(&out, "no berth-ecs-local daemon is running");
    ecs.down();
}

#[test]
fn cleanup_removes_what_a_killed_daemon_left() {
    let ecs = EcsLocal::start(&[], &[]);
    let arn = ecs.run(&json!({
        "family": "orphan",
        "containerDefinitions": [{"name": "app", "command": ["sh", "-c", "echo pid=$$; exec sleep 1000"]}]
    }));
    let log = ecs.wait_log(&arn, "app", "pid=", T);
    let pid: i32 = log
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    let bridge = ecs.info["bridge"].as_str().unwrap().to_string();
    let daemon = ecs.info["pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the daemon this test started.
    unsafe {
        libc::kill(daemon, libc::SIGKILL);
    }
    let deadline = Instant::now() + T;
    while alive(daemon) {
        assert!(Instant::now() < deadline, "daemon survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(alive(pid), "the container outlives a killed daemon");
    let idx = ifindex(&bridge).expect("a killed daemon leaves its bridge");
    let spaces = netns_of(&bridge);
    assert_eq!(spaces.len(), 1, "{spaces:?}");
    let out = ecs.cli(&["cleanup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + T;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "cleanup left container process {pid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(ifindex(&bridge), Some(idx));
    assert!(still(&bridge, &spaces).is_empty(), "{spaces:?}");
    assert!(!ecs.state_dir().join("daemon.json").exists());
}
