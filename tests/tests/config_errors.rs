//! Bad configuration and damaged data stop the server with one clear line, never a silent
//! empty start.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use berth_tests::{Kv, Server, bin, free_port, http_client};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin("berth-server"));
    cmd.args(args).env_remove("BERTH_CONFIG_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Every case here must fail fast; a server that starts would hang the test, so bound it.
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let guard = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    drop(guard);
    out
}

fn stderr_line(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(
        s.lines().count(),
        1,
        "expected one line on stderr, got:\n{s}"
    );
    s
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn unknown_keys_exit_2_naming_file_and_key() {
    let d = tempfile::tempdir().unwrap();
    let hcl = write(
        d.path(),
        "a.hcl",
        "datacenter = \"dc2\"\nbootstrap_expectt = 3\n",
    );
    let out = run(&["-dev", "-config-file", &hcl], &[]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr_line(&out);
    assert!(
        line.contains(&hcl) && line.contains("`bootstrap_expectt`") && line.contains("unknown key"),
        "{line}"
    );

    let json = write(
        d.path(),
        "b.json",
        r#"{"tls": {"ca_file": "x", "verify_everything": true}}"#,
    );
    let out = run(&["-dev", "-config-file", &json], &[]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr_line(&out);
    assert!(
        line.contains(&json) && line.contains("`tls.verify_everything`"),
        "{line}"
    );
}

#[test]
fn wrong_types_exit_2_naming_key_and_expectation() {
    let d = tempfile::tempdir().unwrap();
    let hcl = write(d.path(), "c.hcl", "bootstrap_expect = \"three\"\n");
    let out = run(&["-dev", "-config-file", &hcl], &[]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr_line(&out);
    assert!(
        line.contains(&hcl) && line.contains("`bootstrap_expect`") && line.contains("expected u32"),
        "{line}"
    );

    let json = write(d.path(), "d.json", r#"{"retry_join": "not-a-list"}"#);
    let out = run(&["-dev", "-config-file", &json], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("`retry_join`"));

    let bad = write(d.path(), "e.json", "{ nope");
    let out = run(&["-dev", "-config-file", &bad], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("not valid JSON"));

    let out = run(&["-dev"], &[("BERTH_BOOTSTRAP_EXPECT", "many")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("BERTH_BOOTSTRAP_EXPECT"));

    let out = run(&["-dev", "-http-addr", "localhost"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("http_addr"));

    let out = run(&["-data-dir"], &[]);
    assert_eq!(out.status.code(), Some(2), "a flag without its value");
    let out = run(&["-no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));

    let missing = d.path().join("missing.hcl").display().to_string();
    let out = run(&["-dev", "-config-file", &missing], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains(&missing));
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(
        d.path(),
        "one",
        free_port(),
        free_port(),
        &["-bootstrap-expect".into(), "1".into()],
    );
    s.wait_ready(Duration::from_secs(10)).await;
    let dir = s.data_dir.display().to_string();
    let (h, r) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let out = run(
        &[
            "-data-dir",
            &dir,
            "-http-addr",
            &h,
            "-rpc-addr",
            &r,
            "-bootstrap-expect",
            "1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    assert!(line.contains(&dir) && line.contains("in use"), "{line}");
    // The running server was not disturbed.
    s.wait_ready(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_port_in_use_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = d.path().join("x").display().to_string();
    let (h, r) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{port}"),
    );
    let out = run(&["-data-dir", &dir, "-http-addr", &h, "-rpc-addr", &r], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).contains(&r));
}

/// A server that wrote enough to snapshot, then was killed: its files are ready to damage.
async fn crashed_server(dir: &Path) -> (Vec<String>, String) {
    let (http, rpc) = (free_port(), free_port());
    let args: Vec<String> = ["-bootstrap-expect", "1", "-raft-snapshot-threshold", "20"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut s = Server::start(dir, "victim", http, rpc, &args);
    s.wait_ready(Duration::from_secs(10)).await;
    let client = http_client();
    let kv = Kv {
        client: &client,
        base: s.url(""),
    };
    for i in 0..100 {
        assert_eq!(kv.put(&format!("k{i}"), "v", "").await.status, 200);
    }
    berth_tests::eventually(Duration::from_secs(10), "a snapshot", || async {
        (s.raft_stat("last_snapshot_index").await != "0").then_some(())
    })
    .await;
    s.kill9();
    let data = s.data_dir.display().to_string();
    let mut argv = vec![
        "-data-dir".to_string(),
        data.clone(),
        "-http-addr".to_string(),
        format!("127.0.0.1:{http}"),
        "-rpc-addr".to_string(),
        format!("127.0.0.1:{rpc}"),
    ];
    argv.extend(args);
    (argv, data)
}

#[tokio::test]
async fn a_truncated_log_is_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let (argv, data) = crashed_server(d.path()).await;
    let log = Path::new(&data).join("raft/raft.redb");
    let len = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = run(&argv, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).contains(&log.display().to_string()));
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let (argv, data) = crashed_server(d.path()).await;
    let snap = Path::new(&data).join("raft/snapshot.bin");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0x5a;
    }
    std::fs::write(&snap, &bytes).unwrap();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = run(&argv, &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    assert!(
        line.contains(&snap.display().to_string()) && line.contains("corrupt"),
        "{line}"
    );
}

#[tokio::test]
async fn an_undamaged_crash_restarts_with_everything() {
    let d = tempfile::tempdir().unwrap();
    let (argv, _data) = crashed_server(d.path()).await;
    let http: u16 = argv[3].rsplit(':').next().unwrap().parse().unwrap();
    let mut child = Command::new(bin("berth-server"))
        .args(&argv)
        .spawn()
        .unwrap();
    let client = http_client();
    let url = format!("http://127.0.0.1:{http}");
    let kv = Kv {
        client: &client,
        base: url,
    };
    let keys = berth_tests::eventually(Duration::from_secs(15), "restart", || async {
        let r = client
            .get(format!("{}/v1/kv/?keys", kv.base))
            .send()
            .await
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        r.json::<Vec<String>>().await.ok()
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(keys.len(), 100);
}
