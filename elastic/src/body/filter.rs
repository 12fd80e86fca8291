//! The filter clauses of the search language (`annostore_core::query`) as Elasticsearch
//! query clauses, clause by clause as `query::matches` reads them.

use super::{MAX_KEYWORD_BYTES, data_field, number, uuid_text};
use annostore_core::model::SearchFilter;
use annostore_core::query::{
    self, DATA_PREFIX, DataCondition, LABEL_FIELD, SpaceRelation, TextQuery, TimeRelation,
};
use serde_json::{Map, Value, json};

/// A float filter bound as JSON: f32's shortest decimal form, read back as f64, so
/// Elasticsearch (which parses it and rounds to float) compares with exactly the f32
/// the caller gave; `0.1_f32 as f64` would print as 0.10000000149011612.
pub(super) fn float_value(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// An f64 as JSON (serde_json prints the shortest form that reads back exactly).
fn double_value(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A clause no document matches.
fn none() -> Value {
    json!({"match_none": {}})
}

/// `terms` on `field`, or no match for an empty list (as `Vec::contains` on it).
fn any_of(field: &str, values: &[String]) -> Value {
    if values.is_empty() {
        none()
    } else {
        json!({"terms": {field: values}})
    }
}

/// The field that holds the text of a [`TextQuery`] field name, if any.
pub fn text_field(name: &str) -> Option<String> {
    if name == LABEL_FIELD {
        return Some("label.text".into());
    }
    name.strip_prefix(DATA_PREFIX)
        .map(|f| format!("data_text.{}", data_field(f)))
}

/// A text query: every token of `query::tokens(query)` must match a token of one of
/// the fields. Fuzzy: per token, a `match` with `fuzziness: AUTO` (Elasticsearch's
/// AUTO is `query::fuzzy_distance`, by code points) and transpositions (Lucene's are
/// the restricted kind, as `strsim::osa_distance`), rewritten `constant_score` so that
/// every term within the distance matches (the default rewrite keeps only the top
/// `max_expansions`, 50). Exact: a `term` per token (the query tokens are analysed
/// already).
fn text_clause(t: &TextQuery) -> Value {
    let fields: Vec<String> = t.fields.iter().filter_map(|f| text_field(f)).collect();
    let tokens = query::tokens(&t.query);
    if tokens.is_empty() || fields.is_empty() {
        return none();
    }
    let must: Vec<Value> = tokens
        .iter()
        .map(|token| {
            let should: Vec<Value> = fields
                .iter()
                .map(|f| {
                    if t.fuzzy {
                        json!({"match": {f.as_str(): {
                            "query": token,
                            "fuzziness": "AUTO",
                            "fuzzy_transpositions": true,
                            "prefix_length": 0,
                            "fuzzy_rewrite": "constant_score",
                        }}})
                    } else {
                        json!({"term": {f.as_str(): token}})
                    }
                })
                .collect();
            json!({"bool": {"should": should, "minimum_should_match": 1}})
        })
        .collect();
    json!({"bool": {"must": must}})
}

/// The clauses of one data condition (`DataCondition::matches`): `eq` on the field of
/// its kind, bounds on `data_num`; neither: the key is there. A value of another kind
/// lives in another field, so it never matches.
fn data_clauses(c: &DataCondition, out: &mut Vec<Value>) -> Result<(), String> {
    let name = data_field(&c.field);
    if c.field.len() > MAX_KEYWORD_BYTES {
        return Err(format!(
            "data field names longer than {MAX_KEYWORD_BYTES} bytes cannot be searched on Elasticsearch"
        ));
    }
    match &c.eq {
        None if !c.has_bounds() => out.push(json!({"term": {"data_keys": c.field}})),
        None => {}
        Some(Value::String(s)) => {
            if s.len() > MAX_KEYWORD_BYTES {
                return Err(format!(
                    "data.{}: strings longer than {MAX_KEYWORD_BYTES} bytes cannot be compared on Elasticsearch",
                    c.field
                ));
            }
            out.push(json!({"term": {format!("data_kw.{name}"): s}}));
        }
        Some(Value::Bool(b)) => out.push(json!({"term": {format!("data_bool.{name}"): b}})),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) => {
                out.push(json!({"term": {format!("data_num.{name}"): double_value(number(x))}}))
            }
            None => out.push(none()),
        },
        Some(_) => out.push(none()),
    }
    if c.has_bounds() {
        let mut bounds = Map::new();
        for (op, b) in [("gt", c.gt), ("gte", c.gte), ("lt", c.lt), ("lte", c.lte)] {
            if let Some(b) = b {
                bounds.insert(op.into(), double_value(number(b)));
            }
        }
        out.push(json!({"range": {format!("data_num.{name}"): bounds}}));
    }
    Ok(())
}

/// The filter clauses of a [`SearchFilter`], in a fixed order. Every one is a `filter`
/// clause (no scoring); the semantics are `annostore_core::query::matches`, clause by
/// clause. Refused: comparisons the index cannot make exactly (see
/// [`MAX_KEYWORD_BYTES`]).
pub fn filter_clauses(filter: &SearchFilter) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    if let Some(m) = &filter.media_id {
        out.push(json!({"term": {"media_id": m}}));
    }
    if let Some(ms) = &filter.media_ids {
        out.push(any_of("media_id", ms));
    }
    if let Some(t) = &filter.annotation_type {
        out.push(json!({"term": {"annotation_type": t}}));
    }
    if let Some(ts) = &filter.annotation_types {
        out.push(any_of("annotation_type", ts));
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
    if let Some(ls) = &filter.labels {
        out.push(any_of("label", ls));
    }
    if let Some(op) = &filter.operation_id {
        out.push(json!({"term": {"operation_id": uuid_text(op)}}));
    }
    if let Some(r) = &filter.time_range {
        let range = |field: &str, op: &str, v: i64| json!({"range": {field: {op: v}}});
        let (from, to) = (r.start_ms, r.end_ms);
        match r.relation {
            // start <= to and end >= from (touching ends match).
            TimeRelation::Intersects => {
                out.push(range("start_ms", "lte", to));
                out.push(range("end_ms", "gte", from));
            }
            TimeRelation::Within => {
                out.push(range("start_ms", "gte", from));
                out.push(range("end_ms", "lte", to));
            }
            TimeRelation::Contains => {
                out.push(range("start_ms", "lte", from));
                out.push(range("end_ms", "gte", to));
            }
        }
    }
    if let Some(c) = filter.min_confidence {
        // A range skips documents without a confidence, as `matches` does.
        out.push(json!({"range": {"confidence": {"gte": float_value(c)}}}));
    }
    if let Some(c) = filter.max_confidence {
        out.push(json!({"range": {"confidence": {"lte": float_value(c)}}}));
    }
    if let Some(region) = &filter.region {
        // Documents without a box have no `box.*` values: no range matches them.
        let r = region.corners();
        let corner = |field: &str, op: &str, v: f64| json!({"range": {format!("box.{field}"): {op: double_value(v)}}});
        match region.relation {
            SpaceRelation::Intersects => {
                out.push(corner("x1", "lte", r.x2));
                out.push(corner("x2", "gte", r.x1));
                out.push(corner("y1", "lte", r.y2));
                out.push(corner("y2", "gte", r.y1));
            }
            SpaceRelation::Within => {
                out.push(corner("x1", "gte", r.x1));
                out.push(corner("x2", "lte", r.x2));
                out.push(corner("y1", "gte", r.y1));
                out.push(corner("y2", "lte", r.y2));
            }
        }
    }
    if let Some(t) = &filter.text {
        out.push(text_clause(t));
    }
    for c in filter.data.iter().flatten() {
        data_clauses(c, &mut out)?;
    }
    Ok(out)
}
