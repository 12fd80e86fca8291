//! The fresh documents: what upserts handed to the writer since the last commit, kept
//! as annotations beside the committed searcher and searched by brute force, so a
//! document is searchable the moment its upsert returns, not at the next commit.
//!
//! A tantivy commit writes every segment file and the reader reloads: about 11 ms for
//! even a few documents here. Waiting for one made every finish cost that much (a
//! finish waits until the run's documents are searchable); now commits only make the
//! documents durable, in the background, and the store's pending records cover what a
//! crash loses meanwhile (`Service::recover` replays them before serving).
//!
//! The semantics are [`annostore_core::query::matches`] itself, the definition every
//! engine is tested against. Each upsert's documents are one [`Chunk`], sorted by time
//! key, so a search naming media items reads only their documents of each chunk.
//!
//! One copy of each id counts. A chunk that may rewrite ids (an upsert that replaced
//! ids, or a replay, which may replace any) records them in [`Fresh::current`] with
//! its sequence number: an older copy, in an older chunk or in the committed searcher,
//! is then skipped ([`Fresh::is_current`], [`Fresh::masks`]). Ids that are new need no
//! entry, so the common case costs no lookup at all.

use super::aggregate::Counts;
use super::collector::{Ranked, rank_key};
use annostore_core::index::{KnnHit, Scope};
use annostore_core::model::{Annotation, SearchFilter, SortKey, TimeRange};
use annostore_core::query::{self, AggregateSpec, MISSING_RANK, SortOrder};
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use uuid::Uuid;

/// One upsert's documents, as handed to the writer.
pub(crate) struct Chunk {
    /// The commit batch the documents joined: they leave the fresh documents when it
    /// is committed and searchable.
    pub(crate) batch: u64,
    /// Orders chunks: a higher one holds newer copies.
    seq: u64,
    /// One copy per id (the last of the upsert), sorted by time key.
    docs: Vec<Annotation>,
    /// The longest `end_ms - start_ms` of the documents (how far before a window a
    /// document that reaches into it can start).
    max_len: i64,
    /// Ids that may have older copies elsewhere.
    rewrites: Vec<u128>,
}

impl Chunk {
    /// The documents of media item `m` that can relate to `window`: those starting
    /// from `max_len` before its start up to its end (every relation holds only for
    /// documents that intersect the window).
    fn of_media(&self, m: &str, window: Option<&TimeRange>) -> &[Annotation] {
        let from = self.docs.partition_point(|a| a.media_id.as_str() < m);
        let docs = &self.docs[from..];
        let docs = &docs[..docs.partition_point(|a| a.media_id == m)];
        match window {
            None => docs,
            Some(w) => {
                let (lo, hi) = (w.start_ms.min(w.end_ms), w.start_ms.max(w.end_ms));
                let first = lo.saturating_sub(self.max_len);
                let start = docs.partition_point(|a| a.start_ms < first);
                let end = docs.partition_point(|a| a.start_ms <= hi);
                &docs[start..end.max(start)]
            }
        }
    }

    /// The same documents in another batch (a failed commit's, written again).
    pub(crate) fn in_batch(&self, batch: u64) -> Chunk {
        Chunk {
            batch,
            seq: self.seq,
            docs: self.docs.clone(),
            max_len: self.max_len,
            rewrites: self.rewrites.clone(),
        }
    }

    pub(crate) fn docs(&self) -> &[Annotation] {
        &self.docs
    }
}

/// The fresh documents of one view. Cheap to clone (shared chunks, a persistent map).
#[derive(Clone, Default)]
pub(crate) struct Fresh {
    /// Oldest first.
    chunks: Vec<Arc<Chunk>>,
    /// For each id that may have several copies, the chunk holding the current one.
    current: imbl::HashMap<u128, u64>,
    next_seq: u64,
}

impl Fresh {
    /// Adds an upsert's documents (`docs`: one copy per id), joined to `batch`.
    /// `rewrites`: the ids that may have older copies (all of them for a replay).
    pub(crate) fn with(&self, batch: u64, mut docs: Vec<Annotation>, rewrites: Vec<u128>) -> Fresh {
        docs.sort_unstable_by(|a, b| {
            (a.media_id.as_str(), a.start_ms, a.id).cmp(&(b.media_id.as_str(), b.start_ms, b.id))
        });
        let seq = self.next_seq;
        let mut current = self.current.clone();
        for id in &rewrites {
            current.insert(*id, seq);
        }
        let max_len = docs
            .iter()
            .map(|a| a.end_ms.saturating_sub(a.start_ms).max(0))
            .max()
            .unwrap_or(0);
        let mut chunks = self.chunks.clone();
        chunks.push(Arc::new(Chunk {
            batch,
            seq,
            docs,
            max_len,
            rewrites,
        }));
        Fresh {
            chunks,
            current,
            next_seq: seq + 1,
        }
    }

    /// Without the chunks of batches up to `batch` (committed and searchable now).
    pub(crate) fn after_batch(&self, batch: u64) -> Fresh {
        self.rebuilt(
            self.chunks
                .iter()
                .filter(|c| c.batch > batch)
                .cloned()
                .collect(),
        )
    }

    /// The chunks of batches up to `batch` (a failed commit's, to be written again).
    pub(crate) fn up_to_batch(&self, batch: u64) -> Vec<Arc<Chunk>> {
        self.chunks
            .iter()
            .filter(|c| c.batch <= batch)
            .cloned()
            .collect()
    }

    /// With `replacements` in place of the chunks of the same sequence numbers.
    pub(crate) fn replacing(&self, replacements: Vec<Chunk>) -> Fresh {
        let mut by_seq: std::collections::HashMap<u64, Chunk> =
            replacements.into_iter().map(|c| (c.seq, c)).collect();
        let chunks = self
            .chunks
            .iter()
            .map(|c| match by_seq.remove(&c.seq) {
                Some(r) => Arc::new(r),
                None => c.clone(),
            })
            .collect();
        self.rebuilt(chunks)
    }

    /// Without the documents of one operation (garbage collection).
    pub(crate) fn without_operation(&self, operation_id: Uuid) -> Fresh {
        let chunks = self
            .chunks
            .iter()
            .map(|c| {
                if c.docs.iter().any(|a| a.operation_id == operation_id) {
                    Arc::new(Chunk {
                        batch: c.batch,
                        seq: c.seq,
                        max_len: c.max_len,
                        docs: c
                            .docs
                            .iter()
                            .filter(|a| a.operation_id != operation_id)
                            .cloned()
                            .collect(),
                        rewrites: c.rewrites.clone(),
                    })
                } else {
                    c.clone()
                }
            })
            .collect();
        self.rebuilt(chunks)
    }

    fn rebuilt(&self, chunks: Vec<Arc<Chunk>>) -> Fresh {
        let mut current = imbl::HashMap::new();
        for c in &chunks {
            for id in &c.rewrites {
                current.insert(*id, c.seq);
            }
        }
        Fresh {
            chunks,
            current,
            next_seq: self.next_seq,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Documents held (copies, current or not).
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.docs.len()).sum()
    }

    /// The ids whose copies in the committed searcher are not current (a fresh copy
    /// is), or `None` when there are none.
    pub(crate) fn masks(&self) -> Option<Mask> {
        (!self.current.is_empty()).then(|| Mask(self.current.clone()))
    }

    fn is_current(&self, chunk: &Chunk, id: &Uuid) -> bool {
        self.current.is_empty()
            || self
                .current
                .get(&id.as_u128())
                .is_none_or(|&seq| seq == chunk.seq)
    }

    /// The current documents in scope that `filter` matches.
    pub(crate) fn matching<'a>(
        &'a self,
        filter: &'a SearchFilter,
        scope: &'a Scope,
    ) -> impl Iterator<Item = &'a Annotation> + 'a {
        let media = media_of(filter);
        self.chunks.iter().flat_map(move |chunk| {
            let parts: Vec<&'a [Annotation]> = match &media {
                Some(ms) => ms
                    .iter()
                    .map(|m| chunk.of_media(m, filter.time_range.as_ref()))
                    .collect(),
                None => vec![&chunk.docs[..]],
            };
            parts.into_iter().flatten().filter(move |a| {
                self.is_current(chunk, &a.id)
                    && scope.allows(&a.operation_id)
                    && query::matches(filter, a)
            })
        })
    }

    /// The best `limit` matches after `after`, as the collector ranks them.
    pub(crate) fn ranked(
        &self,
        filter: &SearchFilter,
        scope: &Scope,
        order: SortOrder,
        after: Option<&Ranked>,
        limit: usize,
    ) -> Vec<Ranked> {
        // The best `limit` by reference, then owned.
        let mut heap: BinaryHeap<(u32, &str, i64, Uuid)> = BinaryHeap::with_capacity(limit + 1);
        let after = after.map(|(r, k)| (*r, k.media_id.as_str(), k.start_ms, k.id));
        for a in self.matching(filter, scope) {
            let rank = match order {
                SortOrder::Confidence => rank_key(a.confidence.unwrap_or(MISSING_RANK)),
                _ => 0,
            };
            let key = (rank, a.media_id.as_str(), a.start_ms, a.id);
            if after.is_some_and(|c| key <= c) {
                continue;
            }
            if heap.len() < limit {
                heap.push(key);
            } else if heap.peek().is_some_and(|top| key < *top) {
                heap.pop();
                heap.push(key);
            }
        }
        let mut out: Vec<Ranked> = heap
            .into_iter()
            .map(|(rank, media_id, start_ms, id)| {
                (
                    rank,
                    SortKey {
                        media_id: media_id.to_owned(),
                        start_ms,
                        id,
                    },
                )
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The `k` most similar matches with an embedding of `vector`'s dimension:
    /// similarity descending, then time key (as the graph's hits are ordered).
    pub(crate) fn nearest(
        &self,
        filter: &SearchFilter,
        scope: &Scope,
        vector: &[f32],
        k: usize,
    ) -> Vec<KnnHit> {
        let mut hits: Vec<KnnHit> = self
            .matching(filter, scope)
            .filter_map(|a| {
                let v = a.embedding.as_deref().filter(|v| v.len() == vector.len())?;
                Some(KnnHit {
                    id: a.id,
                    key: SortKey::of(a),
                    similarity: query::cosine(vector, v),
                })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then_with(|| a.key.cmp(&b.key))
        });
        hits.truncate(k);
        hits
    }

    /// Adds the matches to `counts`.
    pub(crate) fn count_into(
        &self,
        counts: &mut Counts,
        filter: &SearchFilter,
        scope: &Scope,
        spec: &AggregateSpec,
    ) -> Result<(), super::aggregate::Problem> {
        for a in self.matching(filter, scope) {
            counts.add(a, spec)?;
        }
        Ok(())
    }

    /// Current documents of one operation.
    pub(crate) fn count_operation(&self, operation_id: Uuid) -> u64 {
        let scope = Scope::Operation(operation_id);
        self.matching(&SearchFilter::default(), &scope).count() as u64
    }
}

/// Ids whose committed copies a search must skip (see [`Fresh::masks`]).
#[derive(Clone)]
pub(crate) struct Mask(imbl::HashMap<u128, u64>);

impl Mask {
    #[inline]
    pub(crate) fn hides(&self, hi: u64, lo: u64) -> bool {
        self.0
            .contains_key(&((u128::from(hi) << 64) | u128::from(lo)))
    }
}

/// The media items a filter allows, when it names some (`media_id` and `media_ids`
/// both hold); `None` when it allows any.
fn media_of(filter: &SearchFilter) -> Option<Vec<&str>> {
    let listed: Option<BTreeSet<&str>> = filter
        .media_ids
        .as_ref()
        .map(|ms| ms.iter().map(String::as_str).collect());
    match (&filter.media_id, listed) {
        (Some(m), None) => Some(vec![m.as_str()]),
        (Some(m), Some(l)) => Some(if l.contains(m.as_str()) {
            vec![m.as_str()]
        } else {
            vec![]
        }),
        (None, Some(l)) => Some(l.into_iter().collect()),
        (None, None) => None,
    }
}
