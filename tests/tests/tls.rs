//! TLS on the RPC port and the HTTPS API, with certificates from `berth-server tls`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::{Server, bin, free_port, get_json};

fn tls_cmd(args: &[&str]) {
    let out = Command::new(bin("berth-server"))
        .arg("tls")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and `n` server certificates (plus one client certificate) in `dir`.
fn make_pki(dir: &Path, n: usize) -> (PathBuf, Vec<(PathBuf, PathBuf)>, (PathBuf, PathBuf)) {
    let d = dir.to_str().unwrap();
    tls_cmd(&["ca", "create", "-dir", d]);
    let servers = (0..n)
        .map(|i| {
            tls_cmd(&["cert", "create", "-server", "-dir", d]);
            (
                dir.join(format!("dc1-server-berth-{i}.pem")),
                dir.join(format!("dc1-server-berth-{i}-key.pem")),
            )
        })
        .collect();
    tls_cmd(&["cert", "create", "-client", "-dir", d]);
    let client = (
        dir.join("dc1-client-berth-0.pem"),
        dir.join("dc1-client-berth-0-key.pem"),
    );
    (dir.join("berth-agent-ca.pem"), servers, client)
}

fn tls_config(dir: &Path, name: &str, ca: &Path, cert: &(PathBuf, PathBuf)) -> String {
    let path = dir.join(format!("{name}-tls.hcl"));
    std::fs::write(
        &path,
        format!(
            "tls {{\n  ca_file = \"{}\"\n  cert_file = \"{}\"\n  key_file = \"{}\"\n  verify_incoming = true\n  verify_outgoing = true\n  verify_server_hostname = true\n}}\n",
            ca.display(),
            cert.0.display(),
            cert.1.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn https_client(ca: &Path, identity: Option<&(PathBuf, PathBuf)>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn a_tls_cluster_forms_refuses_strangers_and_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let (ca, certs, client_cert) = make_pki(&pki_dir, 2);
    let ports: Vec<(u16, u16, u16)> = (0..2)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let servers: Vec<Server> = (0..2)
        .map(|i| {
            let name = format!("t{i}");
            let other = ports[1 - i].1;
            let args: Vec<String> = [
                "-bootstrap-expect".to_string(),
                "2".into(),
                "-retry-join".into(),
                format!("127.0.0.1:{other}"),
                "-retry-interval".into(),
                "200ms".into(),
                "-https-addr".into(),
                format!("127.0.0.1:{}", ports[i].2),
                "-config-file".into(),
                tls_config(dir.path(), &name, &ca, &certs[i]),
            ]
            .to_vec();
            Server::start(dir.path(), &name, ports[i].0, ports[i].1, &args)
        })
        .collect();
    for s in &servers {
        s.wait_ready(Duration::from_secs(30)).await;
    }
    let conf = get_json(&servers[0].url("/v1/operator/raft/configuration")).await;
    assert_eq!(conf["Servers"].as_array().unwrap().len(), 2);

    // A server whose certificate comes from another CA cannot join.
    let foreign = dir.path().join("foreign");
    let (fca, fcerts, _) = make_pki(&foreign, 1);
    let intruder = Server::start(
        dir.path(),
        "intruder",
        free_port(),
        free_port(),
        &[
            "-retry-join".to_string(),
            servers[0].rpc_addr(),
            "-retry-interval".into(),
            "200ms".into(),
            "-config-file".into(),
            tls_config(dir.path(), "intruder", &fca, &fcerts[0]),
        ],
    );
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(
            intruder.leader().await.unwrap_or_default(),
            "",
            "the intruder found a leader"
        );
        let conf = get_json(&servers[0].url("/v1/operator/raft/configuration")).await;
        assert_eq!(
            conf["Servers"].as_array().unwrap().len(),
            2,
            "the intruder joined"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        servers[0].log_tail(200).contains("TLS handshake refused"),
        "the refusal is logged"
    );

    // verify_incoming: plaintext HTTP/2 on the RPC port gets no HTTP/2 answer...
    let mut tcp = std::net::TcpStream::connect(servers[0].rpc_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => assert_eq!(
            buf[0],
            0x15,
            "expected a TLS alert or a close, got {:?}",
            &buf[..n]
        ),
    }
    // ...a TLS client without a certificate is refused, and one with a certificate gets in.
    let rpc_url = format!("https://127.0.0.1:{}/", ports[0].1);
    let anonymous = https_client(&ca, None);
    assert!(
        anonymous.post(&rpc_url).send().await.is_err(),
        "no client certificate, yet connected"
    );
    let with_cert = https_client(&ca, Some(&client_cert));
    with_cert
        .post(&rpc_url)
        .send()
        .await
        .expect("a client certificate of our CA is accepted");

    // The HTTPS API, with the CA trusted and a client certificate.
    let https = format!("https://127.0.0.1:{}/v1/status/leader", ports[0].2);
    let leader: String = with_cert
        .get(&https)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!leader.is_empty());
    assert!(anonymous.get(&https).send().await.is_err());
    let other_ca = https_client(&fca, Some(&client_cert));
    assert!(
        other_ca.get(&https).send().await.is_err(),
        "a client trusting another CA accepted the server"
    );
}

/// A client agent joins a server whose RPC port requires client certificates, with a
/// certificate of the cluster's CA; without one it gets nowhere.
#[tokio::test]
async fn an_agent_joins_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let (ca, certs, client_cert) = make_pki(&pki_dir, 1);
    let https_port = free_port();
    let server = Server::start(
        dir.path(),
        "t0",
        free_port(),
        free_port(),
        &[
            "-bootstrap-expect".to_string(),
            "1".into(),
            "-https-addr".into(),
            format!("127.0.0.1:{https_port}"),
            "-config-file".into(),
            tls_config(dir.path(), "t0", &ca, &certs[0]),
        ],
    );
    server.wait_ready(Duration::from_secs(30)).await;
    let ca_s = ca.display().to_string();
    let (cert_s, key_s) = (
        client_cert.0.display().to_string(),
        client_cert.1.display().to_string(),
    );
    let agent = berth_tests::mesh::AgentProc::start(
        dir.path(),
        "tls-node",
        &server.rpc_addr(),
        &[
            "-ca-file",
            &ca_s,
            "-cert-file",
            &cert_s,
            "-key-file",
            &key_s,
        ],
    );
    agent.wait_ready().await;
    let r = berth_tests::http_client()
        .put(agent.url("/v1/agent/service/register"))
        .json(&serde_json::json!({"Name": "secure", "Port": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let https = https_client(&ca, Some(&client_cert));
    let url = format!("https://127.0.0.1:{https_port}/v1/catalog/service/secure");
    berth_tests::eventually(
        Duration::from_secs(15),
        "the service in the catalog",
        || async {
            let v: serde_json::Value = https.get(&url).send().await.ok()?.json().await.ok()?;
            (v.as_array().map(Vec::len) == Some(1)).then_some(())
        },
    )
    .await;

    // Without a client certificate the agent never reaches the servers.
    let lonely = berth_tests::mesh::AgentProc::start(
        dir.path(),
        "no-cert",
        &server.rpc_addr(),
        &["-ca-file", &ca_s],
    );
    berth_tests::eventually(
        Duration::from_secs(15),
        "the agent to report the refusal",
        || async {
            lonely
                .log_text()
                .contains("waiting for the servers")
                .then_some(())
        },
    )
    .await;
    let r = berth_tests::http_client()
        .get(lonely.url("/v1/agent/self"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        r.is_err(),
        "the agent without a certificate serves its API without servers"
    );
}
