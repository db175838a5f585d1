//! The catalog: nodes, the service instances on them and their checks (Consul's `nodes`,
//! `services` and `checks` tables), with a per-service index so that a change to one service
//! wakes only that service's watchers.

use std::collections::{BTreeMap, BTreeSet};

use berth_api::catalog::{AgentService, HealthCheck, Node};
pub use berth_api::catalog::{CatalogOp, NodeRecord, Registration};

use super::{Changes, CommandResult, State, Table};

fn same_node(a: &Node, b: &Node) -> bool {
    (
        &a.id,
        &a.address,
        &a.datacenter,
        &a.tagged_addresses,
        &a.meta,
        &a.locality,
    ) == (
        &b.id,
        &b.address,
        &b.datacenter,
        &b.tagged_addresses,
        &b.meta,
        &b.locality,
    )
}

fn same_service(a: &AgentService, b: &AgentService) -> bool {
    let mut a = a.clone();
    a.create_index = b.create_index;
    a.modify_index = b.modify_index;
    a == *b
}

fn same_check(a: &HealthCheck, b: &HealthCheck) -> bool {
    let mut a = a.clone();
    a.create_index = b.create_index;
    a.modify_index = b.modify_index;
    a == *b
}

/// The service a `connect-proxy` instance fronts.
fn proxy_destination(s: &AgentService) -> Option<String> {
    if s.kind != "connect-proxy" {
        return None;
    }
    s.proxy
        .as_ref()?
        .get("DestinationServiceName")?
        .as_str()
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

impl State {
    /// Rebuilds the service-name index after a snapshot restore.
    pub fn rebuild_catalog_index(&mut self) {
        self.by_service.clear();
        self.by_destination.clear();
        for (node, rec) in &self.catalog {
            for (id, svc) in &rec.services {
                self.by_service
                    .entry(svc.service.clone())
                    .or_default()
                    .insert((node.clone(), id.clone()));
                if let Some(d) = proxy_destination(svc) {
                    self.by_destination
                        .entry(d)
                        .or_default()
                        .insert((node.clone(), id.clone()));
                }
            }
        }
    }

    fn unindex_destination(&mut self, svc: &AgentService, node: &str) {
        if let Some(d) = proxy_destination(svc)
            && let Some(set) = self.by_destination.get_mut(&d)
        {
            set.remove(&(node.to_string(), svc.id.clone()));
            if set.is_empty() {
                self.by_destination.remove(&d);
            }
        }
    }

    /// Sidecar proxies (node, service ID) of the service `name`.
    pub fn proxies_of(&self, name: &str) -> Vec<(&Node, &AgentService)> {
        self.by_destination
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(node, id)| {
                let rec = self.catalog.get(node)?;
                Some((&rec.node, rec.services.get(id)?))
            })
            .collect()
    }

    fn touch_service(&mut self, name: &str, index: u64, changes: &mut Changes) {
        self.service_index.insert(name.to_string(), index);
        changes.services.push(name.to_string());
        // A sidecar proxy's change changes the mesh view of the service it fronts
        // (`/v1/health/connect/<destination>` waits on the destination).
        let dests: BTreeSet<String> = self
            .by_service
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(n, id)| self.catalog.get(n)?.services.get(id))
            .filter_map(proxy_destination)
            .filter(|d| d != name)
            .collect();
        for d in dests {
            self.service_index.insert(d.clone(), index);
            changes.services.push(d);
        }
    }

    /// Services on `node`, by name: a node-level check concerns them all.
    fn service_names_on(&self, node: &str) -> BTreeSet<String> {
        self.catalog
            .get(node)
            .map(|r| r.services.values().map(|s| s.service.clone()).collect())
            .unwrap_or_default()
    }

    /// Why a registration would fail against the current tables, if it would.
    pub fn check_registration(&self, reg: &Registration) -> Result<(), String> {
        for c in &reg.checks {
            if c.service_id.is_empty() {
                continue;
            }
            let in_request = reg.service.as_ref().is_some_and(|s| s.id == c.service_id);
            let existing = self
                .catalog
                .get(&reg.node.node)
                .is_some_and(|r| r.services.contains_key(&c.service_id));
            if !in_request && !existing {
                return Err(format!(
                    "Unknown service ID '{}' for check ID '{}'",
                    c.service_id, c.check_id
                ));
            }
        }
        Ok(())
    }

    pub(super) fn apply_catalog(
        &mut self,
        index: u64,
        op: &CatalogOp,
        changes: &mut Changes,
    ) -> CommandResult {
        match op {
            CatalogOp::Register(reg) => {
                if let Err(e) = self.check_registration(reg) {
                    return CommandResult::Rejected(e);
                }
                self.register(index, reg, changes);
                CommandResult::Bool(true)
            }
            CatalogOp::Deregister {
                node,
                service_id,
                check_id,
            } => {
                self.deregister(
                    index,
                    node,
                    service_id.as_deref(),
                    check_id.as_deref(),
                    changes,
                );
                CommandResult::Bool(true)
            }
        }
    }

    fn register(&mut self, index: u64, reg: &Registration, changes: &mut Changes) {
        let name = reg.node.node.clone();
        let exists = self.catalog.contains_key(&name);
        let node_changed = match self.catalog.get(&name) {
            None => true,
            Some(rec) => !reg.skip_node_update && !same_node(&rec.node, &reg.node),
        };
        if node_changed {
            let mut node = reg.node.clone();
            node.create_index = self
                .catalog
                .get(&name)
                .map_or(index, |r| r.node.create_index);
            node.modify_index = index;
            let rec = self
                .catalog
                .entry(name.clone())
                .or_insert_with(|| NodeRecord {
                    node: node.clone(),
                    services: BTreeMap::new(),
                    checks: BTreeMap::new(),
                });
            rec.node = node;
            self.bump(Table::Nodes, index, changes);
            changes.nodes.push(name.clone());
            // Node fields appear in every health and catalog row of its services.
            for s in self.service_names_on(&name) {
                self.touch_service(&s, index, changes);
            }
        }
        debug_assert!(exists || self.catalog.contains_key(&name));

        if let Some(svc) = &reg.service {
            let old = self
                .catalog
                .get(&name)
                .and_then(|r| r.services.get(&svc.id))
                .cloned();
            if old.as_ref().is_none_or(|o| !same_service(svc, o)) {
                let mut svc = svc.clone();
                svc.create_index = old.as_ref().map_or(index, |o| o.create_index);
                svc.modify_index = index;
                if let Some(o) = &old
                    && o.service != svc.service
                {
                    if let Some(set) = self.by_service.get_mut(&o.service) {
                        set.remove(&(name.clone(), o.id.clone()));
                    }
                    self.touch_service(&o.service.clone(), index, changes);
                }
                self.by_service
                    .entry(svc.service.clone())
                    .or_default()
                    .insert((name.clone(), svc.id.clone()));
                if let Some(o) = &old {
                    self.unindex_destination(o, &name);
                }
                if let Some(d) = proxy_destination(&svc) {
                    self.by_destination
                        .entry(d)
                        .or_default()
                        .insert((name.clone(), svc.id.clone()));
                }
                let svc_name = svc.service.clone();
                if let Some(rec) = self.catalog.get_mut(&name) {
                    rec.services.insert(svc.id.clone(), svc);
                }
                self.bump(Table::Services, index, changes);
                self.touch_service(&svc_name, index, changes);
            }
        }

        for check in &reg.checks {
            let Some(rec) = self.catalog.get(&name) else {
                break;
            };
            let mut c = check.clone();
            c.node = name.clone();
            if let Some(svc) = rec.services.get(&c.service_id) {
                c.service_name = svc.service.clone();
                c.service_tags = svc.tags.clone();
            }
            let old = rec.checks.get(&c.check_id).cloned();
            if old.as_ref().is_some_and(|o| same_check(&c, o)) {
                continue;
            }
            c.create_index = old.as_ref().map_or(index, |o| o.create_index);
            c.modify_index = index;
            let affected: BTreeSet<String> = if c.service_id.is_empty() {
                self.service_names_on(&name)
            } else {
                BTreeSet::from([c.service_name.clone()])
            };
            if let Some(rec) = self.catalog.get_mut(&name) {
                rec.checks.insert(c.check_id.clone(), c);
            }
            self.bump(Table::Checks, index, changes);
            changes.nodes.push(name.clone());
            for s in affected {
                self.touch_service(&s, index, changes);
            }
        }
    }

    fn deregister(
        &mut self,
        index: u64,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
        changes: &mut Changes,
    ) {
        let Some(rec) = self.catalog.get_mut(node) else {
            return;
        };
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut tables: Vec<Table> = Vec::new();
        let mut removed: Vec<AgentService> = Vec::new();
        match (service_id, check_id) {
            (Some(sid), _) => {
                if let Some(svc) = rec.services.remove(sid) {
                    touched.insert(svc.service.clone());
                    touched.extend(proxy_destination(&svc));
                    removed.push(svc.clone());
                    if let Some(set) = self.by_service.get_mut(&svc.service) {
                        set.remove(&(node.to_string(), sid.to_string()));
                    }
                    tables.push(Table::Services);
                    let before = rec.checks.len();
                    rec.checks.retain(|_, c| c.service_id != sid);
                    if rec.checks.len() != before {
                        tables.push(Table::Checks);
                    }
                }
            }
            (None, Some(cid)) => {
                if let Some(c) = rec.checks.remove(cid) {
                    tables.push(Table::Checks);
                    if c.service_id.is_empty() {
                        touched.extend(rec.services.values().map(|s| s.service.clone()));
                    } else {
                        touched.insert(c.service_name.clone());
                    }
                }
            }
            (None, None) => {
                if let Some(rec) = self.catalog.remove(node) {
                    tables.push(Table::Nodes);
                    if !rec.services.is_empty() {
                        tables.push(Table::Services);
                    }
                    if !rec.checks.is_empty() {
                        tables.push(Table::Checks);
                    }
                    for (id, svc) in rec.services {
                        if let Some(set) = self.by_service.get_mut(&svc.service) {
                            set.remove(&(node.to_string(), id));
                        }
                        touched.extend(proxy_destination(&svc));
                        removed.push(svc.clone());
                        touched.insert(svc.service);
                    }
                }
            }
        }
        for svc in &removed {
            self.unindex_destination(svc, node);
        }
        if tables.is_empty() {
            return;
        }
        for t in tables {
            self.bump(t, index, changes);
        }
        changes.nodes.push(node.to_string());
        for s in touched {
            if self.by_service.get(&s).is_some_and(|set| set.is_empty()) {
                self.by_service.remove(&s);
            }
            self.touch_service(&s, index, changes);
        }
    }

    /// The index a read of service `name` reports: its own, or the table's when it never existed.
    pub fn service_read_index(&self, name: &str) -> u64 {
        self.service_index
            .get(name)
            .copied()
            .unwrap_or_else(|| self.max_index(&[Table::Services, Table::Nodes]))
    }

    /// Instances of service `name`, with their node.
    pub fn service_instances(&self, name: &str) -> Vec<(&Node, &AgentService)> {
        self.by_service
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(node, id)| {
                let rec = self.catalog.get(node)?;
                Some((&rec.node, rec.services.get(id)?))
            })
            .collect()
    }

    /// Checks that decide the health of a service instance: the node's and the service's own.
    pub fn instance_checks(&self, node: &str, service_id: &str) -> Vec<&HealthCheck> {
        self.catalog
            .get(node)
            .map(|r| {
                r.checks
                    .values()
                    .filter(|c| c.service_id.is_empty() || c.service_id == service_id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All services and the union of their tags (`/v1/catalog/services`).
    pub fn service_tags(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for rec in self.catalog.values() {
            for s in rec.services.values() {
                out.entry(s.service.clone())
                    .or_default()
                    .extend(s.tags.iter().cloned());
            }
        }
        out
    }
}
