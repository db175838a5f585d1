//! berth-xds against real Envoy: two sidecars (`web` → `api`) configured only over delta ADS
//! from an in-process server, with mTLS from a CA made here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::{eventually, free_port};
use berth_xds::envoy_types::pb::envoy::config::core::v3::Node;
use berth_xds::envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use berth_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use berth_xds::{
    Endpoint, HttpMatch, Intention, IntentionAction, Leaf, Permission, Protocol, ProxySnapshot,
    SnapshotSource, Upstream, XdsEvent, type_url,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const TOKEN: &str = "sidecar-token";
const WAIT: Duration = Duration::from_secs(20);

fn envoy_bin() -> PathBuf {
    berth_tests::venv_bin("envoy")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

// ---------------------------------------------------------------------------------------
// Certificates

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    td: String,
}

struct IssuedLeaf {
    leaf: Leaf,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    /// Lowercase hex, as Envoy's /certs prints it.
    serial: String,
}

impl Ca {
    fn new(td: &str, cn: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.subject_alt_names
            .push(SanType::URI(format!("spiffe://{td}").try_into().unwrap()));
        Ca {
            issuer: CertifiedIssuer::self_signed(p, key).unwrap(),
            td: td.into(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, service: &str) -> IssuedLeaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, service);
        let id = berth_xds::spiffe_id(&self.td, "dc1", service);
        p.subject_alt_names
            .push(SanType::URI(id.try_into().unwrap()));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // A known serial, to find this certificate in Envoy's /certs; the first byte keeps it
        // positive and free of leading zeros.
        let mut serial = uuid::Uuid::new_v4().as_bytes()[..8].to_vec();
        serial[0] = 0x10 + serial[0] % 0x60;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        IssuedLeaf {
            leaf: Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            },
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The snapshot source and the in-process ADS server

#[derive(Default)]
struct TestSource {
    proxies: Mutex<HashMap<String, watch::Sender<Option<Arc<ProxySnapshot>>>>>,
    events: Mutex<Vec<(String, XdsEvent)>>,
}

impl TestSource {
    fn set(&self, s: ProxySnapshot) {
        let mut p = self.proxies.lock().unwrap();
        let tx = p
            .entry(s.proxy_id.clone())
            .or_insert_with(|| watch::channel(None).0);
        tx.send_replace(Some(Arc::new(s)));
    }

    fn mark(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    fn since(&self, mark: usize) -> Vec<(String, XdsEvent)> {
        self.events.lock().unwrap()[mark..].to_vec()
    }

    /// Waits for a response of `type_url` to `proxy` sent after `mark` and its ACK.
    async fn acked(&self, mark: usize, proxy: &str, type_url: &str) {
        eventually(WAIT, &format!("{proxy} to ACK a {type_url}"), || async {
            let ev = self.since(mark);
            let nonces: Vec<String> = ev
                .iter()
                .filter_map(|(p, e)| match e {
                    XdsEvent::Sent { type_url: t, nonce, .. } if p == proxy && t == type_url => {
                        Some(nonce.clone())
                    }
                    _ => None,
                })
                .collect();
            ev.iter()
                .any(|(p, e)| {
                    matches!(e, XdsEvent::Acked { nonce, .. } if p == proxy && nonces.contains(nonce))
                })
                .then_some(())
        })
        .await
    }

    fn sent_types(&self, mark: usize, proxy: &str) -> Vec<String> {
        self.since(mark)
            .into_iter()
            .filter_map(|(p, e)| match e {
                XdsEvent::Sent {
                    type_url,
                    resources,
                    removed,
                    ..
                } if p == proxy && !(resources.is_empty() && removed.is_empty()) => Some(type_url),
                _ => None,
            })
            .collect()
    }
}

impl SnapshotSource for TestSource {
    fn subscribe(
        &self,
        proxy_id: &str,
        token: Option<&str>,
    ) -> Result<watch::Receiver<Option<Arc<ProxySnapshot>>>, tonic::Status> {
        if token != Some(TOKEN) {
            return Err(tonic::Status::permission_denied("bad token"));
        }
        self.proxies
            .lock()
            .unwrap()
            .get(proxy_id)
            .map(|tx| tx.subscribe())
            .ok_or_else(|| tonic::Status::not_found(format!("no proxy {proxy_id}")))
    }

    fn on_event(&self, proxy_id: &str, event: &XdsEvent) {
        self.events
            .lock()
            .unwrap()
            .push((proxy_id.to_owned(), event.clone()));
    }
}

/// The ADS server on its own runtime, so stopping it drops every connection at once, as a
/// crashed agent would.
struct XdsServer {
    rt: Option<tokio::runtime::Runtime>,
}

impl XdsServer {
    fn start(addr: SocketAddr, source: Arc<TestSource>) -> XdsServer {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("xds bind {addr}: {e}, retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(berth_xds::service(source))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
                .unwrap();
        });
        XdsServer { rt: Some(rt) }
    }

    fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Envoy

struct Envoy {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
    name: String,
}

impl Envoy {
    /// Starts Envoy for `s`'s proxy. Its admin port is chosen by Envoy itself (port 0, read
    /// back from `--admin-address-path`), so parallel tests cannot race for it.
    async fn start(dir: &Path, name: &str, s: &ProxySnapshot, xds: SocketAddr) -> Envoy {
        let bootstrap =
            berth_xds::bootstrap_json(&s.proxy_id, &s.service, xds, loopback(0), Some(TOKEN));
        let cfg = dir.join(format!("{name}-bootstrap.json"));
        std::fs::write(&cfg, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
        let log = dir.join(format!("{name}-envoy.log"));
        let admin_file = dir.join(format!("{name}-admin-address"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&cfg)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--disable-hot-restart", "--log-level", "warn"])
            // Listener updates (new intentions) must reach live connections within the test.
            .args(["--drain-time-s", "1", "--drain-strategy", "immediate"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut envoy = Envoy {
            child,
            admin: loopback(0),
            log,
            name: name.into(),
        };
        envoy.admin = eventually(WAIT, &format!("{name} Envoy's admin address"), || async {
            std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|a| a.trim().parse().ok())
        })
        .await;
        envoy
    }

    async fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        admin_get(self.admin, path).await
    }

    async fn wait_ready(&self) {
        eventually(WAIT, &format!("{} Envoy /ready", self.name), || async {
            match self.admin_get("/ready").await {
                Some((200, body)) if body.trim() == "LIVE" => Some(()),
                _ => None,
            }
        })
        .await
    }

    async fn stat(&self, name: &str) -> Option<i64> {
        let (_, body) = self.admin_get(&format!("/stats?filter=^{name}$")).await?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Ports of the hosts of `cluster` Envoy considers healthy.
    async fn healthy_ports(&self, cluster: &str) -> Option<Vec<u64>> {
        let (_, body) = self.admin_get("/clusters?format=json").await?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let c = v["cluster_statuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == cluster)?;
        let mut ports: Vec<u64> = c["host_statuses"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter(|h| {
                        let s = &h["health_status"]["eds_health_status"];
                        s.is_null() || s == "HEALTHY"
                    })
                    .filter_map(|h| h["address"]["socket_address"]["port_value"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        ports.sort();
        Some(ports)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by the PID we spawned.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} Envoy log (tail) ---", self.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

async fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let r = client()
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

fn client() -> reqwest::Client {
    // No pooling: every request is a new connection, so it meets the newest listener config.
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// The apps

/// An HTTP app that answers every request with what it saw.
async fn start_app(name: &'static str) -> SocketAddr {
    use axum::http::{HeaderMap, Method, Uri};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap| async move {
        axum::Json(serde_json::json!({
            "service": name,
            "method": m.as_str(),
            "path": u.path(),
            "xfcc": h.get("x-forwarded-client-cert").and_then(|v| v.to_str().ok()),
        }))
    });
    tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    addr
}

// ---------------------------------------------------------------------------------------
// The mesh

struct Mesh {
    _dir: tempfile::TempDir,
    ca: Ca,
    source: Arc<TestSource>,
    xds_addr: SocketAddr,
    xds: XdsServer,
    web: ProxySnapshot,
    api: ProxySnapshot,
    web_leaf: IssuedLeaf,
    web_envoy: Envoy,
    api_envoy: Envoy,
    api_bind: SocketAddr,
}

fn l4(source: &str, action: IntentionAction) -> Intention {
    Intention {
        source: source.into(),
        action: Some(action),
        permissions: vec![],
    }
}

impl Mesh {
    async fn start(protocol: Protocol, api_intentions: Vec<Intention>) -> Mesh {
        let td = format!("{}.berth", uuid::Uuid::new_v4());
        let ca = Ca::new(&td, "Berth CA 1");
        let source = Arc::new(TestSource::default());
        let xds_addr = loopback(free_port());
        let xds = XdsServer::start(xds_addr, source.clone());
        let (web_app, api_app) = (start_app("web").await, start_app("api").await);
        let (web_pub, api_pub, api_bind) = (
            loopback(free_port()),
            loopback(free_port()),
            loopback(free_port()),
        );
        let web_leaf = ca.leaf("web");
        let api = ProxySnapshot {
            proxy_id: "api-sidecar".into(),
            service: "api".into(),
            datacenter: "dc1".into(),
            trust_domain: td.clone(),
            public_listener: api_pub,
            local_app: api_app,
            protocol,
            leaf: ca.leaf("api").leaf,
            roots: vec![ca.pem()],
            intentions: api_intentions,
            default_allow: false,
            upstreams: vec![],
        };
        let web = ProxySnapshot {
            proxy_id: "web-sidecar".into(),
            service: "web".into(),
            public_listener: web_pub,
            local_app: web_app,
            leaf: web_leaf.leaf.clone(),
            intentions: vec![],
            upstreams: vec![Upstream {
                destination: "api".into(),
                datacenter: "dc1".into(),
                local_bind: api_bind,
                protocol,
                endpoints: vec![Endpoint {
                    address: api_pub.ip(),
                    port: api_pub.port(),
                    healthy: true,
                }],
            }],
            ..api.clone()
        };
        source.set(api.clone());
        source.set(web.clone());
        let dir = tempfile::tempdir().unwrap();
        let api_envoy = Envoy::start(dir.path(), "api", &api, xds_addr).await;
        let web_envoy = Envoy::start(dir.path(), "web", &web, xds_addr).await;
        api_envoy.wait_ready().await;
        web_envoy.wait_ready().await;
        Mesh {
            _dir: dir,
            ca,
            source,
            xds_addr,
            xds,
            web,
            api,
            web_leaf,
            web_envoy,
            api_envoy,
            api_bind,
        }
    }

    fn api_cluster(&self) -> String {
        berth_xds::sni("api", "dc1", &self.ca.td)
    }

    fn update_api(&mut self, f: impl FnOnce(&mut ProxySnapshot)) {
        f(&mut self.api);
        self.source.set(self.api.clone());
    }

    fn update_web(&mut self, f: impl FnOnce(&mut ProxySnapshot)) {
        f(&mut self.web);
        self.source.set(self.web.clone());
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api_bind, path)
    }

    /// A request from web's app to api through web's upstream listener.
    async fn call(&self, method: &str, path: &str) -> Option<(u16, String)> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = client().request(m, self.url(path)).send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    /// Waits until `method path` through the mesh answers `status`.
    async fn expect(&self, method: &str, path: &str, status: u16) -> String {
        eventually(WAIT, &format!("{method} {path} → {status}"), || async {
            match self.call(method, path).await {
                Some((s, body)) if s == status => Some(body),
                _ => None,
            }
        })
        .await
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn bootstrap_validates_with_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let b = berth_xds::bootstrap_json(
        "web-sidecar",
        "web",
        loopback(free_port()),
        loopback(free_port()),
        Some(TOKEN),
    );
    let cfg = dir.path().join("bootstrap.json");
    std::fs::write(&cfg, serde_json::to_vec(&b).unwrap()).unwrap();
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn allowed_request_reaches_api_with_webs_identity() {
    let m = Mesh::start(Protocol::Http, vec![l4("web", IntentionAction::Allow)]).await;
    let body = json(&m.expect("GET", "/hello", 200).await);
    assert_eq!(body["service"], "api");
    assert_eq!(body["path"], "/hello");
    let xfcc = body["xfcc"]
        .as_str()
        .expect("api's Envoy set x-forwarded-client-cert");
    let web_id = berth_xds::spiffe_id(&m.ca.td, "dc1", "web");
    assert!(xfcc.contains(&format!("URI={web_id}")), "{xfcc}");
    // The sidecars talk HTTP/2 to each other even though the apps speak HTTP/1.1.
    let h2 = m
        .api_envoy
        .stat("http.public_listener.downstream_cx_http2_total")
        .await;
    assert!(
        h2.unwrap_or(0) >= 1,
        "no HTTP/2 connection from web's sidecar: {h2:?}"
    );
}

#[tokio::test]
async fn denied_http_request_gets_403() {
    let m = Mesh::start(
        Protocol::Http,
        vec![
            l4("web", IntentionAction::Deny),
            l4("*", IntentionAction::Allow),
        ],
    )
    .await;
    let body = m.expect("GET", "/hello", 403).await;
    assert!(body.contains("RBAC"), "{body}");
}

/// One raw request through web's tcp upstream listener; what came back.
async fn raw_http(addr: SocketAddr) -> Vec<u8> {
    let mut s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    let req = b"GET /raw HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn tcp_allow_then_deny_closes_the_connection() {
    let mut m = Mesh::start(Protocol::Tcp, vec![l4("web", IntentionAction::Allow)]).await;
    eventually(WAIT, "tcp request to pass", || async {
        raw_http(m.api_bind)
            .await
            .starts_with(b"HTTP/1.1 200")
            .then_some(())
    })
    .await;
    let mark = m.source.mark();
    m.update_api(|s| s.intentions = vec![l4("web", IntentionAction::Deny)]);
    m.source
        .acked(mark, "api-sidecar", type_url::LISTENER)
        .await;
    eventually(WAIT, "tcp connection closed without bytes", || async {
        raw_http(m.api_bind).await.is_empty().then_some(())
    })
    .await;
    // And stays closed: not a blip.
    for _ in 0..3 {
        assert!(raw_http(m.api_bind).await.is_empty());
    }
}

fn post_orders_only(regex: Option<&str>) -> Intention {
    Intention {
        source: "web".into(),
        action: None,
        permissions: vec![Permission {
            action: IntentionAction::Allow,
            http: HttpMatch {
                path_exact: regex.is_none().then(|| "/orders".to_owned()),
                path_regex: regex.map(str::to_owned),
                methods: vec!["POST".into()],
                ..Default::default()
            },
        }],
    }
}

#[tokio::test]
async fn l7_permissions_allow_only_post_orders() {
    let m = Mesh::start(Protocol::Http, vec![post_orders_only(None)]).await;
    let body = json(&m.expect("POST", "/orders", 200).await);
    assert_eq!(body["method"], "POST");
    assert_eq!(m.call("GET", "/orders").await.map(|r| r.0), Some(403));
    assert_eq!(m.call("POST", "/admin").await.map(|r| r.0), Some(403));
}

/// Accepts any server certificate (these tests judge the server, not the client) and keeps
/// the last one seen.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>, Mutex<Vec<u8>>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.1.lock().unwrap() = end_entity.to_vec();
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Talks TLS to `addr` with the given client certificate; the bytes of the HTTP answer, or
/// the error that ended the exchange. In TLS 1.3 the client finishes its side of the
/// handshake before the server judges its certificate, so a refusal shows as an alert on
/// the first read.
async fn tls_exchange(addr: SocketAddr, cert: Option<&IssuedLeaf>) -> Result<Vec<u8>, String> {
    tls_exchange_seeing(addr, cert).await.map(|(body, _)| body)
}

/// [`tls_exchange`], also returning the certificate the server presented.
async fn tls_exchange_seeing(
    addr: SocketAddr,
    cert: Option<&IssuedLeaf>,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyServerCert(provider.clone(), Mutex::default()));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let config = match cert {
        Some(l) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from(l.cert_der.clone())],
                rustls::pki_types::PrivateKeyDer::Pkcs8(l.key_der.clone().into()),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("api").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"GET /tls HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Ok((out, verifier.1.lock().unwrap().clone())),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("read timed out".into()),
    }
}

#[tokio::test]
async fn public_listener_refuses_clients_without_a_mesh_certificate() {
    let m = Mesh::start(Protocol::Http, vec![l4("*", IntentionAction::Allow)]).await;
    let api_pub = m.api.public_listener;
    // Control: web's own certificate gets through, so the refusals below are about the cert.
    let ok = eventually(WAIT, "mTLS with web's certificate", || async {
        tls_exchange(api_pub, Some(&m.web_leaf)).await.ok()
    })
    .await;
    assert!(
        ok.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&ok)
    );

    let none = tls_exchange(api_pub, None).await;
    eprintln!("without a certificate: {none:?}");
    assert!(
        matches!(&none, Err(e) if e.contains("CertificateRequired") || e.starts_with("handshake")),
        "no client certificate must be refused: {none:?}"
    );

    let other = Ca::new(&m.ca.td, "Some other CA").leaf("web");
    let res = tls_exchange(api_pub, Some(&other)).await;
    eprintln!("with a foreign CA's certificate: {res:?}");
    assert!(
        matches!(&res, Err(e) if e.contains("UnknownCA") || e.starts_with("handshake")),
        "a certificate from another CA must be refused: {res:?}"
    );
}

#[tokio::test]
async fn endpoint_health_changes_reach_envoy_within_a_second() {
    let mut m = Mesh::start(Protocol::Http, vec![l4("web", IntentionAction::Allow)]).await;
    let cluster = m.api_cluster();
    let api_port = u64::from(m.api.public_listener.port());
    let ports = eventually(WAIT, "api endpoint healthy in web's Envoy", || async {
        m.web_envoy
            .healthy_ports(&cluster)
            .await
            .filter(|p| !p.is_empty())
    })
    .await;
    assert_eq!(ports, [api_port]);

    m.update_web(|s| s.upstreams[0].endpoints[0].healthy = false);
    let t = Instant::now();
    eventually(
        Duration::from_secs(1),
        "api endpoint to turn unhealthy",
        || async {
            m.web_envoy
                .healthy_ports(&cluster)
                .await
                .filter(|p| p.is_empty())
        },
    )
    .await;
    eprintln!("unhealthy seen after {:?}", t.elapsed());

    let extra = free_port();
    m.update_web(|s| {
        s.upstreams[0].endpoints.push(Endpoint {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: extra,
            healthy: true,
        })
    });
    let t = Instant::now();
    eventually(
        Duration::from_secs(1),
        "second endpoint to appear healthy",
        || async {
            m.web_envoy
                .healthy_ports(&cluster)
                .await
                .filter(|p| p == &[u64::from(extra)])
        },
    )
    .await;
    eprintln!("new endpoint seen after {:?}", t.elapsed());
}

#[tokio::test]
async fn nacked_config_is_not_resent_and_old_config_keeps_working() {
    let mut m = Mesh::start(Protocol::Http, vec![l4("web", IntentionAction::Allow)]).await;
    m.expect("GET", "/before", 200).await;

    let mark = m.source.mark();
    m.update_api(|s| s.intentions = vec![post_orders_only(Some("/orders(["))]);
    let message = eventually(WAIT, "api's Envoy to NACK the listener", || async {
        m.source.since(mark).into_iter().find_map(|(p, e)| match e {
            XdsEvent::Nacked {
                type_url: t,
                resources,
                message,
                ..
            } if p == "api-sidecar" && t == type_url::LISTENER => {
                assert!(
                    resources.contains(&berth_xds::public_listener_name(m.api.public_listener)),
                    "{resources:?}"
                );
                Some(message)
            }
            _ => None,
        })
    })
    .await;
    assert!(!message.is_empty());
    eprintln!("Envoy said: {message}");

    // The old listener still serves: GET is allowed by the L4 intention Envoy kept.
    m.expect("GET", "/still", 200).await;

    // Another change makes the server push again; the rejected listener must not go with it.
    let after_nack = m.source.mark();
    m.update_api(|s| s.roots.push(s.roots[0].clone()));
    m.source
        .acked(after_nack, "api-sidecar", type_url::SECRET)
        .await;
    assert_eq!(
        m.source.sent_types(after_nack, "api-sidecar"),
        [type_url::SECRET],
        "only the changed secret goes out"
    );

    let fixed = m.source.mark();
    m.update_api(|s| s.intentions = vec![post_orders_only(Some("/orders(/.*)?"))]);
    m.source
        .acked(fixed, "api-sidecar", type_url::LISTENER)
        .await;
    m.expect("POST", "/orders/7", 200).await;
    m.expect("GET", "/orders", 403).await;
}

#[tokio::test]
async fn envoy_survives_an_ads_restart_and_is_not_sent_what_it_has() {
    let mut m = Mesh::start(Protocol::Http, vec![l4("web", IntentionAction::Allow)]).await;
    m.expect("GET", "/before", 200).await;
    for e in [&m.web_envoy, &m.api_envoy] {
        assert_eq!(e.stat("control_plane.connected_state").await, Some(1));
    }

    m.xds.stop();
    for e in [&m.web_envoy, &m.api_envoy] {
        eventually(WAIT, "Envoy to notice the ADS server is gone", || async {
            (e.stat("control_plane.connected_state").await == Some(0)).then_some(())
        })
        .await;
    }
    m.expect("GET", "/during", 200).await;

    let mark = m.source.mark();
    m.xds = XdsServer::start(m.xds_addr, m.source.clone());
    for e in [&m.web_envoy, &m.api_envoy] {
        eventually(WAIT, "Envoy to reconnect", || async {
            (e.stat("control_plane.connected_state").await == Some(1)).then_some(())
        })
        .await;
    }
    // Both Envoys re-subscribe with the versions they hold.
    let want = [
        ("web-sidecar", type_url::CLUSTER),
        ("web-sidecar", type_url::ENDPOINT),
        ("web-sidecar", type_url::LISTENER),
        ("web-sidecar", type_url::SECRET),
        ("api-sidecar", type_url::CLUSTER),
        ("api-sidecar", type_url::LISTENER),
        ("api-sidecar", type_url::SECRET),
    ];
    eventually(
        WAIT,
        "every type re-requested with initial versions",
        || async {
            let ev = m.source.since(mark);
            want.iter()
                .all(|(proxy, t)| {
                    ev.iter().any(|(p, e)| {
                        matches!(e, XdsEvent::Requested { type_url, initial_versions, .. }
                        if p == proxy && type_url == t && *initial_versions > 0)
                    })
                })
                .then_some(())
        },
    )
    .await;
    // A later change is the only thing sent: the stream task handles requests in order, so
    // anything resent for the reconnect would have gone out before this.
    let change = m.source.mark();
    m.update_web(|s| s.roots.push(s.roots[0].clone()));
    m.source
        .acked(change, "web-sidecar", type_url::SECRET)
        .await;
    assert_eq!(m.source.sent_types(mark, "web-sidecar"), [type_url::SECRET]);
    assert!(m.source.sent_types(mark, "api-sidecar").is_empty());
    m.expect("GET", "/after", 200).await;
}

#[tokio::test]
async fn rotating_leaf_and_roots_sends_only_secrets() {
    let mut m = Mesh::start(Protocol::Http, vec![l4("web", IntentionAction::Allow)]).await;
    m.expect("GET", "/before", 200).await;
    const LDS: &str = "listener_manager.lds.update_success";
    const CDS: &str = "cluster_manager.cds.update_success";
    let stats = |e: &Envoy| {
        let admin = e.admin;
        async move {
            let e = |n: &'static str| async move {
                let (_, body) = admin_get(admin, &format!("/stats?filter=^{n}$")).await?;
                body.lines().find_map(|l| {
                    l.strip_prefix(&format!("{n}: "))?
                        .trim()
                        .parse::<i64>()
                        .ok()
                })
            };
            (e(LDS).await, e(CDS).await)
        }
    };
    let (web_before, api_before) = (stats(&m.web_envoy).await, stats(&m.api_envoy).await);

    // Step 1: both sides trust the old and the new CA.
    let ca2 = Ca::new(&m.ca.td, "Berth CA 2");
    let mark = m.source.mark();
    m.update_api(|s| s.roots.push(ca2.pem()));
    m.update_web(|s| s.roots.push(ca2.pem()));
    m.source.acked(mark, "api-sidecar", type_url::SECRET).await;
    m.source.acked(mark, "web-sidecar", type_url::SECRET).await;
    m.expect("GET", "/both-roots", 200).await;

    // Step 2: new leaves from the new CA.
    let web2 = ca2.leaf("web");
    let api2 = ca2.leaf("api");
    let mark2 = m.source.mark();
    m.update_api(|s| s.leaf = api2.leaf.clone());
    m.update_web(|s| s.leaf = web2.leaf.clone());
    m.source.acked(mark2, "api-sidecar", type_url::SECRET).await;
    m.source.acked(mark2, "web-sidecar", type_url::SECRET).await;
    // Each Envoy holds its new certificate...
    for (e, leaf) in [(&m.web_envoy, &web2), (&m.api_envoy, &api2)] {
        eventually(
            WAIT,
            &format!("{} Envoy to load its new leaf", e.name),
            || async {
                let (_, body) = e.admin_get("/certs").await?;
                body.to_ascii_lowercase()
                    .contains(&leaf.serial)
                    .then_some(())
            },
        )
        .await;
    }
    // ...api's presents it on new connections and accepts a client certificate from the new
    // CA (web's Envoy keeps its pooled HTTP/2 connection, made with the old certificate, which
    // is why this is checked with a fresh client).
    let (body, presented) = tls_exchange_seeing(m.api.public_listener, Some(&web2))
        .await
        .unwrap();
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(presented, api2.cert_der);
    // Traffic through the sidecars never stopped.
    m.expect("GET", "/after", 200).await;

    for proxy in ["api-sidecar", "web-sidecar"] {
        let types = m.source.sent_types(mark, proxy);
        assert!(
            types.iter().all(|t| t == type_url::SECRET),
            "{proxy} was sent {types:?}"
        );
    }
    assert_eq!(
        stats(&m.web_envoy).await,
        web_before,
        "web's listeners/clusters were not updated"
    );
    assert_eq!(
        stats(&m.api_envoy).await,
        api_before,
        "api's listeners/clusters were not updated"
    );
}

#[tokio::test]
async fn refused_streams_end_with_the_sources_status() {
    let source = Arc::new(TestSource::default());
    let addr = loopback(free_port());
    let _server = XdsServer::start(addr, source.clone());
    source.set(ProxySnapshot {
        proxy_id: "known".into(),
        service: "web".into(),
        datacenter: "dc1".into(),
        trust_domain: "td.berth".into(),
        public_listener: loopback(1),
        local_app: loopback(2),
        protocol: Protocol::Tcp,
        leaf: Leaf::default(),
        roots: vec![],
        intentions: vec![],
        default_allow: false,
        upstreams: vec![],
    });
    let attempt = |proxy: &'static str, token: &'static str| async move {
        let mut c = eventually(WAIT, "ADS server up", || async {
            AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
                .await
                .ok()
        })
        .await;
        let first = DeltaDiscoveryRequest {
            node: Some(Node {
                id: proxy.into(),
                ..Default::default()
            }),
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(first).await.unwrap();
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut()
            .insert("x-consul-token", token.parse().unwrap());
        let res = c.delta_aggregated_resources(req).await;
        let out = match res {
            Err(s) => Err(s.code()),
            Ok(r) => {
                let mut stream = r.into_inner();
                match stream.message().await {
                    Ok(Some(m)) => Ok(m.type_url),
                    Ok(None) => Ok(String::new()),
                    Err(s) => Err(s.code()),
                }
            }
        };
        drop(tx);
        out
    };
    assert_eq!(
        attempt("known", "wrong").await,
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(attempt("nobody", TOKEN).await, Err(tonic::Code::NotFound));
    // The right token for a known proxy gets its clusters (wildcard).
    assert_eq!(
        attempt("known", TOKEN).await,
        Ok(type_url::CLUSTER.to_owned())
    );
}
