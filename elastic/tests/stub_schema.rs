//! `apply_schema` and connecting, against a stub Elasticsearch (tests/common): the
//! template, a missing or existing index, a refused mapping change, a bad CA certificate.

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
async fn apply_schema_on_an_existing_index_puts_the_mappings() {
    let stub = Stub::start(Box::new(|req, _| {
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/_index_template/annostore-annotations-template") => {
                (200, fixture("acknowledged.json"))
            }
            ("HEAD", "/annostore-annotations") => (200, Vec::new()),
            ("PUT", "/annostore-annotations/_mapping") => (200, fixture("acknowledged.json")),
            _ => (500, b"{}".to_vec()),
        }
    }))
    .await;
    apply_schema(&stub.config()).await.unwrap();
    apply_schema(&stub.config()).await.unwrap();
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 6, "the same three calls each time");
    assert_eq!(reqs[2].path, "/annostore-annotations/_mapping");
    assert_eq!(reqs[2].json(), body::mappings(&stub.config()).unwrap());
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
