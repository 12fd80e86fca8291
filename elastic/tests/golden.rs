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
