//! The request bodies the adapter sends, as pure functions: the index template, a
//! document and its `_bulk` lines, the filter clauses of the search language
//! (`annostore_core::query`), a search in time or confidence order, a kNN search, an
//! aggregation and a count. Public so that golden tests (and anyone debugging a
//! cluster) can see exactly what goes over the wire.

use crate::config::ElasticConfig;
use annostore_core::index::{Position, Scope};
use annostore_core::model::{Annotation, BBox, SearchFilter};
use annostore_core::query::{AggregateSpec, Corners, MISSING_RANK, SortOrder};
use annostore_core::visibility::op_key;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

mod filter;
use filter::float_value;
pub use filter::{filter_clauses, text_field};

/// The template as shipped in `schema/es/` (defaults: name, patterns, settings).
pub const TEMPLATE_JSON: &str =
    include_str!("../../../schema/es/annostore-annotations-template.json");

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

/// The longest string (in UTF-8 bytes) indexed as a keyword under `data_kw` or
/// `data_keys`: Lucene refuses terms above 32,766 bytes, and a refused document would
/// block its whole batch. Longer values are left out of the document, and a query that
/// compares with such a value is refused ([`filter_clauses`]), so no answer is wrong.
pub const MAX_KEYWORD_BYTES: usize = 32_766;

/// A `data` field's name as an Elasticsearch field under `data_kw`, `data_num`,
/// `data_bool` and `data_text`. Elasticsearch reads dots in field names as object
/// paths (`a.b` would become an object `a`, clashing with a field `a`) and refuses
/// empty names, so names other than `[A-Za-z0-9_-]+` are escaped: `%` then the name
/// with every other byte as `%XX`. Plain names never start with `%`, so the encoding
/// is one-to-one.
pub fn data_field(name: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !name.is_empty() && name.bytes().all(plain) {
        return name.to_owned();
    }
    let mut out = String::from("%");
    for b in name.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The time span as the `long_range` field `time` holds it (both ends included), for
/// the histogram: `end` never before `start`, as `query::buckets_of` reads it.
#[derive(Debug, Serialize)]
pub struct Span {
    pub gte: i64,
    pub lte: i64,
}

/// A number as `data_num` holds it and queries compare it: the f64, with -0.0 made 0.0
/// (the `==` and `<` of `DataCondition::matches` do not tell them apart; Lucene's
/// double points do).
fn number(x: f64) -> f64 {
    x + 0.0
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
    /// `[start_ms, end_ms]` as a `long_range`, for the time histogram.
    pub time: Span,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'a str>,
    /// Serialised as f32 (shortest form), so the indexed float is the annotation's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// The confidence order's rank: the confidence, or `query::MISSING_RANK`.
    pub rank_confidence: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bbox: Option<&'a BBox>,
    /// The box's corners as `query::Corners::of` computes them (f64), for regions.
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub corners: Option<Corners>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a Value>,
    /// The top-level keys of `data` (a condition with neither `eq` nor bounds asks only
    /// that the field be there, whatever its value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_keys: Vec<&'a str>,
    /// Top-level strings of `data`, by [`data_field`] name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data_kw: BTreeMap<String, &'a str>,
    /// Top-level numbers of `data`, as f64.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data_num: BTreeMap<String, f64>,
    /// Top-level booleans of `data`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data_bool: BTreeMap<String, bool>,
    /// Top-level strings of `data` again, analysed for text search. The adapter cannot
    /// see type schemas, so every string is written; queries name the marked ones.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data_text: BTreeMap<String, &'a str>,
    /// `embedding_<dims>`: at most one entry.
    #[serde(flatten)]
    pub embedding: BTreeMap<String, &'a [f32]>,
}

impl<'a> Document<'a> {
    pub fn of(a: &'a Annotation) -> Document<'a> {
        let mut embedding = BTreeMap::new();
        // `cosine` refuses a vector of zero magnitude (and the refusal would block the
        // batch); its similarity to anything is 0 (`query::cosine`), and it is left out.
        if let Some(e) = a.embedding.as_ref().filter(|e| e.iter().any(|x| *x != 0.0)) {
            embedding.insert(embedding_field(e.len()), e.as_slice());
        }
        let mut doc = Document {
            id: uuid_text(&a.id),
            operation_id: uuid_text(&a.operation_id),
            op_key: stored_op_key(&a.operation_id),
            media_id: &a.media_id,
            annotation_type: &a.annotation_type,
            annotation_type_version: a.annotation_type_version,
            pivot_id: &a.pivot_id,
            start_ms: a.start_ms,
            end_ms: a.end_ms,
            time: Span {
                gte: a.start_ms,
                lte: a.end_ms.max(a.start_ms),
            },
            label: a.label.as_deref(),
            confidence: a.confidence,
            rank_confidence: a.confidence.unwrap_or(MISSING_RANK),
            bbox: a.bbox.as_ref(),
            corners: a.bbox.as_ref().map(Corners::of),
            data: a.data.as_ref(),
            data_keys: Vec::new(),
            data_kw: BTreeMap::new(),
            data_num: BTreeMap::new(),
            data_bool: BTreeMap::new(),
            data_text: BTreeMap::new(),
            embedding,
        };
        if let Some(Value::Object(fields)) = &a.data {
            for (name, v) in fields {
                if name.len() > MAX_KEYWORD_BYTES {
                    continue;
                }
                doc.data_keys.push(name);
                match v {
                    Value::String(s) => {
                        if s.len() <= MAX_KEYWORD_BYTES {
                            doc.data_kw.insert(data_field(name), s);
                        }
                        doc.data_text.insert(data_field(name), s);
                    }
                    Value::Number(n) => {
                        if let Some(x) = n.as_f64() {
                            doc.data_num.insert(data_field(name), number(x));
                        }
                    }
                    Value::Bool(b) => {
                        doc.data_bool.insert(data_field(name), *b);
                    }
                    _ => {}
                }
            }
        }
        doc
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

/// The query of a search, kNN filter or aggregation: the filter's clauses and the
/// scope's, or `match_all`.
fn query(filter: &SearchFilter, scope_clause: Option<&Value>) -> Result<Value, String> {
    let mut clauses = filter_clauses(filter)?;
    clauses.extend(scope_clause.cloned());
    Ok(if clauses.is_empty() {
        json!({"match_all": {}})
    } else {
        json!({"bool": {"filter": clauses}})
    })
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

/// The sort of a search in `order`: [`sort`] for time; for confidence, the rank
/// (`rank_confidence`, highest first; a document written before the field existed
/// ranks as one without confidence) and then [`sort`]. Scores come from kNN only.
pub fn sort_for(order: SortOrder) -> Result<Value, String> {
    match order {
        SortOrder::Time => Ok(sort()),
        SortOrder::Confidence => {
            let mut s =
                vec![json!({"rank_confidence": {"order": "desc", "missing": MISSING_RANK}})];
            s.extend(sort().as_array().into_iter().flatten().cloned());
            Ok(Value::Array(s))
        }
        SortOrder::Score => Err("the score order needs a nearest-neighbour search".into()),
    }
}

/// A search body: `size` hits after `after` (exclusive) in `order`, with their sort
/// values and operation key and nothing else.
pub fn search(
    filter: &SearchFilter,
    order: SortOrder,
    scope_clause: Option<&Value>,
    after: Option<&Position>,
    size: usize,
) -> Result<Value, String> {
    let sort = sort_for(order)?;
    let mut body = Map::new();
    body.insert("size".into(), json!(size));
    body.insert("track_total_hits".into(), json!(false));
    body.insert("_source".into(), json!(false));
    body.insert("docvalue_fields".into(), json!(["op_key"]));
    body.insert("query".into(), query(filter, scope_clause)?);
    body.insert("sort".into(), sort);
    if let Some(p) = after {
        let k = &p.key;
        let key = [
            json!(k.media_id),
            json!(k.start_ms),
            json!(uuid_text(&k.id)),
        ];
        let values: Vec<Value> = match order {
            SortOrder::Time => key.to_vec(),
            _ => std::iter::once(float_value(p.rank.unwrap_or(MISSING_RANK)))
                .chain(key)
                .collect(),
        };
        body.insert("search_after".into(), Value::Array(values));
    }
    Ok(Value::Object(body))
}

/// The most neighbours (and candidates) one kNN request may ask for: Elasticsearch
/// refuses `num_candidates` above 10,000, and `k` may not exceed it.
pub const MAX_KNN: usize = 10_000;

/// Candidates per shard for `k` neighbours: ten times `k`, at least 100, at most
/// [`MAX_KNN`] (never below `k`).
pub fn num_candidates(k: usize) -> usize {
    k.saturating_mul(10).clamp(100, MAX_KNN).max(k)
}

/// The doc values a kNN hit carries: its time key and operation key.
pub const KNN_FIELDS: [&str; 4] = ["media_id", "start_ms", "id", "op_key"];

/// A kNN search body: the `k` documents nearest to `vector` on `embedding_<dims>`
/// (cosine) among those the filter and the scope clause match (a filtered search, not
/// a post-filter), with their time key and operation key as doc values.
pub fn knn(
    filter: &SearchFilter,
    scope_clause: Option<&Value>,
    vector: &[f32],
    k: usize,
) -> Result<Value, String> {
    let k = k.min(MAX_KNN);
    let mut knn = Map::new();
    knn.insert("field".into(), json!(embedding_field(vector.len())));
    knn.insert("query_vector".into(), json!(vector));
    knn.insert("k".into(), json!(k));
    knn.insert("num_candidates".into(), json!(num_candidates(k)));
    let q = query(filter, scope_clause)?;
    if q.get("match_all").is_none() {
        knn.insert("filter".into(), q);
    }
    Ok(json!({
        "size": k,
        "track_total_hits": false,
        "_source": false,
        "docvalue_fields": KNN_FIELDS,
        "knn": knn,
    }))
}

/// Most distinct labels an aggregation reads (overall, and per histogram bucket). All
/// of them are asked for and the top `n` cut here, so counts are exact on any number
/// of shards; an answer that had to leave labels out is refused (`response`).
pub const MAX_LABELS: usize = 10_000;

/// Most (type, version) pairs an aggregation reads.
pub const MAX_TYPES: usize = 10_000;

/// The label counts: every label, exactly (see [`MAX_LABELS`]).
fn label_terms() -> Value {
    json!({"terms": {
        "field": "label",
        "size": MAX_LABELS,
        "order": [{"_count": "desc"}, {"_key": "asc"}],
    }})
}

/// An aggregation body: no hits, the exact total, and the aggregations `spec` asks
/// for over the documents the filter and the scope clause match:
/// - `labels`: `terms` on `label` (every label; sorted and cut to `n` when read);
/// - `types`: a `composite` of (`annotation_type`, `annotation_type_version`), exact;
/// - `histogram`: `histogram` on the `time` range with `interval_ms`, which counts a
///   document in every bucket its range touches (`query::buckets_of`); empty buckets
///   left out (`min_doc_count: 1`); with `by_label`, label `terms` in each bucket.
pub fn aggregate(
    filter: &SearchFilter,
    scope_clause: Option<&Value>,
    spec: &AggregateSpec,
) -> Result<Value, String> {
    let mut aggs = Map::new();
    if spec.labels.is_some_and(|n| n > 0) {
        aggs.insert("labels".into(), label_terms());
    }
    if spec.types {
        aggs.insert(
            "types".into(),
            json!({"composite": {
                "size": MAX_TYPES,
                "sources": [
                    {"type": {"terms": {"field": "annotation_type"}}},
                    {"version": {"terms": {"field": "annotation_type_version"}}},
                ],
            }}),
        );
    }
    if let Some(h) = &spec.histogram {
        if h.interval_ms <= 0 {
            return Err(format!(
                "histogram interval_ms must be at least 1, not {}",
                h.interval_ms
            ));
        }
        let mut histogram = json!({"histogram": {
            "field": "time",
            "interval": h.interval_ms,
            "min_doc_count": 1,
        }});
        if h.by_label {
            histogram["aggs"] = json!({"labels": label_terms()});
        }
        aggs.insert("histogram".into(), histogram);
    }
    let mut body = Map::new();
    body.insert("size".into(), json!(0));
    body.insert("track_total_hits".into(), json!(true));
    body.insert("query".into(), query(filter, scope_clause)?);
    if !aggs.is_empty() {
        body.insert("aggs".into(), Value::Object(aggs));
    }
    Ok(Value::Object(body))
}

/// The `_count` body for one operation's documents.
pub fn count_operation(operation_id: &Uuid) -> Value {
    json!({"query": {"term": {"operation_id": uuid_text(operation_id)}}})
}

/// The `_delete_by_query` body for one operation's documents: the same query as
/// [`count_operation`] (every document stores its operation id as a keyword).
pub fn delete_operation(operation_id: &Uuid) -> Value {
    count_operation(operation_id)
}

/// `index.gc_deletes`: how long Elasticsearch remembers a deleted document's version
/// (60 s by default), refusing with 409 a versioned write below it meanwhile. The only
/// deletes annostore sends are garbage collection's (`_delete_by_query` of a collected
/// run; rewrites are index operations by `_id`, never deletes), and the store then frees
/// the run's annotation ids, which a new run may claim with a lower operation version:
/// a remembered version would refuse its writes, and the adapter reads a 409 as "a newer
/// copy is already there", so the new run could finish with documents missing. Nothing
/// needs a deleted document's version, so it is forgotten at once (within one tick of
/// the cluster's cached clock, 200 ms by default; see schema/es/README.md). Dynamic:
/// the template sets it on new indexes, and `schema apply` puts it on an existing one
/// ([`index_settings`]).
pub const GC_DELETES: &str = "0s";

/// The index template for `config`: the shipped template with the config's index name
/// as its pattern and the config's shards, replicas and refresh interval, and
/// [`GC_DELETES`].
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
    // Deleted documents' versions forgotten at once (see GC_DELETES); the shipped file
    // says the same, as the golden test checks.
    index["gc_deletes"] = json!(GC_DELETES);
    Ok(t)
}

/// The dynamic settings `schema apply` puts on an index that exists (`PUT
/// <index>/_settings`): [`GC_DELETES`], which an index made before it was in the
/// template lacks. Putting it again changes nothing.
pub fn index_settings() -> Value {
    json!({ "index": { "gc_deletes": GC_DELETES } })
}

/// The mappings of the template: what `schema apply` puts on an index that exists.
pub fn mappings(config: &ElasticConfig) -> Result<Value, serde_json::Error> {
    Ok(template(config)?["template"]["mappings"].clone())
}
