//! ACL resolution on this server: a request's token (header, bearer or `?token=`) becomes an
//! [`Identity`], through a cache invalidated by the ACL table's index; and the leader's ACL
//! duties: built-in policy and anonymous token, the initial management token, expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_acl::{
    ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, Authorizer, GLOBAL_MANAGEMENT_ID, GLOBAL_MANAGEMENT_NAME,
    Identity, Rules, node_identity_rules, parse_rules, service_identity_rules, template_rules,
};
use berth_api::acl::{Link, Policy, Token};

use crate::node::Node;
use crate::state::acl::{AclOp, AclTables};
use crate::state::{Command, Table};

/// Why a token does not resolve: Consul answers 403 "ACL not found".
#[derive(Debug, thiserror::Error)]
#[error("ACL not found")]
pub struct NotFound;

/// A resolved token: the ACL table index it was built at, its expiry (unix ms), the identity.
type CacheEntry = (u64, Option<u64>, Arc<Identity>);

#[derive(Default)]
pub struct Cache {
    /// By secret.
    entries: Mutex<HashMap<String, CacheEntry>>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn expiry_ms(t: &Token) -> Option<u64> {
    t.expiration_time.as_deref().and_then(parse_rfc3339)
}

/// The rules a token's links and identities grant, and whether it is a management token.
pub fn token_rules(acl: &AclTables, t: &Token, datacenter: &str) -> (Rules, bool) {
    let mut rules = Rules::default();
    let mut management = false;
    let mut add_policy = |link: &Link, rules: &mut Rules| {
        let p = acl
            .policies
            .get(&link.id)
            .or_else(|| acl.policy_by_name(&link.name));
        if let Some(p) = p {
            if p.id == GLOBAL_MANAGEMENT_ID {
                management = true;
            }
            if p.datacenters.is_empty() || p.datacenters.iter().any(|d| d == datacenter) {
                // Stored policies were validated on write; a bad one grants nothing.
                if let Ok(r) = parse_rules(&p.rules) {
                    rules.extend(&r);
                }
            }
        }
    };
    let identities = |rules: &mut Rules,
                      services: &[berth_api::acl::ServiceIdentity],
                      nodes: &[berth_api::acl::NodeIdentity],
                      templated: &[berth_api::acl::TemplatedPolicy]| {
        for s in services {
            if s.datacenters.is_empty() || s.datacenters.iter().any(|d| d == datacenter) {
                rules.extend(&service_identity_rules(&s.service_name));
            }
        }
        for n in nodes {
            if n.datacenter == datacenter {
                rules.extend(&node_identity_rules(&n.node_name));
            }
        }
        for tp in templated {
            let vars = tp.template_variables.clone().unwrap_or_default();
            if let Ok((r, _)) = template_rules(&tp.template_name, &vars) {
                rules.extend(&r);
            }
        }
    };
    for l in &t.policies {
        add_policy(l, &mut rules);
    }
    identities(
        &mut rules,
        &t.service_identities,
        &t.node_identities,
        &t.templated_policies,
    );
    for rl in &t.roles {
        let role = acl.roles.get(&rl.id).or_else(|| acl.role_by_name(&rl.name));
        if let Some(role) = role {
            for l in &role.policies {
                add_policy(l, &mut rules);
            }
            identities(
                &mut rules,
                &role.service_identities,
                &role.node_identities,
                &role.templated_policies,
            );
        }
    }
    (rules, management)
}

impl Node {
    /// Sets one of the agent tokens; persisted 0600 when `enable_token_persistence` is on.
    pub fn set_agent_token(&self, kind: &str, secret: String) -> std::io::Result<()> {
        let mut tokens = self.agent_tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(kind.to_string(), secret);
        if let (true, Some(dir)) = (self.cfg.acl.token_persistence, &self.cfg.data_dir) {
            let body = serde_json::to_vec(&*tokens).map_err(std::io::Error::other)?;
            let path = dir.join("acl-tokens.json");
            crate::util::write_atomic_private(&path, &body)?;
        }
        Ok(())
    }

    /// The identity a request's token resolves to.
    pub fn identity(&self, secret: Option<&str>) -> Result<Arc<Identity>, NotFound> {
        let acl_cfg = &self.cfg.acl;
        if !acl_cfg.enabled {
            return Ok(Arc::new(Identity::unrestricted()));
        }
        let set_default = self
            .agent_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get("default")
            .cloned();
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => set_default
                .as_deref()
                .or(acl_cfg.default_token.as_deref())
                .unwrap_or(ANONYMOUS_SECRET),
        };
        let now = now_ms();
        let st = self.store.read();
        let index = st.index(Table::Acl);
        if let Some((i, exp, id)) = self
            .acl_cache
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(secret)
            && *i == index
            && exp.is_none_or(|e| e > now)
        {
            return Ok(id.clone());
        }
        let token = st.acl.token_by_secret(secret).ok_or(NotFound)?;
        let exp = expiry_ms(token);
        if exp.is_some_and(|e| e <= now) {
            return Err(NotFound);
        }
        let (rules, management) = token_rules(&st.acl, token, &self.cfg.datacenter);
        let id = Arc::new(Identity {
            accessor_id: token.accessor_id.clone(),
            authz: Authorizer::new(rules, acl_cfg.default_allow, management),
            enforce: true,
        });
        drop(st);
        let mut cache = self
            .acl_cache
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(secret.to_string(), (index, exp, id.clone()));
        Ok(id)
    }
}

/// Agent tokens persisted by an earlier run (`enable_token_persistence`).
pub fn persisted_tokens(cfg: &crate::config::Config) -> HashMap<String, String> {
    if !cfg.acl.token_persistence {
        return HashMap::new();
    }
    cfg.data_dir
        .as_ref()
        .and_then(|d| std::fs::read(d.join("acl-tokens.json")).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn management_policy() -> Policy {
    Policy {
        id: GLOBAL_MANAGEMENT_ID.into(),
        name: GLOBAL_MANAGEMENT_NAME.into(),
        description: "Builtin Policy that grants unlimited access".into(),
        rules: "acl = \"write\"\nagent_prefix \"\" {\n  policy = \"write\"\n}\nevent_prefix \"\" {\n  policy = \"write\"\n}\nkey_prefix \"\" {\n  policy = \"write\"\n}\nkeyring = \"write\"\nnode_prefix \"\" {\n  policy = \"write\"\n}\noperator = \"write\"\nmesh = \"write\"\nquery_prefix \"\" {\n  policy = \"write\"\n}\nservice_prefix \"\" {\n  policy = \"write\"\n  intentions = \"write\"\n}\nsession_prefix \"\" {\n  policy = \"write\"\n}".into(),
        ..Default::default()
    }
}

/// The leader's ACL duties, once a second: built-ins, the initial management token, and
/// removing expired tokens.
pub async fn acl_leader_loop(node: Arc<Node>) {
    if !node.cfg.acl.enabled {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if !node.is_leader() {
            continue;
        }
        let mut ops = Vec::new();
        {
            let st = node.store.read();
            let acl = &st.acl;
            if !acl.policies.contains_key(GLOBAL_MANAGEMENT_ID) {
                ops.push(AclOp::SetPolicy(management_policy()));
            }
            if !acl.tokens.contains_key(ANONYMOUS_ACCESSOR) {
                ops.push(AclOp::SetToken(Token {
                    accessor_id: ANONYMOUS_ACCESSOR.into(),
                    secret_id: ANONYMOUS_SECRET.into(),
                    description: "Anonymous Token".into(),
                    create_time: rfc3339(now_ms()),
                    ..Default::default()
                }));
            }
            if let Some(secret) = &node.cfg.acl.initial_management
                && acl.token_by_secret(secret).is_none()
            {
                let t = Token {
                    accessor_id: uuid::Uuid::new_v4().to_string(),
                    secret_id: secret.clone(),
                    description: "Initial Management Token".into(),
                    policies: vec![Link {
                        id: GLOBAL_MANAGEMENT_ID.into(),
                        name: GLOBAL_MANAGEMENT_NAME.into(),
                    }],
                    create_time: rfc3339(now_ms()),
                    ..Default::default()
                };
                ops.push(if acl.bootstrap_index.is_none() {
                    AclOp::Bootstrap(t)
                } else {
                    AclOp::SetToken(t)
                });
            }
            let now = now_ms();
            let expiring: Vec<String> = acl
                .tokens
                .values()
                .filter(|t| expiry_ms(t).is_some_and(|e| e <= now))
                .map(|t| t.accessor_id.clone())
                .collect();
            if !expiring.is_empty() {
                ops.push(AclOp::ReapExpired {
                    now_ms: now,
                    expiring,
                });
            }
        }
        for op in ops {
            if let Err(e) = node.write(Command::Acl(op)).await {
                tracing::debug!(error = %e, "ACL leader duty deferred");
            }
        }
    }
}
