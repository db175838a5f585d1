//! The per-stream bookkeeping of delta xDS, without any I/O: what Envoy subscribed to, which
//! version of each resource it has, what is in flight, what it rejected.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;

use crate::{Resources, type_url};

/// The order responses go out in when several types change at once: a cluster before the
/// endpoints Envoy will then ask for, both before the listeners routing to them (Envoy's
/// "make before break" ADS guidance); secrets last, since only names already referenced are
/// subscribed, and a changed secret applies wherever it is used.
pub const PUSH_ORDER: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::SECRET,
];

/// A stable version for a resource: FNV-1a over its encoding, so equal content gets equal
/// versions across streams and agent restarts.
pub fn version(any: &Any) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in any.type_url.as_bytes().iter().chain(any.value.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Resources with their versions, computed once per snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versioned {
    by_type: BTreeMap<&'static str, BTreeMap<String, (String, Any)>>,
}

impl Versioned {
    pub fn new(r: &Resources) -> Self {
        let mut by_type = BTreeMap::new();
        for t in PUSH_ORDER {
            let map = r
                .of_type(t)
                .map(|m| {
                    m.iter()
                        .map(|(name, any)| (name.clone(), (version(any), any.clone())))
                        .collect()
                })
                .unwrap_or_default();
            by_type.insert(t, map);
        }
        Versioned { by_type }
    }

    /// The version of resource `name` of `type_url`, if present.
    pub fn version_of(&self, type_url: &str, name: &str) -> Option<&str> {
        self.by_type
            .get(type_url)
            .and_then(|m| m.get(name))
            .map(|(v, _)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What Envoy has, or will have once the in-flight responses are applied.
    known: BTreeMap<String, String>,
    /// Versions Envoy rejected: not sent again until the snapshot moves past them.
    rejected: BTreeMap<String, String>,
}

impl TypeState {
    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

#[derive(Debug)]
struct InFlight {
    type_url: String,
    /// Name, version sent, version Envoy had before.
    sent: Vec<(String, String, Option<String>)>,
}

/// What a request said about an earlier response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// A subscription change only (or the first request of a type).
    None,
    Ack {
        type_url: String,
        nonce: String,
    },
    Nack {
        type_url: String,
        nonce: String,
        /// Resources in the rejected response (empty if the nonce was unknown).
        resources: Vec<String>,
        message: String,
    },
}

/// One delta ADS stream's state.
#[derive(Debug)]
pub struct DeltaState {
    stream: String,
    next_nonce: u64,
    types: BTreeMap<String, TypeState>,
    in_flight: HashMap<String, InFlight>,
}

/// Types Envoy subscribes to with a wildcard when its first request names nothing.
fn wildcard_by_default(type_url: &str) -> bool {
    type_url == type_url::LISTENER || type_url == type_url::CLUSTER
}

impl DeltaState {
    /// `stream` prefixes nonces, so a nonce from an earlier stream never matches this one.
    pub fn new(stream: impl Into<String>) -> Self {
        DeltaState {
            stream: stream.into(),
            next_nonce: 0,
            types: BTreeMap::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Applies a request's subscription changes and its ACK or NACK.
    pub fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> Feedback {
        let first = !self.types.contains_key(&req.type_url);
        let ts = self.types.entry(req.type_url.clone()).or_default();
        if first && req.resource_names_subscribe.is_empty() && wildcard_by_default(&req.type_url) {
            ts.wildcard = true;
        }
        // Only a new stream's first request carries these: what Envoy kept from before.
        for (name, v) in &req.initial_resource_versions {
            ts.known.insert(name.clone(), v.clone());
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                ts.wildcard = true;
            } else {
                ts.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                ts.wildcard = false;
                let names = &ts.names;
                ts.known.retain(|n, _| names.contains(n));
            } else {
                ts.names.remove(name);
                if !ts.wildcard {
                    // Envoy dropped it; a later subscribe must send it again.
                    ts.known.remove(name);
                    ts.rejected.remove(name);
                }
            }
        }
        if req.response_nonce.is_empty() {
            return Feedback::None;
        }
        let nonce = req.response_nonce.clone();
        let flight = self.in_flight.remove(&nonce);
        match &req.error_detail {
            None => Feedback::Ack {
                type_url: req.type_url.clone(),
                nonce,
            },
            Some(err) => {
                let mut resources = Vec::new();
                if let Some(f) = flight {
                    let ts = self.types.entry(f.type_url).or_default();
                    for (name, v, prev) in f.sent {
                        // Envoy kept what it had; unless something newer went out since.
                        if ts.known.get(&name) == Some(&v) {
                            match prev {
                                Some(p) => ts.known.insert(name.clone(), p),
                                None => ts.known.remove(&name),
                            };
                        }
                        ts.rejected.insert(name.clone(), v);
                        resources.push(name);
                    }
                }
                Feedback::Nack {
                    type_url: req.type_url.clone(),
                    nonce,
                    resources,
                    message: err.message.clone(),
                }
            }
        }
    }

    /// The responses that bring Envoy up to `current`, in [`PUSH_ORDER`]; empty when it has
    /// everything it subscribed to.
    pub fn responses(&mut self, current: &Versioned) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        for t in PUSH_ORDER {
            if let Some(r) = self.response_for(t, current) {
                out.push(r);
            }
        }
        out
    }

    fn response_for(
        &mut self,
        type_url: &str,
        current: &Versioned,
    ) -> Option<DeltaDiscoveryResponse> {
        let ts = self.types.get_mut(type_url)?;
        let empty = BTreeMap::new();
        let have = current.by_type.get(type_url).unwrap_or(&empty);
        let mut resources = Vec::new();
        let mut sent = Vec::new();
        for (name, (v, any)) in have {
            if !ts.subscribed(name)
                || ts.known.get(name) == Some(v)
                || ts.rejected.get(name) == Some(v)
            {
                continue;
            }
            let prev = ts.known.insert(name.clone(), v.clone());
            sent.push((name.clone(), v.clone(), prev));
            resources.push(Resource {
                name: name.clone(),
                version: v.clone(),
                resource: Some(any.clone()),
                ..Default::default()
            });
        }
        let removed: Vec<String> = ts
            .known
            .keys()
            .filter(|n| !have.contains_key(*n))
            .cloned()
            .collect();
        for n in &removed {
            ts.known.remove(n);
            ts.rejected.remove(n);
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        self.next_nonce += 1;
        let nonce = format!("{}-{}", self.stream, self.next_nonce);
        self.in_flight.insert(
            nonce.clone(),
            InFlight {
                type_url: type_url.to_owned(),
                sent,
            },
        );
        Some(DeltaDiscoveryResponse {
            type_url: type_url.to_owned(),
            resources,
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::rpc::Status;

    fn any(s: &str) -> Any {
        Any {
            type_url: "t".into(),
            value: s.as_bytes().to_vec(),
        }
    }

    fn resources(listeners: &[(&str, &str)], secrets: &[(&str, &str)]) -> Versioned {
        let mut r = Resources::default();
        for (n, v) in listeners {
            r.listeners.insert((*n).into(), any(v));
        }
        for (n, v) in secrets {
            r.secrets.insert((*n).into(), any(v));
        }
        Versioned::new(&r)
    }

    fn req(type_url: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            ..Default::default()
        }
    }

    fn ack(r: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        }
    }

    fn nack(r: &DeltaDiscoveryResponse, msg: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: msg.into(),
                details: vec![],
            }),
            ..ack(r)
        }
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|x| x.name.as_str()).collect()
    }

    #[test]
    fn nothing_is_sent_before_a_subscription() {
        let mut s = DeltaState::new("1");
        assert!(s.responses(&resources(&[("a", "1")], &[])).is_empty());
    }

    #[test]
    fn wildcard_sends_everything_then_only_changes() {
        let mut s = DeltaState::new("1");
        assert_eq!(s.on_request(&req(type_url::LISTENER)), Feedback::None);
        let v1 = resources(&[("a", "1"), ("b", "1")], &[]);
        let out = s.responses(&v1);
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["a", "b"]);
        assert_eq!(out[0].nonce, "1-1");
        assert_eq!(
            s.on_request(&ack(&out[0])),
            Feedback::Ack {
                type_url: type_url::LISTENER.into(),
                nonce: "1-1".into()
            }
        );
        assert!(s.responses(&v1).is_empty());

        let v2 = resources(&[("a", "2")], &[]);
        let out = s.responses(&v2);
        assert_eq!(names(&out[0]), ["a"]);
        assert_eq!(out[0].removed_resources, ["b"]);
        assert_eq!(out[0].nonce, "1-2");
        assert!(s.responses(&v2).is_empty());
    }

    #[test]
    fn explicit_types_send_only_subscribed_names() {
        let mut s = DeltaState::new("1");
        let v = resources(&[], &[("leaf", "1"), ("roots", "1")]);
        let mut r = req(type_url::SECRET);
        assert!(s.responses(&v).is_empty());
        // An explicit type's first request naming nothing is not a wildcard.
        s.on_request(&r);
        assert!(s.responses(&v).is_empty());
        r.resource_names_subscribe = vec!["leaf".into()];
        s.on_request(&r);
        let out = s.responses(&v);
        assert_eq!(names(&out[0]), ["leaf"]);
        let mut u = req(type_url::SECRET);
        u.resource_names_unsubscribe = vec!["leaf".into()];
        s.on_request(&u);
        assert!(s.responses(&v).is_empty());
        // Subscribing again sends it again: Envoy dropped it.
        s.on_request(&r);
        assert_eq!(names(&s.responses(&v)[0]), ["leaf"]);
    }

    #[test]
    fn types_go_out_clusters_endpoints_listeners_secrets() {
        let mut s = DeltaState::new("1");
        let mut r = Resources::default();
        r.listeners.insert("l".into(), any("l"));
        r.clusters.insert("c".into(), any("c"));
        r.endpoints.insert("c".into(), any("e"));
        r.secrets.insert("s".into(), any("s"));
        for t in [
            type_url::SECRET,
            type_url::LISTENER,
            type_url::ENDPOINT,
            type_url::CLUSTER,
        ] {
            let mut q = req(t);
            q.resource_names_subscribe = vec![if t == type_url::SECRET { "s" } else { "*" }.into()];
            if t == type_url::ENDPOINT {
                q.resource_names_subscribe = vec!["c".into()];
            }
            s.on_request(&q);
        }
        let out = s.responses(&Versioned::new(&r));
        let order: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(order, PUSH_ORDER);
    }

    #[test]
    fn nacked_version_is_not_resent_until_it_changes() {
        let mut s = DeltaState::new("1");
        s.on_request(&req(type_url::LISTENER));
        let good = resources(&[("a", "1"), ("b", "1")], &[]);
        let out = s.responses(&good);
        s.on_request(&ack(&out[0]));

        let bad = resources(&[("a", "bad"), ("b", "1")], &[]);
        let out = s.responses(&bad);
        assert_eq!(names(&out[0]), ["a"]);
        let fb = s.on_request(&nack(&out[0], "invalid regex"));
        assert_eq!(
            fb,
            Feedback::Nack {
                type_url: type_url::LISTENER.into(),
                nonce: out[0].nonce.clone(),
                resources: vec!["a".into()],
                message: "invalid regex".into()
            }
        );
        assert!(
            s.responses(&bad).is_empty(),
            "the rejected version must not go again"
        );
        // Going back to what Envoy kept needs no push either.
        assert!(s.responses(&good).is_empty());
        let fixed = resources(&[("a", "2"), ("b", "1")], &[]);
        let out = s.responses(&fixed);
        assert_eq!(names(&out[0]), ["a"]);
        assert_eq!(out[0].resources[0].version, version(&any("2")));
    }

    #[test]
    fn nack_of_a_superseded_response_keeps_the_newer_version() {
        let mut s = DeltaState::new("1");
        s.on_request(&req(type_url::LISTENER));
        let first = s.responses(&resources(&[("a", "1")], &[]));
        let v2 = resources(&[("a", "2")], &[]);
        let second = s.responses(&v2);
        s.on_request(&nack(&first[0], "no"));
        assert!(s.responses(&v2).is_empty());
        s.on_request(&ack(&second[0]));
        assert!(s.responses(&v2).is_empty());
    }

    #[test]
    fn initial_versions_are_not_resent() {
        let mut s = DeltaState::new("2");
        let v = resources(&[("a", "1"), ("b", "1"), ("c", "1")], &[]);
        let mut r = req(type_url::LISTENER);
        r.initial_resource_versions = [
            ("a".to_owned(), version(&any("1"))),
            ("b".to_owned(), "stale".to_owned()),
            ("gone".to_owned(), "x".to_owned()),
        ]
        .into_iter()
        .collect();
        s.on_request(&r);
        let out = s.responses(&v);
        assert_eq!(names(&out[0]), ["b", "c"]);
        assert_eq!(out[0].removed_resources, ["gone"]);
    }

    #[test]
    fn unknown_nonce_nack_is_reported() {
        let mut s = DeltaState::new("1");
        s.on_request(&req(type_url::CLUSTER));
        let mut r = req(type_url::CLUSTER);
        r.response_nonce = "0-9".into();
        r.error_detail = Some(Status {
            code: 3,
            message: "m".into(),
            details: vec![],
        });
        assert!(
            matches!(s.on_request(&r), Feedback::Nack { resources, .. } if resources.is_empty())
        );
    }

    #[test]
    fn versions_are_stable_and_content_based() {
        assert_eq!(version(&any("x")), version(&any("x")));
        assert_ne!(version(&any("x")), version(&any("y")));
        assert_eq!(version(&any("x")).len(), 16);
    }
}
