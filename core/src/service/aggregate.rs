//! Counts (labels, types, a timeline histogram) and co-occurrence (when several
//! conditions hold at once in one media item), over what search shows.

use super::Service;
use crate::error::{Error, FieldError};
use crate::index::{AggregateQuery, Scope};
use crate::model::{SearchFilter, SearchRequest, TimeRange};
use crate::query::{self, AggregateSpec, Aggregates, Interval};
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/annotations/aggregate`: a search's filters and what to count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateRequest {
    #[serde(flatten)]
    pub filter: SearchFilter,
    pub aggregations: AggregateSpec,
}

/// The body of `POST /v1/annotations/cooccurrence`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooccurrenceRequest {
    /// The one media item to look in.
    pub media_id: String,
    /// Only this part of it (intervals are clipped to it).
    #[serde(default)]
    pub time_range: Option<TimeRange>,
    /// Each a search filter (without media ids or operation id); all must hold at once.
    pub conditions: Vec<SearchFilter>,
    /// Widens every annotation by this many milliseconds on each side before the
    /// conditions are intersected: 500 makes "in the same second" of two annotations a
    /// second apart at most. 0 by default.
    #[serde(default)]
    pub slack_ms: i64,
    /// Leaves out intervals shorter than this (end - start + 1). 1 by default.
    #[serde(default)]
    pub min_duration_ms: Option<i64>,
}

/// The answer of a co-occurrence query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cooccurrence {
    pub media_id: String,
    pub intervals: Vec<Interval>,
    /// Annotations that matched each condition.
    pub matched: Vec<u64>,
}

/// Most slack a co-occurrence query may ask for: one minute.
pub const MAX_SLACK_MS: i64 = 60_000;

impl Service {
    pub async fn aggregate(&self, req: &AggregateRequest) -> Result<Aggregates, Error> {
        let filter = self.check_filter(&req.filter).await?;
        let spec = &req.aggregations;
        let mut errors = Vec::new();
        if let Some(n) = spec.labels
            && (n == 0 || n > self.limits.max_filter_values as u32)
        {
            errors.push(FieldError::new(
                "aggregations.labels",
                format!("between 1 and {}", self.limits.max_filter_values),
            ));
        }
        if let Some(h) = spec.histogram {
            let one_media = filter.media_id.is_some()
                || filter.media_ids.as_ref().is_some_and(|m| m.len() == 1);
            if !one_media {
                errors.push(FieldError::new(
                    "aggregations.histogram",
                    "a histogram is per media item: give media_id",
                ));
            }
            if h.interval_ms < 1 {
                errors.push(FieldError::new(
                    "aggregations.histogram.interval_ms",
                    "must be at least 1",
                ));
            } else if let Some(r) = filter.time_range
                && (r.end_ms.saturating_sub(r.start_ms) / h.interval_ms) >= query::MAX_BUCKETS
            {
                errors.push(FieldError::new(
                    "aggregations.histogram.interval_ms",
                    format!(
                        "more than {} buckets over the time range: widen the interval",
                        query::MAX_BUCKETS
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        if filter.operation_id.is_some() {
            return Err(Error::invalid(
                "operation_id",
                "aggregations count what search shows; preview a run with search",
            ));
        }
        let query = AggregateQuery {
            filter,
            scope: Scope::Visible(self.engines.cache.visibility()),
            spec: spec.clone(),
        };
        Ok(self.engines.index.aggregate(&query).await?)
    }

    /// The intervals of one media item where every condition holds at once.
    pub async fn cooccurrence(&self, req: &CooccurrenceRequest) -> Result<Cooccurrence, Error> {
        let limits = &self.limits;
        let n = req.conditions.len();
        if n < 1 || n > limits.max_cooccurrence_conditions {
            return Err(Error::invalid(
                "conditions",
                format!("between 1 and {}", limits.max_cooccurrence_conditions),
            ));
        }
        if !(0..=MAX_SLACK_MS).contains(&req.slack_ms) {
            return Err(Error::invalid(
                "slack_ms",
                format!("between 0 and {MAX_SLACK_MS}"),
            ));
        }
        if let Some(r) = req.time_range {
            if r.end_ms < r.start_ms {
                return Err(Error::invalid(
                    "time_range",
                    "the end must not be before the start",
                ));
            }
            if r.relation != query::TimeRelation::Intersects {
                return Err(Error::invalid(
                    "time_range.relation",
                    "co-occurrence looks at what intersects its time range; leave relation out",
                ));
            }
        }
        let min_duration = req.min_duration_ms.unwrap_or(1);
        if min_duration < 1 {
            return Err(Error::invalid("min_duration_ms", "must be at least 1"));
        }
        for (i, c) in req.conditions.iter().enumerate() {
            if c.media_id.is_some() || c.media_ids.is_some() || c.operation_id.is_some() {
                return Err(Error::invalid(
                    format!("conditions[{i}]"),
                    "media_id, media_ids and operation_id belong to the query, not a condition",
                ));
            }
            if c.time_range.is_some() && req.time_range.is_some() {
                return Err(Error::invalid(
                    format!("conditions[{i}].time_range"),
                    "give the time range once, for the whole query",
                ));
            }
        }
        // One view for every page of every condition, so all of them see the same runs.
        let view = self.engines.cache.visibility();
        let mut spans: Option<Vec<Interval>> = None;
        let mut matched = Vec::with_capacity(n);
        for (i, c) in req.conditions.iter().enumerate() {
            let mut filter = c.clone();
            filter.media_id = Some(req.media_id.clone());
            if let Some(r) = req.time_range {
                // Widened by the slack, so annotations just outside still count.
                filter.time_range = Some(TimeRange::new(
                    r.start_ms.saturating_sub(req.slack_ms),
                    r.end_ms.saturating_add(req.slack_ms),
                ));
            }
            let mut mine: Vec<Interval> = Vec::new();
            let mut page = SearchRequest {
                filter,
                limit: Some(self.limits.max_page_size),
                ..Default::default()
            };
            loop {
                let got = self
                    .search_in(&page, Some(view.clone()))
                    .await
                    .map_err(|e| at_condition(e, i))?;
                mine.extend(got.annotations.iter().map(|a| Interval {
                    start_ms: a.start_ms.saturating_sub(req.slack_ms),
                    end_ms: a.end_ms.saturating_add(req.slack_ms),
                }));
                if mine.len() > limits.max_cooccurrence_annotations {
                    return Err(Error::invalid(
                        format!("conditions[{i}]"),
                        format!(
                            "matches more than {} annotations: narrow it or the time range",
                            limits.max_cooccurrence_annotations
                        ),
                    ));
                }
                match got.next_page_token {
                    Some(t) => page.page_token = Some(t),
                    None => break,
                }
            }
            matched.push(mine.len() as u64);
            let union = query::union(mine);
            spans = Some(match spans {
                None => union,
                Some(acc) => query::intersect(&acc, &union),
            });
        }
        // Clipped to the query's range, and to time 0 (slack can reach before it).
        let clip = [Interval {
            start_ms: req.time_range.map_or(0, |r| r.start_ms.max(0)),
            end_ms: req.time_range.map_or(i64::MAX, |r| r.end_ms),
        }];
        let mut intervals = query::intersect(&spans.unwrap_or_default(), &clip);
        intervals
            .retain(|iv| iv.end_ms.saturating_sub(iv.start_ms).saturating_add(1) >= min_duration);
        Ok(Cooccurrence {
            media_id: req.media_id.clone(),
            intervals,
            matched,
        })
    }
}

/// Names the condition a field error belongs to.
fn at_condition(e: Error, i: usize) -> Error {
    match e {
        Error::Invalid(errors) => Error::Invalid(
            errors
                .into_iter()
                .map(|f| FieldError {
                    field: format!("conditions[{i}].{}", f.field),
                    ..f
                })
                .collect(),
        ),
        other => other,
    }
}
