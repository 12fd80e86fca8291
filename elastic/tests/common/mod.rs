//! Test support: a stub Elasticsearch on 127.0.0.1 that records every request and
//! answers from a script, and helpers to read the fixtures.
#![allow(dead_code)]

use annostore_core::model::Annotation;
use annostore_elastic::{ElasticConfig, ElasticIndex};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    /// The ids of a `_bulk` body's action lines, in order.
    pub fn bulk_ids(&self) -> Vec<String> {
        let text = std::str::from_utf8(&self.body).expect("utf-8 body");
        text.lines()
            .step_by(2)
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("action line");
                v["index"]["_id"].as_str().expect("_id").to_owned()
            })
            .collect()
    }
}

/// What the stub answers: status and body, given the request and how many came before.
pub type Responder = Box<dyn FnMut(&Recorded, usize) -> (u16, Vec<u8>) + Send>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    responder: Mutex<Responder>,
}

pub struct Stub {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(s): State<Arc<Shared>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        body: body.to_vec(),
    };
    let n = {
        let mut reqs = s.requests.lock().unwrap();
        reqs.push(rec.clone());
        reqs.len() - 1
    };
    let (status, body) = (s.responder.lock().unwrap())(&rec, n);
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            // What Elasticsearch 8+ sends on every answer.
            (
                header::HeaderName::from_static("x-elastic-product"),
                "Elasticsearch",
            ),
        ],
        body,
    )
        .into_response()
}

impl Stub {
    pub async fn start(responder: Responder) -> Stub {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            responder: Mutex::new(responder),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Stub {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// A config for this stub with fast retries.
    pub fn config(&self) -> ElasticConfig {
        ElasticConfig {
            url: self.url.clone(),
            max_retries: 3,
            retry_backoff_ms: 1,
            retry_max_backoff_ms: 4,
            request_timeout_ms: 5_000,
            ..ElasticConfig::default()
        }
    }

    pub fn index(&self) -> ElasticIndex {
        ElasticIndex::connect(&self.config()).unwrap()
    }
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

/// Item templates of `bulk_partial_failure.json`, by a short name: "201", "200", "429",
/// "409", "503", "400-document", "400-mapper".
pub fn bulk_item(kind: &str) -> Value {
    let items = fixture_json("bulk_partial_failure.json")["items"]
        .as_array()
        .unwrap()
        .clone();
    items
        .into_iter()
        .find(|it| {
            let i = &it["index"];
            let status = i["status"].as_u64().unwrap().to_string();
            match kind.split_once('-') {
                None => status == kind,
                Some((s, ty)) => {
                    status == s
                        && i["error"]["type"]
                            .as_str()
                            .is_some_and(|t| t.starts_with(ty))
                }
            }
        })
        .unwrap_or_else(|| panic!("no bulk item {kind} in the fixture"))
}

/// A `_bulk` answer for `ids` with one item kind per id (see [`bulk_item`]).
pub fn bulk_answer(ids: &[String], kinds: &[&str]) -> Vec<u8> {
    assert_eq!(ids.len(), kinds.len(), "one kind per document");
    let mut errors = false;
    let items: Vec<Value> = ids
        .iter()
        .zip(kinds)
        .map(|(id, kind)| {
            let mut it = bulk_item(kind);
            it["index"]["_id"] = Value::String(id.clone());
            errors |= it["index"].get("error").is_some();
            it
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"took": 5, "errors": errors, "items": items})).unwrap()
}

/// An annotation with a fixed id, for stable request bodies.
pub fn annotation(n: u64, op: Uuid, media: &str, start_ms: i64) -> Annotation {
    Annotation {
        id: Uuid::from_u64_pair(0x0190_a5c4_3b7e_7cc1, n),
        media_id: media.into(),
        start_ms,
        end_ms: start_ms + 10,
        label: None,
        confidence: None,
        bbox: None,
        embedding: None,
        data: None,
        annotation_type: "shot".into(),
        annotation_type_version: 1,
        pivot_id: "p".into(),
        operation_id: op,
    }
}

pub fn op(n: u64) -> Uuid {
    Uuid::from_u64_pair(0x0190_a5c4_0000_7000, n)
}

/// Compares `actual` with the golden file `name` (tests/golden/), or rewrites the file
/// when UPDATE_GOLDEN=1.
pub fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {name}: {e} (UPDATE_GOLDEN=1 writes it)"));
    assert!(
        expected == actual,
        "{name} differs from its golden file (review, then UPDATE_GOLDEN=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}
