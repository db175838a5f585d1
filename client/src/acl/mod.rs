//! `berth acl ...`: bootstrap, tokens, policies, roles, auth methods and binding rules, over
//! the server's `/v1/acl` API.

mod auth_method;
mod binding_rule;
mod flags;
mod policy;
mod role;
mod token;

use anyhow::Context;
use clap::{Args, Subcommand};

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
