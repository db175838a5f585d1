//! `berth-task-bench`: how fast an ECS task is ready to serve. Runs the example `api` task
//! under `berth-ecs-local` a few times and prints, from `run` on, when its agent had joined,
//! mesh-init had logged in, registered and written the Envoy bootstrap, Envoy's `/ready`
//! said LIVE (probed inside the task's network namespace every 20 ms), and the app
//! container started (after the proxy's first passing health check). Asserts no timing.

use std::process::Command;
use std::time::{Duration, SystemTime};

use berth_tests::lifecycle::{Mesh, container, task_ip};

/// The time a tracing line was written (its leading RFC 3339 stamp).
fn stamp_of(log: &str, needle: &str) -> Option<SystemTime> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let ts = line.split_whitespace().next()?;
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.into())
}

fn rfc3339(v: &serde_json::Value) -> Option<SystemTime> {
    let t =
        time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some(t.into())
}

fn ms(from: SystemTime, to: Option<SystemTime>) -> String {
    match to.and_then(|t| t.duration_since(from).ok()) {
        Some(d) => format!("{:>7.0}", d.as_secs_f64() * 1000.0),
        None => format!("{:>7}", "-"),
    }
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let mesh = Mesh::start().await;
    let bridge = mesh.ecs.info["bridge"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let entrypoint = berth_tests::bin("berth-envoy-entrypoint");
    println!(
        "task start-up of examples/ecs/api.json, ms after `berth-ecs-local run` ({runs} runs)"
    );
    println!(
        "{:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "run", "agent", "login", "regist", "bootst", "envoy", "app"
    );
    let mut ready = Vec::new();
    let mut app = Vec::new();
    for i in 0..runs {
        let def = mesh.example_task_definition("api");
        let t0 = SystemTime::now();
        let arn = mesh.ecs.run(&def);
        // Wait for the task's namespace, then probe Envoy inside it.
        let d = mesh
            .ecs
            .wait_describe(&arn, "the task IP", Duration::from_secs(30), |d| {
                !task_ip(d).is_empty()
            });
        let ns = format!(
            "{bridge}-{}",
            task_ip(&d).rsplit('.').next().unwrap_or_default()
        );
        let mut live = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while live.is_none() && std::time::Instant::now() < deadline {
            let ok = Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(&entrypoint)
                .arg("ready")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                live = Some(SystemTime::now());
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let d = mesh
            .ecs
            .wait_describe(&arn, "the app to start", Duration::from_secs(60), |d| {
                container(d, "api")["StartedAt"].is_string() || d["KnownStatus"] == "STOPPED"
            });
        let agent_log = mesh.ecs.logs(&arn, "berth-agent");
        let init_log = mesh.ecs.logs(&arn, "berth-mesh-init");
        let started = rfc3339(&container(&d, "api")["StartedAt"]);
        println!(
            "{:>4} {} {} {} {} {} {}",
            i + 1,
            ms(t0, stamp_of(&agent_log, "berth agent running")),
            ms(t0, stamp_of(&init_log, "logged in")),
            ms(t0, stamp_of(&init_log, "registered")),
            ms(t0, stamp_of(&init_log, "task enrolled")),
            ms(t0, live),
            ms(t0, started),
        );
        if let Some(d) = live.and_then(|l| l.duration_since(t0).ok()) {
            ready.push(d);
        }
        if let Some(d) = started.and_then(|l| l.duration_since(t0).ok()) {
            app.push(d);
        }
        mesh.ecs.stop(&arn);
    }
    ready.sort();
    app.sort();
    if let (Some(r), Some(a)) = (ready.get(ready.len() / 2), app.get(app.len() / 2)) {
        println!(
            "median: ready to serve {:.0} ms (goal 1000 ms: {:.2}x of it), app started {:.0} ms; Consul on ECS users report 50-120 s on AWS",
            r.as_secs_f64() * 1000.0,
            r.as_secs_f64(),
            a.as_secs_f64() * 1000.0
        );
    }
}
