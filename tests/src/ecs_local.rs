//! A real `berth-ecs-local daemon` (as root) with its own state directory and bridge, and
//! its CLI. Dropping it stops every task and removes its bridge and namespaces; if the
//! daemon does not go in time it is killed and `berth-ecs-local cleanup` removes what it
//! left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bin;

pub struct EcsLocal {
    pub dir: tempfile::TempDir,
    /// `daemon.json`: pid, bridge, gateway, subnet, cluster_arn, region, account.
    pub info: Value,
    pub log: PathBuf,
    child: Option<Child>,
}

/// Variables that would make the daemon's AWS SDK look further than the test wants.
const QUIET_AWS: &[(&str, &str)] = &[
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
];

impl EcsLocal {
    /// Starts the daemon with `args` after `daemon --state-dir DIR` and `env` on top of a
    /// credential-free environment, and waits for `daemon.json`.
    pub fn start(args: &[&str], env: &[(String, String)]) -> EcsLocal {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("daemon.log");
        let out = std::fs::File::create(&log).expect("daemon log");
        let bin_dir = bin("berth-ecs-local")
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(bin("berth-ecs-local"));
        cmd.arg("daemon")
            .arg("--state-dir")
            .arg(dir.path())
            .args(args)
            .env("PATH", path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out);
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "BERTH_ECS_LOCAL_DIR",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(QUIET_AWS.iter().copied());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().expect("start berth-ecs-local daemon");
        let mut d = EcsLocal {
            dir,
            info: Value::Null,
            log,
            child: Some(child),
        };
        let info_path = d.dir.path().join("daemon.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = std::fs::read(&info_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                d.info = v;
                break;
            }
            let exited = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "berth-ecs-local daemon exited ({exited:?}): {}",
                d.daemon_log()
            );
            assert!(
                Instant::now() < deadline,
                "berth-ecs-local daemon not ready: {}",
                d.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn gateway(&self) -> String {
        self.info["gateway"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("berth-ecs-local"))
            .arg("--state-dir")
            .arg(self.dir.path())
            .args(args)
            .output()
            .expect("run berth-ecs-local")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "berth-ecs-local {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes the task definition to a file and runs it.
    pub fn try_run(&self, def: &Value) -> Output {
        let file = self
            .dir
            .path()
            .join(format!("taskdef-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, serde_json::to_vec_pretty(def).expect("json")).expect("write");
        self.cli(&["run", &file.display().to_string()])
    }

    /// Runs the task definition; its task ARN.
    pub fn run(&self, def: &Value) -> String {
        let out = self.try_run(def);
        assert!(
            out.status.success(),
            "run failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn describe(&self, task: &str) -> Value {
        serde_json::from_str(&self.ok(&["describe", task])).expect("describe prints JSON")
    }

    pub fn logs(&self, task: &str, container: &str) -> String {
        self.ok(&["logs", task, container])
    }

    pub fn stop(&self, task: &str) {
        self.ok(&["stop", task]);
    }

    /// Polls `describe` until `pred` holds, or panics naming `what` with the last document.
    pub fn wait_describe(
        &self,
        task: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.describe(task);
            if pred(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}: {d:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls a container's log until it contains `needle`; the log.
    pub fn wait_log(&self, task: &str, container: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.logs(task, container);
            if l.contains(needle) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {needle:?} in {container}'s log: {l}\n{}",
                self.describe(task)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where a task-scoped volume lives on the host.
    pub fn volume(&self, task: &str, name: &str) -> PathBuf {
        let id = task.rsplit('/').next().unwrap_or(task);
        self.dir
            .path()
            .join("tasks")
            .join(id)
            .join("volumes")
            .join(name)
    }

    /// Stops every task and the daemon (`down`), checking that it exits 0.
    pub fn down(mut self) {
        let out = self.cli(&["down"]);
        assert!(
            out.status.success(),
            "down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut c) = self.child.take() {
            let status = wait_deadline(&mut c, Duration::from_secs(30));
            assert!(
                status.is_some_and(|s| s.success()),
                "daemon did not exit 0 after down: {status:?}"
            );
        }
    }
}

fn wait_deadline(c: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for EcsLocal {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        if wait_deadline(&mut c, Duration::from_secs(40)).is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cli(&["cleanup"]);
    }
}
