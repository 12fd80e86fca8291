//! Reading Elasticsearch's answers: bulk items, search hits (time or confidence
//! order), kNN hits, aggregations, field mappings, counts, deletes by query and error
//! bodies, and which failures are worth a retry. A malformed answer is an error, never an empty result.

use crate::body::{MAX_LABELS, MAX_TYPES};
use annostore_core::model::SortKey;
use annostore_core::query::{AggregateSpec, Aggregates, finish_aggregates};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// What to do about an HTTP status (of a whole request, or of one bulk item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// Overload (429), a timeout (408), a server-side failure (5xx), or a version
    /// conflict (409; the adapter writes without version constraints, so a conflict
    /// means a concurrent write to the same id, and re-sending the same document is
    /// the idempotent fix).
    Retry,
    /// The request or document is wrong and will be wrong again.
    Reject,
}

pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Done,
        408 | 409 | 429 => Verdict::Retry,
        500..=599 => Verdict::Retry,
        _ => Verdict::Reject,
    }
}

/// `_bulk`'s answer (only the fields the adapter asks for with `filter_path`).
#[derive(Debug, Deserialize)]
pub struct BulkResponse {
    #[serde(default)]
    pub errors: bool,
    #[serde(default)]
    pub items: Vec<HashMap<String, BulkItem>>,
}

#[derive(Debug, Deserialize)]
pub struct BulkItem {
    #[serde(rename = "_id", default)]
    pub id: Option<String>,
    pub status: u16,
    #[serde(default)]
    pub error: Option<Value>,
}

impl BulkResponse {
    /// Each item's result, in request order (an item is a one-entry map keyed by its
    /// action).
    pub fn results(&self) -> impl Iterator<Item = Option<&BulkItem>> {
        self.items.iter().map(|m| m.values().next())
    }
}

/// `type: reason` of an Elasticsearch error object (or the string it sometimes is).
pub fn describe_error(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let ty = o.get("type").and_then(Value::as_str).unwrap_or("error");
            let reason = o.get("reason").and_then(Value::as_str).unwrap_or("");
            let caused = o
                .get("caused_by")
                .and_then(|c| c.get("reason"))
                .and_then(Value::as_str);
            match caused {
                Some(c) => format!("{ty}: {reason} (caused by: {c})"),
                None => format!("{ty}: {reason}"),
            }
        }
        other => other.to_string(),
    }
}

/// What a failed request's body says, short: the error's type and reason when it is
/// Elasticsearch's error JSON, else the start of the body.
pub fn describe_body(status: u16, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(e) => format!("HTTP {status}: {}", describe_error(e)),
        None => {
            let text = String::from_utf8_lossy(body);
            let short: String = text.chars().take(300).collect();
            format!("HTTP {status}: {short}")
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Shards {
    #[serde(default)]
    failed: u64,
}

#[derive(Debug, Deserialize)]
struct SearchResponse {
    #[serde(default)]
    timed_out: bool,
    #[serde(rename = "_shards", default)]
    shards: Shards,
    #[serde(default)]
    hits: Option<Hits>,
}

#[derive(Debug, Deserialize)]
struct Hits {
    #[serde(default)]
    hits: Vec<RawHit>,
}

#[derive(Debug, Deserialize)]
struct RawHit {
    #[serde(default)]
    sort: Vec<Value>,
    #[serde(default)]
    fields: HashMap<String, Vec<Value>>,
    #[serde(rename = "_score", default)]
    score: Option<f64>,
}

/// One hit: its position in search order and its stored operation key.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The rank of a confidence-ordered search (`None` in time order).
    pub rank: Option<f32>,
    pub key: SortKey,
    pub op_key: u64,
}

/// The answer's hits, or why it cannot be trusted (partial results).
fn raw_hits(body: &[u8], what: &str) -> Result<Vec<RawHit>, String> {
    let r: SearchResponse =
        serde_json::from_slice(body).map_err(|e| format!("unreadable {what} response: {e}"))?;
    if r.timed_out || r.shards.failed > 0 {
        return Err(format!(
            "partial {what} results (timed out: {}, failed shards: {})",
            r.timed_out, r.shards.failed
        ));
    }
    Ok(r.hits.map(|h| h.hits).unwrap_or_default())
}

/// The hits of a search, or why the answer cannot be trusted (partial results or a
/// hit without the values the adapter asked for). `ranked`: the sort values start
/// with the rank (confidence order).
pub fn search_hits(body: &[u8], ranked: bool) -> Result<Vec<SearchHit>, String> {
    raw_hits(body, "search")?
        .iter()
        .map(|h| hit(h, ranked))
        .collect()
}

fn hit(h: &RawHit, ranked: bool) -> Result<SearchHit, String> {
    let bad = || format!("hit without the expected sort values: {:?}", h.sort);
    let (rank, key) = match (ranked, h.sort.as_slice()) {
        (false, [media, start, id]) => (None, [media, start, id]),
        (true, [rank, media, start, id]) => {
            let r = rank.as_f64().ok_or_else(bad)?;
            (Some(r as f32), [media, start, id])
        }
        _ => return Err(bad()),
    };
    let [media, start, id] = key;
    let media_id = media.as_str().ok_or_else(bad)?.to_owned();
    let start_ms = start.as_i64().ok_or_else(bad)?;
    let id = id
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(bad)?;
    let op_key = first(&h.fields, "op_key")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("hit {id} without op_key"))?;
    Ok(SearchHit {
        rank,
        key: SortKey {
            media_id,
            start_ms,
            id,
        },
        op_key: op_key as u64,
    })
}

fn first<'a>(fields: &'a HashMap<String, Vec<Value>>, name: &str) -> Option<&'a Value> {
    fields.get(name).and_then(|v| v.first())
}

/// One kNN hit: its time key, stored operation key, and cosine similarity (from
/// Elasticsearch's `cosine` score, `(1 + cos) / 2`).
#[derive(Debug, Clone, PartialEq)]
pub struct KnnHit {
    pub key: SortKey,
    pub op_key: u64,
    pub similarity: f32,
}

/// The hits of a kNN search (by score, highest first, as answered), or why the answer
/// cannot be trusted.
pub fn knn_hits(body: &[u8]) -> Result<Vec<KnnHit>, String> {
    raw_hits(body, "knn")?.iter().map(knn_hit).collect()
}

fn knn_hit(h: &RawHit) -> Result<KnnHit, String> {
    let bad = |what: &str| format!("knn hit without {what}: {:?}", h.fields);
    let media_id = first(&h.fields, "media_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("media_id"))?
        .to_owned();
    let start_ms = first(&h.fields, "start_ms")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("start_ms"))?;
    let id = first(&h.fields, "id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| bad("id"))?;
    let op_key = first(&h.fields, "op_key")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("op_key"))?;
    let score = h
        .score
        .filter(|s| s.is_finite() && (0.0..=1.0 + 1e-6).contains(s))
        .ok_or_else(|| {
            format!(
                "knn hit {id} without a cosine score in [0, 1]: {:?}",
                h.score
            )
        })?;
    Ok(KnnHit {
        key: SortKey {
            media_id,
            start_ms,
            id,
        },
        op_key: op_key as u64,
        similarity: ((2.0 * score - 1.0) as f32).clamp(-1.0, 1.0),
    })
}

/// What the cluster's mapping says about an embedding field.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorField {
    /// No index behind the name has the field: nothing has an embedding of this size.
    Missing,
    /// A `dense_vector` with `cosine` similarity (in every index that has it).
    Cosine,
    /// Something else (e.g. `l2_norm` from schema version 1): scores would not be
    /// cosine similarities.
    Other(String),
}

/// Reads a get-field-mapping answer (`{index: {mappings: {field: {mapping: {leaf:
/// {...}}}}}}`) for `field`.
pub fn vector_field(body: &[u8], field: &str) -> Result<VectorField, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable field mapping response: {e}"))?;
    let indices = v
        .as_object()
        .ok_or_else(|| "field mapping response is not an object".to_string())?;
    let mut seen = false;
    for (index, entry) in indices {
        let mappings = entry
            .get("mappings")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("field mapping response: {index} without mappings"))?;
        let Some(m) = mappings.get(field) else {
            continue;
        };
        seen = true;
        let leaf = m
            .get("mapping")
            .and_then(Value::as_object)
            .and_then(|o| o.values().next())
            .ok_or_else(|| format!("field mapping response: {index}.{field} without mapping"))?;
        let ty = leaf.get("type").and_then(Value::as_str).unwrap_or("?");
        let sim = leaf
            .get("similarity")
            .and_then(Value::as_str)
            .unwrap_or("?");
        if ty != "dense_vector" || sim != "cosine" {
            return Ok(VectorField::Other(format!(
                "{index}: {field} is {ty} with similarity {sim}"
            )));
        }
    }
    Ok(if seen {
        VectorField::Cosine
    } else {
        VectorField::Missing
    })
}

#[derive(Debug, Deserialize)]
struct AggResponse {
    #[serde(default)]
    timed_out: bool,
    #[serde(rename = "_shards", default)]
    shards: Shards,
    hits: TotalHits,
    #[serde(default)]
    aggregations: Option<HashMap<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct TotalHits {
    total: Total,
}

#[derive(Debug, Deserialize)]
struct Total {
    value: u64,
    relation: String,
}

#[derive(Debug, Deserialize)]
struct TermsAgg {
    #[serde(default)]
    sum_other_doc_count: u64,
    buckets: Vec<TermBucket>,
}

#[derive(Debug, Deserialize)]
struct TermBucket {
    key: Value,
    doc_count: u64,
}

#[derive(Debug, Deserialize)]
struct CompositeAgg {
    buckets: Vec<CompositeBucket>,
}

#[derive(Debug, Deserialize)]
struct CompositeBucket {
    key: HashMap<String, Value>,
    doc_count: u64,
}

#[derive(Debug, Deserialize)]
struct HistogramAgg {
    buckets: Vec<HistogramBucket>,
}

#[derive(Debug, Deserialize)]
struct HistogramBucket {
    key: f64,
    doc_count: u64,
    #[serde(default)]
    labels: Option<TermsAgg>,
}

/// Label counts of a `terms` answer, refused when labels were left out (more than
/// [`MAX_LABELS`]): counts would then be incomplete.
fn label_counts(t: TermsAgg, what: &str) -> Result<BTreeMap<String, u64>, String> {
    if t.sum_other_doc_count > 0 {
        return Err(format!(
            "{what}: more than {MAX_LABELS} distinct labels ({} annotations not counted); narrow the filters",
            t.sum_other_doc_count
        ));
    }
    t.buckets
        .into_iter()
        .map(|b| match b.key {
            Value::String(s) => Ok((s, b.doc_count)),
            other => Err(format!("{what}: label key {other} is not a string")),
        })
        .collect()
}

fn agg<T: serde::de::DeserializeOwned>(
    aggs: &mut HashMap<String, Value>,
    name: &str,
) -> Result<T, String> {
    let v = aggs
        .remove(name)
        .ok_or_else(|| format!("aggregation answer without {name}"))?;
    serde_json::from_value(v).map_err(|e| format!("unreadable {name} aggregation: {e}"))
}

/// The aggregates of an aggregation answer to [`crate::body::aggregate`] for `spec`,
/// with `query::finish_aggregates`' order and cut; refused when the answer is partial,
/// approximate (a total that is a lower bound, labels left out, more (type, version)
/// pairs than one page) or malformed.
pub fn aggregates(body: &[u8], spec: &AggregateSpec) -> Result<Aggregates, String> {
    let r: AggResponse = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable aggregation response: {e}"))?;
    if r.timed_out || r.shards.failed > 0 {
        return Err(format!(
            "partial aggregation results (timed out: {}, failed shards: {})",
            r.timed_out, r.shards.failed
        ));
    }
    if r.hits.total.relation != "eq" {
        return Err(format!(
            "aggregation total is not exact (relation {:?})",
            r.hits.total.relation
        ));
    }
    let mut aggs = r.aggregations.unwrap_or_default();
    let labels = match spec.labels {
        Some(n) if n > 0 => label_counts(agg(&mut aggs, "labels")?, "labels")?,
        _ => BTreeMap::new(),
    };
    let mut types = BTreeMap::new();
    if spec.types {
        let c: CompositeAgg = agg(&mut aggs, "types")?;
        if c.buckets.len() >= MAX_TYPES {
            return Err(format!(
                "more than {} (type, version) pairs; narrow the filters",
                MAX_TYPES - 1
            ));
        }
        for b in c.buckets {
            let ty = b.key.get("type").and_then(Value::as_str);
            let version = b.key.get("version").and_then(|v| match v {
                Value::String(s) => s.parse::<u32>().ok(),
                Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                _ => None,
            });
            let (Some(ty), Some(version)) = (ty, version) else {
                return Err(format!("types aggregation: unreadable key {:?}", b.key));
            };
            *types.entry((ty.to_owned(), version)).or_default() += b.doc_count;
        }
    }
    let mut buckets = BTreeMap::new();
    if let Some(h) = &spec.histogram {
        let hist: HistogramAgg = agg(&mut aggs, "histogram")?;
        let interval = h.interval_ms as f64;
        for b in hist.buckets {
            let i = b.key / interval;
            if !i.is_finite() || i.fract() != 0.0 || i.abs() > 2f64.powi(53) {
                return Err(format!(
                    "histogram bucket key {} is not a multiple of {}",
                    b.key, h.interval_ms
                ));
            }
            if b.doc_count == 0 {
                continue;
            }
            let by_label = match (h.by_label, b.labels) {
                (false, _) => BTreeMap::new(),
                (true, Some(t)) => label_counts(t, "histogram labels")?,
                (true, None) => {
                    return Err(format!("histogram bucket {} without labels", b.key));
                }
            };
            buckets.insert(i as i64, (b.doc_count, by_label));
        }
    }
    Ok(finish_aggregates(
        spec,
        r.hits.total.value,
        labels,
        types,
        buckets,
    ))
}

#[derive(Debug, Deserialize)]
struct CountResponse {
    count: u64,
    #[serde(rename = "_shards", default)]
    shards: Shards,
}

/// The count of a `_count` answer, refused when a shard failed.
pub fn count(body: &[u8]) -> Result<u64, String> {
    let r: CountResponse =
        serde_json::from_slice(body).map_err(|e| format!("unreadable count response: {e}"))?;
    if r.shards.failed > 0 {
        return Err(format!("count failed on {} shard(s)", r.shards.failed));
    }
    Ok(r.count)
}

#[derive(Debug, Deserialize)]
struct DeleteByQueryResponse {
    deleted: u64,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    version_conflicts: u64,
    #[serde(default)]
    failures: Vec<Value>,
}

/// What a `_delete_by_query` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub deleted: u64,
    /// Documents left because they changed during the delete (`conflicts=proceed`).
    pub version_conflicts: u64,
}

/// A `_delete_by_query` answer, refused when it timed out or reports failures (a
/// partial delete: some documents of the query may remain).
pub fn deleted(body: &[u8]) -> Result<Deleted, String> {
    let r: DeleteByQueryResponse = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable delete by query response: {e}"))?;
    if let Some(first) = r.failures.first() {
        let cause = first
            .get("cause")
            .or_else(|| first.get("reason"))
            .map(describe_error)
            .unwrap_or_else(|| first.to_string());
        return Err(format!(
            "delete by query deleted {} documents and failed {} time(s), first: {cause}",
            r.deleted,
            r.failures.len()
        ));
    }
    if r.timed_out {
        return Err(format!(
            "delete by query timed out after deleting {} documents",
            r.deleted
        ));
    }
    Ok(Deleted {
        deleted: r.deleted,
        version_conflicts: r.version_conflicts,
    })
}
