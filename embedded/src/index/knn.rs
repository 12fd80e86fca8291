//! Filtered nearest-neighbour search over the documents' vectors.
//!
//! A document with an embedding carries it as a bytes fast field (f32 little-endian),
//! its dimension, and a `vkey` unique to this version of the document, under which the
//! vector also sits in its dimension's HNSW graph ([`crate::vectors`]).
//!
//! A search makes one pass of the filter over the segments, setting a bit per matching
//! document and reading no column. The candidates are the matches that are live, in
//! scope and have a vector of the query's dimension; the match count bounds them from
//! above and picks the path. Few are compared exactly, every one of them (vectors read
//! from the graph). Many go to the graph, which walks to the nearest keys whose
//! document is a candidate (each visited key is looked up in a per-segment vkey index
//! and checked there), with a beam that widens with the share of the graph the filter
//! keeps; a walk that finds fewer than k falls back to exact. Either way the hits'
//! similarities are computed exactly, as [`annostore_core::query::cosine`] does, and
//! ordered by similarity, then time key.

use super::columns::{ColumnCache, SegmentColumns};
use super::fresh::Mask;
use super::{ID_HI, ID_LO, MEDIA_ID, OP, START_MS};
use crate::vectors::Vectors;
use annostore_core::index::{KnnHit, KnnQuery, Scope};
use annostore_core::model::{Annotation, SortKey};
use annostore_core::query::cosine;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tantivy::columnar::{BytesColumn, Column, ColumnValues};
use tantivy::query::{BitSetDocSet, EnableScoring, Query};
use tantivy::schema::{FAST, SchemaBuilder};
use tantivy::{BitSet, DocId, DocSet, Searcher, TERMINATED, TantivyDocument, TantivyError};
use uuid::Uuid;

pub(crate) const VECTOR: &str = "vector";
pub(crate) const VKEY: &str = "vkey";
pub(crate) const VDIM: &str = "vdim";

/// The vector fields of the schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VectorFields {
    pub vector: tantivy::schema::Field,
    pub vkey: tantivy::schema::Field,
    pub vdim: tantivy::schema::Field,
}

impl VectorFields {
    pub(crate) fn add_to(b: &mut SchemaBuilder) -> VectorFields {
        VectorFields {
            vector: b.add_bytes_field(VECTOR, FAST),
            vkey: b.add_u64_field(VKEY, FAST),
            vdim: b.add_u64_field(VDIM, FAST),
        }
    }

    /// Adds the vector of `a` (see [`embedding`]) to its document under `vkey`.
    pub(crate) fn add(&self, doc: &mut TantivyDocument, vkey: u64, v: &[f32]) {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        doc.add_bytes(self.vector, &bytes);
        doc.add_u64(self.vkey, vkey);
        doc.add_u64(self.vdim, v.len() as u64);
    }
}

/// The embedding an annotation is searched by: none when absent or empty.
pub(crate) fn embedding(a: &Annotation) -> Option<&[f32]> {
    a.embedding.as_deref().filter(|v| !v.is_empty())
}

fn decode(bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
}

/// One candidate: a live document in scope with a vector of the query's dimension.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    segment: u32,
    doc: DocId,
    vkey: u64,
}

/// Which path a search took (tests and the benchmark read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnnPath {
    /// Nothing to search.
    Empty,
    /// Every candidate compared exactly.
    Exact,
    /// The HNSW graph, filtered to the candidates.
    Graph,
}

/// The nearest neighbours of `query.vector` among the documents `filter` matches, in
/// scope (see the module comment).
pub(crate) fn search(
    vectors: &Vectors,
    columns: &ColumnCache,
    searcher: &Searcher,
    filter: &dyn Query,
    query: &KnnQuery,
    mask: Option<&Mask>,
) -> tantivy::Result<(Vec<KnnHit>, KnnPath)> {
    let dim = query.vector.len();
    if query.k == 0 || dim == 0 {
        return Ok((Vec::new(), KnnPath::Empty));
    }
    let mut matched = Matched::of(columns, searcher, filter, query, mask)?;
    if matched.count == 0 {
        return Ok((Vec::new(), KnnPath::Empty));
    }
    let k = query.k;
    let zero = query.vector.iter().all(|x| *x == 0.0);
    let graph = vectors.existing(dim as u32);
    if let Some(graph) = &graph
        && !zero
        && matched.count > k.max(vectors.exact_threshold())
    {
        matched.index_keys()?;
        // A wide filter leaves the walk fewer detours than a narrow one, so it needs a
        // wider beam for the same recall (at 1M clustered 512-d vectors, recall@10 was
        // 0.89 with a beam of 64 and no filter, 0.98 with 256; 0.99 with 64 and a 10 %
        // filter). The beam grows with the share of the graph the filter keeps, up to
        // four times the configured one; the extra hits are re-scored and dropped.
        let share = (matched.count as f64 / vectors.graph_len(graph).max(1) as f64).min(1.0);
        let beam = (4.0 * vectors.expansion_search() as f64 * share) as usize;
        let found = vectors
            .search(graph, &query.vector, k.max(beam), |key| {
                matched.locate(key).is_some_and(|c| matched.allows(c))
            })
            .map_err(TantivyError::InternalError)?;
        // The graph misses nothing it should only when it fills the page: with fewer,
        // the filter left it too few nodes to walk to, and every candidate is compared.
        if found.len() >= k {
            let picked: Vec<Candidate> = found
                .iter()
                .filter_map(|(key, _)| matched.locate(*key))
                .collect();
            let scored = similarities(vectors, columns, searcher, &picked, &query.vector)?;
            return Ok((top(columns, searcher, &picked, scored, k)?, KnnPath::Graph));
        }
    }
    let candidates = matched.candidates(dim as u64)?;
    if candidates.is_empty() {
        return Ok((Vec::new(), KnnPath::Empty));
    }
    let scored = similarities(vectors, columns, searcher, &candidates, &query.vector)?;
    Ok((
        top(columns, searcher, &candidates, scored, k)?,
        KnnPath::Exact,
    ))
}

/// One segment's side of a search: the documents the filter matches (a bitset, no
/// column read yet), and the columns that say whether one is a candidate.
struct SegmentMatches {
    matched: BitSet,
    alive: Option<tantivy::fastfield::AliveBitSet>,
    op: Arc<dyn ColumnValues<u64>>,
    vkey: Option<Column<u64>>,
    vdim: Option<Column<u64>>,
    cols: Arc<SegmentColumns>,
    /// vkey -> document, for the graph's filter (see [`Matched::index_keys`]).
    keys: Option<Arc<KeyIndex>>,
}

/// The filter's matches over every segment. `count` bounds the candidates from above:
/// scope, liveness and dimension are checked per document only where one is looked at.
struct Matched<'a> {
    scope: &'a Scope,
    segments: Vec<SegmentMatches>,
    count: usize,
}

impl<'a> Matched<'a> {
    /// `mask`: documents whose current copy is fresh, left out.
    fn of(
        columns: &ColumnCache,
        searcher: &Searcher,
        filter: &dyn Query,
        query: &'a KnnQuery,
        mask: Option<&Mask>,
    ) -> tantivy::Result<Matched<'a>> {
        let weight = filter.weight(EnableScoring::disabled_from_searcher(searcher))?;
        let mut segments = Vec::new();
        let mut count = 0;
        for reader in searcher.segment_readers() {
            let cols = columns.of(reader);
            let mut matched = BitSet::with_max_value(reader.max_doc());
            weight.for_each_no_score(reader, &mut |docs| {
                for &doc in docs {
                    matched.insert(doc);
                }
                count += docs.len();
            })?;
            if let Some(mask) = mask {
                let hi = cols.u64(ID_HI)?.first_or_default_col(0);
                let lo = cols.u64(ID_LO)?.first_or_default_col(0);
                let mut docs = BitSetDocSet::from(matched.clone());
                let mut doc = docs.doc();
                while doc != TERMINATED {
                    if mask.hides(hi.get_val(doc), lo.get_val(doc)) {
                        matched.remove(doc);
                        count -= 1;
                    }
                    doc = docs.advance();
                }
            }
            segments.push(SegmentMatches {
                matched,
                alive: reader.alive_bitset().cloned(),
                op: cols.u64(OP)?.first_or_default_col(0),
                vkey: cols.u64_opt(VKEY)?,
                vdim: cols.u64_opt(VDIM)?,
                cols,
                keys: None,
            });
        }
        Ok(Matched {
            scope: &query.scope,
            segments,
            count,
        })
    }

    /// Gets each segment's vkey index ready for [`Matched::locate`] (built on a
    /// segment's first graph search, then kept with its columns).
    fn index_keys(&mut self) -> tantivy::Result<()> {
        for s in &mut self.segments {
            let cols = &s.cols;
            s.keys = Some(cols.derived("vkey index", || KeyIndex::of(cols))?);
        }
        Ok(())
    }

    /// The document carrying `key`, when the filter matches it.
    fn locate(&self, key: u64) -> Option<Candidate> {
        self.segments.iter().enumerate().find_map(|(i, s)| {
            s.keys
                .as_ref()
                .and_then(|keys| keys.doc(key))
                .filter(|doc| s.matched.contains(*doc))
                .map(|doc| Candidate {
                    segment: i as u32,
                    doc,
                    vkey: key,
                })
        })
    }

    /// Whether a matched document is live and in scope.
    fn allows(&self, c: Candidate) -> bool {
        let s = &self.segments[c.segment as usize];
        s.alive.as_ref().is_none_or(|a| a.is_alive(c.doc))
            && self.scope.allows_key(s.op.get_val(c.doc))
    }

    /// Every candidate: matched, live, in scope, with a vector of `dim`.
    fn candidates(self, dim: u64) -> tantivy::Result<Vec<Candidate>> {
        let mut out = Vec::new();
        for (i, s) in self.segments.into_iter().enumerate() {
            let (Some(vdim), Some(vkey)) = (&s.vdim, &s.vkey) else {
                continue;
            };
            // Documents of one run sit together: remember the last operation's answer.
            let mut last: Option<(u64, bool)> = None;
            let mut docs = BitSetDocSet::from(s.matched);
            let mut doc = docs.doc();
            while doc != TERMINATED {
                if s.alive.as_ref().is_none_or(|a| a.is_alive(doc)) && vdim.first(doc) == Some(dim)
                {
                    let o = s.op.get_val(doc);
                    let allowed = match last {
                        Some((lo, allowed)) if lo == o => allowed,
                        _ => {
                            let allowed = self.scope.allows_key(o);
                            last = Some((o, allowed));
                            allowed
                        }
                    };
                    if allowed && let Some(key) = vkey.first(doc) {
                        out.push(Candidate {
                            segment: i as u32,
                            doc,
                            vkey: key,
                        });
                    }
                }
                doc = docs.advance();
            }
        }
        Ok(out)
    }
}

/// A segment's vkeys, sorted, with their documents (deleted ones too: liveness is
/// checked per search). Built once per segment, on its first nearest-neighbour search.
pub(crate) struct KeyIndex(Vec<(u64, DocId)>);

impl KeyIndex {
    fn of(cols: &SegmentColumns) -> tantivy::Result<KeyIndex> {
        let mut keys = Vec::new();
        if let Some(vkey) = cols.u64_opt(VKEY)? {
            for doc in 0..vkey.num_docs() {
                if let Some(key) = vkey.first(doc) {
                    keys.push((key, doc));
                }
            }
        }
        keys.sort_unstable();
        Ok(KeyIndex(keys))
    }

    fn doc(&self, key: u64) -> Option<DocId> {
        self.0
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| self.0[i].1)
    }
}

/// Reads the vectors of the documents `(doc, tag)` of one segment in ordinal order and
/// calls `f(tag, vector)` for each.
fn read_vectors<T: Copy>(
    col: Option<BytesColumn>,
    docs: impl IntoIterator<Item = (DocId, T)>,
    mut f: impl FnMut(T, &[f32]),
) -> tantivy::Result<()> {
    let Some(col) = col else {
        return Ok(());
    };
    let mut by_ord: Vec<(u64, T)> = docs
        .into_iter()
        .filter_map(|(doc, tag)| col.ords().first(doc).map(|o| (o, tag)))
        .collect();
    by_ord.sort_unstable_by_key(|(o, _)| *o);
    let mut ords: Vec<u64> = by_ord.iter().map(|(o, _)| *o).collect();
    ords.dedup();
    let mut buf = Vec::new();
    let mut at = 0;
    let mut ord_at = ords.iter();
    let all = col
        .dictionary()
        .sorted_ords_to_term_cb(&ords, |bytes| {
            let Some(&ord) = ord_at.next() else { return };
            decode(bytes, &mut buf);
            while at < by_ord.len() && by_ord[at].0 == ord {
                f(by_ord[at].1, &buf);
                at += 1;
            }
        })
        .map_err(TantivyError::from)?;
    if !all {
        return Err(TantivyError::InternalError(
            "vector ordinal without a value".into(),
        ));
    }
    Ok(())
}

/// Candidates from which [`similarities`] splits the work over every core: reading
/// scattered vectors is bound by memory latency, which more threads hide.
const PARALLEL_FROM: usize = 4_096;

/// Exact similarities of `candidates`: (similarity, candidate index). Vectors come from
/// the graph, which holds every searchable document's (a plain copy, several times
/// faster than the bytes column's dictionary); the column answers for any it lacks.
fn similarities(
    vectors: &Vectors,
    columns: &ColumnCache,
    searcher: &Searcher,
    candidates: &[Candidate],
    query: &[f32],
) -> tantivy::Result<Vec<(f32, usize)>> {
    let graph = vectors.existing(query.len() as u32);
    // One part's scores, and the candidates the graph lacked (by segment).
    let part = |from: usize, part: &[Candidate]| {
        let mut out = Vec::with_capacity(part.len());
        let mut missing: Vec<(u32, DocId, usize)> = Vec::new();
        let mut buf = vec![0.0f32; query.len()];
        for (i, c) in part.iter().enumerate() {
            match &graph {
                Some(g) if vectors.read(g, c.vkey, &mut buf) => {
                    out.push((cosine(query, &buf), from + i));
                }
                _ => missing.push((c.segment, c.doc, from + i)),
            }
        }
        (out, missing)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts: Vec<_> = if candidates.len() >= PARALLEL_FROM && threads > 1 {
        let size = candidates.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = candidates
                .chunks(size)
                .enumerate()
                .map(|(n, chunk)| s.spawn(move || part(n * size, chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().map_err(|_| {
                        TantivyError::InternalError("a similarity thread panicked".into())
                    })
                })
                .collect::<tantivy::Result<Vec<_>>>()
        })?
    } else {
        vec![part(0, candidates)]
    };
    let mut out = Vec::with_capacity(candidates.len());
    let mut missing: HashMap<u32, Vec<(DocId, usize)>> = HashMap::new();
    for (scored, lacked) in parts {
        out.extend(scored);
        for (segment, doc, i) in lacked {
            missing.entry(segment).or_default().push((doc, i));
        }
    }
    for (segment, docs) in missing {
        let col = columns.of(searcher.segment_reader(segment)).bytes(VECTOR)?;
        read_vectors(col, docs, |i, v| out.push((cosine(query, v), i)))?;
    }
    Ok(out)
}

/// The best `k` of `scored`: similarity descending, then time key.
fn top(
    columns: &ColumnCache,
    searcher: &Searcher,
    candidates: &[Candidate],
    mut scored: Vec<(f32, usize)>,
    k: usize,
) -> tantivy::Result<Vec<KnnHit>> {
    let desc = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0);
    if scored.len() > k {
        // Keep the k best and whatever ties the k-th: the time key decides among those.
        scored.select_nth_unstable_by(k - 1, desc);
        let kth = scored[k - 1].0;
        let (head, tail) = scored.split_at(k);
        let ties: Vec<(f32, usize)> = tail.iter().filter(|s| s.0 == kth).copied().collect();
        let mut kept = head.to_vec();
        kept.extend(ties);
        scored = kept;
    }
    let mut hits: Vec<(KnnHit, Candidate)> = scored
        .into_iter()
        .map(|(similarity, i)| {
            let key = sort_key(columns, searcher, candidates[i])?;
            let hit = KnnHit {
                id: key.id,
                key,
                similarity,
                annotation: None,
            };
            Ok((hit, candidates[i]))
        })
        .collect::<tantivy::Result<_>>()?;
    hits.sort_by(|(a, _), (b, _)| {
        b.similarity
            .total_cmp(&a.similarity)
            .then_with(|| a.key.cmp(&b.key))
    });
    hits.truncate(k);
    let body = searcher.schema().get_field(super::BODY)?;
    hits.into_iter()
        .map(|(mut hit, c)| {
            hit.annotation = Some(super::stored(
                searcher,
                body,
                tantivy::DocAddress::new(c.segment, c.doc),
            )?);
            Ok(hit)
        })
        .collect()
}

fn sort_key(columns: &ColumnCache, searcher: &Searcher, c: Candidate) -> tantivy::Result<SortKey> {
    let cols = columns.of(searcher.segment_reader(c.segment));
    let mut media_id = String::new();
    if let Some(col) = cols.str(MEDIA_ID)?
        && let Some(ord) = col.term_ords(c.doc).next()
    {
        col.ord_to_str(ord, &mut media_id)?;
    }
    let start_ms = cols.i64(START_MS)?.first(c.doc).unwrap_or(0);
    let hi = cols.u64(ID_HI)?.first(c.doc).unwrap_or(0);
    let lo = cols.u64(ID_LO)?.first(c.doc).unwrap_or(0);
    Ok(SortKey {
        media_id,
        start_ms,
        id: Uuid::from_u64_pair(hi, lo),
    })
}

/// The vkeys of every live document with a vector (for the sweep after deletes).
pub(crate) fn live_keys(searcher: &Searcher) -> tantivy::Result<HashSet<u64>> {
    let mut out = HashSet::new();
    for_each_live(searcher, |_, _, key, _| {
        out.insert(key);
    })?;
    Ok(out)
}

/// Every live document with a vector: (segment, doc, vkey, dimension).
fn for_each_live(
    searcher: &Searcher,
    mut f: impl FnMut(u32, DocId, u64, u32),
) -> tantivy::Result<()> {
    for (segment, reader) in searcher.segment_readers().iter().enumerate() {
        let ff = reader.fast_fields();
        let (Some(vdim), Some(vkey)) = (ff.column_opt::<u64>(VDIM)?, ff.column_opt::<u64>(VKEY)?)
        else {
            continue;
        };
        let alive = reader.alive_bitset();
        for doc in 0..reader.max_doc() {
            if alive.is_some_and(|a| !a.is_alive(doc)) {
                continue;
            }
            if let (Some(key), Some(d)) = (vkey.first(doc), vdim.first(doc)) {
                f(segment as u32, doc, key, d as u32);
            }
        }
    }
    Ok(())
}

/// What the index found at open about its vectors.
#[derive(Debug, Clone, Copy, Default)]
pub struct VectorsOpened {
    /// Keys read from the snapshot.
    pub from_snapshot: usize,
    /// Vectors read from the columns and added to the graphs.
    pub added: usize,
    /// Snapshot keys no live document has, removed.
    pub removed: usize,
    /// Seconds spent (snapshot load and catch-up).
    pub seconds: f64,
}

/// Brings `vectors` in step with the documents of `searcher` at open.
pub(crate) fn restore(
    vectors: &Vectors,
    searcher: &Searcher,
    snapshot: &std::path::Path,
) -> Result<VectorsOpened, String> {
    let started = std::time::Instant::now();
    let from_snapshot = vectors.load(snapshot);
    let mut live: HashMap<u64, u32> = HashMap::new();
    let mut at: HashMap<u64, (u32, DocId)> = HashMap::new();
    for_each_live(searcher, |segment, doc, key, dim| {
        live.insert(key, dim);
        at.insert(key, (segment, doc));
    })
    .map_err(|e| e.to_string())?;
    let done = vectors.catch_up(&live, |missing, add| {
        let mut per_segment: HashMap<u32, Vec<(DocId, u64)>> = HashMap::new();
        for key in missing {
            if let Some((segment, doc)) = at.get(key) {
                per_segment.entry(*segment).or_default().push((*doc, *key));
            }
        }
        for (segment, docs) in per_segment {
            let col = searcher
                .segment_reader(segment)
                .fast_fields()
                .bytes(VECTOR)
                .map_err(|e| e.to_string())?;
            read_vectors(col, docs, |key, v| add(key, v)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })?;
    Ok(VectorsOpened {
        from_snapshot,
        added: done.added,
        removed: done.removed,
        seconds: started.elapsed().as_secs_f64(),
    })
}
