//! Time cells: where on a media item's timeline a document lies, as terms, so that a
//! search for a window of one media item reads the documents near the window instead
//! of every document of the media item (a 4,000 s video with a detection per frame has
//! 100,000 of them; checking each one's times on the columns cost 3 ms a search).
//!
//! Level `l` cuts time into cells of `1024 << (3 * l)` ms: 1 s, 8 s, 66 s, 9 min,
//! 70 min, 9.3 h, 3.1 days and 24.9 days. A document goes to the finest level at which
//! its `[start_ms, end_ms]` touches at most two cells, with a term for each (one or
//! two); a longer document gets the one term of the top level, [`ALL`]. A window
//! `[from, to]` touches a run of consecutive cells at each level, and a document that
//! intersects the window has a term in one of them (an instant they share lies in a
//! cell the document touches). So the candidates are the union of one term range per
//! level, and the exact time test still runs on the columns: `within` and `contains`
//! hold only for documents that intersect, so the same candidates serve them.
//!
//! A term is `[media id length, u16 big-endian][media id][level][cell]`, the cell an
//! i64 in an order-keeping big-endian form: one media item's cells of one level are one
//! contiguous range of the term dictionary.

use annostore_core::model::Annotation;
use tantivy::query::{ConstScorer, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, DocSet, Score, SegmentReader, TERMINATED, TantivyError};

/// Width of a level-0 cell, in ms.
const WIDTH_0: i64 = 1 << 10;
/// Each level's cells are this many times wider than the level below (a power of two).
const SHIFT: u32 = 3;
/// Levels with cells; documents longer than two cells of the last go to [`ALL`].
const LEVELS: u8 = 8;
/// The level of documents too long for any cell: one term per media item.
const ALL: u8 = LEVELS;
/// Most media items a query reads cells for; more, and it reads media terms instead.
pub(crate) const MAX_MEDIA: usize = 64;

fn width(level: u8) -> i64 {
    WIDTH_0 << (SHIFT * u32::from(level))
}

fn cell(ms: i64, level: u8) -> i64 {
    ms.div_euclid(width(level))
}

fn term(media_id: &str, level: u8, cell: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + media_id.len() + 9);
    // Media ids are bounded far below u16::MAX by validation; a longer one would only
    // share terms with its own prefix's cells, never lose documents.
    let len = u16::try_from(media_id.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(media_id.as_bytes());
    out.push(level);
    out.extend_from_slice(&((cell as u64) ^ (1 << 63)).to_be_bytes());
    out
}

/// The cell terms of a document (one or two).
pub(crate) fn terms(a: &Annotation) -> Vec<Vec<u8>> {
    let (start, end) = (a.start_ms.min(a.end_ms), a.start_ms.max(a.end_ms));
    for level in 0..LEVELS {
        let (first, last) = (cell(start, level), cell(end, level));
        if last - first <= 1 {
            return (first..=last)
                .map(|c| term(&a.media_id, level, c))
                .collect();
        }
    }
    vec![term(&a.media_id, ALL, 0)]
}

/// The documents of some media items with a cell term that `[from, to]` touches: a
/// superset of those intersecting the window (see the module comment).
#[derive(Debug, Clone)]
pub(crate) struct CellsQuery {
    field: Field,
    /// Inclusive term ranges, with how many cells each spans: per media item, one per
    /// level and one for [`ALL`].
    ranges: Vec<(Vec<u8>, Vec<u8>, u64)>,
}

/// Ranges of at most this many cells are read by looking each cell up.
const LOOKUPS: u64 = 16;

/// The cell a term names (its last 8 bytes).
fn first_cell(term: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&term[term.len() - 8..]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

fn set_cell(term: &mut [u8], cell: i64) {
    let n = term.len();
    term[n - 8..].copy_from_slice(&((cell as u64) ^ (1 << 63)).to_be_bytes());
}

impl CellsQuery {
    pub(crate) fn new(field: Field, media_ids: &[&str], from: i64, to: i64) -> CellsQuery {
        let (from, to) = (from.min(to), from.max(to));
        let mut ranges = Vec::with_capacity(media_ids.len() * (usize::from(LEVELS) + 1));
        for m in media_ids {
            for level in 0..LEVELS {
                let (first, last) = (cell(from, level), cell(to, level));
                let cells = (last as i128 - first as i128 + 1).min(u64::MAX as i128) as u64;
                ranges.push((term(m, level, first), term(m, level, last), cells));
            }
            let all = term(m, ALL, 0);
            ranges.push((all.clone(), all, 1));
        }
        CellsQuery { field, ranges }
    }
}

impl Query for CellsQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl CellsQuery {
    /// The matching documents of one segment, in order, each once.
    fn docs(&self, reader: &SegmentReader) -> tantivy::Result<Vec<DocId>> {
        let inverted = reader.inverted_index(self.field)?;
        let dict = inverted.terms();
        let mut docs = Vec::new();
        let mut add = |info: &tantivy::postings::TermInfo| -> tantivy::Result<()> {
            let mut postings =
                inverted.read_block_postings_from_terminfo(info, IndexRecordOption::Basic)?;
            while !postings.docs().is_empty() {
                docs.extend_from_slice(postings.docs());
                postings.advance();
            }
            Ok(())
        };
        for (lo, hi, cells) in &self.ranges {
            if *cells <= LOOKUPS {
                // A few cells: looked up one by one (setting up a range stream of the
                // dictionary costs more than several lookups).
                let mut term = lo.clone();
                for i in 0..*cells {
                    set_cell(&mut term, first_cell(lo) + i as i64);
                    if let Some(info) = dict.get(&term)? {
                        add(&info)?;
                    }
                }
            } else {
                let mut terms = dict.range().ge(lo).le(hi).into_stream()?;
                while terms.advance() {
                    add(terms.value())?;
                }
            }
        }
        docs.sort_unstable();
        docs.dedup();
        Ok(docs)
    }
}

impl Weight for CellsQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let docs = SortedDocs {
            docs: self.docs(reader)?,
            at: 0,
        };
        Ok(Box::new(ConstScorer::new(docs, boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.docs(reader)?.binary_search(&doc).is_ok() {
            Ok(Explanation::new("CellsQuery", 1.0))
        } else {
            Err(TantivyError::InvalidArgument(format!(
                "document {doc} is in no cell of the window"
            )))
        }
    }
}

/// Documents collected ahead, in order, each once (tantivy's own `VecDocSet` is for its
/// tests only).
struct SortedDocs {
    docs: Vec<DocId>,
    at: usize,
}

impl DocSet for SortedDocs {
    fn advance(&mut self) -> DocId {
        self.at = (self.at + 1).min(self.docs.len());
        self.doc()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        let rest = &self.docs[self.at..];
        self.at += rest.partition_point(|&d| d < target);
        self.doc()
    }

    fn doc(&self) -> DocId {
        self.docs.get(self.at).copied().unwrap_or(TERMINATED)
    }

    fn size_hint(&self) -> u32 {
        (self.docs.len() - self.at) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annostore_core::query::TimeRelation;

    fn cells_of(start: i64, end: i64) -> Vec<(u8, i64)> {
        let a = Annotation {
            id: uuid::Uuid::nil(),
            media_id: "m".into(),
            start_ms: start,
            end_ms: end,
            label: None,
            confidence: None,
            bbox: None,
            embedding: None,
            data: None,
            annotation_type: "t".into(),
            annotation_type_version: 1,
            pivot_id: "p".into(),
            operation_id: uuid::Uuid::nil(),
        };
        terms(&a)
            .iter()
            .map(|t| {
                let level = t[3];
                let c = u64::from_be_bytes(t[4..12].try_into().unwrap()) ^ (1 << 63);
                (level, c as i64)
            })
            .collect()
    }

    #[test]
    fn a_document_takes_the_finest_level_where_it_touches_two_cells_at_most() {
        assert_eq!(cells_of(0, 40), vec![(0, 0)]);
        assert_eq!(cells_of(1000, 1040), vec![(0, 0), (0, 1)]);
        assert_eq!(cells_of(0, 2048), vec![(1, 0)]);
        assert_eq!(cells_of(-10, 10), vec![(0, -1), (0, 0)]);
        assert_eq!(cells_of(0, i64::MAX), vec![(ALL, 0)]);
        assert_eq!(cells_of(i64::MIN, i64::MAX), vec![(ALL, 0)]);
    }

    /// Exhaustive over small times at coarse steps: every document that intersects a
    /// window has a term in the window's ranges (so `within` and `contains` too).
    #[test]
    fn every_document_intersecting_a_window_has_a_term_in_its_ranges() {
        let times: Vec<i64> = (-3..40)
            .map(|i| i * 997 - 1500)
            .chain([0, 1023, 1024, 8191, 8192, 70_000, 600_000, 5_000_000])
            .collect();
        let mut checked = 0;
        for &s in &times {
            for &e in times.iter().filter(|&&e| e >= s) {
                let doc_terms: Vec<Vec<u8>> = cells_of(s, e)
                    .into_iter()
                    .map(|(l, c)| term("m", l, c))
                    .collect();
                for &from in &times {
                    for &to in times.iter().filter(|&&t| t >= from) {
                        if !TimeRelation::Intersects.holds(s, e, from, to) {
                            continue;
                        }
                        let q = CellsQuery::new(Field::from_field_id(0), &["m"], from, to);
                        assert!(
                            doc_terms
                                .iter()
                                .any(|t| q.ranges.iter().any(|(lo, hi, _)| lo <= t && t <= hi)),
                            "[{s}, {e}] intersects [{from}, {to}] but none of its cells is read"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    #[test]
    fn media_ids_do_not_share_ranges() {
        // "m" and "m\0..." must not overlap: the length prefix keeps them apart.
        let a = CellsQuery::new(Field::from_field_id(0), &["m"], 0, 10_000);
        let t = term("m\u{0}", 0, 0);
        assert!(!a.ranges.iter().any(|(lo, hi, _)| *lo <= t && t <= *hi));
    }
}
