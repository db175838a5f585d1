//! The `jwt` auth method, for workloads outside AWS: a JWT verified against static public
//! keys or a JWKS URL, its issuer and audience bound, and chosen claims mapped to variables
//! (`value.<name>`, `list.<name>`) for binding rules.

use std::collections::BTreeMap;
use std::str::FromStr;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{LoginError, Verified, denied};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
struct Raw {
    #[serde(rename = "JWTValidationPubKeys")]
    jwt_validation_pub_keys: Vec<String>,
    #[serde(rename = "JWKSURL")]
    jwks_url: String,
    #[serde(rename = "JWKSCACert")]
    jwks_ca_cert: String,
    #[serde(rename = "OIDCDiscoveryURL")]
    oidc_discovery_url: String,
    #[serde(rename = "OIDCDiscoveryCACert")]
    oidc_discovery_ca_cert: String,
    bound_issuer: String,
    bound_audiences: Vec<String>,
    claim_mappings: BTreeMap<String, String>,
    list_claim_mappings: BTreeMap<String, String>,
    #[serde(rename = "JWTSupportedAlgs")]
    jwt_supported_algs: Vec<String>,
    clock_skew_leeway: Option<Value>,
    expiration_leeway: Option<Value>,
    not_before_leeway: Option<Value>,
}

/// A checked configuration: keys parsed, leeways in seconds (`None`: that check is off).
#[derive(Clone)]
pub struct Config {
    keys: Vec<DecodingKey>,
    jwks_url: Option<String>,
    jwks_ca_cert: Option<String>,
    bound_issuer: String,
    bound_audiences: Vec<String>,
    claim_mappings: BTreeMap<String, String>,
    list_claim_mappings: BTreeMap<String, String>,
    algorithms: Vec<Algorithm>,
    clock_skew: Option<u64>,
    expiration_leeway: Option<u64>,
    not_before_leeway: Option<u64>,
}

/// Consul's defaults: 60 s of clock skew, 150 s past `exp` and before `nbf`; -1 turns a
/// leeway off (0 means the default).
fn leeway(name: &str, v: &Option<Value>, default: u64) -> Result<Option<u64>, String> {
    let secs: i64 = match v {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => {
            let ns = n
                .as_i64()
                .ok_or_else(|| format!("{name} must be a duration"))?;
            // A JSON number is nanoseconds, as a Go time.Duration; -1 is "off".
            if ns == -1 { -1 } else { ns / 1_000_000_000 }
        }
        Some(Value::String(s)) if s.trim() == "-1" => -1,
        Some(Value::String(s)) => {
            let d = berth_api::parse_duration(s).map_err(|e| format!("{name}: {e}"))?;
            i64::try_from(d.as_secs()).map_err(|_| format!("{name} is too long"))?
        }
        Some(_) => return Err(format!("{name} must be a duration")),
    };
    Ok(match secs {
        -1 => None,
        0 => Some(default),
        s if s > 0 => Some(s as u64),
        _ => return Err(format!("{name} must not be negative (other than -1)")),
    })
}

fn parse_key(pem: &str) -> Result<DecodingKey, String> {
    let b = pem.as_bytes();
    DecodingKey::from_rsa_pem(b)
        .or_else(|_| DecodingKey::from_ec_pem(b))
        .or_else(|_| DecodingKey::from_ed_pem(b))
        .map_err(|e| format!("JWTValidationPubKeys: not an RSA, EC or Ed25519 public key: {e}"))
}

impl Config {
    pub fn from_value(v: &Value) -> Result<Config, String> {
        let v = if v.is_null() { json!({}) } else { v.clone() };
        let raw: Raw = serde_json::from_value(v).map_err(|e| e.to_string())?;
        let sources = [
            !raw.jwt_validation_pub_keys.is_empty(),
            !raw.jwks_url.is_empty(),
            !raw.oidc_discovery_url.is_empty(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            return Err(
                "exactly one of JWTValidationPubKeys, JWKSURL or OIDCDiscoveryURL must be set"
                    .into(),
            );
        }
        if !raw.oidc_discovery_url.is_empty() || !raw.oidc_discovery_ca_cert.is_empty() {
            return Err("OIDCDiscoveryURL is not supported by Berth; use JWKSURL".into());
        }
        let keys = raw
            .jwt_validation_pub_keys
            .iter()
            .map(|k| parse_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        if !raw.jwks_url.is_empty() {
            let u = reqwest::Url::parse(&raw.jwks_url).map_err(|e| format!("JWKSURL: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err("JWKSURL must be an http(s) URL".into());
            }
        }
        if !raw.jwks_ca_cert.is_empty() {
            reqwest::Certificate::from_pem(raw.jwks_ca_cert.as_bytes())
                .map_err(|e| format!("JWKSCACert: {e}"))?;
        }
        let algs = if raw.jwt_supported_algs.is_empty() {
            vec![Algorithm::RS256]
        } else {
            raw.jwt_supported_algs
                .iter()
                .map(|a| {
                    Algorithm::from_str(a).map_err(|_| format!("JWTSupportedAlgs: unknown {a:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        if algs
            .iter()
            .any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        {
            return Err("JWTSupportedAlgs: HMAC algorithms are not allowed".into());
        }
        let mut seen = BTreeMap::new();
        for (claim, var) in raw.claim_mappings.iter().chain(&raw.list_claim_mappings) {
            if var.is_empty()
                || !var
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("invalid variable name {var:?} for claim {claim:?}"));
            }
            if seen.insert(var.clone(), claim.clone()).is_some() {
                return Err(format!("variable {var:?} is mapped from two claims"));
            }
        }
        Ok(Config {
            keys,
            jwks_url: (!raw.jwks_url.is_empty()).then_some(raw.jwks_url),
            jwks_ca_cert: (!raw.jwks_ca_cert.is_empty()).then_some(raw.jwks_ca_cert),
            bound_issuer: raw.bound_issuer,
            bound_audiences: raw.bound_audiences,
            claim_mappings: raw.claim_mappings,
            list_claim_mappings: raw.list_claim_mappings,
            algorithms: algs,
            clock_skew: leeway("ClockSkewLeeway", &raw.clock_skew_leeway, 60)?,
            expiration_leeway: leeway("ExpirationLeeway", &raw.expiration_leeway, 150)?,
            not_before_leeway: leeway("NotBeforeLeeway", &raw.not_before_leeway, 150)?,
        })
    }
}

/// A claim by name, or by JSON pointer (`/a/b`) into nested claims.
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        claims.pointer(name)
    } else {
        claims.get(name)
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

async fn jwks_keys(
    cfg: &Config,
    kid: Option<&str>,
    http: &reqwest::Client,
) -> Result<Vec<DecodingKey>, LoginError> {
    let Some(url) = &cfg.jwks_url else {
        return Ok(Vec::new());
    };
    let client = match &cfg.jwks_ca_cert {
        Some(pem) => {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| LoginError::BadConfig(format!("JWKSCACert: {e}")))?;
            reqwest::Client::builder()
                .tls_certs_only([cert])
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| LoginError::BadConfig(e.to_string()))?
        }
        None => http.clone(),
    };
    let upstream = |reason: String| LoginError::Upstream {
        what: format!("the JWKS at {url}"),
        reason,
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| upstream(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(upstream(format!("status {}", resp.status())));
    }
    let set: JwkSet = resp.json().await.map_err(|e| upstream(e.to_string()))?;
    Ok(set
        .keys
        .iter()
        .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .collect())
}

/// Verifies the JWT and maps its claims.
pub async fn validate(
    cfg: &Config,
    token: &str,
    http: &reqwest::Client,
    now_ms: u64,
) -> Result<Verified, LoginError> {
    let token = token.trim();
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| denied(format!("the bearer token is not a JWT: {e}")))?;
    if !cfg.algorithms.contains(&header.alg) {
        return Err(denied(format!(
            "the JWT is signed with {:?}, which the auth method does not accept",
            header.alg
        )));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;

    let mut keys: Vec<DecodingKey> = cfg.keys.clone();
    keys.extend(jwks_keys(cfg, header.kid.as_deref(), http).await?);
    let family = header.alg.family();
    let mut claims = None;
    for k in keys.iter().filter(|k| k.family() == family) {
        match jsonwebtoken::decode::<Value>(token, k, &validation) {
            Ok(d) => {
                claims = Some(d.claims);
                break;
            }
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {}
            Err(e) => return Err(denied(format!("the JWT is invalid: {e}"))),
        }
    }
    let claims = claims
        .ok_or_else(|| denied("the JWT's signature does not verify with the auth method's keys"))?;

    let now = now_ms / 1000;
    let skew = cfg.clock_skew.unwrap_or(0);
    let num = |name: &str| claims.get(name).and_then(Value::as_u64);
    if let (Some(exp), Some(l)) = (num("exp"), cfg.expiration_leeway)
        && now > exp + l + skew
    {
        return Err(denied("the JWT has expired"));
    }
    if let (Some(nbf), Some(l)) = (num("nbf"), cfg.not_before_leeway)
        && now + l + skew < nbf
    {
        return Err(denied("the JWT is not valid yet (nbf)"));
    }
    if let Some(iat) = num("iat")
        && cfg.clock_skew.is_some()
        && now + skew < iat
    {
        return Err(denied("the JWT was issued in the future (iat)"));
    }
    if !cfg.bound_issuer.is_empty()
        && claims.get("iss").and_then(Value::as_str) != Some(cfg.bound_issuer.as_str())
    {
        return Err(denied(
            "the JWT's issuer is not the auth method's BoundIssuer",
        ));
    }
    if !cfg.bound_audiences.is_empty() {
        let auds: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !auds
            .iter()
            .any(|a| cfg.bound_audiences.iter().any(|b| b == a))
        {
            return Err(denied(
                "the JWT's audience is not among the auth method's BoundAudiences",
            ));
        }
    }

    let mut vars = BTreeMap::new();
    let mut values = Map::new();
    for (c, var) in &cfg.claim_mappings {
        if let Some(v) = claim(&claims, c) {
            let s = scalar(v)
                .ok_or_else(|| denied(format!("claim {c:?} is not a string, number or boolean")))?;
            vars.insert(format!("value.{var}"), s.clone());
            values.insert(var.clone(), Value::String(s));
        }
    }
    let mut lists = Map::new();
    for (c, var) in &cfg.list_claim_mappings {
        if let Some(v) = claim(&claims, c) {
            let items: Vec<Value> = match v {
                Value::Array(a) => a
                    .iter()
                    .map(|x| scalar(x).map(Value::String))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| denied(format!("claim {c:?} is not a list of strings")))?,
                other => vec![Value::String(scalar(other).ok_or_else(|| {
                    denied(format!("claim {c:?} is not a list of strings"))
                })?)],
            };
            lists.insert(var.clone(), Value::Array(items));
        }
    }
    Ok(Verified {
        vars,
        selectable: json!({"value": values, "list": lists}),
        replay_key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn keypair() -> (EncodingKey, String) {
        let kp = rcgen::KeyPair::generate().unwrap();
        (
            EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
            kp.public_key_pem(),
        )
    }

    fn cfg(pubkey: &str) -> Config {
        Config::from_value(&json!({
            "JWTValidationPubKeys": [pubkey],
            "JWTSupportedAlgs": ["ES256"],
            "BoundIssuer": "https://issuer.test",
            "BoundAudiences": ["berth"],
            "ClaimMappings": {"sub": "sub", "/ns/name": "ns"},
            "ListClaimMappings": {"groups": "groups"},
        }))
        .unwrap()
    }

    fn sign(key: &EncodingKey, claims: Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, key).unwrap()
    }

    fn now() -> u64 {
        crate::acl::now_ms()
    }

    async fn check(c: &Config, t: &str) -> Result<Verified, LoginError> {
        validate(c, t, &reqwest::Client::new(), now()).await
    }

    #[tokio::test]
    async fn claims_are_verified_and_mapped() {
        let (key, public) = keypair();
        let c = cfg(&public);
        let s = now() / 1000;
        let good = json!({"iss": "https://issuer.test", "aud": ["berth"], "sub": "web", "ns": {"name": "prod"}, "groups": ["a", "b"], "exp": s + 600, "iat": s});
        let v = check(&c, &sign(&key, good.clone())).await.unwrap();
        assert_eq!(v.vars["value.sub"], "web");
        assert_eq!(v.vars["value.ns"], "prod");
        assert_eq!(v.selectable["list"]["groups"], json!(["a", "b"]));

        for (change, why) in [
            (json!({"exp": s - 3600}), "expired"),
            (json!({"nbf": s + 3600}), "not valid yet"),
            (json!({"iss": "https://other"}), "issuer"),
            (json!({"aud": "other"}), "audience"),
            (json!({"ns": {"name": {"x": 1}}}), "not a string"),
        ] {
            let mut claims = good.clone();
            for (k, v) in change.as_object().unwrap() {
                claims[k] = v.clone();
            }
            let e = check(&c, &sign(&key, claims))
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        let (other, _) = keypair();
        let e = check(&c, &sign(&other, good))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not verify"), "{e}");
        let e = check(&c, "not-a-jwt").await.unwrap_err().to_string();
        assert!(e.contains("not a JWT"), "{e}");
    }

    #[test]
    fn configs() {
        let (_, public) = keypair();
        for (bad, why) in [
            (json!({}), "exactly one of"),
            (
                json!({"JWTValidationPubKeys": ["nope"]}),
                "not an RSA, EC or Ed25519",
            ),
            (
                json!({"JWTValidationPubKeys": [public], "JWKSURL": "https://x"}),
                "exactly one of",
            ),
            (json!({"OIDCDiscoveryURL": "https://x"}), "not supported"),
            (
                json!({"JWKSURL": "https://x", "JWTSupportedAlgs": ["HS256"]}),
                "HMAC",
            ),
            (
                json!({"JWKSURL": "https://x", "ClockSkewLeeway": "soon"}),
                "ClockSkewLeeway",
            ),
            (
                json!({"JWKSURL": "https://x", "ClaimMappings": {"a": "v", "b": "v"}}),
                "two claims",
            ),
        ] {
            let e = Config::from_value(&bad).err().unwrap();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let c = Config::from_value(
            &json!({"JWKSURL": "https://x", "ExpirationLeeway": "-1", "ClockSkewLeeway": "5s"}),
        )
        .unwrap();
        assert_eq!(c.expiration_leeway, None);
        assert_eq!(c.clock_skew, Some(5));
        assert_eq!(c.not_before_leeway, Some(150));
    }
}
