//! Response handling against a stub Elasticsearch (tests/common) that serves the bodies
//! in tests/fixtures and fails on purpose: bulk items that fail (only they are sent
//! again; the call ends Ok, Unavailable or Rejected as it should), whole requests
//! answered 429/503, a server that always fails, search answers (scope check, page
//! filling, partial results), count, refresh, and `apply_schema`.

mod common;

use annostore_core::index::{Existing, Index, IndexError, IndexQuery, Scope};
use annostore_core::model::{Annotation, SearchFilter, SortKey};
use annostore_core::visibility::{Visibility, op_key};
use annostore_elastic::{ElasticConfig, ElasticIndex, apply_schema, body};
use common::{Stub, annotation, bulk_answer, fixture, op};
use serde_json::{Value, json};
use std::sync::Arc;

fn batch(n: u64) -> Vec<Annotation> {
    (0..n)
        .map(|i| annotation(i, op(1), "m", i as i64 * 10))
        .collect()
}

fn ids(docs: &[&Annotation]) -> Vec<String> {
    docs.iter().map(|a| body::uuid_text(&a.id)).collect()
}

#[tokio::test]
async fn failed_items_alone_are_sent_again_until_indexed() {
    // First answer: 201, 429, 409, 200, 503; then everything succeeds.
    let stub = Stub::start(Box::new(|req, n| {
        let ids = req.bulk_ids();
        let kinds: Vec<&str> = if n == 0 {
            vec!["201", "429", "409", "200", "503"]
        } else {
            vec!["201"; ids.len()]
        };
        (200, bulk_answer(&ids, &kinds))
    }))
    .await;
    let docs = batch(5);
    stub.index()
        .upsert(&docs, Existing::Unknown)
        .await
        .expect("retried items end indexed");
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 2, "one retry round");
    assert_eq!(reqs[0].bulk_ids(), ids(&docs.iter().collect::<Vec<_>>()));
    let failed = [&docs[1], &docs[2], &docs[4]];
    assert_eq!(
        reqs[1].bulk_ids(),
        ids(&failed),
        "only the failed items again"
    );
    // Byte for byte the same lines as the first time.
    let expected: Vec<u8> = failed
        .iter()
        .flat_map(|a| body::bulk_lines(a, None).unwrap())
        .collect();
    assert_eq!(reqs[1].body, expected);
    assert!(reqs[1].query.contains("refresh=wait_for"));
}

#[tokio::test]
async fn a_versioned_write_refused_as_older_counts_as_done() {
    // 409 on a versioned write: the index holds a newer copy. Not sent again.
    let stub = Stub::start(Box::new(|req, _| {
        let ids = req.bulk_ids();
        let kinds: Vec<&str> = (0..ids.len())
            .map(|i| if i == 1 { "409" } else { "201" })
            .collect();
        (200, bulk_answer(&ids, &kinds))
    }))
    .await;
    let docs = batch(3);
    stub.index()
        .upsert_versioned(&docs, Existing::Unknown, 7)
        .await
        .expect("a newer copy is as good as this one");
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1, "nothing sent again");
    assert_eq!(reqs[0].body, body::bulk(&docs, Some(7)).unwrap());
    let first_action: Value =
        serde_json::from_slice(reqs[0].body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first_action["index"]["version"], 7);
    assert_eq!(first_action["index"]["version_type"], "external_gte");
}

#[tokio::test]
async fn an_item_that_keeps_failing_makes_the_call_unavailable() {
    let stub = Stub::start(Box::new(|req, _| {
        let ids = req.bulk_ids();
        // The second document is rejected by indexing pressure every time.
        let kinds: Vec<&str> = req
            .bulk_ids()
            .iter()
            .map(|id| if id.ends_with("0001") { "429" } else { "201" })
            .collect();
        (200, bulk_answer(&ids, &kinds))
    }))
    .await;
    let docs = batch(3);
    let err = stub
        .index()
        .upsert(&docs, Existing::Unknown)
        .await
        .expect_err("never Ok while an item fails");
    match &err {
        IndexError::Unavailable(m) => {
            assert!(m.contains("1 of 3 documents"), "{m}");
            assert!(m.contains("es_rejected_execution_exception"), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let reqs = stub.requests();
    assert_eq!(
        reqs.len(),
        1 + 3,
        "the first try and max_retries (3) retries"
    );
    for r in &reqs[1..] {
        assert_eq!(r.bulk_ids(), ids(&[&docs[1]]));
    }
}

#[tokio::test]
async fn refused_items_make_the_call_rejected_without_retry() {
    for (kind, ty) in [
        ("400-mapper", "mapper_parsing_exception"),
        ("400-document", "document_parsing_exception"),
    ] {
        let stub = Stub::start(Box::new(move |req, _| {
            let ids = req.bulk_ids();
            let kinds = vec!["201", kind, "429"];
            (200, bulk_answer(&ids, &kinds))
        }))
        .await;
        let docs = batch(3);
        let err = stub
            .index()
            .upsert(&docs, Existing::Unknown)
            .await
            .expect_err("a refused document fails the call");
        match &err {
            IndexError::Rejected(m) => {
                assert!(m.contains(ty), "{m}");
                assert!(
                    m.contains(&body::uuid_text(&docs[1].id)),
                    "names the item: {m}"
                );
                assert!(m.contains("1 of 3"), "{m}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        // Retrying cannot help a refused document; the caller's pending record keeps
        // the whole batch for a later replay.
        assert_eq!(stub.requests().len(), 1, "{kind}");
    }
}

#[tokio::test]
async fn whole_request_429_and_503_are_retried() {
    let stub = Stub::start(Box::new(|req, n| match n {
        0 => (429, fixture("error_429_rejected.json")),
        1 => (503, fixture("error_503_cluster_block.json")),
        _ => {
            let ids = req.bulk_ids();
            let kinds = vec!["201"; ids.len()];
            (200, bulk_answer(&ids, &kinds))
        }
    }))
    .await;
    let docs = batch(4);
    stub.index()
        .upsert(&docs, Existing::Unknown)
        .await
        .expect("indexed on the third try");
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.body, reqs[0].body, "the whole batch each time");
    }
}

#[tokio::test]
async fn a_server_that_always_fails_is_unavailable_after_max_retries() {
    for (status, file) in [
        (503, "error_503_cluster_block.json"),
        (429, "error_429_rejected.json"),
    ] {
        let stub = Stub::start(Box::new(move |_, _| (status, fixture(file)))).await;
        let index = stub.index();
        let err = index
            .upsert(&batch(2), Existing::Unknown)
            .await
            .expect_err("never Ok");
        assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
        assert_eq!(stub.requests().len(), 4, "1 + max_retries");
        // Reads are retried the same way.
        let err = index.count_operation(op(1)).await.expect_err("never Ok");
        assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
        assert_eq!(stub.requests().len(), 8);
    }
}

#[tokio::test]
async fn a_server_that_is_not_there_is_unavailable() {
    // Bind, learn the port, close it: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let index = ElasticIndex::connect(&ElasticConfig {
        url,
        max_retries: 2,
        retry_backoff_ms: 1,
        retry_max_backoff_ms: 2,
        ..ElasticConfig::default()
    })
    .unwrap();
    let err = index
        .upsert(&batch(1), Existing::Unknown)
        .await
        .expect_err("nobody there");
    assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
    let err = index
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: Scope::Operation(op(1)),
            after: None,
            limit: 10,
        })
        .await
        .expect_err("nobody there");
    assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_malformed_request_is_rejected_at_once() {
    let stub = Stub::start(Box::new(|_, _| {
        (400, fixture("error_400_illegal_argument.json"))
    }))
    .await;
    let err = stub
        .index()
        .upsert(&batch(2), Existing::Unknown)
        .await
        .expect_err("400");
    match err {
        IndexError::Rejected(m) => assert!(m.contains("illegal_argument_exception"), "{m}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn large_upserts_are_split_and_duplicates_keep_the_last_copy() {
    let stub = Stub::start(Box::new(|req, _| {
        let ids = req.bulk_ids();
        let kinds = vec!["201"; ids.len()];
        (200, bulk_answer(&ids, &kinds))
    }))
    .await;
    let index = ElasticIndex::connect(&ElasticConfig {
        bulk_max_docs: 2,
        ..stub.config()
    })
    .unwrap();
    let mut docs = batch(5);
    let mut again = docs[0].clone();
    again.start_ms = 999;
    docs.push(again.clone());
    index.upsert(&docs, Existing::Unknown).await.unwrap();
    let reqs = stub.requests();
    let sizes: Vec<usize> = reqs.iter().map(|r| r.bulk_ids().len()).collect();
    assert_eq!(sizes, vec![2, 2, 1], "5 distinct ids in chunks of 2");
    let all: Vec<u8> = reqs.iter().flat_map(|r| r.body.clone()).collect();
    let expected = body::bulk(
        &[
            docs[1].clone(),
            docs[2].clone(),
            docs[3].clone(),
            docs[4].clone(),
            again,
        ],
        None,
    )
    .unwrap();
    assert_eq!(all, expected, "the later copy of an id, once");
    // Nothing to send, nothing sent.
    index.upsert(&[], Existing::Unknown).await.unwrap();
    assert_eq!(stub.requests().len(), 3);
}

/// A search answer with hits for these (key, op) pairs, in the fixture's format.
fn hits_answer(hits: &[(SortKey, u64)]) -> Vec<u8> {
    let template = common::fixture_json("search_hits.json");
    let hit0 = template["hits"]["hits"][0].clone();
    let hits: Vec<Value> = hits
        .iter()
        .map(|(k, op)| {
            let mut h = hit0.clone();
            let id = body::uuid_text(&k.id);
            h["_id"] = json!(id);
            h["sort"] = json!([k.media_id, k.start_ms, id]);
            h["fields"]["op_key"] = json!([*op as i64]);
            h
        })
        .collect();
    let mut answer = template;
    answer["hits"]["hits"] = json!(hits);
    serde_json::to_vec(&answer).unwrap()
}

#[tokio::test]
async fn search_reads_sort_values_and_checks_the_scope() {
    let stub = Stub::start(Box::new(|_, _| (200, fixture("search_hits.json")))).await;
    let index = stub.index();
    // The fixture's first hit carries op key 0xa000_0000_0000_0000 (negative as i64),
    // the second 42.
    let high = uuid::Uuid::from_u64_pair(1, 0xa000_0000_0000_0000);
    let hits = index
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: Scope::Visible(Arc::new(Visibility::from_active([high]))),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(hits.len(), 1, "the hit of another operation is dropped");
    assert_eq!(
        hits[0].key,
        SortKey {
            media_id: "m1".into(),
            start_ms: 0,
            id: "0190a5c4-3b7e-7cc1-9a2f-4f1b6de0a111".parse().unwrap(),
        }
    );
    assert_eq!(hits[0].id, hits[0].key.id);
    assert_eq!(op_key(&high), 0xa000_0000_0000_0000);
}

#[tokio::test]
async fn a_large_snapshot_fills_the_page_over_rounds() {
    // 250 documents in order; only every fifth is in scope. Rounds are 100 hits.
    let visible_op = op(1);
    let other = op(2);
    let docs: Vec<(SortKey, u64)> = (0..250u64)
        .map(|i| {
            let a = annotation(i, visible_op, "m", i as i64);
            let o = if i % 5 == 0 { visible_op } else { other };
            (SortKey::of(&a), op_key(&o))
        })
        .collect();
    let served = docs.clone();
    let stub = Stub::start(Box::new(move |req, _| {
        let body = req.json();
        let size = body["size"].as_u64().unwrap() as usize;
        let after = body.get("search_after").map(|a| a[1].as_i64().unwrap());
        let rest: Vec<(SortKey, u64)> = served
            .iter()
            .filter(|(k, _)| after.is_none_or(|s| k.start_ms > s))
            .take(size)
            .cloned()
            .collect();
        (200, hits_answer(&rest))
    }))
    .await;
    let mut config = stub.config();
    config.scope_terms_max = 1; // two active operations: over the limit
    let index = ElasticIndex::connect(&config).unwrap();
    let scope = Scope::Visible(Arc::new(Visibility::from_active([visible_op, op(3)])));
    let hits = index
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: scope.clone(),
            after: None,
            limit: 30,
        })
        .await
        .unwrap();
    let expected: Vec<SortKey> = docs
        .iter()
        .filter(|(_, o)| *o == op_key(&visible_op))
        .take(30)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        hits.iter().map(|h| h.key.clone()).collect::<Vec<_>>(),
        expected
    );
    let reqs = stub.requests();
    assert_eq!(
        reqs.len(),
        2,
        "100 hits hold 20 in scope; a second round fills the page"
    );
    assert_eq!(
        reqs[1].json()["search_after"][1],
        99,
        "continues after the first round"
    );
    assert!(
        reqs[0].json()["query"].get("match_all").is_some(),
        "no scope filter sent"
    );
    // Asking for the rest: the end of the documents ends the search with a short page.
    let rest = index
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope,
            after: Some(expected[29].clone()),
            limit: 30,
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 20);
}

#[tokio::test]
async fn a_page_that_cannot_be_filled_in_bounded_rounds_fails() {
    // Every hit belongs to an operation out of scope, and there is always more.
    let stub = Stub::start(Box::new(|req, n| {
        let size = req.json()["size"].as_u64().unwrap();
        let hits: Vec<(SortKey, u64)> = (0..size)
            .map(|i| {
                let a = annotation(
                    n as u64 * 10_000 + i,
                    op(9),
                    "m",
                    (n as u64 * size + i) as i64,
                );
                (SortKey::of(&a), 7)
            })
            .collect();
        (200, hits_answer(&hits))
    }))
    .await;
    let mut config = stub.config();
    config.scope_terms_max = 0;
    let index = ElasticIndex::connect(&config).unwrap();
    let err = index
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: Scope::Visible(Arc::new(Visibility::from_active([op(1)]))),
            after: None,
            limit: 10,
        })
        .await
        .expect_err("a short page would read as the end of the results");
    assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
    let sizes: Vec<u64> = stub
        .requests()
        .iter()
        .map(|r| r.json()["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), annostore_elastic::index::MAX_FILL_ROUNDS);
    // Rounds grow: 100, 200, ... 6,400, then 10,000 (the result window) each.
    assert_eq!(
        sizes[..8],
        [100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000]
    );
    assert!(sizes[8..].iter().all(|&s| s == 10_000));
}

#[tokio::test]
async fn partial_search_results_are_an_error() {
    let stub = Stub::start(Box::new(|_, _| (200, fixture("search_shard_failure.json")))).await;
    let err = stub
        .index()
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: Scope::Operation(op(1)),
            after: None,
            limit: 10,
        })
        .await
        .expect_err("partial results");
    match err {
        IndexError::Unavailable(m) => assert!(m.contains("failed shards: 1"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn refresh_posts_to_the_index() {
    let stub = Stub::start(Box::new(|_, _| (200, fixture("refresh.json")))).await;
    stub.index().refresh().await;
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    // The official client sends a body-less refresh as GET; Elasticsearch serves
    // GET and POST `_refresh` alike.
    assert!(["GET", "POST"].contains(&reqs[0].method.as_str()));
    assert_eq!(reqs[0].path, "/annostore-annotations/_refresh");
}

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
