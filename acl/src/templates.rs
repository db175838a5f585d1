//! Service and node identities, and the templated policies `builtin/service` and
//! `builtin/node` that expand to the same rules (Consul 1.17+).

use serde_json::{Value, json};

use crate::rules::{Access, Resource, Rules};

pub const SERVICE_TEMPLATE: &str = "builtin/service";
pub const NODE_TEMPLATE: &str = "builtin/node";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("templated policy {0:?} not found")]
    Unknown(String),
    #[error("templated policy {template:?} needs the variable {var:?}")]
    Missing { template: String, var: &'static str },
}

/// What a service identity grants: write on the service and its sidecar, read on every
/// service and node (for discovery).
pub fn service_identity_rules(name: &str) -> Rules {
    let mut r = Rules::default();
    r.grant(Resource::Service, name, false, Access::Write);
    r.grant(
        Resource::Service,
        &format!("{name}-sidecar-proxy"),
        false,
        Access::Write,
    );
    r.grant(Resource::Service, "", true, Access::Read);
    r.grant(Resource::Node, "", true, Access::Read);
    r
}

/// What a node identity grants: write on the node, read on every service.
pub fn node_identity_rules(name: &str) -> Rules {
    let mut r = Rules::default();
    r.grant(Resource::Node, name, false, Access::Write);
    r.grant(Resource::Service, "", true, Access::Read);
    r
}

fn service_hcl(name: &str) -> String {
    format!(
        "service \"{name}\" {{\n  policy = \"write\"\n}}\nservice \"{name}-sidecar-proxy\" {{\n  policy = \"write\"\n}}\nservice_prefix \"\" {{\n  policy = \"read\"\n}}\nnode_prefix \"\" {{\n  policy = \"read\"\n}}"
    )
}

fn node_hcl(name: &str) -> String {
    format!(
        "node \"{name}\" {{\n  policy = \"write\"\n}}\nservice_prefix \"\" {{\n  policy = \"read\"\n}}"
    )
}

/// The rules of a templated policy, as (rules, HCL text).
pub fn template_rules(template: &str, vars: &Value) -> Result<(Rules, String), TemplateError> {
    let name = vars
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("name")))
        .and_then(|(_, v)| v.as_str())
        .filter(|s| !s.is_empty());
    let missing = || TemplateError::Missing {
        template: template.to_string(),
        var: "name",
    };
    match template {
        SERVICE_TEMPLATE => {
            let n = name.ok_or_else(missing)?;
            Ok((service_identity_rules(n), service_hcl(n)))
        }
        NODE_TEMPLATE => {
            let n = name.ok_or_else(missing)?;
            Ok((node_identity_rules(n), node_hcl(n)))
        }
        other => Err(TemplateError::Unknown(other.to_string())),
    }
}

/// The templated policies, in the shape of `GET /v1/acl/templated-policies`.
pub fn templates() -> Value {
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "$ref": "#/definitions/min-length-one"}},
        "required": ["name"],
        "definitions": {"min-length-one": {"type": "string", "minLength": 1}}
    });
    json!({
        SERVICE_TEMPLATE: {
            "TemplateName": SERVICE_TEMPLATE,
            "Schema": schema.to_string(),
            "Template": service_hcl("{{.Name}}"),
            "Description": "Gives the token or role permissions to register a service and discover services in the Consul catalog. It also gives the specified service's sidecar proxy the permission to discover and route traffic to other services."
        },
        NODE_TEMPLATE: {
            "TemplateName": NODE_TEMPLATE,
            "Schema": schema.to_string(),
            "Template": node_hcl("{{.Name}}"),
            "Description": "Gives the token or role permissions for a register an agent/node into the catalog. A node is typically a consul agent but can also be a physical server, cloud instance or a container."
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authorizer, parse_rules};

    #[test]
    fn templates_expand_like_identities_and_their_text_parses_to_the_same() {
        let (rules, text) = template_rules(SERVICE_TEMPLATE, &json!({"Name": "web"})).unwrap();
        assert_eq!(rules, service_identity_rules("web"));
        assert_eq!(parse_rules(&text).unwrap(), rules);
        let a = Authorizer::new(rules, false, false);
        assert!(a.allowed(Resource::Service, "web", Access::Write));
        assert!(a.allowed(Resource::Service, "web-sidecar-proxy", Access::Write));
        assert!(!a.allowed(Resource::Service, "db", Access::Write));
        assert!(a.allowed(Resource::Service, "db", Access::Read));
        let (rules, text) = template_rules(NODE_TEMPLATE, &json!({"name": "n1"})).unwrap();
        assert_eq!(parse_rules(&text).unwrap(), rules);
        assert!(matches!(
            template_rules("builtin/x", &json!({})),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            template_rules(SERVICE_TEMPLATE, &json!({})),
            Err(TemplateError::Missing { .. })
        ));
    }
}
