//! `apply_schema` and connecting, against a stub Elasticsearch (tests/common): the
//! template, a missing or existing index (its settings and mappings), a refused
//! mapping or settings change, a bad CA certificate.

mod common;

use annostore_core::index::IndexError;
use annostore_elastic::{ElasticConfig, ElasticIndex, apply_schema, body};
use common::{Stub, fixture};
use serde_json::json;

#[tokio::test]
async fn apply_schema_puts_the_template_and_creates_a_missing_index() {
    let stub = Stub::start(Box::new(|req, _| {
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/_index_template/annostore-annotations-template") => {
                (200, fixture("acknowledged.json"))
            }
            ("HEAD", "/annostore-annotations") => (404, Vec::new()),
            ("PUT", "/annostore-annotations") => (200, fixture("create_index.json")),
            _ => (500, b"{}".to_vec()),
        }
    }))
    .await;
    apply_schema(&stub.config()).await.unwrap();
    let reqs = stub.requests();
    let calls: Vec<(String, String)> = reqs
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        calls,
        vec![
            (
                "PUT".into(),
                "/_index_template/annostore-annotations-template".into()
            ),
            ("HEAD".into(), "/annostore-annotations".into()),
            ("PUT".into(), "/annostore-annotations".into()),
        ]
    );
    assert_eq!(reqs[0].json(), body::template(&stub.config()).unwrap());
    assert!(
        reqs[2].body.is_empty(),
        "the template supplies settings and mappings"
    );
}

#[tokio::test]
async fn apply_schema_on_an_existing_index_puts_the_settings_and_the_mappings() {
    let stub = Stub::start(Box::new(|req, _| {
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/_index_template/annostore-annotations-template") => {
                (200, fixture("acknowledged.json"))
            }
            ("HEAD", "/annostore-annotations") => (200, Vec::new()),
            ("PUT", "/annostore-annotations/_settings") => (200, fixture("acknowledged.json")),
            ("PUT", "/annostore-annotations/_mapping") => (200, fixture("acknowledged.json")),
            _ => (500, b"{}".to_vec()),
        }
    }))
    .await;
    apply_schema(&stub.config()).await.unwrap();
    apply_schema(&stub.config()).await.unwrap();
    let reqs = stub.requests();
    let calls: Vec<(String, String)> = reqs
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let once: Vec<(String, String)> = vec![
        (
            "PUT".into(),
            "/_index_template/annostore-annotations-template".into(),
        ),
        ("HEAD".into(), "/annostore-annotations".into()),
        ("PUT".into(), "/annostore-annotations/_settings".into()),
        ("PUT".into(), "/annostore-annotations/_mapping".into()),
    ];
    assert_eq!(
        calls,
        [once.clone(), once].concat(),
        "the same calls each time"
    );
    assert_eq!(reqs[3].json(), body::mappings(&stub.config()).unwrap());
}

/// Garbage collection frees a collected run's ids after deleting its documents, and a
/// new run may write them with a lower version: an index made before the template said
/// `gc_deletes: 0s` must be told, or Elasticsearch would refuse those writes (409) for
/// 60 s, which the adapter reads as done.
#[tokio::test]
async fn apply_schema_on_an_existing_index_sets_gc_deletes() {
    let stub = Stub::start(Box::new(|req, _| {
        match (req.method.as_str(), req.path.as_str()) {
            ("HEAD", "/annostore-annotations") => (200, Vec::new()),
            _ => (200, fixture("acknowledged.json")),
        }
    }))
    .await;
    apply_schema(&stub.config()).await.unwrap();
    let reqs = stub.requests();
    let settings: Vec<_> = reqs
        .iter()
        .filter(|r| r.path == "/annostore-annotations/_settings")
        .collect();
    assert_eq!(settings.len(), 1, "one settings update: {reqs:?}");
    assert_eq!(settings[0].method, "PUT");
    assert_eq!(settings[0].json(), json!({"index": {"gc_deletes": "0s"}}));
    assert_eq!(settings[0].json(), body::index_settings());
    // Only the dynamic setting: static ones (shards, sort, analysis) would be refused
    // on an open index, and replicas or refresh interval are left as operators set them.
    assert_eq!(
        settings[0].json()["index"].as_object().unwrap().len(),
        1,
        "{:?}",
        settings[0].json()
    );
    // The template says the same, for indexes created from it.
    let template = body::template(&stub.config()).unwrap();
    assert_eq!(
        template["template"]["settings"]["index"]["gc_deletes"],
        "0s"
    );
}

#[tokio::test]
async fn settings_are_put_even_when_the_mappings_are_refused() {
    // A schema-version-1 index refuses the mappings; it still gets gc_deletes.
    let stub = Stub::start(Box::new(|req, _| {
        match (req.method.as_str(), req.path.as_str()) {
            ("HEAD", _) => (200, Vec::new()),
            ("PUT", "/annostore-annotations/_mapping") => {
                (400, fixture("error_400_illegal_argument.json"))
            }
            _ => (200, fixture("acknowledged.json")),
        }
    }))
    .await;
    let err = apply_schema(&stub.config()).await.expect_err("refused");
    assert!(matches!(err, IndexError::Rejected(_)), "{err:?}");
    assert!(
        stub.requests()
            .iter()
            .any(|r| r.method == "PUT" && r.path == "/annostore-annotations/_settings"),
        "{:?}",
        stub.requests()
    );
}

#[tokio::test]
async fn a_refused_settings_update_is_rejected_and_a_failing_one_retried() {
    let refused = Stub::start(Box::new(|req, _| {
        match (req.method.as_str(), req.path.as_str()) {
            ("HEAD", _) => (200, Vec::new()),
            ("PUT", "/annostore-annotations/_settings") => {
                (400, fixture("error_400_illegal_argument.json"))
            }
            _ => (200, fixture("acknowledged.json")),
        }
    }))
    .await;
    match apply_schema(&refused.config()).await.expect_err("refused") {
        IndexError::Rejected(m) => assert!(m.contains("put index settings"), "{m}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(
        !refused
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/_mapping")),
        "stops at the refused settings"
    );

    // 503 twice, then acknowledged: retried like the other schema requests.
    let mut tries = 0;
    let failing = Stub::start(Box::new(move |req, _| {
        match (req.method.as_str(), req.path.as_str()) {
            ("HEAD", _) => (200, Vec::new()),
            ("PUT", "/annostore-annotations/_settings") => {
                tries += 1;
                if tries <= 2 {
                    (503, fixture("error_503_cluster_block.json"))
                } else {
                    (200, fixture("acknowledged.json"))
                }
            }
            _ => (200, fixture("acknowledged.json")),
        }
    }))
    .await;
    apply_schema(&failing.config()).await.unwrap();
    let settings = failing
        .requests()
        .iter()
        .filter(|r| r.path == "/annostore-annotations/_settings")
        .count();
    assert_eq!(settings, 3);
}

#[tokio::test]
async fn a_refused_mapping_change_is_rejected() {
    let stub = Stub::start(Box::new(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("HEAD", _) => (200, Vec::new()),
        ("PUT", "/annostore-annotations/_mapping") => (
            400,
            serde_json::to_vec(&json!({
                "error": {
                    "root_cause": [{"type": "illegal_argument_exception", "reason": "mapper [start_ms] cannot be changed from type [long] to [keyword]"}],
                    "type": "illegal_argument_exception",
                    "reason": "mapper [start_ms] cannot be changed from type [long] to [keyword]"
                },
                "status": 400
            }))
            .unwrap(),
        ),
        _ => (200, fixture("acknowledged.json")),
    }))
    .await;
    let err = apply_schema(&stub.config()).await.expect_err("refused");
    match err {
        IndexError::Rejected(m) => assert!(m.contains("cannot be changed"), "{m}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[test]
fn a_ca_certificate_that_cannot_be_read_is_refused_at_connect() {
    let missing = ElasticConfig {
        url: "https://127.0.0.1:9200".into(),
        ca_cert: Some("/nonexistent/http_ca.crt".into()),
        ..ElasticConfig::default()
    };
    let err = ElasticIndex::connect(&missing).expect_err("no such file");
    assert!(
        matches!(err, IndexError::Rejected(ref m) if m.contains("ca_cert")),
        "{err:?}"
    );
    // A file that holds no PEM certificate.
    let not_pem = common::fixture_path("count.json");
    let err = ElasticIndex::connect(&ElasticConfig {
        ca_cert: Some(not_pem.to_string_lossy().into_owned()),
        ..missing
    })
    .expect_err("not a certificate");
    assert!(
        matches!(err, IndexError::Rejected(ref m) if m.contains("ca_cert")),
        "{err:?}"
    );
}
