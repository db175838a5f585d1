//! The agent's local registrations, and the pure rules that turn a request into them (IDs,
//! names and defaults as Consul's agent gives them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use berth_api::agent::{CheckRegistration, ServiceRegistration};
use berth_api::catalog::{AgentService, CRITICAL, HealthCheck, PASSING, WARNING};
use berth_api::format_duration;

use crate::AgentConfig;

/// Consul never runs interval checks more often than this.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const NODE_MAINTENANCE: &str = "_node_maintenance";
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
const DEFAULT_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
const DEFAULT_SERVICE_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    /// The request is wrong: a 400.
    #[error("{0}")]
    Invalid(String),
    /// What it names does not exist: a 404.
    #[error("{0}")]
    NotFound(String),
}

fn invalid(msg: impl Into<String>) -> RegisterError {
    RegisterError::Invalid(msg.into())
}

/// How a check runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CheckKind {
    Ttl(Duration),
    Http {
        url: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        body: String,
        tls_skip_verify: bool,
        disable_redirects: bool,
    },
    Tcp(String),
    /// `host:port` and the optional service name after a `/`.
    Grpc {
        target: String,
        service: String,
    },
    /// Set only through the API (maintenance checks).
    Manual,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub deregister_critical_after: Option<Duration>,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    pub failures_before_warning: u32,
    pub output_max_size: usize,
}

impl CheckSpec {
    fn manual() -> Self {
        CheckSpec {
            kind: CheckKind::Manual,
            interval: Duration::ZERO,
            timeout: Duration::ZERO,
            deregister_critical_after: None,
            success_before_passing: 0,
            failures_before_critical: 0,
            failures_before_warning: 0,
            output_max_size: 4096,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            CheckKind::Ttl(_) => "ttl",
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp(_) => "tcp",
            CheckKind::Grpc { .. } => "grpc",
            CheckKind::Manual => "",
        }
    }
}

pub struct LocalService {
    pub service: AgentService,
    /// The service this one is the sidecar proxy of, when registered through
    /// `Connect.SidecarService`; it goes when its parent goes.
    pub sidecar_of: Option<String>,
}

pub struct LocalCheck {
    pub check: HealthCheck,
    pub spec: CheckSpec,
    /// Which runner may report for this check; a replaced check's old runner is ignored.
    pub runner_id: u64,
    pub runner: Option<AbortHandle>,
    pub ttl_deadline: Option<Instant>,
    pub ttl_reset: Arc<Notify>,
    pub successes: u32,
    pub failures: u32,
    pub critical_since: Option<Instant>,
}

impl LocalCheck {
    fn new(check: HealthCheck, spec: CheckSpec) -> Self {
        let critical_since = (check.status == CRITICAL).then(Instant::now);
        let ttl_deadline = match spec.kind {
            CheckKind::Ttl(ttl) => Some(Instant::now() + ttl),
            _ => None,
        };
        LocalCheck {
            check,
            spec,
            runner_id: 0,
            runner: None,
            ttl_deadline,
            ttl_reset: Arc::new(Notify::new()),
            successes: 0,
            failures: 0,
            critical_since,
        }
    }

    fn set_status(&mut self, status: &str, output: String) -> bool {
        if status == CRITICAL && self.check.status != CRITICAL {
            self.critical_since = Some(Instant::now());
        } else if status != CRITICAL {
            self.critical_since = None;
        }
        let changed = self.check.status != status || self.check.output != output;
        self.check.status = status.to_string();
        self.check.output = output;
        changed
    }
}

impl Drop for LocalCheck {
    fn drop(&mut self) {
        if let Some(r) = &self.runner {
            r.abort();
        }
    }
}

pub struct LocalState {
    pub node: String,
    pub services: BTreeMap<String, LocalService>,
    pub checks: BTreeMap<String, LocalCheck>,
    /// The token each service was registered with (by service ID): anti-entropy writes the
    /// service with it, as Consul's agents do, so a service token registers what it may.
    pub tokens: BTreeMap<String, String>,
    generation: u64,
    next_runner: u64,
    sidecar_ports: (u16, u16),
}

/// What an agent keeps across restarts (Consul's agents keep it in their data dir): the
/// local services with the tokens they were registered with, and the checks with their
/// last status, so that a restarted agent neither forgets nor deregisters them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Persisted {
    pub services: Vec<(AgentService, Option<String>)>,
    pub checks: Vec<(HealthCheck, CheckSpec)>,
    pub tokens: BTreeMap<String, String>,
}

/// A service ready to be added: the service, its checks, and its sidecar if it asked for one.
pub struct NewService {
    pub service: AgentService,
    pub checks: Vec<(HealthCheck, CheckSpec)>,
    pub sidecar: Option<Box<NewService>>,
}

impl LocalState {
    pub fn new(cfg: &AgentConfig) -> Self {
        LocalState {
            node: cfg.node.node.clone(),
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            tokens: BTreeMap::new(),
            generation: 0,
            next_runner: 1,
            sidecar_ports: cfg.sidecar_ports,
        }
    }

    /// The state to keep across a restart.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            services: self
                .services
                .values()
                .map(|s| (s.service.clone(), s.sidecar_of.clone()))
                .collect(),
            checks: self
                .checks
                .values()
                .map(|c| (c.check.clone(), c.spec.clone()))
                .collect(),
            tokens: self
                .tokens
                .iter()
                .filter(|(id, _)| self.services.contains_key(*id))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Puts back what [`LocalState::persisted`] kept; returns the IDs of the checks whose
    /// runners must start.
    pub fn restore(&mut self, p: Persisted) -> Vec<String> {
        for (service, sidecar_of) in p.services {
            self.services.insert(
                service.id.clone(),
                LocalService {
                    service,
                    sidecar_of,
                },
            );
        }
        let mut ids = Vec::new();
        for (check, spec) in p.checks {
            ids.push(check.check_id.clone());
            self.checks
                .insert(check.check_id.clone(), LocalCheck::new(check, spec));
        }
        self.tokens.extend(p.tokens);
        self.bump();
        ids
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn bump(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    pub(crate) fn stop_all(&mut self) {
        for c in self.checks.values_mut() {
            if let Some(r) = c.runner.take() {
                r.abort();
            }
        }
    }

    pub(crate) fn next_runner_id(&mut self) -> u64 {
        self.next_runner += 1;
        self.next_runner
    }

    /// Turns a registration into a service with checks, applying Consul's defaults.
    pub fn build_service(&self, reg: ServiceRegistration) -> Result<NewService, RegisterError> {
        self.build_service_inner(reg, None)
    }

    fn build_service_inner(
        &self,
        reg: ServiceRegistration,
        parent: Option<&AgentService>,
    ) -> Result<NewService, RegisterError> {
        let ServiceRegistration {
            id,
            name,
            kind,
            tags,
            address,
            tagged_addresses,
            meta,
            port,
            weights,
            enable_tag_override,
            proxy,
            connect,
            check,
            checks,
            locality,
            ..
        } = reg;
        let (name, id, kind, port, tags, meta, proxy) = match parent {
            None => {
                if name.is_empty() {
                    return Err(invalid("Missing service name"));
                }
                let id = if id.is_empty() { name.clone() } else { id };
                (name, id, kind, port, tags, meta, proxy)
            }
            // Consul's sidecar defaults: named after the parent, proxying to it, with a port
            // from the sidecar range, and the parent's tags and meta unless given.
            Some(p) => {
                let name = if name.is_empty() {
                    format!("{}-sidecar-proxy", p.service)
                } else {
                    name
                };
                let id = if id.is_empty() {
                    format!("{}-sidecar-proxy", p.id)
                } else {
                    id
                };
                let port = if port == 0 {
                    self.free_sidecar_port(&id)?
                } else {
                    port
                };
                let mut proxy = match proxy {
                    Some(Value::Object(m)) => m,
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => {
                        return Err(invalid("Connect.SidecarService.Proxy must be an object"));
                    }
                };
                proxy.insert("DestinationServiceName".into(), json!(p.service));
                proxy.insert("DestinationServiceID".into(), json!(p.id));
                proxy
                    .entry("LocalServiceAddress")
                    .or_insert_with(|| json!("127.0.0.1"));
                proxy
                    .entry("LocalServicePort")
                    .or_insert_with(|| json!(p.port));
                let tags = if tags.is_empty() {
                    p.tags.clone()
                } else {
                    tags
                };
                let meta = if meta.is_empty() {
                    p.meta.clone()
                } else {
                    meta
                };
                (
                    name,
                    id,
                    "connect-proxy".to_string(),
                    port,
                    tags,
                    meta,
                    Some(Value::Object(proxy)),
                )
            }
        };
        if kind == "connect-proxy" {
            let dest = proxy
                .as_ref()
                .and_then(|p| p.get("DestinationServiceName"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if dest.is_empty() {
                return Err(invalid(
                    "Proxy.DestinationServiceName must be set for a connect-proxy",
                ));
            }
            if port == 0 {
                return Err(invalid("Port must be set for a connect-proxy"));
            }
        }
        let weights = weights.unwrap_or_default();
        if weights.passing < 1 {
            return Err(invalid("Passing must be greater than 0"));
        }
        let native = connect.as_ref().is_some_and(|c| c.native);
        let sidecar_reg = connect.and_then(|c| c.sidecar_service);
        if parent.is_some() && sidecar_reg.is_some() {
            return Err(invalid("A sidecar service cannot have its own sidecar"));
        }
        let service = AgentService {
            kind,
            id,
            service: name,
            tags,
            meta,
            port,
            address,
            tagged_addresses,
            weights,
            enable_tag_override,
            proxy,
            connect: native.then(|| json!({"Native": true})),
            locality,
            create_index: 0,
            modify_index: 0,
        };
        let defs: Vec<CheckRegistration> = check.into_iter().chain(checks).collect();
        let numbered = defs.len() > 1;
        let mut built = Vec::new();
        for (i, def) in defs.into_iter().enumerate() {
            let default_id = if numbered {
                format!("service:{}:{}", service.id, i + 1)
            } else {
                format!("service:{}", service.id)
            };
            built.push(self.build_check(def, Some(&service), &default_id)?);
        }
        if parent.is_some() && built.is_empty() {
            // The proxy is healthy when it listens, as Consul's default sidecar check says.
            let host = if service.address.is_empty() {
                "127.0.0.1".to_string()
            } else {
                service.address.clone()
            };
            let def = CheckRegistration {
                name: "Connect Sidecar Listening".into(),
                tcp: format!("{host}:{}", service.port),
                interval: berth_api::agent::GoDuration(Some(Duration::from_secs(10))),
                ..Default::default()
            };
            built.push(self.build_check(
                def,
                Some(&service),
                &format!("service:{}:1", service.id),
            )?);
        }
        let sidecar = match sidecar_reg {
            None => None,
            Some(reg) => Some(Box::new(self.build_service_inner(*reg, Some(&service))?)),
        };
        Ok(NewService {
            service,
            checks: built,
            sidecar,
        })
    }

    fn free_sidecar_port(&self, id: &str) -> Result<u16, RegisterError> {
        if let Some(s) = self.services.get(id) {
            return Ok(s.service.port);
        }
        let used: std::collections::HashSet<u16> = self
            .services
            .values()
            .filter(|s| s.service.kind == "connect-proxy")
            .map(|s| s.service.port)
            .collect();
        (self.sidecar_ports.0..=self.sidecar_ports.1)
            .find(|p| !used.contains(p))
            .ok_or_else(|| invalid("No sidecar port is free in the sidecar port range"))
    }

    /// Turns a check registration into a catalog check and how to run it.
    pub fn build_check(
        &self,
        def: CheckRegistration,
        service: Option<&AgentService>,
        default_id: &str,
    ) -> Result<(HealthCheck, CheckSpec), RegisterError> {
        let unsupported = [
            (
                !def.args.is_empty() || !def.script_args.is_empty(),
                "Script",
            ),
            (!def.docker_container_id.is_empty(), "Docker"),
            (
                !def.alias_node.is_empty() || !def.alias_service.is_empty(),
                "Alias",
            ),
            (!def.h2ping.is_empty(), "H2PING"),
            (!def.udp.is_empty(), "UDP"),
            (!def.os_service.is_empty(), "OSService"),
        ];
        if let Some((_, kind)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(invalid(format!(
                "{kind} checks are not supported by Berth: use TTL, HTTP, TCP or GRPC"
            )));
        }
        let kinds = [
            def.ttl.0.is_some(),
            !def.http.is_empty(),
            !def.tcp.is_empty(),
            !def.grpc.is_empty(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => {
                return Err(invalid(
                    "Invalid check: must set exactly one of TTL, HTTP, TCP or GRPC",
                ));
            }
            1 => {}
            _ => {
                return Err(invalid(
                    "Invalid check: only one of TTL, HTTP, TCP or GRPC may be set",
                ));
            }
        }
        let interval = def.interval.0.unwrap_or(Duration::ZERO);
        let kind = if let Some(ttl) = def.ttl.0 {
            if ttl.is_zero() {
                return Err(invalid("Invalid check: TTL must be positive"));
            }
            CheckKind::Ttl(ttl)
        } else {
            if def.interval.0.is_none() {
                return Err(invalid(
                    "Invalid check: Interval is required for HTTP, TCP and GRPC checks",
                ));
            }
            if !def.http.is_empty() {
                let url = reqwest::Url::parse(&def.http)
                    .map_err(|e| invalid(format!("Invalid check: HTTP {:?}: {e}", def.http)))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid(format!(
                        "Invalid check: HTTP {:?} must be an http or https URL",
                        def.http
                    )));
                }
                let method = if def.method.is_empty() {
                    "GET".to_string()
                } else {
                    def.method.to_ascii_uppercase()
                };
                reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|_| invalid(format!("Invalid check: Method {method:?}")))?;
                CheckKind::Http {
                    url: def.http.clone(),
                    method,
                    header: def.header.clone(),
                    body: def.body.clone(),
                    tls_skip_verify: def.tls_skip_verify,
                    disable_redirects: def.disable_redirects,
                }
            } else if !def.tcp.is_empty() {
                if !def.tcp.contains(':') {
                    return Err(invalid(format!(
                        "Invalid check: TCP {:?} must be host:port",
                        def.tcp
                    )));
                }
                CheckKind::Tcp(def.tcp.clone())
            } else {
                if def.grpc_use_tls {
                    return Err(invalid(
                        "GRPCUseTLS is not supported by Berth yet: check the plaintext port",
                    ));
                }
                let (target, service) = match def.grpc.split_once('/') {
                    Some((t, s)) => (t.to_string(), s.to_string()),
                    None => (def.grpc.clone(), String::new()),
                };
                if !target.contains(':') {
                    return Err(invalid(format!(
                        "Invalid check: GRPC {:?} must be host:port[/service]",
                        def.grpc
                    )));
                }
                CheckKind::Grpc { target, service }
            }
        };
        let check_id = [&def.check_id, &def.id]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .or_else(|| {
                service
                    .is_none()
                    .then(|| def.name.clone())
                    .filter(|n| !n.is_empty())
            })
            .unwrap_or_else(|| default_id.to_string());
        if check_id.is_empty() {
            return Err(invalid("Missing check name"));
        }
        let service_id = match service {
            Some(s) => s.id.clone(),
            None => def.service_id.clone(),
        };
        let (service_name, service_tags) = match service {
            Some(s) => (s.service.clone(), s.tags.clone()),
            None if service_id.is_empty() => (String::new(), Vec::new()),
            None => match self.services.get(&service_id) {
                Some(s) => (s.service.service.clone(), s.service.tags.clone()),
                // A 404, as Consul 1.11+ answers (py-consul's tests expect it).
                None => {
                    return Err(RegisterError::NotFound(format!(
                        "ServiceID \"{service_id}\" does not exist"
                    )));
                }
            },
        };
        let name = if !def.name.is_empty() {
            def.name.clone()
        } else if !service_name.is_empty() {
            format!("Service '{service_name}' check")
        } else {
            check_id.clone()
        };
        let status = match def.status.as_str() {
            "" => CRITICAL.to_string(),
            s @ (PASSING | WARNING | CRITICAL) => s.to_string(),
            other => return Err(invalid(format!("Invalid check status: \"{other}\""))),
        };
        let spec = CheckSpec {
            kind,
            interval: if interval.is_zero() {
                Duration::ZERO
            } else {
                interval.max(MIN_INTERVAL)
            },
            timeout: def.timeout.0.unwrap_or(DEFAULT_TIMEOUT),
            deregister_critical_after: def.deregister_critical_service_after.0,
            success_before_passing: def.success_before_passing,
            failures_before_critical: def.failures_before_critical,
            failures_before_warning: def.failures_before_warning,
            output_max_size: if def.output_max_size == 0 {
                4096
            } else {
                def.output_max_size
            },
        };
        let mut definition = Map::new();
        match &spec.kind {
            CheckKind::Http {
                url,
                method,
                header,
                ..
            } => {
                definition.insert("HTTP".into(), json!(url));
                definition.insert("Method".into(), json!(method));
                if !header.is_empty() {
                    definition.insert("Header".into(), json!(header));
                }
            }
            CheckKind::Tcp(a) => {
                definition.insert("TCP".into(), json!(a));
            }
            CheckKind::Grpc { .. } => {
                definition.insert("GRPC".into(), json!(def.grpc));
            }
            CheckKind::Ttl(_) | CheckKind::Manual => {}
        }
        if let Some(d) = spec.deregister_critical_after {
            definition.insert(
                "DeregisterCriticalServiceAfter".into(),
                json!(format_duration(d)),
            );
        }
        let check = HealthCheck {
            node: self.node.clone(),
            check_id,
            name,
            status,
            notes: def.notes.clone(),
            output: String::new(),
            service_id,
            service_name,
            service_tags,
            kind: spec.type_name().to_string(),
            interval: if spec.interval.is_zero() {
                String::new()
            } else {
                format_duration(spec.interval)
            },
            timeout: if matches!(spec.kind, CheckKind::Ttl(_) | CheckKind::Manual) {
                String::new()
            } else {
                format_duration(spec.timeout)
            },
            definition: Value::Object(definition),
            create_index: 0,
            modify_index: 0,
        };
        Ok((check, spec))
    }

    /// Adds or replaces a service with its checks. Returns the checks that need a runner.
    /// With `replace_existing_checks`, the service's checks not in this registration go.
    pub fn add_service(
        &mut self,
        new: NewService,
        sidecar_of: Option<String>,
        replace_existing_checks: bool,
    ) -> Vec<String> {
        let id = new.service.id.clone();
        let mut started = Vec::new();
        if replace_existing_checks {
            let keep: Vec<&str> = new
                .checks
                .iter()
                .map(|(c, _)| c.check_id.as_str())
                .collect();
            self.checks.retain(|cid, c| {
                c.check.service_id != id
                    || keep.contains(&cid.as_str())
                    || cid.starts_with(SERVICE_MAINTENANCE_PREFIX)
            });
        }
        // Checks already attached to the service follow its new name and tags.
        for c in self.checks.values_mut() {
            if c.check.service_id == id {
                c.check.service_name = new.service.service.clone();
                c.check.service_tags = new.service.tags.clone();
            }
        }
        self.services.insert(
            id.clone(),
            LocalService {
                service: new.service,
                sidecar_of,
            },
        );
        for (check, spec) in new.checks {
            started.push(self.add_check(check, spec));
        }
        if let Some(sidecar) = new.sidecar {
            started.extend(self.add_service(*sidecar, Some(id), replace_existing_checks));
        }
        started
    }

    /// Adds or replaces a check, keeping the status of a check it replaces unless the new
    /// registration sets one. Returns its ID.
    pub fn add_check(&mut self, mut check: HealthCheck, spec: CheckSpec) -> String {
        let id = check.check_id.clone();
        if let Some(old) = self.checks.get(&id)
            && old.check.kind == check.kind
        {
            check.status = old.check.status.clone();
            check.output = old.check.output.clone();
        }
        self.checks.insert(id.clone(), LocalCheck::new(check, spec));
        id
    }

    /// Removes a service, its checks, and the sidecars registered with it. Returns whether
    /// it existed.
    pub fn remove_service(&mut self, id: &str) -> bool {
        // The service's token stays until anti-entropy has deregistered it with that token.
        if self.services.remove(id).is_none() {
            return false;
        }
        self.checks.retain(|_, c| c.check.service_id != id);
        let sidecars: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.sidecar_of.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for s in sidecars {
            self.remove_service(&s);
        }
        true
    }

    pub fn remove_check(&mut self, id: &str) -> bool {
        self.checks.remove(id).is_some()
    }

    /// Sets a TTL check's status from the API and restarts its TTL.
    pub fn update_ttl(
        &mut self,
        id: &str,
        status: &str,
        output: String,
    ) -> Result<bool, RegisterError> {
        let c = self
            .checks
            .get_mut(id)
            .ok_or_else(|| RegisterError::NotFound(format!("Unknown check ID \"{id}\"")))?;
        let CheckKind::Ttl(ttl) = c.spec.kind else {
            return Err(invalid(format!(
                "CheckID \"{id}\" does not have associated TTL"
            )));
        };
        if ![PASSING, WARNING, CRITICAL].contains(&status) {
            return Err(invalid(format!("Invalid check status: \"{status}\"")));
        }
        let output = truncate(output, c.spec.output_max_size);
        c.ttl_deadline = Some(Instant::now() + ttl);
        c.ttl_reset.notify_one();
        Ok(c.set_status(status, output))
    }

    /// Several TTL updates at once: all are validated before the first is applied.
    pub fn update_ttls(
        &mut self,
        updates: Vec<(String, String, String)>,
    ) -> Result<bool, RegisterError> {
        for (id, status, _) in &updates {
            let c = self
                .checks
                .get(id)
                .ok_or_else(|| RegisterError::NotFound(format!("Unknown check ID \"{id}\"")))?;
            if !matches!(c.spec.kind, CheckKind::Ttl(_)) {
                return Err(invalid(format!(
                    "CheckID \"{id}\" does not have associated TTL"
                )));
            }
            if ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
                return Err(invalid(format!("Invalid check status: \"{status}\"")));
            }
        }
        let mut changed = false;
        for (id, status, output) in updates {
            changed |= self.update_ttl(&id, &status, output)?;
        }
        Ok(changed)
    }

    /// A runner's result, passed through the check's success/failure thresholds. Returns
    /// whether the visible status or output changed.
    pub fn report(&mut self, id: &str, runner_id: u64, status: &str, output: String) -> bool {
        let Some(c) = self.checks.get_mut(id) else {
            return false;
        };
        if c.runner_id != runner_id {
            return false;
        }
        let output = truncate(output, c.spec.output_max_size);
        let target = if status == PASSING {
            c.failures = 0;
            c.successes = c.successes.saturating_add(1);
            if c.successes < c.spec.success_before_passing.max(1) {
                return false;
            }
            PASSING
        } else {
            c.successes = 0;
            c.failures = c.failures.saturating_add(1);
            if c.failures >= c.spec.failures_before_critical.max(1) {
                status
            } else if c.spec.failures_before_warning > 0
                && c.failures >= c.spec.failures_before_warning
            {
                WARNING
            } else {
                return false;
            }
        };
        c.set_status(target, output)
    }

    /// Marks a TTL check critical when its TTL ran out. Returns whether it changed.
    pub fn expire_ttl(&mut self, id: &str, now: Instant) -> bool {
        let Some(c) = self.checks.get_mut(id) else {
            return false;
        };
        match (c.spec.kind.clone(), c.ttl_deadline) {
            (CheckKind::Ttl(ttl), Some(deadline)) if now >= deadline => {
                c.ttl_deadline = None;
                c.set_status(
                    CRITICAL,
                    format!("TTL expired (TTL {})", format_duration(ttl)),
                )
            }
            _ => false,
        }
    }

    /// Puts a service in or out of maintenance. Returns whether anything changed.
    pub fn service_maintenance(
        &mut self,
        id: &str,
        enable: bool,
        reason: &str,
    ) -> Result<bool, RegisterError> {
        let svc = self
            .services
            .get(id)
            .ok_or_else(|| RegisterError::NotFound(format!("Unknown service ID \"{id}\"")))?;
        let check_id = format!("{SERVICE_MAINTENANCE_PREFIX}{id}");
        if !enable {
            return Ok(self.remove_check(&check_id));
        }
        let check = HealthCheck {
            node: self.node.clone(),
            check_id: check_id.clone(),
            name: "Service Maintenance Mode".into(),
            status: berth_api::catalog::MAINTENANCE.into(),
            notes: if reason.is_empty() {
                DEFAULT_SERVICE_MAINTENANCE_REASON.into()
            } else {
                reason.into()
            },
            service_id: id.to_string(),
            service_name: svc.service.service.clone(),
            service_tags: svc.service.tags.clone(),
            definition: Value::Object(Map::new()),
            ..Default::default()
        };
        self.insert_maintenance(check);
        Ok(true)
    }

    pub fn node_maintenance(&mut self, enable: bool, reason: &str) -> bool {
        if !enable {
            return self.remove_check(NODE_MAINTENANCE);
        }
        let check = HealthCheck {
            node: self.node.clone(),
            check_id: NODE_MAINTENANCE.into(),
            name: "Node Maintenance Mode".into(),
            status: berth_api::catalog::MAINTENANCE.into(),
            notes: if reason.is_empty() {
                DEFAULT_MAINTENANCE_REASON.into()
            } else {
                reason.into()
            },
            definition: Value::Object(Map::new()),
            ..Default::default()
        };
        self.insert_maintenance(check);
        true
    }

    fn insert_maintenance(&mut self, check: HealthCheck) {
        // Consul stores maintenance checks as critical; `maintenance` is only how they read.
        let mut check = check;
        check.status = CRITICAL.into();
        let id = check.check_id.clone();
        let mut local = LocalCheck::new(check, CheckSpec::manual());
        local.critical_since = None;
        self.checks.insert(id, local);
    }

    /// Services whose check has been critical longer than its
    /// `DeregisterCriticalServiceAfter`.
    pub fn services_to_reap(&self, now: Instant) -> Vec<String> {
        self.checks
            .values()
            .filter(|c| !c.check.service_id.is_empty())
            .filter(
                |c| match (c.spec.deregister_critical_after, c.critical_since) {
                    (Some(after), Some(since)) => now.duration_since(since) >= after,
                    _ => false,
                },
            )
            .map(|c| c.check.service_id.clone())
            .collect()
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests;
