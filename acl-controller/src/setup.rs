//! The ACL setup ECS tasks log in with: two `aws-iam` auth methods, the client agents'
//! policy and role, and the binding rules. Idempotent, and merging: what an operator added
//! (another bound ARN, other config keys, other rules) is kept.

use serde_json::{Value, json};

use crate::api::{Api, ApiError};

pub const SERVICE_METHOD: &str = "berth-ecs-service";
pub const CLIENT_METHOD: &str = "berth-ecs-client";
pub const CLIENT_POLICY: &str = "berth-ecs-client-policy";
pub const CLIENT_ROLE: &str = "berth-ecs-client-role";
pub const SERVICE_NAME_TAG: &str = "berth.service-name";
const CLIENT_RULES: &str =
    "node_prefix \"\" {\n  policy = \"write\"\n}\nservice_prefix \"\" {\n  policy = \"read\"\n}\n";

#[derive(Debug, Clone, PartialEq)]
pub struct SetupConfig {
    pub partition: String,
    pub account: String,
    pub iam_role_path: String,
    pub sts_endpoint: Option<String>,
    pub iam_endpoint: Option<String>,
    pub server_id_header_value: Option<String>,
}

impl SetupConfig {
    /// `arn:<partition>:iam::<account>:role<path>*`: every role under the path.
    pub fn bound_arn(&self) -> String {
        let mut path = self.iam_role_path.clone();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if !path.ends_with('/') {
            path.push('/');
        }
        format!("arn:{}:iam::{}:role{path}*", self.partition, self.account)
    }

    /// The method's config, merged over what exists.
    pub fn method_config(&self, existing: Option<&Value>) -> Value {
        let mut cfg = existing
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut arns: Vec<Value> = cfg
            .get("BoundIAMPrincipalARNs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ours = Value::String(self.bound_arn());
        if !arns.contains(&ours) {
            arns.insert(0, ours);
        }
        cfg.insert("BoundIAMPrincipalARNs".into(), Value::Array(arns));
        cfg.insert("EnableIAMEntityDetails".into(), json!(true));
        let mut tags: Vec<Value> = cfg
            .get("IAMEntityTags")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !tags.contains(&json!(SERVICE_NAME_TAG)) {
            tags.push(json!(SERVICE_NAME_TAG));
        }
        cfg.insert("IAMEntityTags".into(), Value::Array(tags));
        for (k, v) in [
            ("STSEndpoint", &self.sts_endpoint),
            ("IAMEndpoint", &self.iam_endpoint),
            ("ServerIDHeaderValue", &self.server_id_header_value),
        ] {
            if let Some(v) = v {
                cfg.insert(k.into(), json!(v));
            }
        }
        Value::Object(cfg)
    }
}

/// What one run of the setup did, for the log.
#[derive(Debug, Default, PartialEq)]
pub struct Changes(pub Vec<String>);

pub async fn run(api: &Api, cfg: &SetupConfig) -> Result<Changes, ApiError> {
    let mut changes = Changes::default();
    for (name, description) in [
        (SERVICE_METHOD, "ECS tasks' services (their task roles)"),
        (CLIENT_METHOD, "ECS tasks' client agents"),
    ] {
        let existing = api.get_opt(&format!("/v1/acl/auth-method/{name}")).await?;
        let config = cfg.method_config(existing.as_ref().and_then(|m| m.get("Config")));
        match existing {
            None => {
                api.put(
                    "/v1/acl/auth-method",
                    &json!({"Name": name, "Type": "aws-iam", "Description": description, "Config": config}),
                )
                .await?;
                changes.0.push(format!("created auth method {name}"));
            }
            Some(mut m) if m.get("Config") != Some(&config) => {
                m["Config"] = config;
                api.put(&format!("/v1/acl/auth-method/{name}"), &m).await?;
                changes.0.push(format!("updated auth method {name}"));
            }
            Some(_) => {}
        }
    }

    let policy = api
        .get_opt(&format!("/v1/acl/policy/name/{CLIENT_POLICY}"))
        .await?;
    match policy {
        None => {
            api.put(
                "/v1/acl/policy",
                &json!({"Name": CLIENT_POLICY, "Description": "Berth client agents in ECS tasks", "Rules": CLIENT_RULES}),
            )
            .await?;
            changes.0.push(format!("created policy {CLIENT_POLICY}"));
        }
        Some(mut p) if p.get("Rules").and_then(Value::as_str) != Some(CLIENT_RULES) => {
            let id = p["ID"].as_str().unwrap_or_default().to_string();
            p["Rules"] = json!(CLIENT_RULES);
            api.put(&format!("/v1/acl/policy/{id}"), &p).await?;
            changes.0.push(format!("updated policy {CLIENT_POLICY}"));
        }
        Some(_) => {}
    }
    let role = api
        .get_opt(&format!("/v1/acl/role/name/{CLIENT_ROLE}"))
        .await?;
    match role {
        None => {
            api.put(
                "/v1/acl/role",
                &json!({"Name": CLIENT_ROLE, "Description": "Berth client agents in ECS tasks", "Policies": [{"Name": CLIENT_POLICY}]}),
            )
            .await?;
            changes.0.push(format!("created role {CLIENT_ROLE}"));
        }
        Some(mut r) => {
            let policies = r["Policies"].as_array().cloned().unwrap_or_default();
            if !policies.iter().any(|p| p["Name"] == CLIENT_POLICY) {
                let mut p = policies;
                p.push(json!({"Name": CLIENT_POLICY}));
                r["Policies"] = Value::Array(p);
                let id = r["ID"].as_str().unwrap_or_default().to_string();
                api.put(&format!("/v1/acl/role/{id}"), &r).await?;
                changes
                    .0
                    .push(format!("added {CLIENT_POLICY} to role {CLIENT_ROLE}"));
            }
        }
    }

    for (method, bind_type, bind_name, description) in [
        (
            SERVICE_METHOD,
            "service",
            format!("${{entity_tags.{SERVICE_NAME_TAG}}}"),
            "the service named by the task role's tag",
        ),
        (
            CLIENT_METHOD,
            "role",
            CLIENT_ROLE.to_string(),
            "client agents",
        ),
    ] {
        let rules = api
            .get_opt(&format!("/v1/acl/binding-rules?authmethod={method}"))
            .await?
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let present = rules
            .iter()
            .any(|r| r["BindType"] == bind_type && r["BindName"] == bind_name.as_str());
        if !present {
            api.put(
                "/v1/acl/binding-rule",
                &json!({"AuthMethod": method, "BindType": bind_type, "BindName": bind_name, "Description": description}),
            )
            .await?;
            changes.0.push(format!(
                "created binding rule {bind_type} {bind_name} for {method}"
            ));
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SetupConfig {
        SetupConfig {
            partition: "aws".into(),
            account: "123456789012".into(),
            iam_role_path: "/berth/".into(),
            sts_endpoint: Some("http://sts.local".into()),
            iam_endpoint: None,
            server_id_header_value: None,
        }
    }

    #[test]
    fn the_bound_arn_covers_the_role_path() {
        assert_eq!(cfg().bound_arn(), "arn:aws:iam::123456789012:role/berth/*");
        let c = SetupConfig {
            iam_role_path: "teams/a".into(),
            partition: "aws-cn".into(),
            ..cfg()
        };
        assert_eq!(c.bound_arn(), "arn:aws-cn:iam::123456789012:role/teams/a/*");
    }

    #[test]
    fn an_operators_additions_survive_the_merge() {
        let existing = json!({
            "BoundIAMPrincipalARNs": ["arn:aws:iam::123456789012:role/ops/extra"],
            "MaxRetries": 3,
            "IAMEntityTags": ["team"]
        });
        let m = cfg().method_config(Some(&existing));
        assert_eq!(
            m["BoundIAMPrincipalARNs"],
            json!([
                "arn:aws:iam::123456789012:role/berth/*",
                "arn:aws:iam::123456789012:role/ops/extra"
            ])
        );
        assert_eq!(m["MaxRetries"], 3);
        assert_eq!(m["IAMEntityTags"], json!(["team", "berth.service-name"]));
        assert_eq!(m["EnableIAMEntityDetails"], true);
        assert_eq!(m["STSEndpoint"], "http://sts.local");
        // Merging again changes nothing.
        assert_eq!(cfg().method_config(Some(&m)), m);
    }
}
