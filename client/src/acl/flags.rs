//! Flags shared by several ACL commands, their parsers, and the JSON pieces they become.

use std::io::Read;

use anyhow::{Context, bail};
use berth_api::acl::{NodeIdentity, ServiceIdentity};
use clap::Args;
use serde_json::{Map, Value, json};

/// `-policy-id` / `-policy-name`, repeatable.
#[derive(Args, Debug, Clone, Default)]
pub struct PolicyLinks {
    /// A policy to link, by ID (repeatable).
    #[arg(long = "policy-id", value_name = "ID")]
    pub policy_ids: Vec<String>,
    /// A policy to link, by name (repeatable).
    #[arg(long = "policy-name", value_name = "NAME")]
    pub policy_names: Vec<String>,
}

impl PolicyLinks {
    pub fn json(&self) -> Vec<Value> {
        links(&self.policy_ids, &self.policy_names)
    }
}

/// `-role-id` / `-role-name`, repeatable.
#[derive(Args, Debug, Clone, Default)]
pub struct RoleLinks {
    /// A role to link, by ID (repeatable).
    #[arg(long = "role-id", value_name = "ID")]
    pub role_ids: Vec<String>,
    /// A role to link, by name (repeatable).
    #[arg(long = "role-name", value_name = "NAME")]
    pub role_names: Vec<String>,
}

impl RoleLinks {
    pub fn json(&self) -> Vec<Value> {
        links(&self.role_ids, &self.role_names)
    }
}

/// Service and node identities and a templated policy.
#[derive(Args, Debug, Clone, Default)]
pub struct Identities {
    /// A service identity: the service's name, optionally with the datacenters it is valid in
    /// (repeatable).
    #[arg(long = "service-identity", value_name = "NAME[:DC1,DC2]", value_parser = parse_service_identity)]
    pub service: Vec<ServiceIdentity>,
    /// A node identity: the node's name and its datacenter (repeatable).
    #[arg(long = "node-identity", value_name = "NODE:DC", value_parser = parse_node_identity)]
    pub node: Vec<NodeIdentity>,
    /// A templated policy by name, e.g. builtin/service; its variables come from -var.
    #[arg(long = "templated-policy", value_name = "NAME")]
    pub templated_policy: Option<String>,
    /// A variable of -templated-policy, e.g. `name:web` (repeatable).
    #[arg(long = "var", value_name = "NAME:VALUE", value_parser = parse_var, requires = "templated_policy")]
    pub vars: Vec<(String, String)>,
}

impl Identities {
    pub fn service_json(&self) -> Vec<Value> {
        self.service.iter().map(service_identity_json).collect()
    }

    pub fn node_json(&self) -> Vec<Value> {
        self.node
            .iter()
            .map(|n| json!({"NodeName": n.node_name, "Datacenter": n.datacenter}))
            .collect()
    }

    pub fn templated_json(&self) -> Vec<Value> {
        let Some(name) = &self.templated_policy else {
            return Vec::new();
        };
        let mut t = Map::new();
        t.insert("TemplateName".into(), json!(name));
        if !self.vars.is_empty() {
            let vars: Map<String, Value> = self
                .vars
                .iter()
                .map(|(k, v)| (capitalized(k), json!(v)))
                .collect();
            t.insert("TemplateVariables".into(), Value::Object(vars));
        }
        vec![Value::Object(t)]
    }

    /// Writes the given identities into `obj`: merged into what is there, or replacing it.
    /// Kinds not given are left alone.
    pub fn apply(&self, obj: &mut Map<String, Value>, merge: Merge) {
        if !self.service.is_empty() {
            set_list(
                obj,
                "ServiceIdentities",
                self.service_json(),
                merge.services,
                same_field("ServiceName"),
            );
        }
        if !self.node.is_empty() {
            set_list(
                obj,
                "NodeIdentities",
                self.node_json(),
                merge.nodes,
                same_fields("NodeName", "Datacenter"),
            );
        }
        if self.templated_policy.is_some() {
            set_list(
                obj,
                "TemplatedPolicies",
                self.templated_json(),
                merge.templated,
                same_templated,
            );
        }
    }

    /// All three kinds under their keys in the API, empty when not given.
    pub fn lists(&self) -> [(&'static str, Vec<Value>); 3] {
        [
            ("ServiceIdentities", self.service_json()),
            ("NodeIdentities", self.node_json()),
            ("TemplatedPolicies", self.templated_json()),
        ]
    }

    /// Sets all three kinds, empty when not given (for `-no-merge` updates).
    pub fn replace_all(&self, obj: &mut Map<String, Value>) {
        for (k, v) in self.lists() {
            obj.insert(k.into(), Value::Array(v));
        }
    }
}

/// Which identity kinds an update merges into the existing ones instead of replacing them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Merge {
    pub services: bool,
    pub nodes: bool,
    pub templated: bool,
}

impl Merge {
    pub const ALL: Merge = Merge {
        services: true,
        nodes: true,
        templated: true,
    };
}

fn service_identity_json(s: &ServiceIdentity) -> Value {
    let mut m = Map::new();
    m.insert("ServiceName".into(), json!(s.service_name));
    if !s.datacenters.is_empty() {
        m.insert("Datacenters".into(), json!(s.datacenters));
    }
    Value::Object(m)
}

/// `name` -> `Name`: a templated-policy variable's key in the API, or a noun starting a sentence.
pub fn capitalized(k: &str) -> String {
    let mut c = k.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// `[{"ID": id}..., {"Name": name}...]`.
pub fn links(ids: &[String], names: &[String]) -> Vec<Value> {
    ids.iter()
        .map(|id| json!({ "ID": id }))
        .chain(names.iter().map(|n| json!({ "Name": n })))
        .collect()
}

/// Two links name the same object when a given ID or name matches.
pub fn same_link(a: &Value, b: &Value) -> bool {
    let eq = |k: &str| {
        matches!((a.get(k).and_then(Value::as_str), b.get(k).and_then(Value::as_str)),
            (Some(x), Some(y)) if !x.is_empty() && x == y)
    };
    eq("ID") || eq("Name")
}

fn same_field(key: &'static str) -> impl Fn(&Value, &Value) -> bool {
    move |a, b| a.get(key) == b.get(key)
}

fn same_fields(k1: &'static str, k2: &'static str) -> impl Fn(&Value, &Value) -> bool {
    move |a, b| a.get(k1) == b.get(k1) && a.get(k2) == b.get(k2)
}

fn same_templated(a: &Value, b: &Value) -> bool {
    a.get("TemplateName") == b.get("TemplateName")
        && a.get("TemplateVariables").map(lower_keys) == b.get("TemplateVariables").map(lower_keys)
}

fn lower_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Sets or merges (as [`set_list`]) the links under `key`; with none given, leaves them alone.
pub fn set_links(obj: &mut Map<String, Value>, key: &str, new: Vec<Value>, merge: bool) {
    if !new.is_empty() {
        set_list(obj, key, new, merge, same_link);
    }
}

/// Inserts each list that is not empty under its key; a create request leaves the others out.
pub fn insert_lists(
    obj: &mut Map<String, Value>,
    lists: impl IntoIterator<Item = (&'static str, Vec<Value>)>,
) {
    for (k, v) in lists {
        if !v.is_empty() {
            obj.insert(k.into(), Value::Array(v));
        }
    }
}

/// Empties `obj` but for `keys`, each as read or, missing, its fallback: a `-no-merge` update
/// starts again from what identifies the object.
pub fn keep_only(obj: &mut Map<String, Value>, keys: &[(&str, Value)]) {
    let kept: Vec<(String, Value)> = keys
        .iter()
        .map(|(k, fallback)| {
            let v = obj.get(*k).cloned().unwrap_or_else(|| fallback.clone());
            (k.to_string(), v)
        })
        .collect();
    obj.clear();
    obj.extend(kept);
}

/// Sets `obj[key]` to `new`, or (with `merge`) adds the items of `new` to the list there, an
/// item replacing the one it is `same` as.
pub fn set_list(
    obj: &mut Map<String, Value>,
    key: &str,
    new: Vec<Value>,
    merge: bool,
    same: impl Fn(&Value, &Value) -> bool,
) {
    if !merge {
        obj.insert(key.to_string(), Value::Array(new));
        return;
    }
    let mut list = match obj.remove(key) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    for item in new {
        match list.iter_mut().find(|old| same(old, &item)) {
            Some(old) => *old = item,
            None => list.push(item),
        }
    }
    obj.insert(key.to_string(), Value::Array(list));
}

/// `web` or `web:dc1,dc2`.
pub fn parse_service_identity(s: &str) -> Result<ServiceIdentity, String> {
    let (name, dcs) = match s.split_once(':') {
        Some((n, d)) => (n.trim(), Some(d)),
        None => (s.trim(), None),
    };
    if name.is_empty() {
        return Err(format!(
            "{s:?} has no service name (expected NAME or NAME:DC1,DC2)"
        ));
    }
    let datacenters: Vec<String> = dcs
        .into_iter()
        .flat_map(|d| d.split(','))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    if dcs.is_some() && datacenters.is_empty() {
        return Err(format!(
            "{s:?} names no datacenter after ':' (expected NAME or NAME:DC1,DC2)"
        ));
    }
    Ok(ServiceIdentity {
        service_name: name.to_string(),
        datacenters,
    })
}

/// `node:dc`.
pub fn parse_node_identity(s: &str) -> Result<NodeIdentity, String> {
    match s.split_once(':') {
        Some((n, d)) if !n.trim().is_empty() && !d.trim().is_empty() && !d.contains(':') => {
            Ok(NodeIdentity {
                node_name: n.trim().to_string(),
                datacenter: d.trim().to_string(),
            })
        }
        _ => Err(format!("{s:?} is not NODE:DATACENTER")),
    }
}

/// `name:web`: a templated-policy variable. Only `name` exists (as in Consul).
pub fn parse_var(s: &str) -> Result<(String, String), String> {
    let Some((k, v)) = s.split_once(':') else {
        return Err(format!("{s:?} is not VARIABLE:VALUE"));
    };
    let k = k.trim().to_ascii_lowercase();
    if k != "name" {
        return Err(format!(
            "unknown templated policy variable {k:?} (the only one is \"name\")"
        ));
    }
    if v.trim().is_empty() {
        return Err(format!("{s:?} has no value"));
    }
    Ok((k, v.trim().to_string()))
}

/// A Go duration such as `10m` or `1h30m`, kept as written once it parses.
pub fn parse_duration_arg(s: &str) -> Result<String, String> {
    berth_api::parse_duration(s)
        .map(|_| s.trim().to_string())
        .map_err(|e| e.to_string())
}

/// `@path` reads a file, `-` reads `stdin`, anything else is the value itself.
pub fn read_source(arg: &str, what: &str, stdin: &mut dyn Read) -> anyhow::Result<String> {
    if let Some(path) = arg.strip_prefix('@') {
        if path.is_empty() {
            bail!("-{what} @ names no file");
        }
        return std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the -{what} file {path}"));
    }
    if arg == "-" {
        let mut s = String::new();
        stdin
            .read_to_string(&mut s)
            .with_context(|| format!("cannot read -{what} from standard input"))?;
        return Ok(s);
    }
    Ok(arg.to_string())
}

/// The `-config` of an auth method: `@file`, `-` or literal JSON, which must be an object.
pub fn parse_config(arg: &str, stdin: &mut dyn Read) -> anyhow::Result<Value> {
    let text = read_source(arg, "config", stdin)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("-config is not valid JSON: {e}"))?;
    if !v.is_object() {
        bail!(
            "-config must be a JSON object, got {}",
            match v {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        );
    }
    Ok(v)
}

/// Inserts `key: value` when `value` is given.
pub fn set_opt(obj: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        obj.insert(key.to_string(), json!(v));
    }
}

/// The object inside `v`, or an error saying the server's answer was not one.
pub fn object(v: Value, what: &str) -> anyhow::Result<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => bail!("{what} not found"),
        other => bail!("unexpected answer from the server for {what}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_identities() {
        assert_eq!(
            parse_service_identity("web").unwrap(),
            ServiceIdentity {
                service_name: "web".into(),
                datacenters: vec![]
            }
        );
        assert_eq!(
            parse_service_identity("web:dc1,dc2").unwrap(),
            ServiceIdentity {
                service_name: "web".into(),
                datacenters: vec!["dc1".into(), "dc2".into()]
            }
        );
        assert!(parse_service_identity(":dc1").is_err());
        assert!(parse_service_identity("web:").is_err());
        assert_eq!(
            service_identity_json(&parse_service_identity("web").unwrap()),
            json!({"ServiceName": "web"})
        );
    }

    #[test]
    fn node_identities() {
        assert_eq!(
            parse_node_identity("n1:dc1").unwrap(),
            NodeIdentity {
                node_name: "n1".into(),
                datacenter: "dc1".into()
            }
        );
        for bad in ["n1", "n1:", ":dc1", "a:b:c"] {
            assert!(parse_node_identity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_variables() {
        assert_eq!(
            parse_var("name:web").unwrap(),
            ("name".into(), "web".into())
        );
        assert_eq!(
            parse_var("Name:web").unwrap(),
            ("name".into(), "web".into())
        );
        assert!(parse_var("name").is_err());
        assert!(parse_var("name:").is_err());
        assert!(parse_var("port:80").is_err());
        let ids = Identities {
            templated_policy: Some("builtin/service".into()),
            vars: vec![("name".into(), "web".into())],
            ..Default::default()
        };
        assert_eq!(
            ids.templated_json(),
            vec![json!({"TemplateName": "builtin/service", "TemplateVariables": {"Name": "web"}})]
        );
    }

    #[test]
    fn durations_are_checked_and_kept() {
        assert_eq!(parse_duration_arg("10m").unwrap(), "10m");
        assert!(parse_duration_arg("ten minutes").is_err());
    }

    #[test]
    fn sources_are_files_stdin_or_literals() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rules.hcl");
        std::fs::write(&f, "key_prefix \"\" { policy = \"read\" }").unwrap();
        let mut none: &[u8] = b"";
        assert_eq!(
            read_source(&format!("@{}", f.display()), "rules", &mut none).unwrap(),
            "key_prefix \"\" { policy = \"read\" }"
        );
        let mut stdin: &[u8] = b"from stdin";
        assert_eq!(read_source("-", "rules", &mut stdin).unwrap(), "from stdin");
        assert_eq!(
            read_source("literal", "rules", &mut none).unwrap(),
            "literal"
        );
        let missing = dir.path().join("missing.hcl");
        let e = read_source(&format!("@{}", missing.display()), "rules", &mut none).unwrap_err();
        assert!(format!("{e:#}").contains(&missing.display().to_string()));
    }

    #[test]
    fn configs_must_be_json_objects() {
        let mut none: &[u8] = b"";
        assert_eq!(
            parse_config(r#"{"JWKSURL": "https://x"}"#, &mut none).unwrap(),
            json!({"JWKSURL": "https://x"})
        );
        let e = parse_config("{not json", &mut none)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("-config is not valid JSON: "), "{e}");
        assert!(!e.contains('\n'));
        let e = parse_config("[1]", &mut none).unwrap_err().to_string();
        assert_eq!(e, "-config must be a JSON object, got an array");
    }

    #[test]
    fn lists_are_replaced_or_merged() {
        let mut obj = Map::new();
        obj.insert(
            "Policies".into(),
            json!([{"ID": "p1", "Name": "one"}, {"ID": "p2", "Name": "two"}]),
        );
        let mut merged = obj.clone();
        set_list(
            &mut merged,
            "Policies",
            links(&[], &["two".into(), "three".into()]),
            true,
            same_link,
        );
        assert_eq!(
            merged["Policies"],
            json!([{"ID": "p1", "Name": "one"}, {"Name": "two"}, {"Name": "three"}])
        );
        set_list(
            &mut obj,
            "Policies",
            links(&["p9".into()], &[]),
            false,
            same_link,
        );
        assert_eq!(obj["Policies"], json!([{"ID": "p9"}]));

        let ids = Identities {
            service: vec![parse_service_identity("web:dc2").unwrap()],
            ..Default::default()
        };
        let mut tok = Map::new();
        tok.insert(
            "ServiceIdentities".into(),
            json!([{"ServiceName": "web", "Datacenters": ["dc1"]}, {"ServiceName": "db"}]),
        );
        ids.apply(&mut tok, Merge::ALL);
        assert_eq!(
            tok["ServiceIdentities"],
            json!([{"ServiceName": "web", "Datacenters": ["dc2"]}, {"ServiceName": "db"}])
        );
        assert!(!tok.contains_key("NodeIdentities"));
    }
}
