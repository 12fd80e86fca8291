//! Response handling against a stub Elasticsearch (tests/common) that serves the bodies
//! in tests/fixtures and fails on purpose: bulk items that fail (only they are sent
//! again; the call ends Ok, Unavailable or Rejected as it should), whole requests
//! answered 429/503, a server that always fails, a missing server, and large upserts.
//! Search answers are in stub_search.rs, `apply_schema` in stub_schema.rs.

mod common;

use annostore_core::index::{Existing, Index, IndexError, IndexQuery, Scope};
use annostore_core::model::{Annotation, SearchFilter};
use annostore_elastic::{ElasticConfig, ElasticIndex, body};
use common::{Stub, annotation, bulk_answer, fixture, op};
use serde_json::Value;

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
            order: annostore_core::query::SortOrder::Time,
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
