//! `berth-server`: the Raft-replicated source of truth of a Berth mesh.
//!
//! Layout: `config` (pure configuration), `state` (tables and watches), `raft` (consensus and
//! storage), `rpc` (the RPC port), `node` (one server), `cluster` (formation and leader
//! duties), `http` (the Consul-compatible API), `tls`.

pub mod acl;
pub mod agent_rpc;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod http;
pub mod local_agent;
pub mod logs;
pub mod node;
pub mod raft;
pub mod rpc;
pub mod state;
pub mod tls;
pub mod util;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::Config;
use node::Node;
use raft::log_store::{LogStore, LogStoreError};
use raft::network::Network;
use raft::state_machine::{SnapshotError, StateMachine, Store};
use raft::types::{NodeInfo, Raft, raft_id};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {} is in use by another berth-server (lock {})", dir.display(), lock.display())]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("data dir {}: {message}", dir.display())]
    DataDir { dir: PathBuf, message: String },
    #[error(transparent)]
    Log(#[from] LogStoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot listen for {what} on {addr}: {message}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        message: String,
    },
    #[error("raft: {0}")]
    Raft(String),
}

/// A started server. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub node: Arc<Node>,
    _lock: Option<File>,
}

impl Running {
    pub async fn shutdown(self) {
        self.node.begin_shutdown();
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

fn data_dir_err(dir: &Path, e: impl std::fmt::Display) -> StartError {
    StartError::DataDir {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    }
}

/// Takes the data dir's lock and reads (or creates) the server's node ID.
fn open_data_dir(dir: &Path) -> Result<(File, uuid::Uuid), StartError> {
    std::fs::create_dir_all(dir.join("raft")).map_err(|e| data_dir_err(dir, e))?;
    let lock_path = dir.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| data_dir_err(dir, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StartError::Locked {
                dir: dir.to_path_buf(),
                lock: lock_path,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(data_dir_err(dir, e)),
    }
    let id_path = dir.join("node-id");
    let id = match std::fs::read_to_string(&id_path) {
        Ok(s) => uuid::Uuid::parse_str(s.trim())
            .map_err(|e| data_dir_err(dir, format!("{} is not a UUID: {e}", id_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4();
            util::write_atomic(&id_path, id.to_string().as_bytes())
                .map_err(|e| data_dir_err(dir, e))?;
            id
        }
        Err(e) => return Err(data_dir_err(dir, e)),
    };
    Ok((lock, id))
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Bind {
            what,
            addr,
            message: e.to_string(),
        })
}

/// Opens storage, binds every port, starts Raft and the background loops.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    let cfg = Arc::new(cfg);
    let (lock, uuid) = match &cfg.data_dir {
        Some(dir) => {
            let (l, id) = open_data_dir(dir)?;
            (Some(l), id)
        }
        None => (None, uuid::Uuid::new_v4()),
    };
    let raft_dir = cfg.data_dir.as_ref().map(|d| d.join("raft"));
    let log_store = LogStore::open(raft_dir.as_ref().map(|d| d.join("raft.redb")).as_deref())?;
    let store = Store::open(raft_dir.as_ref().map(|d| d.join("snapshot.bin")).as_deref())?;

    let (server_tls, client_tls) = if cfg.tls.enabled() {
        let material =
            tls::TlsMaterial::load(&cfg.tls).map_err(|e| StartError::Tls(e.to_string()))?;
        (
            Some(material.server_config()),
            Some((
                material.client_config(&cfg.datacenter),
                format!("server.{}.berth", cfg.datacenter),
            )),
        )
    } else {
        (None, None)
    };

    let rpc_listener = bind("RPC", cfg.rpc_addr).await?;
    let http_listener = match cfg.http_addr {
        Some(a) => Some(bind("HTTP", a).await?),
        None => None,
    };
    let https_listener = match cfg.https_addr {
        Some(a) => Some(bind("HTTPS", a).await?),
        None => None,
    };

    let id = raft_id(&uuid);
    let info = NodeInfo {
        uuid: uuid.to_string(),
        name: cfg.node_name.clone(),
        rpc_addr: cfg.advertise.to_string(),
    };
    let clients = Arc::new(rpc::Clients::new(client_tls));
    let raft_config = node::raft_config(&cfg)
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let raft = Raft::new(
        id,
        Arc::new(raft_config),
        Network {
            clients: clients.clone(),
        },
        log_store,
        StateMachine {
            store: store.clone(),
        },
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let node = Arc::new(Node::new(cfg.clone(), id, info, raft, store, clients));
    let agent = local_agent::start(&node);
    let _ = node.agent.set(agent.clone());
    let router = http::router(node.clone(), agent);
    let _ = node.router.set(router.clone());

    let svc = rpc::pb::rpc_server::RpcServer::new(rpc::RpcService { node: node.clone() })
        .max_decoding_message_size(rpc::MAX_MESSAGE)
        .max_encoding_message_size(rpc::MAX_MESSAGE);
    tokio::spawn(async move {
        let incoming = tls::incoming(rpc_listener, server_tls.clone());
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "RPC server stopped");
        }
    });
    if let Some(l) = http_listener {
        let r = router.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, r).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
    }
    if let Some(l) = https_listener {
        let tls_cfg = tls::TlsMaterial::load(&cfg.tls)
            .map_err(|e| StartError::Tls(e.to_string()))?
            .server_config();
        tokio::spawn(http::serve_https(l, tls_cfg, router));
    }

    if cfg.bootstrap_expect == 1 && !node.raft.is_initialized().await.unwrap_or(true) {
        cluster::bootstrap(&node, vec![node.info.clone()]).await;
    }
    tokio::spawn(cluster::discovery_loop(node.clone()));
    tokio::spawn(cluster::session_ttl_loop(node.clone()));
    tokio::spawn(cluster::server_catalog_loop(node.clone()));
    tokio::spawn(acl::acl_leader_loop(node.clone()));
    tokio::spawn(connect::ca_leader_loop(node.clone()));
    tokio::spawn(agent_rpc::liveness_loop(node.clone()));
    tracing::info!(
        node = %cfg.node_name,
        id = %uuid,
        datacenter = %cfg.datacenter,
        rpc = %cfg.rpc_addr,
        http = ?cfg.http_addr,
        https = ?cfg.https_addr,
        dev = cfg.dev,
        "berth-server started"
    );
    Ok(Running { node, _lock: lock })
}
