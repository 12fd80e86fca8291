//! Reading Elasticsearch's answers: bulk items, search hits, counts and error bodies,
//! and which failures are worth a retry.

use annostore_core::model::SortKey;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
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
}

/// One hit: its position in search order and its stored operation key.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub key: SortKey,
    pub op_key: u64,
}

/// The hits of a search, or why the answer cannot be trusted (partial results or a
/// hit without the values the adapter asked for).
pub fn search_hits(body: &[u8]) -> Result<Vec<SearchHit>, String> {
    let r: SearchResponse =
        serde_json::from_slice(body).map_err(|e| format!("unreadable search response: {e}"))?;
    if r.timed_out || r.shards.failed > 0 {
        return Err(format!(
            "partial search results (timed out: {}, failed shards: {})",
            r.timed_out, r.shards.failed
        ));
    }
    r.hits
        .map(|h| h.hits)
        .unwrap_or_default()
        .iter()
        .map(hit)
        .collect()
}

fn hit(h: &RawHit) -> Result<SearchHit, String> {
    let bad = || format!("hit without the expected sort values: {:?}", h.sort);
    let [media, start, id] = h.sort.as_slice() else {
        return Err(bad());
    };
    let media_id = media.as_str().ok_or_else(bad)?.to_owned();
    let start_ms = start.as_i64().ok_or_else(bad)?;
    let id = id
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(bad)?;
    let op_key = h
        .fields
        .get("op_key")
        .and_then(|v| v.first())
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("hit {id} without op_key"))?;
    Ok(SearchHit {
        key: SortKey {
            media_id,
            start_ms,
            id,
        },
        op_key: op_key as u64,
    })
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
