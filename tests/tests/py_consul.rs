//! py-consul 1.8.0's own test files, unmodified, against `berth-server -dev`.
//! See tests/py-consul/README.md for which files run and why the others do not yet.

use std::path::Path;
use std::process::Command;

use berth_tests::bin;

/// py-consul test files that Berth must pass today.
/// Single tests that cannot pass are deselected, with reasons, in tests/py-consul/conftest.py.
const FILES: &[&str] = &[
    "test_status.py",
    "test_kv.py",
    "test_session.py",
    "test_catalog.py",
    "test_health.py",
    "test_agent.py",
    "test_acl.py",
    "test_acl_templated_policy.py",
];

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

#[test]
fn py_consul_suite_passes_against_berth() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join(".venv/bin/python");
    let sdist = root.join(".cache/py-consul-1.8.0/tests");
    assert!(
        python.exists() && sdist.join("api").exists(),
        "py-consul is not installed: run scripts/install-deps"
    );
    let run = tempfile::tempdir().unwrap();
    let api = run.path().join("tests/api");
    std::fs::create_dir_all(&api).unwrap();
    for f in ["__init__.py", "conftest.py", "utils.py"] {
        copy(&sdist.join(f), &run.path().join("tests").join(f));
    }
    copy(&sdist.join("api/__init__.py"), &api.join("__init__.py"));
    for f in FILES {
        copy(&sdist.join("api").join(f), &api.join(f));
    }
    copy(
        &root.join("tests/py-consul/conftest.py"),
        &run.path().join("conftest.py"),
    );

    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-o",
            "addopts=",
            "-p",
            "no:cacheprovider",
            "tests/api",
        ])
        .current_dir(run.path())
        .env("BERTH_SERVER_BIN", bin("berth-server"))
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "py-consul tests failed:\n{stdout}");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains("passed") && !summary.contains("failed"),
        "{summary}"
    );
    let passed: u32 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 79, "only {passed} py-consul tests ran: {summary}");
}
