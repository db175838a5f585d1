//! Auth methods: turn a bearer credential (a signed AWS request, a JWT) into verified
//! identity variables, then binding rules into the links and identities of a new token.
//!
//! Validation is per method type (`aws_iam`, `jwt`); binding is shared and pure.

pub mod aws_iam;
pub mod jwt;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use berth_api::acl::{
    AuthMethod, BindingRule, Link, NodeIdentity, ServiceIdentity, TemplatedPolicy,
};
use berth_api::filter::Filter;

use crate::state::acl::AclTables;

/// Why a login is refused. Every variant is answered as 403 "Permission denied: ...", except
/// a malformed method configuration, which is the operator's problem (400 on write, 500 here).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("Permission denied: {0}")]
    Denied(String),
    #[error("auth method configuration is invalid: {0}")]
    BadConfig(String),
    #[error("cannot reach {what}: {reason}")]
    Upstream { what: String, reason: String },
}

pub fn denied(msg: impl Into<String>) -> LoginError {
    LoginError::Denied(msg.into())
}

/// What a validator proved about the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verified {
    /// Flat names for `${...}` interpolation in bind names: `entity_name`,
    /// `entity_tags.berth.service-name`, `value.sub`.
    pub vars: BTreeMap<String, String>,
    /// The same facts as selectors see them: `entity_tags` is a map, `list.groups` a list.
    pub selectable: Value,
    /// A signed request's unique signature and when it stops being replayable (unix ms).
    pub replay_key: Option<(String, u64)>,
}

/// The client for requests to STS, IAM and JWKS URLs: no redirects (a validated target must
/// stay the target), short timeouts.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// Runs the method's validator.
pub async fn validate(
    method: &AuthMethod,
    bearer: &str,
    seen: &(dyn Fn(&str) -> bool + Sync),
    http: &reqwest::Client,
) -> Result<Verified, LoginError> {
    match method.kind.as_str() {
        "aws-iam" => {
            let cfg = aws_iam::Config::from_value(&method.config).map_err(LoginError::BadConfig)?;
            // A signature is good for one login per auth method. An ECS task's agent and its
            // mesh-init log in with the same role at the same moment, and SigV4 covers the
            // time only to the second, so they sign identical requests, one for each method.
            let scope = |sig: &str| format!("{}\n{sig}", method.name);
            let scoped_seen = |sig: &str| seen(&scope(sig));
            let mut v =
                aws_iam::validate(&cfg, bearer, &scoped_seen, http, crate::acl::now_ms()).await?;
            v.replay_key = v.replay_key.map(|(sig, until)| (scope(&sig), until));
            Ok(v)
        }
        "jwt" => {
            let cfg = jwt::Config::from_value(&method.config).map_err(LoginError::BadConfig)?;
            jwt::validate(&cfg, bearer, http, crate::acl::now_ms()).await
        }
        other => Err(LoginError::BadConfig(format!(
            "unknown auth method type {other:?}"
        ))),
    }
}

/// Checks a method's `Config` when it is written.
pub fn check_config(method: &AuthMethod) -> Result<(), String> {
    match method.kind.as_str() {
        "aws-iam" => aws_iam::Config::from_value(&method.config).map(|_| ()),
        "jwt" => jwt::Config::from_value(&method.config).map(|_| ()),
        other => Err(format!(
            "Type should be one of: [aws-iam jwt], got {other:?}"
        )),
    }
}

/// What the binding rules grant a verified caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bindings {
    pub service_identities: Vec<ServiceIdentity>,
    pub node_identities: Vec<NodeIdentity>,
    pub roles: Vec<Link>,
    pub policies: Vec<Link>,
    pub templated_policies: Vec<TemplatedPolicy>,
}

impl Bindings {
    pub fn is_empty(&self) -> bool {
        self.service_identities.is_empty()
            && self.node_identities.is_empty()
            && self.roles.is_empty()
            && self.policies.is_empty()
            && self.templated_policies.is_empty()
    }
}

/// Replaces `${name}` with the verified variable; an unknown name is an error, so a rule never
/// binds a half-filled name.
pub fn interpolate(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {template:?}"))?;
        let name = after[..end].trim();
        let v = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable {name:?} in {template:?}"))?;
        out.push_str(v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Consul's rule for service and node identity names.
pub fn valid_identity_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Evaluates the method's binding rules against what was verified. Rules whose selector does
/// not match are skipped; a matching rule whose name cannot be filled or is invalid is skipped
/// too (and said why in the log), as Consul does; roles and policies that do not exist bind
/// nothing.
pub fn bind(acl: &AclTables, method: &str, verified: &Verified, datacenter: &str) -> Bindings {
    let mut b = Bindings::default();
    let rules: Vec<&BindingRule> = acl
        .binding_rules
        .values()
        .filter(|r| r.auth_method == method)
        .collect();
    for r in rules {
        if !r.selector.trim().is_empty() {
            match Filter::parse(&r.selector) {
                Ok(f) if f.matches(&verified.selectable) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(rule = %r.id, error = %e, "binding rule selector does not parse");
                    continue;
                }
            }
        }
        let name = match interpolate(&r.bind_name, &verified.vars) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(rule = %r.id, error = %e, "binding rule skipped");
                continue;
            }
        };
        match r.bind_type.as_str() {
            "service" if valid_identity_name(&name) => {
                if !b.service_identities.iter().any(|s| s.service_name == name) {
                    b.service_identities.push(ServiceIdentity {
                        service_name: name,
                        datacenters: Vec::new(),
                    });
                }
            }
            "node" if valid_identity_name(&name) => {
                if !b.node_identities.iter().any(|n| n.node_name == name) {
                    b.node_identities.push(NodeIdentity {
                        node_name: name,
                        datacenter: datacenter.to_string(),
                    });
                }
            }
            "role" => {
                if let Some(role) = acl.role_by_name(&name)
                    && !b.roles.iter().any(|l| l.id == role.id)
                {
                    b.roles.push(Link {
                        id: role.id.clone(),
                        name: role.name.clone(),
                    });
                }
            }
            "policy" => {
                if let Some(p) = acl.policy_by_name(&name)
                    && !b.policies.iter().any(|l| l.id == p.id)
                {
                    b.policies.push(Link {
                        id: p.id.clone(),
                        name: p.name.clone(),
                    });
                }
            }
            "templated-policy" => {
                let vars = match &r.bind_vars {
                    Some(Value::Object(m)) => {
                        let mut out = Map::new();
                        let mut ok = true;
                        for (k, v) in m {
                            match v.as_str().map(|s| interpolate(s, &verified.vars)) {
                                Some(Ok(s)) => {
                                    out.insert(k.clone(), Value::String(s));
                                }
                                Some(Err(_)) => ok = false,
                                None => {
                                    out.insert(k.clone(), v.clone());
                                }
                            }
                        }
                        if !ok {
                            continue;
                        }
                        Some(Value::Object(out))
                    }
                    _ => None,
                };
                b.templated_policies.push(TemplatedPolicy {
                    template_name: name,
                    template_variables: vars,
                    datacenters: Vec::new(),
                });
            }
            other => {
                tracing::info!(rule = %r.id, bind_type = other, name = %name, "binding rule made an invalid name");
            }
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verified() -> Verified {
        let mut vars = BTreeMap::new();
        vars.insert("entity_name".to_string(), "web-task".to_string());
        vars.insert(
            "entity_tags.berth.service-name".to_string(),
            "web".to_string(),
        );
        Verified {
            vars,
            selectable: json!({
                "entity_name": "web-task",
                "entity_path": "/berth/",
                "entity_tags": {"berth.service-name": "web"},
            }),
            replay_key: None,
        }
    }

    fn rule(id: &str, bind_type: &str, name: &str, selector: &str) -> BindingRule {
        BindingRule {
            id: id.into(),
            auth_method: "m".into(),
            bind_type: bind_type.into(),
            bind_name: name.into(),
            selector: selector.into(),
            ..Default::default()
        }
    }

    #[test]
    fn interpolation() {
        let v = verified().vars;
        assert_eq!(
            interpolate("svc-${entity_tags.berth.service-name}", &v).unwrap(),
            "svc-web"
        );
        assert!(interpolate("${nope}", &v).is_err());
        assert!(interpolate("${entity_name", &v).is_err());
        assert_eq!(interpolate("plain", &v).unwrap(), "plain");
    }

    #[test]
    fn rules_bind_what_their_selectors_allow() {
        let mut acl = AclTables::default();
        for r in [
            rule("1", "service", "${entity_tags.berth.service-name}", ""),
            rule("2", "node", "${entity_name}", r#"entity_path == "/berth/""#),
            rule("3", "service", "db", r#"entity_path == "/other/""#),
            rule("4", "service", "${missing}", ""),
            rule("5", "service", "Bad Name", ""),
            rule("6", "role", "no-such-role", ""),
        ] {
            acl.binding_rules.insert(r.id.clone(), r);
        }
        let mut other = rule("7", "service", "x", "");
        other.auth_method = "other".into();
        acl.binding_rules.insert("7".into(), other);
        let b = bind(&acl, "m", &verified(), "dc1");
        assert_eq!(
            b.service_identities
                .iter()
                .map(|s| s.service_name.as_str())
                .collect::<Vec<_>>(),
            vec!["web"]
        );
        assert_eq!(b.node_identities[0].node_name, "web-task");
        assert_eq!(b.node_identities[0].datacenter, "dc1");
        assert!(b.roles.is_empty());
        assert!(!b.is_empty());
        assert!(bind(&acl, "none", &verified(), "dc1").is_empty());
    }

    #[test]
    fn names() {
        assert!(valid_identity_name("web-1"));
        assert!(!valid_identity_name("Web"));
        assert!(!valid_identity_name("-web"));
        assert!(!valid_identity_name(""));
    }
}
