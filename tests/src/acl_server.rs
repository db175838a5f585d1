//! A dev-mode `berth-server` with ACLs on (default deny) and a known management token.

use std::path::Path;
use std::time::Duration;

use crate::{Reply, Server, eventually, free_port, http_client, send};

pub struct AclServer {
    pub server: Server,
    pub root: String,
}

impl AclServer {
    pub async fn start(dir: &Path) -> AclServer {
        AclServer::start_bound(dir, "127.0.0.1", &[]).await
    }

    /// Listening on `bind`, with `extra` flags (e.g. `-advertise`).
    pub async fn start_bound(dir: &Path, bind: &str, extra: &[&str]) -> AclServer {
        let root = uuid::Uuid::new_v4().to_string();
        let conf = dir.join("acl.hcl");
        std::fs::write(
            &conf,
            format!(
                "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  tokens {{\n    initial_management = \"{root}\"\n  }}\n}}\n"
            ),
        )
        .expect("write acl.hcl");
        // Debug logging, so that the suites' checks that no secret reaches the log mean something.
        let args = vec![
            "-log-level".to_string(),
            "debug".to_string(),
            "-dev".to_string(),
            "-config-file".to_string(),
            conf.display().to_string(),
        ];
        let mut args = args;
        args.extend(extra.iter().map(|s| s.to_string()));
        let server = Server::start_bound(dir, "acl", bind, free_port(), free_port(), &args);
        server.wait_ready(Duration::from_secs(10)).await;
        let a = AclServer { server, root };
        eventually(Duration::from_secs(10), "the management token", || async {
            (a.call("GET", "/v1/acl/token/self", Some(&a.root.clone()), None)
                .await
                .status
                == 200)
                .then_some(())
        })
        .await;
        a
    }

    /// One HTTP call with an optional token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut b = http_client().request(m, self.server.url(path));
        if let Some(t) = token {
            b = b.header("X-Consul-Token", t);
        }
        if let Some(v) = body {
            b = b.json(&v);
        }
        send(b).await
    }

    /// A call with the management token that must succeed.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let r = self.call(method, path, Some(&self.root), Some(body)).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        r.json()
    }

    /// A read with the management token that must succeed.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let r = self.call("GET", path, Some(&self.root), None).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }
}
