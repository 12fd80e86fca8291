//! The index conformance suite against a *model* of Elasticsearch: a stub server that
//! evaluates the small query language subset the adapter sends (`match_all`,
//! `bool.filter` of `term`/`terms`/`range`, the fixed sort, `search_after`, `size`,
//! `docvalue_fields`) over the documents it received by `_bulk`. It checks the adapter's
//! own logic (dedupe, chunking, paging, scope plans, page filling, parsing) with the
//! real suite, in CI, without a server. It is no evidence about Elasticsearch itself:
//! the model's semantics are this file's reading of the documentation, and
//! `conformance.rs` against a real server is the test that counts.

mod common;

use annostore_core::index::Index;
use annostore_core::testkit::index as suite;
use annostore_elastic::ElasticIndex;
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

fn matches(q: &Value, doc: &Value) -> bool {
    let (kind, body) = q
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("a query is a one-key object");
    match kind.as_str() {
        "match_all" => true,
        "bool" => body["filter"]
            .as_array()
            .expect("bool.filter")
            .iter()
            .all(|c| matches(c, doc)),
        "term" => {
            let (field, value) = body.as_object().unwrap().iter().next().unwrap();
            doc.get(field).and_then(term_text) == term_text(value)
        }
        "terms" => {
            let (field, values) = body.as_object().unwrap().iter().next().unwrap();
            let Some(x) = doc.get(field).and_then(Value::as_i64) else {
                return false;
            };
            values
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_i64() == Some(x))
        }
        "range" => {
            let (field, bounds) = body.as_object().unwrap().iter().next().unwrap();
            let Some(x) = doc.get(field) else {
                return false;
            };
            bounds.as_object().unwrap().iter().all(|(op, bound)| {
                let ord = if field == "confidence" {
                    // A float field: the bound is rounded to float, as Elasticsearch does.
                    let (a, b) = (x.as_f64().unwrap() as f32, bound.as_f64().unwrap() as f32);
                    a.partial_cmp(&b).unwrap()
                } else {
                    x.as_i64().unwrap().cmp(&bound.as_i64().unwrap())
                };
                match op.as_str() {
                    "gte" => ord != Ordering::Less,
                    "lte" => ord != Ordering::Greater,
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

fn answer(docs: &Docs, req: &Recorded) -> (u16, Vec<u8>) {
    let mut docs = docs.lock().unwrap();
    let endpoint = req.path.rsplit('/').next().unwrap_or("");
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
            assert_eq!(q["sort"], annostore_elastic::body::sort());
            assert_eq!(q["docvalue_fields"], json!(["op_key"]));
            let size = q["size"].as_u64().unwrap() as usize;
            let after = q.get("search_after").map(|a| {
                (
                    a[0].as_str().unwrap().to_owned(),
                    a[1].as_i64().unwrap(),
                    a[2].as_str().unwrap().to_owned(),
                )
            });
            let mut hits: Vec<&Value> = docs.values().filter(|d| matches(&q["query"], d)).collect();
            hits.sort_by_key(|d| sort_key(d));
            let hits: Vec<Value> = hits
                .into_iter()
                .filter(|d| after.as_ref().is_none_or(|a| sort_key(d) > *a))
                .take(size)
                .map(|d| {
                    let (m, s, id) = sort_key(d);
                    json!({"_id": id, "sort": [m, s, id], "fields": {"op_key": [d["op_key"]]}})
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
