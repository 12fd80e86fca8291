//! Golden tests of what the adapter sends: the index template, the `_bulk` NDJSON, a
//! search for each kind of filter and scope, `search_after`, and `_count`. Searches and
//! bulks are captured on the wire (a stub server records them), so the golden files
//! hold exactly the bytes a cluster receives. UPDATE_GOLDEN=1 rewrites the files.

mod common;

use annostore_core::index::{Existing, Index, IndexQuery, Scope};
use annostore_core::model::{BBox, SearchFilter, SortKey, TimeRange};
use annostore_core::visibility::Visibility;
use annostore_elastic::{ElasticConfig, body};
use common::{Stub, annotation, golden, op};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

#[test]
fn template_carries_the_config() {
    let config = ElasticConfig {
        index: "annos-prod".into(),
        shards: 6,
        replicas: 2,
        refresh_interval: "5s".into(),
        ..ElasticConfig::default()
    };
    let t = body::template(&config).unwrap();
    golden("template.json", &pretty(&t));
    assert_eq!(t["index_patterns"], json!(["annos-prod"]));
    let settings = &t["template"]["settings"]["index"];
    assert_eq!(settings["number_of_shards"], 6);
    assert_eq!(settings["number_of_replicas"], 2);
    assert_eq!(settings["refresh_interval"], "5s");
    // Deleted documents' versions are not remembered (garbage collection frees ids that
    // a new run may write with a lower version): body::GC_DELETES.
    assert_eq!(settings["gc_deletes"], "0s");
    // The shipped file with defaults is the template of the default config.
    let shipped: Value = serde_json::from_str(body::TEMPLATE_JSON).unwrap();
    assert_eq!(body::template(&ElasticConfig::default()).unwrap(), shipped);
    assert_eq!(config.template_name(), "annos-prod-template");
}

#[tokio::test]
async fn bulk_body_on_the_wire() {
    let stub = Stub::start(Box::new(|req, _| {
        let ids = req.bulk_ids();
        let kinds = vec!["201"; ids.len()];
        (200, common::bulk_answer(&ids, &kinds))
    }))
    .await;
    let index = stub.index();
    // An operation id whose key is above i64::MAX: stored as a negative long.
    let high = Uuid::from_u64_pair(0x0190_a5c4_0000_7000, 0xa000_0000_0000_0001);
    let mut full = annotation(1, high, "media-1", 1_000);
    full.label = Some("cat".into());
    full.confidence = Some(0.1);
    full.bbox = Some(BBox {
        x: 0.25,
        y: 0.5,
        w: 0.125,
        h: 0.1,
    });
    full.embedding = Some(vec![0.5, -1.0, 0.0, 3.25]);
    full.data = Some(json!({"shot": {"kind": "close-up", "n": 3}, "tags": ["a", "b"]}));
    let plain = annotation(2, op(7), "media-2", -5);
    index
        .upsert(&[full.clone(), plain.clone()], Existing::Unknown)
        .await
        .unwrap();
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/annostore-annotations/_bulk");
    assert!(r.query.contains("refresh=wait_for"), "{}", r.query);
    let body = String::from_utf8(r.body.clone()).unwrap();
    golden("bulk.ndjson", &body);
    assert_eq!(r.body, body::bulk(&[full.clone(), plain], None).unwrap());
    // The key's bit pattern, as i64.
    let doc: Value = serde_json::from_str(body.lines().nth(1).unwrap()).unwrap();
    assert_eq!(doc["op_key"], json!(0xa000_0000_0000_0001u64 as i64));
    assert!(doc["op_key"].as_i64().unwrap() < 0);
    assert_eq!(doc["embedding_4"], json!([0.5, -1.0, 0.0, 3.25]));
    assert_eq!(doc["confidence"].to_string(), "0.1", "f32 shortest form");
}

/// One search per case, recorded on the wire; `null` where no request is sent.
#[tokio::test]
async fn search_bodies_on_the_wire() {
    let stub = Stub::start(Box::new(|_, _| (200, common::fixture("search_empty.json")))).await;
    let mut config = stub.config();
    config.scope_terms_max = 3;
    let index = annostore_elastic::ElasticIndex::connect(&config).unwrap();
    let (a, b) = (op(1), op(2));
    let high = Uuid::from_u64_pair(7, u64::MAX);
    let small = Scope::Visible(Arc::new(Visibility::from_active([a, b, high])));
    let large = Scope::Visible(Arc::new(Visibility::from_active([a, b, high, op(3)])));
    let f = SearchFilter::default;
    let after = SortKey {
        media_id: "m\"1".into(),
        start_ms: -20,
        id: Uuid::from_u64_pair(1, 2),
    };
    let cases: Vec<(&str, SearchFilter, Scope, Option<SortKey>, usize)> = vec![
        (
            "no filter, one operation",
            f(),
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "media_id",
            SearchFilter {
                media_id: Some("m1".into()),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "annotation_type and version",
            SearchFilter {
                annotation_type: Some("shot".into()),
                annotation_type_version: Some(2),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "pivot_id",
            SearchFilter {
                pivot_id: Some("p".into()),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "label",
            SearchFilter {
                label: Some("cat".into()),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "time_range",
            SearchFilter {
                time_range: Some(TimeRange::new(-100, 250)),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "time_range at the i64 ends",
            SearchFilter {
                time_range: Some(TimeRange::new(i64::MIN, i64::MAX)),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "min_confidence",
            SearchFilter {
                min_confidence: Some(0.7),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "operation_id filter in a visible scope",
            SearchFilter {
                operation_id: Some(b),
                ..f()
            },
            small.clone(),
            None,
            50,
        ),
        (
            "operation_id filter not in scope",
            SearchFilter {
                operation_id: Some(op(9)),
                ..f()
            },
            small.clone(),
            None,
            50,
        ),
        (
            "operation_id filter equal to the scope",
            SearchFilter {
                operation_id: Some(a),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "operation_id filter other than the scope",
            SearchFilter {
                operation_id: Some(b),
                ..f()
            },
            Scope::Operation(a),
            None,
            50,
        ),
        (
            "small snapshot: terms on op_key",
            f(),
            small.clone(),
            None,
            50,
        ),
        (
            "large snapshot: checked on the hits",
            f(),
            large.clone(),
            None,
            50,
        ),
        (
            "empty snapshot",
            f(),
            Scope::Visible(Arc::new(Visibility::default())),
            None,
            50,
        ),
        ("search_after", f(), small.clone(), Some(after.clone()), 20),
        (
            "every filter at once, after a cursor",
            SearchFilter {
                media_id: Some("m1".into()),
                annotation_type: Some("shot".into()),
                annotation_type_version: Some(1),
                pivot_id: Some("p".into()),
                label: Some("cat".into()),
                time_range: Some(TimeRange::new(0, 100)),
                min_confidence: Some(0.25),
                operation_id: None,
                ..f()
            },
            small.clone(),
            Some(after.clone()),
            10,
        ),
        ("limit 0", f(), small.clone(), None, 0),
    ];
    let mut out = serde_json::Map::new();
    for (name, filter, scope, after, limit) in cases {
        let before = stub.requests().len();
        let hits = index
            .search(&IndexQuery {
                filter,
                scope,
                order: annostore_core::query::SortOrder::Time,
                after: after.map(annostore_core::index::Position::time),
                limit,
            })
            .await
            .unwrap();
        assert!(hits.is_empty());
        let reqs = stub.requests();
        let sent = match reqs.len() - before {
            0 => Value::Null,
            1 => {
                let r = &reqs[before];
                assert_eq!(r.method, "POST", "{name}");
                assert_eq!(r.path, "/annostore-annotations/_search", "{name}");
                assert!(
                    r.query.contains("allow_partial_search_results=false"),
                    "{name}: {}",
                    r.query
                );
                r.json()
            }
            n => panic!("{name}: {n} requests"),
        };
        out.insert(name.into(), sent);
    }
    let out = Value::Object(out);
    golden("search.json", &pretty(&out));
    // Spot checks that do not depend on the golden file.
    assert!(out["empty snapshot"].is_null());
    assert!(out["operation_id filter not in scope"].is_null());
    assert!(out["operation_id filter other than the scope"].is_null());
    assert!(out["limit 0"].is_null());
    let terms =
        &out["small snapshot: terms on op_key"]["query"]["bool"]["filter"][0]["terms"]["op_key"];
    let mut expected: Vec<i64> = [a, b, high].iter().map(body::stored_op_key).collect();
    expected.sort_unstable();
    assert_eq!(terms, &json!(expected));
    assert_eq!(
        out["large snapshot: checked on the hits"]["query"],
        json!({"match_all": {}})
    );
    assert_eq!(out["large snapshot: checked on the hits"]["size"], 100);
    assert_eq!(
        out["search_after"]["search_after"],
        json!(["m\"1", -20, "00000000-0000-0001-0000-000000000002"])
    );
    assert_eq!(
        out["min_confidence"]["query"]["bool"]["filter"][0]["range"]["confidence"]["gte"]
            .to_string(),
        "0.7"
    );
}

#[tokio::test]
async fn count_body_on_the_wire() {
    let stub = Stub::start(Box::new(|_, _| (200, common::fixture("count.json")))).await;
    let index = stub.index();
    let n = index.count_operation(op(5)).await.unwrap();
    assert_eq!(n, 25);
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/annostore-annotations/_count");
    golden("count.json", &pretty(&reqs[0].json()));
}

/// A field-mapping answer: `embedding_<dims>` a cosine dense_vector (or missing).
fn vector_mapping(field: Option<&str>, similarity: &str) -> Vec<u8> {
    let mappings = match field {
        Some(f) => json!({f: {"full_name": f, "mapping": {f: {
            "type": "dense_vector", "dims": 4, "index": true, "similarity": similarity,
        }}}}),
        None => json!({}),
    };
    serde_json::to_vec(&json!({"annostore-annotations": {"mappings": mappings}})).unwrap()
}

/// The search language's filters, alone and together, and the confidence order with
/// its cursor: one request each, recorded on the wire.
#[tokio::test]
async fn search_language_bodies_on_the_wire() {
    use annostore_core::index::Position;
    use annostore_core::query::{
        DataCondition, Region, SortOrder, SpaceRelation, TextQuery, TimeRelation,
    };
    let stub = Stub::start(Box::new(|_, _| (200, common::fixture("search_empty.json")))).await;
    let index = stub.index();
    let f = SearchFilter::default;
    let range = |s, e, relation| TimeRange {
        start_ms: s,
        end_ms: e,
        relation,
    };
    let region = |relation| Region {
        x: 0.1,
        y: 0.2,
        w: 0.5,
        h: 0.25,
        relation,
    };
    let text = |q: &str, fuzzy, fields: &[&str]| TextQuery {
        query: q.into(),
        fuzzy,
        fields: fields.iter().map(|s| s.to_string()).collect(),
    };
    let cond = |field: &str| DataCondition {
        field: field.into(),
        ..DataCondition::default()
    };
    let key = SortKey {
        media_id: "m1".into(),
        start_ms: 40,
        id: Uuid::from_u64_pair(1, 2),
    };
    let cases: Vec<(&str, SearchFilter, SortOrder, Option<Position>)> = vec![
        (
            "lists: media_ids, annotation_types, labels",
            SearchFilter {
                media_ids: Some(vec!["m1".into(), "m2".into()]),
                annotation_types: Some(vec!["shot".into()]),
                labels: Some(vec!["cat".into(), "dog".into()]),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "an empty list matches nothing",
            SearchFilter {
                labels: Some(vec![]),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "time within",
            SearchFilter {
                time_range: Some(range(100, 200, TimeRelation::Within)),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "time contains",
            SearchFilter {
                time_range: Some(range(100, 200, TimeRelation::Contains)),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "confidence between",
            SearchFilter {
                min_confidence: Some(0.1),
                max_confidence: Some(0.9),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "region intersects",
            SearchFilter {
                region: Some(region(SpaceRelation::Intersects)),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "region within",
            SearchFilter {
                region: Some(region(SpaceRelation::Within)),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "text fuzzy over label and a data field",
            SearchFilter {
                text: Some(text(
                    "Red curtian, ab",
                    true,
                    &["label", "data.caption", "data.a.b"],
                )),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "text exact",
            SearchFilter {
                text: Some(text("red car", false, &["label"])),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "text without tokens matches nothing",
            SearchFilter {
                text: Some(text("--", true, &["label"])),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        (
            "data conditions",
            SearchFilter {
                data: Some(vec![
                    DataCondition {
                        eq: Some(json!("close-up")),
                        ..cond("kind")
                    },
                    DataCondition {
                        eq: Some(json!(3)),
                        ..cond("n")
                    },
                    DataCondition {
                        eq: Some(json!(true)),
                        ..cond("ok")
                    },
                    DataCondition {
                        gt: Some(-0.0),
                        lte: Some(2.5),
                        ..cond("speed")
                    },
                    cond("present"),
                    DataCondition {
                        eq: Some(json!(null)),
                        ..cond("null eq")
                    },
                ]),
                ..f()
            },
            SortOrder::Time,
            None,
        ),
        ("confidence order", f(), SortOrder::Confidence, None),
        (
            "confidence order after a cursor",
            f(),
            SortOrder::Confidence,
            Some(Position {
                rank: Some(0.7),
                key: key.clone(),
            }),
        ),
        (
            "confidence order after one without confidence",
            f(),
            SortOrder::Confidence,
            Some(Position {
                rank: None,
                key: key.clone(),
            }),
        ),
        (
            "every new filter at once, confidence order",
            SearchFilter {
                media_ids: Some(vec!["m1".into()]),
                labels: Some(vec!["cat".into()]),
                time_range: Some(range(0, 1_000, TimeRelation::Intersects)),
                max_confidence: Some(0.5),
                region: Some(region(SpaceRelation::Within)),
                text: Some(text("cat", true, &["label"])),
                data: Some(vec![DataCondition {
                    gte: Some(1.0),
                    ..cond("n")
                }]),
                ..f()
            },
            SortOrder::Confidence,
            Some(Position {
                rank: Some(0.25),
                key,
            }),
        ),
    ];
    let mut out = serde_json::Map::new();
    for (name, filter, order, after) in cases {
        let before = stub.requests().len();
        let hits = index
            .search(&IndexQuery {
                filter,
                scope: Scope::Operation(op(1)),
                order,
                after,
                limit: 10,
            })
            .await
            .unwrap();
        assert!(hits.is_empty());
        let reqs = stub.requests();
        assert_eq!(reqs.len(), before + 1, "{name}");
        out.insert(name.into(), reqs[before].json());
    }
    let out = Value::Object(out);
    golden("search_language.json", &pretty(&out));
    // Spot checks that do not depend on the golden file.
    let filters = |name: &str| out[name]["query"]["bool"]["filter"].clone();
    assert_eq!(
        filters("an empty list matches nothing")[0],
        json!({"match_none": {}})
    );
    let fuzzy = &filters("text fuzzy over label and a data field")[0]["bool"]["must"];
    assert_eq!(fuzzy.as_array().unwrap().len(), 3, "red, curtian, ab");
    let should = &fuzzy[1]["bool"]["should"];
    assert_eq!(
        should[0]["match"]["label.text"]["query"], "curtian",
        "{should}"
    );
    assert_eq!(should[0]["match"]["label.text"]["fuzziness"], "AUTO");
    assert!(should[1]["match"].get("data_text.caption").is_some());
    assert!(
        should[2]["match"].get("data_text.%a%2Eb").is_some(),
        "dots escaped: {should}"
    );
    assert_eq!(
        out["confidence order after a cursor"]["search_after"],
        json!([0.7, "m1", 40, "00000000-0000-0001-0000-000000000002"])
    );
    assert_eq!(
        out["confidence order after one without confidence"]["search_after"][0],
        json!(-1.0)
    );
    assert_eq!(
        out["confidence order"]["sort"][0],
        json!({"rank_confidence": {"order": "desc", "missing": -1.0}})
    );
    // The score order is kNN's.
    let err = index
        .search(&IndexQuery {
            filter: f(),
            scope: Scope::Operation(op(1)),
            order: SortOrder::Score,
            after: None,
            limit: 10,
        })
        .await
        .expect_err("score order without knn");
    assert!(matches!(
        err,
        annostore_core::index::IndexError::Unanswerable(_)
    ));
}

/// kNN bodies: the field-mapping check, then the knn search with its filter; a large
/// snapshot sends no scope clause and asks for more.
#[tokio::test]
async fn knn_bodies_on_the_wire() {
    use annostore_core::index::KnnQuery;
    let stub = Stub::start(Box::new(|req, _| {
        if req.path.contains("/_mapping/field/") {
            (200, vector_mapping(Some("embedding_4"), "cosine"))
        } else {
            (200, common::fixture("search_empty.json"))
        }
    }))
    .await;
    let mut config = stub.config();
    config.scope_terms_max = 2;
    let index = annostore_elastic::ElasticIndex::connect(&config).unwrap();
    let filter = SearchFilter {
        annotation_type: Some("shot".into()),
        labels: Some(vec!["cat".into()]),
        ..SearchFilter::default()
    };
    let vector = vec![0.5, -1.0, 0.0, 3.25];
    let small = Scope::Visible(Arc::new(Visibility::from_active([op(1), op(2)])));
    let large = Scope::Visible(Arc::new(Visibility::from_active([op(1), op(2), op(3)])));
    let cases: Vec<(&str, SearchFilter, Scope, usize)> = vec![
        (
            "filtered, one operation",
            filter.clone(),
            Scope::Operation(op(1)),
            10,
        ),
        (
            "no filter, small snapshot",
            SearchFilter::default(),
            small,
            3,
        ),
        ("large snapshot: checked on the hits", filter, large, 10),
    ];
    let mut out = serde_json::Map::new();
    for (name, filter, scope, k) in cases {
        let before = stub.requests().len();
        let hits = index
            .knn(&KnnQuery {
                filter,
                scope,
                vector: vector.clone(),
                k,
            })
            .await
            .unwrap();
        assert!(hits.is_empty());
        let reqs = stub.requests();
        assert_eq!(reqs.len(), before + 2, "{name}: mapping, then knn");
        assert_eq!(
            reqs[before].path,
            "/annostore-annotations/_mapping/field/embedding_4"
        );
        let r = &reqs[before + 1];
        assert_eq!(r.path, "/annostore-annotations/_search", "{name}");
        assert!(r.query.contains("allow_partial_search_results=false"));
        out.insert(name.into(), r.json());
    }
    let out = Value::Object(out);
    golden("knn.json", &pretty(&out));
    let one = &out["filtered, one operation"];
    assert_eq!(one["size"], 10);
    assert_eq!(one["knn"]["field"], "embedding_4");
    assert_eq!(one["knn"]["k"], 10);
    assert_eq!(one["knn"]["num_candidates"], 100);
    assert_eq!(one["knn"]["query_vector"], json!([0.5, -1.0, 0.0, 3.25]));
    let large = &out["large snapshot: checked on the hits"];
    assert_eq!(large["knn"]["k"], 100, "asks for more than k");
    assert_eq!(large["knn"]["num_candidates"], 1_000);
    assert_eq!(body::num_candidates(5_000), 10_000, "capped");
    assert_eq!(body::num_candidates(10_000), 10_000);
}

/// The aggregation body: every aggregation at once, and each alone.
#[tokio::test]
async fn aggregate_bodies_on_the_wire() {
    use annostore_core::index::AggregateQuery;
    use annostore_core::query::{AggregateSpec, HistogramSpec};
    let stub = Stub::start(Box::new(|_, _| {
        (200, common::fixture("aggregate_answer.json"))
    }))
    .await;
    let index = stub.index();
    let filter = SearchFilter {
        media_id: Some("m1".into()),
        ..SearchFilter::default()
    };
    let small = Scope::Visible(Arc::new(Visibility::from_active([op(1), op(2)])));
    let hist = |by_label| {
        Some(HistogramSpec {
            interval_ms: 1_000,
            by_label,
        })
    };
    let cases: Vec<(&str, AggregateSpec)> = vec![
        (
            "all",
            AggregateSpec {
                labels: Some(3),
                types: true,
                histogram: hist(true),
            },
        ),
        (
            "labels",
            AggregateSpec {
                labels: Some(3),
                ..AggregateSpec::default()
            },
        ),
        (
            "types",
            AggregateSpec {
                types: true,
                ..AggregateSpec::default()
            },
        ),
        (
            "histogram",
            AggregateSpec {
                histogram: hist(false),
                ..AggregateSpec::default()
            },
        ),
    ];
    let mut out = serde_json::Map::new();
    for (name, spec) in cases {
        let before = stub.requests().len();
        index
            .aggregate(&AggregateQuery {
                filter: filter.clone(),
                scope: small.clone(),
                spec,
            })
            .await
            .unwrap();
        let reqs = stub.requests();
        assert_eq!(reqs.len(), before + 1, "{name}");
        assert_eq!(reqs[before].path, "/annostore-annotations/_search");
        out.insert(name.into(), reqs[before].json());
    }
    let out = Value::Object(out);
    golden("aggregate.json", &pretty(&out));
    let all = &out["all"];
    assert_eq!(all["size"], 0);
    assert_eq!(all["track_total_hits"], true);
    assert_eq!(all["aggs"]["histogram"]["histogram"]["field"], "time");
    assert_eq!(all["aggs"]["histogram"]["histogram"]["min_doc_count"], 1);
    assert!(all["aggs"]["histogram"]["aggs"]["labels"]["terms"].is_object());
    assert!(out["histogram"]["aggs"]["histogram"].get("aggs").is_none());
    assert!(out["labels"]["aggs"].get("types").is_none());
}

/// A document with every kind of `data` field, a box and a zero embedding: the typed
/// copies, escaped names, -0.0, a value too long for a keyword, no vector.
#[test]
fn document_with_data_fields() {
    let mut a = annotation(3, op(1), "m1", 0);
    a.confidence = Some(0.5);
    a.bbox = Some(BBox {
        x: 0.1,
        y: 0.2,
        w: 0.3,
        h: 0.4,
    });
    a.embedding = Some(vec![0.0; 3]);
    a.data = Some(json!({
        "caption": "A red car, parked",
        "n": 3,
        "speed": -0.0,
        "ok": false,
        "a.b": "dotted",
        "": "empty name",
        "ünï": 1.5,
        "nothing": null,
        "nested": {"x": 1},
        "long": "y".repeat(body::MAX_KEYWORD_BYTES + 1),
    }));
    // The document line as sent (f32 values in their shortest form).
    let lines = body::bulk_lines(&a, None).unwrap();
    let text = String::from_utf8(lines).unwrap();
    let mut doc: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    // The long value, shortened for the golden file (its absence from data_kw is what
    // matters).
    let long = doc["data_text"]["long"].as_str().unwrap().len();
    assert_eq!(long, body::MAX_KEYWORD_BYTES + 1);
    doc["data_text"]["long"] = json!("<long>");
    doc["data"]["long"] = json!("<long>");
    golden("document.json", &pretty(&doc));
    assert!(
        doc.get("embedding_3").is_none(),
        "cosine refuses zero vectors"
    );
    assert!(doc["data_kw"].get("long").is_none());
    assert_eq!(doc["data_kw"]["%a%2Eb"], "dotted");
    assert_eq!(doc["data_kw"]["%"], "empty name");
    assert_eq!(doc["data_num"]["%%C3%BCn%C3%AF"], 1.5);
    assert_eq!(
        doc["data_num"]["speed"].to_string(),
        "0.0",
        "-0.0 written as 0.0"
    );
    assert_eq!(doc["data_bool"]["ok"], false);
    assert_eq!(doc["rank_confidence"], 0.5);
    assert_eq!(
        doc["box"]["x2"],
        json!(f64::from(0.1f32) + f64::from(0.3f32))
    );
    let keys = doc["data_keys"].as_array().unwrap();
    assert!(keys.contains(&json!("nothing")) && keys.contains(&json!("nested")));
}
