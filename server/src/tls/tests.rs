use super::*;

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    ca_key: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_key) = create_ca(dir.path(), 30, "berth").unwrap();
    Pki { dir, ca, ca_key }
}

fn cert(p: &Pki, kind: CertKind, dc: &str) -> (PathBuf, PathBuf) {
    create_cert(
        p.dir.path(),
        kind,
        &p.ca,
        &p.ca_key,
        dc,
        "berth",
        30,
        &[],
        &[],
    )
    .unwrap()
}

fn settings(
    p: &Pki,
    cert: &(PathBuf, PathBuf),
    verify_incoming: bool,
    hostname: bool,
) -> TlsSettings {
    TlsSettings {
        ca_file: Some(p.ca.clone()),
        cert_file: Some(cert.0.clone()),
        key_file: Some(cert.1.clone()),
        verify_incoming,
        verify_outgoing: true,
        verify_server_hostname: hostname,
    }
}

/// One handshake between a server config and a client config over loopback.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        tokio::io::AsyncWriteExt::write_all(&mut s, b"ok")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let client_result = async {
        let mut s = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    let server_result = srv.await.unwrap();
    client_result.and(server_result)
}

#[tokio::test]
async fn servers_of_one_ca_talk_and_keys_are_private() {
    let p = pki();
    let a = cert(&p, CertKind::Server, "dc1");
    let b = cert(&p, CertKind::Server, "dc1");
    assert_ne!(a.0, b.0, "a second cert gets the next index");
    use std::os::unix::fs::PermissionsExt;
    for key in [&p.ca_key, &a.1, &b.1] {
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let ma = TlsMaterial::load(&settings(&p, &a, true, true)).unwrap();
    let mb = TlsMaterial::load(&settings(&p, &b, true, true)).unwrap();
    handshake(
        ma.server_config(),
        mb.client_config("dc1"),
        "server.dc1.berth",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_rejected() {
    let (p, q) = (pki(), pki());
    let ours = cert(&p, CertKind::Server, "dc1");
    let theirs = cert(&q, CertKind::Server, "dc1");
    let server = TlsMaterial::load(&settings(&p, &ours, true, true)).unwrap();
    let intruder = TlsMaterial::load(&settings(&q, &theirs, true, true)).unwrap();
    assert!(
        handshake(
            server.server_config(),
            intruder.client_config("dc1"),
            "server.dc1.berth"
        )
        .await
        .is_err()
    );
    assert!(
        handshake(
            intruder.server_config(),
            server.client_config("dc1"),
            "server.dc1.berth"
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn verify_incoming_requires_a_client_certificate() {
    let p = pki();
    let s = cert(&p, CertKind::Server, "dc1");
    let server = TlsMaterial::load(&settings(&p, &s, true, true)).unwrap();
    let mut roots = RootCertStore::empty();
    for c in read_certs(&p.ca).unwrap() {
        roots.add(c).unwrap();
    }
    let anonymous = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let err = handshake(
        server.server_config(),
        Arc::new(anonymous.clone()),
        "server.dc1.berth",
    )
    .await;
    assert!(err.is_err(), "a client without a certificate got in");
    let relaxed = TlsMaterial::load(&settings(&p, &s, false, true)).unwrap();
    handshake(
        relaxed.server_config(),
        Arc::new(anonymous),
        "server.dc1.berth",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn hostname_is_checked_only_with_verify_server_hostname() {
    let p = pki();
    let other_dc = cert(&p, CertKind::Server, "dc2");
    let mine = cert(&p, CertKind::Server, "dc1");
    let server = TlsMaterial::load(&settings(&p, &other_dc, false, false)).unwrap();
    let strict = TlsMaterial::load(&settings(&p, &mine, false, true)).unwrap();
    let lax = TlsMaterial::load(&settings(&p, &mine, false, false)).unwrap();
    assert!(
        handshake(
            server.server_config(),
            strict.client_config("dc1"),
            "server.dc1.berth"
        )
        .await
        .is_err()
    );
    handshake(
        server.server_config(),
        lax.client_config("dc1"),
        "server.dc1.berth",
    )
    .await
    .unwrap();
}

#[test]
fn bad_files_are_named() {
    let p = pki();
    let junk = p.dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let s = TlsSettings {
        ca_file: Some(junk.clone()),
        cert_file: Some(junk.clone()),
        key_file: Some(junk.clone()),
        ..Default::default()
    };
    let e = TlsMaterial::load(&s).err().unwrap().to_string();
    assert!(e.contains("junk.pem"), "{e}");
    let e = create_ca(p.dir.path(), 1, "berth").unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    let missing = p.dir.path().join("nope.pem");
    let e = create_cert(
        p.dir.path(),
        CertKind::Server,
        &missing,
        &p.ca_key,
        "dc1",
        "berth",
        1,
        &[],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope.pem"), "{e}");
}
