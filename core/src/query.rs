//! The search language beyond equality: time relations and frame times, regions of the
//! frame, full-text and fuzzy text, filters on `data` fields, sort orders, nearest
//! neighbours, aggregations and co-occurrence. The types are what clients send (after
//! normalisation); the functions are the semantics, written once: every index engine
//! must return what these say, and the tests compare engines with them by brute force.

use crate::model::{Annotation, SearchFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// How an annotation's `[start_ms, end_ms]` must relate to a time range (both closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeRelation {
    /// They share at least one millisecond (touching ends match).
    #[default]
    Intersects,
    /// The annotation lies inside the range.
    Within,
    /// The annotation covers the whole range.
    Contains,
}

impl TimeRelation {
    pub fn is_default(&self) -> bool {
        *self == TimeRelation::Intersects
    }

    /// True when `[start, end]` relates to `[from, to]` this way.
    pub fn holds(self, start: i64, end: i64, from: i64, to: i64) -> bool {
        match self {
            TimeRelation::Intersects => start <= to && end >= from,
            TimeRelation::Within => start >= from && end <= to,
            TimeRelation::Contains => start <= from && end >= to,
        }
    }
}

/// A frame of a video with a rational frame rate (`rate_num / rate_den` frames per
/// second, e.g. 30000/1001). Frame `n` lasts from `n * rate_den / rate_num` seconds
/// (inclusive) to `(n + 1) * rate_den / rate_num` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameTime {
    pub frame: u64,
    pub rate_num: u32,
    pub rate_den: u32,
}

impl FrameTime {
    /// The millisecond in which the frame begins: floor(frame * 1000 * den / num).
    pub fn first_ms(&self) -> Result<i64, String> {
        self.boundary_ms(self.frame, false)
    }

    /// The last millisecond the frame covers: ceil((frame + 1) * 1000 * den / num) - 1,
    /// never before its first.
    pub fn last_ms(&self) -> Result<i64, String> {
        let end = self.boundary_ms(self.frame.saturating_add(1), true)?;
        Ok((end - 1).max(self.first_ms()?))
    }

    fn boundary_ms(&self, frame: u64, round_up: bool) -> Result<i64, String> {
        if self.rate_num == 0 || self.rate_den == 0 {
            return Err("rate_num and rate_den must be at least 1".into());
        }
        let num = u128::from(self.rate_num);
        let scaled = u128::from(frame) * 1000 * u128::from(self.rate_den);
        let ms = if round_up {
            scaled.div_ceil(num)
        } else {
            scaled / num
        };
        i64::try_from(ms).map_err(|_| "frame time out of range".to_string())
    }
}

/// A time range in milliseconds, both ends included, and how annotations must relate to
/// it. Clients may give either end as a frame instead (`start` / `end`, see
/// [`FrameTime`]); it is normalised to milliseconds when read, so engines only ever see
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TimeRangeWire")]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default, skip_serializing_if = "TimeRelation::is_default")]
    pub relation: TimeRelation,
}

impl TimeRange {
    /// An intersecting range.
    pub fn new(start_ms: i64, end_ms: i64) -> TimeRange {
        TimeRange {
            start_ms,
            end_ms,
            relation: TimeRelation::Intersects,
        }
    }

    pub fn holds(&self, start_ms: i64, end_ms: i64) -> bool {
        self.relation
            .holds(start_ms, end_ms, self.start_ms, self.end_ms)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeRangeWire {
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    start: Option<FrameTime>,
    end: Option<FrameTime>,
    #[serde(default)]
    relation: TimeRelation,
}

impl TryFrom<TimeRangeWire> for TimeRange {
    type Error = String;

    fn try_from(w: TimeRangeWire) -> Result<TimeRange, String> {
        let start_ms = match (w.start_ms, w.start) {
            (Some(ms), None) => ms,
            (None, Some(f)) => f.first_ms()?,
            (None, None) => return Err("time_range needs start_ms or start (a frame)".into()),
            (Some(_), Some(_)) => return Err("time_range takes start_ms or start, not both".into()),
        };
        let end_ms = match (w.end_ms, w.end) {
            (Some(ms), None) => ms,
            (None, Some(f)) => f.last_ms()?,
            (None, None) => return Err("time_range needs end_ms or end (a frame)".into()),
            (Some(_), Some(_)) => return Err("time_range takes end_ms or end, not both".into()),
        };
        Ok(TimeRange {
            start_ms,
            end_ms,
            relation: w.relation,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Space
// ---------------------------------------------------------------------------------------

/// How a box must relate to a region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceRelation {
    /// They share at least a point (touching edges match).
    #[default]
    Intersects,
    /// The box lies inside the region.
    Within,
}

impl SpaceRelation {
    pub fn is_default(&self) -> bool {
        *self == SpaceRelation::Intersects
    }
}

/// A region of the frame in normalised coordinates (0..1, (x, y) the top-left corner).
/// Annotations without a box never match a region.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    #[serde(default, skip_serializing_if = "SpaceRelation::is_default")]
    pub relation: SpaceRelation,
}

/// A box's corners as engines index them: f64, computed from the f32 box as
/// `x1 = x, x2 = x + w` (in f64), so every engine compares the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Corners {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

impl Corners {
    pub fn of(b: &crate::model::BBox) -> Corners {
        let (x, y) = (f64::from(b.x), f64::from(b.y));
        Corners {
            x1: x,
            y1: y,
            x2: x + f64::from(b.w),
            y2: y + f64::from(b.h),
        }
    }
}

impl Region {
    /// The region's corners, computed as a box's are.
    pub fn corners(&self) -> Corners {
        Corners {
            x1: self.x,
            y1: self.y,
            x2: self.x + self.w,
            y2: self.y + self.h,
        }
    }

    pub fn holds(&self, b: &Corners) -> bool {
        let r = self.corners();
        match self.relation {
            SpaceRelation::Intersects => {
                b.x1 <= r.x2 && b.x2 >= r.x1 && b.y1 <= r.y2 && b.y2 >= r.y1
            }
            SpaceRelation::Within => b.x1 >= r.x1 && b.x2 <= r.x2 && b.y1 >= r.y1 && b.y2 <= r.y2,
        }
    }

    /// Problems with the region, if any.
    pub fn check(&self) -> Result<(), String> {
        let all = [self.x, self.y, self.w, self.h];
        if all
            .iter()
            .any(|v| !v.is_finite() || !(0.0..=1.0).contains(v))
        {
            return Err("x, y, w and h must be between 0 and 1".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------

/// Longest token that text search indexes, in bytes (Elasticsearch's mapping drops
/// longer ones with a `length` filter; tantivy's default tokenizer would also drop
/// tokens of exactly 40 bytes, so the tantivy index does not use it).
pub const MAX_TOKEN_BYTES: usize = 40;
/// Most tokens in one text query.
pub const MAX_QUERY_TOKENS: usize = 16;

/// Full-text search: every token of `query` must match a token of one of `fields`
/// (`label`, or `data.<name>` for a string field of `data` that the type schema marks
/// `"x-annostore-search": "text"`). Fuzzy matching allows, per token, the edit
/// distance Elasticsearch's `AUTO` allows (0 for 1-2 characters, 1 for 3-5, 2 above),
/// with a transposition counting as one edit. The service fills `fields` in from the
/// type schemas when the client leaves it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextQuery {
    pub query: String,
    #[serde(default = "yes")]
    pub fuzzy: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

fn yes() -> bool {
    true
}

/// The label's text field name in [`TextQuery::fields`].
pub const LABEL_FIELD: &str = "label";
/// The prefix of a data field's name in [`TextQuery::fields`].
pub const DATA_PREFIX: &str = "data.";

/// How text is cut into tokens: runs of alphanumeric characters, tokens longer than
/// [`MAX_TOKEN_BYTES`] (before lower-casing) dropped, lower-cased by
/// `str::to_lowercase` (a final sigma becomes `ς`). Close to tantivy's default
/// tokenizer, which differs at 40 bytes and on the final sigma.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
        .map(str::to_lowercase)
        .collect()
}

/// The edits a fuzzy query token may be away from a document token (Elasticsearch's
/// `fuzziness: AUTO`, by characters).
pub fn fuzzy_distance(token: &str) -> u8 {
    match token.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

/// True when query token `q` matches document token `t`.
pub fn token_matches(q: &str, t: &str, fuzzy: bool) -> bool {
    if !fuzzy {
        return q == t;
    }
    let d = fuzzy_distance(q);
    d == 0 && q == t || d > 0 && strsim::osa_distance(q, t) <= usize::from(d)
}

/// The text of one field of an annotation, as the index sees it.
pub fn field_text<'a>(a: &'a Annotation, field: &str) -> Option<&'a str> {
    if field == LABEL_FIELD {
        return a.label.as_deref();
    }
    let name = field.strip_prefix(DATA_PREFIX)?;
    a.data.as_ref()?.get(name)?.as_str()
}

impl TextQuery {
    pub fn matches(&self, a: &Annotation) -> bool {
        let doc: Vec<Vec<String>> = self
            .fields
            .iter()
            .filter_map(|f| field_text(a, f))
            .map(tokens)
            .collect();
        let query = tokens(&self.query);
        !query.is_empty()
            && query.iter().all(|q| {
                doc.iter()
                    .flatten()
                    .any(|t| token_matches(q, t, self.fuzzy))
            })
    }
}

// ---------------------------------------------------------------------------------------
// Data fields
// ---------------------------------------------------------------------------------------

/// A condition on one top-level field of `data`. `eq` compares strings exactly, numbers
/// as f64 and booleans; the bounds compare numbers (as f64). Every part given must hold;
/// an annotation without the field, or with a value of another kind, never matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCondition {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

impl DataCondition {
    pub fn has_bounds(&self) -> bool {
        self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some()
    }

    pub fn matches(&self, a: &Annotation) -> bool {
        let Some(v) = a.data.as_ref().and_then(|d| d.get(&self.field)) else {
            return false;
        };
        let eq = match &self.eq {
            None => true,
            Some(Value::String(s)) => v.as_str() == Some(s),
            Some(Value::Bool(b)) => v.as_bool() == Some(*b),
            Some(Value::Number(n)) => n.as_f64().is_some_and(|n| v.as_f64() == Some(n)),
            Some(_) => false,
        };
        eq && (!self.has_bounds() || {
            v.as_f64().is_some_and(|x| {
                self.gt.is_none_or(|b| x > b)
                    && self.gte.is_none_or(|b| x >= b)
                    && self.lt.is_none_or(|b| x < b)
                    && self.lte.is_none_or(|b| x <= b)
            })
        })
    }
}

/// What a type schema says about a top-level `data` field, for search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    String,
    Number,
    Boolean,
}

/// The searchable fields that a type's JSON Schema declares: its top-level
/// `properties` of type string, number, integer or boolean. A string property with
/// `"x-annostore-search": "text"` is also searched by text queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaFields {
    pub filters: BTreeMap<String, FieldKind>,
    pub text: Vec<String>,
}

/// The schema keyword that marks a string property for full-text search.
pub const TEXT_KEYWORD: &str = "x-annostore-search";

impl SchemaFields {
    pub fn of(schema: &Value) -> SchemaFields {
        let mut out = SchemaFields::default();
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return out;
        };
        for (name, p) in props {
            // "string", or ["string", "null"]: one type besides null.
            let ty = match p.get("type") {
                Some(Value::String(t)) => Some(t.as_str()),
                Some(Value::Array(ts)) => {
                    let named: Vec<&str> = ts
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|t| *t != "null")
                        .collect();
                    (named.len() == 1).then(|| named[0])
                }
                _ => None,
            };
            let kind = match ty {
                Some("string") => FieldKind::String,
                Some("number" | "integer") => FieldKind::Number,
                Some("boolean") => FieldKind::Boolean,
                _ => continue,
            };
            out.filters.insert(name.clone(), kind);
            if kind == FieldKind::String
                && p.get(TEXT_KEYWORD).and_then(Value::as_str) == Some("text")
            {
                out.text.push(format!("{DATA_PREFIX}{name}"));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// The whole filter
// ---------------------------------------------------------------------------------------

/// True when `a` passes every filter of `filter` (scope aside): what the index must
/// match, the brute-force model of search, and the check the service makes on each hit
/// it reads back from the store.
pub fn matches(filter: &SearchFilter, a: &Annotation) -> bool {
    fn one_of<T: PartialEq>(list: &Option<Vec<T>>, v: &T) -> bool {
        list.as_ref().is_none_or(|l| l.contains(v))
    }
    filter.media_id.as_ref().is_none_or(|m| *m == a.media_id)
        && one_of(&filter.media_ids, &a.media_id)
        && filter
            .annotation_type
            .as_ref()
            .is_none_or(|t| *t == a.annotation_type)
        && one_of(&filter.annotation_types, &a.annotation_type)
        && filter
            .annotation_type_version
            .is_none_or(|v| v == a.annotation_type_version)
        && filter.pivot_id.as_ref().is_none_or(|p| *p == a.pivot_id)
        && filter
            .label
            .as_ref()
            .is_none_or(|l| a.label.as_ref() == Some(l))
        && filter
            .labels
            .as_ref()
            .is_none_or(|ls| a.label.as_ref().is_some_and(|l| ls.contains(l)))
        && filter
            .time_range
            .is_none_or(|r| r.holds(a.start_ms, a.end_ms))
        && filter
            .min_confidence
            .is_none_or(|c| a.confidence.is_some_and(|x| x >= c))
        && filter
            .max_confidence
            .is_none_or(|c| a.confidence.is_some_and(|x| x <= c))
        && filter.operation_id.is_none_or(|o| o == a.operation_id)
        && filter
            .region
            .is_none_or(|r| a.bbox.is_some_and(|b| r.holds(&Corners::of(&b))))
        && filter.text.as_ref().is_none_or(|t| t.matches(a))
        && filter
            .data
            .as_ref()
            .is_none_or(|conds| conds.iter().all(|c| c.matches(a)))
}

// ---------------------------------------------------------------------------------------
// Sort orders and positions
// ---------------------------------------------------------------------------------------

/// The order of a search's results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// (media_id, start_ms, id), ascending.
    #[default]
    Time,
    /// Confidence, highest first (annotations without one last), then by time.
    Confidence,
    /// Similarity to the query vector, highest first, then by time (nearest-neighbour
    /// searches only).
    Score,
}

impl SortOrder {
    pub fn is_default(&self) -> bool {
        *self == SortOrder::Time
    }
}

/// The rank an annotation sorts by before its time key: confidence (missing: -1) for
/// [`SortOrder::Confidence`], similarity for [`SortOrder::Score`], none for time.
pub fn rank_of(order: SortOrder, a: &Annotation, similarity: Option<f32>) -> Option<f32> {
    match order {
        SortOrder::Time => None,
        SortOrder::Confidence => Some(a.confidence.unwrap_or(MISSING_RANK)),
        SortOrder::Score => similarity,
    }
}

/// The rank of an annotation without confidence: below every valid one.
pub const MISSING_RANK: f32 = -1.0;

/// Compares two positions `(rank, key)` in an order: rank descending, then key.
pub fn compare(
    order: SortOrder,
    a: (Option<f32>, &crate::model::SortKey),
    b: (Option<f32>, &crate::model::SortKey),
) -> Ordering {
    let by_rank = match order {
        SortOrder::Time => Ordering::Equal,
        _ => {
            let ra = a.0.unwrap_or(MISSING_RANK);
            let rb = b.0.unwrap_or(MISSING_RANK);
            rb.total_cmp(&ra)
        }
    };
    by_rank.then_with(|| a.1.cmp(b.1))
}

// ---------------------------------------------------------------------------------------
// Nearest neighbours
// ---------------------------------------------------------------------------------------

/// Most neighbours one search may ask for.
pub const MAX_K: u32 = 1_000;

/// A nearest-neighbour search: the `k` annotations most similar to a vector (given, or
/// made from `text` by the configured text encoder) among those the filters match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default = "default_k")]
    pub k: u32,
}

fn default_k() -> u32 {
    10
}

/// Cosine similarity; 0 when either vector is zero or they differ in length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())) as f32
    }
}

// ---------------------------------------------------------------------------------------
// Aggregations
// ---------------------------------------------------------------------------------------

/// Most buckets one histogram may have.
pub const MAX_BUCKETS: i64 = 10_000;

/// What to count over the annotations a filter matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// The `n` most frequent labels (annotations without a label are not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<u32>,
    /// Counts per (type, version).
    #[serde(default)]
    pub types: bool,
    /// A time histogram (one media item: the filter must name exactly one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<HistogramSpec>,
}

/// Buckets `[i * interval_ms, (i + 1) * interval_ms - 1]`; an annotation counts in every
/// bucket its `[start_ms, end_ms]` touches (what a timeline draws). Empty buckets are
/// left out. With `by_label`, each bucket also counts per label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramSpec {
    pub interval_ms: i64,
    #[serde(default)]
    pub by_label: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregates {
    /// Annotations matched.
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<LabelCount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<TypeCount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Vec<Bucket>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelCount {
    pub label: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCount {
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub start_ms: i64,
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, u64>>,
}

/// The buckets `[start_ms, end_ms]` touches.
pub fn buckets_of(start_ms: i64, end_ms: i64, interval_ms: i64) -> std::ops::RangeInclusive<i64> {
    start_ms.div_euclid(interval_ms)..=end_ms.max(start_ms).div_euclid(interval_ms)
}

/// Accumulates aggregates one annotation at a time; engines without aggregations of
/// their own, and the tests' brute force, use it.
#[derive(Debug, Default)]
pub struct Aggregator {
    spec: AggregateSpec,
    total: u64,
    labels: BTreeMap<String, u64>,
    types: BTreeMap<(String, u32), u64>,
    buckets: BTreeMap<i64, (u64, BTreeMap<String, u64>)>,
}

impl Aggregator {
    pub fn new(spec: AggregateSpec) -> Aggregator {
        Aggregator {
            spec,
            ..Default::default()
        }
    }

    pub fn add(&mut self, a: &Annotation) {
        self.total += 1;
        if self.spec.labels.is_some()
            && let Some(l) = &a.label
        {
            *self.labels.entry(l.clone()).or_default() += 1;
        }
        if self.spec.types {
            *self
                .types
                .entry((a.annotation_type.clone(), a.annotation_type_version))
                .or_default() += 1;
        }
        if let Some(h) = self.spec.histogram {
            for b in buckets_of(a.start_ms, a.end_ms, h.interval_ms) {
                let bucket = self.buckets.entry(b).or_default();
                bucket.0 += 1;
                if h.by_label
                    && let Some(l) = &a.label
                {
                    *bucket.1.entry(l.clone()).or_default() += 1;
                }
            }
        }
    }

    pub fn finish(self) -> Aggregates {
        finish_aggregates(
            &self.spec,
            self.total,
            self.labels,
            self.types,
            self.buckets,
        )
    }
}

/// Aggregates from raw counts: labels by count (highest first, then by name) cut to the
/// requested number, types by name and version, buckets by time.
pub fn finish_aggregates(
    spec: &AggregateSpec,
    total: u64,
    labels: BTreeMap<String, u64>,
    types: BTreeMap<(String, u32), u64>,
    buckets: BTreeMap<i64, (u64, BTreeMap<String, u64>)>,
) -> Aggregates {
    let labels = spec.labels.map(|n| {
        let mut v: Vec<LabelCount> = labels
            .into_iter()
            .map(|(label, count)| LabelCount { label, count })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
        v.truncate(n as usize);
        v
    });
    let types = spec.types.then(|| {
        types
            .into_iter()
            .map(
                |((annotation_type, annotation_type_version), count)| TypeCount {
                    annotation_type,
                    annotation_type_version,
                    count,
                },
            )
            .collect()
    });
    let histogram = spec.histogram.map(|h| {
        buckets
            .into_iter()
            .map(|(i, (count, by_label))| Bucket {
                start_ms: i * h.interval_ms,
                count,
                labels: h.by_label.then_some(by_label),
            })
            .collect()
    });
    Aggregates {
        total,
        labels,
        types,
        histogram,
    }
}

// ---------------------------------------------------------------------------------------
// Co-occurrence
// ---------------------------------------------------------------------------------------

/// A closed interval of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The union of closed intervals, as disjoint sorted intervals (touching or
/// overlapping ones merged: [0, 5] and [6, 9] become [0, 9], the milliseconds being
/// whole).
pub fn union(mut spans: Vec<Interval>) -> Vec<Interval> {
    spans.sort_by_key(|s| (s.start_ms, s.end_ms));
    let mut out: Vec<Interval> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.start_ms <= last.end_ms.saturating_add(1) => {
                last.end_ms = last.end_ms.max(s.end_ms);
            }
            _ => out.push(s),
        }
    }
    out
}

/// The intersection of two unions (each disjoint and sorted).
pub fn intersect(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let start = a[i].start_ms.max(b[j].start_ms);
        let end = a[i].end_ms.min(b[j].end_ms);
        if start <= end {
            out.push(Interval {
                start_ms: start,
                end_ms: end,
            });
        }
        if a[i].end_ms < b[j].end_ms {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_map_to_the_milliseconds_they_cover() {
        let f = |frame| FrameTime {
            frame,
            rate_num: 30000,
            rate_den: 1001,
        };
        // Frame 0: [0, 33.366...) ms.
        assert_eq!(f(0).first_ms().unwrap(), 0);
        assert_eq!(f(0).last_ms().unwrap(), 33);
        // Frame 30: [1001, 1034.366...) ms.
        assert_eq!(f(30).first_ms().unwrap(), 1001);
        assert_eq!(f(30).last_ms().unwrap(), 1034);
        let p = FrameTime {
            frame: 25,
            rate_num: 25,
            rate_den: 1,
        };
        assert_eq!((p.first_ms().unwrap(), p.last_ms().unwrap()), (1000, 1039));
        let bad = FrameTime {
            frame: 1,
            rate_num: 0,
            rate_den: 1,
        };
        assert!(bad.first_ms().is_err());
    }

    #[test]
    fn time_ranges_read_frames_and_milliseconds() {
        let r: TimeRange = serde_json::from_str(
            r#"{"start": {"frame": 30, "rate_num": 30000, "rate_den": 1001}, "end_ms": 2000, "relation": "within"}"#,
        )
        .unwrap();
        assert_eq!((r.start_ms, r.end_ms), (1001, 2000));
        assert_eq!(r.relation, TimeRelation::Within);
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            serde_json::json!({"start_ms": 1001, "end_ms": 2000, "relation": "within"})
        );
        assert!(serde_json::from_str::<TimeRange>(r#"{"start_ms": 1}"#).is_err());
        assert!(
            serde_json::from_str::<TimeRange>(
                r#"{"start_ms": 1, "start": {"frame": 1, "rate_num": 1, "rate_den": 1}, "end_ms": 3}"#
            )
            .is_err()
        );
    }

    #[test]
    fn time_relations() {
        let r = |rel| TimeRange {
            start_ms: 10,
            end_ms: 20,
            relation: rel,
        };
        use TimeRelation::*;
        assert!(r(Intersects).holds(20, 30) && !r(Intersects).holds(21, 30));
        assert!(r(Within).holds(10, 20) && !r(Within).holds(9, 20));
        assert!(
            r(Contains).holds(10, 20) && r(Contains).holds(0, 30) && !r(Contains).holds(11, 30)
        );
    }

    #[test]
    fn fuzzy_text_finds_a_transposition() {
        assert!(token_matches("curtian", "curtain", true));
        assert!(!token_matches("curtian", "curtain", false));
        assert!(token_matches("cat", "cut", true));
        assert!(!token_matches("ca", "cb", true));
        assert!(!token_matches("cat", "dog", true));
        assert_eq!(tokens("Red-Car, parked!"), vec!["red", "car", "parked"]);
    }

    #[test]
    fn schema_fields() {
        let s = serde_json::json!({"properties": {
            "caption": {"type": "string", "x-annostore-search": "text"},
            "kind": {"type": "string"},
            "speed": {"type": "number"},
            "n": {"type": "integer"},
            "ok": {"type": "boolean"},
            "maybe": {"type": ["number", "null"]},
            "either": {"type": ["number", "string"]},
            "nested": {"type": "object"}
        }});
        let f = SchemaFields::of(&s);
        assert_eq!(f.text, vec!["data.caption"]);
        assert_eq!(f.filters.len(), 6);
        assert_eq!(f.filters["maybe"], FieldKind::Number);
        assert!(!f.filters.contains_key("either"));
        assert_eq!(f.filters["n"], FieldKind::Number);
    }

    #[test]
    fn unions_and_intersections() {
        let iv = |s, e| Interval {
            start_ms: s,
            end_ms: e,
        };
        let a = union(vec![iv(5, 9), iv(0, 4), iv(20, 30)]);
        assert_eq!(a, vec![iv(0, 9), iv(20, 30)]);
        let b = union(vec![iv(8, 25)]);
        assert_eq!(intersect(&a, &b), vec![iv(8, 9), iv(20, 25)]);
    }

    #[test]
    fn histogram_counts_every_bucket_touched() {
        assert_eq!(buckets_of(999, 2000, 1000), 0..=2);
        assert_eq!(buckets_of(1000, 1000, 1000), 1..=1);
    }
}
