//! Blocking queries wait here. A change wakes only the watchers of what it touched: a key, the
//! prefixes above it, or a whole table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::sync::watch;

use super::{Changes, Table};

#[derive(Debug, Clone)]
pub enum WatchTarget {
    Key(String),
    Prefix(String),
    Table(Table),
    /// Any instance of a service, or its health.
    Service(String),
    /// A node, its services or its checks.
    Node(String),
}

#[derive(Default)]
struct Inner {
    keys: BTreeMap<String, watch::Sender<()>>,
    prefixes: BTreeMap<String, watch::Sender<()>>,
    tables: HashMap<Table, watch::Sender<()>>,
    services: BTreeMap<String, watch::Sender<()>>,
    nodes: BTreeMap<String, watch::Sender<()>>,
}

#[derive(Default)]
pub struct Watches {
    inner: Mutex<Inner>,
}

const GC_AT: usize = 4096;

fn subscribe_in<K: Ord + Clone>(
    map: &mut BTreeMap<K, watch::Sender<()>>,
    k: &K,
) -> watch::Receiver<()> {
    match map.get(k) {
        Some(tx) => tx.subscribe(),
        None => {
            let (tx, rx) = watch::channel(());
            map.insert(k.clone(), tx);
            rx
        }
    }
}

impl Watches {
    /// Subscribe before reading the state, so a change between the read and the wait is not lost.
    pub fn subscribe(&self, target: &WatchTarget) -> watch::Receiver<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.keys.len() + inner.prefixes.len() + inner.services.len() + inner.nodes.len()
            > GC_AT
        {
            inner.keys.retain(|_, tx| tx.receiver_count() > 0);
            inner.prefixes.retain(|_, tx| tx.receiver_count() > 0);
            inner.services.retain(|_, tx| tx.receiver_count() > 0);
            inner.nodes.retain(|_, tx| tx.receiver_count() > 0);
        }
        match target {
            WatchTarget::Key(k) => subscribe_in(&mut inner.keys, k),
            WatchTarget::Prefix(p) => subscribe_in(&mut inner.prefixes, p),
            WatchTarget::Service(name) => subscribe_in(&mut inner.services, name),
            WatchTarget::Node(name) => subscribe_in(&mut inner.nodes, name),
            WatchTarget::Table(t) => inner
                .tables
                .entry(*t)
                .or_insert_with(|| watch::channel(()).0)
                .subscribe(),
        }
    }

    pub fn fire(&self, changes: &Changes) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for t in &changes.tables {
            if let Some(tx) = inner.tables.get(t) {
                tx.send_replace(());
            }
        }
        for s in &changes.services {
            if let Some(tx) = inner.services.get(s) {
                tx.send_replace(());
            }
        }
        for n in &changes.nodes {
            if let Some(tx) = inner.nodes.get(n) {
                tx.send_replace(());
            }
        }
        for key in &changes.keys {
            if let Some(tx) = inner.keys.get(key) {
                tx.send_replace(());
            }
            Self::fire_prefixes_of(&inner, key);
        }
        for tree in &changes.trees {
            for (_, tx) in inner
                .keys
                .range(tree.clone()..)
                .take_while(|(k, _)| k.starts_with(tree.as_str()))
            {
                tx.send_replace(());
            }
            for (_, tx) in inner
                .prefixes
                .range(tree.clone()..)
                .take_while(|(k, _)| k.starts_with(tree.as_str()))
            {
                tx.send_replace(());
            }
            Self::fire_prefixes_of(&inner, tree);
        }
    }

    fn fire_prefixes_of(inner: &Inner, key: &str) {
        for (i, _) in key.char_indices().chain(std::iter::once((key.len(), ' '))) {
            if let Some(tx) = inner.prefixes.get(&key[..i]) {
                tx.send_replace(());
            }
        }
    }

    /// After a snapshot replaced the whole state, every watcher must look again.
    pub fn fire_all(&self) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .keys
            .values()
            .chain(inner.prefixes.values())
            .chain(inner.tables.values())
            .chain(inner.services.values())
            .chain(inner.nodes.values())
            .for_each(|tx| {
                tx.send_replace(());
            });
    }
}
