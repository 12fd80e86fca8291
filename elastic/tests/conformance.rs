//! The index conformance suite (core testkit: `run_all`, `run_search_language`,
//! `run_operating`) against a real Elasticsearch, when `ANNOSTORE_TEST_ES_URL` names
//! one (e.g. http://127.0.0.1:9200). Without it the test
//! prints a loud banner and returns, unless `ANNOSTORE_REQUIRE_ES=1` (CI with a server),
//! which makes a missing server a failure. Each run uses an index of its own and deletes
//! it (and its template) at the end. A secured cluster (Elasticsearch 8+ defaults):
//! `ANNOSTORE_TEST_ES_USERNAME`, `ANNOSTORE_TEST_ES_PASSWORD`, and
//! `ANNOSTORE_TEST_ES_CA_CERT` (path of `http_ca.crt`).

use annostore_core::index::Index;
use annostore_core::testkit::index as suite;
use annostore_elastic::{ElasticConfig, ElasticIndex, apply_schema};
use elasticsearch::indices::{
    IndicesDeleteIndexTemplateParts, IndicesDeleteParts, IndicesGetSettingsParts,
    IndicesPutSettingsParts,
};
use serde_json::{Value, json};
use std::sync::Arc;

fn server() -> Option<String> {
    match std::env::var("ANNOSTORE_TEST_ES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let banner = "=".repeat(78);
            eprintln!(
                "\n{banner}\n  ELASTICSEARCH CONFORMANCE SUITE NOT RUN: ANNOSTORE_TEST_ES_URL is not set.\n  \
                 Set it (e.g. http://127.0.0.1:9200) to run the index suite against a real server.\n{banner}\n"
            );
            assert!(
                std::env::var("ANNOSTORE_REQUIRE_ES").as_deref() != Ok("1"),
                "ANNOSTORE_REQUIRE_ES=1 but ANNOSTORE_TEST_ES_URL is not set"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_against_a_real_server() {
    let Some(url) = server() else { return };
    let config = ElasticConfig {
        url,
        index: format!("annostore-test-{}", uuid::Uuid::new_v4().simple()),
        replicas: 0,
        // Every snapshot checked on the hits (the fill path); the second run below
        // sends them as terms filters.
        scope_terms_max: 0,
        username: std::env::var("ANNOSTORE_TEST_ES_USERNAME").ok(),
        password: std::env::var("ANNOSTORE_TEST_ES_PASSWORD").ok(),
        ca_cert: std::env::var("ANNOSTORE_TEST_ES_CA_CERT").ok(),
        ..ElasticConfig::default()
    };
    apply_schema(&config).await.expect("apply schema");
    let es = ElasticIndex::connect(&config).expect("connect");
    // Created from the template: deleted documents' versions are not remembered, so a
    // run may rewrite ids garbage collection freed (body::GC_DELETES).
    assert_eq!(gc_deletes(&es, &config.index).await, "0s");
    // An index made before the template said so gets it from `schema apply`.
    let put = es
        .client()
        .indices()
        .put_settings(IndicesPutSettingsParts::Index(&[config.index.as_str()]))
        .body(json!({"index": {"gc_deletes": "60s"}}))
        .send()
        .await
        .expect("set gc_deletes back to the default");
    assert!(put.status_code().is_success());
    assert_eq!(gc_deletes(&es, &config.index).await, "60s");
    apply_schema(&config)
        .await
        .expect("apply schema again (idempotent)");
    assert_eq!(gc_deletes(&es, &config.index).await, "0s");
    let index: Arc<dyn Index> = Arc::new(es.clone());
    suite::run_all(index.clone()).await;
    suite::run_search_language(index.clone()).await;
    suite::run_operating(index.clone()).await;
    // The same suite with every snapshot sent as a terms filter.
    let terms = ElasticIndex::connect(&ElasticConfig {
        scope_terms_max: 1_024,
        ..config.clone()
    })
    .expect("connect");
    let terms: Arc<dyn Index> = Arc::new(terms);
    suite::run_all(terms.clone()).await;
    suite::run_search_language(terms.clone()).await;
    suite::run_operating(terms).await;
    let deleted = es
        .client()
        .indices()
        .delete(IndicesDeleteParts::Index(&[config.index.as_str()]))
        .send()
        .await
        .expect("delete the test index");
    assert!(deleted.status_code().is_success());
    let deleted = es
        .client()
        .indices()
        .delete_index_template(IndicesDeleteIndexTemplateParts::Name(
            &config.template_name(),
        ))
        .send()
        .await
        .expect("delete the test template");
    assert!(deleted.status_code().is_success());
}

/// The index's `index.gc_deletes` as the cluster reports it.
async fn gc_deletes(es: &ElasticIndex, index: &str) -> String {
    let answer = es
        .client()
        .indices()
        .get_settings(IndicesGetSettingsParts::IndexName(
            &[index],
            &["index.gc_deletes"],
        ))
        .send()
        .await
        .expect("get settings");
    assert!(answer.status_code().is_success());
    let body: Value = answer.json().await.expect("settings JSON");
    body[index]["settings"]["index"]["gc_deletes"]
        .as_str()
        .unwrap_or_else(|| panic!("no index.gc_deletes in {body}"))
        .to_owned()
}
