//! Consul's ACL rule language and the authorizer.
//!
//! A policy's `Rules` (HCL or JSON) parse into [`Rules`]; a token's policies, roles, service and
//! node identities and templated policies all become `Rules`, and an [`Authorizer`] built from
//! them answers "may this token read/write resource R named N?" with Consul's precedence:
//! an exact rule beats a prefix rule, the longest prefix wins, and at equal specificity
//! `deny` wins over any grant, otherwise the most permissive grant wins. Nothing matching
//! falls to the default policy. `write` implies `read`.

mod identity;
mod rules;
mod templates;

pub use identity::{Denied, Identity};
pub use rules::{Access, Authorizer, Resource, Rules, RulesError, parse_rules};
pub use templates::{
    NODE_TEMPLATE, SERVICE_TEMPLATE, TemplateError, node_identity_rules, service_identity_rules,
    template_rules, templates,
};

/// The IDs Consul reserves.
pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";
pub const GLOBAL_MANAGEMENT_NAME: &str = "global-management";
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
pub const ANONYMOUS_SECRET: &str = "anonymous";
