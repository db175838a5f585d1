//! Parsing rules and deciding access.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    Deny,
    Read,
    Write,
}

impl Access {
    fn parse(s: &str) -> Option<Access> {
        match s {
            "deny" => Some(Access::Deny),
            // Consul's `list` (key listing) is granted here with read.
            "read" | "list" => Some(Access::Read),
            "write" => Some(Access::Write),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resource {
    Service,
    Node,
    Key,
    Session,
    Agent,
    Query,
    Event,
    Operator,
    Acl,
    Mesh,
    Keyring,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Service => "service",
            Resource::Node => "node",
            Resource::Key => "key",
            Resource::Session => "session",
            Resource::Agent => "agent",
            Resource::Query => "query",
            Resource::Event => "event",
            Resource::Operator => "operator",
            Resource::Acl => "acl",
            Resource::Mesh => "mesh",
            Resource::Keyring => "keyring",
        }
    }

    fn named(s: &str) -> Option<(Resource, bool)> {
        let (base, prefix) = match s.strip_suffix("_prefix") {
            Some(b) => (b, true),
            None => (s, false),
        };
        let r = match base {
            "service" => Resource::Service,
            "node" => Resource::Node,
            "key" => Resource::Key,
            "session" => Resource::Session,
            "agent" => Resource::Agent,
            "query" => Resource::Query,
            "event" => Resource::Event,
            _ => return None,
        };
        Some((r, prefix))
    }

    fn global(s: &str) -> Option<Resource> {
        match s {
            "operator" => Some(Resource::Operator),
            "acl" => Some(Resource::Acl),
            "mesh" => Some(Resource::Mesh),
            "keyring" => Some(Resource::Keyring),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error("Failed to parse ACL rules: {0}")]
    Syntax(String),
    #[error("Invalid rule: {0}")]
    Invalid(String),
}

/// Maps with tuple keys travel as lists of pairs (JSON keys must be strings): client
/// agents receive resolved rules from the servers.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<
        'de,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    >(
        d: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// Parsed rules: per resource, exact and prefix grants, plus the global resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    #[serde(with = "pairs")]
    pub exact: BTreeMap<(Resource, String), Access>,
    #[serde(with = "pairs")]
    pub prefix: BTreeMap<(Resource, String), Access>,
    #[serde(with = "pairs")]
    pub global: BTreeMap<Resource, Access>,
    /// `intentions = "..."` of service rules, for the mesh (by exact/prefix service name).
    pub intentions_exact: BTreeMap<String, Access>,
    pub intentions_prefix: BTreeMap<String, Access>,
}

fn merge<K: Ord>(into: &mut BTreeMap<K, Access>, key: K, a: Access) {
    // Within one rule set, as across policies: deny wins, otherwise the higher grant.
    into.entry(key)
        .and_modify(|cur| {
            *cur = if *cur == Access::Deny || a == Access::Deny {
                Access::Deny
            } else {
                (*cur).max(a)
            }
        })
        .or_insert(a);
}

impl Rules {
    pub fn grant(&mut self, r: Resource, name: &str, prefix: bool, a: Access) {
        let map = if prefix {
            &mut self.prefix
        } else {
            &mut self.exact
        };
        merge(map, (r, name.to_string()), a);
    }

    pub fn grant_global(&mut self, r: Resource, a: Access) {
        merge(&mut self.global, r, a);
    }

    /// Adds every grant of `other`.
    pub fn extend(&mut self, other: &Rules) {
        for (k, a) in &other.exact {
            merge(&mut self.exact, k.clone(), *a);
        }
        for (k, a) in &other.prefix {
            merge(&mut self.prefix, k.clone(), *a);
        }
        for (k, a) in &other.global {
            merge(&mut self.global, *k, *a);
        }
        for (k, a) in &other.intentions_exact {
            merge(&mut self.intentions_exact, k.clone(), *a);
        }
        for (k, a) in &other.intentions_prefix {
            merge(&mut self.intentions_prefix, k.clone(), *a);
        }
    }
}

fn access_of(
    resource: &str,
    name: &str,
    v: &Value,
) -> Result<(Access, Option<Access>), RulesError> {
    let obj = match v {
        Value::Object(m) => m,
        // Blocks repeated with the same label come as a list.
        Value::Array(items) if items.len() == 1 => return access_of(resource, name, &items[0]),
        _ => {
            return Err(RulesError::Invalid(format!(
                "{resource} \"{name}\": expected a block with policy = \"read|write|deny\""
            )));
        }
    };
    let policy = obj
        .get("policy")
        .and_then(Value::as_str)
        .ok_or_else(|| RulesError::Invalid(format!("{resource} \"{name}\": missing policy")))?;
    let access = Access::parse(policy).ok_or_else(|| {
        RulesError::Invalid(format!(
            "{resource} \"{name}\": invalid policy {policy:?} (read, write, list or deny)"
        ))
    })?;
    let intentions = match obj.get("intentions").and_then(Value::as_str) {
        None => None,
        Some(s) => Some(Access::parse(s).ok_or_else(|| {
            RulesError::Invalid(format!(
                "{resource} \"{name}\": invalid intentions {s:?} (read, write or deny)"
            ))
        })?),
    };
    for k in obj.keys() {
        if !["policy", "intentions"].contains(&k.as_str()) {
            return Err(RulesError::Invalid(format!(
                "{resource} \"{name}\": unknown field {k:?}"
            )));
        }
    }
    Ok((access, intentions))
}

/// Parses Consul rules written in HCL or JSON.
pub fn parse_rules(text: &str) -> Result<Rules, RulesError> {
    let mut rules = Rules::default();
    if text.trim().is_empty() {
        return Ok(rules);
    }
    let doc: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?
    } else {
        hcl::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?
    };
    let Value::Object(top) = doc else {
        return Err(RulesError::Syntax("rules must be an object".into()));
    };
    for (k, v) in &top {
        if let Some(r) = Resource::global(k) {
            let s = v.as_str().ok_or_else(|| {
                RulesError::Invalid(format!("{k}: expected \"read\", \"write\" or \"deny\""))
            })?;
            let a = Access::parse(s)
                .ok_or_else(|| RulesError::Invalid(format!("{k}: invalid policy {s:?}")))?;
            rules.grant_global(r, a);
            continue;
        }
        let Some((r, prefix)) = Resource::named(k) else {
            return Err(RulesError::Invalid(format!("unknown resource {k:?}")));
        };
        let blocks: Vec<&serde_json::Map<String, Value>> = match v {
            Value::Object(m) => vec![m],
            Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
            _ => return Err(RulesError::Invalid(format!("{k}: expected labeled blocks"))),
        };
        for block in blocks {
            for (name, body) in block {
                let (a, intentions) = access_of(k, name, body)?;
                rules.grant(r, name, prefix, a);
                if let Some(i) = intentions.filter(|_| r == Resource::Service) {
                    let map = if prefix {
                        &mut rules.intentions_prefix
                    } else {
                        &mut rules.intentions_exact
                    };
                    merge(map, name.clone(), i);
                }
            }
        }
    }
    Ok(rules)
}

/// A token's merged rules plus the default policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authorizer {
    rules: Rules,
    /// `default_policy`: allow or deny for what no rule covers.
    default_allow: bool,
    /// global-management: everything, ACL management included.
    management: bool,
}

impl Authorizer {
    pub fn new(rules: Rules, default_allow: bool, management: bool) -> Self {
        Authorizer {
            rules,
            default_allow,
            management,
        }
    }

    /// The access the rules give to `name` of `resource`, or `None` when no rule matches.
    fn lookup(&self, resource: Resource, name: &str) -> Option<Access> {
        if let Some(a) = self.rules.exact.get(&(resource, name.to_string())) {
            return Some(*a);
        }
        self.rules
            .prefix
            .range((resource, String::new())..)
            .take_while(|((r, _), _)| *r == resource)
            .filter(|((_, p), _)| name.starts_with(p.as_str()))
            .max_by_key(|((_, p), _)| p.len())
            .map(|(_, a)| *a)
    }

    fn default_for(&self, resource: Resource) -> bool {
        // ACL management is never granted by default_policy = "allow".
        self.default_allow && resource != Resource::Acl
    }

    pub fn allowed(&self, resource: Resource, name: &str, want: Access) -> bool {
        if self.management {
            return true;
        }
        let found = match Resource::global(resource.as_str()) {
            Some(_) => self.rules.global.get(&resource).copied(),
            None => self.lookup(resource, name),
        };
        match found {
            Some(Access::Deny) => false,
            Some(a) => a >= want,
            None => self.default_for(resource),
        }
    }

    /// `intentions` access to a destination service: the `intentions` of the most specific
    /// service rule that sets it; without one, a service rule's read or write grants
    /// intentions read, as Consul's does.
    pub fn intentions_allowed(&self, service: &str, want: Access) -> bool {
        if self.management {
            return true;
        }
        let found = self
            .rules
            .intentions_exact
            .get(service)
            .copied()
            .or_else(|| {
                self.rules
                    .intentions_prefix
                    .iter()
                    .filter(|(p, _)| service.starts_with(p.as_str()))
                    .max_by_key(|(p, _)| p.len())
                    .map(|(_, a)| *a)
            });
        match found {
            Some(Access::Deny) => false,
            Some(a) => a >= want,
            None => match self.lookup(Resource::Service, service) {
                Some(Access::Deny) => false,
                Some(_) => want == Access::Read,
                None => self.default_allow,
            },
        }
    }

    pub fn is_management(&self) -> bool {
        self.management
    }

    /// Consul's name for a permission, as in `lacks permission 'service:write' on "web"`.
    pub fn permission(resource: Resource, want: Access) -> String {
        format!("{}:{}", resource.as_str(), want.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str, default_allow: bool) -> Authorizer {
        Authorizer::new(parse_rules(text).unwrap(), default_allow, false)
    }

    #[test]
    fn authorizers_travel_as_json() {
        let a = auth(
            r#"service "web" { policy = "write" }
key_prefix "app/" { policy = "read" }
operator = "read""#,
            false,
        );
        let b: Authorizer = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert!(b.allowed(Resource::Service, "web", Access::Write));
        assert!(b.allowed(Resource::Key, "app/x", Access::Read));
        assert!(b.allowed(Resource::Operator, "", Access::Read));
        assert!(!b.allowed(Resource::Key, "other", Access::Read));
    }

    #[test]
    fn intentions_follow_service_rules() {
        let a = auth(
            r#"
            service "api" {
              policy = "read"
              intentions = "write"
            }
            service_prefix "web" { policy = "write" }
            service_prefix "" {
              policy = "read"
              intentions = "deny"
            }
            service "db" { policy = "deny" }
            "#,
            true,
        );
        assert!(a.intentions_allowed("api", Access::Write));
        // The deny on the "" prefix is more specific than no intentions on the web prefix.
        assert!(!a.intentions_allowed("web-1", Access::Read));
        assert!(!a.intentions_allowed("billing", Access::Read));
        let b = auth(r#"service_prefix "web" { policy = "write" }"#, false);
        assert!(
            b.intentions_allowed("web-1", Access::Read),
            "service access implies read"
        );
        assert!(!b.intentions_allowed("web-1", Access::Write));
        assert!(!b.intentions_allowed("other", Access::Read), "default deny");
        let c = auth(r#"service "db" { policy = "deny" }"#, true);
        assert!(!c.intentions_allowed("db", Access::Read));
        assert!(c.intentions_allowed("x", Access::Write), "default allow");
    }

    #[test]
    fn hcl_and_json_say_the_same() {
        let hcl = r#"
            key_prefix "" { policy = "read" }
            key_prefix "private/" { policy = "deny" }
            key "private/open" { policy = "write" }
            service "web" {
              policy = "write"
              intentions = "read"
            }
            service_prefix "" { policy = "read" }
            operator = "read"
        "#;
        let json = r#"{"key_prefix": {"": {"policy": "read"}, "private/": {"policy": "deny"}},
            "key": {"private/open": {"policy": "write"}},
            "service": {"web": {"policy": "write", "intentions": "read"}},
            "service_prefix": {"": {"policy": "read"}}, "operator": "read"}"#;
        assert_eq!(parse_rules(hcl).unwrap(), parse_rules(json).unwrap());
    }

    #[test]
    fn precedence_follows_consul() {
        let a = auth(
            r#"
            key_prefix "" { policy = "read" }
            key_prefix "app/" { policy = "write" }
            key_prefix "app/secret/" { policy = "deny" }
            key "app/secret/public" { policy = "read" }
            service_prefix "" { policy = "read" }
            service "db" { policy = "deny" }
            "#,
            false,
        );
        assert!(a.allowed(Resource::Key, "other", Access::Read));
        assert!(!a.allowed(Resource::Key, "other", Access::Write));
        assert!(
            a.allowed(Resource::Key, "app/x", Access::Write),
            "longer prefix wins"
        );
        assert!(!a.allowed(Resource::Key, "app/secret/x", Access::Read));
        assert!(
            a.allowed(Resource::Key, "app/secret/public", Access::Read),
            "exact beats prefix"
        );
        assert!(!a.allowed(Resource::Service, "db", Access::Read));
        assert!(
            !a.allowed(Resource::Node, "n1", Access::Read),
            "default deny"
        );
        assert!(!a.allowed(Resource::Operator, "", Access::Read));
    }

    #[test]
    fn deny_wins_at_equal_specificity_across_policies() {
        let mut r = parse_rules(r#"service "web" { policy = "write" }"#).unwrap();
        r.extend(&parse_rules(r#"service "web" { policy = "deny" }"#).unwrap());
        let a = Authorizer::new(r, true, false);
        assert!(!a.allowed(Resource::Service, "web", Access::Read));
        let mut r = parse_rules(r#"service "web" { policy = "read" }"#).unwrap();
        r.extend(&parse_rules(r#"service "web" { policy = "write" }"#).unwrap());
        assert!(Authorizer::new(r, false, false).allowed(Resource::Service, "web", Access::Write));
    }

    #[test]
    fn default_allow_never_grants_acl_management() {
        let a = auth("", true);
        assert!(a.allowed(Resource::Key, "x", Access::Write));
        assert!(!a.allowed(Resource::Acl, "", Access::Read));
        assert!(Authorizer::new(Rules::default(), false, true).allowed(
            Resource::Acl,
            "",
            Access::Write
        ));
    }

    #[test]
    fn bad_rules_name_the_problem() {
        for (text, needle) in [
            (r#"key "a" { policy = "admin" }"#, "invalid policy"),
            (r#"kee "a" { policy = "read" }"#, "unknown resource"),
            (r#"key "a" { polcy = "read" }"#, "missing policy"),
            (r#"operator = "boss""#, "invalid policy"),
            ("key {", "Failed to parse"),
            (r#"{"key": 1}"#, "labeled blocks"),
        ] {
            let e = parse_rules(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
