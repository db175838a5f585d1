//! `berth` (the CLI) as a real process, for the CLI suites.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::bin;

/// `berth`'s exit code and output.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "berth failed\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    pub fn lines(&self) -> Vec<&str> {
        self.ok().lines().collect()
    }

    /// Exit code 1 and exactly one line, `Error: ...`, on stderr; returns that line.
    pub fn failed(&self) -> String {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit 1\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        let err = self.stderr.trim();
        assert_eq!(err.lines().count(), 1, "expected one line on stderr: {err}");
        assert!(err.starts_with("Error: "), "{err}");
        err.to_string()
    }

    /// The value of a `Key:   value` line of the pretty output.
    pub fn field(&self, key: &str) -> String {
        let prefix = format!("{key}:");
        self.ok()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {key:?} in:\n{}", self.stdout))
    }
}

/// Runs `berth args...` without the caller's `BERTH_*` variables, with those of `env`, and
/// `stdin` on its standard input; killed after a minute.
pub fn berth(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(bin("berth"));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("BERTH_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn berth");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r.expect("wait for berth"),
        Err(_) => {
            // SAFETY: kill(2) on the child we started, still running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("berth {args:?} did not finish within 60s");
        }
    };
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
