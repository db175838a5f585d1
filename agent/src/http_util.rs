//! What every Consul-compatible HTTP handler needs: the plain-text error answer, the decoded
//! query string, and body decoding that accepts any spelling of a field name.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use berth_api::catalog::canonical_keys;
use berth_api::filter::Filter;

/// An error answer: status and a plain-text message, as Consul sends them.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [("content-type", "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
}

impl From<berth_acl::Denied> for ApiError {
    fn from(e: berth_acl::Denied) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, e.to_string())
    }
}

/// The request's resolved ACL identity (set by the host's ACL layer).
pub type Id = axum::Extension<std::sync::Arc<berth_acl::Identity>>;

/// The token of a request: `X-Consul-Token`, `Authorization: Bearer`, or `?token=`.
pub fn request_token(headers: &axum::http::HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(t) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Some(t.trim().to_string());
    }
    if let Some(t) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_string());
    }
    Query::parse(query).get("token").map(str::to_string)
}

/// The caller's token, for requests a handler makes on its behalf (set by the host's ACL
/// layer next to the [`Id`]).
#[derive(Clone, Debug, Default)]
pub struct RequestToken(pub Option<String>);

/// Marks an answer whose list the token's ACLs shortened, as Consul does.
pub fn filtered_by_acls(mut resp: Response, filtered: bool) -> Response {
    if filtered {
        resp.headers_mut().insert(
            "x-consul-results-filtered-by-acls",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    resp
}

/// The query string, decoded. Flags such as `?recurse` count by presence, as in Consul.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Query(
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    pub fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A non-empty value, or `None`.
    pub fn value(&self, k: &str) -> Option<&str> {
        self.get(k).filter(|v| !v.is_empty())
    }

    /// The `?filter=` expression, parsed; a bad one is a 400 naming the problem.
    pub fn filter(&self) -> Result<Option<Filter>, ApiError> {
        Filter::from_query(self.get("filter")).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    pub fn num(&self, k: &str, what: &str) -> Result<Option<u64>, ApiError> {
        self.value(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("Invalid {what}: {v:?}")))
            })
            .transpose()
    }

    /// A boolean flag given as `?k=true|false`; present without a value counts as true.
    pub fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some("") => Ok(Some(true)),
            Some(v) => v
                .parse::<bool>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("Invalid value for {k}: {v:?}"))),
        }
    }
}

/// Decodes a request body whose field names may come in any case; errors name the field.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?
    };
    serde_path_to_error::deserialize(canonical_keys(v)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!("Request decode failed: {path}: {}", e.into_inner()))
    })
}

/// A JSON answer.
pub fn json<T: serde::Serialize + ?Sized>(v: &T) -> Response {
    axum::Json(v).into_response()
}
