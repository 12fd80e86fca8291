//! Top-`limit` documents in search order (media_id, start_ms, id), in scope, after a
//! cursor.
//!
//! Per segment, media ids are compared by term ordinal (ordinals follow the byte order
//! of the terms within a segment), and the best `limit` keys are kept in a bounded
//! max-heap. Only the kept ordinals are turned back into strings, at the end of the
//! segment. The segments' results are merged on the full key.

use super::{ID_HI, ID_LO, MEDIA_ID, OP, START_MS};
use annostore_core::index::Scope;
use annostore_core::model::SortKey;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, ColumnValues, Dictionary, TermOrdHit};
use tantivy::index::SegmentReader;
use tantivy::{DocId, Score, SegmentOrdinal, TantivyError};
use uuid::Uuid;

/// A key within one segment: (media ordinal + 1, start_ms, id as u128). Ordinal 0
/// stands for a document without a media id value, which sorts as "".
type SegKey = (u64, i64, u128);

pub(crate) struct SortedCollector {
    scope: Scope,
    after: Option<SortKey>,
    limit: usize,
}

impl SortedCollector {
    pub(crate) fn new(scope: Scope, after: Option<SortKey>, limit: usize) -> SortedCollector {
        SortedCollector {
            scope,
            after,
            limit,
        }
    }
}

/// Where a segment's documents must start, given the cursor.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    None,
    /// Strictly after this key.
    After(SegKey),
    /// At this media ordinal or later (the cursor's media id is not in the segment).
    FromOrd(u64),
}

impl Cursor {
    #[inline]
    fn passes(&self, key: &SegKey) -> bool {
        match self {
            Cursor::None => true,
            Cursor::After(c) => key > c,
            Cursor::FromOrd(o) => key.0 >= *o,
        }
    }
}

pub(crate) struct SortedSegmentCollector {
    scope: Scope,
    cursor: Cursor,
    limit: usize,
    heap: BinaryHeap<SegKey>,
    dictionary: Option<Arc<Dictionary>>,
    media: Option<Column<u64>>,
    start: Arc<dyn ColumnValues<i64>>,
    hi: Arc<dyn ColumnValues<u64>>,
    lo: Arc<dyn ColumnValues<u64>>,
    op: Arc<dyn ColumnValues<u64>>,
}

fn io_error(e: std::io::Error) -> TantivyError {
    TantivyError::from(e)
}

impl Collector for SortedCollector {
    type Fruit = Vec<SortKey>;
    type Child = SortedSegmentCollector;

    fn for_segment(
        &self,
        _segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SortedSegmentCollector> {
        let ff = segment.fast_fields();
        let (dictionary, media) = match ff.str(MEDIA_ID)? {
            Some(col) => {
                let (d, m) = col.into_parts();
                (Some(d), Some(m))
            }
            None => (None, None),
        };
        let cursor = match &self.after {
            None => Cursor::None,
            Some(after) => {
                let (ord, exact) = match &dictionary {
                    None => (0, false),
                    Some(d) => match d
                        .term_ord_or_next(after.media_id.as_bytes())
                        .map_err(io_error)?
                    {
                        TermOrdHit::Exact(o) => (o.saturating_add(1), true),
                        TermOrdHit::Next(o) => (o.saturating_add(1), false),
                    },
                };
                let id = after.id.as_u128();
                if exact {
                    Cursor::After((ord, after.start_ms, id))
                } else if after.media_id.is_empty() {
                    // "" is not a term here: documents without a media value are "".
                    Cursor::After((0, after.start_ms, id))
                } else {
                    Cursor::FromOrd(ord)
                }
            }
        };
        Ok(SortedSegmentCollector {
            scope: self.scope.clone(),
            cursor,
            limit: self.limit,
            heap: BinaryHeap::with_capacity(self.limit.min(4096) + 1),
            dictionary,
            media,
            start: ff.i64(START_MS)?.first_or_default_col(0),
            hi: ff.u64(ID_HI)?.first_or_default_col(0),
            lo: ff.u64(ID_LO)?.first_or_default_col(0),
            op: ff.u64(OP)?.first_or_default_col(0),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<SortKey>>) -> tantivy::Result<Vec<SortKey>> {
        let mut all: Vec<SortKey> = fruits.into_iter().flatten().collect();
        all.sort_unstable();
        all.truncate(self.limit);
        Ok(all)
    }

    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<Vec<SortKey>> {
        let mut child = self.for_segment(segment_ord, reader)?;
        match reader.alive_bitset() {
            Some(alive) => weight.for_each_no_score(reader, &mut |docs| {
                for &doc in docs {
                    if alive.is_alive(doc) {
                        child.collect(doc, 0.0);
                    }
                }
            })?,
            None => weight.for_each_no_score(reader, &mut |docs| child.collect_block(docs))?,
        }
        child.finish()
    }
}

impl SortedSegmentCollector {
    /// The kept keys, ordinals resolved to media ids.
    fn finish(self) -> tantivy::Result<Vec<SortKey>> {
        let mut keys = self.heap.into_vec();
        keys.sort_unstable();
        let mut ords: Vec<u64> = keys.iter().filter(|k| k.0 > 0).map(|k| k.0 - 1).collect();
        ords.dedup();
        let mut names: HashMap<u64, String> = HashMap::with_capacity(ords.len());
        if let Some(d) = &self.dictionary {
            let mut it = ords.iter();
            let mut bad = false;
            let all = d
                .sorted_ords_to_term_cb(&ords, |bytes| {
                    if let Some(&ord) = it.next() {
                        match std::str::from_utf8(bytes) {
                            Ok(s) => {
                                names.insert(ord, s.to_owned());
                            }
                            Err(_) => bad = true,
                        }
                    }
                })
                .map_err(io_error)?;
            if !all || bad {
                return Err(TantivyError::InternalError(
                    "media_id ordinal without a valid term".into(),
                ));
            }
        }
        keys.into_iter()
            .map(|(ord, start_ms, id)| {
                let media_id = if ord == 0 {
                    String::new()
                } else {
                    names.get(&(ord - 1)).cloned().ok_or_else(|| {
                        TantivyError::InternalError("unresolved media_id ordinal".into())
                    })?
                };
                Ok(SortKey {
                    media_id,
                    start_ms,
                    id: Uuid::from_u128(id),
                })
            })
            .collect()
    }
}

impl SegmentCollector for SortedSegmentCollector {
    type Fruit = Vec<SortKey>;

    #[inline]
    fn collect(&mut self, doc: DocId, _score: Score) {
        let ord = match &self.media {
            Some(m) => m.first(doc).map_or(0, |o| o + 1),
            None => 0,
        };
        let full = self.heap.len() >= self.limit;
        if full && self.heap.peek().is_some_and(|top| ord > top.0) {
            return;
        }
        let key: SegKey = (
            ord,
            self.start.get_val(doc),
            (u128::from(self.hi.get_val(doc)) << 64) | u128::from(self.lo.get_val(doc)),
        );
        if !self.cursor.passes(&key) {
            return;
        }
        if full && self.heap.peek().is_some_and(|top| key >= *top) {
            return;
        }
        if !self.scope.allows_key(self.op.get_val(doc)) {
            return;
        }
        if full {
            if let Some(mut top) = self.heap.peek_mut() {
                *top = key;
            }
        } else {
            self.heap.push(key);
        }
    }

    fn harvest(self) -> Vec<SortKey> {
        // Only reached through the default `collect_segment`, which this collector
        // overrides; errors are reported by `finish` there.
        self.finish().unwrap_or_default()
    }
}
