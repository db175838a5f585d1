//! `berth acl auth-method ...`.

use std::io::Read;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::Endpoint;
use super::flags::{keep_only, parse_config, parse_duration_arg, set_opt};
use crate::http::Api;
use crate::output::{self, OutputArgs};

const TYPES: [&str; 2] = ["aws-iam", "jwt"];
const LOCALITIES: [&str; 2] = ["local", "global"];

#[derive(Subcommand, Debug)]
pub enum MethodCommand {
    /// Create an auth method.
    Create(MethodCreate),
    /// Read an auth method.
    Read(MethodName),
    /// Change an auth method; what is not given is kept unless -no-merge.
    Update(MethodUpdate),
    /// Delete an auth method (and the tokens and binding rules it made).
    Delete(MethodName),
    /// List auth methods.
    List,
}

#[derive(Args, Debug, Default)]
pub struct MethodCreate {
    /// The method's type.
    #[arg(long = "type", value_parser = TYPES)]
    pub kind: String,
    /// The method's name.
    #[arg(long)]
    pub name: String,
    /// A name to show users.
    #[arg(long = "display-name")]
    pub display_name: Option<String>,
    /// What the method is for.
    #[arg(long)]
    pub description: Option<String>,
    /// How long the tokens it makes live (1m to 24h), e.g. 15m.
    #[arg(long = "max-token-ttl", value_name = "DURATION", value_parser = parse_duration_arg)]
    pub max_token_ttl: Option<String>,
    /// Whether its tokens are local to this datacenter or global.
    #[arg(long = "token-locality", value_parser = LOCALITIES)]
    pub token_locality: Option<String>,
    /// The type's configuration, a JSON object: `@FILE`, `-` (standard input) or the JSON.
    #[arg(long, value_name = "@FILE|-|JSON")]
    pub config: String,
}

#[derive(Args, Debug)]
pub struct MethodName {
    /// The method's name.
    #[arg(long)]
    pub name: String,
}

#[derive(Args, Debug, Default)]
pub struct MethodUpdate {
    /// The name of the method to change.
    #[arg(long)]
    pub name: String,
    /// A new display name.
    #[arg(long = "display-name")]
    pub display_name: Option<String>,
    /// A new description.
    #[arg(long)]
    pub description: Option<String>,
    /// A new maximum token TTL.
    #[arg(long = "max-token-ttl", value_name = "DURATION", value_parser = parse_duration_arg)]
    pub max_token_ttl: Option<String>,
    /// A new token locality.
    #[arg(long = "token-locality", value_parser = LOCALITIES)]
    pub token_locality: Option<String>,
    /// A new configuration (replacing the whole of it): `@FILE`, `-` or the JSON.
    #[arg(long, value_name = "@FILE|-|JSON")]
    pub config: Option<String>,
    /// Replace every field (except the name and type) by what is given.
    #[arg(long = "no-merge", requires = "config")]
    pub no_merge: bool,
}

/// The body of `PUT /v1/acl/auth-method`; fails, before anything is sent, on a bad config.
pub fn create_body(a: &MethodCreate, stdin: &mut dyn Read) -> anyhow::Result<Value> {
    let config = parse_config(&a.config, stdin)?;
    let mut m = Map::new();
    m.insert("Name".into(), json!(a.name));
    m.insert("Type".into(), json!(a.kind));
    set_opt(&mut m, "DisplayName", a.display_name.as_deref());
    set_opt(&mut m, "Description", a.description.as_deref());
    set_opt(&mut m, "MaxTokenTTL", a.max_token_ttl.as_deref());
    set_opt(&mut m, "TokenLocality", a.token_locality.as_deref());
    m.insert("Config".into(), config);
    Ok(Value::Object(m))
}

/// The method as read, with the update's changes.
pub fn apply_update(
    m: &mut Map<String, Value>,
    a: &MethodUpdate,
    stdin: &mut dyn Read,
) -> anyhow::Result<()> {
    let config = a
        .config
        .as_deref()
        .map(|c| parse_config(c, stdin))
        .transpose()?;
    if a.no_merge {
        keep_only(m, &[("Name", json!(a.name)), ("Type", Value::Null)]);
    }
    set_opt(m, "DisplayName", a.display_name.as_deref());
    set_opt(m, "Description", a.description.as_deref());
    set_opt(m, "MaxTokenTTL", a.max_token_ttl.as_deref());
    set_opt(m, "TokenLocality", a.token_locality.as_deref());
    if let Some(c) = config {
        m.insert("Config".into(), c);
    }
    Ok(())
}

const AUTH_METHOD: Endpoint = Endpoint {
    path: "auth-method",
    noun: "auth method",
};

pub async fn run(cmd: MethodCommand, api: &Api, out: &OutputArgs) -> anyhow::Result<()> {
    match cmd {
        MethodCommand::Create(a) => {
            let body = create_body(&a, &mut std::io::stdin())?;
            let m = api
                .put(&["acl", "auth-method"], Some(&body))
                .await
                .with_context(|| format!("cannot create auth method {:?}", a.name))?;
            out.print_one(&m, output::auth_method)
        }
        MethodCommand::Read(a) => {
            let m = AUTH_METHOD.read(api, &a.name).await?;
            out.print_one(&m, output::auth_method)
        }
        MethodCommand::Update(a) => {
            let m = AUTH_METHOD
                .update(api, &a.name, |m| apply_update(m, &a, &mut std::io::stdin()))
                .await?;
            out.print_one(&m, output::auth_method)
        }
        MethodCommand::Delete(a) => AUTH_METHOD.delete(api, &a.name).await,
        MethodCommand::List => {
            let list = api
                .get(&["acl", "auth-methods"], &[])
                .await
                .context("cannot list auth methods")?;
            out.print_list(&list, output::auth_method_entry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(config: &str) -> MethodCreate {
        MethodCreate {
            kind: "jwt".into(),
            name: "jwt".into(),
            max_token_ttl: Some("10m".into()),
            token_locality: Some("global".into()),
            config: config.into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_body_parses_the_config() {
        let mut none: &[u8] = b"";
        assert_eq!(
            create_body(&create(r#"{"JWKSURL": "https://idp/jwks"}"#), &mut none).unwrap(),
            json!({
                "Name": "jwt", "Type": "jwt", "MaxTokenTTL": "10m", "TokenLocality": "global",
                "Config": {"JWKSURL": "https://idp/jwks"},
            })
        );
        let e = create_body(&create("{\"JWKSURL\": "), &mut none).unwrap_err();
        assert!(
            e.to_string().starts_with("-config is not valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn updates_keep_or_replace() {
        let read = json!({"Name": "jwt", "Type": "jwt", "Description": "d", "DisplayName": "J",
            "Config": {"JWKSURL": "a"}});
        let mut u = MethodUpdate {
            name: "jwt".into(),
            display_name: Some("New".into()),
            ..Default::default()
        };
        let mut none: &[u8] = b"";
        let mut m = read.as_object().unwrap().clone();
        apply_update(&mut m, &u, &mut none).unwrap();
        assert_eq!(m["DisplayName"], "New");
        assert_eq!(m["Description"], "d");
        assert_eq!(m["Config"], json!({"JWKSURL": "a"}));

        u.no_merge = true;
        u.config = Some(r#"{"JWKSURL": "b"}"#.into());
        let mut m = read.as_object().unwrap().clone();
        apply_update(&mut m, &u, &mut none).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"Name": "jwt", "Type": "jwt", "DisplayName": "New", "Config": {"JWKSURL": "b"}})
        );
    }
}
