//! The Terraform modules without AWS: every `.tf` file is formatted and parses; the
//! provider-free container-definitions module is applied with fixtures and its output compared
//! with expectations and with `examples/ecs/`; checkov finds no failed check.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::lifecycle::render;
use berth_tests::repo_root;
use berth_tests::terraform::{
    CONTAINER_DEFINITIONS, apply_container_definitions, fixture, normalized,
    render_task_definition, terraform,
};
use serde_json::{Value, json};

const FIXTURES: &[&str] = &["api", "web", "ec2", "no-upstreams", "acls-off"];

fn tf_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() && !name.starts_with('.') {
            tf_files(&p, out);
        } else if name.ends_with(".tf") {
            out.push(p);
        }
    }
}

#[test]
fn every_tf_file_is_formatted_and_parses() {
    let root = repo_root().join("terraform");
    let fmt = terraform(
        &root,
        &["fmt", "-check", "-recursive", "-diff", "-no-color"],
    );
    assert!(
        fmt.status.success(),
        "terraform fmt -check: {}{}",
        String::from_utf8_lossy(&fmt.stdout),
        String::from_utf8_lossy(&fmt.stderr)
    );
    let mut files = Vec::new();
    tf_files(&root, &mut files);
    assert!(files.len() >= 12, "only {} .tf files found", files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if let Err(e) = hcl::parse(&text) {
            panic!("{} does not parse: {e}", f.display());
        }
    }
    // Every module documents itself and pins the AWS provider's major version.
    for m in ["mesh-task", "acl-controller", "server-cluster"] {
        let dir = root.join("modules").join(m);
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let versions = std::fs::read_to_string(dir.join("versions.tf")).unwrap();
        assert!(
            versions.contains("hashicorp/aws") && versions.contains("~> 5."),
            "{m}"
        );
        for v in declared(&dir.join("variables.tf"), "variable") {
            assert!(
                readme.contains(&format!("`{v}`")),
                "{m}/README.md lacks input `{v}`"
            );
        }
        for o in declared(&dir.join("outputs.tf"), "output") {
            assert!(
                readme.contains(&format!("`{o}`")),
                "{m}/README.md lacks output `{o}`"
            );
        }
    }
}

/// The names of the blocks of one kind (`variable`, `output`) a file declares.
fn declared(file: &Path, kind: &str) -> Vec<String> {
    let body: hcl::Body = hcl::from_str(&std::fs::read_to_string(file).unwrap())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()));
    body.blocks()
        .filter(|b| b.identifier() == kind)
        .filter_map(|b| b.labels().first().map(|l| l.as_str().to_string()))
        .collect()
}

fn names(def: &Value) -> Vec<String> {
    def["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn container<'a>(def: &'a Value, name: &str) -> &'a Value {
    def["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn config(def: &Value) -> Value {
    container(def, "berth-agent")["environment"][0]["value"].clone()
}

#[test]
fn fixtures_render_as_expected() {
    for name in FIXTURES {
        let got = normalized(&render_task_definition(&fixture(name)));
        let path = repo_root()
            .join(CONTAINER_DEFINITIONS)
            .join(format!("tests/expected/{name}.json"));
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            got,
            normalized(&want),
            "{name}: the rendered task definition differs from {}",
            path.display()
        );

        // The rules, spelled out, so the expectations cannot drift with the module.
        let apps: Vec<String> = fixture(name)["container_definitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        let mut order = vec![
            "berth-agent".to_string(),
            "berth-mesh-init".into(),
            "berth-proxy".into(),
            "berth-health-sync".into(),
        ];
        order.extend(apps.iter().cloned());
        assert_eq!(names(&got), order, "{name}");
        assert_eq!(got["networkMode"], "awsvpc");
        assert_eq!(
            container(&got, "berth-mesh-init")["dependsOn"],
            json!([{"containerName": "berth-agent", "condition": "START"}])
        );
        assert_eq!(container(&got, "berth-mesh-init")["essential"], false);
        for c in ["berth-proxy", "berth-health-sync"] {
            assert_eq!(
                container(&got, c)["dependsOn"],
                json!([{"containerName": "berth-mesh-init", "condition": "SUCCESS"}]),
                "{name} {c}"
            );
        }
        assert_eq!(
            container(&got, "berth-proxy")["healthCheck"]["command"],
            json!(["CMD", "/berth/berth-envoy-entrypoint", "ready"])
        );
        for a in &apps {
            let deps = container(&got, a)["dependsOn"].as_array().unwrap().clone();
            assert!(
                deps.contains(&json!({"containerName": "berth-proxy", "condition": "HEALTHY"})),
                "{name} {a}"
            );
        }
        let tags = got["tags"].as_array().unwrap();
        for k in ["berth/mesh", "berth/service-name", "berth/module-version"] {
            assert!(tags.iter().any(|t| t["key"] == k), "{name} tag {k}");
        }
        assert_eq!(got["volumes"][0], json!({"name": "berth-data"}));
    }

    // Fargate and EC2.
    let api = render_task_definition(&fixture("api"));
    assert_eq!(api["requiresCompatibilities"], json!(["FARGATE"]));
    let ec2 = normalized(&render_task_definition(&fixture("ec2")));
    assert_eq!(ec2["requiresCompatibilities"], json!(["EC2"]));
    // Health-sync mirrors the essential app containers that have a health check (ECS counts
    // a container without `essential` as essential).
    assert_eq!(
        config(&ec2)["healthSyncContainers"],
        json!(["orders", "metrics"])
    );
    assert_eq!(
        config(&ec2)["proxy"]["upstreams"],
        json!([{"destinationName": "api", "localBindPort": 1234},
               {"destinationName": "payments", "localBindPort": 1235}])
    );
    assert_eq!(config(&ec2)["service"]["tags"], json!(["v2"]));
    // The user's own dependsOn and mounts stay, before Berth's.
    assert_eq!(
        container(&ec2, "orders")["dependsOn"][0],
        json!({"containerName": "log-router", "condition": "START"})
    );
    assert_eq!(container(&ec2, "orders")["entryPoint"], json!(["/app/run"]));
    assert!(container(&ec2, "berth-agent")["logConfiguration"].is_object());
    assert!(container(&ec2, "log-router")["logConfiguration"].is_null());
    // Proxy and health-sync are essential by default.
    assert_eq!(container(&ec2, "berth-proxy")["essential"], true);
    assert_eq!(container(&ec2, "berth-health-sync")["essential"], true);
    // No upstreams: no proxy section.
    let solo = normalized(&render_task_definition(&fixture("no-upstreams")));
    assert!(config(&solo).get("proxy").is_none(), "{}", config(&solo));
    assert_eq!(config(&solo)["healthSyncContainers"], json!([]));
    // ACLs off: no login; TLS: the CA comes as a secret.
    let open = normalized(&render_task_definition(&fixture("acls-off")));
    assert_eq!(config(&open)["login"], json!({"enabled": false}));
    assert_eq!(config(&open)["servers"]["rpc"]["tls"], true);
    assert_eq!(
        container(&open, "berth-agent")["secrets"][0]["name"],
        "BERTH_CA_CERT_PEM"
    );
    assert_eq!(config(&open)["logLevel"], "debug");
    // A shutdown delay puts the app under app-entrypoint.
    assert_eq!(
        container(&api, "api")["entryPoint"],
        json!([
            "/berth/berth-envoy-entrypoint",
            "app-entrypoint",
            "-shutdown-delay",
            "3s"
        ])
    );
}

#[test]
fn the_examples_are_what_the_module_renders() {
    for svc in ["api", "web"] {
        let vars = fixture(svc);
        let from_module = normalized(&render_task_definition(&vars));
        let text =
            std::fs::read_to_string(repo_root().join(format!("examples/ecs/{svc}.json"))).unwrap();
        let example = render(
            &text,
            vars["server_hosts"][0].as_str().unwrap(),
            vars["http_port"].as_u64().unwrap() as u16,
            vars["rpc_port"].as_u64().unwrap() as u16,
            vars["login"]["sts_endpoint"].as_str().unwrap(),
            vars["task_role_arn"].as_str().unwrap(),
        );
        // The examples keep STS and IAM apart by placeholder; render() fills both with one.
        let mut from_module = from_module;
        let iam = vars["login"]["iam_endpoint"].as_str().unwrap();
        let sts = vars["login"]["sts_endpoint"].as_str().unwrap();
        let text = from_module.to_string().replace(iam, sts);
        from_module = serde_json::from_str(&text).unwrap();
        assert_eq!(
            normalized(&example),
            from_module,
            "examples/ecs/{svc}.json is not what the module renders: re-render it"
        );
    }
}

#[test]
fn bad_module_input_is_refused_with_its_reason() {
    let mut v = fixture("no-upstreams");
    v["container_definitions"][0]["name"] = json!("berth-app");
    let e = apply_container_definitions(&v).unwrap_err();
    assert!(e.contains("Berth's own"), "{e}");
    let mut v = fixture("no-upstreams");
    v["server_hosts"] = json!([]);
    let e = apply_container_definitions(&v).unwrap_err();
    assert!(
        e.contains("server_hosts must name at least one server"),
        "{e}"
    );
    let mut v = fixture("no-upstreams");
    v["requires_compatibilities"] = json!(["EXTERNAL"]);
    let e = apply_container_definitions(&v).unwrap_err();
    assert!(e.contains("FARGATE and/or EC2"), "{e}");
    let mut v = fixture("no-upstreams");
    v["upstreams"] = json!([{"destination_name": "api"}]);
    let e = apply_container_definitions(&v).unwrap_err();
    assert!(e.contains("local_bind_port"), "{e}");
}

#[test]
fn the_berth_image_holds_every_binary_a_task_or_server_runs() {
    let dockerfile = std::fs::read_to_string(repo_root().join("docker/Dockerfile")).unwrap();
    let mut bins = Vec::new();
    for e in std::fs::read_dir(repo_root()).unwrap() {
        let manifest = e.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let v: toml_like::Doc = toml_like::parse(&text);
        bins.extend(v.bins);
    }
    bins.retain(|b| b != "berth-ecs-local" && !b.contains("bench") && b != "berth-demo");
    assert!(bins.len() >= 7, "{bins:?}");
    for b in &bins {
        assert!(
            dockerfile.contains(&format!("target/release/{b} "))
                || dockerfile.contains(&format!("target/release/{b}\n")),
            "docker/Dockerfile does not ship {b}"
        );
    }
    // Every package the images build is one of the workspace's.
    let mut packages = Vec::new();
    for e in std::fs::read_dir(repo_root()).unwrap() {
        let Ok(text) = std::fs::read_to_string(e.unwrap().path().join("Cargo.toml")) else {
            continue;
        };
        if let Some(name) = text
            .lines()
            .skip_while(|l| l.trim() != "[package]")
            .find_map(|l| l.trim().strip_prefix("name = "))
        {
            packages.push(name.trim_matches('"').to_string());
        }
    }
    for file in ["docker/Dockerfile", "docker/Dockerfile.envoy"] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        let built: Vec<&str> = words
            .windows(2)
            .filter(|w| w[0] == "-p")
            .map(|w| w[1])
            .collect();
        assert!(!built.is_empty(), "{file} builds nothing");
        for p in built {
            assert!(
                packages.iter().any(|k| k == p),
                "{file} builds {p}, which is not a workspace package"
            );
        }
    }
    let envoy = std::fs::read_to_string(repo_root().join("docker/Dockerfile.envoy")).unwrap();
    assert!(envoy.contains("target/release/berth-envoy-entrypoint"));
    assert!(envoy.contains("envoyproxy/envoy:v1.40"));
}

/// Just enough of Cargo.toml: the `[[bin]]` names.
mod toml_like {
    pub struct Doc {
        pub bins: Vec<String>,
    }
    pub fn parse(text: &str) -> Doc {
        let mut bins = Vec::new();
        let mut in_bin = false;
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with('[') {
                in_bin = l == "[[bin]]";
            } else if in_bin && let Some(v) = l.strip_prefix("name = ") {
                bins.push(v.trim_matches('"').to_string());
            }
        }
        Doc { bins }
    }
}

#[test]
fn checkov_finds_no_failed_check() {
    let checkov = repo_root().join(".venv-checkov/bin/checkov");
    assert!(
        checkov.exists(),
        "{} is missing: run scripts/install-deps",
        checkov.display()
    );
    for (dir, framework) in [("terraform", "terraform"), ("docker", "dockerfile")] {
        let out = Command::new(&checkov)
            .args(["-d", dir, "--framework", framework])
            .args(["--skip-download", "--compact", "--quiet", "--output", "cli"])
            .current_dir(repo_root())
            .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
            .env("BC_SKIP_MAPPING", "TRUE")
            .output()
            .expect("run checkov");
        assert!(
            out.status.success(),
            "checkov -d {dir} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The server-cluster user data, rendered offline by Terraform's own `templatefile`.
fn render_user_data(vars: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let tpl = repo_root().join("terraform/modules/server-cluster/user-data.sh.tftpl");
    std::fs::write(
        dir.path().join("main.tf"),
        format!(
            "variable \"v\" {{\n  type = any\n}}\noutput \"user_data\" {{\n  value = templatefile({:?}, var.v)\n}}\n",
            tpl.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("v.tfvars.json"),
        json!({ "v": vars }).to_string(),
    )
    .unwrap();
    for args in [
        vec!["init", "-input=false", "-no-color"],
        vec![
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-var-file=v.tfvars.json",
        ],
    ] {
        let o = terraform(dir.path(), &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = terraform(dir.path(), &["output", "-raw", "user_data"]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_server_user_data_checks_the_binary_and_joins_by_tag() {
    let sha = "ab".repeat(32);
    let base = json!({
        "berth_server_url": "https://downloads.example/berth-server",
        "berth_server_sha256": sha,
        "datacenter": "dc1", "server_count": 3,
        "tag_key": "berth-cluster", "tag_value": "prod", "region": "eu-west-1",
        "tls": false, "tls_ca": "", "tls_cert": "", "tls_key": "", "acl_token_secret": "",
    });
    let plain = render_user_data(&base);
    let mut full = base.clone();
    full["tls"] = json!(true);
    full["tls_ca"] = json!("arn:ca");
    full["tls_cert"] = json!("arn:cert");
    full["tls_key"] = json!("arn:key");
    full["acl_token_secret"] = json!("arn:token");
    let secure = render_user_data(&full);
    for script in [&plain, &secure] {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("user-data.sh");
        std::fs::write(&f, script).unwrap();
        let o = Command::new("bash").arg("-n").arg(&f).output().unwrap();
        assert!(
            o.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // The checksum is checked before anything is installed.
        let check = script
            .find(&format!("echo '{sha}  /tmp/berth-server' | sha256sum -c -"))
            .unwrap();
        let install = script.find("install -m 0755 /tmp/berth-server").unwrap();
        assert!(check < install);
        assert!(script.contains(
            "retry_join       = [\"provider=aws tag_key=berth-cluster tag_value=prod region=eu-west-1 addr_type=private_v4\"]"
        ));
        assert!(script.contains("bootstrap_expect = 3"));
        assert!(script.contains("systemctl enable --now berth-server"));
    }
    assert!(!plain.contains("tls {") && !plain.contains("acl.hcl"));
    assert!(secure.contains("https_addr = \"0.0.0.0:8501\""));
    assert!(
        secure.contains("secret 'arn:key'") && secure.contains("-config-file /etc/berth/acl.hcl")
    );
    // The token is never written into the script itself.
    assert!(secure.contains("initial_management = \"$token\""));
}
