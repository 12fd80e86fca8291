//! A [`SearchFilter`] as a tantivy query: every filter is a required clause, with the
//! semantics of [`annostore_core::query::matches`].

use super::cells::{self, CellsQuery};
use super::columns::{CheckedQuery, ColumnCache, ColumnRange};
use super::text::FuzzyTokenQuery;
use super::{CONFIDENCE, END_MS, Fields, START_MS, terms, uuid_text};
use annostore_core::index::IndexError;
use annostore_core::model::{DataCondition, Region, SearchFilter, TextQuery, TimeRange};
use annostore_core::query::{self, MAX_QUERY_TOKENS, SpaceRelation, TimeRelation};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, InvertedIndexRangeQuery, Query, TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption};

fn term(t: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(t, IndexRecordOption::Basic))
}

/// Builds the clauses of one query; a filter that no document can pass makes the whole
/// query match nothing.
struct Clauses {
    must: Vec<Box<dyn Query>>,
    /// Ranges on numeric columns: checked per document under the terms when there are
    /// any, else scanned (see [`ColumnRange`]).
    ranges: Vec<ColumnRange>,
    nothing: bool,
}

impl Clauses {
    fn push(&mut self, q: Box<dyn Query>) {
        self.must.push(q);
    }

    fn push_or_nothing(&mut self, q: Option<Box<dyn Query>>) {
        match q {
            Some(q) => self.must.push(q),
            None => self.nothing = true,
        }
    }

    fn at_most_i64(&mut self, (field, name): Column, v: i64) {
        let bounds = (Bound::Unbounded, Bound::Included(v));
        self.ranges.push(ColumnRange::I64 {
            field,
            name,
            bounds,
        });
    }

    fn at_least_i64(&mut self, (field, name): Column, v: i64) {
        let bounds = (Bound::Included(v), Bound::Unbounded);
        self.ranges.push(ColumnRange::I64 {
            field,
            name,
            bounds,
        });
    }

    /// `field <= v` on f64; nothing passes a NaN bound (every comparison with NaN is
    /// false).
    fn at_most_f64(&mut self, (field, name): Column, v: f64) {
        if v.is_nan() {
            self.nothing = true;
        } else {
            let bounds = (Bound::Unbounded, Bound::Included(v));
            self.ranges.push(ColumnRange::F64 {
                field,
                name,
                bounds,
            });
        }
    }

    fn at_least_f64(&mut self, (field, name): Column, v: f64) {
        if v.is_nan() {
            self.nothing = true;
        } else {
            let bounds = (Bound::Included(v), Bound::Unbounded);
            self.ranges.push(ColumnRange::F64 {
                field,
                name,
                bounds,
            });
        }
    }

    fn finish(mut self, columns: &Arc<ColumnCache>) -> Box<dyn Query> {
        if self.nothing {
            return Box::new(EmptyQuery);
        }
        if self.must.is_empty() {
            // Nothing narrows the documents: scan the columns.
            self.must = self.ranges.drain(..).map(|r| r.scan()).collect();
        }
        let terms: Box<dyn Query> = match self.must.len() {
            0 => Box::new(AllQuery),
            1 => self.must.pop().unwrap_or_else(|| Box::new(AllQuery)),
            _ => Box::new(BooleanQuery::intersection(self.must)),
        };
        if self.ranges.is_empty() {
            terms
        } else {
            Box::new(CheckedQuery::new(terms, self.ranges, columns.clone()))
        }
    }
}

/// A numeric fast field: its handle and its name (how columns are looked up).
type Column = (Field, &'static str);

/// Any of these exact strings (an empty list matches nothing).
fn any_of(field: Field, values: &[String]) -> Option<Box<dyn Query>> {
    let terms: BTreeSet<&String> = values.iter().collect();
    match terms.len() {
        0 => None,
        1 => terms
            .first()
            .map(|v| term(Term::from_field_text(field, v.as_str()))),
        _ => Some(Box::new(TermSetQuery::new(
            terms
                .into_iter()
                .map(|v| Term::from_field_text(field, v.as_str())),
        ))),
    }
}

pub(crate) fn build(
    f: &Fields,
    columns: &Arc<ColumnCache>,
    filter: &SearchFilter,
) -> Result<Box<dyn Query>, IndexError> {
    let mut c = Clauses {
        must: Vec::new(),
        ranges: Vec::new(),
        nothing: false,
    };
    match (media_window(filter), &filter.time_range) {
        // A window of a few media items: the cells near it (which name the media).
        (Some(media), Some(r)) => c.push(Box::new(CellsQuery::new(
            f.cells, &media, r.start_ms, r.end_ms,
        ))),
        _ => {
            if let Some(m) = &filter.media_id {
                c.push(term(Term::from_field_text(f.media_id, m)));
            }
            if let Some(ms) = &filter.media_ids {
                c.push_or_nothing(any_of(f.media_id, ms));
            }
        }
    }
    if let Some(t) = &filter.annotation_type {
        c.push(term(Term::from_field_text(f.annotation_type, t)));
    }
    if let Some(ts) = &filter.annotation_types {
        c.push_or_nothing(any_of(f.annotation_type, ts));
    }
    if let Some(v) = filter.annotation_type_version {
        c.push(term(Term::from_field_u64(
            f.annotation_type_version,
            u64::from(v),
        )));
    }
    if let Some(p) = &filter.pivot_id {
        c.push(term(Term::from_field_text(f.pivot_id, p)));
    }
    if let Some(l) = &filter.label {
        c.push(term(Term::from_field_text(f.label, l)));
    }
    if let Some(ls) = &filter.labels {
        c.push_or_nothing(any_of(f.label, ls));
    }
    if let Some(op) = &filter.operation_id {
        c.push(term(Term::from_field_text(
            f.operation_id,
            uuid_text(op).as_ref(),
        )));
    }
    if let Some(r) = &filter.time_range {
        time(&mut c, f, r);
    }
    // f32 -> f64 is exact and monotonic, so these compare as f32 does.
    if let Some(min) = filter.min_confidence {
        c.at_least_f64((f.confidence, CONFIDENCE), f64::from(min));
    }
    if let Some(max) = filter.max_confidence {
        c.at_most_f64((f.confidence, CONFIDENCE), f64::from(max));
    }
    if let Some(r) = &filter.region {
        region(&mut c, f, r);
    }
    if let Some(t) = &filter.text {
        let q = text(f, t)?;
        c.push_or_nothing(q);
    }
    for cond in filter.data.iter().flatten() {
        data(&mut c, f, cond);
    }
    Ok(c.finish(columns))
}

/// Windows up to this long are narrow (see [`is_narrow`]).
const NARROW_WINDOW_MS: i64 = 10 * 60 * 1_000;

/// Whether a search reads few documents: a window of at most ten minutes of a few media
/// items, read through their cells. Such a search answers in well under a millisecond,
/// so it runs on the request's own thread; the rest (a catalogue-wide scan can take
/// 100 ms) go to the blocking pool.
pub(crate) fn is_narrow(filter: &SearchFilter) -> bool {
    filter.time_range.is_some_and(|r| {
        r.end_ms.saturating_sub(r.start_ms).unsigned_abs() <= NARROW_WINDOW_MS as u64
    }) && media_window(filter).is_some()
}

/// The media items a filter allows, when it names a few (at most [`cells::MAX_MEDIA`]):
/// with a time range, their cells replace their media terms. `media_id` and
/// `media_ids` both hold, so the items are those of both.
fn media_window(filter: &SearchFilter) -> Option<Vec<&str>> {
    let listed: Option<BTreeSet<&str>> = filter
        .media_ids
        .as_ref()
        .map(|ms| ms.iter().map(String::as_str).collect());
    let media: Vec<&str> = match (&filter.media_id, listed) {
        (Some(m), None) => vec![m.as_str()],
        (Some(m), Some(l)) => l.contains(m.as_str()).then(|| vec![m.as_str()])?,
        (None, Some(l)) => l.into_iter().collect(),
        (None, None) => return None,
    };
    (!media.is_empty() && media.len() <= cells::MAX_MEDIA).then_some(media)
}

/// The relation as ranges on the start and end columns (see [`TimeRelation::holds`]).
fn time(c: &mut Clauses, f: &Fields, r: &TimeRange) {
    match r.relation {
        TimeRelation::Intersects => {
            c.at_most_i64((f.start_ms, START_MS), r.end_ms);
            c.at_least_i64((f.end_ms, END_MS), r.start_ms);
        }
        TimeRelation::Within => {
            c.at_least_i64((f.start_ms, START_MS), r.start_ms);
            c.at_most_i64((f.end_ms, END_MS), r.end_ms);
        }
        TimeRelation::Contains => {
            c.at_most_i64((f.start_ms, START_MS), r.start_ms);
            c.at_least_i64((f.end_ms, END_MS), r.end_ms);
        }
    }
}

/// [`Region::holds`] on the corner columns; documents without a box have no corners and
/// match no range.
fn region(c: &mut Clauses, f: &Fields, r: &Region) {
    let q = r.corners();
    match r.relation {
        SpaceRelation::Intersects => {
            c.at_most_f64((f.x1, "x1"), q.x2);
            c.at_least_f64((f.x2, "x2"), q.x1);
            c.at_most_f64((f.y1, "y1"), q.y2);
            c.at_least_f64((f.y2, "y2"), q.y1);
        }
        SpaceRelation::Within => {
            c.at_least_f64((f.x1, "x1"), q.x1);
            c.at_most_f64((f.x2, "x2"), q.x2);
            c.at_least_f64((f.y1, "y1"), q.y1);
            c.at_most_f64((f.y2, "y2"), q.y2);
        }
    }
}

/// Every query token matches a token of one of the fields (see [`TextQuery::matches`]);
/// `None` when nothing can (no token, no field).
fn text(f: &Fields, t: &TextQuery) -> Result<Option<Box<dyn Query>>, IndexError> {
    let tokens: BTreeSet<String> = query::tokens(&t.query).into_iter().collect();
    if tokens.len() > MAX_QUERY_TOKENS {
        return Err(IndexError::Unanswerable(format!(
            "a text query has at most {MAX_QUERY_TOKENS} distinct tokens"
        )));
    }
    let fields: BTreeSet<&String> = t.fields.iter().collect();
    if tokens.is_empty() || fields.is_empty() {
        return Ok(None);
    }
    let mut all: Vec<Box<dyn Query>> = Vec::with_capacity(tokens.len());
    for token in &tokens {
        let fuzzy = t.fuzzy && query::fuzzy_distance(token) > 0;
        let mut any: Vec<Box<dyn Query>> = fields
            .iter()
            .map(|name| -> Box<dyn Query> {
                if fuzzy {
                    Box::new(FuzzyTokenQuery::new(
                        f.text,
                        terms::prefix(terms::TEXT, name),
                        token,
                    ))
                } else {
                    term(Term::from_field_bytes(
                        f.text,
                        &terms::term(terms::TEXT, name, token.as_bytes()),
                    ))
                }
            })
            .collect();
        all.push(match any.len() {
            1 => any.remove(0),
            _ => Box::new(BooleanQuery::union(any)),
        });
    }
    Ok(Some(match all.len() {
        1 => all.remove(0),
        _ => Box::new(BooleanQuery::intersection(all)),
    }))
}

fn data_term(f: &Fields, kind: u8, name: &str, value: &[u8]) -> Box<dyn Query> {
    term(Term::from_field_bytes(
        f.data,
        &terms::term(kind, name, value),
    ))
}

/// One [`DataCondition`]: the field is present, `eq` holds (by kind), and each bound
/// holds on its number.
fn data(c: &mut Clauses, f: &Fields, cond: &DataCondition) {
    let name = cond.field.as_str();
    c.push(data_term(f, terms::PRESENT, name, &[]));
    match &cond.eq {
        None => {}
        Some(Value::String(s)) => c.push(data_term(f, terms::STRING, name, s.as_bytes())),
        Some(Value::Bool(b)) => c.push(data_term(f, terms::BOOL, name, &[u8::from(*b)])),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) => c.push(data_term(f, terms::NUMBER, name, &terms::number(x))),
            None => c.nothing = true,
        },
        Some(Value::Null | Value::Array(_) | Value::Object(_)) => c.nothing = true,
    }
    if let Some(x) = cond.gt {
        number_range(c, f, name, Bound::Excluded(x), Bound::Unbounded);
    }
    if let Some(x) = cond.gte {
        number_range(c, f, name, Bound::Included(x), Bound::Unbounded);
    }
    if let Some(x) = cond.lt {
        number_range(c, f, name, Bound::Unbounded, Bound::Excluded(x));
    }
    if let Some(x) = cond.lte {
        number_range(c, f, name, Bound::Unbounded, Bound::Included(x));
    }
}

/// The numbers of data field `name` within the bounds, as a range of its terms (their
/// bytes keep the numbers' order). Nothing passes a NaN bound.
fn number_range(c: &mut Clauses, f: &Fields, name: &str, lower: Bound<f64>, upper: Bound<f64>) {
    let at = |x: f64| {
        Term::from_field_bytes(f.data, &terms::term(terms::NUMBER, name, &terms::number(x)))
    };
    // Every number of the field is 8 bytes after its prefix: these are its ends.
    let edge = |b: u8| Term::from_field_bytes(f.data, &terms::term(terms::NUMBER, name, &[b; 8]));
    let bound = |b: Bound<f64>, end: u8| match b {
        Bound::Included(x) => Bound::Included(at(x)),
        Bound::Excluded(x) => Bound::Excluded(at(x)),
        Bound::Unbounded => Bound::Included(edge(end)),
    };
    let nan = |b: &Bound<f64>| matches!(b, Bound::Included(x) | Bound::Excluded(x) if x.is_nan());
    if nan(&lower) || nan(&upper) {
        c.nothing = true;
        return;
    }
    c.push(Box::new(InvertedIndexRangeQuery::new(
        bound(lower, 0),
        bound(upper, 0xff),
    )));
}
