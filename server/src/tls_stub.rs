// TEMPORARY stub so the rest compiles until the real module lands.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub verify_incoming: bool,
    #[serde(default)]
    pub verify_outgoing: bool,
    #[serde(default)]
    pub verify_server_hostname: bool,
}
impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}
#[derive(Debug, thiserror::Error)]
#[error("tls stub")]
pub struct TlsError;
pub struct TlsMaterial;
impl TlsMaterial {
    pub fn load(_s: &TlsSettings) -> Result<Self, TlsError> {
        Err(TlsError)
    }
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        unimplemented!()
    }
    pub fn client_config(&self, _dc: &str) -> Arc<rustls::ClientConfig> {
        unimplemented!()
    }
}
pub fn incoming(
    listener: tokio::net::TcpListener,
    _tls: Option<Arc<rustls::ServerConfig>>,
) -> tokio_stream::wrappers::TcpListenerStream {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
pub fn channel(
    addr: &str,
    _tls: Option<(Arc<rustls::ClientConfig>, String)>,
) -> Result<tonic::transport::Channel, TlsError> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| TlsError)?
            .connect_lazy(),
    )
}
pub fn create_ca(_dir: &Path, _days: u32, _domain: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    Err(TlsError)
}
pub enum CertKind {
    Server,
    Client,
}
#[allow(clippy::too_many_arguments)]
pub fn create_cert(
    _dir: &Path,
    _kind: CertKind,
    _ca_cert: &Path,
    _ca_key: &Path,
    _dc: &str,
    _domain: &str,
    _days: u32,
    _extra_dns: &[String],
    _extra_ips: &[IpAddr],
) -> Result<(PathBuf, PathBuf), TlsError> {
    Err(TlsError)
}
