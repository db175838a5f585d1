//! `berth-envoy-entrypoint` and `berth-demo-app` as real processes: the proxy container's
//! PID 1 around a real Envoy, its health check, its drain against a task metadata endpoint
//! served by the test, signal forwarding, `app-entrypoint`, `net-dial`, and the demo app.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_tests::{bin, eventually, free_port, venv_bin};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn entrypoint() -> PathBuf {
    bin("berth-envoy-entrypoint")
}

fn demo_app() -> PathBuf {
    bin("berth-demo-app")
}

/// Processes whose `PPid` is `pid`, from /proc.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                // The command name in parentheses may hold spaces; the fields after it don't.
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process (or group) this test started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A process of the test, in its own process group as a container's PID 1 is. Dropping it
/// kills it and the process groups of its children (the entrypoint puts its child in one
/// of its own, so killing the entrypoint alone would leave Envoy running).
struct Proc {
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    fn start(dir: &Path, name: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_remove("ECS_CONTAINER_METADATA_URI_V4")
            .env_remove("BERTH_ENVOY_ADMIN_ADDR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Proc {
            child,
            log,
            status: None,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        kill(self.pid(), sig);
    }

    /// The signal to the whole process group, as a container runtime may send it.
    fn signal_group(&self, sig: i32) {
        kill(-self.pid(), sig);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    async fn wait_exit(&mut self, timeout: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still running after {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let kids = children_of(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for k in kids {
            // SAFETY: kill(2) on the group our child made for its own child.
            unsafe {
                libc::kill(-k, libc::SIGKILL);
                libc::kill(k, libc::SIGKILL);
            }
        }
    }
}

/// A short-lived command's exit code and its output (stdout then stderr).
async fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env_remove("BERTH_ENVOY_ADMIN_ADDR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .expect("reqwest client")
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = http().get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn post(url: &str) -> Option<(u16, String)> {
    let r = http().post(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// A task metadata v4 endpoint on loopback whose `/task` document the test changes.
struct Metadata {
    doc: Arc<Mutex<Value>>,
    /// `ECS_CONTAINER_METADATA_URI_V4` for the containers of this task.
    uri: String,
    server: tokio::task::JoinHandle<()>,
}

fn container(name: &str, status: &str) -> Value {
    json!({"Name": name, "Type": "NORMAL", "KnownStatus": status, "DesiredStatus": "RUNNING",
           "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["127.0.0.1"]}]})
}

impl Metadata {
    async fn start() -> Metadata {
        let doc = Arc::new(Mutex::new(json!({})));
        let shared = doc.clone();
        let app = axum::Router::new().route(
            "/v4/test-container/task",
            axum::routing::get(move || {
                let doc = shared.clone();
                async move { axum::Json(doc.lock().expect("metadata lock").clone()) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metadata");
        let port = listener.local_addr().expect("metadata addr").port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let m = Metadata {
            doc,
            uri: format!("http://127.0.0.1:{port}/v4/test-container"),
            server,
        };
        m.set_app("RUNNING");
        m
    }

    /// The task with Berth's proxy running and one application container `web` in `status`.
    fn set_app(&self, status: &str) {
        *self.doc.lock().expect("metadata lock") = json!({
            "Cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/test",
            "TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/test/0123456789abcdef",
            "Family": "web", "Revision": "1", "DesiredStatus": "STOPPED", "KnownStatus": "RUNNING",
            "Containers": [
                container("berth-proxy", "RUNNING"),
                container("berth-health-sync", "RUNNING"),
                container("web", status),
                {"Name": "~internal~ecs~pause", "Type": "CNI_PAUSE", "KnownStatus": "RUNNING"},
            ],
        });
    }
}

impl Drop for Metadata {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn direct_listener(name: &str, direction: &str, port: u16, body: &str) -> Value {
    json!({
        "name": name,
        "traffic_direction": direction,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": body}}
                }]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }
        }]}]
    })
}

/// A static Envoy: an inbound listener (what the drain stops) and an outbound one (what the
/// application keeps using while it finishes). With `lds_wait`, Envoy also waits that long
/// for listeners from a control plane that is not there, so `/ready` is 503 until then.
struct Ports {
    admin: u16,
    inbound: u16,
    outbound: u16,
}

fn bootstrap(dir: &Path, p: &Ports, lds_wait: Option<&str>) -> PathBuf {
    let mut b = json!({
        "node": {"id": "web-sidecar-proxy", "cluster": "web"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p.admin}}},
        "static_resources": {
            "listeners": [
                direct_listener("public_listener", "INBOUND", p.inbound, "inbound"),
                direct_listener("upstream_api", "OUTBOUND", p.outbound, "outbound"),
            ],
            "clusters": [],
        },
    });
    if let Some(wait) = lds_wait {
        b["dynamic_resources"] = json!({"lds_config": {
            "resource_api_version": "V3",
            "initial_fetch_timeout": wait,
            "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}
        }});
        b["static_resources"]["clusters"] = json!([{
            "name": "xds", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint":
                {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}}}]}]}
        }]);
    }
    let path = dir.join("envoy-bootstrap.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&b).expect("json")).expect("write bootstrap");
    path
}

fn ports() -> Ports {
    Ports {
        admin: free_port(),
        inbound: free_port(),
        outbound: free_port(),
    }
}

/// `berth-envoy-entrypoint envoy -c BOOTSTRAP ...` as the proxy container runs it.
fn start_proxy(dir: &Path, bootstrap: &Path, env: &[(&str, &str)]) -> Proc {
    let envoy = venv_bin("envoy");
    let args: Vec<String> = [
        envoy.display().to_string(),
        "-c".into(),
        bootstrap.display().to_string(),
        "--disable-hot-restart".into(),
        "--log-level".into(),
        "warn".into(),
        // A short drain, so that its end (inbound listener stopped) is visible in the test.
        "--drain-time-s".into(),
        "1".into(),
        "--drain-strategy".into(),
        "immediate".into(),
    ]
    .into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(dir, "proxy", &entrypoint(), &args, env)
}

async fn wait_live(admin: u16, proxy: &mut Proc) {
    let url = format!("http://127.0.0.1:{admin}/ready");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((200, body)) = get(&url).await
            && body.trim() == "LIVE"
        {
            return;
        }
        assert!(
            proxy.exited().is_none(),
            "the proxy exited: {}",
            proxy.log()
        );
        assert!(
            Instant::now() < deadline,
            "Envoy never LIVE: {}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stat(admin: u16, name: &str) -> Option<u64> {
    let (_, body) = get(&format!("http://127.0.0.1:{admin}/stats?filter=^{name}$")).await?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))?
        .trim()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_until_envoy_is_live_then_passes() {
    let dir = tempfile::tempdir().unwrap();
    let p = ports();
    let admin = format!("127.0.0.1:{}", p.admin);

    let (code, out) = run(&entrypoint(), &["ready", "-admin-addr", &admin], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    assert!(out.contains("cannot reach Envoy's admin"), "{out}");

    // No control plane: Envoy waits 4 s for its listeners, answering /ready with 503.
    let bootstrap = bootstrap(dir.path(), &p, Some("4s"));
    let mut proxy = start_proxy(dir.path(), &bootstrap, &[]);
    let seen_503 = eventually(WAIT, "/ready answering 503 before LIVE", || async {
        let (code, out) = run(&entrypoint(), &["ready", "-admin-addr", &admin], &[]).await;
        (code == 1 && out.contains("answered 503")).then_some(out)
    })
    .await;
    assert_eq!(seen_503.trim().lines().count(), 1, "{seen_503}");
    assert!(seen_503.contains("INITIALIZING"), "{seen_503}");

    // The address from the environment, as an ECS health check command would have it.
    let out = eventually(WAIT, "ready passing", || async {
        let (code, out) = run(
            &entrypoint(),
            &["ready"],
            &[("BERTH_ENVOY_ADMIN_ADDR", admin.as_str())],
        )
        .await;
        (code == 0).then_some(out)
    })
    .await;
    assert_eq!(out.trim(), "LIVE");
    assert!(proxy.exited().is_none(), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_envoy_until_the_app_container_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Metadata::start().await;
    let p = ports();
    let bootstrap = bootstrap(dir.path(), &p, None);
    // No -admin-addr: the entrypoint must find the admin in the bootstrap.
    let mut proxy = start_proxy(
        dir.path(),
        &bootstrap,
        &[("ECS_CONTAINER_METADATA_URI_V4", meta.uri.as_str())],
    );
    wait_live(p.admin, &mut proxy).await;
    let inbound = format!("http://127.0.0.1:{}/", p.inbound);
    let outbound = format!("http://127.0.0.1:{}/", p.outbound);
    assert_eq!(get(&inbound).await, Some((200, "inbound".into())));
    assert_eq!(
        stat(p.admin, "listener_manager.listener_stopped").await,
        Some(0)
    );

    // What ECS does to the container: SIGTERM to its process group, of which Envoy is
    // not a member.
    let envoy_pid = children_of(proxy.pid());
    assert_eq!(envoy_pid.len(), 1, "{envoy_pid:?}");
    let term_at = Instant::now();
    proxy.signal_group(libc::SIGTERM);

    // The graceful drain ran: after --drain-time-s the inbound listener is stopped, while
    // the outbound one keeps serving the application and Envoy keeps running.
    eventually(
        WAIT,
        "the inbound listener stopped by the drain",
        || async {
            (stat(p.admin, "listener_manager.listener_stopped").await == Some(1)).then_some(())
        },
    )
    .await;
    assert_eq!(get(&outbound).await, Some((200, "outbound".into())));
    assert_eq!(get(&inbound).await, None, "inbound still accepts");

    // A second SIGTERM, to the entrypoint alone, changes nothing.
    proxy.signal(libc::SIGTERM);
    eventually(WAIT, "the second SIGTERM logged", || async {
        proxy.log().contains("ignored").then_some(())
    })
    .await;

    // For as long as the app runs, so does Envoy: checked until 3 s after the SIGTERM.
    while term_at.elapsed() < Duration::from_secs(3) {
        assert!(proxy.exited().is_none(), "exited early: {}", proxy.log());
        assert_eq!(
            get(&outbound).await,
            Some((200, "outbound".into())),
            "{}",
            proxy.log()
        );
        assert_eq!(
            get(&format!("http://127.0.0.1:{}/ready", p.admin))
                .await
                .map(|r| r.0),
            Some(200)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        children_of(proxy.pid()),
        envoy_pid,
        "Envoy restarted or gone"
    );

    meta.set_app("STOPPED");
    let stopped_at = Instant::now();
    let status = proxy
        .wait_exit(Duration::from_secs(10), "entrypoint after the app stopped")
        .await;
    // Envoy exits 0 on SIGTERM, and the entrypoint with Envoy's code.
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", proxy.log());
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped_at.elapsed()
    );
    assert_eq!(get(&outbound).await, None, "Envoy still serves");
    assert!(
        proxy
            .log()
            .contains("every application container has stopped"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_task_metadata_envoy_stops_right_after_the_drain_starts() {
    let dir = tempfile::tempdir().unwrap();
    let p = ports();
    let bootstrap = bootstrap(dir.path(), &p, None);
    let mut proxy = start_proxy(dir.path(), &bootstrap, &[]);
    wait_live(p.admin, &mut proxy).await;
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(WAIT, "entrypoint without metadata").await;
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
    let log = proxy.log();
    assert!(log.contains("draining its inbound listeners"), "{log}");
    assert!(
        log.contains("ECS_CONTAINER_METADATA_URI_V4 is not set"),
        "{log}"
    );
}

/// A stand-in for Envoy that writes down what it is sent.
fn recorder(file: &Path, term_exit: u8) -> String {
    let f = file.display();
    format!(
        "trap 'echo got-usr1 >> {f}' USR1; trap 'echo got-hup >> {f}' HUP; \
         trap 'echo got-int >> {f}' INT; \
         trap 'echo got-term >> {f}; exit {term_exit}' TERM; \
         echo started >> {f}; while :; do sleep 0.05; done"
    )
}

async fn wait_line(file: &Path, line: &str) {
    eventually(WAIT, &format!("{line:?} in {}", file.display()), || async {
        std::fs::read_to_string(file)
            .ok()
            .filter(|s| s.lines().any(|l| l == line))
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_other_than_sigterm_are_forwarded_and_the_exit_code_passed_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signals");
    let admin = format!("127.0.0.1:{}", free_port());
    let script = recorder(&file, 3);
    let mut proxy = Proc::start(
        dir.path(),
        "recorder",
        &entrypoint(),
        &["-admin-addr", &admin, "sh", "-c", &script],
        &[],
    );
    wait_line(&file, "started").await;
    proxy.signal(libc::SIGUSR1);
    wait_line(&file, "got-usr1").await;
    proxy.signal(libc::SIGHUP);
    wait_line(&file, "got-hup").await;
    proxy.signal(libc::SIGINT);
    wait_line(&file, "got-int").await;
    assert!(proxy.exited().is_none(), "{}", proxy.log());

    // SIGTERM reaches the child only from the entrypoint (here at once: nothing to drain
    // for, no task metadata), and the child's exit code becomes the entrypoint's.
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(WAIT, "entrypoint after SIGTERM").await;
    assert_eq!(status.code(), Some(3), "{}", proxy.log());
    let got = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["started", "got-usr1", "got-hup", "got-int", "got-term"],
        "{}",
        proxy.log()
    );
    assert!(
        proxy.log().contains("cannot start Envoy's drain"),
        "{}",
        proxy.log()
    );
}

/// The command line of `pid`, space-separated.
fn cmdline_of(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_the_command_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orphans");
    // The subshell exits at once, leaving its `sleep` to the entrypoint (PID 1 in a task).
    let script = format!(
        "(sleep 1.5 &); echo started >> {f}; trap 'exit 0' TERM; while :; do sleep 0.05; done",
        f = file.display()
    );
    let mut proxy = Proc::start(
        dir.path(),
        "orphans",
        &entrypoint(),
        &["-admin-addr", "127.0.0.1:1", "sh", "-c", &script],
        &[],
    );
    wait_line(&file, "started").await;
    let orphan = || {
        children_of(proxy.pid())
            .into_iter()
            .find(|p| cmdline_of(*p) == "sleep 1.5")
    };
    let pid = eventually(WAIT, "the orphan adopted", || async { orphan() }).await;
    // A zombie still has its /proc entry: gone means reaped.
    eventually(WAIT, "the orphan reaped", || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    assert!(proxy.exited().is_none(), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_metadata_endpoint_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signals");
    let admin = format!("127.0.0.1:{}", free_port());
    let dead = format!("http://127.0.0.1:{}/v4/x", free_port());
    let script = recorder(&file, 0);
    let mut proxy = Proc::start(
        dir.path(),
        "recorder",
        &entrypoint(),
        &[
            "-admin-addr",
            &admin,
            "-metadata-patience",
            "1s",
            "sh",
            "-c",
            &script,
        ],
        &[("ECS_CONTAINER_METADATA_URI_V4", dead.as_str())],
    );
    wait_line(&file, "started").await;
    let t = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(WAIT, "entrypoint giving up").await;
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(proxy.log().contains("gave up after 1s"), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_run_is_one_line_and_126_or_127() {
    let (code, out) = run(&entrypoint(), &["berth-no-such-program", "-x"], &[]).await;
    assert_eq!(code, 127, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    assert!(out.contains("cannot run berth-no-such-program"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("data.txt");
    std::fs::write(&not_exec, "x").unwrap();
    let (code, out) = run(&entrypoint(), &[not_exec.to_str().unwrap()], &[]).await;
    assert_eq!(code, 126, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");

    let (code, out) = run(
        &entrypoint(),
        &[
            "app-entrypoint",
            "-shutdown-delay",
            "1s",
            "berth-no-such-program",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 127, "{out}");

    for bad in [
        &["app-entrypoint", "-shutdown-delay", "soon", "true"][..],
        &["app-entrypoint", "true"],
        &["net-dial", "no-port"],
    ] {
        let (code, out) = run(&entrypoint(), bad, &[]).await;
        assert_eq!(code, 2, "{bad:?}: {out}");
        assert_eq!(out.trim().lines().count(), 1, "{bad:?}: {out}");
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_entrypoint_holds_sigterm_back_for_the_shutdown_delay() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let term = dir.path().join("term");
    // The app writes down when SIGTERM reached it.
    let script = format!(
        "trap 'date +%s.%N > {t}; exit 0' TERM; echo started > {s}; while :; do sleep 0.02; done",
        t = term.display(),
        s = started.display()
    );
    let mut app = Proc::start(
        dir.path(),
        "app",
        &entrypoint(),
        &[
            "app-entrypoint",
            "-shutdown-delay",
            "1s",
            "sh",
            "-c",
            &script,
        ],
        &[],
    );
    wait_line(&started, "started").await;
    let sent = now_secs();
    // To the group, as ECS sends it: the app must not get it directly.
    app.signal_group(libc::SIGTERM);
    let status = app.wait_exit(WAIT, "app-entrypoint").await;
    assert_eq!(status.code(), Some(0), "{}", app.log());
    let got: f64 = std::fs::read_to_string(&term)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("no time in {}: {e}; {}", term.display(), app.log()));
    let delay = got - sent;
    assert!(
        (1.0..4.0).contains(&delay),
        "SIGTERM reached the app after {delay:.3}s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_app_keeps_serving_under_app_entrypoint_until_the_delay_ends() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut app = Proc::start(
        dir.path(),
        "web",
        &entrypoint(),
        &[
            "app-entrypoint",
            "-shutdown-delay",
            "1500ms",
            demo_app().to_str().unwrap(),
            "serve",
            "-listen",
            &listen,
            "-name",
            "web",
        ],
        &[],
    );
    let url = format!("http://{listen}/");
    eventually(WAIT, "the demo app", || async {
        (get(&url).await == Some((200, "hello from web".into()))).then_some(())
    })
    .await;
    let t = Instant::now();
    app.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&url).await, Some((200, "hello from web".into())));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "check too late to mean anything"
    );
    let status = app
        .wait_exit(WAIT, "app-entrypoint with the demo app")
        .await;
    assert_eq!(status.code(), Some(0), "{}", app.log());
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net_dial_tells_open_from_closed_ports() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = open.local_addr().unwrap().to_string();
    let (code, out) = run(&entrypoint(), &["net-dial", &open], &[]).await;
    assert_eq!(code, 0, "{out}");

    let closed = format!("127.0.0.1:{}", free_port());
    let (code, out) = run(&entrypoint(), &["net-dial", &closed], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    assert!(out.contains(&closed), "{out}");

    let (code, out) = run(&entrypoint(), &["net-dial", "localhost"], &[]).await;
    assert_eq!(code, 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_app_serves_calls_its_upstream_fails_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (api_port, web_port, broken_port) = (free_port(), free_port(), free_port());
    let api = format!("http://127.0.0.1:{api_port}");
    let web = format!("http://127.0.0.1:{web_port}");
    let broken = format!("http://127.0.0.1:{broken_port}");
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let api_listen = format!("127.0.0.1:{api_port}");
    let mut api_app = Proc::start(
        dir.path(),
        "api",
        &demo_app(),
        &["serve", "-listen", &api_listen, "-name", "api"],
        &[],
    );
    // Flags from the environment, as a task definition would set them.
    let upstream = format!("{api}/healthz");
    let web_listen = format!("127.0.0.1:{web_port}");
    let _web = Proc::start(
        dir.path(),
        "web",
        &demo_app(),
        &["serve"],
        &[
            ("DEMO_LISTEN", web_listen.as_str()),
            ("DEMO_NAME", "web"),
            ("DEMO_UPSTREAM", upstream.as_str()),
        ],
    );
    let broken_listen = format!("127.0.0.1:{broken_port}");
    let _broken = Proc::start(
        dir.path(),
        "broken",
        &demo_app(),
        &[
            "serve",
            "-listen",
            &broken_listen,
            "-name",
            "broken",
            "-upstream",
            &dead,
        ],
        &[],
    );
    for url in [&api, &web, &broken] {
        eventually(WAIT, &format!("{url} up"), || async {
            get(&format!("{url}/healthz")).await.map(|_| ())
        })
        .await;
    }

    assert_eq!(
        get(&format!("{api}/")).await,
        Some((200, "hello from api".into()))
    );
    assert_eq!(
        get(&format!("{web}/")).await,
        Some((200, "web -> ok".into()))
    );
    let (code, body) = get(&format!("{broken}/")).await.unwrap();
    assert_eq!(code, 502, "{body}");
    assert!(
        body.starts_with(&format!("broken: upstream {dead} failed: ")),
        "{body}"
    );

    let probe = format!("{api}/healthz");
    let (code, out) = run(&demo_app(), &["probe", &probe], &[]).await;
    assert_eq!(code, 0, "{out}");

    assert_eq!(post(&format!("{api}/fail")).await.map(|r| r.0), Some(200));
    assert_eq!(
        get(&format!("{api}/healthz")).await,
        Some((503, "failing".into()))
    );
    // The upstream's status comes through.
    assert_eq!(
        get(&format!("{web}/")).await,
        Some((503, "web -> failing".into()))
    );
    let (code, out) = run(&demo_app(), &["probe", &probe], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    assert!(out.contains("503"), "{out}");

    assert_eq!(
        post(&format!("{api}/recover")).await.map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        get(&format!("{api}/healthz")).await,
        Some((200, "ok".into()))
    );
    let (code, out) = run(&demo_app(), &["probe", &probe], &[]).await;
    assert_eq!(code, 0, "{out}");

    let (code, out) = run(&demo_app(), &["probe", &dead], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");

    // SIGTERM: out at once, with 0.
    let t = Instant::now();
    api_app.signal(libc::SIGTERM);
    let status = api_app.wait_exit(WAIT, "demo app after SIGTERM").await;
    assert_eq!(status.code(), Some(0), "{}", api_app.log());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
