//! `berth acl token ...`.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::Endpoint;
use super::flags::{
    Identities, Merge, PolicyLinks, RoleLinks, insert_lists, parse_duration_arg, set_links, set_opt,
};
use crate::http::Api;
use crate::output::{self, OutputArgs};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token.
    Create(TokenCreate),
    /// Read a token by AccessorID, or the token in use (-self).
    Read(TokenRead),
    /// Change a token's description, policies, roles or identities.
    Update(TokenUpdate),
    /// Delete a token.
    Delete(TokenId),
    /// List tokens, optionally only those linked to a policy, role, auth method or service.
    List(TokenList),
    /// Copy a token under a new AccessorID and SecretID.
    Clone(TokenClone),
}

#[derive(Args, Debug, Default)]
pub struct TokenCreate {
    /// What the token is for.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub policies: PolicyLinks,
    #[command(flatten)]
    pub roles: RoleLinks,
    #[command(flatten)]
    pub identities: Identities,
    /// The token expires this long after its creation (1m to 24h), e.g. 10m.
    #[arg(long = "expires-ttl", value_name = "DURATION", value_parser = parse_duration_arg)]
    pub expires_ttl: Option<String>,
    /// Valid only in this datacenter.
    #[arg(long)]
    pub local: bool,
    /// Use this AccessorID (a UUID) instead of a generated one.
    #[arg(long, value_name = "UUID")]
    pub accessor: Option<String>,
    /// Use this SecretID (a UUID) instead of a generated one.
    #[arg(long, value_name = "UUID")]
    pub secret: Option<String>,
}

#[derive(Args, Debug)]
pub struct TokenRead {
    /// The token's AccessorID.
    #[arg(
        long,
        value_name = "ACCESSOR_ID",
        required_unless_present = "myself",
        conflicts_with = "myself"
    )]
    pub id: Option<String>,
    /// Read the token the request is made with.
    #[arg(long = "self")]
    pub myself: bool,
}

#[derive(Args, Debug, Default)]
pub struct TokenUpdate {
    /// The token's AccessorID.
    #[arg(long, value_name = "ACCESSOR_ID")]
    pub id: String,
    /// A new description.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub policies: PolicyLinks,
    #[command(flatten)]
    pub roles: RoleLinks,
    #[command(flatten)]
    pub identities: Identities,
    /// Add the given policies to the token's instead of replacing them.
    #[arg(long = "merge-policies")]
    pub merge_policies: bool,
    /// Add the given roles to the token's instead of replacing them.
    #[arg(long = "merge-roles")]
    pub merge_roles: bool,
    /// Add the given service identities to the token's instead of replacing them.
    #[arg(long = "merge-service-identities")]
    pub merge_service_identities: bool,
    /// Add the given node identities to the token's instead of replacing them.
    #[arg(long = "merge-node-identities")]
    pub merge_node_identities: bool,
    /// Add the given templated policy to the token's instead of replacing them.
    #[arg(long = "merge-templated-policies")]
    pub merge_templated_policies: bool,
}

#[derive(Args, Debug)]
pub struct TokenId {
    /// The token's AccessorID.
    #[arg(long, value_name = "ACCESSOR_ID")]
    pub id: String,
}

#[derive(Args, Debug, Default)]
pub struct TokenList {
    /// Only tokens linked to this policy ID.
    #[arg(long, value_name = "POLICY_ID")]
    pub policy: Option<String>,
    /// Only tokens linked to this role ID.
    #[arg(long, value_name = "ROLE_ID")]
    pub role: Option<String>,
    /// Only tokens made by this auth method.
    #[arg(long, value_name = "NAME")]
    pub method: Option<String>,
    /// Only tokens with a service identity for this service.
    #[arg(long = "service-name", value_name = "NAME")]
    pub service_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct TokenClone {
    /// The AccessorID of the token to copy.
    #[arg(long, value_name = "ACCESSOR_ID")]
    pub id: String,
    /// The copy's description (default: the original's).
    #[arg(long)]
    pub description: Option<String>,
}

/// The body of `PUT /v1/acl/token`.
pub fn create_body(a: &TokenCreate) -> Value {
    let mut m = Map::new();
    set_opt(&mut m, "Description", a.description.as_deref());
    let links = [("Policies", a.policies.json()), ("Roles", a.roles.json())];
    insert_lists(&mut m, links);
    insert_lists(&mut m, a.identities.lists());
    set_opt(&mut m, "ExpirationTTL", a.expires_ttl.as_deref());
    if a.local {
        m.insert("Local".into(), json!(true));
    }
    set_opt(&mut m, "AccessorID", a.accessor.as_deref());
    set_opt(&mut m, "SecretID", a.secret.as_deref());
    Value::Object(m)
}

/// The token as read, with the update's changes.
pub fn apply_update(tok: &mut Map<String, Value>, a: &TokenUpdate) {
    set_opt(tok, "Description", a.description.as_deref());
    set_links(tok, "Policies", a.policies.json(), a.merge_policies);
    set_links(tok, "Roles", a.roles.json(), a.merge_roles);
    a.identities.apply(
        tok,
        Merge {
            services: a.merge_service_identities,
            nodes: a.merge_node_identities,
            templated: a.merge_templated_policies,
        },
    );
}

const TOKEN: Endpoint = Endpoint {
    path: "token",
    noun: "token",
};

pub async fn run(cmd: TokenCommand, api: &Api, out: &OutputArgs) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(a) => {
            let t = api
                .put(&["acl", "token"], Some(&create_body(&a)))
                .await
                .context("cannot create the token")?;
            out.print_one(&t, output::token)
        }
        TokenCommand::Read(a) => {
            let t = match &a.id {
                Some(id) => TOKEN.read(api, id).await?,
                None => api
                    .get(&["acl", "token", "self"], &[])
                    .await
                    .context("cannot read the token in use")?,
            };
            out.print_one(&t, output::token)
        }
        TokenCommand::Update(a) => {
            let t = TOKEN
                .update(api, &a.id, |tok| {
                    apply_update(tok, &a);
                    Ok(())
                })
                .await?;
            out.print_one(&t, output::token)
        }
        TokenCommand::Delete(a) => TOKEN.delete(api, &a.id).await,
        TokenCommand::List(a) => {
            let query = [
                ("policy", a.policy.as_deref().unwrap_or_default()),
                ("role", a.role.as_deref().unwrap_or_default()),
                ("authmethod", a.method.as_deref().unwrap_or_default()),
                ("servicename", a.service_name.as_deref().unwrap_or_default()),
            ];
            let list = api
                .get(&["acl", "tokens"], &query)
                .await
                .context("cannot list tokens")?;
            out.print_list(&list, output::token)
        }
        TokenCommand::Clone(a) => {
            let mut body = Map::new();
            set_opt(&mut body, "Description", a.description.as_deref());
            let t = api
                .put(
                    &["acl", "token", &a.id, "clone"],
                    Some(&Value::Object(body)),
                )
                .await
                .with_context(|| format!("cannot clone token {:?}", a.id))?;
            out.print_one(&t, output::token)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::flags::{parse_node_identity, parse_service_identity};
    use super::*;

    #[test]
    fn create_body_has_only_what_was_given() {
        assert_eq!(create_body(&TokenCreate::default()), json!({}));
        let a = TokenCreate {
            description: Some("web".into()),
            policies: PolicyLinks {
                policy_ids: vec!["p1".into()],
                policy_names: vec!["kv-read".into()],
            },
            roles: RoleLinks {
                role_ids: vec![],
                role_names: vec!["ops".into()],
            },
            identities: Identities {
                service: vec![parse_service_identity("web:dc1,dc2").unwrap()],
                node: vec![parse_node_identity("n1:dc1").unwrap()],
                templated_policy: Some("builtin/dns".into()),
                vars: vec![],
            },
            expires_ttl: Some("10m".into()),
            local: true,
            accessor: Some("a".into()),
            secret: Some("s".into()),
        };
        assert_eq!(
            create_body(&a),
            json!({
                "Description": "web",
                "Policies": [{"ID": "p1"}, {"Name": "kv-read"}],
                "Roles": [{"Name": "ops"}],
                "ServiceIdentities": [{"ServiceName": "web", "Datacenters": ["dc1", "dc2"]}],
                "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"}],
                "TemplatedPolicies": [{"TemplateName": "builtin/dns"}],
                "ExpirationTTL": "10m",
                "Local": true,
                "AccessorID": "a",
                "SecretID": "s",
            })
        );
    }

    #[test]
    fn updates_replace_or_merge_only_what_was_given() {
        let read = json!({
            "AccessorID": "a", "SecretID": "s", "Description": "old",
            "Policies": [{"ID": "p1", "Name": "one"}],
            "Roles": [{"ID": "r1", "Name": "ops"}],
        });
        let mut tok = read.as_object().unwrap().clone();
        apply_update(
            &mut tok,
            &TokenUpdate {
                id: "a".into(),
                description: Some("new".into()),
                ..Default::default()
            },
        );
        assert_eq!(tok["Description"], "new");
        assert_eq!(tok["Policies"], read["Policies"]);
        assert_eq!(tok["SecretID"], "s");

        let mut tok = read.as_object().unwrap().clone();
        let mut u = TokenUpdate {
            id: "a".into(),
            policies: PolicyLinks {
                policy_ids: vec!["p2".into()],
                policy_names: vec![],
            },
            ..Default::default()
        };
        apply_update(&mut tok, &u);
        assert_eq!(tok["Policies"], json!([{"ID": "p2"}]));
        assert_eq!(tok["Roles"], read["Roles"]);

        let mut tok = read.as_object().unwrap().clone();
        u.merge_policies = true;
        apply_update(&mut tok, &u);
        assert_eq!(
            tok["Policies"],
            json!([{"ID": "p1", "Name": "one"}, {"ID": "p2"}])
        );
    }
}
