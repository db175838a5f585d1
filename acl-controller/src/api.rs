//! The servers' HTTP API, with the controller's token.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("BERTH_CA_CERT_PEM holds no PEM certificate")]
    BadCa,
    #[error("cannot reach the Berth server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{method} {path}: the server answered {status}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
}

pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// `ca_pem`: the servers' CA for an https:// address (`BERTH_CA_CERT_PEM`, which the
    /// Terraform module fills from Secrets Manager), trusted besides the platform's roots.
    pub fn new(base: &str, token: Option<String>, ca_pem: Option<&str>) -> Result<Api, ApiError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .no_proxy();
        if let Some(pem) = ca_pem.filter(|p| !p.trim().is_empty()) {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or(ApiError::BadCa)?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: b.build().map_err(|e| ApiError::Unreachable {
                url: base.to_string(),
                reason: e.to_string(),
            })?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), ApiError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| ApiError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let r = req.send().await.map_err(unreachable)?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.map_err(unreachable)?))
    }

    fn status(method: &str, path: &str, status: u16, text: &str) -> ApiError {
        ApiError::Status {
            method: method.into(),
            path: path.into(),
            status,
            message: text.trim().chars().take(300).collect(),
        }
    }

    /// A read where 404 (or a `null` body) means "absent".
    pub async fn get_opt(&self, path: &str) -> Result<Option<Value>, ApiError> {
        let (status, text) = self.call(reqwest::Method::GET, path, None).await?;
        match status {
            404 => Ok(None),
            200..=299 => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Null) => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(e) => Err(Self::status("GET", path, status, &format!("not JSON: {e}"))),
            },
            _ => Err(Self::status("GET", path, status, &text)),
        }
    }

    /// A read that must succeed.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.get_opt(path)
            .await?
            .ok_or_else(|| Self::status("GET", path, 404, "not found"))
    }

    /// A delete where 404 means someone else removed it first; whether it was there.
    pub async fn delete(&self, path: &str) -> Result<bool, ApiError> {
        let (status, text) = self.call(reqwest::Method::DELETE, path, None).await?;
        match status {
            404 => Ok(false),
            200..=299 => Ok(true),
            _ => Err(Self::status("DELETE", path, status, &text)),
        }
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let (status, text) = self.call(reqwest::Method::PUT, path, Some(body)).await?;
        if !(200..300).contains(&status) {
            return Err(Self::status("PUT", path, status, &text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A PUT whose 404 means "absent" (a session renew of a session that expired).
    pub async fn put_opt(&self, path: &str, body: &Value) -> Result<Option<Value>, ApiError> {
        let (status, text) = self.call(reqwest::Method::PUT, path, Some(body)).await?;
        match status {
            404 => Ok(None),
            200..=299 => Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null))),
            _ => Err(Self::status("PUT", path, status, &text)),
        }
    }
}

/// A path segment or query value, percent-encoded (cluster ARNs hold `:` and `/`).
pub fn escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
