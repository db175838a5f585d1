//! The mesh CA's certificate work, pure: make or load a root, cross-sign a new root with the
//! old one, sign a leaf from a CSR with the identity the caller is allowed (never the names
//! the CSR asks for).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("invalid CSR: {0}")]
    Csr(String),
    #[error("invalid CA material: {0}")]
    Material(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

fn sign_err(e: rcgen::Error) -> CaError {
    CaError::Sign(e.to_string())
}

/// A root that can sign: its certificate, key, and the facts the roots API shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    /// Colon-separated SHA-256 of the certificate (DER), as Consul shows root IDs.
    pub id: String,
    pub serial: u64,
    /// Colon-separated hex of the subject key identifier.
    pub signing_key_id: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    /// The certificate peers trust: `cert_pem` itself for a root, or the self-signed root at
    /// the end of a user's bundle when `cert_pem` is an intermediate.
    pub anchor_pem: String,
    /// Certificates between a leaf and the anchor (the intermediate and any above it), sent
    /// with every leaf; empty for a root.
    pub chain: Vec<String>,
}

pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn at(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn spiffe_service(trust_domain: &str, datacenter: &str, service: &str) -> String {
    format!("spiffe://{trust_domain}/ns/default/dc/{datacenter}/svc/{service}")
}

fn root_params(
    trust_domain: &str,
    serial: u64,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("Berth CA {serial:x} for {trust_domain}"),
    );
    dn.push(DnType::OrganizationName, "Berth");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let uri = format!("spiffe://{trust_domain}");
    p.subject_alt_names = vec![SanType::URI(
        uri.try_into()
            .map_err(|e: rcgen::Error| CaError::Material(e.to_string()))?,
    )];
    p.serial_number = Some(SerialNumber::from(serial.to_be_bytes().to_vec()));
    // A minute of slack for hosts whose clocks differ a little.
    p.not_before = at(now_ms.saturating_sub(60_000));
    p.not_after = at(now_ms + ttl_ms);
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn describe(cert_pem: &str, key_pem: &str) -> Result<RootMaterial, CaError> {
    let der = pem_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CaError::Material(format!("certificate does not parse: {e}")))?;
    let serial = cert
        .tbs_certificate
        .raw_serial()
        .iter()
        .rev()
        .take(8)
        .enumerate()
        .fold(0u64, |acc, (i, b)| acc | (u64::from(*b) << (8 * i)));
    let ski = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                Some(colon_hex(k.0))
            }
            _ => None,
        })
        .unwrap_or_default();
    let validity = cert.validity();
    Ok(RootMaterial {
        cert_pem: cert_pem.to_string(),
        key_pem: key_pem.to_string(),
        id: colon_hex(&Sha256::digest(&der)),
        serial,
        signing_key_id: ski,
        not_before_ms: u64::try_from(validity.not_before.timestamp()).unwrap_or(0) * 1000,
        not_after_ms: u64::try_from(validity.not_after.timestamp()).unwrap_or(0) * 1000,
        anchor_pem: cert_pem.to_string(),
        chain: Vec::new(),
    })
}

/// Every certificate of a PEM bundle, in order, as (PEM text, DER).
fn bundle(text: &str) -> Result<Vec<(String, Vec<u8>)>, CaError> {
    let mut out = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let p = p.map_err(|e| CaError::Material(format!("RootCert is not PEM: {e}")))?;
        if p.label != "CERTIFICATE" {
            continue;
        }
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &p.contents);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        out.push((pem, p.contents));
    }
    if out.is_empty() {
        return Err(CaError::Material("RootCert holds no certificate".into()));
    }
    Ok(out)
}

/// The DER of the first certificate in a PEM text.
pub fn pem_der(pem_text: &str) -> Result<Vec<u8>, CaError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| CaError::Material(format!("not a PEM certificate: {e}")))?;
    if pem.label != "CERTIFICATE" {
        return Err(CaError::Material(format!(
            "expected a CERTIFICATE, found {}",
            pem.label
        )));
    }
    Ok(pem.contents)
}

/// A new ECDSA P-256 root for the trust domain.
pub fn generate_root(
    trust_domain: &str,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<RootMaterial, CaError> {
    let key = KeyPair::generate().map_err(sign_err)?;
    let serial = rand::random::<u64>() >> 1;
    let cert = root_params(trust_domain, serial, now_ms, ttl_ms)?
        .self_signed(&key)
        .map_err(sign_err)?;
    describe(&cert.pem(), &key.serialize_pem())
}

/// A user's own CA (the `file` provider, or `PrivateKey`/`RootCert` given to the built-in
/// one). `RootCert` is the signing CA, optionally followed by the chain up to a self-signed
/// root (an intermediate imported from a corporate CA): the signing certificate must be a CA
/// valid now, the key must be its key, and each certificate must be signed by the next.
pub fn load_root(cert_pem: &str, key_pem: &str, now_ms: u64) -> Result<RootMaterial, CaError> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| CaError::Material(format!("PrivateKey does not parse: {e}")))?;
    let certs = bundle(cert_pem)?;
    let parsed = certs
        .iter()
        .map(|(_, der)| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, c)| c)
                .map_err(|e| CaError::Material(format!("RootCert does not parse: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cert = &parsed[0];
    if !cert.is_ca() {
        return Err(CaError::Material("RootCert is not a CA certificate".into()));
    }
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err(CaError::Material(
            "PrivateKey is not the key of RootCert".into(),
        ));
    }
    for pair in parsed.windows(2) {
        if pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .is_err()
        {
            return Err(CaError::Material(
                "each certificate of RootCert must be signed by the next one".into(),
            ));
        }
    }
    let last = &parsed[parsed.len() - 1];
    if last.subject() != last.issuer() || last.verify_signature(None).is_err() {
        return Err(CaError::Material(
            "RootCert must be a root, or an intermediate followed by its chain up to a self-signed root"
                .into(),
        ));
    }
    let mut m = describe(&certs[0].0, key_pem)?;
    if m.not_after_ms <= now_ms || m.not_before_ms > now_ms + 60_000 {
        return Err(CaError::Material("RootCert is not valid now".into()));
    }
    if certs.len() > 1 {
        m.anchor_pem = certs[certs.len() - 1].0.clone();
        m.chain = certs[..certs.len() - 1]
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
    }
    Ok(m)
}

/// The new root's subject and key, signed by the old root: peers that trust only the old
/// root accept leaves of the new one when this travels with them.
pub fn cross_sign(new: &RootMaterial, old: &RootMaterial) -> Result<String, CaError> {
    let new_key = KeyPair::from_pem(&new.key_pem).map_err(sign_err)?;
    let old_key = KeyPair::from_pem(&old.key_pem).map_err(sign_err)?;
    let issuer = Issuer::from_ca_cert_pem(&old.cert_pem, &old_key).map_err(sign_err)?;
    let mut params = ca_params_of(&new.cert_pem)?;
    params.not_after = at(new.not_after_ms.min(old.not_after_ms));
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&new_key, &issuer).map_err(sign_err)?;
    Ok(cert.pem())
}

/// The parameters of an existing CA certificate that matter for re-signing it: subject,
/// URI names, serial, validity.
fn ca_params_of(cert_pem: &str) -> Result<CertificateParams, CaError> {
    use x509_parser::oid_registry as oids;
    let der = pem_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CaError::Material(format!("certificate does not parse: {e}")))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for attr in cert.subject().iter_attributes() {
        let Ok(v) = attr.as_str() else { continue };
        let oid = attr.attr_type();
        let ty = if *oid == oids::OID_X509_COMMON_NAME {
            DnType::CommonName
        } else if *oid == oids::OID_X509_ORGANIZATION_NAME {
            DnType::OrganizationName
        } else if *oid == oids::OID_X509_ORGANIZATIONAL_UNIT {
            DnType::OrganizationalUnitName
        } else if *oid == oids::OID_X509_COUNTRY_NAME {
            DnType::CountryName
        } else {
            continue;
        };
        dn.push(ty, v);
    }
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = n
                && let Ok(v) = u.to_string().try_into()
            {
                p.subject_alt_names.push(SanType::URI(v));
            }
        }
    }
    p.serial_number = Some(SerialNumber::from_slice(cert.tbs_certificate.raw_serial()));
    p.not_before = at(u64::try_from(cert.validity().not_before.timestamp()).unwrap_or(0) * 1000);
    p.not_after = at(u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0) * 1000);
    Ok(p)
}

/// A signed leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub cert_pem: String,
    pub serial: String,
    pub valid_after_ms: u64,
    pub valid_before_ms: u64,
}

/// Signs the CSR's public key for `spiffe_uri`, whatever names the CSR asked for; the CSR's
/// own signature must verify (proof that the caller holds the key).
pub fn sign_leaf(
    csr_pem: &str,
    root: &RootMaterial,
    spiffe_uri: &str,
    common_name: &str,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<Leaf, CaError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CaError::Csr(e.to_string()))?;
    let key = KeyPair::from_pem(&root.key_pem).map_err(sign_err)?;
    let issuer = Issuer::from_ca_cert_pem(&root.cert_pem, &key).map_err(sign_err)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.subject_alt_names = vec![SanType::URI(
        spiffe_uri
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Sign(e.to_string()))?,
    )];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let serial = rand::random::<u64>() >> 1;
    p.serial_number = Some(SerialNumber::from(serial.to_be_bytes().to_vec()));
    let valid_after = now_ms.saturating_sub(60_000);
    let valid_before = (now_ms + ttl_ms).min(root.not_after_ms);
    p.not_before = at(valid_after);
    p.not_after = at(valid_before);
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&csr.public_key, &issuer).map_err(sign_err)?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        serial: colon_hex(&serial.to_be_bytes()),
        valid_after_ms: valid_after,
        valid_before_ms: valid_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn now() -> u64 {
        crate::acl::now_ms()
    }

    fn csr(names: &[&str]) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.subject_alt_names.push(SanType::URI(
            "spiffe://x.berth/ns/default/dc/dc1/svc/api"
                .to_string()
                .try_into()
                .unwrap(),
        ));
        let req = p.serialize_request(&key).unwrap();
        (key, req.pem().unwrap())
    }

    fn uris(pem: &str) -> Vec<String> {
        let der = pem_der(pem).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        let mut out = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(u) = n {
                    out.push(u.to_string());
                }
            }
        }
        out
    }

    #[test]
    fn leaves_carry_only_the_allowed_identity() {
        let root = generate_root("abc.berth", now(), 3650 * DAY).unwrap();
        assert_eq!(uris(&root.cert_pem), vec!["spiffe://abc.berth"]);
        let (_, req) = csr(&["api.example.com"]);
        let id = spiffe_service("abc.berth", "dc1", "web");
        let leaf = sign_leaf(&req, &root, &id, "web", now(), 3 * DAY).unwrap();
        assert_eq!(uris(&leaf.cert_pem), vec![id]);
        assert!(leaf.valid_before_ms - leaf.valid_after_ms <= 3 * DAY + 60_000);

        // The leaf verifies against the root (webpki, as rustls would).
        let der = pem_der(&leaf.cert_pem).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        let root_der = pem_der(&root.cert_pem).unwrap();
        let (_, r) = x509_parser::parse_x509_certificate(&root_der).unwrap();
        assert!(c.verify_signature(Some(r.public_key())).is_ok());
        assert!(!c.is_ca());
    }

    #[test]
    fn bad_csrs_and_material() {
        let root = generate_root("abc.berth", now(), 3650 * DAY).unwrap();
        assert!(matches!(
            sign_leaf("nope", &root, "spiffe://abc.berth/x", "x", now(), DAY),
            Err(CaError::Csr(_))
        ));
        let other = generate_root("abc.berth", now(), DAY).unwrap();
        let e = load_root(&root.cert_pem, &other.key_pem, now()).unwrap_err();
        assert!(e.to_string().contains("is not the key"), "{e}");
        assert!(load_root(&root.cert_pem, &root.key_pem, now()).is_ok());
        let (leafkey, req) = csr(&[]);
        let leaf = sign_leaf(&req, &root, "spiffe://abc.berth/x", "x", now(), DAY).unwrap();
        let e = load_root(&leaf.cert_pem, &leafkey.serialize_pem(), now()).unwrap_err();
        assert!(e.to_string().contains("not a CA"), "{e}");
        let expired = generate_root("abc.berth", now() - 10 * DAY, DAY).unwrap();
        let e = load_root(&expired.cert_pem, &expired.key_pem, now()).unwrap_err();
        assert!(e.to_string().contains("not valid now"), "{e}");
    }

    #[test]
    fn cross_signed_root_chains_to_the_old_one() {
        let old = generate_root("abc.berth", now(), 3650 * DAY).unwrap();
        let new = generate_root("abc.berth", now(), 3650 * DAY).unwrap();
        assert_ne!(old.id, new.id);
        let cross = cross_sign(&new, &old).unwrap();
        let der = pem_der(&cross).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        let old_der = pem_der(&old.cert_pem).unwrap();
        let (_, o) = x509_parser::parse_x509_certificate(&old_der).unwrap();
        let new_der = pem_der(&new.cert_pem).unwrap();
        let (_, n) = x509_parser::parse_x509_certificate(&new_der).unwrap();
        assert!(c.verify_signature(Some(o.public_key())).is_ok());
        assert_eq!(c.public_key().raw, n.public_key().raw);
        assert_eq!(c.subject(), n.subject());
    }
}
