//! `berth acl binding-rule ...`.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::Endpoint;
use super::flags::{keep_only, set_opt};
use crate::http::Api;
use crate::output::{self, OutputArgs};

const BIND_TYPES: [&str; 5] = ["service", "node", "role", "policy", "templated-policy"];

#[derive(Subcommand, Debug)]
pub enum RuleCommand {
    /// Create a binding rule.
    Create(RuleCreate),
    /// Read a binding rule.
    Read(RuleId),
    /// Change a binding rule; what is not given is kept unless -no-merge.
    Update(RuleUpdate),
    /// Delete a binding rule.
    Delete(RuleId),
    /// List binding rules, optionally of one auth method.
    List(RuleList),
}

#[derive(Args, Debug, Default)]
pub struct RuleCreate {
    /// The auth method the rule belongs to.
    #[arg(long)]
    pub method: String,
    /// What a matching login is bound to.
    #[arg(long = "bind-type", value_parser = BIND_TYPES)]
    pub bind_type: String,
    /// The name bound to; may use `${var}` from the login's claims, e.g. `${value.name}`.
    #[arg(long = "bind-name")]
    pub bind_name: String,
    /// A filter expression over the login's claims; empty matches every login.
    #[arg(long)]
    pub selector: Option<String>,
    /// What the rule is for.
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Args, Debug)]
pub struct RuleId {
    /// The rule's ID.
    #[arg(long)]
    pub id: String,
}

#[derive(Args, Debug, Default)]
pub struct RuleUpdate {
    /// The ID of the rule to change.
    #[arg(long)]
    pub id: String,
    /// A new bind type.
    #[arg(long = "bind-type", value_parser = BIND_TYPES)]
    pub bind_type: Option<String>,
    /// A new bind name.
    #[arg(long = "bind-name")]
    pub bind_name: Option<String>,
    /// A new selector.
    #[arg(long)]
    pub selector: Option<String>,
    /// A new description.
    #[arg(long)]
    pub description: Option<String>,
    /// Replace every field (except the ID and auth method) by what is given.
    #[arg(long = "no-merge", requires_all = ["bind_type", "bind_name"])]
    pub no_merge: bool,
}

#[derive(Args, Debug, Default)]
pub struct RuleList {
    /// Only the rules of this auth method.
    #[arg(long)]
    pub method: Option<String>,
}

/// The body of `PUT /v1/acl/binding-rule`.
pub fn create_body(a: &RuleCreate) -> Value {
    let mut m = Map::new();
    m.insert("AuthMethod".into(), json!(a.method));
    m.insert("BindType".into(), json!(a.bind_type));
    m.insert("BindName".into(), json!(a.bind_name));
    set_opt(&mut m, "Selector", a.selector.as_deref());
    set_opt(&mut m, "Description", a.description.as_deref());
    Value::Object(m)
}

/// The rule as read, with the update's changes.
pub fn apply_update(r: &mut Map<String, Value>, a: &RuleUpdate) {
    if a.no_merge {
        keep_only(r, &[("ID", json!(a.id)), ("AuthMethod", Value::Null)]);
    }
    set_opt(r, "BindType", a.bind_type.as_deref());
    set_opt(r, "BindName", a.bind_name.as_deref());
    set_opt(r, "Selector", a.selector.as_deref());
    set_opt(r, "Description", a.description.as_deref());
}

const BINDING_RULE: Endpoint = Endpoint {
    path: "binding-rule",
    noun: "binding rule",
};

pub async fn run(cmd: RuleCommand, api: &Api, out: &OutputArgs) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::Create(a) => {
            let r = api
                .put(&["acl", "binding-rule"], Some(&create_body(&a)))
                .await
                .with_context(|| {
                    format!(
                        "cannot create a binding rule for auth method {:?}",
                        a.method
                    )
                })?;
            out.print_one(&r, output::binding_rule)
        }
        RuleCommand::Read(a) => {
            let r = BINDING_RULE.read(api, &a.id).await?;
            out.print_one(&r, output::binding_rule)
        }
        RuleCommand::Update(a) => {
            let r = BINDING_RULE
                .update(api, &a.id, |r| {
                    apply_update(r, &a);
                    Ok(())
                })
                .await?;
            out.print_one(&r, output::binding_rule)
        }
        RuleCommand::Delete(a) => BINDING_RULE.delete(api, &a.id).await,
        RuleCommand::List(a) => {
            let list = api
                .get(
                    &["acl", "binding-rules"],
                    &[("authmethod", a.method.as_deref().unwrap_or_default())],
                )
                .await
                .context("cannot list binding rules")?;
            out.print_list(&list, output::binding_rule)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_and_updates() {
        let a = RuleCreate {
            method: "jwt".into(),
            bind_type: "service".into(),
            bind_name: "${value.service}".into(),
            selector: Some("value.env == prod".into()),
            description: None,
        };
        let body = create_body(&a);
        assert_eq!(
            body,
            json!({"AuthMethod": "jwt", "BindType": "service", "BindName": "${value.service}",
                "Selector": "value.env == prod"})
        );
        let mut r = body.as_object().unwrap().clone();
        r.insert("ID".into(), json!("b1"));
        let mut u = RuleUpdate {
            id: "b1".into(),
            bind_name: Some("web".into()),
            ..Default::default()
        };
        apply_update(&mut r, &u);
        assert_eq!(r["BindName"], "web");
        assert_eq!(r["Selector"], "value.env == prod");

        u.no_merge = true;
        u.bind_type = Some("node".into());
        apply_update(&mut r, &u);
        assert_eq!(
            Value::Object(r),
            json!({"ID": "b1", "AuthMethod": "jwt", "BindType": "node", "BindName": "web"})
        );
    }
}
