//! The index conformance suite against a *model* of Elasticsearch: a stub server that
//! evaluates the query language subset the adapter sends (`match_all`, `match_none`,
//! `bool` with `filter`/`must`/`should` of `term`/`terms`/`range`/fuzzy `match` (text
//! fields tokenised by `core::query::tokens`), the time and confidence sorts,
//! `search_after`, `size`, `docvalue_fields`; exact kNN by cosine with its filter; the
//! labels/types/histogram aggregations; get field mapping) over the documents it received by `_bulk`. It checks the adapter's
//! own logic (dedupe, chunking, paging, scope plans, page filling, parsing) with the
//! real suite, in CI, without a server. It is no evidence about Elasticsearch itself:
//! the model's semantics are this file's reading of the documentation, and
//! `conformance.rs` against a real server is the test that counts.

mod common;

use annostore_core::index::Index;
use annostore_core::query::SortOrder;
use annostore_core::testkit::index as suite;
use annostore_elastic::{ElasticIndex, body};
use common::{Recorded, Stub};
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type Docs = Arc<Mutex<BTreeMap<String, Value>>>;

/// A keyword's indexed term: strings as they are, numbers as their decimal text.
fn term_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A field's values in a document: `a.b` is `doc[a][b]` (the adapter's paths have one
/// dot at most: `box.x1`, `data_kw.<escaped>`); arrays are many values.
fn values<'a>(doc: &'a Value, field: &str) -> Vec<&'a Value> {
    let v = match doc.get(field) {
        Some(v) => Some(v),
        None => field
            .split_once('.')
            .and_then(|(a, b)| doc.get(a).and_then(|o| o.get(b))),
    };
    match v {
        Some(Value::Array(xs)) => xs.iter().collect(),
        Some(v) => vec![v],
        None => vec![],
    }
}

/// The tokens of a text field (`label.text`, `data_text.<f>`), as the analyzer makes
/// them (modelled by `core::query::tokens`).
fn text_tokens(doc: &Value, field: &str) -> Vec<String> {
    let source = if field == "label.text" {
        "label"
    } else {
        field
    };
    values(doc, source)
        .iter()
        .filter_map(|v| v.as_str())
        .flat_map(annostore_core::query::tokens)
        .collect()
}

fn is_text(field: &str) -> bool {
    field == "label.text" || field.starts_with("data_text.")
}

fn matches(q: &Value, doc: &Value) -> bool {
    let (kind, body) = q
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("a query is a one-key object");
    let all = |key: &str| {
        body.get(key)
            .and_then(Value::as_array)
            .is_none_or(|cs| cs.iter().all(|c| matches(c, doc)))
    };
    match kind.as_str() {
        "match_all" => true,
        "match_none" => false,
        "bool" => {
            all("filter")
                && all("must")
                && body
                    .get("should")
                    .and_then(Value::as_array)
                    .is_none_or(|cs| cs.iter().any(|c| matches(c, doc)))
        }
        "term" => {
            let (field, value) = body.as_object().unwrap().iter().next().unwrap();
            if is_text(field) {
                let t = value.as_str().unwrap();
                return text_tokens(doc, field).iter().any(|x| x == t);
            }
            values(doc, field)
                .iter()
                .any(|v| term_text(v).is_some() && term_text(v) == term_text(value))
        }
        "terms" => {
            let (field, wanted) = body.as_object().unwrap().iter().next().unwrap();
            values(doc, field).iter().any(|v| {
                wanted
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|w| term_text(v).is_some() && term_text(v) == term_text(w))
            })
        }
        "match" => {
            let (field, m) = body.as_object().unwrap().iter().next().unwrap();
            assert!(is_text(field), "match on {field}");
            assert_eq!(m["fuzziness"], "AUTO");
            let q = m["query"].as_str().unwrap();
            text_tokens(doc, field)
                .iter()
                .any(|t| annostore_core::query::token_matches(q, t, true))
        }
        "range" => {
            let (field, bounds) = body.as_object().unwrap().iter().next().unwrap();
            let xs = values(doc, field);
            let Some(x) = xs.first() else {
                return false;
            };
            bounds.as_object().unwrap().iter().all(|(op, bound)| {
                let ord = if field == "confidence" {
                    // A float field: the bound is rounded to float, as Elasticsearch does.
                    let (a, b) = (x.as_f64().unwrap() as f32, bound.as_f64().unwrap() as f32);
                    a.partial_cmp(&b).unwrap()
                } else if let (Some(a), Some(b)) = (x.as_i64(), bound.as_i64()) {
                    a.cmp(&b)
                } else {
                    x.as_f64().unwrap().total_cmp(&bound.as_f64().unwrap())
                };
                match op.as_str() {
                    "gte" => ord != Ordering::Less,
                    "gt" => ord == Ordering::Greater,
                    "lte" => ord != Ordering::Greater,
                    "lt" => ord == Ordering::Less,
                    other => panic!("range op {other} not modelled"),
                }
            })
        }
        other => panic!("query {other} not modelled"),
    }
}

fn sort_key(doc: &Value) -> (String, i64, String) {
    (
        doc["media_id"].as_str().unwrap().to_owned(),
        doc["start_ms"].as_i64().unwrap(),
        doc["id"].as_str().unwrap().to_owned(),
    )
}

/// A kNN search, exactly (brute force): cosine over the documents the filter matches,
/// scored `(1 + cos) / 2`, highest first, `k` of them.
fn knn(docs: &BTreeMap<String, Value>, q: &Value) -> Value {
    let knn = &q["knn"];
    let field = knn["field"].as_str().unwrap();
    let vector: Vec<f32> = serde_json::from_value(knn["query_vector"].clone()).unwrap();
    let k = knn["k"].as_u64().unwrap() as usize;
    assert!(knn["num_candidates"].as_u64().unwrap() as usize >= k);
    assert_eq!(q["size"].as_u64().unwrap() as usize, k);
    let all = json!({"match_all": {}});
    let filter = knn.get("filter").unwrap_or(&all);
    let mut scored: Vec<(f64, &Value)> = docs
        .values()
        .filter(|d| matches(filter, d))
        .filter_map(|d| {
            let e: Vec<f32> = serde_json::from_value(d.get(field)?.clone()).ok()?;
            Some((
                (1.0 + f64::from(annostore_core::query::cosine(&vector, &e))) / 2.0,
                d,
            ))
        })
        .collect();
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| sort_key(a.1).cmp(&sort_key(b.1)))
    });
    let hits: Vec<Value> = scored
        .into_iter()
        .take(k)
        .map(|(score, d)| {
            json!({"_id": d["id"], "_score": score, "fields": {
                "media_id": [d["media_id"]], "start_ms": [d["start_ms"]], "id": [d["id"]],
                "op_key": [d["op_key"]],
            }})
        })
        .collect();
    json!({"timed_out": false, "_shards": {"failed": 0}, "hits": {"hits": hits}})
}

/// Label `terms` over some documents: every label, count desc then key asc.
fn label_terms(docs: &[&Value], size: usize) -> Value {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for d in docs {
        if let Some(l) = d.get("label").and_then(Value::as_str) {
            *counts.entry(l.to_owned()).or_default() += 1;
        }
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let other: u64 = v.iter().skip(size).map(|x| x.1).sum();
    let buckets: Vec<Value> = v
        .into_iter()
        .take(size)
        .map(|(k, n)| json!({"key": k, "doc_count": n}))
        .collect();
    json!({"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": buckets})
}

/// An aggregation search: the total and the `labels`, `types` and `histogram`
/// aggregations the adapter sends, computed from the documents.
fn aggregate(docs: &BTreeMap<String, Value>, q: &Value) -> Value {
    assert_eq!(q["size"], 0);
    assert_eq!(q["track_total_hits"], true);
    let matched: Vec<&Value> = docs.values().filter(|d| matches(&q["query"], d)).collect();
    let mut aggs = serde_json::Map::new();
    let asked = q
        .get("aggs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (name, spec) in asked {
        let answer = match name.as_str() {
            "labels" => label_terms(&matched, spec["terms"]["size"].as_u64().unwrap() as usize),
            "types" => {
                let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
                for d in &matched {
                    let t = d["annotation_type"].as_str().unwrap().to_owned();
                    let v = d["annotation_type_version"].to_string();
                    *counts.entry((t, v)).or_default() += 1;
                }
                let buckets: Vec<Value> = counts
                    .into_iter()
                    .map(|((t, v), n)| json!({"key": {"type": t, "version": v}, "doc_count": n}))
                    .collect();
                json!({"buckets": buckets})
            }
            "histogram" => {
                let h = &spec["histogram"];
                assert_eq!(h["field"], "time");
                let interval = h["interval"].as_i64().unwrap();
                let mut buckets: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
                for d in &matched {
                    let (lo, hi) = (
                        d["time"]["gte"].as_i64().unwrap(),
                        d["time"]["lte"].as_i64().unwrap(),
                    );
                    for b in lo.div_euclid(interval)..=hi.div_euclid(interval) {
                        buckets.entry(b).or_default().push(d);
                    }
                }
                let by_label = spec.get("aggs").is_some();
                let buckets: Vec<Value> = buckets
                    .into_iter()
                    .map(|(b, ds)| {
                        let mut v = json!({"key": (b * interval) as f64, "doc_count": ds.len()});
                        if by_label {
                            v["labels"] = label_terms(&ds, 10_000);
                        }
                        v
                    })
                    .collect();
                json!({"buckets": buckets})
            }
            other => panic!("aggregation {other} not modelled"),
        };
        aggs.insert(name, answer);
    }
    json!({"timed_out": false, "_shards": {"failed": 0},
        "hits": {"total": {"value": matched.len(), "relation": "eq"}, "hits": []},
        "aggregations": aggs})
}

fn answer(docs: &Docs, req: &Recorded) -> (u16, Vec<u8>) {
    let mut docs = docs.lock().unwrap();
    let endpoint = req.path.rsplit('/').next().unwrap_or("");
    if req.path.contains("/_mapping/field/") {
        // A field exists once a document has it; the template makes it cosine.
        let mappings = if docs.values().any(|d| d.get(endpoint).is_some()) {
            json!({endpoint: {"full_name": endpoint, "mapping": {endpoint: {
                "type": "dense_vector", "similarity": "cosine"}}}})
        } else {
            json!({})
        };
        let reply = json!({"annostore-annotations": {"mappings": mappings}});
        return (200, serde_json::to_vec(&reply).unwrap());
    }
    if endpoint == "_search" {
        let q = req.json();
        if q.get("knn").is_some() {
            return (200, serde_json::to_vec(&knn(&docs, &q)).unwrap());
        }
        if q.get("aggs").is_some() || q["size"] == 0 {
            return (200, serde_json::to_vec(&aggregate(&docs, &q)).unwrap());
        }
    }
    let reply = match endpoint {
        "_bulk" => {
            let text = std::str::from_utf8(&req.body).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let mut items = Vec::new();
            for pair in lines.chunks(2) {
                let action: Value = serde_json::from_str(pair[0]).unwrap();
                let doc: Value = serde_json::from_str(pair[1]).unwrap();
                let id = action["index"]["_id"].as_str().unwrap().to_owned();
                assert_eq!(doc["id"], json!(id), "_id and id agree");
                docs.insert(id.clone(), doc);
                items.push(json!({"index": {"_id": id, "status": 201}}));
            }
            json!({"errors": false, "items": items})
        }
        "_search" => {
            let q = req.json();
            let ranked = q["sort"] == body::sort_for(SortOrder::Confidence).unwrap();
            assert!(ranked || q["sort"] == body::sort(), "sort {}", q["sort"]);
            assert_eq!(q["docvalue_fields"], json!(["op_key"]));
            let size = q["size"].as_u64().unwrap() as usize;
            // Positions as (rank, key): rank descending (f32, as the float field), then
            // the key ascending; time order has no rank.
            let rank = |d: &Value| ranked.then(|| d["rank_confidence"].as_f64().unwrap() as f32);
            let position = |d: &Value| (rank(d), sort_key(d));
            let cmp = |a: &(Option<f32>, (String, i64, String)),
                       b: &(Option<f32>, (String, i64, String))| {
                let by_rank = match (a.0, b.0) {
                    (Some(x), Some(y)) => y.total_cmp(&x),
                    _ => Ordering::Equal,
                };
                by_rank.then_with(|| a.1.cmp(&b.1))
            };
            let after = q.get("search_after").map(|a| {
                let a = a.as_array().unwrap();
                let (r, k) = if ranked {
                    (Some(a[0].as_f64().unwrap() as f32), &a[1..])
                } else {
                    (None, &a[..])
                };
                (
                    r,
                    (
                        k[0].as_str().unwrap().to_owned(),
                        k[1].as_i64().unwrap(),
                        k[2].as_str().unwrap().to_owned(),
                    ),
                )
            });
            let mut hits: Vec<&Value> = docs.values().filter(|d| matches(&q["query"], d)).collect();
            hits.sort_by(|a, b| cmp(&position(a), &position(b)));
            let hits: Vec<Value> = hits
                .into_iter()
                .filter(|d| {
                    after
                        .as_ref()
                        .is_none_or(|a| cmp(&position(d), a) == Ordering::Greater)
                })
                .take(size)
                .map(|d| {
                    let (m, s, id) = sort_key(d);
                    let mut sort = vec![json!(m), json!(s), json!(id)];
                    if ranked {
                        // As Elasticsearch shows a float: widened to double.
                        sort.insert(0, json!(f64::from(rank(d).unwrap())));
                    }
                    json!({"_id": id, "sort": sort, "fields": {"op_key": [d["op_key"]]}})
                })
                .collect();
            json!({"timed_out": false, "_shards": {"failed": 0}, "hits": {"hits": hits}})
        }
        "_count" => {
            let q = req.json();
            let n = docs.values().filter(|d| matches(&q["query"], d)).count();
            json!({"count": n, "_shards": {"failed": 0}})
        }
        "_refresh" => json!({"_shards": {"failed": 0}}),
        other => panic!("endpoint {other} not modelled"),
    };
    (200, serde_json::to_vec(&reply).unwrap())
}

async fn run_suite(scope_terms_max: usize, bulk_max_docs: usize) {
    let docs: Docs = Arc::default();
    let served = docs.clone();
    let stub = Stub::start(Box::new(move |req, _| answer(&served, req))).await;
    let mut config = stub.config();
    config.scope_terms_max = scope_terms_max;
    config.bulk_max_docs = bulk_max_docs;
    let index: Arc<dyn Index> = Arc::new(ElasticIndex::connect(&config).unwrap());
    suite::run_all(index).await;
    assert!(!docs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn suite_passes_on_the_model_with_snapshots_checked_on_hits() {
    run_suite(0, 7).await;
}

#[tokio::test]
async fn suite_passes_on_the_model_with_snapshots_as_terms() {
    run_suite(1_024, 1_000).await;
}

/// The search language through the adapter, against `core::query::matches` by brute
/// force (on this file's model of Elasticsearch): every new filter alone and some
/// together, in time and confidence order, paged, with checked and exact scopes. It
/// checks that the clauses say what `matches` says (relations, corners, data kinds,
/// text), under the model's reading of the query DSL.
#[tokio::test]
async fn search_language_matches_the_brute_force_on_the_model() {
    use annostore_core::index::{IndexQuery, Position, Scope};
    use annostore_core::model::{Annotation, BBox, SearchFilter, SortKey};
    use annostore_core::query::{
        self, DataCondition, Region, SpaceRelation, TextQuery, TimeRange, TimeRelation,
    };
    use annostore_core::visibility::Visibility;
    use uuid::Uuid;

    let docs: Docs = Arc::default();
    let served = docs.clone();
    let stub = Stub::start(Box::new(move |req, _| answer(&served, req))).await;
    let (op1, op2) = (Uuid::new_v4(), Uuid::new_v4());
    let labels = ["red car", "curtain", "cat", "Cats and dogs", "ünï"];
    let all: Vec<Annotation> = (0..60i64)
        .map(|i| {
            let mut a = suite::annotation(
                if i % 3 == 0 { op2 } else { op1 },
                "m",
                i * 7,
                i * 7 + i % 5 * 9,
            );
            a.media_id = format!("m{}", i % 4);
            a.label = (i % 6 != 5).then(|| labels[i as usize % labels.len()].to_owned());
            a.confidence = (i % 7 != 0).then(|| (i % 10) as f32 / 10.0);
            // Quarters: exact in f32 and f64, so edges touch exactly.
            a.bbox = (i % 7 != 3).then(|| BBox {
                x: (i % 4) as f32 / 4.0,
                y: (i % 3) as f32 / 4.0,
                w: 0.25 * (1 + i % 3) as f32,
                h: 0.25,
            });
            a.data = Some(match i % 4 {
                0 => json!({"kind": "close-up", "n": i, "ok": true, "caption": "a curtian call"}),
                1 => json!({"kind": 3, "n": -0.0, "ok": false}),
                2 => json!({"n": i as f64 / 2.0, "a.b": "dotted", "caption": null}),
                _ => json!({}),
            });
            a
        })
        .collect();
    let mut config = stub.config();
    config.bulk_max_docs = 25;
    for scope_terms_max in [0, 1_024] {
        config.scope_terms_max = scope_terms_max;
        let index = ElasticIndex::connect(&config).unwrap();
        index
            .upsert(&all, annostore_core::index::Existing::Unknown)
            .await
            .unwrap();
        let scope = Scope::Visible(Arc::new(Visibility::from_active([op1])));
        let f = SearchFilter::default;
        let cond = |field: &str| DataCondition {
            field: field.into(),
            ..DataCondition::default()
        };
        let region = |x, y, w, h, relation| Region {
            x,
            y,
            w,
            h,
            relation,
        };
        let text = |q: &str, fuzzy, fields: &[&str]| TextQuery {
            query: q.into(),
            fuzzy,
            fields: fields.iter().map(|s| s.to_string()).collect(),
        };
        let filters = vec![
            f(),
            SearchFilter {
                media_ids: Some(vec!["m1".into(), "m3".into()]),
                ..f()
            },
            SearchFilter {
                labels: Some(vec!["cat".into(), "curtain".into()]),
                ..f()
            },
            SearchFilter {
                labels: Some(vec![]),
                ..f()
            },
            SearchFilter {
                time_range: Some(TimeRange {
                    start_ms: 50,
                    end_ms: 200,
                    relation: TimeRelation::Within,
                }),
                ..f()
            },
            SearchFilter {
                time_range: Some(TimeRange {
                    start_ms: 100,
                    end_ms: 110,
                    relation: TimeRelation::Contains,
                }),
                ..f()
            },
            SearchFilter {
                min_confidence: Some(0.3),
                max_confidence: Some(0.7),
                ..f()
            },
            SearchFilter {
                region: Some(region(0.25, 0.0, 0.25, 0.5, SpaceRelation::Intersects)),
                ..f()
            },
            SearchFilter {
                region: Some(region(0.25, 0.0, 0.5, 0.75, SpaceRelation::Within)),
                ..f()
            },
            SearchFilter {
                text: Some(text("curtian", true, &["label", "data.caption"])),
                ..f()
            },
            SearchFilter {
                text: Some(text("cats DOGS", false, &["label"])),
                ..f()
            },
            SearchFilter {
                text: Some(text("cat", true, &["label"])),
                ..f()
            },
            SearchFilter {
                data: Some(vec![DataCondition {
                    eq: Some(json!("close-up")),
                    ..cond("kind")
                }]),
                ..f()
            },
            SearchFilter {
                data: Some(vec![DataCondition {
                    eq: Some(json!(3)),
                    ..cond("kind")
                }]),
                ..f()
            },
            SearchFilter {
                data: Some(vec![DataCondition {
                    eq: Some(json!(0)),
                    ..cond("n")
                }]),
                ..f()
            },
            SearchFilter {
                data: Some(vec![DataCondition {
                    gt: Some(-0.0),
                    lte: Some(20.0),
                    ..cond("n")
                }]),
                ..f()
            },
            SearchFilter {
                data: Some(vec![
                    cond("caption"),
                    DataCondition {
                        eq: Some(json!(false)),
                        ..cond("ok")
                    },
                ]),
                ..f()
            },
            SearchFilter {
                data: Some(vec![DataCondition {
                    eq: Some(json!("dotted")),
                    ..cond("a.b")
                }]),
                ..f()
            },
            SearchFilter {
                media_ids: Some(vec!["m0".into(), "m2".into()]),
                min_confidence: Some(0.1),
                region: Some(region(0.0, 0.0, 1.0, 1.0, SpaceRelation::Within)),
                data: Some(vec![cond("n")]),
                ..f()
            },
        ];
        let mut matched_some = 0;
        for filter in filters {
            for order in [query::SortOrder::Time, query::SortOrder::Confidence] {
                let mut expected: Vec<&Annotation> = all
                    .iter()
                    .filter(|a| a.operation_id == op1 && query::matches(&filter, a))
                    .collect();
                expected.sort_by(|a, b| {
                    query::compare(
                        order,
                        (query::rank_of(order, a, None), &SortKey::of(a)),
                        (query::rank_of(order, b, None), &SortKey::of(b)),
                    )
                });
                let expected: Vec<(Option<f32>, SortKey)> = expected
                    .iter()
                    .map(|a| (query::rank_of(order, a, None), SortKey::of(a)))
                    .collect();
                // Pages of 7.
                let mut got = Vec::new();
                let mut after: Option<Position> = None;
                loop {
                    let page = index
                        .search(&IndexQuery {
                            filter: filter.clone(),
                            scope: scope.clone(),
                            order,
                            after: after.clone(),
                            limit: 7,
                        })
                        .await
                        .unwrap();
                    let n = page.len();
                    after = page.last().map(|h| h.position());
                    got.extend(page.into_iter().map(|h| (h.rank, h.key)));
                    if n < 7 {
                        break;
                    }
                }
                assert_eq!(got, expected, "{order:?} {filter:?}");
                matched_some += usize::from(!expected.is_empty());
            }
        }
        assert!(
            matched_some >= 30,
            "cases that match something: {matched_some}"
        );
    }
}

/// kNN and aggregations through the adapter against the brute force of
/// `core::query` (cosine, `Aggregator`) on the model: filters, exact and checked
/// scopes, a zero embedding (left out of the index, never a neighbour).
#[tokio::test]
async fn knn_and_aggregations_match_the_brute_force_on_the_model() {
    use annostore_core::index::{AggregateQuery, IndexError, KnnQuery, Scope};
    use annostore_core::model::{Annotation, SearchFilter, SortKey};
    use annostore_core::query::{self, AggregateSpec, Aggregator, HistogramSpec};
    use annostore_core::visibility::Visibility;
    use uuid::Uuid;

    let docs: Docs = Arc::default();
    let served = docs.clone();
    let stub = Stub::start(Box::new(move |req, _| answer(&served, req))).await;
    let (op1, op2, op3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let all: Vec<Annotation> = (0..80i64)
        .map(|i| {
            let op = [op1, op2, op3][i as usize % 3];
            let mut a = suite::annotation(op, "m", i * 130, i * 130 + (i % 4) * 700);
            a.media_id = format!("m{}", i % 2);
            a.label =
                (i % 5 != 4).then(|| ["cat", "dog", "bird", "ant"][i as usize % 4].to_owned());
            a.annotation_type = ["shot", "face"][i as usize % 2].into();
            a.annotation_type_version = [1, 2, 10][i as usize % 3];
            a.embedding = match i % 9 {
                0 => Some(vec![0.0; 3]),
                1 => Some(vec![1.0, 2.0]),
                8 => None,
                _ => Some(vec![
                    (i % 7) as f32 - 3.0,
                    (i % 5) as f32 + 0.5,
                    (i % 11) as f32 / 3.0,
                ]),
            };
            a
        })
        .collect();
    let mut config = stub.config();
    config.scope_terms_max = 1_024;
    let exact_index = ElasticIndex::connect(&config).unwrap();
    exact_index
        .upsert(&all, annostore_core::index::Existing::Unknown)
        .await
        .unwrap();
    config.scope_terms_max = 0;
    let checked_index = ElasticIndex::connect(&config).unwrap();
    let scopes = [
        Scope::Visible(Arc::new(Visibility::from_active([op1, op3]))),
        Scope::Operation(op2),
    ];
    let filters = [
        SearchFilter::default(),
        SearchFilter {
            media_id: Some("m1".into()),
            ..SearchFilter::default()
        },
        SearchFilter {
            labels: Some(vec!["cat".into(), "bird".into()]),
            ..SearchFilter::default()
        },
    ];
    let vector = vec![1.0f32, -0.5, 2.0];
    for index in [&exact_index, &checked_index] {
        for scope in &scopes {
            for filter in &filters {
                let in_scope =
                    |a: &&Annotation| scope.allows(&a.operation_id) && query::matches(filter, a);
                for k in [1, 5, 100] {
                    let mut expected: Vec<(f32, SortKey)> = all
                        .iter()
                        .filter(in_scope)
                        .filter_map(|a| {
                            let e = a.embedding.as_ref()?;
                            (e.len() == 3 && e.iter().any(|x| *x != 0.0))
                                .then(|| (query::cosine(&vector, e), SortKey::of(a)))
                        })
                        .collect();
                    expected.sort_by(|a, b| {
                        query::compare(
                            query::SortOrder::Score,
                            (Some(a.0), &a.1),
                            (Some(b.0), &b.1),
                        )
                    });
                    expected.truncate(k);
                    let got = index
                        .knn(&KnnQuery {
                            filter: filter.clone(),
                            scope: scope.clone(),
                            vector: vector.clone(),
                            k,
                        })
                        .await
                        .unwrap();
                    let got: Vec<(f32, SortKey)> =
                        got.into_iter().map(|h| (h.similarity, h.key)).collect();
                    assert_eq!(got, expected, "k {k} {filter:?} {scope:?}");
                }
                // No document has 7 dimensions: no neighbours.
                let none = index
                    .knn(&KnnQuery {
                        filter: filter.clone(),
                        scope: scope.clone(),
                        vector: vec![1.0; 7],
                        k: 5,
                    })
                    .await
                    .unwrap();
                assert!(none.is_empty());
                for spec in [
                    AggregateSpec {
                        labels: Some(2),
                        types: true,
                        histogram: Some(HistogramSpec {
                            interval_ms: 1_000,
                            by_label: true,
                        }),
                    },
                    AggregateSpec {
                        labels: Some(10),
                        histogram: Some(HistogramSpec {
                            interval_ms: 333,
                            by_label: false,
                        }),
                        ..AggregateSpec::default()
                    },
                ] {
                    let q = AggregateQuery {
                        filter: filter.clone(),
                        scope: scope.clone(),
                        spec: spec.clone(),
                    };
                    let got = index.aggregate(&q).await;
                    let checked =
                        matches!(scope, Scope::Visible(_)) && std::ptr::eq(index, &checked_index);
                    if checked {
                        assert!(matches!(got, Err(IndexError::Unanswerable(_))), "{got:?}");
                        continue;
                    }
                    let mut brute = Aggregator::new(spec);
                    for a in all.iter().filter(in_scope) {
                        brute.add(a);
                    }
                    assert_eq!(got.unwrap(), brute.finish(), "{filter:?} {scope:?}");
                }
            }
        }
    }
}
