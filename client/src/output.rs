//! What the commands print: Consul's "Key:   value" layout (`-format pretty`), or the server's
//! JSON, indented (`-format json`).

use std::fmt::Write as _;

use anyhow::Context;
use berth_api::acl::{AuthMethod, BindingRule, Link, NodeIdentity, Policy, Role, ServiceIdentity};
use berth_api::acl::{TemplatedPolicy, Token};
use clap::{Args, ValueEnum};
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// "Key:   value" lines, as Consul prints them.
    #[default]
    Pretty,
    /// The server's JSON, indented.
    Json,
}

#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, global = true, help_heading = "Output Options", value_enum, default_value_t = Format::Pretty)]
    pub format: Format,

    /// Also show content hashes and Raft indexes (pretty format).
    #[arg(long = "meta", global = true, help_heading = "Output Options")]
    pub show_meta: bool,
}

impl OutputArgs {
    /// The text for one object of the server's answer.
    pub fn one<T: DeserializeOwned>(
        &self,
        v: &Value,
        pretty: fn(&T, bool) -> String,
    ) -> anyhow::Result<String> {
        match self.format {
            Format::Json => json(v),
            Format::Pretty => {
                let t: T = serde_json::from_value(v.clone())
                    .context("unexpected answer from the server")?;
                Ok(pretty(&t, self.show_meta))
            }
        }
    }

    /// The text for a list: entries separated by a blank line.
    pub fn list<T: DeserializeOwned>(
        &self,
        v: &Value,
        pretty: fn(&T, bool) -> String,
    ) -> anyhow::Result<String> {
        match self.format {
            Format::Json => json(v),
            Format::Pretty => {
                let items: Vec<T> = if v.is_null() {
                    Vec::new()
                } else {
                    serde_json::from_value(v.clone())
                        .context("unexpected answer from the server")?
                };
                Ok(items
                    .iter()
                    .map(|t| pretty(t, self.show_meta))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
    }

    pub fn print_one<T: DeserializeOwned>(
        &self,
        v: &Value,
        pretty: fn(&T, bool) -> String,
    ) -> anyhow::Result<()> {
        emit(&self.one(v, pretty)?);
        Ok(())
    }

    pub fn print_list<T: DeserializeOwned>(
        &self,
        v: &Value,
        pretty: fn(&T, bool) -> String,
    ) -> anyhow::Result<()> {
        emit(&self.list(v, pretty)?);
        Ok(())
    }
}

/// Prints `text` with exactly one newline at its end (nothing for empty text).
pub fn emit(text: &str) {
    let text = text.trim_end_matches('\n');
    if !text.is_empty() {
        println!("{text}");
    }
}

pub fn json(v: &Value) -> anyhow::Result<String> {
    serde_json::to_string_pretty(v).context("cannot format JSON")
}

fn line(out: &mut String, key: &str, width: usize, value: impl std::fmt::Display) {
    let label = format!("{key}:");
    let _ = writeln!(out, "{label:<width$}{value}");
}

fn links(out: &mut String, title: &str, links: &[Link]) {
    if links.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for l in links {
        let _ = writeln!(out, "   {} - {}", l.id, l.name);
    }
}

fn service_identities(out: &mut String, ids: &[ServiceIdentity]) {
    if ids.is_empty() {
        return;
    }
    out.push_str("Service Identities:\n");
    for s in ids {
        let dcs = if s.datacenters.is_empty() {
            "all".to_string()
        } else {
            s.datacenters.join(", ")
        };
        let _ = writeln!(out, "   {} (Datacenters: {dcs})", s.service_name);
    }
}

fn node_identities(out: &mut String, ids: &[NodeIdentity]) {
    if ids.is_empty() {
        return;
    }
    out.push_str("Node Identities:\n");
    for n in ids {
        let _ = writeln!(out, "   {} (Datacenter: {})", n.node_name, n.datacenter);
    }
}

fn templated_policies(out: &mut String, list: &[TemplatedPolicy]) {
    if list.is_empty() {
        return;
    }
    out.push_str("Templated Policies:\n");
    for t in list {
        let _ = writeln!(out, "   {}", t.template_name);
        let name = t
            .template_variables
            .as_ref()
            .and_then(Value::as_object)
            .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("name")))
            .and_then(|(_, v)| v.as_str());
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let _ = writeln!(out, "      Name: {name}");
        }
        let dcs = if t.datacenters.is_empty() {
            "all".to_string()
        } else {
            t.datacenters.join(", ")
        };
        let _ = writeln!(out, "      Datacenters: {dcs}");
    }
}

pub fn token(t: &Token, meta: bool) -> String {
    const W: usize = 18;
    let mut s = String::new();
    line(&mut s, "AccessorID", W, &t.accessor_id);
    line(&mut s, "SecretID", W, &t.secret_id);
    line(&mut s, "Description", W, &t.description);
    line(&mut s, "Local", W, t.local);
    if !t.auth_method.is_empty() {
        line(&mut s, "Auth Method", W, &t.auth_method);
    }
    line(&mut s, "Create Time", W, &t.create_time);
    if let Some(exp) = t.expiration_time.as_deref().filter(|e| !e.is_empty()) {
        line(&mut s, "Expiration Time", W, exp);
    }
    if meta {
        line(&mut s, "Hash", W, &t.hash);
        line(&mut s, "Create Index", W, t.create_index);
        line(&mut s, "Modify Index", W, t.modify_index);
    }
    links(&mut s, "Policies", &t.policies);
    links(&mut s, "Roles", &t.roles);
    service_identities(&mut s, &t.service_identities);
    node_identities(&mut s, &t.node_identities);
    templated_policies(&mut s, &t.templated_policies);
    s
}

pub fn policy(p: &Policy, meta: bool) -> String {
    const W: usize = 14;
    let mut s = String::new();
    line(&mut s, "ID", W, &p.id);
    line(&mut s, "Name", W, &p.name);
    line(&mut s, "Description", W, &p.description);
    line(&mut s, "Datacenters", W, p.datacenters.join(", "));
    if meta {
        line(&mut s, "Hash", W, &p.hash);
        line(&mut s, "Create Index", W, p.create_index);
        line(&mut s, "Modify Index", W, p.modify_index);
    }
    s.push_str("Rules:\n");
    s.push_str(&p.rules);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A policy in a list: its name, then its fields indented, without the rules (as Consul).
pub fn policy_entry(p: &Policy, meta: bool) -> String {
    const W: usize = 14;
    let mut s = format!("{}:\n", p.name);
    let mut body = String::new();
    line(&mut body, "ID", W, &p.id);
    line(&mut body, "Description", W, &p.description);
    line(&mut body, "Datacenters", W, p.datacenters.join(", "));
    if meta {
        line(&mut body, "Hash", W, &p.hash);
        line(&mut body, "Create Index", W, p.create_index);
        line(&mut body, "Modify Index", W, p.modify_index);
    }
    for l in body.lines() {
        let _ = writeln!(s, "   {l}");
    }
    s
}

pub fn role(r: &Role, meta: bool) -> String {
    const W: usize = 14;
    let mut s = String::new();
    line(&mut s, "ID", W, &r.id);
    line(&mut s, "Name", W, &r.name);
    line(&mut s, "Description", W, &r.description);
    if meta {
        line(&mut s, "Hash", W, &r.hash);
        line(&mut s, "Create Index", W, r.create_index);
        line(&mut s, "Modify Index", W, r.modify_index);
    }
    links(&mut s, "Policies", &r.policies);
    service_identities(&mut s, &r.service_identities);
    node_identities(&mut s, &r.node_identities);
    templated_policies(&mut s, &r.templated_policies);
    s
}

pub fn auth_method(m: &AuthMethod, meta: bool) -> String {
    const W: usize = 16;
    let mut s = String::new();
    line(&mut s, "Name", W, &m.name);
    line(&mut s, "Type", W, &m.kind);
    line(&mut s, "Display Name", W, &m.display_name);
    line(&mut s, "Description", W, &m.description);
    if !m.max_token_ttl.is_empty() {
        line(&mut s, "Max Token TTL", W, &m.max_token_ttl);
    }
    if !m.token_locality.is_empty() {
        line(&mut s, "Token Locality", W, &m.token_locality);
    }
    if meta {
        line(&mut s, "Create Index", W, m.create_index);
        line(&mut s, "Modify Index", W, m.modify_index);
    }
    s.push_str("Config:\n");
    let config = serde_json::to_string_pretty(&m.config).unwrap_or_else(|_| m.config.to_string());
    s.push_str(&config);
    s.push('\n');
    s
}

/// An auth method in a list: its name, then its fields indented, without the config.
pub fn auth_method_entry(m: &AuthMethod, meta: bool) -> String {
    const W: usize = 16;
    let mut s = format!("{}:\n", m.name);
    let mut body = String::new();
    line(&mut body, "Type", W, &m.kind);
    line(&mut body, "Display Name", W, &m.display_name);
    line(&mut body, "Description", W, &m.description);
    if meta {
        line(&mut body, "Create Index", W, m.create_index);
        line(&mut body, "Modify Index", W, m.modify_index);
    }
    for l in body.lines() {
        let _ = writeln!(s, "   {l}");
    }
    s
}

pub fn binding_rule(r: &BindingRule, meta: bool) -> String {
    const W: usize = 14;
    let mut s = String::new();
    line(&mut s, "ID", W, &r.id);
    line(&mut s, "AuthMethod", W, &r.auth_method);
    line(&mut s, "Description", W, &r.description);
    line(&mut s, "BindType", W, &r.bind_type);
    line(&mut s, "BindName", W, &r.bind_name);
    line(&mut s, "Selector", W, &r.selector);
    if meta {
        line(&mut s, "Create Index", W, r.create_index);
        line(&mut s, "Modify Index", W, r.modify_index);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_print_like_consul() {
        let t: Token = serde_json::from_value(json!({
            "AccessorID": "a1",
            "SecretID": "s1",
            "Description": "web token",
            "Local": false,
            "CreateTime": "2025-01-02T03:04:05Z",
            "Policies": [{"ID": "p1", "Name": "web-policy"}],
            "ServiceIdentities": [{"ServiceName": "web", "Datacenters": ["dc1", "dc2"]}, {"ServiceName": "db"}],
            "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"}],
            "AuthMethod": "jwt",
        }))
        .unwrap();
        let text = token(&t, false);
        assert_eq!(
            text,
            "AccessorID:       a1\n\
             SecretID:         s1\n\
             Description:      web token\n\
             Local:            false\n\
             Auth Method:      jwt\n\
             Create Time:      2025-01-02T03:04:05Z\n\
             Policies:\n   p1 - web-policy\n\
             Service Identities:\n   web (Datacenters: dc1, dc2)\n   db (Datacenters: all)\n\
             Node Identities:\n   n1 (Datacenter: dc1)\n"
        );
        assert!(token(&t, true).contains("Create Index:     0\n"));
    }

    #[test]
    fn policies_show_rules_and_lists_leave_them_out() {
        let p = Policy {
            id: "p1".into(),
            name: "kv".into(),
            rules: "key_prefix \"\" { policy = \"read\" }".into(),
            datacenters: vec!["dc1".into()],
            ..Default::default()
        };
        let full = policy(&p, false);
        assert!(
            full.starts_with("ID:           p1\nName:         kv\n"),
            "{full}"
        );
        assert!(full.ends_with("Rules:\nkey_prefix \"\" { policy = \"read\" }\n"));
        assert_eq!(
            policy_entry(&p, false),
            "kv:\n   ID:           p1\n   Description:  \n   Datacenters:  dc1\n"
        );
    }

    #[test]
    fn json_format_is_the_servers_json() {
        let out = OutputArgs {
            format: Format::Json,
            show_meta: false,
        };
        let v = json!({"ID": "x", "Unknown": 1});
        assert_eq!(out.one::<Policy>(&v, policy).unwrap(), json(&v).unwrap());
        let pretty = OutputArgs::default();
        assert_eq!(pretty.list::<Policy>(&Value::Null, policy).unwrap(), "");
    }
}
