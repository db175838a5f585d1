//! `berth acl ...`: bootstrap, tokens, policies, roles, auth methods and binding rules, over
//! the server's `/v1/acl` API.

mod auth_method;
mod binding_rule;
mod flags;
mod policy;
mod role;
mod token;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::http::{Api, HttpArgs};
use crate::output::{self, OutputArgs};

#[derive(Args, Debug)]
pub struct AclArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(subcommand)]
    pub command: AclCommand,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Create the initial management token (once per cluster).
    Bootstrap,
    /// Create, read, update, delete, list and clone tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Create, read, update, delete and list policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Create, read, update, delete and list roles.
    #[command(subcommand)]
    Role(role::RoleCommand),
    /// Create, read, update, delete and list auth methods.
    #[command(subcommand)]
    AuthMethod(auth_method::MethodCommand),
    /// Create, read, update, delete and list binding rules.
    #[command(subcommand)]
    BindingRule(binding_rule::RuleCommand),
}

pub async fn run(args: AclArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.http)?;
    let out = &args.out;
    match args.command {
        AclCommand::Bootstrap => {
            let t = api
                .put(&["acl", "bootstrap"], None)
                .await
                .context("cannot bootstrap ACLs")?;
            out.print_one(&t, output::token)
        }
        AclCommand::Token(c) => token::run(c, &api, out).await,
        AclCommand::Policy(c) => policy::run(c, &api, out).await,
        AclCommand::Role(c) => role::run(c, &api, out).await,
        AclCommand::AuthMethod(c) => auth_method::run(c, &api, out).await,
        AclCommand::BindingRule(c) => binding_rule::run(c, &api, out).await,
    }
}

/// One kind of ACL object: `/v1/acl/<path>/<key>` in the API, `noun` in messages. Reading,
/// updating and deleting work the same way for every kind.
struct Endpoint {
    path: &'static str,
    noun: &'static str,
}

impl Endpoint {
    async fn read(&self, api: &Api, key: &str) -> anyhow::Result<Value> {
        self.read_at(api, &["acl", self.path, key], key).await
    }

    /// By `-id`, else by `-name` (policies and roles have both).
    async fn read_by_id_or_name(
        &self,
        api: &Api,
        id: Option<&str>,
        name: Option<&str>,
    ) -> anyhow::Result<Value> {
        match (id, name) {
            (Some(id), _) => self.read(api, id).await,
            (None, Some(name)) => {
                self.read_at(api, &["acl", self.path, "name", name], name)
                    .await
            }
            (None, None) => bail!("give -id or -name"),
        }
    }

    async fn read_at(&self, api: &Api, segments: &[&str], key: &str) -> anyhow::Result<Value> {
        api.get(segments, &[])
            .await
            .with_context(|| format!("cannot read {} {key:?}", self.noun))
    }

    /// `-id` as given, else the ID of the object `-name` names.
    async fn id_of(
        &self,
        api: &Api,
        id: Option<&str>,
        name: Option<&str>,
    ) -> anyhow::Result<String> {
        if let Some(id) = id {
            return Ok(id.to_string());
        }
        let what = format!("{} {:?}", self.noun, name.unwrap_or_default());
        let obj = flags::object(self.read_by_id_or_name(api, None, name).await?, &what)?;
        let id = obj
            .get("ID")
            .and_then(Value::as_str)
            .with_context(|| format!("the server's {what} has no ID"))?;
        Ok(id.to_string())
    }

    /// Reads the object, lets `change` edit it and writes it back: the API replaces the whole
    /// object, so what `change` leaves alone must be sent as read.
    async fn update(
        &self,
        api: &Api,
        key: &str,
        change: impl FnOnce(&mut Map<String, Value>) -> anyhow::Result<()>,
    ) -> anyhow::Result<Value> {
        let what = format!("{} {key:?}", self.noun);
        let mut obj = flags::object(self.read(api, key).await?, &what)?;
        change(&mut obj)?;
        api.put(&["acl", self.path, key], Some(&Value::Object(obj)))
            .await
            .with_context(|| format!("cannot update {what}"))
    }

    async fn delete(&self, api: &Api, key: &str) -> anyhow::Result<()> {
        api.delete(&["acl", self.path, key])
            .await
            .with_context(|| format!("cannot delete {} {key:?}", self.noun))?;
        let noun = flags::capitalized(self.noun);
        output::emit(&format!("{noun} {key:?} deleted successfully"));
        Ok(())
    }
}
