//! Terraform (1.11, at /usr/local/bin/terraform on the project's machines) applying the
//! provider-free `mesh-task/modules/container-definitions` module offline, in a copy of the
//! module per call so that tests run in parallel.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::repo_root;

pub const CONTAINER_DEFINITIONS: &str = "terraform/modules/mesh-task/modules/container-definitions";

pub fn terraform_bin() -> PathBuf {
    let p = PathBuf::from("/usr/local/bin/terraform");
    if p.exists() {
        return p;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("terraform"))
                .find(|c| c.exists())
        })
        .unwrap_or_else(|| panic!("terraform is missing: install Terraform 1.11 at /usr/local/bin/terraform (see PEERS.md)"))
}

/// `terraform ARGS` in `dir`, offline and quiet.
pub fn terraform(dir: &Path, args: &[&str]) -> Output {
    let cli_config = dir.join(".terraformrc");
    if !cli_config.exists() {
        std::fs::write(&cli_config, "").expect("write an empty CLI config");
    }
    Command::new(terraform_bin())
        .arg(format!("-chdir={}", dir.display()))
        .args(args)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_CLI_CONFIG_FILE", &cli_config)
        .output()
        .expect("run terraform")
}

/// Applies the container-definitions module with `vars`; its outputs, or Terraform's error.
pub fn apply_container_definitions(vars: &Value) -> Result<Value, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = repo_root().join(CONTAINER_DEFINITIONS);
    for e in std::fs::read_dir(&src).expect("read the module") {
        let p = e.expect("dir entry").path();
        if p.extension().is_some_and(|x| x == "tf") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap_or_default()))
                .expect("copy a .tf file");
        }
    }
    std::fs::write(dir.path().join("vars.tfvars.json"), vars.to_string()).expect("write vars");
    let ok = |o: &Output| o.status.success();
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let init = terraform(dir.path(), &["init", "-input=false", "-no-color"]);
    if !ok(&init) {
        return Err(text(&init));
    }
    let apply = terraform(
        dir.path(),
        &[
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-var-file=vars.tfvars.json",
        ],
    );
    if !ok(&apply) {
        return Err(text(&apply));
    }
    let out = terraform(dir.path(), &["output", "-json", "-no-color"]);
    if !ok(&out) {
        return Err(text(&out));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v)
}

/// The module's task definition for `vars`, with each `BERTH_ECS_CONFIG_JSON` parsed so
/// that comparisons do not depend on key order.
pub fn render_task_definition(vars: &Value) -> Value {
    let out = apply_container_definitions(vars)
        .unwrap_or_else(|e| panic!("the container-definitions module failed: {e}"));
    let raw = out["task_definition_json"]["value"]
        .as_str()
        .expect("task_definition_json is a string");
    serde_json::from_str(raw).expect("task_definition_json is JSON")
}

/// `def` with every `BERTH_ECS_CONFIG_JSON` value parsed into JSON.
pub fn normalized(def: &Value) -> Value {
    let mut d = def.clone();
    if let Some(cs) = d["containerDefinitions"].as_array_mut() {
        for c in cs {
            if let Some(env) = c["environment"].as_array_mut() {
                for e in env {
                    if e["name"] == "BERTH_ECS_CONFIG_JSON"
                        && let Some(s) = e["value"].as_str()
                    {
                        e["value"] = serde_json::from_str(s).unwrap_or(Value::Null);
                    }
                }
            }
        }
    }
    d
}

/// A fixture of the module's tests (`tests/fixtures/NAME.tfvars.json`).
pub fn fixture(name: &str) -> Value {
    let p = repo_root()
        .join(CONTAINER_DEFINITIONS)
        .join(format!("tests/fixtures/{name}.tfvars.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect("read the fixture"))
        .expect("the fixture is JSON")
}
