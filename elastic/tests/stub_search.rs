//! Search answers against a stub Elasticsearch (tests/common) serving the bodies in
//! tests/fixtures: sort values and the scope check, page filling over rounds and its
//! bound, partial results, and refresh.

mod common;

use annostore_core::index::{Index, IndexError, IndexQuery, Scope};
use annostore_core::model::{SearchFilter, SortKey};
use annostore_core::visibility::{Visibility, op_key};
use annostore_elastic::{ElasticIndex, body};
use common::{Stub, annotation, fixture, op};
use serde_json::{Value, json};
use std::sync::Arc;

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
            order: annostore_core::query::SortOrder::Time,
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
            order: annostore_core::query::SortOrder::Time,
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
            order: annostore_core::query::SortOrder::Time,
            after: Some(annostore_core::index::Position::time(expected[29].clone())),
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
            order: annostore_core::query::SortOrder::Time,
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
            order: annostore_core::query::SortOrder::Time,
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
