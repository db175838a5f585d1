//! Cloud auto-join, as Consul's `-retry-join "provider=aws tag_key=K tag_value=V"`: the
//! addresses of the running EC2 instances carrying a tag, found with DescribeInstances and
//! found again on every retry, so servers that are replaced are found too.
//!
//! Keys: `provider` (only `aws`), `tag_key`, `tag_value`, `region` (default: the SDK's
//! chain: `AWS_REGION`, the profile, instance metadata), `addr_type` (`private_v4`, the
//! default, or `public_v4`), and `endpoint` (an EC2 API URL; `AWS_ENDPOINT_URL_EC2` works
//! too). Values may be quoted with `"` to hold spaces.

use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_ec2::types::Filter;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JoinError {
    #[error("retry-join {entry:?}: {reason}")]
    Parse { entry: String, reason: String },
    #[error("cloud auto-join (EC2 DescribeInstances, tag {tag}): {reason}")]
    Ec2 { tag: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrType {
    PrivateV4,
    PublicV4,
}

/// One `provider=aws ...` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsJoin {
    pub tag_key: String,
    pub tag_value: String,
    pub region: Option<String>,
    pub addr_type: AddrType,
    pub endpoint: Option<String>,
}

/// Whether a retry-join entry asks a cloud rather than naming a host.
pub fn is_cloud(entry: &str) -> bool {
    entry.trim_start().starts_with("provider=")
}

fn words(entry: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = entry.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.peek().copied() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') {
            return Err(format!("{key:?} is not KEY=VALUE"));
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let v: String = chars.by_ref().take_while(|c| *c != '"').collect();
            v
        } else {
            chars.by_ref().take_while(|c| !c.is_whitespace()).collect()
        };
        out.push((key, value));
    }
}

impl AwsJoin {
    /// `None` for an entry that names a host; an error for a cloud entry that is wrong.
    pub fn parse(entry: &str) -> Result<Option<AwsJoin>, JoinError> {
        if !is_cloud(entry) {
            return Ok(None);
        }
        let err = |reason: String| JoinError::Parse {
            entry: entry.to_string(),
            reason,
        };
        let mut j = AwsJoin {
            tag_key: String::new(),
            tag_value: String::new(),
            region: None,
            addr_type: AddrType::PrivateV4,
            endpoint: None,
        };
        for (k, v) in words(entry).map_err(err)? {
            match k.as_str() {
                "provider" if v == "aws" => {}
                "provider" => {
                    return Err(err(format!(
                        "provider {v:?} is not supported (only provider=aws)"
                    )));
                }
                "tag_key" => j.tag_key = v,
                "tag_value" => j.tag_value = v,
                "region" => j.region = Some(v).filter(|r| !r.is_empty()),
                "addr_type" => {
                    j.addr_type = match v.as_str() {
                        "private_v4" => AddrType::PrivateV4,
                        "public_v4" => AddrType::PublicV4,
                        _ => {
                            return Err(err(format!(
                                "addr_type {v:?}: use private_v4 or public_v4"
                            )));
                        }
                    }
                }
                "endpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(err(format!("endpoint {v:?} is not a URL")));
                    }
                    j.endpoint = Some(v);
                }
                other => {
                    return Err(err(format!(
                        "unknown key {other:?} (known: provider, tag_key, tag_value, region, addr_type, endpoint)"
                    )));
                }
            }
        }
        if j.tag_key.is_empty() || j.tag_value.is_empty() {
            return Err(err("tag_key and tag_value are required".into()));
        }
        Ok(Some(j))
    }

    fn tag(&self) -> String {
        format!("{}={}", self.tag_key, self.tag_value)
    }

    /// The addresses of the running instances with the tag, in a stable order.
    pub async fn resolve(&self) -> Result<Vec<IpAddr>, JoinError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(Duration::from_secs(15))
                    .build(),
            );
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let mut conf = aws_sdk_ec2::config::Builder::from(&sdk);
        if let Some(e) = &self.endpoint {
            conf = conf.endpoint_url(e);
        }
        let client = aws_sdk_ec2::Client::from_conf(conf.build());
        let fail = |reason: String| JoinError::Ec2 {
            tag: self.tag(),
            reason,
        };
        let mut pages = client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", self.tag_key))
                    .values(&self.tag_value)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| fail(berth_api::error_chain(&e)))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let ip = match self.addr_type {
                    AddrType::PrivateV4 => i.private_ip_address(),
                    AddrType::PublicV4 => i.public_ip_address(),
                };
                if let Some(ip) = ip.and_then(|s| s.parse::<IpAddr>().ok()) {
                    out.push(ip);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Checks every cloud entry of a retry-join list (for settings validation).
pub fn validate(entries: &[String]) -> Result<(), JoinError> {
    for e in entries {
        AwsJoin::parse(e)?;
    }
    Ok(())
}

/// The retry-join list with each cloud entry replaced by what it finds, as `IP:port`. A
/// cloud that fails is logged and contributes nothing this round; the caller retries.
pub async fn expand(entries: &[String], port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries {
        match AwsJoin::parse(e) {
            Ok(None) => out.push(e.clone()),
            Ok(Some(j)) => match j.resolve().await {
                Ok(ips) => {
                    if ips.is_empty() {
                        tracing::info!(tag = %j.tag(), "cloud auto-join found no running instance");
                    }
                    out.extend(ips.into_iter().map(|ip| match ip {
                        IpAddr::V4(v4) => format!("{v4}:{port}"),
                        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
                    }));
                }
                Err(err) => tracing::warn!(error = %err, "cloud auto-join failed; trying again"),
            },
            Err(err) => tracing::warn!(error = %err, "bad retry-join entry"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_consuls_form() {
        let j = AwsJoin::parse("provider=aws tag_key=berth-cluster tag_value=prod")
            .unwrap()
            .unwrap();
        assert_eq!(j.tag_key, "berth-cluster");
        assert_eq!(j.tag_value, "prod");
        assert_eq!(j.addr_type, AddrType::PrivateV4);
        assert_eq!(j.region, None);
        let j = AwsJoin::parse(
            "provider=aws  tag_key=k tag_value=\"a b\" region=eu-west-1 addr_type=public_v4 endpoint=http://127.0.0.1:5000",
        )
        .unwrap()
        .unwrap();
        assert_eq!(j.tag_value, "a b");
        assert_eq!(j.region.as_deref(), Some("eu-west-1"));
        assert_eq!(j.addr_type, AddrType::PublicV4);
        assert_eq!(j.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn hosts_are_not_cloud_entries() {
        assert_eq!(AwsJoin::parse("10.0.0.1:8300").unwrap(), None);
        assert_eq!(AwsJoin::parse("berth.internal").unwrap(), None);
        assert!(
            validate(&[
                "10.0.0.1".into(),
                "provider=aws tag_key=k tag_value=v".into()
            ])
            .is_ok()
        );
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let err = |s: &str| AwsJoin::parse(s).unwrap_err().to_string();
        assert!(err("provider=gce tag_key=k tag_value=v").contains("only provider=aws"));
        assert!(err("provider=aws tag_key=k").contains("tag_key and tag_value are required"));
        assert!(err("provider=aws tag_key=k tag_value=v zone=a").contains("unknown key \"zone\""));
        assert!(err("provider=aws tag_key=k tag_value=v addr_type=v6").contains("private_v4"));
        assert!(err("provider=aws tag_key=k tag_value=v endpoint=moto").contains("not a URL"));
        assert!(err("provider=aws junk").contains("not KEY=VALUE"));
    }
}
