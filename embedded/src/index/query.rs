//! A [`SearchFilter`] as a tantivy query: every filter is a required clause.

use super::{Fields, uuid_text};
use annostore_core::model::SearchFilter;
use std::ops::Bound;
use tantivy::Term;
use tantivy::query::{AllQuery, BooleanQuery, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;

fn term(t: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(t, IndexRecordOption::Basic))
}

pub(crate) fn build(f: &Fields, filter: &SearchFilter) -> Box<dyn Query> {
    let mut must: Vec<Box<dyn Query>> = Vec::new();
    if let Some(m) = &filter.media_id {
        must.push(term(Term::from_field_text(f.media_id, m)));
    }
    if let Some(t) = &filter.annotation_type {
        must.push(term(Term::from_field_text(f.annotation_type, t)));
    }
    if let Some(v) = filter.annotation_type_version {
        must.push(term(Term::from_field_u64(
            f.annotation_type_version,
            u64::from(v),
        )));
    }
    if let Some(p) = &filter.pivot_id {
        must.push(term(Term::from_field_text(f.pivot_id, p)));
    }
    if let Some(l) = &filter.label {
        must.push(term(Term::from_field_text(f.label, l)));
    }
    if let Some(op) = &filter.operation_id {
        must.push(term(Term::from_field_text(
            f.operation_id,
            uuid_text(op).as_ref(),
        )));
    }
    if let Some(r) = &filter.time_range {
        // Intersects: start <= range.end and end >= range.start (touching ends match).
        must.push(Box::new(RangeQuery::new(
            Bound::Unbounded,
            Bound::Included(Term::from_field_i64(f.start_ms, r.end_ms)),
        )));
        must.push(Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_i64(f.end_ms, r.start_ms)),
            Bound::Unbounded,
        )));
    }
    if let Some(c) = filter.min_confidence {
        // f32 -> f64 is exact and monotonic, so this is `confidence >= c` on f32.
        must.push(Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_f64(f.confidence, f64::from(c))),
            Bound::Unbounded,
        )));
    }
    match must.len() {
        0 => Box::new(AllQuery),
        1 => must.pop().unwrap_or_else(|| Box::new(AllQuery)),
        _ => Box::new(BooleanQuery::intersection(must)),
    }
}
