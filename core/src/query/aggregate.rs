//! Aggregations (label and type counts, the timeline histogram) and the interval
//! arithmetic of co-occurrence.

use crate::model::Annotation;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
