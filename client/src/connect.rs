//! `berth connect envoy`: the Envoy bootstrap for a proxy registered with the local agent
//! (delta ADS to the agent's xDS address, admin on loopback), printed with `-bootstrap` or
//! handed to Envoy, which then replaces this process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::http::{Api, HttpArgs};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(subcommand)]
    pub command: ConnectCommand,
}

#[derive(Subcommand, Debug)]
pub enum ConnectCommand {
    /// Print Envoy's bootstrap for a local proxy (-bootstrap), or run Envoy with it.
    Envoy(EnvoyArgs),
}

#[derive(Args, Debug)]
pub struct EnvoyArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    /// The proxy's service ID as registered with the agent.
    #[arg(long = "proxy-id")]
    pub proxy_id: String,
    /// Print the bootstrap JSON instead of running Envoy.
    #[arg(long)]
    pub bootstrap: bool,
    /// Envoy's admin API.
    #[arg(long = "admin-bind", default_value = "127.0.0.1:19000")]
    pub admin_bind: SocketAddr,
    /// The agent's xDS address.
    #[arg(
        long = "xds-addr",
        env = "BERTH_XDS_ADDR",
        default_value = "127.0.0.1:8502"
    )]
    pub xds_addr: SocketAddr,
    /// The Envoy binary (without -bootstrap).
    #[arg(
        long = "envoy-binary",
        env = "BERTH_ENVOY_BINARY",
        default_value = "envoy"
    )]
    pub envoy_binary: PathBuf,
    /// Where to write the bootstrap for Envoy (mode 0600: it holds the token).
    #[arg(
        long = "bootstrap-file",
        default_value = "/tmp/berth-envoy-bootstrap.json"
    )]
    pub bootstrap_file: PathBuf,
    /// Arguments for Envoy, after `--`.
    #[arg(last = true)]
    pub envoy_args: Vec<String>,
}

/// The `node.cluster` of a proxy: the service it fronts.
pub fn cluster_of(service: &Value) -> Option<String> {
    let kind = service.get("Kind").and_then(Value::as_str).unwrap_or("");
    if kind != "connect-proxy" {
        return None;
    }
    service
        .get("Proxy")
        .and_then(|p| p.get("DestinationServiceName"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub async fn run(a: ConnectArgs) -> anyhow::Result<()> {
    let ConnectCommand::Envoy(e) = a.command;
    let api = Api::new(&e.http)?;
    let token = api.token().map(str::to_string);
    let service: Value = api
        .get(&["agent", "service", &e.proxy_id], &[])
        .await
        .map_err(|err| {
            anyhow::anyhow!("cannot read proxy {:?} from the agent: {err}", e.proxy_id)
        })?;
    let Some(cluster) = cluster_of(&service) else {
        bail!("service {:?} is not a connect-proxy", e.proxy_id);
    };
    let boot = berth_xds::bootstrap_json(
        &e.proxy_id,
        &cluster,
        e.xds_addr,
        e.admin_bind,
        token.as_deref(),
    );
    let text = serde_json::to_string_pretty(&boot)?;
    if e.bootstrap {
        println!("{text}");
        return Ok(());
    }
    crate::login::write_secret_file(&e.bootstrap_file, &text)?;
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&e.envoy_binary)
        .arg("--config-path")
        .arg(&e.bootstrap_file)
        .args(&e.envoy_args)
        .exec();
    bail!("cannot run {}: {err}", e.envoy_binary.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_is_the_destination() {
        let p = json!({"Kind": "connect-proxy", "Proxy": {"DestinationServiceName": "web"}});
        assert_eq!(cluster_of(&p).as_deref(), Some("web"));
        assert_eq!(cluster_of(&json!({"Kind": "", "Service": "web"})), None);
    }
}
