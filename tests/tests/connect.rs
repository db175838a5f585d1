//! The mesh on the server, end to end: the CA that the first leader makes, CSR signing that
//! only grants what the token may write, root rotation with cross-signing and expiry of the
//! old root, config entries with CAS, and intentions with Consul's precedence and ACLs.

use std::time::Duration;

use berth_tests::acl_server::AclServer;
use berth_tests::{eventually, send};
use serde_json::{Value, json};

fn csr_for(names: &[&str]) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://evil.berth/ns/default/dc/dc1/svc/api"
            .to_string()
            .try_into()
            .unwrap(),
    ));
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem)
}

fn uris_of(pem: &str) -> Vec<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(&p.contents).unwrap();
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

async fn roots(acl: &AclServer) -> Value {
    eventually(Duration::from_secs(10), "the CA", || async {
        let r = acl.call("GET", "/v1/connect/ca/roots", None, None).await;
        let v = r.json();
        (r.status == 200 && !v["Roots"].as_array().is_none_or(Vec::is_empty)).then_some(v)
    })
    .await
}

async fn token_for(acl: &AclServer, service: &str) -> String {
    let t = acl
        .admin(
            "PUT",
            "/v1/acl/token",
            json!({"ServiceIdentities": [{"ServiceName": service}]}),
        )
        .await;
    t["SecretID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_ca_signs_only_the_identity_a_token_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    let roots = roots(&acl).await;
    let td = roots["TrustDomain"].as_str().unwrap().to_string();
    assert!(td.ends_with(".berth"), "{td}");
    assert_eq!(roots["Roots"][0]["Active"], true);
    assert_eq!(roots["ActiveRootID"], roots["Roots"][0]["ID"]);
    assert!(roots["Roots"][0].get("PrivateKey").is_none());
    let pem =
        send(berth_tests::http_client().get(acl.server.url("/v1/connect/ca/roots?pem"))).await;
    assert!(
        pem.text().starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        pem.text()
    );

    let web = token_for(&acl, "web").await;
    let (_, csr) = csr_for(&["api.internal"]);
    let r = acl
        .call(
            "PUT",
            "/v1/connect/ca/sign",
            Some(&web),
            Some(json!({"CSR": csr, "Service": "web"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cert = r.json();
    let want = format!("spiffe://{td}/ns/default/dc/dc1/svc/web");
    assert_eq!(cert["ServiceURI"], want);
    // The CSR asked for api's names; the certificate has web's identity and nothing else.
    assert_eq!(uris_of(cert["CertPEM"].as_str().unwrap()), vec![want]);

    let r = acl
        .call(
            "PUT",
            "/v1/connect/ca/sign",
            Some(&web),
            Some(json!({"CSR": csr, "Service": "api"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .contains("lacks permission 'service:write' on \"api\""),
        "{}",
        r.text()
    );
    let r = acl
        .call(
            "PUT",
            "/v1/connect/ca/sign",
            None,
            Some(json!({"CSR": csr, "Service": "web"})),
        )
        .await;
    assert_eq!(r.status, 403, "anonymous may not sign: {}", r.text());
    let r = acl
        .call(
            "PUT",
            "/v1/connect/ca/sign",
            Some(&web),
            Some(json!({"CSR": "garbage", "Service": "web"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("invalid CSR"), "{}", r.text());

    // The CA configuration needs operator rights and never shows a key.
    let r = acl
        .call("GET", "/v1/connect/ca/configuration", Some(&web), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let cfg = acl.admin_get("/v1/connect/ca/configuration").await;
    assert_eq!(cfg["Provider"], "berth");
    assert_eq!(format!("{}.berth", cfg["ClusterID"].as_str().unwrap()), td);
}

#[tokio::test]
async fn root_rotation_cross_signs_and_drops_the_old_root_after_its_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    let before = roots(&acl).await;
    let old_id = before["ActiveRootID"].as_str().unwrap().to_string();
    let td = before["TrustDomain"].as_str().unwrap().to_string();
    // Short leaves, so that the old root's time runs out within the test.
    let r = acl
        .call(
            "PUT",
            "/v1/connect/ca/configuration",
            Some(&acl.root),
            Some(json!({"Provider": "berth", "Config": {"LeafCertTTL": "10s"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        roots(&acl).await["ActiveRootID"],
        old_id,
        "a TTL change does not rotate"
    );

    // A user's own CA, as an operator brings one from a corporate PKI.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Corp Mesh CA");
    let cert = p.self_signed(&key).unwrap().pem();
    let r = acl
        .call(
            "PUT",
            "/v1/connect/ca/configuration",
            Some(&acl.root),
            Some(json!({"Provider": "file", "Config": {"LeafCertTTL": "10s", "RootCert": cert, "PrivateKey": key.serialize_pem()}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = roots(&acl).await;
    assert_eq!(
        after["TrustDomain"], td,
        "the trust domain survives a rotation"
    );
    let list = after["Roots"].as_array().unwrap();
    assert_eq!(list.len(), 2, "both roots are trusted: {after}");
    let new = list.iter().find(|r| r["Active"] == true).unwrap();
    assert_ne!(new["ID"], old_id);
    assert_eq!(new["RootCert"].as_str().unwrap().trim(), cert.trim());
    assert_eq!(
        new["IntermediateCerts"].as_array().unwrap().len(),
        1,
        "cross-signed by the old root"
    );
    let cfg = acl.admin_get("/v1/connect/ca/configuration").await;
    assert_eq!(cfg["Config"]["PrivateKey"], "hidden");

    // New leaves chain to the new root.
    let web = token_for(&acl, "web").await;
    let (_, csr) = csr_for(&[]);
    let leaf = acl
        .call(
            "PUT",
            "/v1/connect/ca/sign",
            Some(&web),
            Some(json!({"CSR": csr, "Service": "web"})),
        )
        .await
        .json();
    let pems = leaf["CertPEM"].as_str().unwrap();
    let (_, leaf_pem) = x509_parser::pem::parse_x509_pem(pems.as_bytes()).unwrap();
    let (_, leaf_cert) = x509_parser::parse_x509_certificate(&leaf_pem.contents).unwrap();
    let (_, root_pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
    let (_, root_cert) = x509_parser::parse_x509_certificate(&root_pem.contents).unwrap();
    assert!(
        leaf_cert
            .verify_signature(Some(root_cert.public_key()))
            .is_ok()
    );
    assert_eq!(
        pems.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + cross-signed root"
    );

    // The old root goes once the leaves it signed (10 s) have expired.
    eventually(
        Duration::from_secs(40),
        "the old root to be dropped",
        || async {
            let v = acl
                .call("GET", "/v1/connect/ca/roots", None, None)
                .await
                .json();
            (v["Roots"].as_array().unwrap().len() == 1).then_some(())
        },
    )
    .await;

    // Bad configurations change nothing.
    for (body, why) in [
        (
            json!({"Provider": "file", "Config": {}}),
            "needs PrivateKey and RootCert",
        ),
        (
            json!({"Provider": "file", "Config": {"RootCert": cert, "PrivateKey": rcgen::KeyPair::generate().unwrap().serialize_pem()}}),
            "is not the key of RootCert",
        ),
        (
            json!({"Provider": "vault", "Config": {}}),
            "unknown CA provider",
        ),
        (
            json!({"Provider": "berth", "Config": {"LeafCertTTL": "1s"}}),
            "between 10s",
        ),
    ] {
        let r = acl
            .call(
                "PUT",
                "/v1/connect/ca/configuration",
                Some(&acl.root),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(why), "{body}: {}", r.text());
    }
    assert_eq!(roots(&acl).await["Roots"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn config_entries_with_cas_and_acls() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    let r = acl
        .call(
            "PUT",
            "/v1/config",
            Some(&acl.root),
            Some(json!({"Kind": "service-defaults", "Name": "api", "Protocol": "HTTP"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!(true));
    let e = acl.admin_get("/v1/config/service-defaults/api").await;
    assert_eq!(e["Protocol"], "http");
    let idx = e["ModifyIndex"].as_u64().unwrap();
    // A CAS with a stale index changes nothing.
    let r = acl
        .call(
            "PUT",
            &format!("/v1/config?cas={}", idx - 1),
            Some(&acl.root),
            Some(json!({"Kind": "service-defaults", "Name": "api", "Protocol": "grpc"})),
        )
        .await;
    assert_eq!(r.json(), json!(false));
    let r = acl
        .call(
            "PUT",
            &format!("/v1/config?cas={idx}"),
            Some(&acl.root),
            Some(json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http2"})),
        )
        .await;
    assert_eq!(r.json(), json!(true));
    assert_eq!(
        acl.admin_get("/v1/config/service-defaults/api").await["Protocol"],
        "http2"
    );
    assert_eq!(
        acl.admin_get("/v1/config/service-defaults")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    for (body, why) in [
        (
            json!({"Kind": "nope", "Name": "x"}),
            "invalid config entry kind",
        ),
        (
            json!({"Kind": "service-defaults", "Name": "x", "Protocol": "udp"}),
            "is not one of",
        ),
        (
            json!({"Kind": "proxy-defaults", "Name": "mine"}),
            "must be \\\"global\\\"",
        ),
        (json!({"Kind": "service-defaults"}), "Name is required"),
    ] {
        let r = acl
            .call("PUT", "/v1/config", Some(&acl.root), Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.text().contains(why.replace("\\\"", "\"").as_str()),
            "{body}: {}",
            r.text()
        );
    }
    let r = acl
        .call(
            "GET",
            "/v1/config/service-defaults/missing",
            Some(&acl.root),
            None,
        )
        .await;
    assert_eq!(r.status, 404);

    // A token for web may write web's defaults, not api's, and sees only what it may read.
    let web = token_for(&acl, "web").await;
    let r = acl
        .call(
            "PUT",
            "/v1/config",
            Some(&web),
            Some(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = acl
        .call(
            "PUT",
            "/v1/config",
            Some(&web),
            Some(json!({"Kind": "service-defaults", "Name": "api", "Protocol": "tcp"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = acl
        .call("GET", "/v1/config/service-defaults", None, None)
        .await;
    assert_eq!(r.json(), json!([]));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), "true");

    let r = acl
        .call(
            "DELETE",
            "/v1/config/service-defaults/api",
            Some(&acl.root),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        acl.call(
            "GET",
            "/v1/config/service-defaults/api",
            Some(&acl.root),
            None
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn intentions_follow_consuls_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    let put = |src: &'static str, dst: &'static str, action: &'static str| {
        let acl = &acl;
        async move {
            let r = acl
                .call(
                    "PUT",
                    &format!("/v1/connect/intentions/exact?source={src}&destination={dst}"),
                    Some(&acl.root),
                    Some(json!({"Action": action, "Description": format!("{src} to {dst}")})),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    put("web", "api", "allow").await;
    put("*", "api", "deny").await;
    put("web", "*", "deny").await;
    put("*", "*", "allow").await;
    let check = |src: &'static str, dst: &'static str| {
        let acl = &acl;
        async move {
            let r = acl
                .call(
                    "GET",
                    &format!("/v1/connect/intentions/check?source={src}&destination={dst}"),
                    Some(&acl.root),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["Allowed"].as_bool().unwrap()
        }
    };
    assert!(check("web", "api").await, "exact beats everything");
    assert!(!check("billing", "api").await, "* → api deny");
    assert!(!check("web", "db").await, "web → * deny");
    assert!(check("billing", "db").await, "* → * allow");

    let m = acl
        .admin_get("/v1/connect/intentions/match?by=destination&name=api")
        .await;
    let precedences: Vec<u64> = m["api"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Precedence"].as_u64().unwrap())
        .collect();
    assert_eq!(precedences, vec![9, 8, 6, 5]);
    let exact = acl
        .admin_get("/v1/connect/intentions/exact?source=web&destination=api")
        .await;
    assert_eq!(exact["Action"], "allow");
    assert_eq!(exact["Description"], "web to api");
    assert_eq!(
        acl.admin_get("/v1/connect/intentions")
            .await
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // The legacy API is a view on service-intentions entries.
    let e = acl.admin_get("/v1/config/service-intentions/api").await;
    assert_eq!(e["Sources"].as_array().unwrap().len(), 2);

    // L7 permissions need an HTTP protocol on the destination.
    let l7 = json!({"Kind": "service-intentions", "Name": "orders", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/orders", "Methods": ["POST"]}}]}]});
    let r = acl
        .call("PUT", "/v1/config", Some(&acl.root), Some(l7.clone()))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("requires the destination"),
        "{}",
        r.text()
    );
    acl.admin(
        "PUT",
        "/v1/config",
        json!({"Kind": "service-defaults", "Name": "orders", "Protocol": "http"}),
    )
    .await;
    acl.admin("PUT", "/v1/config", l7).await;
    assert!(
        !check("web", "orders").await,
        "L7 intentions do not allow L4 connections"
    );

    // Deleting a source keeps the others.
    let r = acl
        .call(
            "DELETE",
            "/v1/connect/intentions/exact?source=web&destination=api",
            Some(&acl.root),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(!check("web", "api").await, "now * → api deny decides");
    let r = acl
        .call(
            "GET",
            "/v1/connect/intentions/exact?source=web&destination=api",
            Some(&acl.root),
            None,
        )
        .await;
    assert_eq!(r.status, 404);

    // Bad input.
    let r = acl
        .call(
            "GET",
            "/v1/connect/intentions/check?source=web",
            Some(&acl.root),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = acl
        .call(
            "PUT",
            "/v1/connect/intentions/exact?source=web&destination=api",
            Some(&acl.root),
            Some(json!({"Action": "perhaps"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // ACLs: a token that may write only web may not write api's intentions, nor read them.
    // (A service identity could read them all: it grants `service_prefix "" read`.)
    let policy = acl
        .admin(
            "PUT",
            "/v1/acl/policy",
            json!({"Name": "web-only", "Rules": "service \"web\" { policy = \"write\" }"}),
        )
        .await;
    let web = acl
        .admin(
            "PUT",
            "/v1/acl/token",
            json!({"Policies": [{"ID": policy["ID"]}]}),
        )
        .await["SecretID"]
        .as_str()
        .unwrap()
        .to_string();
    let r = acl
        .call(
            "PUT",
            "/v1/connect/intentions/exact?source=web&destination=api",
            Some(&web),
            Some(json!({"Action": "allow"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("intentions:write"), "{}", r.text());
    let r = acl
        .call("GET", "/v1/connect/intentions", Some(&web), None)
        .await;
    let visible: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["DestinationName"].as_str().unwrap().to_string())
        .collect();
    assert!(visible.is_empty(), "{visible:?}");
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), "true");
}

#[tokio::test]
async fn blocking_reads_of_roots_and_entries_wake_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    roots(&acl).await;
    let r = acl
        .call("GET", "/v1/config/service-defaults", Some(&acl.root), None)
        .await;
    let idx = r.index();
    let url = acl
        .server
        .url(&format!("/v1/config/service-defaults?index={idx}&wait=10s"));
    let root = acl.root.clone();
    let waiter = tokio::spawn(async move {
        send(
            berth_tests::http_client()
                .get(url)
                .header("X-Consul-Token", root),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the read returned before anything changed"
    );
    acl.admin(
        "PUT",
        "/v1/config",
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}),
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(r.index() > idx);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
}

/// A corporate PKI: a root that stays offline, and an intermediate (with its key) that Berth
/// signs leaves with.
fn corporate_pki() -> (String, String, String, rcgen::KeyPair) {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut rp = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    rp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    rp.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    rp.distinguished_name
        .push(rcgen::DnType::CommonName, "Corp Root CA");
    let root = rp.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(rp, &root_key);
    let int_key = rcgen::KeyPair::generate().unwrap();
    let mut ip = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ip.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ip.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ip.distinguished_name
        .push(rcgen::DnType::CommonName, "Corp Mesh Intermediate");
    let int = ip.signed_by(&int_key, &issuer).unwrap();
    (root.pem(), int.pem(), int_key.serialize_pem(), root_key)
}

#[tokio::test]
async fn an_intermediate_from_a_corporate_ca_signs_leaves_that_chain_to_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let acl = AclServer::start(dir.path()).await;
    roots(&acl).await;
    let (root, int, int_key, root_key) = corporate_pki();
    // The intermediate alone is not enough: peers must be able to reach a root.
    let r = acl
        .call(
            "PUT",
            "/v1/connect/ca/configuration",
            Some(&acl.root),
            Some(json!({"Provider": "file", "Config": {"RootCert": int, "PrivateKey": int_key}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("self-signed root"), "{}", r.text());
    // A chain that does not link up is refused too.
    let (other_root, _, _, _) = corporate_pki();
    let r = acl
        .call("PUT", "/v1/connect/ca/configuration", Some(&acl.root),
            Some(json!({"Provider": "file", "Config": {"RootCert": format!("{int}{other_root}"), "PrivateKey": int_key}})))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("signed by the next"), "{}", r.text());
    let _ = root_key;

    let r = acl
        .call("PUT", "/v1/connect/ca/configuration", Some(&acl.root),
            Some(json!({"Provider": "file", "Config": {"RootCert": format!("{int}{root}"), "PrivateKey": int_key}})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = roots(&acl).await;
    let active = v["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Active"] == true)
        .unwrap()
        .clone();
    assert_eq!(
        active["RootCert"].as_str().unwrap().trim(),
        root.trim(),
        "peers trust the corporate root"
    );
    assert_eq!(active["IntermediateCerts"].as_array().unwrap().len(), 1);

    let web = token_for(&acl, "web").await;
    let (_, csr) = csr_for(&[]);
    let leaf = acl
        .call(
            "PUT",
            "/v1/connect/ca/sign",
            Some(&web),
            Some(json!({"CSR": csr, "Service": "web"})),
        )
        .await
        .json();
    let chain = leaf["CertPEM"].as_str().unwrap();
    let certs: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes())
        .map(|p| p.unwrap())
        .collect();
    assert_eq!(certs.len(), 2, "leaf + intermediate");
    let (_, leaf_c) = x509_parser::parse_x509_certificate(&certs[0].contents).unwrap();
    let (_, int_c) = x509_parser::parse_x509_certificate(&certs[1].contents).unwrap();
    let (_, rp) = x509_parser::pem::parse_x509_pem(root.as_bytes()).unwrap();
    let (_, root_c) = x509_parser::parse_x509_certificate(&rp.contents).unwrap();
    assert!(leaf_c.verify_signature(Some(int_c.public_key())).is_ok());
    assert!(int_c.verify_signature(Some(root_c.public_key())).is_ok());
}
