//! Intentions as Envoy RBAC rules.
//!
//! Intentions are evaluated first-match-wins: the first intention whose source matches the
//! client decides (its L4 action, or its first matching L7 permission, else the default).
//! Envoy's RBAC has no ordering, so the order is compiled away: every rule that yields the
//! non-default decision becomes one policy whose principal excludes every earlier source that
//! could also match, and whose permission excludes every earlier permission of the same
//! intention. One filter whose action is the opposite of the default then decides exactly as
//! the ordered list would.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission as RbacPermission, Policy, Principal, Rbac, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use crate::{HeaderMatch, HttpMatch, IntentionAction, ProxySnapshot};

/// The policies of the single RBAC filter, keyed by policy name, plus that filter's action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rules {
    pub action: rbac::Action,
    pub policies: BTreeMap<String, Policy>,
}

pub(crate) fn rules(s: &ProxySnapshot) -> Rules {
    let target = if s.default_allow {
        IntentionAction::Deny
    } else {
        IntentionAction::Allow
    };
    let action = if s.default_allow {
        rbac::Action::Deny
    } else {
        rbac::Action::Allow
    };
    let mut policies = BTreeMap::new();
    // Sources already decided by an earlier intention; their clients never reach later ones.
    let mut earlier: Vec<&str> = Vec::new();
    for (i, intention) in s.intentions.iter().enumerate() {
        let source = intention.source.as_str();
        if earlier.iter().any(|e| *e == "*" || *e == source) {
            continue;
        }
        let mut who = source_principal(&s.trust_domain, source);
        if source == "*" && !earlier.is_empty() {
            let excluded = earlier
                .iter()
                .map(|e| source_principal(&s.trust_domain, e))
                .collect();
            who = and_ids(vec![who, not_id(or_ids(excluded))]);
        }
        earlier.push(source);
        let name = format!("{i:04}-{source}");
        match (intention.action, s.protocol.is_http()) {
            (Some(a), _) => {
                if a == target {
                    policies.insert(name, policy(any_permission(), who));
                }
            }
            // An L7 intention cannot be enforced on a tcp listener: Consul treats it as deny.
            (None, false) => {
                if target == IntentionAction::Deny {
                    policies.insert(name, policy(any_permission(), who));
                }
            }
            (None, true) => {
                let mut earlier_matches: Vec<RbacPermission> = Vec::new();
                for (j, p) in intention.permissions.iter().enumerate() {
                    let this = http_permission(&p.http);
                    if p.action == target {
                        let what = if earlier_matches.is_empty() {
                            this.clone()
                        } else {
                            and_rules(vec![
                                this.clone(),
                                not_rule(or_rules(earlier_matches.clone())),
                            ])
                        };
                        policies.insert(format!("{name}-{j:04}"), policy(what, who.clone()));
                    }
                    earlier_matches.push(this);
                }
            }
        }
    }
    Rules { action, policies }
}

fn policy(what: RbacPermission, who: Principal) -> Policy {
    Policy {
        permissions: vec![what],
        principals: vec![who],
        ..Default::default()
    }
}

/// The `typed_config` of `envoy.filters.network.rbac`.
pub(crate) fn network_filter_config(s: &ProxySnapshot) -> Any {
    let r = rules(s);
    let head = NetworkRbac {
        rules: Some(Rbac {
            action: r.action as i32,
            ..Default::default()
        }),
        stat_prefix: "connect_authz".into(),
        ..Default::default()
    };
    let parts = r.policies.into_iter().map(|(k, v)| NetworkRbac {
        rules: Some(one_policy(k, v)),
        ..Default::default()
    });
    deterministic_any::<NetworkRbac>(head, parts)
}

/// The `typed_config` of `envoy.filters.http.rbac`.
pub(crate) fn http_filter_config(s: &ProxySnapshot) -> Any {
    let r = rules(s);
    let head = HttpRbac {
        rules: Some(Rbac {
            action: r.action as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let parts = r.policies.into_iter().map(|(k, v)| HttpRbac {
        rules: Some(one_policy(k, v)),
        ..Default::default()
    });
    deterministic_any::<HttpRbac>(head, parts)
}

fn one_policy(name: String, p: Policy) -> Rbac {
    Rbac {
        policies: [(name, p)].into_iter().collect(),
        ..Default::default()
    }
}

/// `Rbac.policies` is a HashMap, which prost encodes in random order; the resource version is
/// a hash of the bytes, so the map is written one entry at a time in name order instead.
/// Protobuf merges repeated occurrences of a message field, so the concatenation decodes to
/// the same message with every policy.
fn deterministic_any<M: Message + Name>(head: M, parts: impl Iterator<Item = M>) -> Any {
    let mut value = head.encode_to_vec();
    for p in parts {
        value.extend(p.encode_to_vec());
    }
    Any {
        type_url: M::type_url(),
        value,
    }
}

pub(crate) fn source_principal(trust_domain: &str, source: &str) -> Principal {
    let matcher = if source == "*" {
        string_matcher::MatchPattern::Prefix(format!("spiffe://{trust_domain}/"))
    } else {
        // Any datacenter: a service's identity is the same wherever it runs.
        string_matcher::MatchPattern::SafeRegex(regex(format!(
            "^spiffe://{}/ns/default/dc/[^/]+/svc/{}$",
            escape_regex(trust_domain),
            escape_regex(source)
        )))
    };
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(matcher),
                    ignore_case: false,
                }),
            },
        )),
    }
}

fn http_permission(m: &HttpMatch) -> RbacPermission {
    let mut all = Vec::new();
    let path = if let Some(p) = &m.path_exact {
        Some(string_matcher::MatchPattern::Exact(p.clone()))
    } else if let Some(p) = &m.path_prefix {
        Some(string_matcher::MatchPattern::Prefix(p.clone()))
    } else {
        m.path_regex
            .as_ref()
            .map(|p| string_matcher::MatchPattern::SafeRegex(regex(p.clone())))
    };
    if let Some(pattern) = path {
        all.push(RbacPermission {
            rule: Some(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(StringMatcher {
                    match_pattern: Some(pattern),
                    ignore_case: false,
                })),
            })),
        });
    }
    if !m.methods.is_empty() {
        let methods = m
            .methods
            .iter()
            .map(|method| {
                header_permission(HeaderMatcher {
                    name: ":method".into(),
                    header_match_specifier: Some(
                        header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                            match_pattern: Some(string_matcher::MatchPattern::Exact(
                                method.to_ascii_uppercase(),
                            )),
                            ignore_case: false,
                        }),
                    ),
                    ..Default::default()
                })
            })
            .collect();
        all.push(or_rules(methods));
    }
    for h in &m.headers {
        all.push(header_permission(header_matcher(h)));
    }
    match all.len() {
        0 => any_permission(),
        1 => all.remove(0),
        _ => and_rules(all),
    }
}

fn header_matcher(h: &HeaderMatch) -> HeaderMatcher {
    let exact = |p: string_matcher::MatchPattern| {
        header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(p),
            ignore_case: false,
        })
    };
    let spec = if let Some(v) = &h.exact {
        exact(string_matcher::MatchPattern::Exact(v.clone()))
    } else if let Some(v) = &h.prefix {
        exact(string_matcher::MatchPattern::Prefix(v.clone()))
    } else if let Some(v) = &h.suffix {
        exact(string_matcher::MatchPattern::Suffix(v.clone()))
    } else if let Some(v) = &h.regex {
        exact(string_matcher::MatchPattern::SafeRegex(regex(v.clone())))
    } else {
        // Consul: a header match with no value given means "is present".
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    };
    HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        invert_match: h.invert,
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn regex(regex: String) -> RegexMatcher {
    RegexMatcher {
        regex,
        ..Default::default()
    }
}

/// RE2 metacharacters escaped, so names and trust domains match literally.
fn escape_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn header_permission(h: HeaderMatcher) -> RbacPermission {
    RbacPermission {
        rule: Some(permission::Rule::Header(h)),
    }
}

fn any_permission() -> RbacPermission {
    RbacPermission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn and_rules(rules: Vec<RbacPermission>) -> RbacPermission {
    RbacPermission {
        rule: Some(permission::Rule::AndRules(permission::Set { rules })),
    }
}

fn or_rules(rules: Vec<RbacPermission>) -> RbacPermission {
    RbacPermission {
        rule: Some(permission::Rule::OrRules(permission::Set { rules })),
    }
}

fn not_rule(p: RbacPermission) -> RbacPermission {
    RbacPermission {
        rule: Some(permission::Rule::NotRule(Box::new(p))),
    }
}

fn and_ids(ids: Vec<Principal>) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
    }
}

fn or_ids(ids: Vec<Principal>) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

fn not_id(p: Principal) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(p))),
    }
}

/// A small evaluator of the generated rules, so the tests check decisions rather than shapes.
#[cfg(test)]
pub(crate) mod eval {
    use super::*;

    pub struct Request<'a> {
        pub principal: &'a str,
        pub path: &'a str,
        pub method: &'a str,
        pub headers: &'a [(&'a str, &'a str)],
    }

    fn string(m: &StringMatcher, v: &str) -> bool {
        match m.match_pattern.as_ref().expect("pattern") {
            string_matcher::MatchPattern::Exact(e) => v == e,
            string_matcher::MatchPattern::Prefix(p) => v.starts_with(p.as_str()),
            string_matcher::MatchPattern::Suffix(p) => v.ends_with(p.as_str()),
            string_matcher::MatchPattern::SafeRegex(r) => {
                regex::Regex::new(&r.regex).expect("regex").is_match(v)
            }
            other => panic!("unexpected matcher {other:?}"),
        }
    }

    fn header(h: &HeaderMatcher, r: &Request<'_>) -> bool {
        let value = match h.name.as_str() {
            ":method" => Some(r.method),
            ":path" => Some(r.path),
            n => r.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
        };
        let hit = match (h.header_match_specifier.as_ref().expect("spec"), value) {
            (header_matcher::HeaderMatchSpecifier::PresentMatch(p), v) => v.is_some() == *p,
            (header_matcher::HeaderMatchSpecifier::StringMatch(m), Some(v)) => string(m, v),
            (_, None) => false,
            (other, _) => panic!("unexpected header spec {other:?}"),
        };
        hit != h.invert_match
    }

    fn perm(p: &RbacPermission, r: &Request<'_>) -> bool {
        match p.rule.as_ref().expect("rule") {
            permission::Rule::Any(a) => *a,
            permission::Rule::AndRules(s) => s.rules.iter().all(|x| perm(x, r)),
            permission::Rule::OrRules(s) => s.rules.iter().any(|x| perm(x, r)),
            permission::Rule::NotRule(x) => !perm(x, r),
            permission::Rule::Header(h) => header(h, r),
            permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(m)),
            }) => string(m, r.path),
            other => panic!("unexpected permission {other:?}"),
        }
    }

    fn princ(p: &Principal, r: &Request<'_>) -> bool {
        match p.identifier.as_ref().expect("identifier") {
            principal::Identifier::Any(a) => *a,
            principal::Identifier::AndIds(s) => s.ids.iter().all(|x| princ(x, r)),
            principal::Identifier::OrIds(s) => s.ids.iter().any(|x| princ(x, r)),
            principal::Identifier::NotId(x) => !princ(x, r),
            principal::Identifier::Authenticated(a) => {
                string(a.principal_name.as_ref().expect("name"), r.principal)
            }
            other => panic!("unexpected principal {other:?}"),
        }
    }

    /// True when the filter lets the request through.
    pub fn allowed(rules: &Rbac, r: &Request<'_>) -> bool {
        let matched = rules.policies.values().any(|p| {
            p.permissions.iter().any(|x| perm(x, r)) && p.principals.iter().any(|x| princ(x, r))
        });
        if rules.action == rbac::Action::Allow as i32 {
            matched
        } else {
            !matched
        }
    }
}

#[cfg(test)]
mod tests {
    use super::eval::{Request, allowed};
    use super::*;
    use crate::{Intention, Leaf, Permission, Protocol};

    const TD: &str = "11111111-2222-3333-4444-555555555555.berth";

    fn snap(protocol: Protocol, default_allow: bool, intentions: Vec<Intention>) -> ProxySnapshot {
        ProxySnapshot {
            proxy_id: "api-sidecar".into(),
            service: "api".into(),
            datacenter: "dc1".into(),
            trust_domain: TD.into(),
            public_listener: "10.0.0.2:20000".parse().expect("addr"),
            local_app: "127.0.0.1:8080".parse().expect("addr"),
            protocol,
            leaf: Leaf::default(),
            roots: vec![],
            intentions,
            default_allow,
            upstreams: vec![],
        }
    }

    fn l4(source: &str, action: IntentionAction) -> Intention {
        Intention {
            source: source.into(),
            action: Some(action),
            permissions: vec![],
        }
    }

    fn decoded_http(s: &ProxySnapshot) -> Rbac {
        let any = http_filter_config(s);
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
        );
        HttpRbac::decode(any.value.as_slice())
            .expect("decodes")
            .rules
            .expect("rules")
    }

    fn decoded_network(s: &ProxySnapshot) -> Rbac {
        let any = network_filter_config(s);
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
        );
        let n = NetworkRbac::decode(any.value.as_slice()).expect("decodes");
        assert_eq!(n.stat_prefix, "connect_authz");
        n.rules.expect("rules")
    }

    fn from(svc: &str) -> String {
        crate::spiffe_id(TD, "dc1", svc)
    }

    fn req<'a>(principal: &'a str, method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            principal,
            path,
            method,
            headers: &[],
        }
    }

    #[test]
    fn allow_with_default_deny_is_one_allow_policy() {
        let s = snap(
            Protocol::Tcp,
            false,
            vec![l4("web", IntentionAction::Allow)],
        );
        let r = decoded_network(&s);
        assert_eq!(r.action, rbac::Action::Allow as i32);
        assert_eq!(r.policies.len(), 1);
        let web = from("web");
        assert!(allowed(&r, &req(&web, "GET", "/")));
        // Same service seen from another datacenter is the same identity.
        let web_dc2 = crate::spiffe_id(TD, "dc2", "web");
        assert!(allowed(&r, &req(&web_dc2, "GET", "/")));
        assert!(!allowed(&r, &req(&from("other"), "GET", "/")));
        assert!(!allowed(&r, &req(&from("webx"), "GET", "/")));
        assert!(!allowed(
            &r,
            &req("spiffe://evil.berth/ns/default/dc/dc1/svc/web", "GET", "/")
        ));
    }

    #[test]
    fn deny_with_default_allow_is_one_deny_policy() {
        let s = snap(Protocol::Tcp, true, vec![l4("web", IntentionAction::Deny)]);
        let r = decoded_network(&s);
        assert_eq!(r.action, rbac::Action::Deny as i32);
        assert_eq!(r.policies.len(), 1);
        assert!(!allowed(&r, &req(&from("web"), "GET", "/")));
        assert!(allowed(&r, &req(&from("other"), "GET", "/")));
    }

    #[test]
    fn no_intentions_follow_the_default() {
        let deny = decoded_network(&snap(Protocol::Tcp, false, vec![]));
        assert!(deny.policies.is_empty());
        assert!(!allowed(&deny, &req(&from("web"), "GET", "/")));
        let allow = decoded_network(&snap(Protocol::Tcp, true, vec![]));
        assert!(allowed(&allow, &req(&from("web"), "GET", "/")));
    }

    #[test]
    fn wildcard_allow_covers_the_trust_domain_only() {
        let s = snap(Protocol::Tcp, false, vec![l4("*", IntentionAction::Allow)]);
        let r = decoded_network(&s);
        assert!(allowed(&r, &req(&from("web"), "GET", "/")));
        assert!(allowed(&r, &req(&from("anything"), "GET", "/")));
        assert!(!allowed(
            &r,
            &req("spiffe://other.berth/ns/default/dc/dc1/svc/web", "GET", "/")
        ));
    }

    #[test]
    fn deny_before_wildcard_allow_wins() {
        let s = snap(
            Protocol::Tcp,
            false,
            vec![
                l4("web", IntentionAction::Deny),
                l4("*", IntentionAction::Allow),
            ],
        );
        let r = decoded_network(&s);
        assert!(!allowed(&r, &req(&from("web"), "GET", "/")));
        assert!(allowed(&r, &req(&from("billing"), "GET", "/")));
    }

    #[test]
    fn allow_before_wildcard_deny_wins_under_default_allow() {
        let s = snap(
            Protocol::Http,
            true,
            vec![
                l4("web", IntentionAction::Allow),
                l4("*", IntentionAction::Deny),
            ],
        );
        let r = decoded_http(&s);
        assert_eq!(r.action, rbac::Action::Deny as i32);
        assert!(allowed(&r, &req(&from("web"), "GET", "/")));
        assert!(!allowed(&r, &req(&from("billing"), "GET", "/")));
    }

    #[test]
    fn later_intentions_for_a_decided_source_are_ignored() {
        let s = snap(
            Protocol::Tcp,
            false,
            vec![
                l4("*", IntentionAction::Deny),
                l4("web", IntentionAction::Allow),
            ],
        );
        let r = decoded_network(&s);
        assert!(r.policies.is_empty());
        assert!(!allowed(&r, &req(&from("web"), "GET", "/")));
    }

    fn post_orders_only() -> Intention {
        Intention {
            source: "web".into(),
            action: None,
            permissions: vec![Permission {
                action: IntentionAction::Allow,
                http: HttpMatch {
                    path_exact: Some("/orders".into()),
                    methods: vec!["post".into()],
                    ..Default::default()
                },
            }],
        }
    }

    #[test]
    fn l7_permission_allows_only_its_requests() {
        let s = snap(Protocol::Http, false, vec![post_orders_only()]);
        let r = decoded_http(&s);
        let web = from("web");
        assert!(allowed(&r, &req(&web, "POST", "/orders")));
        assert!(!allowed(&r, &req(&web, "GET", "/orders")));
        assert!(!allowed(&r, &req(&web, "POST", "/admin")));
        assert!(!allowed(&r, &req(&from("other"), "POST", "/orders")));
    }

    #[test]
    fn l7_intention_shadows_a_later_wildcard() {
        // web matched its own L7 intention, so its unmatched requests get the default (deny),
        // not the wildcard's allow.
        let s = snap(
            Protocol::Http,
            false,
            vec![post_orders_only(), l4("*", IntentionAction::Allow)],
        );
        let r = decoded_http(&s);
        let web = from("web");
        assert!(allowed(&r, &req(&web, "POST", "/orders")));
        assert!(!allowed(&r, &req(&web, "GET", "/orders")));
        assert!(allowed(&r, &req(&from("billing"), "GET", "/orders")));
    }

    #[test]
    fn l7_first_matching_permission_wins() {
        let s = snap(
            Protocol::Http,
            true,
            vec![Intention {
                source: "web".into(),
                action: None,
                permissions: vec![
                    Permission {
                        action: IntentionAction::Allow,
                        http: HttpMatch {
                            path_prefix: Some("/admin/health".into()),
                            ..Default::default()
                        },
                    },
                    Permission {
                        action: IntentionAction::Deny,
                        http: HttpMatch {
                            path_regex: Some("/admin/.*".into()),
                            headers: vec![HeaderMatch {
                                name: "X-Debug".into(),
                                present: true,
                                invert: true,
                                ..Default::default()
                            }],
                            ..Default::default()
                        },
                    },
                ],
            }],
        );
        let r = decoded_http(&s);
        let web = from("web");
        assert!(allowed(&r, &req(&web, "GET", "/admin/health")));
        assert!(!allowed(&r, &req(&web, "GET", "/admin/users")));
        let with_debug = Request {
            principal: &web,
            path: "/admin/users",
            method: "GET",
            headers: &[("x-debug", "1")],
        };
        assert!(allowed(&r, &with_debug));
        assert!(allowed(&r, &req(&web, "GET", "/orders")));
    }

    #[test]
    fn l7_intention_on_tcp_denies() {
        let s = snap(Protocol::Tcp, true, vec![post_orders_only()]);
        let r = decoded_network(&s);
        assert!(!allowed(&r, &req(&from("web"), "POST", "/orders")));
        assert!(allowed(&r, &req(&from("other"), "POST", "/orders")));
    }

    #[test]
    fn encoding_is_deterministic() {
        let intentions = (0..20)
            .map(|i| l4(&format!("svc{i}"), IntentionAction::Allow))
            .collect();
        let s = snap(Protocol::Http, false, intentions);
        let a = http_filter_config(&s);
        for _ in 0..10 {
            assert_eq!(http_filter_config(&s), a);
        }
        assert_eq!(decoded_http(&s).policies.len(), 20);
    }

    #[test]
    fn names_are_escaped_in_regexes() {
        assert_eq!(escape_regex("a.b*c"), "a\\.b\\*c");
    }
}
