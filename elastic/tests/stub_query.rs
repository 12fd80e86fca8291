//! The search language's answers against a stub Elasticsearch (tests/common): kNN hits
//! (mapping check, cosine scores back to similarities, the scope check and its rounds),
//! aggregation answers read into `Aggregates` exactly as `core::query::Aggregator`
//! counts, confidence-ordered hits, and malformed answers and failing servers, which
//! must end in an `IndexError`, never in a panic or an empty success.

mod common;

use annostore_core::index::{
    AggregateQuery, Index, IndexError, IndexQuery, KnnQuery, Position, Scope,
};
use annostore_core::model::{Annotation, SearchFilter, SortKey};
use annostore_core::query::{AggregateSpec, Aggregator, HistogramSpec, SortOrder};
use annostore_core::visibility::{Visibility, op_key};
use annostore_elastic::{ElasticIndex, body};
use common::{Stub, annotation, fixture, fixture_json, op};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// The operation whose key is the fixtures' first op_key (negative as i64).
fn high() -> Uuid {
    Uuid::from_u64_pair(1, 0xa000_0000_0000_0000)
}

fn knn_query(scope: Scope, k: usize) -> KnnQuery {
    KnnQuery {
        filter: SearchFilter::default(),
        scope,
        vector: vec![1.0, 0.0, 0.0, 0.0],
        k,
    }
}

/// Answers the field mapping with `mapping` and every search with `search`.
fn knn_stub(mapping: &'static str, search: Vec<u8>) -> common::Responder {
    Box::new(move |req, _| {
        if req.path.contains("/_mapping/field/") {
            (200, fixture(mapping))
        } else {
            (200, search.clone())
        }
    })
}

#[tokio::test]
async fn knn_hits_are_read_and_checked_against_the_scope() {
    let stub = Stub::start(knn_stub(
        "field_mapping_cosine.json",
        fixture("knn_hits.json"),
    ))
    .await;
    let scope = Scope::Visible(Arc::new(Visibility::from_active([high()])));
    let hits = stub.index().knn(&knn_query(scope, 10)).await.unwrap();
    assert_eq!(hits.len(), 1, "the hit of another operation is dropped");
    let h = &hits[0];
    assert_eq!(
        h.id,
        "0190a5c4-3b7e-7cc1-9a2f-4f1b6de0a111"
            .parse::<Uuid>()
            .unwrap()
    );
    assert_eq!(h.key.media_id, "m1");
    assert_eq!(h.key.start_ms, 0);
    // Score 0.99 = (1 + cos) / 2.
    assert!((h.similarity - 0.98).abs() < 1e-6, "{}", h.similarity);
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].query.contains("filter_path="), "{}", reqs[1].query);
}

#[tokio::test]
async fn knn_with_a_checked_scope_stops_once_every_match_was_seen() {
    let stub = Stub::start(knn_stub(
        "field_mapping_cosine.json",
        fixture("knn_hits.json"),
    ))
    .await;
    let mut config = stub.config();
    config.scope_terms_max = 0;
    let index = ElasticIndex::connect(&config).unwrap();
    // The fixture's op keys: the high one (in scope) and 42 (not). Two hits for 100
    // asked: every match was seen, so one round answers.
    let scope = Scope::Visible(Arc::new(Visibility::from_active([high(), op(5)])));
    let hits = index.knn(&knn_query(scope, 1)).await.unwrap();
    assert_eq!(hits.len(), 1);
    let reqs = index_requests(&stub);
    assert_eq!(reqs.len(), 2, "two hits < 100 asked: all seen in one round");
    assert_eq!(reqs[1]["knn"]["k"], 100);
    assert!(reqs[1]["knn"].get("filter").is_none(), "no scope clause");
}

fn index_requests(stub: &Stub) -> Vec<Value> {
    stub.requests()
        .iter()
        .map(|r| {
            if r.body.is_empty() {
                Value::Null
            } else {
                r.json()
            }
        })
        .collect()
}

#[tokio::test]
async fn knn_on_a_dimension_nobody_wrote_is_empty() {
    let stub = Stub::start(knn_stub(
        "field_mapping_missing.json",
        fixture("knn_hits.json"),
    ))
    .await;
    let hits = stub
        .index()
        .knn(&knn_query(Scope::Operation(op(1)), 10))
        .await
        .unwrap();
    assert!(hits.is_empty());
    assert_eq!(stub.requests().len(), 1, "no knn search sent");
}

#[tokio::test]
async fn knn_refuses_an_l2_field_and_a_zero_vector() {
    let stub = Stub::start(knn_stub("field_mapping_l2.json", fixture("knn_hits.json"))).await;
    let err = stub
        .index()
        .knn(&knn_query(Scope::Operation(op(1)), 10))
        .await
        .expect_err("l2_norm scores are not cosines");
    assert!(
        matches!(&err, IndexError::Rejected(m) if m.contains("l2_norm")),
        "{err:?}"
    );
    let mut zero = knn_query(Scope::Operation(op(1)), 10);
    zero.vector = vec![0.0; 4];
    let err = stub.index().knn(&zero).await.expect_err("zero vector");
    assert!(matches!(err, IndexError::Unanswerable(_)), "{err:?}");
}

/// A kNN answer with these (key, op, score) hits.
fn knn_answer(hits: &[(SortKey, u64, f64)]) -> Vec<u8> {
    let hits: Vec<Value> = hits
        .iter()
        .map(|(k, o, s)| {
            let id = body::uuid_text(&k.id);
            json!({"_id": id, "_score": s, "fields": {
                "media_id": [k.media_id], "start_ms": [k.start_ms], "id": [id],
                "op_key": [*o as i64],
            }})
        })
        .collect();
    serde_json::to_vec(
        &json!({"timed_out": false, "_shards": {"failed": 0}, "hits": {"hits": hits}}),
    )
    .unwrap()
}

#[tokio::test]
async fn knn_with_a_large_snapshot_asks_for_more_until_k_are_in_scope() {
    // 2,000 neighbours by falling score; every 50th is in scope.
    let visible = op(1);
    let docs: Vec<(SortKey, u64, f64)> = (0..2_000u64)
        .map(|i| {
            let a = annotation(i, visible, "m", i as i64);
            let o = if i % 50 == 0 { visible } else { op(2) };
            (SortKey::of(&a), op_key(&o), 1.0 - i as f64 / 4_000.0)
        })
        .collect();
    let served = docs.clone();
    let stub = Stub::start(Box::new(move |req, _| {
        if req.path.contains("/_mapping/field/") {
            return (200, fixture("field_mapping_cosine.json"));
        }
        let k = req.json()["knn"]["k"].as_u64().unwrap() as usize;
        (200, knn_answer(&served[..k.min(served.len())]))
    }))
    .await;
    let mut config = stub.config();
    config.scope_terms_max = 1;
    let index = ElasticIndex::connect(&config).unwrap();
    let scope = Scope::Visible(Arc::new(Visibility::from_active([visible, op(3)])));
    let hits = index.knn(&knn_query(scope.clone(), 10)).await.unwrap();
    let expected: Vec<SortKey> = docs
        .iter()
        .filter(|(_, o, _)| *o == op_key(&visible))
        .take(10)
        .map(|(k, _, _)| k.clone())
        .collect();
    assert_eq!(
        hits.iter().map(|h| h.key.clone()).collect::<Vec<_>>(),
        expected
    );
    let ks: Vec<u64> = index_requests(&stub)
        .iter()
        .filter_map(|r| r.get("knn").map(|k| k["k"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        ks,
        vec![100, 400, 1_600],
        "100 hold 2 in scope, 400 hold 8, 1,600 hold 32"
    );
    // Fewer in scope than k even at the cap, with more documents: an error.
    let served = docs.clone();
    let stub = Stub::start(Box::new(move |req, _| {
        if req.path.contains("/_mapping/field/") {
            return (200, fixture("field_mapping_cosine.json"));
        }
        let k = req.json()["knn"]["k"].as_u64().unwrap() as usize;
        // Always a full answer, nothing in scope.
        let hits: Vec<(SortKey, u64, f64)> = (0..k)
            .map(|i| {
                let (key, _, s) = served[i % served.len()].clone();
                (key, 7, s)
            })
            .collect();
        (200, knn_answer(&hits))
    }))
    .await;
    let mut config = stub.config();
    config.scope_terms_max = 1;
    let index = ElasticIndex::connect(&config).unwrap();
    let err = index
        .knn(&knn_query(scope, 10))
        .await
        .expect_err("fewer than k would read as all there is");
    assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
    let ks: Vec<u64> = index_requests(&stub)
        .iter()
        .filter_map(|r| r.get("knn").map(|k| k["k"].as_u64().unwrap()))
        .collect();
    assert_eq!(ks, vec![100, 400, 1_600, 6_400, 10_000]);
}

/// The six annotations whose counts `aggregate_answer.json` holds.
fn six() -> Vec<Annotation> {
    let mk = |n, ty: &str, v, label: Option<&str>, s, e| {
        let mut a = annotation(n, op(1), "m1", s);
        a.end_ms = e;
        a.annotation_type = ty.into();
        a.annotation_type_version = v;
        a.label = label.map(Into::into);
        a
    };
    vec![
        mk(1, "object", 1, Some("cat"), 0, 500),
        mk(2, "object", 1, Some("cat"), 900, 2_100),
        mk(3, "object", 1, Some("dog"), 1_500, 1_600),
        mk(4, "shot", 2, Some("dog"), 3_000, 3_000),
        mk(5, "shot", 2, None, 0, 10),
        mk(6, "shot", 10, Some("bird"), 3_500, 3_600),
    ]
}

fn all_spec(n: u32) -> AggregateSpec {
    AggregateSpec {
        labels: Some(n),
        types: true,
        histogram: Some(HistogramSpec {
            interval_ms: 1_000,
            by_label: true,
        }),
    }
}

fn agg_query(spec: AggregateSpec) -> AggregateQuery {
    AggregateQuery {
        filter: SearchFilter::default(),
        scope: Scope::Operation(op(1)),
        spec,
    }
}

#[tokio::test]
async fn aggregation_answers_read_as_the_brute_force_counts() {
    let stub = Stub::start(Box::new(|_, _| (200, fixture("aggregate_answer.json")))).await;
    let index = stub.index();
    for n in [0, 1, 2, 3, 10] {
        let spec = all_spec(n);
        let mut brute = Aggregator::new(spec.clone());
        for a in six() {
            brute.add(&a);
        }
        let got = index.aggregate(&agg_query(spec)).await.unwrap();
        assert_eq!(got, brute.finish(), "labels: {n}");
    }
    let got = index.aggregate(&agg_query(all_spec(2))).await.unwrap();
    let labels: Vec<&str> = got
        .labels
        .as_ref()
        .unwrap()
        .iter()
        .map(|l| l.label.as_str())
        .collect();
    assert_eq!(labels, ["cat", "dog"]);
    let versions: Vec<u32> = got
        .types
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.annotation_type_version)
        .collect();
    assert_eq!(versions, [1, 2, 10], "versions sorted as numbers");
    // No labels asked for: no labels aggregation sent, none read.
    let spec = AggregateSpec {
        labels: Some(0),
        ..AggregateSpec::default()
    };
    let got = index.aggregate(&agg_query(spec)).await.unwrap();
    assert_eq!(got.labels, Some(vec![]));
    assert_eq!(got.total, 6);
}

#[tokio::test]
async fn aggregations_over_a_large_snapshot_are_refused_and_empty_scopes_answer_zero() {
    let stub = Stub::start(Box::new(|_, _| (200, fixture("aggregate_answer.json")))).await;
    let mut config = stub.config();
    config.scope_terms_max = 1;
    let index = ElasticIndex::connect(&config).unwrap();
    let mut q = agg_query(all_spec(3));
    q.scope = Scope::Visible(Arc::new(Visibility::from_active([op(1), op(2)])));
    let err = index.aggregate(&q).await.expect_err("scope not exact");
    assert!(
        matches!(&err, IndexError::Unanswerable(m) if m.contains("scope_terms_max")),
        "{err:?}"
    );
    q.scope = Scope::Visible(Arc::new(Visibility::default()));
    let got = index.aggregate(&q).await.unwrap();
    assert_eq!(got.total, 0);
    assert_eq!(got.histogram, Some(vec![]));
    assert!(stub.requests().is_empty(), "nothing sent");
}

/// The aggregate fixture changed by `change`.
fn changed(change: impl Fn(&mut Value)) -> Vec<u8> {
    let mut v = fixture_json("aggregate_answer.json");
    change(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn malformed_or_approximate_aggregation_answers_are_errors() {
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "no aggregations",
            Box::new(|v| v["aggregations"] = Value::Null),
        ),
        (
            "labels missing",
            Box::new(|v| {
                v["aggregations"].as_object_mut().unwrap().remove("labels");
            }),
        ),
        (
            "total a lower bound",
            Box::new(|v| v["hits"]["total"]["relation"] = json!("gte")),
        ),
        ("no total", Box::new(|v| v["hits"] = json!({"hits": []}))),
        (
            "labels left out",
            Box::new(|v| v["aggregations"]["labels"]["sum_other_doc_count"] = json!(4)),
        ),
        (
            "bucket labels left out",
            Box::new(|v| {
                v["aggregations"]["histogram"]["buckets"][1]["labels"]["sum_other_doc_count"] =
                    json!(1)
            }),
        ),
        (
            "bucket without labels",
            Box::new(|v| {
                v["aggregations"]["histogram"]["buckets"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("labels");
            }),
        ),
        (
            "bucket key off the interval",
            Box::new(|v| v["aggregations"]["histogram"]["buckets"][0]["key"] = json!(500.5)),
        ),
        (
            "type version not a number",
            Box::new(|v| v["aggregations"]["types"]["buckets"][0]["key"]["version"] = json!("one")),
        ),
        (
            "label key not a string",
            Box::new(|v| v["aggregations"]["labels"]["buckets"][0]["key"] = json!(3)),
        ),
        (
            "doc_count not a number",
            Box::new(|v| v["aggregations"]["labels"]["buckets"][0]["doc_count"] = json!("2")),
        ),
        (
            "failed shard",
            Box::new(|v| v["_shards"]["failed"] = json!(1)),
        ),
        ("timed out", Box::new(|v| v["timed_out"] = json!(true))),
    ];
    for (name, change) in cases {
        let body = changed(change);
        let stub = Stub::start(Box::new(move |_, _| (200, body.clone()))).await;
        let err = stub
            .index()
            .aggregate(&agg_query(all_spec(3)))
            .await
            .expect_err(name);
        assert!(matches!(err, IndexError::Unavailable(_)), "{name}: {err:?}");
    }
    let stub = Stub::start(Box::new(|_, _| (200, b"{not json".to_vec()))).await;
    let err = stub.index().aggregate(&agg_query(all_spec(3))).await;
    assert!(matches!(err, Err(IndexError::Unavailable(_))), "{err:?}");
}

#[tokio::test]
async fn failing_servers_give_errors_for_knn_and_aggregations() {
    // Always 503: retried, then Unavailable.
    let stub = Stub::start(Box::new(|_, _| {
        (503, fixture("error_503_cluster_block.json"))
    }))
    .await;
    let index = stub.index();
    let err = index.aggregate(&agg_query(all_spec(3))).await;
    assert!(matches!(err, Err(IndexError::Unavailable(_))), "{err:?}");
    let err = index.knn(&knn_query(Scope::Operation(op(1)), 5)).await;
    assert!(matches!(err, Err(IndexError::Unavailable(_))), "{err:?}");
    assert_eq!(stub.requests().len(), 8, "4 attempts each");
    // A 400 is the request's fault: Rejected, not retried.
    let stub = Stub::start(Box::new(|req, _| {
        if req.path.contains("/_mapping/field/") {
            (200, fixture("field_mapping_cosine.json"))
        } else {
            (400, fixture("error_400_illegal_argument.json"))
        }
    }))
    .await;
    let index = stub.index();
    let err = index.aggregate(&agg_query(all_spec(3))).await;
    assert!(matches!(err, Err(IndexError::Rejected(_))), "{err:?}");
    let err = index.knn(&knn_query(Scope::Operation(op(1)), 5)).await;
    assert!(matches!(err, Err(IndexError::Rejected(_))), "{err:?}");
}

#[tokio::test]
async fn malformed_knn_answers_are_errors() {
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "no op_key",
            Box::new(|v| {
                v["hits"]["hits"][0]["fields"]
                    .as_object_mut()
                    .unwrap()
                    .remove("op_key");
            }),
        ),
        (
            "no score",
            Box::new(|v| v["hits"]["hits"][0]["_score"] = Value::Null),
        ),
        (
            "score out of range",
            Box::new(|v| v["hits"]["hits"][0]["_score"] = json!(7.5)),
        ),
        (
            "id not a uuid",
            Box::new(|v| v["hits"]["hits"][1]["fields"]["id"] = json!(["x"])),
        ),
        (
            "failed shard",
            Box::new(|v| v["_shards"]["failed"] = json!(2)),
        ),
    ];
    for (name, change) in cases {
        let mut v = fixture_json("knn_hits.json");
        change(&mut v);
        let body = serde_json::to_vec(&v).unwrap();
        let stub = Stub::start(Box::new(move |req, _| {
            if req.path.contains("/_mapping/field/") {
                (200, fixture("field_mapping_cosine.json"))
            } else {
                (200, body.clone())
            }
        }))
        .await;
        let err = stub
            .index()
            .knn(&knn_query(Scope::Operation(op(1)), 5))
            .await
            .expect_err(name);
        assert!(matches!(err, IndexError::Unavailable(_)), "{name}: {err:?}");
    }
    // A mapping answer that is not one.
    let stub = Stub::start(Box::new(|_, _| (200, b"[1, 2]".to_vec()))).await;
    let err = stub
        .index()
        .knn(&knn_query(Scope::Operation(op(1)), 5))
        .await;
    assert!(matches!(err, Err(IndexError::Unavailable(_))), "{err:?}");
}

/// A confidence-ordered answer: sort values start with the rank.
#[tokio::test]
async fn confidence_ordered_hits_carry_their_rank() {
    let id = "0190a5c4-3b7e-7cc1-9a2f-4f1b6de0a111";
    let answer = json!({"timed_out": false, "_shards": {"failed": 0}, "hits": {"hits": [
        {"_id": id, "sort": [0.699999988079071, "m1", 5, id],
         "fields": {"op_key": [op_key(&op(1)) as i64]}},
        {"_id": id, "sort": [-1.0, "m2", 5, id],
         "fields": {"op_key": [op_key(&op(1)) as i64]}},
    ]}});
    let body = serde_json::to_vec(&answer).unwrap();
    let stub = Stub::start(Box::new(move |_, _| (200, body.clone()))).await;
    let hits = stub
        .index()
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: Scope::Operation(op(1)),
            order: SortOrder::Confidence,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].rank, Some(0.7), "the float's own value");
    assert_eq!(hits[1].rank, Some(-1.0));
    assert_eq!(
        hits[0].position(),
        Position {
            rank: Some(0.7),
            key: SortKey {
                media_id: "m1".into(),
                start_ms: 5,
                id: id.parse().unwrap()
            }
        }
    );
    // Time-ordered sort values in a confidence search: an error.
    let stub = Stub::start(Box::new(|_, _| (200, fixture("search_hits.json")))).await;
    let err = stub
        .index()
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: Scope::Operation(op(1)),
            order: SortOrder::Confidence,
            after: None,
            limit: 10,
        })
        .await
        .expect_err("three sort values for a ranked search");
    assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
}

/// Comparisons the index cannot make exactly are refused before anything is sent.
#[tokio::test]
async fn a_data_string_too_long_to_index_is_refused() {
    let stub = Stub::start(Box::new(|_, _| (200, fixture("search_empty.json")))).await;
    let filter = SearchFilter {
        data: Some(vec![annostore_core::query::DataCondition {
            field: "caption".into(),
            eq: Some(json!("x".repeat(body::MAX_KEYWORD_BYTES + 1))),
            ..Default::default()
        }]),
        ..SearchFilter::default()
    };
    let err = stub
        .index()
        .search(&IndexQuery {
            filter,
            scope: Scope::Operation(op(1)),
            order: SortOrder::Time,
            after: None,
            limit: 10,
        })
        .await
        .expect_err("too long");
    assert!(matches!(err, IndexError::Unanswerable(_)), "{err:?}");
    assert!(stub.requests().is_empty());
}
