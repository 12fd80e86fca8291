//! Fast-field columns kept open per segment, and range filters checked on them.
//!
//! Opening a tantivy column parses its header and, for blockwise-linear columns, every
//! block's header: O(documents), about 0.6 ms per column of a 10M-document segment
//! (measured with perf on the 10M benchmark, where it was three quarters of a scoped
//! search). A search reads five or more columns of every segment, so each column is
//! opened once per segment and kept. Segments are immutable (deletes live in the alive
//! bitset, read per search): a kept column is valid until its segment is merged away,
//! and [`ColumnCache::prune`] forgets the segments a searcher no longer has.

use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use tantivy::columnar::{BytesColumn, Column, StrColumn};
use tantivy::fastfield::FastFieldReaders;
use tantivy::index::SegmentId;
use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, Searcher, SegmentReader, TERMINATED, Term};

/// The open columns of every segment searched lately.
#[derive(Default)]
pub(crate) struct ColumnCache {
    segments: Mutex<HashMap<SegmentId, Arc<SegmentColumns>>>,
}

impl std::fmt::Debug for ColumnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnCache")
            .field("segments", &self.segments.lock().len())
            .finish()
    }
}

impl ColumnCache {
    /// The columns of `reader`'s segment (opened as they are first asked for).
    pub(crate) fn of(&self, reader: &SegmentReader) -> Arc<SegmentColumns> {
        self.segments
            .lock()
            .entry(reader.segment_id())
            .or_insert_with(|| Arc::new(SegmentColumns::new(reader.fast_fields().clone())))
            .clone()
    }

    /// Forgets the segments `searcher` does not have. A search on an older searcher may
    /// put one back; the next prune takes it out again.
    pub(crate) fn prune(&self, searcher: &Searcher) {
        let readers = searcher.segment_readers();
        let mut segments = self.segments.lock();
        if segments.len() > readers.len() {
            let live: Vec<SegmentId> = readers.iter().map(|r| r.segment_id()).collect();
            segments.retain(|id, _| live.contains(id));
        }
    }
}

/// One segment's columns, by field name.
pub(crate) struct SegmentColumns {
    ff: FastFieldReaders,
    u64s: Mutex<HashMap<&'static str, Option<Column<u64>>>>,
    i64s: Mutex<HashMap<&'static str, Option<Column<i64>>>>,
    f64s: Mutex<HashMap<&'static str, Option<Column<f64>>>>,
    strs: Mutex<HashMap<&'static str, Option<StrColumn>>>,
    bytes: Mutex<HashMap<&'static str, Option<BytesColumn>>>,
    /// Structures built from the columns (the vkey index of nearest-neighbour search).
    derived: Mutex<HashMap<&'static str, Arc<dyn Any + Send + Sync>>>,
}

/// The value kept under `name`, opened by `open` the first time.
fn kept<T: Clone>(
    map: &Mutex<HashMap<&'static str, T>>,
    name: &'static str,
    open: impl FnOnce() -> tantivy::Result<T>,
) -> tantivy::Result<T> {
    if let Some(v) = map.lock().get(name) {
        return Ok(v.clone());
    }
    // Opened outside the lock: two searches may both open it; either copy is right.
    let v = open()?;
    map.lock().insert(name, v.clone());
    Ok(v)
}

impl SegmentColumns {
    fn new(ff: FastFieldReaders) -> SegmentColumns {
        SegmentColumns {
            ff,
            u64s: Mutex::default(),
            i64s: Mutex::default(),
            f64s: Mutex::default(),
            strs: Mutex::default(),
            bytes: Mutex::default(),
            derived: Mutex::default(),
        }
    }

    /// The structure kept under `name`, built by `build` the first time.
    pub(crate) fn derived<T: Any + Send + Sync>(
        &self,
        name: &'static str,
        build: impl FnOnce() -> tantivy::Result<T>,
    ) -> tantivy::Result<Arc<T>> {
        let kept = kept(&self.derived, name, || {
            Ok(Arc::new(build()?) as Arc<dyn Any + Send + Sync>)
        })?;
        kept.downcast::<T>().map_err(|_| {
            tantivy::TantivyError::InternalError(format!("{name} kept with another type"))
        })
    }

    /// A u64 column; `None` when the segment has none of that name.
    pub(crate) fn u64_opt(&self, name: &'static str) -> tantivy::Result<Option<Column<u64>>> {
        kept(&self.u64s, name, || self.ff.column_opt(name))
    }

    /// A u64 column (empty when the segment has no values).
    pub(crate) fn u64(&self, name: &'static str) -> tantivy::Result<Column<u64>> {
        self.u64_opt(name)?.map_or_else(|| self.ff.u64(name), Ok)
    }

    pub(crate) fn i64(&self, name: &'static str) -> tantivy::Result<Column<i64>> {
        kept(&self.i64s, name, || self.ff.column_opt(name))?.map_or_else(|| self.ff.i64(name), Ok)
    }

    pub(crate) fn f64(&self, name: &'static str) -> tantivy::Result<Column<f64>> {
        kept(&self.f64s, name, || self.ff.column_opt(name))?.map_or_else(|| self.ff.f64(name), Ok)
    }

    pub(crate) fn str(&self, name: &'static str) -> tantivy::Result<Option<StrColumn>> {
        kept(&self.strs, name, || self.ff.str(name))
    }

    pub(crate) fn bytes(&self, name: &'static str) -> tantivy::Result<Option<BytesColumn>> {
        kept(&self.bytes, name, || self.ff.bytes(name))
    }
}

// ---------------------------------------------------------------------------------
// Range filters
// ---------------------------------------------------------------------------------

/// A range on one numeric fast field. Documents without a value fail it.
#[derive(Debug, Clone)]
pub(crate) enum ColumnRange {
    I64 {
        field: tantivy::schema::Field,
        name: &'static str,
        bounds: (Bound<i64>, Bound<i64>),
    },
    F64 {
        field: tantivy::schema::Field,
        name: &'static str,
        bounds: (Bound<f64>, Bound<f64>),
    },
}

impl ColumnRange {
    /// The same range as tantivy's range query, which scans the column in blocks: the
    /// better plan when no term narrows the documents first.
    pub(crate) fn scan(&self) -> Box<dyn Query> {
        fn terms<T: Copy>(
            (lower, upper): (Bound<T>, Bound<T>),
            term: impl Fn(T) -> Term,
        ) -> (Bound<Term>, Bound<Term>) {
            (lower.map(&term), upper.map(&term))
        }
        let (lower, upper) = match self {
            ColumnRange::I64 { field, bounds, .. } => {
                terms(*bounds, |v| Term::from_field_i64(*field, v))
            }
            ColumnRange::F64 { field, bounds, .. } => {
                terms(*bounds, |v| Term::from_field_f64(*field, zero_folded(v)))
            }
        };
        Box::new(tantivy::query::RangeQuery::new(lower, upper))
    }

    fn open(&self, columns: &SegmentColumns) -> tantivy::Result<OpenRange> {
        Ok(match self {
            ColumnRange::I64 { name, bounds, .. } => OpenRange::I64(columns.i64(name)?, *bounds),
            ColumnRange::F64 { name, bounds, .. } => OpenRange::F64(columns.f64(name)?, *bounds),
        })
    }
}

/// `-0` as `0`. Columns order f64 by bits, where `-0 < 0`; numbers compare them equal.
/// Documents and scanned bounds both fold, so a scan agrees with the comparison.
pub(crate) fn zero_folded(x: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x }
}

/// A [`ColumnRange`] on one segment's column.
enum OpenRange {
    I64(Column<i64>, (Bound<i64>, Bound<i64>)),
    F64(Column<f64>, (Bound<f64>, Bound<f64>)),
}

impl OpenRange {
    #[inline]
    fn holds(&self, doc: DocId) -> bool {
        // Compared as the numbers themselves (f64 as Rust compares it, as
        // `annostore_core::query::matches` does).
        match self {
            OpenRange::I64(c, b) => c.first(doc).is_some_and(|v| b.contains(&v)),
            OpenRange::F64(c, b) => c.first(doc).is_some_and(|v| b.contains(&v)),
        }
    }
}

/// The documents of `inner` that pass every range, each checked on its columns. The
/// plan for ranges under a term that narrows the documents: a scoped search reads a
/// thousand documents of a media item, not the time column of the whole segment.
#[derive(Debug)]
pub(crate) struct CheckedQuery {
    inner: Box<dyn Query>,
    ranges: Arc<[ColumnRange]>,
    columns: Arc<ColumnCache>,
}

impl CheckedQuery {
    pub(crate) fn new(
        inner: Box<dyn Query>,
        ranges: Vec<ColumnRange>,
        columns: Arc<ColumnCache>,
    ) -> CheckedQuery {
        CheckedQuery {
            inner,
            ranges: ranges.into(),
            columns,
        }
    }
}

impl Clone for CheckedQuery {
    fn clone(&self) -> CheckedQuery {
        CheckedQuery {
            inner: self.inner.box_clone(),
            ranges: self.ranges.clone(),
            columns: self.columns.clone(),
        }
    }
}

impl Query for CheckedQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(CheckedWeight {
            inner: self.inner.weight(scoring)?,
            ranges: self.ranges.clone(),
            columns: self.columns.clone(),
        }))
    }
}

struct CheckedWeight {
    inner: Box<dyn Weight>,
    ranges: Arc<[ColumnRange]>,
    columns: Arc<ColumnCache>,
}

impl Weight for CheckedWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let columns = self.columns.of(reader);
        let ranges = self
            .ranges
            .iter()
            .map(|r| r.open(&columns))
            .collect::<tantivy::Result<Vec<_>>>()?;
        let mut scorer = CheckedScorer {
            inner: self.inner.scorer(reader, boost)?,
            ranges,
        };
        let first = scorer.inner.doc();
        if first != TERMINATED && !scorer.passes(first) {
            scorer.advance();
        }
        Ok(Box::new(scorer))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )));
        }
        Ok(Explanation::new("checked ranges", scorer.score()))
    }
}

struct CheckedScorer {
    inner: Box<dyn Scorer>,
    ranges: Vec<OpenRange>,
}

impl CheckedScorer {
    #[inline]
    fn passes(&self, doc: DocId) -> bool {
        self.ranges.iter().all(|r| r.holds(doc))
    }
}

impl DocSet for CheckedScorer {
    fn advance(&mut self) -> DocId {
        loop {
            let doc = self.inner.advance();
            if doc == TERMINATED || self.passes(doc) {
                return doc;
            }
        }
    }

    fn seek(&mut self, target: DocId) -> DocId {
        let doc = self.inner.seek(target);
        if doc == TERMINATED || self.passes(doc) {
            doc
        } else {
            self.advance()
        }
    }

    fn doc(&self) -> DocId {
        self.inner.doc()
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }

    fn cost(&self) -> u64 {
        self.inner.cost()
    }
}

impl Scorer for CheckedScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}
