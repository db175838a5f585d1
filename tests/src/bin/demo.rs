//! `berth-demo`: the whole mesh on this machine, as `scripts/demo` shows it. moto stands in
//! for AWS (STS, IAM, EC2), a dev-mode `berth-server` runs with ACLs on, the ACL controller
//! sets up the auth methods, and `berth-ecs-local` runs the example `web` and `api` task
//! definitions (each with its agent, mesh-init, Envoy and health-sync) in their own network
//! namespaces. A request goes web → api over mTLS; then an intention denies it.

use std::time::{Duration, Instant};

use berth_tests::http_client;
use berth_tests::lifecycle::Mesh;

fn step(start: Instant, what: &str) {
    println!("[{:>5.1}s] {what}", start.elapsed().as_secs_f64());
}

async fn call(url: &str) -> String {
    match http_client()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status();
            format!("{status} {}", r.text().await.unwrap_or_default().trim())
        }
        Err(e) => format!("request failed: {e}"),
    }
}

#[tokio::main]
async fn main() {
    let start = Instant::now();
    step(
        start,
        "starting moto (STS, IAM, EC2), berth-ecs-local and berth-server -dev with ACLs on ...",
    );
    let mesh = Mesh::start().await;
    step(
        start,
        &format!(
            "berth-server: http://127.0.0.1:{} (tasks reach it at {}), management token in the log below",
            mesh.acl.server.http_port, mesh.gateway
        ),
    );
    step(
        start,
        "berth-acl-controller set up auth methods berth-ecs-service and berth-ecs-client; intention web -> api: allow",
    );
    step(start, "running task api (examples/ecs/api.json) ...");
    let (api, api_ip) = mesh.run(&mesh.example_task_definition("api"));
    step(start, &format!("api task {api} is up at {api_ip}"));
    step(start, "running task web (examples/ecs/web.json) ...");
    let (web, web_ip) = mesh.run(&mesh.example_task_definition("web"));
    step(start, &format!("web task {web} is up at {web_ip}"));
    let url = format!("http://{web_ip}:9090/");
    let body = mesh
        .wait_body(&url, "web -> hello from api", Duration::from_secs(60))
        .await;
    step(
        start,
        &format!(
            "curl {url}   (web calls api through both Envoys, mTLS)\n         -> 200 {}",
            body.trim()
        ),
    );

    mesh.allow("web", "api", false).await;
    step(start, "intention web -> api: deny");
    let denied = berth_tests::eventually(Duration::from_secs(20), "the deny to apply", || async {
        let got = call(&url).await;
        got.contains("403").then_some(got)
    })
    .await;
    step(start, &format!("curl {url}\n         -> {denied}"));
    mesh.allow("web", "api", true).await;
    step(start, "intention web -> api: allow again");

    println!();
    println!("Everything keeps running; try:");
    println!("  curl {url}");
    println!(
        "  berth-ecs-local --state-dir {} ps | describe TASK | logs TASK [CONTAINER]",
        mesh.ecs.state_dir().display()
    );
    println!(
        "  curl -H 'X-Consul-Token: {}' http://127.0.0.1:{}/v1/health/service/api",
        mesh.acl.root, mesh.acl.server.http_port
    );
    println!("Ctrl-C stops the tasks and everything else.");
    let _ = tokio::signal::ctrl_c().await;
    step(
        start,
        "stopping the tasks (health-sync deregisters them, their tokens are logged out) ...",
    );
    for t in [&web, &api] {
        mesh.ecs.stop(t);
    }
    drop(mesh);
    step(start, "stopped");
}
