//! Top-`limit` documents in search order, in scope, after a cursor: a rank first (none
//! for time order; confidence, highest first, for confidence order), then
//! (media_id, start_ms, id).
//!
//! Per segment, media ids are compared by term ordinal (ordinals follow the byte order
//! of the terms within a segment), and the best `limit` keys are kept in a bounded
//! max-heap. Only the kept ordinals are turned back into strings, at the end of the
//! segment. The segments' results are merged on the full key. The rank is a `u32` that
//! sorts as [`annostore_core::query::compare`] orders ranks; which column gives it is a
//! type parameter ([`Rank`]), so time order pays nothing for it.

use super::columns::{ColumnCache, SegmentColumns};
use super::fresh::Mask;
use super::{CONFIDENCE, ID_HI, ID_LO, MEDIA_ID, OP, START_MS};
use annostore_core::index::Scope;
use annostore_core::model::SortKey;
use annostore_core::query::MISSING_RANK;
use std::collections::{BinaryHeap, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Cardinality, Column, ColumnValues, Dictionary, TermOrdHit};
use tantivy::index::SegmentReader;
use tantivy::query::BitSetDocSet;
use tantivy::schema::IndexRecordOption;
use tantivy::{
    BitSet, COLLECT_BLOCK_BUFFER_LEN, DocAddress, DocId, DocSet, Score, SegmentOrdinal, TERMINATED,
    TantivyError,
};
use uuid::Uuid;

/// A key within one segment: (rank key, media ordinal + 1, start_ms, id as u128), and
/// the document last (ids are unique, so it never decides an order).
/// Ordinal 0 stands for a document without a media id value, which sorts as "".
type SegKey = (u32, u64, i64, u128, DocId);

/// The media column's value for a document without one (no ordinal is this large).
const NO_MEDIA: u64 = u64::MAX;

/// What a search ranks documents by, before their time key.
pub(crate) trait Rank: Send + Sync + Sized + 'static {
    /// Whether hits carry their rank.
    const RANKED: bool;
    fn open(columns: &SegmentColumns) -> tantivy::Result<Self>;
    /// The document's rank key: smaller sorts first.
    fn key(&self, doc: DocId) -> u32;
}

/// Time order: every document ranks the same.
pub(crate) struct NoRank;

impl Rank for NoRank {
    const RANKED: bool = false;

    fn open(_columns: &SegmentColumns) -> tantivy::Result<NoRank> {
        Ok(NoRank)
    }

    #[inline]
    fn key(&self, _doc: DocId) -> u32 {
        0
    }
}

/// Confidence order: the confidence, or [`MISSING_RANK`] without one, highest first.
pub(crate) struct ConfidenceRank(Column<f64>);

impl Rank for ConfidenceRank {
    const RANKED: bool = true;

    fn open(columns: &SegmentColumns) -> tantivy::Result<ConfidenceRank> {
        Ok(ConfidenceRank(columns.f64(CONFIDENCE)?))
    }

    #[inline]
    fn key(&self, doc: DocId) -> u32 {
        // Confidences are f32, indexed as f64: converting back is exact.
        rank_key(self.0.first(doc).map_or(MISSING_RANK, |c| c as f32))
    }
}

/// A rank as a key that sorts ascending as `compare` sorts ranks: descending by
/// `f32::total_cmp`.
pub(crate) fn rank_key(rank: f32) -> u32 {
    let bits = rank.to_bits();
    // Ascending total order: negatives flipped whole, positives above them.
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

/// The rank a key was made from.
pub(crate) fn rank_of_key(key: u32) -> f32 {
    let ascending = !key;
    f32::from_bits(if ascending >> 31 == 1 {
        ascending & 0x7fff_ffff
    } else {
        !ascending
    })
}

/// A position as the collector compares it: rank key and time key.
pub(crate) type Ranked = (u32, SortKey);

/// A document found, in order: its position and where it is.
pub(crate) type Found = (Ranked, DocAddress);

pub(crate) struct SortedCollector<R> {
    columns: Arc<ColumnCache>,
    scope: Scope,
    /// Documents whose current copy is fresh (found there).
    mask: Option<Mask>,
    after: Option<Ranked>,
    limit: usize,
    rank: PhantomData<fn() -> R>,
}

impl<R: Rank> SortedCollector<R> {
    /// `after`: the rank key (0 for time order) and time key to continue after.
    pub(crate) fn new(
        columns: Arc<ColumnCache>,
        scope: Scope,
        mask: Option<Mask>,
        after: Option<Ranked>,
        limit: usize,
    ) -> SortedCollector<R> {
        SortedCollector {
            columns,
            scope,
            mask,
            after,
            limit,
            rank: PhantomData,
        }
    }
}

/// Where a segment's documents must start, given the cursor.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    None,
    /// Strictly after this key.
    After(SegKey),
    /// After this rank, or at it from this media ordinal on (the cursor's media id is
    /// not in the segment).
    FromOrd(u32, u64),
}

impl Cursor {
    #[inline]
    fn passes(&self, key: &SegKey) -> bool {
        match self {
            Cursor::None => true,
            Cursor::After(c) => key > c,
            Cursor::FromOrd(r, o) => key.0 > *r || (key.0 == *r && key.1 >= *o),
        }
    }
}

pub(crate) struct SortedSegmentCollector<R> {
    scope: Scope,
    mask: Option<Mask>,
    rank: R,
    cursor: Cursor,
    limit: usize,
    heap: BinaryHeap<SegKey>,
    dictionary: Option<Arc<Dictionary>>,
    /// Media ordinals, [`NO_MEDIA`] for a document without one (read dense: a column
    /// with a value for every document answers without a rank lookup).
    media: Option<Arc<dyn ColumnValues<u64>>>,
    /// Whether [`SortedSegmentCollector::by_media`] can read this segment: every
    /// document has a non-empty media id.
    by_media: bool,
    start: Arc<dyn ColumnValues<i64>>,
    hi: Arc<dyn ColumnValues<u64>>,
    lo: Arc<dyn ColumnValues<u64>>,
    op: Arc<dyn ColumnValues<u64>>,
}

fn io_error(e: std::io::Error) -> TantivyError {
    TantivyError::from(e)
}

impl<R: Rank> Collector for SortedCollector<R> {
    type Fruit = Vec<Found>;
    type Child = SortedSegmentCollector<R>;

    fn for_segment(
        &self,
        _segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SortedSegmentCollector<R>> {
        let columns = self.columns.of(segment);
        let (dictionary, media, by_media) = match columns.str(MEDIA_ID)? {
            Some(col) => {
                let (d, m) = col.into_parts();
                // Reading by media id reaches only documents with a media term.
                let every_doc_has_one = m.get_cardinality() == Cardinality::Full
                    && d.term_ord(b"").map_err(io_error)?.is_none();
                (
                    Some(d),
                    Some(m.first_or_default_col(NO_MEDIA)),
                    every_doc_has_one,
                )
            }
            None => (None, None, false),
        };
        let cursor = match &self.after {
            None => Cursor::None,
            Some((rank, after)) => {
                let rank = *rank;
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
                // The cursor's own document is never after it, whatever its doc id.
                if exact {
                    Cursor::After((rank, ord, after.start_ms, id, DocId::MAX))
                } else if after.media_id.is_empty() {
                    // "" is not a term here: documents without a media value are "".
                    Cursor::After((rank, 0, after.start_ms, id, DocId::MAX))
                } else {
                    Cursor::FromOrd(rank, ord)
                }
            }
        };
        Ok(SortedSegmentCollector {
            scope: self.scope.clone(),
            mask: self.mask.clone(),
            rank: R::open(&columns)?,
            cursor,
            limit: self.limit,
            heap: BinaryHeap::with_capacity(self.limit.min(4096) + 1),
            dictionary,
            media,
            by_media,
            start: columns.i64(START_MS)?.first_or_default_col(0),
            hi: columns.u64(ID_HI)?.first_or_default_col(0),
            lo: columns.u64(ID_LO)?.first_or_default_col(0),
            op: columns.u64(OP)?.first_or_default_col(0),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Found>>) -> tantivy::Result<Vec<Found>> {
        let mut all: Vec<Found> = fruits.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all.truncate(self.limit);
        Ok(all)
    }

    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<Vec<Found>> {
        let mut child = self.for_segment(segment_ord, reader)?;
        let alive = reader.alive_bitset();
        let mut scorer = weight.scorer(reader, 1.0)?;
        if !R::RANKED
            && child.by_media
            && by_media_pays(scorer.size_hint(), reader.max_doc(), self.limit)
        {
            let mut matched = BitSet::with_max_value(reader.max_doc());
            let mut count = 0usize;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                matched.insert(doc);
                count += 1;
                doc = scorer.advance();
            }
            let from = self.after.as_ref().map(|(_, key)| key.media_id.as_bytes());
            if !child.by_media(reader, &matched, from, count / 2)? {
                // Too many media items before the page filled: every match instead.
                child.heap.clear();
                let mut docs = BitSetDocSet::from(matched);
                let mut doc = docs.doc();
                while doc != TERMINATED {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        child.collect(doc, 0.0);
                    }
                    doc = docs.advance();
                }
            }
            return child.finish(segment_ord);
        }
        // Every match, a block at a time (as tantivy's own `for_each_no_score` does).
        let mut docs = [0; COLLECT_BLOCK_BUFFER_LEN];
        loop {
            let n = scorer.fill_buffer(&mut docs);
            if n == 0 {
                break;
            }
            match alive {
                Some(alive) => {
                    for &doc in &docs[..n] {
                        if alive.is_alive(doc) {
                            child.collect(doc, 0.0);
                        }
                    }
                }
                None => child.collect_block(&docs[..n]),
            }
        }
        child.finish(segment_ord)
    }
}

/// Whether a time-ordered page should be read media item by media item (see
/// [`SortedSegmentCollector::by_media`]) rather than from every match: when the matches
/// are many and spread out, a page fills from the first few media items. With `matches`
/// spread evenly over `docs`, a page of `limit` reads about `limit * docs / matches`
/// documents that way, against `matches` the other way (with a margin of 4 for the
/// bitset the walk needs first).
fn by_media_pays(matches: u32, docs: u32, limit: usize) -> bool {
    let m = u64::from(matches);
    m * m >= 4 * limit as u64 * u64::from(docs)
}

impl<R: Rank> SortedSegmentCollector<R> {
    /// Time order by media item: reads the documents of each media id in byte order
    /// (from `from` on), keeping those in `matched`, until the page is full at the end
    /// of a media id. Every document left unread has a greater media id than every
    /// kept one, so it cannot be on the page. Gives up (`false`) after `budget`
    /// documents, for the caller to read every match instead.
    fn by_media(
        &mut self,
        reader: &SegmentReader,
        matched: &BitSet,
        from: Option<&[u8]>,
        budget: usize,
    ) -> tantivy::Result<bool> {
        let field = reader.schema().get_field(MEDIA_ID)?;
        let inverted = reader.inverted_index(field)?;
        let alive = reader.alive_bitset();
        let mut terms = match from {
            Some(from) => inverted.terms().range().ge(from).into_stream()?,
            None => inverted.terms().stream()?,
        };
        let mut read = 0usize;
        while terms.advance() {
            let info = terms.value();
            let mut docs = inverted.read_postings_from_terminfo(info, IndexRecordOption::Basic)?;
            let mut doc = docs.doc();
            while doc != TERMINATED {
                if matched.contains(doc) && alive.is_none_or(|a| a.is_alive(doc)) {
                    self.collect(doc, 0.0);
                }
                doc = docs.advance();
            }
            read += info.doc_freq as usize;
            if self.heap.len() >= self.limit {
                return Ok(true);
            }
            if read > budget {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The kept keys, ordinals resolved to media ids, with their documents.
    fn finish(self, segment: SegmentOrdinal) -> tantivy::Result<Vec<Found>> {
        let keys = self.heap.into_vec();
        let mut ords: Vec<u64> = keys.iter().filter(|k| k.1 > 0).map(|k| k.1 - 1).collect();
        ords.sort_unstable();
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
            .map(|(rank, ord, start_ms, id, doc)| {
                let media_id = if ord == 0 {
                    String::new()
                } else {
                    names.get(&(ord - 1)).cloned().ok_or_else(|| {
                        TantivyError::InternalError("unresolved media_id ordinal".into())
                    })?
                };
                Ok((
                    (
                        rank,
                        SortKey {
                            media_id,
                            start_ms,
                            id: Uuid::from_u128(id),
                        },
                    ),
                    DocAddress::new(segment, doc),
                ))
            })
            .collect()
    }
}

impl<R: Rank> SegmentCollector for SortedSegmentCollector<R> {
    type Fruit = Vec<Found>;

    #[inline]
    fn collect(&mut self, doc: DocId, _score: Score) {
        let rank = self.rank.key(doc);
        let ord = match &self.media {
            Some(m) => match m.get_val(doc) {
                NO_MEDIA => 0,
                o => o + 1,
            },
            None => 0,
        };
        let full = self.heap.len() >= self.limit;
        if full
            && self
                .heap
                .peek()
                .is_some_and(|top| (rank, ord) > (top.0, top.1))
        {
            return;
        }
        let (hi, lo) = (self.hi.get_val(doc), self.lo.get_val(doc));
        let key: SegKey = (
            rank,
            ord,
            self.start.get_val(doc),
            (u128::from(hi) << 64) | u128::from(lo),
            doc,
        );
        if !self.cursor.passes(&key) {
            return;
        }
        if full && self.heap.peek().is_some_and(|top| key >= *top) {
            return;
        }
        if !self.scope.allows_key(self.op.get_val(doc))
            || self.mask.as_ref().is_some_and(|m| m.hides(hi, lo))
        {
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

    fn harvest(self) -> Vec<Found> {
        // Only reached through the default `collect_segment`, which this collector
        // overrides; errors are reported by `finish` there.
        self.finish(0).unwrap_or_default()
    }
}

/// The ids of the matching live documents (what counting an operation's documents
/// reads when some committed copies are not current).
pub(crate) struct Ids;

pub(crate) struct SegmentIds {
    hi: Arc<dyn ColumnValues<u64>>,
    lo: Arc<dyn ColumnValues<u64>>,
    ids: Vec<(u64, u64)>,
}

impl Collector for Ids {
    type Fruit = Vec<(u64, u64)>;
    type Child = SegmentIds;

    fn for_segment(
        &self,
        _segment_local_id: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentIds> {
        let ff = segment.fast_fields();
        Ok(SegmentIds {
            hi: ff.u64(ID_HI)?.first_or_default_col(0),
            lo: ff.u64(ID_LO)?.first_or_default_col(0),
            ids: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<(u64, u64)>>) -> tantivy::Result<Vec<(u64, u64)>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for SegmentIds {
    type Fruit = Vec<(u64, u64)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.ids.push((self.hi.get_val(doc), self.lo.get_val(doc)));
    }

    fn harvest(self) -> Vec<(u64, u64)> {
        self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annostore_core::query::{SortOrder, compare};

    #[test]
    fn rank_keys_sort_as_compare_does() {
        let ranks = [
            f32::NEG_INFINITY,
            -1.0,
            -0.5,
            -0.0,
            0.0,
            f32::MIN_POSITIVE,
            0.25,
            0.5,
            1.0,
            f32::MAX,
            f32::INFINITY,
        ];
        let key = SortKey {
            media_id: String::new(),
            start_ms: 0,
            id: Uuid::nil(),
        };
        for a in ranks {
            assert_eq!(rank_of_key(rank_key(a)).to_bits(), a.to_bits());
            for b in ranks {
                assert_eq!(
                    rank_key(a).cmp(&rank_key(b)),
                    compare(SortOrder::Confidence, (Some(a), &key), (Some(b), &key)),
                    "{a} vs {b}"
                );
            }
        }
        // Highest first.
        assert!(rank_key(1.0) < rank_key(MISSING_RANK));
    }
}
