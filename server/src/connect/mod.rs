//! The mesh on the server: the built-in CA (made by the first leader, rotated by a new
//! configuration), CSR signing with a rate limit, and intentions.

pub mod ca;
pub mod intentions;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use berth_api::connect::CaRoot;

use crate::acl::now_ms;
use crate::node::Node;
use crate::state::Command;
use crate::state::connect::{CaState, ConnectOp, StoredRoot};

const HOUR_MS: u64 = 3_600_000;
pub const DEFAULT_LEAF_TTL_MS: u64 = 72 * HOUR_MS;
const DEFAULT_ROOT_TTL_MS: u64 = 87_600 * HOUR_MS;
const DEFAULT_CSR_PER_SECOND: f64 = 50.0;
/// Shorter than Consul's 1h minimum, so that rotations can be exercised in tests; a leaf is
/// renewed at 60–90 % of its life, so this still leaves seconds between renewals.
const MIN_LEAF_TTL_MS: u64 = 10_000;

/// The CA configuration's keys, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub leaf_ttl_ms: u64,
    pub root_ttl_ms: u64,
    pub csr_max_per_second: f64,
    /// A user's own CA (`file`, or given to the built-in provider).
    pub material: Option<(String, String)>,
}

const KNOWN_KEYS: &[&str] = &[
    "LeafCertTTL",
    "RootCertTTL",
    "IntermediateCertTTL",
    "CSRMaxPerSecond",
    "CSRMaxConcurrent",
    "PrivateKey",
    "RootCert",
    "PrivateKeyType",
    "PrivateKeyBits",
    "RotationPeriod",
];

fn duration_ms(cfg: &Map<String, Value>, key: &str, default: u64) -> Result<u64, String> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::String(s)) => berth_api::parse_duration(s)
            .map(|d| d.as_millis() as u64)
            .map_err(|e| format!("{key}: {e}")),
        Some(_) => Err(format!("{key} must be a duration string such as \"72h\"")),
    }
}

pub fn parse_settings(provider: &str, config: &Value) -> Result<Settings, String> {
    let empty = Map::new();
    let cfg = match config {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => return Err("Config must be an object".into()),
    };
    for k in cfg.keys() {
        if !KNOWN_KEYS.contains(&k.as_str()) {
            return Err(format!("unknown CA configuration key {k:?}"));
        }
    }
    let leaf_ttl_ms = duration_ms(cfg, "LeafCertTTL", DEFAULT_LEAF_TTL_MS)?;
    let root_ttl_ms = duration_ms(cfg, "RootCertTTL", DEFAULT_ROOT_TTL_MS)?;
    if !(MIN_LEAF_TTL_MS..=365 * 24 * HOUR_MS).contains(&leaf_ttl_ms) {
        return Err("LeafCertTTL must be between 10s and 8760h".into());
    }
    if root_ttl_ms <= leaf_ttl_ms {
        return Err("RootCertTTL must be longer than LeafCertTTL".into());
    }
    let csr_max_per_second = match cfg.get("CSRMaxPerSecond") {
        None | Some(Value::Null) => DEFAULT_CSR_PER_SECOND,
        Some(v) => v
            .as_f64()
            .filter(|f| *f >= 0.0)
            .ok_or("CSRMaxPerSecond must be a number >= 0")?,
    };
    if let Some(t) = cfg.get("PrivateKeyType").and_then(Value::as_str)
        && !t.is_empty()
        && t != "ec"
    {
        return Err(format!("PrivateKeyType {t:?} is not supported (ec)"));
    }
    let text = |k: &str| cfg.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let material = match (text("PrivateKey"), text("RootCert")) {
        (Some(k), Some(c)) => Some((c.to_string(), k.to_string())),
        (None, None) => None,
        _ => return Err("PrivateKey and RootCert must be given together".into()),
    };
    match provider {
        "berth" | "consul" => {}
        "file" => {
            if material.is_none() {
                return Err("the file provider needs PrivateKey and RootCert (PEM)".into());
            }
        }
        other => {
            return Err(format!("unknown CA provider {other:?} (berth or file)"));
        }
    }
    Ok(Settings {
        leaf_ttl_ms,
        root_ttl_ms,
        csr_max_per_second,
        material,
    })
}

/// The configuration as `GET /v1/connect/ca/configuration` shows it: no private key.
pub fn redacted(config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(m) = c.as_object_mut()
        && m.contains_key("PrivateKey")
    {
        m.insert("PrivateKey".into(), Value::String("hidden".into()));
    }
    c
}

pub fn stored_root(m: &ca::RootMaterial, trust_domain: &str, name: &str) -> StoredRoot {
    StoredRoot {
        root: CaRoot {
            id: m.id.clone(),
            name: name.to_string(),
            serial_number: m.serial,
            signing_key_id: m.signing_key_id.clone(),
            external_trust_domain: trust_domain.to_string(),
            not_before: crate::acl::rfc3339(m.not_before_ms),
            not_after: crate::acl::rfc3339(m.not_after_ms),
            root_cert: m.anchor_pem.clone(),
            intermediate_certs: m.chain.clone(),
            active: true,
            private_key_type: "ec".into(),
            private_key_bits: 256,
            ..Default::default()
        },
        signing_cert: if m.chain.is_empty() {
            String::new()
        } else {
            m.cert_pem.clone()
        },
        key_pem: m.key_pem.clone(),
        drop_after_ms: None,
    }
}

/// The root a configuration asks for: the user's, or a new one of ours.
pub fn make_root(
    settings: &Settings,
    trust_domain: &str,
    now: u64,
) -> Result<ca::RootMaterial, String> {
    match &settings.material {
        Some((cert, key)) => ca::load_root(cert, key, now).map_err(|e| e.to_string()),
        None => {
            ca::generate_root(trust_domain, now, settings.root_ttl_ms).map_err(|e| e.to_string())
        }
    }
}

/// The first CA of a cluster.
pub fn initial_ca(now: u64) -> Result<CaState, String> {
    let cluster_id = uuid::Uuid::new_v4().to_string();
    let trust_domain = format!("{cluster_id}.berth");
    let config = serde_json::json!({
        "LeafCertTTL": "72h",
        "RootCertTTL": "87600h",
        "CSRMaxPerSecond": DEFAULT_CSR_PER_SECOND,
    });
    let settings = parse_settings("berth", &config)?;
    let m = make_root(&settings, &trust_domain, now)?;
    Ok(CaState {
        cluster_id,
        trust_domain: trust_domain.clone(),
        provider: "berth".into(),
        config,
        roots: vec![stored_root(&m, &trust_domain, "Berth CA Primary Cert")],
        create_index: 0,
        modify_index: 0,
    })
}

/// The leader makes the CA once, and drops rotated-out roots when their leaves are gone.
pub async fn ca_leader_loop(node: Arc<Node>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !node.is_leader() {
            continue;
        }
        let (missing, prunable) = {
            let st = node.store.read();
            match &st.connect.ca {
                None => (true, false),
                Some(ca) => (
                    false,
                    ca.roots
                        .iter()
                        .any(|r| r.drop_after_ms.is_some_and(|d| d <= now_ms())),
                ),
            }
        };
        let op = if missing {
            match initial_ca(now_ms()) {
                Ok(ca) => ConnectOp::InitCa(ca),
                Err(e) => {
                    tracing::error!(error = %e, "cannot create the mesh CA");
                    continue;
                }
            }
        } else if prunable {
            ConnectOp::PruneRoots { now_ms: now_ms() }
        } else {
            continue;
        };
        if let Err(e) = node.write(Command::Connect(op)).await {
            tracing::debug!(error = %e, "CA duty deferred");
        }
    }
}

/// A token bucket for CSR signing on this server (only the leader signs).
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Takes one signing slot, or says the rate is exceeded. `per_second == 0` means no limit.
pub fn take_csr_slot(per_second: f64) -> bool {
    static BUCKET: Mutex<Option<Bucket>> = Mutex::new(None);
    if per_second <= 0.0 {
        return true;
    }
    let mut g = BUCKET.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let b = g.get_or_insert(Bucket {
        tokens: per_second,
        last: now,
    });
    b.tokens =
        (b.tokens + now.duration_since(b.last).as_secs_f64() * per_second).min(per_second.max(1.0));
    b.last = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings() {
        let s = parse_settings("berth", &json!({})).unwrap();
        assert_eq!(s.leaf_ttl_ms, DEFAULT_LEAF_TTL_MS);
        assert!(s.material.is_none());
        for (p, c, why) in [
            ("vault", json!({}), "unknown CA provider"),
            ("berth", json!({"LeafCertTTL": "1s"}), "between 10s"),
            ("berth", json!({"LeafCertTTL": "soon"}), "LeafCertTTL"),
            ("berth", json!({"Bogus": 1}), "unknown CA configuration key"),
            ("berth", json!({"PrivateKey": "x"}), "together"),
            ("file", json!({}), "needs PrivateKey and RootCert"),
            ("berth", json!({"CSRMaxPerSecond": -1}), "CSRMaxPerSecond"),
            ("berth", json!({"PrivateKeyType": "rsa"}), "not supported"),
        ] {
            let e = parse_settings(p, &c).unwrap_err();
            assert!(e.contains(why), "{c}: {e}");
        }
        assert_eq!(
            redacted(&json!({"PrivateKey": "secret", "LeafCertTTL": "1h"})),
            json!({"PrivateKey": "hidden", "LeafCertTTL": "1h"})
        );
    }

    #[test]
    fn the_initial_ca_has_one_active_root() {
        let ca = initial_ca(now_ms()).unwrap();
        assert!(ca.trust_domain.ends_with(".berth"));
        assert_eq!(ca.roots.len(), 1);
        assert!(ca.active().is_some_and(|r| !r.key_pem.is_empty()));
    }
}
