//! Proxy configuration: for each `connect-proxy` service registered with this agent, the
//! pieces Envoy needs — its leaf, the roots, the intentions for its destination, the healthy
//! and unhealthy instances of each upstream, the services' protocols — watched on the
//! servers and assembled into one [`berth_xds::ProxySnapshot`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use berth_api::catalog::AgentService;
use berth_api::connect::{CaRoots, ConfigEntry, Intention};
use berth_xds::{
    Endpoint, HeaderMatch, HttpMatch, IntentionAction, Permission, Protocol, ProxySnapshot,
    Upstream,
};
use serde_json::Value;
use tokio::sync::watch;

use super::leaf::{LeafCert, Leaves};
use super::servers::Servers;
use super::watch::{blocking, json_or};

/// What the proxy's registration says, parsed from its `Proxy` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDef {
    pub id: String,
    pub destination: String,
    pub public_listener: SocketAddr,
    pub local_app: SocketAddr,
    pub upstreams: Vec<UpstreamDef>,
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamDef {
    pub destination: String,
    pub datacenter: String,
    pub local_bind: SocketAddr,
}

/// A key of a JSON object, in any case (registrations arrive lowercase from some clients).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn text(v: &Value, name: &str) -> String {
    field(v, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn port(v: &Value, name: &str) -> Option<u16> {
    field(v, name)
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// The proxy definition of a `connect-proxy` service; `advertise` is the agent's address,
/// used when the service has none of its own.
pub fn parse_proxy(
    s: &AgentService,
    advertise: IpAddr,
    datacenter: &str,
    token: Option<String>,
) -> Result<ProxyDef, String> {
    let proxy = s.proxy.as_ref().ok_or("no Proxy block")?;
    let destination = text(proxy, "DestinationServiceName");
    if destination.is_empty() {
        return Err("Proxy.DestinationServiceName is required".into());
    }
    let ip = if s.address.is_empty() {
        advertise
    } else {
        s.address
            .parse()
            .map_err(|_| format!("Address {:?} is not an IP address", s.address))?
    };
    let local_ip: IpAddr = match text(proxy, "LocalServiceAddress") {
        a if a.is_empty() => IpAddr::from([127, 0, 0, 1]),
        a => a
            .parse()
            .map_err(|_| format!("Proxy.LocalServiceAddress {a:?} is not an IP address"))?,
    };
    let local_port = port(proxy, "LocalServicePort").ok_or("Proxy.LocalServicePort is required")?;
    let mut upstreams = Vec::new();
    for u in field(proxy, "Upstreams")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let dest = text(u, "DestinationName");
        let bind_port =
            port(u, "LocalBindPort").ok_or(format!("upstream {dest:?} has no LocalBindPort"))?;
        let bind_ip: IpAddr = match text(u, "LocalBindAddress") {
            a if a.is_empty() => IpAddr::from([127, 0, 0, 1]),
            a => a
                .parse()
                .map_err(|_| format!("upstream {dest:?}: LocalBindAddress {a:?} is not an IP"))?,
        };
        let dc = text(u, "Datacenter");
        upstreams.push(UpstreamDef {
            destination: dest,
            datacenter: if dc.is_empty() {
                datacenter.to_string()
            } else {
                dc
            },
            local_bind: SocketAddr::new(bind_ip, bind_port),
        });
    }
    Ok(ProxyDef {
        id: s.id.clone(),
        destination,
        public_listener: SocketAddr::new(ip, s.port),
        local_app: SocketAddr::new(local_ip, local_port),
        upstreams,
        token,
    })
}

pub fn protocol_of(
    entries: &[ConfigEntry],
    global: Option<&ConfigEntry>,
    service: &str,
) -> Protocol {
    let named = entries
        .iter()
        .find(|e| e.name == service)
        .map(|e| e.protocol.clone())
        .filter(|p| !p.is_empty());
    let p = named.or_else(|| {
        global
            .and_then(|g| g.config.as_ref())
            .and_then(|c| field(c, "protocol"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    match p.unwrap_or_default().to_ascii_lowercase().as_str() {
        "http" => Protocol::Http,
        "http2" => Protocol::Http2,
        "grpc" => Protocol::Grpc,
        _ => Protocol::Tcp,
    }
}

fn action(a: &str) -> IntentionAction {
    if a.eq_ignore_ascii_case("allow") {
        IntentionAction::Allow
    } else {
        IntentionAction::Deny
    }
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The server's intentions (already in precedence order) as the xDS builder takes them.
pub fn intentions(list: &[Intention]) -> Vec<berth_xds::Intention> {
    list.iter()
        .map(|i| berth_xds::Intention {
            source: i.source_name.clone(),
            action: (!i.action.is_empty()).then(|| action(&i.action)),
            permissions: i
                .permissions
                .iter()
                .map(|p| {
                    let h = p.http.clone().unwrap_or_default();
                    Permission {
                        action: action(&p.action),
                        http: HttpMatch {
                            path_exact: opt(&h.path_exact),
                            path_prefix: opt(&h.path_prefix),
                            path_regex: opt(&h.path_regex),
                            methods: h.methods.clone(),
                            headers: h
                                .header
                                .iter()
                                .map(|x| HeaderMatch {
                                    name: x.name.clone(),
                                    present: x.present,
                                    exact: opt(&x.exact),
                                    prefix: opt(&x.prefix),
                                    suffix: opt(&x.suffix),
                                    regex: opt(&x.regex),
                                    invert: x.invert,
                                })
                                .collect(),
                        },
                    }
                })
                .collect(),
        })
        .collect()
}

/// What a proxy needs of one health row: kept instead of the row itself, since an agent
/// watches every instance of each upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub node: String,
    pub id: String,
    /// The service's address, else the node's.
    pub address: String,
    pub port: Option<u16>,
    /// For a sidecar: the instance it fronts.
    pub fronts: String,
    pub critical: bool,
}

pub fn row_of(r: &Value) -> Option<Row> {
    let svc = field(r, "Service")?;
    let node = field(r, "Node")?;
    let address = match text(svc, "Address") {
        a if a.is_empty() => text(node, "Address"),
        a => a,
    };
    Some(Row {
        node: text(node, "Node"),
        id: text(svc, "ID"),
        address,
        port: port(svc, "Port"),
        fronts: field(svc, "Proxy")
            .map(|p| text(p, "DestinationServiceID"))
            .unwrap_or_default(),
        critical: field(r, "Checks")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| text(c, "Status") == "critical")),
    })
}

/// Instances of a service as `/v1/health/connect/<s>` lists them (its sidecars), healthy
/// when neither the sidecar nor the instance it fronts (from `/v1/health/service/<s>`) has a
/// critical check — what Consul's sidecar alias check says.
pub fn endpoints(proxies: &[Row], parents: &[Row]) -> Vec<Endpoint> {
    let parent_ok: BTreeMap<(&str, &str), bool> = parents
        .iter()
        .map(|r| ((r.node.as_str(), r.id.as_str()), !r.critical))
        .collect();
    let mut out = Vec::new();
    for r in proxies {
        let (Ok(address), Some(port)) = (r.address.parse::<IpAddr>(), r.port) else {
            continue;
        };
        let parent_healthy = r.fronts.is_empty()
            || parent_ok
                .get(&(r.node.as_str(), r.fronts.as_str()))
                .copied()
                .unwrap_or(false);
        out.push(Endpoint {
            address,
            port,
            healthy: !r.critical && parent_healthy,
        });
    }
    out.sort_by_key(|e| (e.address, e.port));
    out
}

/// Everything the snapshot is made of; `None` until first known.
struct Inputs {
    leaf: watch::Receiver<Option<Arc<LeafCert>>>,
    roots: watch::Receiver<Option<Arc<CaRoots>>>,
    /// (whether an unmatched source is allowed, the intentions in precedence order).
    intentions: watch::Receiver<Option<Arc<Decisions>>>,
    defaults: watch::Receiver<Option<Arc<Vec<ConfigEntry>>>>,
    global: watch::Receiver<Option<Arc<Option<ConfigEntry>>>>,
    /// Per upstream: its sidecars and the instances they front.
    upstreams: Vec<(Rows, Rows)>,
}

type Rows = watch::Receiver<Option<Arc<Vec<Row>>>>;
type Decisions = (bool, Vec<Intention>);

fn assemble(def: &ProxyDef, datacenter: &str, i: &Inputs) -> Option<ProxySnapshot> {
    let leaf = i.leaf.borrow().clone()?;
    let roots = i.roots.borrow().clone()?;
    let ints = i.intentions.borrow().clone()?;
    let defaults = i.defaults.borrow().clone().unwrap_or_default();
    let global = i.global.borrow().clone().and_then(|g| (*g).clone());
    let mut upstreams = Vec::new();
    for (u, (proxies, parents)) in def.upstreams.iter().zip(&i.upstreams) {
        let proxies = proxies.borrow().clone().unwrap_or_default();
        let parents = parents.borrow().clone().unwrap_or_default();
        upstreams.push(Upstream {
            destination: u.destination.clone(),
            datacenter: u.datacenter.clone(),
            local_bind: u.local_bind,
            protocol: protocol_of(&defaults, global.as_ref(), &u.destination),
            endpoints: endpoints(&proxies, &parents),
        });
    }
    Some(ProxySnapshot {
        proxy_id: def.id.clone(),
        service: def.destination.clone(),
        datacenter: datacenter.to_string(),
        trust_domain: roots.trust_domain.clone(),
        public_listener: def.public_listener,
        local_app: def.local_app,
        protocol: protocol_of(&defaults, global.as_ref(), &def.destination),
        leaf: berth_xds::Leaf {
            cert_pem: leaf.issued.cert_pem.clone(),
            key_pem: leaf.key_pem.clone(),
        },
        roots: roots.roots.iter().map(|r| r.root_cert.clone()).collect(),
        intentions: intentions(&ints.1),
        default_allow: ints.0,
        upstreams,
    })
}

/// One running proxy: its definition, the task that builds its snapshots, and the channel
/// the xDS server reads.
struct Running {
    def: ProxyDef,
    tx: watch::Sender<Option<Arc<ProxySnapshot>>>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Proxies {
    servers: Arc<Servers>,
    leaves: Arc<Leaves>,
    roots: watch::Receiver<Option<Arc<CaRoots>>>,
    datacenter: String,
    running: Mutex<HashMap<String, Running>>,
}

impl Proxies {
    pub fn new(
        servers: Arc<Servers>,
        leaves: Arc<Leaves>,
        roots: watch::Receiver<Option<Arc<CaRoots>>>,
        datacenter: String,
    ) -> Proxies {
        Proxies {
            servers,
            leaves,
            roots,
            datacenter,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The snapshot channel of a local proxy, and the service it fronts.
    pub fn get(
        &self,
        proxy_id: &str,
    ) -> Option<(String, watch::Receiver<Option<Arc<ProxySnapshot>>>)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .get(proxy_id)
            .map(|r| (r.def.destination.clone(), r.tx.subscribe()))
    }

    /// Makes the running proxies match the local registrations.
    pub fn reconcile(&self, defs: Vec<ProxyDef>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: BTreeMap<String, ProxyDef> =
            defs.into_iter().map(|d| (d.id.clone(), d)).collect();
        running.retain(|id, r| {
            let keep = wanted.get(id) == Some(&r.def);
            if !keep {
                r.task.abort();
                // Streams of a removed proxy end; a changed one gets a new channel below.
                r.tx.send_replace(None);
            }
            keep
        });
        for (id, def) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let (tx, _) = watch::channel(None);
            let task = tokio::spawn(build_loop(
                def.clone(),
                self.datacenter.clone(),
                self.inputs(&def),
                tx.clone(),
            ));
            running.insert(id, Running { def, tx, task });
        }
        let services: Vec<String> = running
            .values()
            .map(|r| r.def.destination.clone())
            .collect();
        self.leaves.retain(&services);
    }

    fn inputs(&self, def: &ProxyDef) -> Inputs {
        let s = &self.servers;
        let token = def.token.clone();
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let intentions = blocking(
            s.clone(),
            format!(
                "/v1/connect/intentions/match?by=destination&name={}",
                enc(&def.destination)
            ),
            token.clone(),
            {
                let dest = def.destination.clone();
                move |r| {
                    let default = r.header("x-berth-default-intention") != Some("deny");
                    let mut m: BTreeMap<String, Vec<Intention>> = json_or(r, BTreeMap::new)?;
                    Ok((default, m.remove(&dest).unwrap_or_default()))
                }
            },
        );
        let defaults = blocking(
            s.clone(),
            "/v1/config/service-defaults".into(),
            token.clone(),
            |r| json_or(r, Vec::new),
        );
        let global = blocking(
            s.clone(),
            "/v1/config/proxy-defaults/global".into(),
            token.clone(),
            |r| {
                json_or(r, || None::<ConfigEntry>)
                    .map(|e| e.filter(|e: &ConfigEntry| !e.name.is_empty()))
            },
        );
        let upstreams = def
            .upstreams
            .iter()
            .map(|u| {
                let rows = |path: String| {
                    blocking(s.clone(), path, token.clone(), |r| {
                        json_or(r, Vec::new)
                            .map(|rows: Vec<Value>| rows.iter().filter_map(row_of).collect())
                    })
                };
                (
                    rows(format!("/v1/health/connect/{}", enc(&u.destination))),
                    rows(format!("/v1/health/service/{}", enc(&u.destination))),
                )
            })
            .collect();
        Inputs {
            leaf: self.leaves.watch(&def.destination, token.as_deref()),
            roots: self.roots.clone(),
            intentions,
            defaults,
            global,
            upstreams,
        }
    }
}

async fn build_loop(
    def: ProxyDef,
    datacenter: String,
    mut inputs: Inputs,
    tx: watch::Sender<Option<Arc<ProxySnapshot>>>,
) {
    loop {
        if let Some(snap) = assemble(&def, &datacenter, &inputs) {
            let same = tx.borrow().as_deref() == Some(&snap);
            if !same {
                tx.send_replace(Some(Arc::new(snap)));
            }
        }
        let mut ups = Vec::new();
        for (a, b) in &mut inputs.upstreams {
            ups.push(Box::pin(a.changed()));
            ups.push(Box::pin(b.changed()));
        }
        let any_upstream = async {
            if ups.is_empty() {
                std::future::pending::<()>().await;
            } else {
                let _ = futures::future::select_all(ups).await;
            }
        };
        tokio::select! {
            r = inputs.leaf.changed() => if r.is_err() { return },
            r = inputs.roots.changed() => if r.is_err() { return },
            r = inputs.intentions.changed() => if r.is_err() { return },
            r = inputs.defaults.changed() => if r.is_err() { return },
            r = inputs.global.changed() => if r.is_err() { return },
            _ = any_upstream => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxies_parse_from_their_registration() {
        let s = AgentService {
            kind: "connect-proxy".into(),
            id: "web-sidecar-proxy".into(),
            service: "web-sidecar-proxy".into(),
            port: 21000,
            proxy: Some(json!({
                "DestinationServiceName": "web",
                "LocalServicePort": 8080,
                "Upstreams": [{"DestinationName": "api", "LocalBindPort": 9191}]
            })),
            ..Default::default()
        };
        let d = parse_proxy(&s, IpAddr::from([10, 0, 0, 5]), "dc1", None).unwrap();
        assert_eq!(d.public_listener, "10.0.0.5:21000".parse().unwrap());
        assert_eq!(d.local_app, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(d.upstreams[0].local_bind, "127.0.0.1:9191".parse().unwrap());
        assert_eq!(d.upstreams[0].datacenter, "dc1");
        let mut bad = s.clone();
        bad.proxy = Some(json!({"LocalServicePort": 1}));
        assert!(parse_proxy(&bad, IpAddr::from([10, 0, 0, 5]), "dc1", None).is_err());
    }

    #[test]
    fn endpoints_carry_their_own_and_their_parents_health() {
        let proxies = vec![
            json!({"Node": {"Node": "a", "Address": "10.0.0.1"}, "Service": {"Port": 21000, "Proxy": {"DestinationServiceID": "api"}}, "Checks": [{"Status": "passing"}]}),
            json!({"Node": {"Node": "b", "Address": "10.0.0.2"}, "Service": {"Address": "10.0.9.9", "Port": 21000, "Proxy": {"DestinationServiceID": "api"}}, "Checks": [{"Status": "critical"}]}),
            json!({"Node": {"Node": "c", "Address": "10.0.0.3"}, "Service": {"Port": 21000, "Proxy": {"DestinationServiceID": "api"}}, "Checks": []}),
        ];
        let parents = vec![
            json!({"Node": {"Node": "a"}, "Service": {"ID": "api"}, "Checks": [{"Status": "passing"}]}),
            json!({"Node": {"Node": "b"}, "Service": {"ID": "api"}, "Checks": [{"Status": "passing"}]}),
            json!({"Node": {"Node": "c"}, "Service": {"ID": "api"}, "Checks": [{"Status": "critical"}]}),
        ];
        let rows = |v: &[Value]| v.iter().filter_map(row_of).collect::<Vec<_>>();
        let e = endpoints(&rows(&proxies), &rows(&parents));
        assert_eq!(e.len(), 3);
        assert!(e[0].healthy);
        assert_eq!(e[1].address, "10.0.0.3".parse::<IpAddr>().unwrap());
        assert!(!e[1].healthy, "its parent is critical");
        assert_eq!(e[2].address, "10.0.9.9".parse::<IpAddr>().unwrap());
        assert!(!e[2].healthy, "the sidecar itself is critical");
    }

    #[test]
    fn protocols_resolve_like_the_server() {
        let sd = vec![ConfigEntry {
            kind: "service-defaults".into(),
            name: "api".into(),
            protocol: "http".into(),
            ..Default::default()
        }];
        let global = ConfigEntry {
            kind: "proxy-defaults".into(),
            name: "global".into(),
            config: Some(json!({"protocol": "grpc"})),
            ..Default::default()
        };
        assert_eq!(protocol_of(&sd, None, "api"), Protocol::Http);
        assert_eq!(protocol_of(&sd, None, "web"), Protocol::Tcp);
        assert_eq!(protocol_of(&sd, Some(&global), "web"), Protocol::Grpc);
    }
}
