//! `berth-server tls ca create` and `berth-server tls cert create`.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::{TlsError, file_err};

pub enum CertKind {
    Server,
    Client,
}

/// Writes `path` only if it does not exist yet; keys get mode 0600.
fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    if private {
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            file_err(path, "already exists; refusing to overwrite")
        }
        _ => file_err(path, e.to_string()),
    })?;
    f.write_all(contents.as_bytes())
        .map_err(|e| file_err(path, e.to_string()))?;
    Ok(())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A minute of slack for clocks that differ a little between hosts.
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + Duration::days(i64::from(days));
}

pub fn create_ca(dir: &Path, days: u32, domain: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e.to_string()))?;
    let cert_path = dir.join(format!("{domain}-agent-ca.pem"));
    let key_path = dir.join(format!("{domain}-agent-ca-key.pem"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(file_err(p, "already exists; refusing to overwrite"));
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    let serial: u32 = rand::random();
    dn.push(DnType::CommonName, format!("Berth Agent CA {serial}"));
    dn.push(DnType::OrganizationName, "Berth");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key)?;
    write_new(&cert_path, &cert.pem(), false)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    Ok((cert_path, key_path))
}

#[allow(clippy::too_many_arguments)]
pub fn create_cert(
    dir: &Path,
    kind: CertKind,
    ca_cert: &Path,
    ca_key: &Path,
    dc: &str,
    domain: &str,
    days: u32,
    extra_dns: &[String],
    extra_ips: &[IpAddr],
) -> Result<(PathBuf, PathBuf), TlsError> {
    let ca_pem = std::fs::read_to_string(ca_cert)
        .map_err(|e| file_err(ca_cert, format!("cannot read: {e}")))?;
    let ca_key_pem = std::fs::read_to_string(ca_key)
        .map_err(|e| file_err(ca_key, format!("cannot read: {e}")))?;
    let ca_signing = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| file_err(ca_key, format!("not a PEM key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_signing)
        .map_err(|e| file_err(ca_cert, format!("not a PEM CA certificate: {e}")))?;

    let (role, name) = match kind {
        CertKind::Server => ("server", format!("server.{dc}.{domain}")),
        CertKind::Client => ("client", format!("client.{dc}.{domain}")),
    };
    let mut sans = vec![SanType::DnsName(name.clone().try_into()?)];
    if matches!(kind, CertKind::Server) {
        sans.push(SanType::DnsName("localhost".to_string().try_into()?));
        sans.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    }
    for d in extra_dns {
        sans.push(SanType::DnsName(d.clone().try_into()?));
    }
    for ip in extra_ips {
        sans.push(SanType::IpAddress(*ip));
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match kind {
        CertKind::Server => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        CertKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e.to_string()))?;
    let n = (0..)
        .find(|n| !dir.join(format!("{dc}-{role}-{domain}-{n}.pem")).exists())
        .unwrap_or(0);
    let cert_path = dir.join(format!("{dc}-{role}-{domain}-{n}.pem"));
    let key_path = dir.join(format!("{dc}-{role}-{domain}-{n}-key.pem"));
    write_new(&cert_path, &cert.pem(), false)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    Ok((cert_path, key_path))
}
