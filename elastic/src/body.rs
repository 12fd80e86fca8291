//! The request bodies the adapter sends, as pure functions: the index template, a
//! document and its `_bulk` lines, a search and a count. Public so that golden tests
//! (and anyone debugging a cluster) can see exactly what goes over the wire.

use crate::config::ElasticConfig;
use annostore_core::index::Scope;
use annostore_core::model::{Annotation, BBox, SearchFilter, SortKey};
use annostore_core::visibility::op_key;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The template as shipped in `schema/es/` (defaults: name, patterns, settings).
pub const TEMPLATE_JSON: &str = include_str!("../../schema/es/annostore-annotations-template.json");

/// The 64-bit operation key as stored: Elasticsearch's `long` is signed, so the key's
/// bits are stored as an i64 (keys above `i64::MAX` come out negative). Equality is all
/// the index needs of it, and the bit pattern keeps equality.
pub fn stored_op_key(operation_id: &Uuid) -> i64 {
    op_key(operation_id) as i64
}

/// The field that holds an embedding of `dims` dimensions. `dense_vector` fixes its
/// dimensions per field and types differ in `embedding_dim`, so each dimension gets its
/// own field (mapped by the template's `embeddings` dynamic template).
pub fn embedding_field(dims: usize) -> String {
    format!("embedding_{dims}")
}

/// An annotation as an Elasticsearch document.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    pub id: String,
    pub operation_id: String,
    pub op_key: i64,
    pub media_id: &'a str,
    pub annotation_type: &'a str,
    pub annotation_type_version: u32,
    pub pivot_id: &'a str,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'a str>,
    /// Serialised as f32 (shortest form), so the indexed float is the annotation's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bbox: Option<&'a BBox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a Value>,
    /// `embedding_<dims>`: at most one entry.
    #[serde(flatten)]
    pub embedding: BTreeMap<String, &'a [f32]>,
}

impl<'a> Document<'a> {
    pub fn of(a: &'a Annotation) -> Document<'a> {
        let mut embedding = BTreeMap::new();
        if let Some(e) = &a.embedding {
            embedding.insert(embedding_field(e.len()), e.as_slice());
        }
        Document {
            id: uuid_text(&a.id),
            operation_id: uuid_text(&a.operation_id),
            op_key: stored_op_key(&a.operation_id),
            media_id: &a.media_id,
            annotation_type: &a.annotation_type,
            annotation_type_version: a.annotation_type_version,
            pivot_id: &a.pivot_id,
            start_ms: a.start_ms,
            end_ms: a.end_ms,
            label: a.label.as_deref(),
            confidence: a.confidence,
            bbox: a.bbox.as_ref(),
            data: a.data.as_ref(),
            embedding,
        }
    }
}

/// A UUID as indexed: lower-case hyphenated. Its byte order is the u128 order (fixed
/// hyphen positions, and '0'-'9' < 'a'-'f' in ASCII), so sorting on the keyword sorts
/// ids as the tantivy index does.
pub fn uuid_text(id: &Uuid) -> String {
    id.hyphenated().to_string()
}

/// One annotation's two `_bulk` lines (action, document), each ending in a newline.
/// Index by id: a write replaces whatever the index held under that id, or, with a
/// `version`, only a copy of a version no higher (`external_gte`: a replay of the same
/// version rewrites; a late, older copy is refused with a 409).
pub fn bulk_lines(a: &Annotation, version: Option<u64>) -> Result<Vec<u8>, serde_json::Error> {
    let action = match version {
        None => json!({"index": {"_id": uuid_text(&a.id)}}),
        Some(v) => json!({"index": {
            "_id": uuid_text(&a.id),
            "version": v,
            "version_type": "external_gte",
        }}),
    };
    let mut out = serde_json::to_vec(&action)?;
    out.push(b'\n');
    serde_json::to_writer(&mut out, &Document::of(a))?;
    out.push(b'\n');
    Ok(out)
}

/// The `_bulk` body (NDJSON) for these annotations, in order.
pub fn bulk(
    annotations: &[Annotation],
    version: Option<u64>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for a in annotations {
        out.extend(bulk_lines(a, version)?);
    }
    Ok(out)
}

/// A float filter bound as JSON: f32's shortest decimal form, read back as f64, so
/// Elasticsearch (which parses it and rounds to float) compares with exactly the f32
/// the caller gave; `0.1_f32 as f64` would print as 0.10000000149011612.
fn float_value(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The filter clauses of a [`SearchFilter`], in a fixed order. Every one is a `filter`
/// clause (no scoring); the semantics are `annostore_core::service::matches`.
pub fn filter_clauses(filter: &SearchFilter) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(m) = &filter.media_id {
        out.push(json!({"term": {"media_id": m}}));
    }
    if let Some(t) = &filter.annotation_type {
        out.push(json!({"term": {"annotation_type": t}}));
    }
    if let Some(v) = filter.annotation_type_version {
        out.push(json!({"term": {"annotation_type_version": v.to_string()}}));
    }
    if let Some(p) = &filter.pivot_id {
        out.push(json!({"term": {"pivot_id": p}}));
    }
    if let Some(l) = &filter.label {
        // The keyword, not label.text: exact, as the tantivy index.
        out.push(json!({"term": {"label": l}}));
    }
    if let Some(op) = &filter.operation_id {
        out.push(json!({"term": {"operation_id": uuid_text(op)}}));
    }
    if let Some(r) = &filter.time_range {
        // Intersects: start <= range.end and end >= range.start (touching ends match).
        out.push(json!({"range": {"start_ms": {"lte": r.end_ms}}}));
        out.push(json!({"range": {"end_ms": {"gte": r.start_ms}}}));
    }
    if let Some(c) = filter.min_confidence {
        // A range skips documents without a confidence, as `matches` does.
        out.push(json!({"range": {"confidence": {"gte": float_value(c)}}}));
    }
    out
}

/// How a search applies its [`Scope`].
#[derive(Debug, Clone, PartialEq)]
pub enum ScopePlan {
    /// Nothing can be in scope: answer empty without asking the cluster.
    Empty,
    /// This clause (or none) restricts the query to the scope exactly.
    Exact(Option<Value>),
    /// The scope is too large to send: hits are checked against it one by one and the
    /// page is filled with further rounds.
    Check,
}

/// Chooses how to apply `scope` to a search with `filter`. Snapshots of at most
/// `terms_max` active operations are sent as a `terms` filter on the operation key.
pub fn scope_plan(filter: &SearchFilter, scope: &Scope, terms_max: usize) -> ScopePlan {
    match scope {
        Scope::Operation(id) => match filter.operation_id {
            Some(o) if o != *id => ScopePlan::Empty,
            // The filter's own term already restricts to this operation.
            Some(_) => ScopePlan::Exact(None),
            None => ScopePlan::Exact(Some(json!({"term": {"operation_id": uuid_text(id)}}))),
        },
        Scope::Visible(v) => {
            if let Some(o) = &filter.operation_id {
                return if v.is_active(o) {
                    ScopePlan::Exact(None)
                } else {
                    ScopePlan::Empty
                };
            }
            if v.is_empty() {
                ScopePlan::Empty
            } else if v.len() <= terms_max {
                let mut keys: Vec<i64> = v.keys().map(|k| k as i64).collect();
                keys.sort_unstable();
                ScopePlan::Exact(Some(json!({"terms": {"op_key": keys}})))
            } else {
                ScopePlan::Check
            }
        }
    }
}

/// The search order: (media_id, start_ms, id), all ascending; byte order for the
/// keywords, as Rust compares `String`s.
pub fn sort() -> Value {
    json!([
        {"media_id": {"order": "asc"}},
        {"start_ms": {"order": "asc"}},
        {"id": {"order": "asc"}}
    ])
}

/// A search body: `size` hits after `after` (exclusive), in search order, with their
/// sort values and operation key and nothing else.
pub fn search(
    filter: &SearchFilter,
    scope_clause: Option<&Value>,
    after: Option<&SortKey>,
    size: usize,
) -> Value {
    let mut clauses = filter_clauses(filter);
    clauses.extend(scope_clause.cloned());
    let query = if clauses.is_empty() {
        json!({"match_all": {}})
    } else {
        json!({"bool": {"filter": clauses}})
    };
    let mut body = Map::new();
    body.insert("size".into(), json!(size));
    body.insert("track_total_hits".into(), json!(false));
    body.insert("_source".into(), json!(false));
    body.insert("docvalue_fields".into(), json!(["op_key"]));
    body.insert("query".into(), query);
    body.insert("sort".into(), sort());
    if let Some(a) = after {
        body.insert(
            "search_after".into(),
            json!([a.media_id, a.start_ms, uuid_text(&a.id)]),
        );
    }
    Value::Object(body)
}

/// The `_count` body for one operation's documents.
pub fn count_operation(operation_id: &Uuid) -> Value {
    json!({"query": {"term": {"operation_id": uuid_text(operation_id)}}})
}

/// The index template for `config`: the shipped template with the config's index name
/// as its pattern and the config's shards, replicas and refresh interval.
pub fn template(config: &ElasticConfig) -> Result<Value, serde_json::Error> {
    let mut t: Value = serde_json::from_str(TEMPLATE_JSON)?;
    // The index's own name only: a wildcard would overlap the patterns of a second
    // deployment named `<index>-something` on the same cluster, and Elasticsearch
    // refuses two templates of equal priority with overlapping patterns.
    t["index_patterns"] = json!([config.index]);
    let index = &mut t["template"]["settings"]["index"];
    index["number_of_shards"] = json!(config.shards);
    index["number_of_replicas"] = json!(config.replicas);
    index["refresh_interval"] = json!(config.refresh_interval);
    Ok(t)
}

/// The mappings of the template: what `schema apply` puts on an index that exists.
pub fn mappings(config: &ElasticConfig) -> Result<Value, serde_json::Error> {
    Ok(template(config)?["template"]["mappings"].clone())
}
