//! `berth acl policy ...`.

use std::io::Read;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::Endpoint;
use super::flags::{read_source, set_opt};
use crate::http::Api;
use crate::output::{self, OutputArgs};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Create a policy.
    Create(PolicyCreate),
    /// Read a policy by ID or name.
    Read(PolicyRef),
    /// Change a policy's name, description, rules or datacenters.
    Update(PolicyUpdate),
    /// Delete a policy by ID or name.
    Delete(PolicyRef),
    /// List policies.
    List,
}

#[derive(Args, Debug, Default)]
pub struct PolicyCreate {
    /// The policy's name.
    #[arg(long)]
    pub name: String,
    /// What the policy is for.
    #[arg(long)]
    pub description: Option<String>,
    /// The rules (HCL or JSON): `@FILE` reads a file, `-` standard input, anything else is the
    /// rules themselves.
    #[arg(long, value_name = "@FILE|-|RULES")]
    pub rules: Option<String>,
    /// A datacenter the policy is valid in (repeatable; default: all).
    #[arg(long = "valid-datacenter", value_name = "DC")]
    pub datacenters: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PolicyRef {
    /// The policy's ID.
    #[arg(long, required_unless_present = "name", conflicts_with = "name")]
    pub id: Option<String>,
    /// The policy's name.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct PolicyUpdate {
    /// The ID of the policy to change.
    #[arg(long)]
    pub id: String,
    /// A new name.
    #[arg(long)]
    pub name: Option<String>,
    /// A new description.
    #[arg(long)]
    pub description: Option<String>,
    /// New rules: `@FILE`, `-` (standard input) or the rules themselves.
    #[arg(long, value_name = "@FILE|-|RULES")]
    pub rules: Option<String>,
    /// The datacenters the policy is valid in, replacing the current ones (repeatable).
    #[arg(long = "valid-datacenter", value_name = "DC")]
    pub datacenters: Vec<String>,
}

/// The body of `PUT /v1/acl/policy`.
pub fn create_body(a: &PolicyCreate, stdin: &mut dyn Read) -> anyhow::Result<Value> {
    let mut m = Map::new();
    m.insert("Name".into(), json!(a.name));
    set_opt(&mut m, "Description", a.description.as_deref());
    let rules = match &a.rules {
        Some(r) => read_source(r, "rules", stdin)?,
        None => String::new(),
    };
    m.insert("Rules".into(), json!(rules));
    if !a.datacenters.is_empty() {
        m.insert("Datacenters".into(), json!(a.datacenters));
    }
    Ok(Value::Object(m))
}

/// The policy as read, with the update's changes.
pub fn apply_update(
    p: &mut Map<String, Value>,
    a: &PolicyUpdate,
    stdin: &mut dyn Read,
) -> anyhow::Result<()> {
    set_opt(p, "Name", a.name.as_deref());
    set_opt(p, "Description", a.description.as_deref());
    if let Some(r) = &a.rules {
        p.insert("Rules".into(), json!(read_source(r, "rules", stdin)?));
    }
    if !a.datacenters.is_empty() {
        p.insert("Datacenters".into(), json!(a.datacenters));
    }
    Ok(())
}

const POLICY: Endpoint = Endpoint {
    path: "policy",
    noun: "policy",
};

pub async fn run(cmd: PolicyCommand, api: &Api, out: &OutputArgs) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Create(a) => {
            let body = create_body(&a, &mut std::io::stdin())?;
            let p = api
                .put(&["acl", "policy"], Some(&body))
                .await
                .with_context(|| format!("cannot create policy {:?}", a.name))?;
            out.print_one(&p, output::policy)
        }
        PolicyCommand::Read(r) => {
            let p = POLICY
                .read_by_id_or_name(api, r.id.as_deref(), r.name.as_deref())
                .await?;
            out.print_one(&p, output::policy)
        }
        PolicyCommand::Update(a) => {
            let p = POLICY
                .update(api, &a.id, |p| apply_update(p, &a, &mut std::io::stdin()))
                .await?;
            out.print_one(&p, output::policy)
        }
        PolicyCommand::Delete(r) => {
            let id = POLICY
                .id_of(api, r.id.as_deref(), r.name.as_deref())
                .await?;
            POLICY.delete(api, &id).await
        }
        PolicyCommand::List => {
            let list = api
                .get(&["acl", "policies"], &[])
                .await
                .context("cannot list policies")?;
            out.print_list(&list, output::policy_entry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_reads_rules_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.hcl");
        std::fs::write(&f, "service \"web\" { policy = \"write\" }\n").unwrap();
        let a = PolicyCreate {
            name: "web".into(),
            description: Some("d".into()),
            rules: Some(format!("@{}", f.display())),
            datacenters: vec!["dc1".into()],
        };
        let mut none: &[u8] = b"";
        assert_eq!(
            create_body(&a, &mut none).unwrap(),
            json!({
                "Name": "web",
                "Description": "d",
                "Rules": "service \"web\" { policy = \"write\" }\n",
                "Datacenters": ["dc1"],
            })
        );
    }

    #[test]
    fn updates_change_only_what_was_given() {
        let mut p = json!({"ID": "p1", "Name": "a", "Description": "d", "Rules": "r"})
            .as_object()
            .unwrap()
            .clone();
        let mut stdin: &[u8] = b"new rules";
        apply_update(
            &mut p,
            &PolicyUpdate {
                id: "p1".into(),
                rules: Some("-".into()),
                ..Default::default()
            },
            &mut stdin,
        )
        .unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"ID": "p1", "Name": "a", "Description": "d", "Rules": "new rules"})
        );
    }
}
