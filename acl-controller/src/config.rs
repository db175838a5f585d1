//! The controller's settings: flags over `BERTH_*` environment over the controller's own
//! task metadata. Resolved by a pure function so every rule is unit-tested without touching
//! the process environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_ecs::TaskMetadata;

/// Flags exactly as given; `None` means "not on the command line".
#[derive(clap::Parser, Debug, Default, Clone)]
#[command(
    name = "berth-acl-controller",
    version,
    about = "Sets up the ECS auth methods and removes the tokens, services and nodes of stopped tasks.",
    after_help = "Every flag can also be set as BERTH_<FLAG> (BERTH_HTTP_ADDR, BERTH_CLUSTER, ...); \
                  the token also as BERTH_HTTP_TOKEN or BERTH_HTTP_TOKEN_FILE, the region as AWS_REGION."
)]
pub struct Flags {
    /// A server's HTTP API [default: http://127.0.0.1:8500]
    #[arg(long = "http-addr")]
    pub http_addr: Option<String>,
    /// A token with acl:write, node:write and session:write (e.g. the bootstrap token).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    #[arg(long = "token-file")]
    pub token_file: Option<PathBuf>,
    /// The ECS cluster (name or ARN) whose tasks this controller looks after [default: the
    /// controller's own]. Without it, -once only sets up.
    #[arg(long)]
    pub cluster: Option<String>,
    /// [default: AWS_REGION, else the cluster ARN's, else the controller's own task's]
    #[arg(long)]
    pub region: Option<String>,
    /// [default: the controller's own task's, else aws]
    #[arg(long)]
    pub partition: Option<String>,
    /// [default: the controller's own task's]
    #[arg(long)]
    pub account: Option<String>,
    /// Task roles under this path may log in [default: /berth/]
    #[arg(long = "iam-role-path")]
    pub iam_role_path: Option<String>,
    /// How often to reconcile [default: 10s]
    #[arg(long)]
    pub interval: Option<String>,
    /// The ECS API endpoint [default: the region's]
    #[arg(long = "ecs-endpoint")]
    pub ecs_endpoint: Option<String>,
    /// Written into the auth methods' STSEndpoint.
    #[arg(long = "sts-endpoint")]
    pub sts_endpoint: Option<String>,
    /// Written into the auth methods' IAMEndpoint.
    #[arg(long = "iam-endpoint")]
    pub iam_endpoint: Option<String>,
    /// The auth methods' ServerIDHeaderValue.
    #[arg(long = "server-id-header-value")]
    pub server_id_header_value: Option<String>,
    /// TTL of the session that holds the controller lock; a standby takes over this long
    /// after the active controller stops renewing [default: 15s]
    #[arg(long = "session-ttl")]
    pub session_ttl: Option<String>,
    /// Where /metrics is served; "off" for nowhere [default: 0.0.0.0:9102, none with -once]
    #[arg(long = "metrics-addr")]
    pub metrics_addr: Option<String>,
    /// Set up and reconcile once, then exit 0.
    #[arg(long)]
    pub once: bool,
    #[arg(long = "log-json")]
    pub log_json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    None,
    Inline(String),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub arn: String,
    pub name: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub http_addr: String,
    pub token: TokenSource,
    /// `None`: set up only (`-once` without a cluster).
    pub cluster: Option<Cluster>,
    pub partition: String,
    pub account: String,
    pub iam_role_path: String,
    pub interval: Duration,
    pub ecs_endpoint: Option<String>,
    pub sts_endpoint: Option<String>,
    pub iam_endpoint: Option<String>,
    pub server_id_header_value: Option<String>,
    pub session_ttl: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub once: bool,
    pub log_json: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("no AWS account: give -account (or run the controller in an ECS task)")]
    NoAccount,
    #[error(
        "no ECS cluster: give -cluster NAME_OR_ARN (or run the controller in the cluster's task)"
    )]
    NoCluster,
    #[error("-cluster {0:?} is a name, so the region is needed: give -region")]
    NoRegion(String),
    #[error(
        "-cluster {0:?} is not an ECS cluster ARN (arn:PARTITION:ecs:REGION:ACCOUNT:cluster/NAME)"
    )]
    BadClusterArn(String),
    #[error("-{flag} {value:?}: {reason}")]
    Bad {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Bad {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl Config {
    /// Flags, then `env` (`BERTH_*`, and `AWS_REGION`), then the controller's own task.
    pub fn resolve(
        f: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
        task: Option<&TaskMetadata>,
    ) -> Result<Config, ConfigError> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let pick = |flag: &Option<String>, var: &str| flag.clone().or_else(|| env(var));

        let http_addr =
            pick(&f.http_addr, "BERTH_HTTP_ADDR").unwrap_or_else(|| "http://127.0.0.1:8500".into());
        if !(http_addr.starts_with("http://") || http_addr.starts_with("https://")) {
            return Err(bad(
                "http-addr",
                &http_addr,
                "must be a URL: http://HOST:PORT or https://HOST:PORT",
            ));
        }
        let token = match (&f.token, &f.token_file) {
            (Some(t), _) => TokenSource::Inline(t.clone()),
            (None, Some(p)) => TokenSource::File(p.clone()),
            (None, None) => match (
                env("BERTH_TOKEN").or_else(|| env("BERTH_HTTP_TOKEN")),
                env("BERTH_TOKEN_FILE").or_else(|| env("BERTH_HTTP_TOKEN_FILE")),
            ) {
                (Some(t), _) => TokenSource::Inline(t),
                (None, Some(p)) => TokenSource::File(p.into()),
                (None, None) => TokenSource::None,
            },
        };
        let account = pick(&f.account, "BERTH_ACCOUNT")
            .or_else(|| task.and_then(|t| t.account().map(str::to_string)))
            .ok_or(ConfigError::NoAccount)?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("account", &account, "an AWS account ID is 12 digits"));
        }
        let partition = pick(&f.partition, "BERTH_PARTITION")
            .or_else(|| task.and_then(|t| t.partition().map(str::to_string)))
            .unwrap_or_else(|| "aws".into());
        let iam_role_path =
            pick(&f.iam_role_path, "BERTH_IAM_ROLE_PATH").unwrap_or_else(|| "/berth/".into());
        if !iam_role_path.starts_with('/') || !iam_role_path.ends_with('/') {
            return Err(bad(
                "iam-role-path",
                &iam_role_path,
                "an IAM path starts and ends with /",
            ));
        }
        let interval = duration(&f.interval, "BERTH_INTERVAL", "interval", "10s", &env)?;
        if interval < Duration::from_secs(1) {
            return Err(bad("interval", &format!("{interval:?}"), "at least 1s"));
        }
        let session_ttl = duration(
            &f.session_ttl,
            "BERTH_SESSION_TTL",
            "session-ttl",
            "15s",
            &env,
        )?;
        if !(Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&session_ttl) {
            return Err(bad(
                "session-ttl",
                &format!("{session_ttl:?}"),
                "between 10s and 24h, as the servers allow",
            ));
        }
        let region = pick(&f.region, "BERTH_REGION")
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"));
        let cluster = match pick(&f.cluster, "BERTH_CLUSTER") {
            Some(c) => Some(cluster(&c, region.as_deref(), &partition, &account)?),
            None => match task.filter(|t| !t.task_arn.is_empty()) {
                Some(t) => Some(cluster(&t.cluster_arn(), None, &partition, &account)?),
                None if f.once => None,
                None => return Err(ConfigError::NoCluster),
            },
        };
        let once = f.once;
        let metrics_addr = match pick(&f.metrics_addr, "BERTH_METRICS_ADDR") {
            Some(a) if a == "off" => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .map_err(|e| bad("metrics-addr", &a, format!("not HOST:PORT ({e})")))?,
            ),
            None if once => None,
            None => Some(SocketAddr::from(([0, 0, 0, 0], 9102))),
        };
        let ecs_endpoint = pick(&f.ecs_endpoint, "BERTH_ECS_ENDPOINT");
        let sts_endpoint = pick(&f.sts_endpoint, "BERTH_STS_ENDPOINT");
        let iam_endpoint = pick(&f.iam_endpoint, "BERTH_IAM_ENDPOINT");
        for (flag, v) in [
            ("ecs-endpoint", &ecs_endpoint),
            ("sts-endpoint", &sts_endpoint),
            ("iam-endpoint", &iam_endpoint),
        ] {
            if let Some(v) = v
                && !(v.starts_with("http://") || v.starts_with("https://"))
            {
                return Err(bad(flag, v, "must be a URL"));
            }
        }
        Ok(Config {
            http_addr,
            token,
            cluster,
            partition,
            account,
            iam_role_path,
            interval,
            ecs_endpoint,
            sts_endpoint,
            iam_endpoint,
            server_id_header_value: pick(&f.server_id_header_value, "BERTH_SERVER_ID_HEADER_VALUE"),
            session_ttl,
            metrics_addr,
            once,
            log_json: f.log_json || env("BERTH_LOG_JSON").is_some_and(|v| truthy(&v)),
        })
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
}

fn duration(
    flag: &Option<String>,
    var: &str,
    name: &'static str,
    default: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Duration, ConfigError> {
    let v = flag
        .clone()
        .or_else(|| env(var))
        .unwrap_or_else(|| default.into());
    berth_api::parse_duration(&v).map_err(|e| bad(name, &v, e.to_string()))
}

/// A cluster given by name or ARN, with the region it is in.
fn cluster(
    given: &str,
    region: Option<&str>,
    partition: &str,
    account: &str,
) -> Result<Cluster, ConfigError> {
    if let Some(rest) = given.strip_prefix("arn:") {
        // arn:PARTITION:ecs:REGION:ACCOUNT:cluster/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [p, "ecs", r, a, resource] = parts.as_slice() else {
            return Err(ConfigError::BadClusterArn(given.into()));
        };
        let name = resource
            .strip_prefix("cluster/")
            .filter(|n| !n.is_empty() && !n.contains('/'));
        match name {
            Some(name) if !p.is_empty() && !r.is_empty() && a.len() == 12 => Ok(Cluster {
                arn: given.to_string(),
                name: name.to_string(),
                region: region.unwrap_or(r).to_string(),
            }),
            _ => Err(ConfigError::BadClusterArn(given.into())),
        }
    } else {
        if given.is_empty()
            || given.len() > 255
            || !given
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "cluster",
                given,
                "a cluster name is 1-255 letters, digits, - and _",
            ));
        }
        let region = region.ok_or_else(|| ConfigError::NoRegion(given.into()))?;
        Ok(Cluster {
            arn: format!("arn:{partition}:ecs:{region}:{account}:cluster/{given}"),
            name: given.to_string(),
            region: region.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["berth-acl-controller"];
        v.extend_from_slice(args);
        Flags::try_parse_from(v).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn task() -> TaskMetadata {
        serde_json::from_value(serde_json::json!({
            "Cluster": "arn:aws-cn:ecs:cn-north-1:210987654321:cluster/prod",
            "TaskARN": "arn:aws-cn:ecs:cn-north-1:210987654321:task/prod/abc",
        }))
        .unwrap()
    }

    #[test]
    fn defaults_need_only_account_and_cluster() {
        let c = Config::resolve(
            &flags(&[
                "--account",
                "123456789012",
                "--cluster",
                "mesh",
                "--region",
                "eu-west-1",
            ]),
            &no_env,
            None,
        )
        .unwrap();
        assert_eq!(c.http_addr, "http://127.0.0.1:8500");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.session_ttl, Duration::from_secs(15));
        assert_eq!(c.iam_role_path, "/berth/");
        assert_eq!(c.partition, "aws");
        assert_eq!(c.token, TokenSource::None);
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9102".parse().unwrap()));
        let cl = c.cluster.unwrap();
        assert_eq!(cl.arn, "arn:aws:ecs:eu-west-1:123456789012:cluster/mesh");
        assert_eq!(cl.region, "eu-west-1");
    }

    #[test]
    fn flags_beat_env_which_beats_the_task() {
        let env = |k: &str| {
            match k {
                "BERTH_ACCOUNT" => Some("111111111111"),
                "BERTH_INTERVAL" => Some("3s"),
                "BERTH_CLUSTER" => Some("from-env"),
                "AWS_REGION" => Some("us-west-2"),
                "BERTH_HTTP_TOKEN_FILE" => Some("/run/token"),
                "BERTH_LOG_JSON" => Some("true"),
                _ => None,
            }
            .map(str::to_string)
        };
        let c = Config::resolve(&flags(&["--interval", "2s"]), &env, Some(&task())).unwrap();
        assert_eq!(c.account, "111111111111");
        assert_eq!(c.interval, Duration::from_secs(2));
        // The task supplies the partition nothing else gave.
        assert_eq!(c.partition, "aws-cn");
        assert_eq!(
            c.cluster.unwrap().arn,
            "arn:aws-cn:ecs:us-west-2:111111111111:cluster/from-env"
        );
        assert_eq!(c.token, TokenSource::File("/run/token".into()));
        assert!(c.log_json);
        let c = Config::resolve(&flags(&["--token", "t"]), &env, None).unwrap();
        assert_eq!(c.token, TokenSource::Inline("t".into()));
    }

    #[test]
    fn the_task_supplies_account_partition_and_cluster() {
        let c = Config::resolve(&flags(&[]), &no_env, Some(&task())).unwrap();
        assert_eq!(c.account, "210987654321");
        assert_eq!(c.partition, "aws-cn");
        let cl = c.cluster.unwrap();
        assert_eq!(
            cl.arn,
            "arn:aws-cn:ecs:cn-north-1:210987654321:cluster/prod"
        );
        assert_eq!(cl.name, "prod");
        assert_eq!(cl.region, "cn-north-1");
    }

    #[test]
    fn a_cluster_arn_gives_its_region() {
        let c = Config::resolve(
            &flags(&[
                "--account",
                "123456789012",
                "--cluster",
                "arn:aws:ecs:ap-south-1:123456789012:cluster/x",
            ]),
            &no_env,
            None,
        )
        .unwrap();
        assert_eq!(c.cluster.unwrap().region, "ap-south-1");
    }

    #[test]
    fn once_without_a_cluster_only_sets_up_and_serves_no_metrics() {
        let c = Config::resolve(
            &flags(&["--account", "123456789012", "--once"]),
            &no_env,
            None,
        )
        .unwrap();
        assert_eq!(c.cluster, None);
        assert_eq!(c.metrics_addr, None);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |args: &[&str]| {
            Config::resolve(&flags(args), &no_env, None)
                .unwrap_err()
                .to_string()
        };
        let a = ["--account", "123456789012"];
        assert!(err(&[]).contains("no AWS account"));
        assert!(err(&a).contains("no ECS cluster"));
        assert!(err(&[&a[..], &["--cluster", "mesh"]].concat()).contains("give -region"));
        assert!(
            err(&[&a[..], &["--cluster", "arn:aws:ecs:x"]].concat())
                .contains("not an ECS cluster ARN")
        );
        assert!(
            err(&[&a[..], &["--cluster", "a b", "--region", "r"]].concat()).contains("-cluster")
        );
        let c = ["--cluster", "mesh", "--region", "r"];
        let with = |more: &[&str]| err(&[&a[..], &c[..], more].concat());
        assert!(with(&["--interval", "soon"]).starts_with("-interval \"soon\""));
        assert!(with(&["--interval", "10ms"]).contains("at least 1s"));
        assert!(with(&["--session-ttl", "5s"]).contains("between 10s and 24h"));
        assert!(with(&["--http-addr", "127.0.0.1:8500"]).contains("must be a URL"));
        assert!(with(&["--metrics-addr", "nine"]).contains("-metrics-addr"));
        assert!(with(&["--ecs-endpoint", "localhost:1"]).contains("-ecs-endpoint"));
        assert!(with(&["--iam-role-path", "berth"]).contains("starts and ends with /"));
        assert!(err(&["--account", "12", "--once"]).contains("12 digits"));
    }
}
