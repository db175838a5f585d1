//! The daemon's bridge and each task's network namespace (awsvpc without AWS): a veth into
//! the bridge, an address of the bridge's /24, and 169.254.170.2 on `lo` for the endpoints.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

/// Where ECS serves task metadata and credentials, inside the task.
pub const ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run `ip`: {0}")]
    Spawn(std::io::Error),
    #[error("no free bridge name bth0..bth{0}")]
    NoBridge(u8),
    #[error("network namespace {ns}: {source}")]
    Netns { ns: String, source: std::io::Error },
}

async fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(NetError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Bridge {
    pub name: String,
    pub index: u8,
    pub gateway: Ipv4Addr,
}

const MAX_BRIDGES: u8 = 250;

impl Bridge {
    /// Takes the first free `bthN`; `ip link add` failing on an existing name is what keeps
    /// parallel daemons apart.
    pub async fn create() -> Result<Bridge, NetError> {
        for index in 0..MAX_BRIDGES {
            let name = format!("bth{index}");
            match ip(&["link", "add", &name, "type", "bridge"]).await {
                Ok(()) => {}
                Err(NetError::Ip { stderr, .. }) if stderr.contains("exists") => continue,
                Err(e) => return Err(e),
            }
            let b = Bridge {
                name,
                index,
                gateway: Ipv4Addr::new(10, 213, index, 1),
            };
            let setup = async {
                ip(&["addr", "add", &format!("{}/24", b.gateway), "dev", &b.name]).await?;
                ip(&["link", "set", &b.name, "up"]).await
            };
            if let Err(e) = setup.await {
                b.delete().await;
                return Err(e);
            }
            return Ok(b);
        }
        Err(NetError::NoBridge(MAX_BRIDGES - 1))
    }

    pub fn cidr(&self) -> String {
        format!("10.213.{}.0/24", self.index)
    }

    pub fn host_ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.index, host)
    }

    pub async fn delete(&self) {
        if let Err(e) = ip(&["link", "del", &self.name]).await {
            tracing::warn!(error = %e, "deleting the bridge");
        }
    }
}

#[derive(Debug, Clone)]
pub struct TaskNet {
    pub ns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
    pub host: u8,
}

impl TaskNet {
    /// A namespace `<bridge>-<host>` with `eth0` on the bridge and a default route via the
    /// gateway. Names are per bridge and per address, so leftovers of a crashed daemon that
    /// had the same bridge are removed first.
    pub async fn create(bridge: &Bridge, host: u8) -> Result<TaskNet, NetError> {
        let net = TaskNet {
            ns: format!("{}-{host}", bridge.name),
            host_veth: format!("{}v{host}", bridge.name),
            ip: bridge.host_ip(host),
            host,
        };
        let _ = ip(&["netns", "del", &net.ns]).await;
        let _ = ip(&["link", "del", &net.host_veth]).await;
        if let Err(e) = net.setup(bridge).await {
            net.delete().await;
            return Err(e);
        }
        Ok(net)
    }

    async fn setup(&self, bridge: &Bridge) -> Result<(), NetError> {
        let ns = self.ns.as_str();
        ip(&["netns", "add", ns]).await?;
        ip(&[
            "link",
            "add",
            &self.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ])
        .await?;
        ip(&["link", "set", &self.host_veth, "master", &bridge.name, "up"]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", self.ip),
            "dev",
            "eth0",
        ])
        .await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ENDPOINT_IP}/32"),
            "dev",
            "lo",
        ])
        .await?;
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &bridge.gateway.to_string(),
        ])
        .await
    }

    pub fn open(&self) -> Result<File, NetError> {
        open_netns(&self.ns)
    }

    /// The veth goes first: the kernel destroys a namespace's devices lazily.
    pub async fn delete(&self) {
        let _ = ip(&["link", "del", &self.host_veth]).await;
        if let Err(e) = ip(&["netns", "del", &self.ns]).await {
            tracing::warn!(error = %e, ns = %self.ns, "deleting the task's network namespace");
        }
    }
}

pub fn open_netns(ns: &str) -> Result<File, NetError> {
    File::open(format!("/run/netns/{ns}")).map_err(|source| NetError::Netns {
        ns: ns.to_string(),
        source,
    })
}

/// Binds a TCP listener inside the namespace: a socket keeps the namespace it was made in,
/// so only the throwaway thread has to enter it.
pub fn listen_in(ns: &str, addr: SocketAddr) -> Result<std::net::TcpListener, NetError> {
    let f = open_netns(ns)?;
    let err = |source| NetError::Netns {
        ns: ns.to_string(),
        source,
    };
    std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
        // SAFETY: setns on a valid fd only changes this thread's namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .join()
    .map_err(|_| err(std::io::Error::other("listener thread panicked")))?
    .map_err(err)
}

/// Removes what a daemon that died left: namespaces `<bridge>-*` and the bridge.
pub async fn cleanup_leftovers(bridge: &str) {
    let prefix = format!("{bridge}-");
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                let host = name.trim_start_matches(&prefix);
                let _ = ip(&["link", "del", &format!("{bridge}v{host}")]).await;
                let _ = ip(&["netns", "del", &name]).await;
            }
        }
    }
    let _ = ip(&["link", "del", bridge]).await;
}
