//! The ACL tables: tokens (by accessor, with a derived secret index), policies, roles, auth
//! methods, binding rules, and the bootstrap marker.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use berth_api::acl::{AuthMethod, BindingRule, Policy, Role, Token};

use super::{Changes, CommandResult, State, Table};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AclTables {
    pub tokens: BTreeMap<String, Token>,
    pub policies: BTreeMap<String, Policy>,
    pub roles: BTreeMap<String, Role>,
    pub methods: BTreeMap<String, AuthMethod>,
    pub binding_rules: BTreeMap<String, BindingRule>,
    /// The Raft index of the bootstrap (or of the initial management token), once done.
    pub bootstrap_index: Option<u64>,
    /// Signatures of AWS requests already used to log in, with the time (unix ms) after which
    /// AWS would refuse them anyway; kept in the replicated state so that a new leader
    /// refuses a replay too.
    #[serde(default)]
    pub login_replays: BTreeMap<String, u64>,
    /// Derived: secret → accessor.
    #[serde(skip)]
    pub by_secret: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AclOp {
    SetToken(Token),
    DeleteToken(String),
    SetPolicy(Policy),
    DeletePolicy(String),
    SetRole(Role),
    DeleteRole(String),
    SetMethod(AuthMethod),
    /// Deletes the method, its binding rules and the tokens it made.
    DeleteMethod(String),
    SetBindingRule(BindingRule),
    DeleteBindingRule(String),
    /// Stores the token and marks the system bootstrapped; refused when it already is.
    Bootstrap(Token),
    /// A token made by an auth method; refused when its signed request was used before.
    Login {
        token: Token,
        replay: Option<(String, u64)>,
        now_ms: u64,
    },
    /// Deletes the tokens whose expiry (unix ms) is at or before the given time.
    ReapExpired {
        now_ms: u64,
        expiring: Vec<String>,
    },
}

impl AclTables {
    pub fn rebuild_index(&mut self) {
        self.by_secret = self
            .tokens
            .values()
            .map(|t| (t.secret_id.clone(), t.accessor_id.clone()))
            .collect();
    }

    pub fn token_by_secret(&self, secret: &str) -> Option<&Token> {
        self.by_secret.get(secret).and_then(|a| self.tokens.get(a))
    }

    pub fn policy_by_name(&self, name: &str) -> Option<&Policy> {
        self.policies.values().find(|p| p.name == name)
    }

    pub fn role_by_name(&self, name: &str) -> Option<&Role> {
        self.roles.values().find(|r| r.name == name)
    }

    fn put_token(&mut self, index: u64, t: &Token) -> Result<(), String> {
        if let Some(other) = self.by_secret.get(&t.secret_id)
            && other != &t.accessor_id
        {
            return Err("Invalid Token: SecretID is already in use".into());
        }
        let mut t = t.clone();
        match self.tokens.get(&t.accessor_id) {
            Some(old) => {
                t.create_index = old.create_index;
                self.by_secret.remove(&old.secret_id);
            }
            None => t.create_index = index,
        }
        t.modify_index = index;
        self.by_secret
            .insert(t.secret_id.clone(), t.accessor_id.clone());
        self.tokens.insert(t.accessor_id.clone(), t);
        Ok(())
    }

    fn delete_token(&mut self, accessor: &str) {
        if let Some(t) = self.tokens.remove(accessor) {
            self.by_secret.remove(&t.secret_id);
        }
    }
}

impl State {
    pub(super) fn apply_acl(
        &mut self,
        index: u64,
        op: &AclOp,
        changes: &mut Changes,
    ) -> CommandResult {
        let acl = &mut self.acl;
        let result = match op {
            AclOp::SetToken(t) => acl.put_token(index, t),
            AclOp::DeleteToken(a) => {
                acl.delete_token(a);
                Ok(())
            }
            AclOp::Bootstrap(t) => {
                if let Some(i) = acl.bootstrap_index {
                    Err(format!(
                        "Permission denied: ACL bootstrap no longer allowed (reset index: {i})"
                    ))
                } else {
                    acl.put_token(index, t)
                        .map(|()| acl.bootstrap_index = Some(index))
                }
            }
            AclOp::SetPolicy(p) => {
                if acl
                    .policies
                    .values()
                    .any(|o| o.name == p.name && o.id != p.id)
                {
                    Err(format!(
                        "Invalid Policy: A Policy with Name {:?} already exists",
                        p.name
                    ))
                } else {
                    let mut p = p.clone();
                    p.create_index = acl.policies.get(&p.id).map_or(index, |o| o.create_index);
                    p.modify_index = index;
                    acl.policies.insert(p.id.clone(), p);
                    Ok(())
                }
            }
            AclOp::DeletePolicy(id) => {
                acl.policies.remove(id);
                Ok(())
            }
            AclOp::SetRole(r) => {
                if acl.roles.values().any(|o| o.name == r.name && o.id != r.id) {
                    Err(format!(
                        "Invalid Role: A Role with Name {:?} already exists",
                        r.name
                    ))
                } else {
                    let mut r = r.clone();
                    r.create_index = acl.roles.get(&r.id).map_or(index, |o| o.create_index);
                    r.modify_index = index;
                    acl.roles.insert(r.id.clone(), r);
                    Ok(())
                }
            }
            AclOp::DeleteRole(id) => {
                acl.roles.remove(id);
                Ok(())
            }
            AclOp::SetMethod(m) => {
                let mut m = m.clone();
                m.create_index = acl.methods.get(&m.name).map_or(index, |o| o.create_index);
                m.modify_index = index;
                acl.methods.insert(m.name.clone(), m);
                Ok(())
            }
            AclOp::DeleteMethod(name) => {
                acl.methods.remove(name);
                acl.binding_rules.retain(|_, r| &r.auth_method != name);
                let made: Vec<String> = acl
                    .tokens
                    .values()
                    .filter(|t| &t.auth_method == name)
                    .map(|t| t.accessor_id.clone())
                    .collect();
                for a in made {
                    acl.delete_token(&a);
                }
                Ok(())
            }
            AclOp::SetBindingRule(r) => {
                if !acl.methods.contains_key(&r.auth_method) {
                    Err(format!(
                        "Invalid Binding Rule: unknown auth method {:?}",
                        r.auth_method
                    ))
                } else {
                    let mut r = r.clone();
                    r.create_index = acl
                        .binding_rules
                        .get(&r.id)
                        .map_or(index, |o| o.create_index);
                    r.modify_index = index;
                    acl.binding_rules.insert(r.id.clone(), r);
                    Ok(())
                }
            }
            AclOp::DeleteBindingRule(id) => {
                acl.binding_rules.remove(id);
                Ok(())
            }
            AclOp::Login {
                token,
                replay,
                now_ms,
            } => {
                acl.login_replays.retain(|_, until| *until > *now_ms);
                match replay {
                    Some((sig, _)) if acl.login_replays.contains_key(sig) => Err(
                        "Permission denied: this signed request was already used to log in; sign a new one"
                            .to_string(),
                    ),
                    _ => {
                        if let Some((sig, until)) = replay {
                            acl.login_replays.insert(sig.clone(), *until);
                        }
                        acl.put_token(index, token)
                    }
                }
            }
            AclOp::ReapExpired { expiring, .. } => {
                for a in expiring {
                    acl.delete_token(a);
                }
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                self.bump(Table::Acl, index, changes);
                CommandResult::Bool(true)
            }
            Err(e) => CommandResult::Rejected(e),
        }
    }
}
