//! `berth acl role ...`.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::Endpoint;
use super::flags::{Identities, Merge, PolicyLinks, insert_lists, keep_only, set_links, set_opt};
use crate::http::Api;
use crate::output::{self, OutputArgs};

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Create a role.
    Create(RoleCreate),
    /// Read a role by ID or name.
    Read(RoleRef),
    /// Change a role; what is given is added to the role unless -no-merge.
    Update(RoleUpdate),
    /// Delete a role by ID or name.
    Delete(RoleRef),
    /// List roles, optionally only those linked to a policy.
    List(RoleList),
}

#[derive(Args, Debug, Default)]
pub struct RoleCreate {
    /// The role's name.
    #[arg(long)]
    pub name: String,
    /// What the role is for.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub policies: PolicyLinks,
    #[command(flatten)]
    pub identities: Identities,
}

#[derive(Args, Debug)]
pub struct RoleRef {
    /// The role's ID.
    #[arg(long, required_unless_present = "name", conflicts_with = "name")]
    pub id: Option<String>,
    /// The role's name.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct RoleUpdate {
    /// The ID of the role to change.
    #[arg(long)]
    pub id: String,
    /// A new name.
    #[arg(long)]
    pub name: Option<String>,
    /// A new description.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub policies: PolicyLinks,
    #[command(flatten)]
    pub identities: Identities,
    /// Replace the whole role (except its ID) by what is given, instead of adding to it.
    #[arg(long = "no-merge", requires = "name")]
    pub no_merge: bool,
}

#[derive(Args, Debug, Default)]
pub struct RoleList {
    /// Only roles linked to this policy ID.
    #[arg(long, value_name = "POLICY_ID")]
    pub policy: Option<String>,
}

/// The body of `PUT /v1/acl/role`.
pub fn create_body(a: &RoleCreate) -> Value {
    let mut m = Map::new();
    m.insert("Name".into(), json!(a.name));
    set_opt(&mut m, "Description", a.description.as_deref());
    insert_lists(&mut m, [("Policies", a.policies.json())]);
    insert_lists(&mut m, a.identities.lists());
    Value::Object(m)
}

/// The role as read, with the update's changes: added to what it has (Consul's default), or
/// with `-no-merge` rebuilt from the flags alone.
pub fn apply_update(r: &mut Map<String, Value>, a: &RoleUpdate) {
    if a.no_merge {
        keep_only(r, &[("ID", json!(a.id))]);
        r.insert("Name".into(), json!(a.name.as_deref().unwrap_or_default()));
        r.insert(
            "Description".into(),
            json!(a.description.as_deref().unwrap_or_default()),
        );
        r.insert("Policies".into(), Value::Array(a.policies.json()));
        a.identities.replace_all(r);
        return;
    }
    set_opt(r, "Name", a.name.as_deref());
    set_opt(r, "Description", a.description.as_deref());
    set_links(r, "Policies", a.policies.json(), true);
    a.identities.apply(r, Merge::ALL);
}

const ROLE: Endpoint = Endpoint {
    path: "role",
    noun: "role",
};

pub async fn run(cmd: RoleCommand, api: &Api, out: &OutputArgs) -> anyhow::Result<()> {
    match cmd {
        RoleCommand::Create(a) => {
            let r = api
                .put(&["acl", "role"], Some(&create_body(&a)))
                .await
                .with_context(|| format!("cannot create role {:?}", a.name))?;
            out.print_one(&r, output::role)
        }
        RoleCommand::Read(r) => {
            let v = ROLE
                .read_by_id_or_name(api, r.id.as_deref(), r.name.as_deref())
                .await?;
            out.print_one(&v, output::role)
        }
        RoleCommand::Update(a) => {
            let r = ROLE
                .update(api, &a.id, |r| {
                    apply_update(r, &a);
                    Ok(())
                })
                .await?;
            out.print_one(&r, output::role)
        }
        RoleCommand::Delete(r) => {
            let id = ROLE.id_of(api, r.id.as_deref(), r.name.as_deref()).await?;
            ROLE.delete(api, &id).await
        }
        RoleCommand::List(a) => {
            let list = api
                .get(
                    &["acl", "roles"],
                    &[("policy", a.policy.as_deref().unwrap_or_default())],
                )
                .await
                .context("cannot list roles")?;
            out.print_list(&list, output::role)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::flags::parse_service_identity;
    use super::*;

    #[test]
    fn create_body() {
        let a = RoleCreate {
            name: "ops".into(),
            description: None,
            policies: PolicyLinks {
                policy_ids: vec![],
                policy_names: vec!["kv".into()],
            },
            identities: Identities {
                service: vec![parse_service_identity("web").unwrap()],
                ..Default::default()
            },
        };
        assert_eq!(
            super::create_body(&a),
            json!({"Name": "ops", "Policies": [{"Name": "kv"}], "ServiceIdentities": [{"ServiceName": "web"}]})
        );
    }

    #[test]
    fn updates_merge_unless_told_not_to() {
        let read = json!({"ID": "r1", "Name": "ops", "Description": "d", "Hash": "h",
            "Policies": [{"ID": "p1", "Name": "one"}]});
        let mut u = RoleUpdate {
            id: "r1".into(),
            policies: PolicyLinks {
                policy_ids: vec!["p2".into()],
                policy_names: vec![],
            },
            ..Default::default()
        };
        let mut r = read.as_object().unwrap().clone();
        apply_update(&mut r, &u);
        assert_eq!(
            r["Policies"],
            json!([{"ID": "p1", "Name": "one"}, {"ID": "p2"}])
        );
        assert_eq!(r["Description"], "d");

        u.no_merge = true;
        u.name = Some("ops2".into());
        let mut r = read.as_object().unwrap().clone();
        apply_update(&mut r, &u);
        assert_eq!(
            Value::Object(r),
            json!({"ID": "r1", "Name": "ops2", "Description": "", "Policies": [{"ID": "p2"}],
                "ServiceIdentities": [], "NodeIdentities": [], "TemplatedPolicies": []})
        );
    }
}
