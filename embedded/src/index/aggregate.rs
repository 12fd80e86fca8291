//! Aggregations: counts over the matching documents in scope, from fast fields, with
//! the semantics of [`annostore_core::query::Aggregator`] (finished by
//! [`query::finish_aggregates`]).
//!
//! Labels and types are counted per segment by term ordinal and named at the end of the
//! segment. The histogram does not visit every bucket an annotation touches: each
//! annotation adds one at its first bucket and takes one away after its last (a
//! difference map), and the sweep at the end turns that into counts per bucket. The
//! map has at most two keys per non-empty bucket, so more keys than twice
//! [`MAX_BUCKETS`] (or more non-empty buckets than that) means too many buckets: the
//! request is refused instead of growing without bound, whatever the annotations span.

use super::columns::{ColumnCache, SegmentColumns};
use super::fresh::Mask;
use super::{ANNOTATION_TYPE, ANNOTATION_TYPE_VERSION, END_MS, ID_HI, ID_LO, LABEL, OP, START_MS};
use annostore_core::index::{IndexError, Scope};
use annostore_core::model::Annotation;
use annostore_core::query::{self, AggregateSpec, Aggregates, HistogramSpec, MAX_BUCKETS};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, ColumnValues, Dictionary};
use tantivy::index::SegmentReader;
use tantivy::{DocId, Score, SegmentOrdinal};

/// Most keys the histogram's difference map may hold (two per non-empty bucket).
const MAX_KEYS: usize = 2 * MAX_BUCKETS as usize;

/// Changes of the counts at one bucket: of all annotations, and per label.
type Delta<L> = (i64, HashMap<L, i64>);

/// Why counting stopped.
#[derive(Debug, Clone)]
pub(crate) enum Problem {
    /// The request cannot be answered within bounds (too many buckets).
    Rejected(String),
    /// The index could not be read.
    Failed(String),
}

impl From<Problem> for IndexError {
    fn from(p: Problem) -> IndexError {
        match p {
            Problem::Rejected(m) => IndexError::Unanswerable(m),
            Problem::Failed(m) => IndexError::Unavailable(m),
        }
    }
}

fn too_many_buckets() -> Problem {
    Problem::Rejected(format!(
        "the histogram would have more than {MAX_BUCKETS} buckets"
    ))
}

/// Counts of one segment or of several, labels and types named.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    total: u64,
    labels: HashMap<String, u64>,
    types: HashMap<(String, u32), u64>,
    histogram: BTreeMap<i64, Delta<String>>,
}

impl Counts {
    fn merge(&mut self, other: Counts) -> Result<(), Problem> {
        self.total += other.total;
        for (l, n) in other.labels {
            *self.labels.entry(l).or_default() += n;
        }
        for (t, n) in other.types {
            *self.types.entry(t).or_default() += n;
        }
        for (b, (n, labels)) in other.histogram {
            let d = self.histogram.entry(b).or_default();
            d.0 += n;
            for (l, n) in labels {
                *d.1.entry(l).or_default() += n;
            }
        }
        if self.histogram.len() > MAX_KEYS {
            return Err(too_many_buckets());
        }
        Ok(())
    }

    /// Counts one annotation as a segment counts its document (the fresh documents,
    /// [`super::fresh`]).
    pub(crate) fn add(&mut self, a: &Annotation, spec: &AggregateSpec) -> Result<(), Problem> {
        self.total += 1;
        if spec.labels.is_some()
            && let Some(l) = &a.label
        {
            *self.labels.entry(l.clone()).or_default() += 1;
        }
        if spec.types {
            *self
                .types
                .entry((a.annotation_type.clone(), a.annotation_type_version))
                .or_default() += 1;
        }
        if let Some(h) = spec.histogram {
            let buckets = query::buckets_of(a.start_ms, a.end_ms, h.interval_ms);
            let first = *buckets.start();
            let after = buckets.end().checked_add(1).ok_or_else(|| {
                Problem::Rejected(
                    "a histogram bucket starts outside the range of milliseconds".into(),
                )
            })?;
            let label = a.label.as_ref().filter(|_| h.by_label);
            for (key, n) in [(first, 1), (after, -1)] {
                let d = self.histogram.entry(key).or_default();
                d.0 += n;
                if let Some(l) = label {
                    *d.1.entry(l.clone()).or_default() += n;
                }
            }
            if self.histogram.len() > MAX_KEYS {
                return Err(too_many_buckets());
            }
        }
        Ok(())
    }

    /// The aggregates: buckets swept from the difference map.
    pub(crate) fn finish(self, spec: &AggregateSpec) -> Result<Aggregates, Problem> {
        let mut buckets: BTreeMap<i64, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
        if let Some(h) = spec.histogram {
            sweep(h, self.histogram, &mut buckets)?;
        }
        Ok(query::finish_aggregates(
            spec,
            self.total,
            self.labels.into_iter().collect(),
            self.types.into_iter().collect(),
            buckets,
        ))
    }
}

/// Counts per bucket from the difference map: between two keys every bucket has the
/// same counts.
fn sweep(
    h: HistogramSpec,
    deltas: BTreeMap<i64, Delta<String>>,
    out: &mut BTreeMap<i64, (u64, BTreeMap<String, u64>)>,
) -> Result<(), Problem> {
    let mut count = 0i64;
    let mut labels: BTreeMap<String, i64> = BTreeMap::new();
    let mut buckets = 0i64;
    let mut keys = deltas.into_iter().peekable();
    while let Some((at, (n, changes))) = keys.next() {
        count += n;
        if !changes.is_empty() {
            for (l, n) in changes {
                *labels.entry(l).or_default() += n;
            }
            // Buckets list only the labels they hold.
            labels.retain(|_, c| *c != 0);
        }
        let Some((next, _)) = keys.peek() else {
            break;
        };
        if count <= 0 {
            continue;
        }
        // Buckets at..next hold `count` annotations each.
        let run = next.saturating_sub(at);
        buckets = buckets.saturating_add(run);
        if buckets > MAX_BUCKETS {
            return Err(too_many_buckets());
        }
        let by_label: BTreeMap<String, u64> = if h.by_label {
            labels
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|(l, c)| (l.clone(), *c as u64))
                .collect()
        } else {
            BTreeMap::new()
        };
        for b in at..*next {
            if b.checked_mul(h.interval_ms).is_none() {
                return Err(Problem::Rejected(
                    "a histogram bucket starts outside the range of milliseconds".into(),
                ));
            }
            out.insert(b, (count as u64, by_label.clone()));
        }
    }
    Ok(())
}

pub(crate) struct AggregateCollector {
    columns: Arc<ColumnCache>,
    scope: Scope,
    spec: AggregateSpec,
    /// Documents whose current copy is fresh (counted from there).
    mask: Option<Mask>,
}

impl AggregateCollector {
    /// Fails on a histogram interval below 1 ms.
    pub(crate) fn new(
        columns: Arc<ColumnCache>,
        scope: Scope,
        spec: AggregateSpec,
        mask: Option<Mask>,
    ) -> Result<AggregateCollector, Problem> {
        if let Some(h) = spec.histogram
            && h.interval_ms < 1
        {
            return Err(Problem::Rejected(
                "histogram interval_ms must be at least 1".into(),
            ));
        }
        Ok(AggregateCollector {
            columns,
            scope,
            spec,
            mask,
        })
    }
}

/// A mask with the id columns it is checked on.
type MaskColumns = (Mask, Arc<dyn ColumnValues<u64>>, Arc<dyn ColumnValues<u64>>);

/// A string fast field's dictionary and ordinals.
type Strings = Option<(Arc<Dictionary>, Column<u64>)>;

fn strings(columns: &SegmentColumns, field: &'static str) -> tantivy::Result<Strings> {
    Ok(columns.str(field)?.map(|c| {
        let (d, m) = c.into_parts();
        (d, m)
    }))
}

pub(crate) struct AggregateSegment {
    scope: Scope,
    /// With the id columns it is checked on.
    mask: Option<MaskColumns>,
    spec: AggregateSpec,
    op: Arc<dyn ColumnValues<u64>>,
    label: Strings,
    ty: Strings,
    version: Column<u64>,
    start: Arc<dyn ColumnValues<i64>>,
    end: Arc<dyn ColumnValues<i64>>,
    total: u64,
    labels: HashMap<u64, u64>,
    types: HashMap<(Option<u64>, u64), u64>,
    histogram: HashMap<i64, Delta<u64>>,
    problem: Option<Problem>,
}

impl Collector for AggregateCollector {
    type Fruit = Result<Counts, Problem>;
    type Child = AggregateSegment;

    fn for_segment(
        &self,
        _segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<AggregateSegment> {
        let columns = self.columns.of(segment);
        let mask = match &self.mask {
            Some(m) => Some((
                m.clone(),
                columns.u64(ID_HI)?.first_or_default_col(0),
                columns.u64(ID_LO)?.first_or_default_col(0),
            )),
            None => None,
        };
        Ok(AggregateSegment {
            scope: self.scope.clone(),
            mask,
            spec: self.spec.clone(),
            op: columns.u64(OP)?.first_or_default_col(0),
            label: strings(&columns, LABEL)?,
            ty: strings(&columns, ANNOTATION_TYPE)?,
            version: columns.u64(ANNOTATION_TYPE_VERSION)?,
            start: columns.i64(START_MS)?.first_or_default_col(0),
            end: columns.i64(END_MS)?.first_or_default_col(0),
            total: 0,
            labels: HashMap::new(),
            types: HashMap::new(),
            histogram: HashMap::new(),
            problem: None,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Result<Counts, Problem>>) -> tantivy::Result<Self::Fruit> {
        let mut all = Counts::default();
        for f in fruits {
            match f.and_then(|c| all.merge(c)) {
                Ok(()) => {}
                Err(p) => return Ok(Err(p)),
            }
        }
        Ok(Ok(all))
    }
}

/// The term of ordinal `ord` in a dictionary.
fn term_of(d: &Dictionary, ord: u64) -> Result<String, Problem> {
    let mut bytes = Vec::new();
    match d.ord_to_term(ord, &mut bytes) {
        Ok(true) => {
            String::from_utf8(bytes).map_err(|_| Problem::Failed("a term that is not UTF-8".into()))
        }
        Ok(false) => Err(Problem::Failed("an ordinal without a term".into())),
        Err(e) => Err(Problem::Failed(e.to_string())),
    }
}

/// Names the ordinals of `ords`, each once.
fn names(
    strings: &Strings,
    ords: impl Iterator<Item = u64>,
) -> Result<HashMap<u64, String>, Problem> {
    let mut out = HashMap::new();
    let Some((d, _)) = strings else {
        return Ok(out);
    };
    for ord in ords {
        if let std::collections::hash_map::Entry::Vacant(e) = out.entry(ord) {
            e.insert(term_of(d, ord)?);
        }
    }
    Ok(out)
}

impl AggregateSegment {
    fn counts(self) -> Result<Counts, Problem> {
        if let Some(p) = self.problem {
            return Err(p);
        }
        let hist_labels = self.histogram.values().flat_map(|d| d.1.keys().copied());
        let label_names = names(&self.label, self.labels.keys().copied().chain(hist_labels))?;
        let type_names = names(&self.ty, self.types.keys().filter_map(|k| k.0))?;
        let name = |names: &HashMap<u64, String>, ord: u64| {
            names
                .get(&ord)
                .cloned()
                .ok_or_else(|| Problem::Failed("an unnamed ordinal".into()))
        };
        let mut out = Counts {
            total: self.total,
            ..Counts::default()
        };
        for (ord, n) in self.labels {
            *out.labels.entry(name(&label_names, ord)?).or_default() += n;
        }
        for ((ty, version), n) in self.types {
            let ty = match ty {
                Some(o) => name(&type_names, o)?,
                None => String::new(),
            };
            let version = u32::try_from(version)
                .map_err(|_| Problem::Failed("a type version above u32".into()))?;
            *out.types.entry((ty, version)).or_default() += n;
        }
        for (b, (n, labels)) in self.histogram {
            let mut named = HashMap::with_capacity(labels.len());
            for (ord, n) in labels {
                *named.entry(name(&label_names, ord)?).or_default() += n;
            }
            out.histogram.insert(b, (n, named));
        }
        Ok(out)
    }

    #[inline]
    fn add_histogram(&mut self, h: HistogramSpec, doc: DocId, label: Option<u64>) {
        let (start, end) = (self.start.get_val(doc), self.end.get_val(doc));
        let buckets = query::buckets_of(start, end, h.interval_ms);
        let (first, last) = (*buckets.start(), *buckets.end());
        // The bucket after the last: the key where the annotation stops counting. A last
        // bucket at i64::MAX (interval 1, end i64::MAX) cannot start in range anyway.
        let Some(after) = last.checked_add(1) else {
            self.problem = Some(Problem::Rejected(
                "a histogram bucket starts outside the range of milliseconds".into(),
            ));
            return;
        };
        let label = label.filter(|_| h.by_label);
        for (key, n) in [(first, 1), (after, -1)] {
            let d = self.histogram.entry(key).or_default();
            d.0 += n;
            if let Some(l) = label {
                *d.1.entry(l).or_default() += n;
            }
        }
        if self.histogram.len() > MAX_KEYS {
            self.problem = Some(too_many_buckets());
        }
    }
}

impl SegmentCollector for AggregateSegment {
    type Fruit = Result<Counts, Problem>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if self.problem.is_some() || !self.scope.allows_key(self.op.get_val(doc)) {
            return;
        }
        if let Some((mask, hi, lo)) = &self.mask
            && mask.hides(hi.get_val(doc), lo.get_val(doc))
        {
            return;
        }
        self.total += 1;
        let label = self.label.as_ref().and_then(|(_, c)| c.first(doc));
        if self.spec.labels.is_some()
            && let Some(l) = label
        {
            *self.labels.entry(l).or_default() += 1;
        }
        if self.spec.types {
            let ty = self.ty.as_ref().and_then(|(_, c)| c.first(doc));
            let version = self.version.first(doc).unwrap_or_default();
            *self.types.entry((ty, version)).or_default() += 1;
        }
        if let Some(h) = self.spec.histogram {
            self.add_histogram(h, doc, label);
        }
    }

    fn harvest(self) -> Result<Counts, Problem> {
        self.counts()
    }
}
