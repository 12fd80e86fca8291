//! The producer's side of annostore's HTTP API: register a type, start, upsert, finish
//! and cancel operations. Writes are retried on 503, 429 and lost connections with
//! backoff: every write here is idempotent (annotation ids are deterministic, finish
//! and cancel of a settled operation answer what it already is).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the annostore server at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    #[error("{what}: the server answered {status}: {detail}")]
    Refused {
        what: String,
        status: u16,
        detail: String,
    },
}

impl ApiError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Refused { status, .. } => matches!(status, 429 | 502 | 503 | 504),
        }
    }
}

/// One annotation as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotationItem {
    pub id: Uuid,
    pub media_id: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub label: String,
    pub confidence: f32,
    pub bbox: BBox,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    pub data: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// What `start` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartOperation {
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub pivot_id: String,
    pub lease_seconds: u64,
    pub metadata: Value,
}

/// The fields of an operation the workers read.
#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    pub id: Uuid,
    pub status: String,
    #[serde(default)]
    pub annotation_count: Option<u64>,
}

/// The headers that present `api_key` to an annostore server (none without a key).
pub fn key_headers(api_key: Option<&str>) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(Ok(mut v)) =
        api_key.map(|k| reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")))
    {
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    headers
}

/// A client of one annostore server.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    /// How long transient failures are retried before giving up.
    pub retry_for: Duration,
}

impl ApiClient {
    pub fn new(base: &str) -> ApiClient {
        ApiClient::with_key(base, None)
    }

    /// A client that presents `api_key` (`Authorization: Bearer`) on every request.
    pub fn with_key(base: &str, api_key: Option<&str>) -> ApiClient {
        ApiClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .default_headers(key_headers(api_key))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
            retry_for: Duration::from_secs(120),
        }
    }

    /// Registers `name` version `version` unless it already is, with the same
    /// definition (a different one is the server's 409, reported as it is).
    pub async fn ensure_type(
        &self,
        name: &str,
        version: u32,
        schema: &Value,
        embedding_dim: Option<usize>,
    ) -> Result<(), ApiError> {
        let body = json!({"schema": schema, "embedding_dim": embedding_dim});
        self.call(
            &format!("registering type {name} version {version}"),
            reqwest::Method::PUT,
            &format!("/v1/types/{name}/versions/{version}"),
            Some(&body),
        )
        .await
        .map(drop)
    }

    pub async fn start(&self, start: &StartOperation) -> Result<Operation, ApiError> {
        let body = serde_json::to_value(start).unwrap_or(Value::Null);
        let v = self
            .call(
                &format!(
                    "starting a {} run for {}",
                    start.annotation_type, start.pivot_id
                ),
                reqwest::Method::POST,
                "/v1/operations",
                Some(&body),
            )
            .await?;
        self.parse("starting an operation", v)
    }

    /// Upserts `items` in batches of at most `batch` (each batch all or nothing).
    pub async fn upsert(
        &self,
        operation: Uuid,
        items: &[AnnotationItem],
        batch: usize,
    ) -> Result<(), ApiError> {
        for chunk in items.chunks(batch.max(1)) {
            let body = json!({ "annotations": chunk });
            self.call(
                &format!("upserting {} annotations into {operation}", chunk.len()),
                reqwest::Method::POST,
                &format!("/v1/operations/{operation}/annotations"),
                Some(&body),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn finish(&self, operation: Uuid) -> Result<Operation, ApiError> {
        self.on_operation("finishing", reqwest::Method::POST, operation, "/finish")
            .await
    }

    pub async fn cancel(&self, operation: Uuid) -> Result<Operation, ApiError> {
        self.on_operation("cancelling", reqwest::Method::POST, operation, "/cancel")
            .await
    }

    pub async fn operation(&self, operation: Uuid) -> Result<Operation, ApiError> {
        self.on_operation("reading", reqwest::Method::GET, operation, "")
            .await
    }

    /// A call on `/v1/operations/{operation}{suffix}` that answers the operation.
    async fn on_operation(
        &self,
        verb: &str,
        method: reqwest::Method,
        operation: Uuid,
        suffix: &str,
    ) -> Result<Operation, ApiError> {
        let v = self
            .call(
                &format!("{verb} {operation}"),
                method,
                &format!("/v1/operations/{operation}{suffix}"),
                None,
            )
            .await?;
        self.parse(&format!("{verb} an operation"), v)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, v: Value) -> Result<T, ApiError> {
        serde_json::from_value(v).map_err(|e| ApiError::Refused {
            what: what.to_owned(),
            status: 200,
            detail: format!("unexpected answer: {e}"),
        })
    }

    /// One call, retried with backoff while it fails transiently and `retry_for` lasts.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(100);
        loop {
            let err = match self.once(what, method.clone(), path, body).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.is_transient() || tokio::time::Instant::now() + backoff > deadline {
                return Err(err);
            }
            tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn once(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ApiError::Unreachable {
            base: self.base.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let mut detail = body["detail"].as_str().unwrap_or("no detail").to_owned();
        if let Some(errors) = body["errors"].as_array() {
            for e in errors.iter().take(3) {
                detail.push_str(&format!("; {e}"));
            }
        }
        Err(ApiError::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            detail,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
