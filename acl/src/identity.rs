//! The resolved identity of a request: whose token it was and what it may do.

use crate::rules::{Access, Authorizer, Resource, Rules};

/// Attached to every request by the server's ACL layer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub accessor_id: String,
    pub authz: Authorizer,
    /// False when ACLs are disabled: everything is allowed and nothing is filtered.
    pub enforce: bool,
}

/// A refusal, worded as Consul words it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "Permission denied: token with AccessorID '{accessor}' lacks permission '{permission}'{on}"
)]
pub struct Denied {
    pub accessor: String,
    pub permission: String,
    pub on: String,
}

impl Identity {
    /// ACLs disabled.
    pub fn unrestricted() -> Self {
        Identity {
            accessor_id: String::new(),
            authz: Authorizer::new(Rules::default(), true, true),
            enforce: false,
        }
    }

    /// Enforced, with no grants at all.
    pub fn nobody() -> Self {
        Identity {
            accessor_id: crate::ANONYMOUS_ACCESSOR.to_string(),
            authz: Authorizer::new(Rules::default(), false, false),
            enforce: true,
        }
    }

    pub fn can(&self, r: Resource, name: &str, want: Access) -> bool {
        !self.enforce || self.authz.allowed(r, name, want)
    }

    /// `intentions:read|write` on a destination service.
    pub fn check_intentions(&self, service: &str, want: Access) -> Result<(), Denied> {
        if !self.enforce || self.authz.intentions_allowed(service, want) {
            return Ok(());
        }
        Err(Denied {
            accessor: self.accessor_id.clone(),
            permission: format!("intentions:{}", want.as_str()),
            on: format!(" on {service:?}"),
        })
    }

    pub fn check(&self, r: Resource, name: &str, want: Access) -> Result<(), Denied> {
        if self.can(r, name, want) {
            return Ok(());
        }
        let named = !matches!(
            r,
            Resource::Operator | Resource::Acl | Resource::Mesh | Resource::Keyring
        );
        Err(Denied {
            accessor: self.accessor_id.clone(),
            permission: Authorizer::permission(r, want),
            on: if named {
                format!(" on {name:?}")
            } else {
                String::new()
            },
        })
    }
}
