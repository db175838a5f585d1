//! Envoy's admin API as the entrypoint uses it (where it listens, `/ready`, the drain), and
//! the `net-dial` probe.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use berth_ecs::error_chain;
use serde_json::Value;

/// Health checks run every few seconds; an answer slower than this is as bad as none.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `HOST:PORT`, with IPv6 hosts bracketed (`[::1]:19000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    pub fn url(&self, path: &str) -> String {
        format!("http://{self}{path}")
    }
}

/// Parses `HOST:PORT` (`[v6]:PORT` for IPv6); a leading `http://` is tolerated because an
/// admin "address" is often copied from a URL.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let t = s.trim();
    let t = t.strip_prefix("http://").unwrap_or(t).trim_end_matches('/');
    let bad = |why: &str| format!("{s:?} is not HOST:PORT: {why}");
    let (host, port) = t.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(|| bad("unclosed ["))?,
        None if host.contains(':') => return Err(bad("bracket an IPv6 address: [::1]:PORT")),
        None => host,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// The bootstrap file of an Envoy command line: `-c FILE`, `--config-path FILE` or
/// `--config-path=FILE`.
pub fn config_path(command: &[OsString]) -> Option<PathBuf> {
    let mut args = command.iter().skip(1);
    while let Some(a) = args.next() {
        let s = a.to_str().unwrap_or("");
        if s == "-c" || s == "--config-path" {
            return args.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config-path=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// `admin.address.socket_address` of a bootstrap document, with a wildcard bind address
/// turned into loopback (that is where the entrypoint, in the same network namespace,
/// reaches it).
pub fn admin_from_bootstrap(doc: &Value) -> Option<HostPort> {
    let sa = doc.pointer("/admin/address/socket_address")?;
    let host = sa.get("address")?.as_str()?;
    // Proto JSON allows a uint32 as a number or as a string.
    let port = match sa.get("port_value")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .and_then(|p| u16::try_from(p).ok())
    .filter(|p| *p != 0)?;
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        h => h,
    };
    Some(HostPort {
        host: host.to_string(),
        port,
    })
}

/// The admin address to drain: the flag, else the bootstrap's, else the default.
pub fn resolve(flag: Option<&HostPort>, command: &[OsString]) -> HostPort {
    if let Some(a) = flag {
        return a.clone();
    }
    let default = || {
        parse_host_port(crate::DEFAULT_ADMIN_ADDR).unwrap_or(HostPort {
            host: "127.0.0.1".into(),
            port: 19000,
        })
    };
    let Some(path) = config_path(command) else {
        return default();
    };
    let from_file = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
        .and_then(|doc| admin_from_bootstrap(&doc).ok_or_else(|| "no admin.address".to_string()));
    match from_file {
        Ok(a) => a,
        Err(e) => {
            let d = default();
            tracing::warn!(
                bootstrap = %path.display(),
                error = %e,
                "cannot read Envoy's admin address from the bootstrap; using {d}"
            );
            d
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach Envoy's admin at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Envoy's admin {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        // The admin and the dialled address are local; a proxy from the environment would
        // only get in the way.
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// Answers on one line, however many Envoy sent.
fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

async fn request(req: reqwest::RequestBuilder, url: &str) -> Result<(u16, String), AdminError> {
    let r = req.send().await.map_err(|e| AdminError::Unreachable {
        url: url.to_string(),
        reason: error_chain(&e),
    })?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| AdminError::Unreachable {
        url: url.to_string(),
        reason: error_chain(&e),
    })?;
    Ok((status, body))
}

/// Starts Envoy's graceful drain of its inbound listeners: for `--drain-time-s` Envoy
/// discourages new requests on them (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY) and then
/// stops them, while outbound listeners keep serving the application's own calls.
pub async fn start_drain(admin: &HostPort) -> Result<(), AdminError> {
    let url = admin.url("/drain_listeners?graceful&inboundonly");
    let (status, body) = request(client(PROBE_TIMEOUT).post(&url), &url).await?;
    if status == 200 {
        Ok(())
    } else {
        Err(AdminError::Status {
            url,
            status,
            body: one_line(&body),
        })
    }
}

/// `ready`: 0 when `/ready` says 200 `LIVE`, else 1 with what it saw.
pub async fn ready(admin: &HostPort) -> i32 {
    let url = admin.url("/ready");
    match request(client(PROBE_TIMEOUT).get(&url), &url).await {
        Ok((200, body)) if body.trim() == "LIVE" => {
            println!("LIVE");
            0
        }
        Ok((status, body)) => {
            let e = AdminError::Status {
                url,
                status,
                body: one_line(&body),
            };
            eprintln!("not ready: {e}");
            1
        }
        Err(e) => {
            eprintln!("not ready: {e}");
            1
        }
    }
}

/// `net-dial`: 0 when a TCP connection opens in time, else 1.
pub async fn net_dial(addr: &HostPort) -> i32 {
    let connect = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port));
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(_)) => {
            println!("connected to {addr}");
            0
        }
        Ok(Err(e)) => {
            eprintln!("cannot connect to {addr}: {e}");
            1
        }
        Err(_) => {
            eprintln!("cannot connect to {addr}: no answer within {PROBE_TIMEOUT:?}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("127.0.0.1:19000"),
            Ok(hp("127.0.0.1", 19000))
        );
        assert_eq!(parse_host_port("localhost:80"), Ok(hp("localhost", 80)));
        assert_eq!(parse_host_port("[::1]:443"), Ok(hp("::1", 443)));
        assert_eq!(
            parse_host_port("http://127.0.0.1:1/"),
            Ok(hp("127.0.0.1", 1))
        );
        for bad in [
            "", "host", ":80", "h:", "h:x", "h:0", "h:70000", "::1:80", "[::1:80",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(hp("::1", 5).to_string(), "[::1]:5");
        assert_eq!(hp("a", 5).url("/ready"), "http://a:5/ready");
    }

    #[test]
    fn the_bootstrap_path_comes_from_envoys_flags() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&os(&[
                "envoy",
                "--log-level",
                "info",
                "-c",
                "/berth/b.json"
            ])),
            Some(PathBuf::from("/berth/b.json"))
        );
        assert_eq!(
            config_path(&os(&["envoy", "--config-path=/x.json"])),
            Some(PathBuf::from("/x.json"))
        );
        assert_eq!(
            config_path(&os(&["envoy", "--config-path", "/y.json"])),
            Some(PathBuf::from("/y.json"))
        );
        // The program's own name is not a flag, and a trailing -c has no value.
        assert_eq!(config_path(&os(&["-c", "x"])), None);
        assert_eq!(config_path(&os(&["envoy", "-c"])), None);
    }

    #[test]
    fn the_admin_address_comes_from_the_bootstrap() {
        let doc = |address: Value, port: Value| json!({"admin": {"address": {"socket_address": {"address": address, "port_value": port}}}});
        assert_eq!(
            admin_from_bootstrap(&doc(json!("127.0.0.1"), json!(19000))),
            Some(hp("127.0.0.1", 19000))
        );
        assert_eq!(
            admin_from_bootstrap(&doc(json!("0.0.0.0"), json!("19001"))),
            Some(hp("127.0.0.1", 19001))
        );
        assert_eq!(
            admin_from_bootstrap(&doc(json!("::"), json!(5))),
            Some(hp("::1", 5))
        );
        // Port 0 means Envoy picks one: the entrypoint cannot know it.
        assert_eq!(
            admin_from_bootstrap(&doc(json!("127.0.0.1"), json!(0))),
            None
        );
        assert_eq!(admin_from_bootstrap(&doc(json!(1), json!(1))), None);
        assert_eq!(admin_from_bootstrap(&json!({"admin": {}})), None);
        assert_eq!(admin_from_bootstrap(&json!([])), None);
    }

    #[test]
    fn resolve_prefers_the_flag_then_the_bootstrap_then_the_default() {
        let dir = std::env::temp_dir().join(format!("berth-ee-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            r#"{"admin":{"address":{"socket_address":{"address":"127.0.0.2","port_value":1234}}}}"#,
        )
        .unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "admin: yaml").unwrap();
        let cmd = |p: &std::path::Path| vec![OsString::from("envoy"), "-c".into(), p.into()];

        assert_eq!(resolve(Some(&hp("h", 1)), &cmd(&good)), hp("h", 1));
        assert_eq!(resolve(None, &cmd(&good)), hp("127.0.0.2", 1234));
        assert_eq!(resolve(None, &cmd(&bad)), hp("127.0.0.1", 19000));
        assert_eq!(
            resolve(None, &cmd(&dir.join("missing"))),
            hp("127.0.0.1", 19000)
        );
        assert_eq!(
            resolve(None, &[OsString::from("envoy")]),
            hp("127.0.0.1", 19000)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn answers_are_one_line() {
        assert_eq!(one_line("a\nb  c\n"), "a b c");
        assert_eq!(one_line(&"x".repeat(300)).chars().count(), 201);
    }
}
