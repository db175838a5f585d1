//! The task lifecycle on one machine: moto (STS, IAM, ECS) and an ACL-enabled dev
//! `berth-server` reachable from task network namespaces, the ACL controller's setup, and
//! `berth-ecs-local` running the example task definitions of `examples/ecs/`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::acl_server::AclServer;
use crate::ecs_local::EcsLocal;
use crate::moto::{Moto, repo_root};
use crate::{bin, eventually, http_client};

pub struct Mesh {
    pub moto: Moto,
    pub ecs: EcsLocal,
    pub acl: AclServer,
    /// The host's address as tasks see it.
    pub gateway: String,
    _dir: tempfile::TempDir,
}

/// The ECS cluster tasks are registered in, with [`Mesh::start_registered`].
pub const CLUSTER: &str = "mesh";
pub const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/mesh";

impl Mesh {
    pub async fn start() -> Mesh {
        Mesh::start_with(false).await
    }

    /// Tasks are also registered with moto's ECS in cluster [`CLUSTER`] (as the ACL
    /// controller needs), and moto's tasks stay in the status they are put in.
    pub async fn start_registered() -> Mesh {
        Mesh::start_with(true).await
    }

    async fn start_with(registered: bool) -> Mesh {
        let moto = Moto::start_with("0.0.0.0", "tests/moto/setup_mesh.py", &["web", "api"]).await;
        let mut env = moto.env_for("admin");
        env.retain(|(k, _)| k != "AWS_SESSION_TOKEN");
        // Tasks find Berth's binaries and Envoy (the venv's) on PATH.
        let bins = bin("berth")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let venv = crate::moto::venv_bin("envoy")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        env.push((
            "PATH".to_string(),
            format!(
                "{bins}:{venv}:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        ));
        let url = moto.url();
        let mut args = vec!["--sts-endpoint", url.as_str(), "--region", "us-east-1"];
        let (subnet, sg);
        if registered {
            moto.pin_ecs_tasks().await;
            subnet = moto.creds["subnet"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            sg = moto.creds["security_group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            args.extend(["--ecs-endpoint", url.as_str(), "--cluster", CLUSTER]);
            args.extend(["--subnet", subnet.as_str(), "--security-group", sg.as_str()]);
        }
        let ecs = EcsLocal::start(&args, &env);
        let gateway = ecs.gateway();
        let dir = tempfile::tempdir().expect("tempdir");
        let acl = AclServer::start_bound(dir.path(), "0.0.0.0", &["-advertise", &gateway]).await;
        let m = Mesh {
            moto,
            ecs,
            acl,
            gateway,
            _dir: dir,
        };
        m.setup().await;
        m
    }

    /// The endpoint of moto as tasks (and the auth methods) reach it.
    pub fn aws_endpoint(&self) -> String {
        format!("http://{}:{}", self.gateway, self.moto.port)
    }

    /// What the ACL controller sets up, plus HTTP between services and web → api allowed.
    async fn setup(&self) {
        let out = std::process::Command::new(bin("berth-acl-controller"))
            .args(["-http-addr", &self.acl.server.url("")])
            .args(["-token", &self.acl.root, "-account", "123456789012"])
            .args(["-sts-endpoint", &self.aws_endpoint()])
            .args(["-iam-endpoint", &self.aws_endpoint()])
            .arg("-once")
            .output()
            .expect("run berth-acl-controller");
        assert!(
            out.status.success(),
            "berth-acl-controller -once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.acl
            .admin(
                "PUT",
                "/v1/config",
                json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
            )
            .await;
        self.allow("web", "api", true).await;
    }

    /// Sets the intention `source` → `destination` to allow or deny.
    pub async fn allow(&self, source: &str, destination: &str, allow: bool) {
        let action = if allow { "allow" } else { "deny" };
        self.acl
            .admin(
                "PUT",
                "/v1/config",
                json!({"Kind": "service-intentions", "Name": destination,
                       "Sources": [{"Name": source, "Action": action}]}),
            )
            .await;
    }

    /// An example task definition (`examples/ecs/`) with this machine's addresses filled in.
    pub fn example_task_definition(&self, service: &str) -> Value {
        let path = repo_root().join(format!("examples/ecs/{service}.json"));
        let text = std::fs::read_to_string(&path).expect("read the example task definition");
        render(
            &text,
            &self.gateway,
            self.acl.server.http_port,
            self.acl.server.rpc_port,
            &self.aws_endpoint(),
            &self.role(service),
        )
    }

    /// The task definition of `service` as the Terraform container-definitions module renders
    /// it (its `web`/`api` fixture, with this machine's addresses), so that the module and
    /// the binaries cannot drift apart.
    pub fn task_definition(&self, service: &str) -> Value {
        let mut vars = crate::terraform::fixture(service);
        vars["server_hosts"] = json!([self.gateway]);
        vars["http_port"] = json!(self.acl.server.http_port);
        vars["rpc_port"] = json!(self.acl.server.rpc_port);
        vars["login"]["sts_endpoint"] = json!(self.aws_endpoint());
        vars["login"]["iam_endpoint"] = json!(self.aws_endpoint());
        vars["task_role_arn"] = json!(self.role(service));
        crate::terraform::render_task_definition(&vars)
    }

    fn role(&self, service: &str) -> String {
        self.moto.creds["roles"][service]
            .as_str()
            .unwrap_or_else(|| panic!("no role for {service}"))
            .to_string()
    }

    /// Runs a task and waits until its app container is RUNNING; its ARN and IP.
    pub fn run(&self, def: &Value) -> (String, String) {
        let arn = self.ecs.run(def);
        let app = def["family"].as_str().unwrap_or_default().to_string();
        let d = self
            .ecs
            .wait_describe(&arn, "the app to start", Duration::from_secs(60), |d| {
                container(d, &app)["KnownStatus"] == "RUNNING" || d["KnownStatus"] == "STOPPED"
            });
        assert_eq!(
            d["KnownStatus"],
            "RUNNING",
            "{}\n{}",
            d,
            self.task_logs(&arn)
        );
        (arn, task_ip(&d))
    }

    /// `kill -9` of every process of a task at once: nothing in it gets to log out or
    /// deregister, as when a host dies.
    pub fn kill_task(&self, task: &str) {
        let d = self.ecs.describe(task);
        let ip = task_ip(&d);
        let host = ip.rsplit('.').next().unwrap_or_default();
        let ns = format!(
            "{}-{host}",
            self.ecs.info["bridge"].as_str().unwrap_or_default()
        );
        let daemon = self.ecs.info["pid"].as_i64().unwrap_or(0) as i32;
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .expect("ip netns pids");
        let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| *p != daemon && *p > 1)
            .collect();
        assert!(!pids.is_empty(), "no process in {ns} for {task}");
        for p in &pids {
            // SAFETY: kill(2) on PIDs just read from the task's namespace.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
    }

    /// Every container's log of a task, for failure messages.
    pub fn task_logs(&self, task: &str) -> String {
        let out = self.ecs.cli(&["logs", task]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Login tokens whose meta names the task. Consul's tokens have no Meta field: a login's
    /// meta is kept as JSON in the description, `token created via login: {...}`.
    pub async fn tokens_of(&self, task_id: &str) -> Vec<Value> {
        let all = self.acl.admin_get("/v1/acl/tokens").await;
        let mut v = Vec::new();
        for t in all.as_array().cloned().unwrap_or_default() {
            let id = t["AccessorID"].as_str().unwrap_or_default().to_string();
            let r = self
                .acl
                .call(
                    "GET",
                    &format!("/v1/acl/token/{id}"),
                    Some(&self.acl.root),
                    None,
                )
                .await;
            // Deleted since the list was read (a logout, the controller).
            if r.status != 200 {
                continue;
            }
            let full = r.json();
            if login_meta(&full)["berth/task-id"] == task_id {
                v.push(full);
            }
        }
        v
    }

    /// `(service ID, status of every check)` of a service's instances in the catalog.
    pub async fn instances(&self, service: &str) -> Vec<(String, Vec<String>)> {
        let v = self
            .acl
            .admin_get(&format!("/v1/health/service/{service}"))
            .await;
        v.as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let checks = e["Checks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter(|c| c["ServiceID"] == e["Service"]["ID"])
                    .map(|c| c["Status"].as_str().unwrap_or_default().to_string())
                    .collect();
                (
                    e["Service"]["ID"].as_str().unwrap_or_default().to_string(),
                    checks,
                )
            })
            .collect()
    }

    /// Waits until GET `url` answers 200 with a body containing `needle`; the body.
    pub async fn wait_body(&self, url: &str, needle: &str, timeout: Duration) -> String {
        eventually(
            timeout,
            &format!("{url} to answer with {needle:?}"),
            || async {
                let r = http_client()
                    .get(url)
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await
                    .ok()?;
                if r.status() != 200 {
                    return None;
                }
                let body = r.text().await.ok()?;
                body.contains(needle).then_some(body)
            },
        )
        .await
    }
}

/// The meta a login token was created with.
pub fn login_meta(token: &Value) -> Value {
    token["Description"]
        .as_str()
        .and_then(|d| d.strip_prefix("token created via login: "))
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Value::Null)
}

/// Fills in the example's placeholders.
pub fn render(text: &str, server: &str, http: u16, rpc: u16, aws: &str, role: &str) -> Value {
    let filled = text
        .replace("{{SERVER_HOST}}", server)
        .replace("{{HTTP_PORT}}", &http.to_string())
        .replace("{{RPC_PORT}}", &rpc.to_string())
        .replace("{{STS_ENDPOINT}}", aws)
        .replace("{{IAM_ENDPOINT}}", aws)
        .replace("{{TASK_ROLE_ARN}}", role);
    assert!(!filled.contains("{{"), "a placeholder is left: {filled}");
    serde_json::from_str(&filled).expect("the rendered task definition is JSON")
}

pub fn container<'a>(describe: &'a Value, name: &str) -> &'a Value {
    describe["Containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["Name"] == name))
        .unwrap_or(&Value::Null)
}

pub fn task_ip(describe: &Value) -> String {
    describe["Containers"][0]["Networks"][0]["IPv4Addresses"][0]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn task_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}
