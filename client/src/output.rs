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
            Format::Pretty => Ok(pretty(&decode(v)?, self.show_meta)),
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
                let items: Vec<T> = if v.is_null() { Vec::new() } else { decode(v)? };
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

fn decode<T: DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    serde_json::from_value(v.clone()).context("unexpected answer from the server")
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

/// What `-meta` adds: the content hash, where the object has one, and the Raft indexes.
fn meta_lines(out: &mut String, width: usize, hash: Option<&str>, create: u64, modify: u64) {
    if let Some(h) = hash {
        line(out, "Hash", width, h);
    }
    line(out, "Create Index", width, create);
    line(out, "Modify Index", width, modify);
}

/// `title:` and the items' lines below it; nothing at all when there are no items.
fn section<T>(out: &mut String, title: &str, items: &[T], item: impl Fn(&mut String, &T)) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for i in items {
        item(out, i);
    }
}

fn links(out: &mut String, title: &str, links: &[Link]) {
    section(out, title, links, |o, l| {
        let _ = writeln!(o, "   {} - {}", l.id, l.name);
    });
}

/// An empty list of datacenters means all of them.
fn datacenters(dcs: &[String]) -> String {
    if dcs.is_empty() {
        "all".to_string()
    } else {
        dcs.join(", ")
    }
}

fn identities(
    out: &mut String,
    services: &[ServiceIdentity],
    nodes: &[NodeIdentity],
    templated: &[TemplatedPolicy],
) {
    section(out, "Service Identities", services, |o, s| {
        let dcs = datacenters(&s.datacenters);
        let _ = writeln!(o, "   {} (Datacenters: {dcs})", s.service_name);
    });
    section(out, "Node Identities", nodes, |o, n| {
        let _ = writeln!(o, "   {} (Datacenter: {})", n.node_name, n.datacenter);
    });
    section(out, "Templated Policies", templated, templated_policy);
}

fn templated_policy(out: &mut String, t: &TemplatedPolicy) {
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
    let _ = writeln!(out, "      Datacenters: {}", datacenters(&t.datacenters));
}

/// `title:` and `text` below it as it is, not indented, ending in a newline.
fn block(out: &mut String, title: &str, text: &str) {
    let _ = writeln!(out, "{title}:");
    out.push_str(text);
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

/// An object in a list, as Consul prints one: its name, then its fields indented.
fn entry(name: &str, fields: &str) -> String {
    let mut s = format!("{name}:\n");
    for l in fields.lines() {
        let _ = writeln!(s, "   {l}");
    }
    s
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
        meta_lines(&mut s, W, Some(&t.hash), t.create_index, t.modify_index);
    }
    links(&mut s, "Policies", &t.policies);
    links(&mut s, "Roles", &t.roles);
    identities(
        &mut s,
        &t.service_identities,
        &t.node_identities,
        &t.templated_policies,
    );
    s
}

/// A policy's fields but its rules: all of them (`full`), or those a list shows under the name.
fn policy_fields(p: &Policy, meta: bool, full: bool) -> String {
    const W: usize = 14;
    let mut s = String::new();
    line(&mut s, "ID", W, &p.id);
    if full {
        line(&mut s, "Name", W, &p.name);
    }
    line(&mut s, "Description", W, &p.description);
    line(&mut s, "Datacenters", W, p.datacenters.join(", "));
    if meta {
        meta_lines(&mut s, W, Some(&p.hash), p.create_index, p.modify_index);
    }
    s
}

pub fn policy(p: &Policy, meta: bool) -> String {
    let mut s = policy_fields(p, meta, true);
    block(&mut s, "Rules", &p.rules);
    s
}

/// A policy in a list: without the rules (as Consul).
pub fn policy_entry(p: &Policy, meta: bool) -> String {
    entry(&p.name, &policy_fields(p, meta, false))
}

pub fn role(r: &Role, meta: bool) -> String {
    const W: usize = 14;
    let mut s = String::new();
    line(&mut s, "ID", W, &r.id);
    line(&mut s, "Name", W, &r.name);
    line(&mut s, "Description", W, &r.description);
    if meta {
        meta_lines(&mut s, W, Some(&r.hash), r.create_index, r.modify_index);
    }
    links(&mut s, "Policies", &r.policies);
    identities(
        &mut s,
        &r.service_identities,
        &r.node_identities,
        &r.templated_policies,
    );
    s
}

/// An auth method's fields but its config: all of them (`full`), or those a list shows under
/// the name.
fn auth_method_fields(m: &AuthMethod, meta: bool, full: bool) -> String {
    const W: usize = 16;
    let mut s = String::new();
    if full {
        line(&mut s, "Name", W, &m.name);
    }
    line(&mut s, "Type", W, &m.kind);
    line(&mut s, "Display Name", W, &m.display_name);
    line(&mut s, "Description", W, &m.description);
    if full && !m.max_token_ttl.is_empty() {
        line(&mut s, "Max Token TTL", W, &m.max_token_ttl);
    }
    if full && !m.token_locality.is_empty() {
        line(&mut s, "Token Locality", W, &m.token_locality);
    }
    if meta {
        meta_lines(&mut s, W, None, m.create_index, m.modify_index);
    }
    s
}

pub fn auth_method(m: &AuthMethod, meta: bool) -> String {
    let mut s = auth_method_fields(m, meta, true);
    let config = serde_json::to_string_pretty(&m.config).unwrap_or_else(|_| m.config.to_string());
    block(&mut s, "Config", &config);
    s
}

/// An auth method in a list: without the config.
pub fn auth_method_entry(m: &AuthMethod, meta: bool) -> String {
    entry(&m.name, &auth_method_fields(m, meta, false))
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
        meta_lines(&mut s, W, None, r.create_index, r.modify_index);
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
