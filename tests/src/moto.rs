//! A real moto server (PyPI `moto[server]`, from the project's `.venv`) that verifies SigV4
//! signatures after its first few calls, prepared with IAM roles by `tests/moto/setup_iam.py`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository's root, where `.venv/` and `tests/moto/` live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A program of the project's Python venv (`scripts/install-deps` makes it).
pub fn venv_bin(name: &str) -> PathBuf {
    let p = repo_root().join(".venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps",
        p.display()
    );
    p
}

pub struct Moto {
    pub port: u16,
    child: Child,
    /// Credentials made by the setup script: `admin`, `web` (role at /berth/), `outsider`
    /// (role at /other/); each has AccessKeyId, SecretAccessKey and (roles) SessionToken.
    pub creds: Value,
}

impl Moto {
    /// Starts moto on a free loopback port with signature checks from the fourth call on, and
    /// runs the IAM setup.
    pub async fn start() -> Moto {
        Moto::start_with("127.0.0.1", "tests/moto/setup_iam.py", &[]).await
    }

    /// Moto listening on `host` (`0.0.0.0` for tasks in network namespaces), prepared by
    /// `script` (a path from the repository root) with `script_args`.
    pub async fn start_with(host: &str, script: &str, script_args: &[&str]) -> Moto {
        let port = crate::free_port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", host, "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut m = Moto {
            port,
            child,
            creds: Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = crate::http_client()
                .get(format!("{}/moto-api/", m.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "moto did not start on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = Command::new(venv_bin("python"))
            .arg(repo_root().join(script))
            .arg(m.url())
            .args(script_args)
            .output()
            .expect("run the moto setup script");
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.creds = serde_json::from_slice(&out.stdout).expect("the moto setup script prints JSON");
        m
    }

    /// Keeps moto's ECS tasks in the status they are put in: otherwise each DescribeTasks
    /// moves a task one status on, towards STOPPED.
    pub async fn pin_ecs_tasks(&self) {
        let r = crate::http_client()
            .post(format!(
                "{}/moto-api/state-manager/set-transition",
                self.url()
            ))
            .json(&serde_json::json!({"model_name": "ecs::task",
                          "transition": {"progression": "manual", "times": 1_000_000}}))
            .send()
            .await
            .expect("moto set-transition");
        assert!(
            r.status().is_success(),
            "moto set-transition: {}",
            r.status()
        );
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for a process that should find `who`'s credentials through the AWS SDK's
    /// default chain, and nothing else (no profile files, no instance metadata).
    pub fn env_for(&self, who: &str) -> Vec<(String, String)> {
        let c = &self.creds[who];
        let mut v = vec![
            (
                "AWS_ACCESS_KEY_ID".to_string(),
                c["AccessKeyId"].as_str().unwrap_or("").to_string(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                c["SecretAccessKey"].as_str().unwrap_or("").to_string(),
            ),
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
            ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
            ("AWS_CONFIG_FILE".to_string(), "/nonexistent".to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_string(),
                "/nonexistent".to_string(),
            ),
        ];
        if let Some(t) = c["SessionToken"].as_str() {
            v.push(("AWS_SESSION_TOKEN".to_string(), t.to_string()));
        }
        v
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
