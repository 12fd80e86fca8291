//! The fresh documents: what upserts wrote since the last commit, kept as annotations
//! beside the committed searcher and searched by brute force, so a document is
//! searchable the moment its upsert returns. They are the index's write log too: the
//! committer thread takes them in order ([`Fresh::after`]), hands them to tantivy's
//! writer, commits, and drops them from the view once the new searcher holds them. An
//! upsert never waits for tantivy (documents built, vectors in graphs, a commit).
//!
//! A tantivy commit writes every segment file and the reader reloads: about 11 ms for
//! even a few documents here, tens of milliseconds for many. Waiting for one made every
//! finish cost that much (a finish waits until the run's documents are searchable);
//! now commits only make the documents durable, in the background, and the store's
//! pending records cover what a crash loses meanwhile (`Service::recover` replays them
//! before serving).
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

/// One upsert's documents.
pub(crate) struct Chunk {
    /// Orders the log: a higher one is newer (and holds newer copies).
    seq: u64,
    /// One copy per id (the last of the upsert), sorted by time key.
    docs: Vec<Annotation>,
    /// The longest `end_ms - start_ms` of the documents (how far before a window a
    /// document that reaches into it can start).
    max_len: i64,
    /// Ids that may have older copies elsewhere.
    rewrites: Vec<u128>,
    /// About the memory the documents take.
    bytes: usize,
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

    pub(crate) fn docs(&self) -> &[Annotation] {
        &self.docs
    }

    /// Ids that may have older copies in the committed searcher.
    pub(crate) fn rewrites(&self) -> &[u128] {
        &self.rewrites
    }
}

/// A change to the index, in the order the committer hands them to tantivy.
#[derive(Clone)]
pub(crate) enum Entry {
    Add(Arc<Chunk>),
    /// Every document of an operation goes (garbage collection).
    DeleteOperation(u64, Uuid),
}

impl Entry {
    pub(crate) fn seq(&self) -> u64 {
        match self {
            Entry::Add(c) => c.seq,
            Entry::DeleteOperation(seq, _) => *seq,
        }
    }
}

/// The fresh documents of one view. Cheap to clone (shared chunks, a persistent map).
#[derive(Clone)]
pub(crate) struct Fresh {
    /// Oldest first.
    chunks: Vec<Arc<Chunk>>,
    /// Deletions of whole operations not yet committed, oldest first.
    deletes: Vec<(u64, Uuid)>,
    /// For each id that may have several copies, the chunk holding the current one.
    current: imbl::HashMap<u128, u64>,
    /// The sequence number the next entry takes (1 first: 0 means none).
    next_seq: u64,
    bytes: usize,
}

impl Default for Fresh {
    fn default() -> Fresh {
        Fresh {
            chunks: Vec::new(),
            deletes: Vec::new(),
            current: imbl::HashMap::new(),
            next_seq: 1,
            bytes: 0,
        }
    }
}

impl Fresh {
    /// Adds an upsert's documents (`docs`: one copy per id). `rewrites`: the ids that
    /// may have older copies (all of them for a replay).
    pub(crate) fn with(&self, mut docs: Vec<Annotation>, rewrites: Vec<u128>) -> Fresh {
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
        let bytes: usize = docs.iter().map(approx_bytes).sum();
        let mut chunks = self.chunks.clone();
        chunks.push(Arc::new(Chunk {
            seq,
            docs,
            max_len,
            rewrites,
            bytes,
        }));
        Fresh {
            chunks,
            deletes: self.deletes.clone(),
            current,
            next_seq: seq + 1,
            bytes: self.bytes + bytes,
        }
    }

    /// Without the documents of one operation, and with its deletion logged for the
    /// committer (garbage collection).
    pub(crate) fn deleting(&self, operation_id: Uuid) -> Fresh {
        let chunks = self
            .chunks
            .iter()
            .map(|c| {
                if c.docs.iter().any(|a| a.operation_id == operation_id) {
                    let docs: Vec<Annotation> = c
                        .docs
                        .iter()
                        .filter(|a| a.operation_id != operation_id)
                        .cloned()
                        .collect();
                    Arc::new(Chunk {
                        seq: c.seq,
                        max_len: c.max_len,
                        rewrites: c.rewrites.clone(),
                        bytes: docs.iter().map(approx_bytes).sum(),
                        docs,
                    })
                } else {
                    c.clone()
                }
            })
            .collect();
        let mut deletes = self.deletes.clone();
        deletes.push((self.next_seq, operation_id));
        Fresh {
            deletes,
            next_seq: self.next_seq + 1,
            ..self.rebuilt(chunks)
        }
    }

    /// The entries after `seq`, in order: what the committer has not handed over yet.
    pub(crate) fn after(&self, seq: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .chunks
            .iter()
            .filter(|c| c.seq > seq)
            .map(|c| Entry::Add(c.clone()))
            .chain(
                self.deletes
                    .iter()
                    .filter(|(s, _)| *s > seq)
                    .map(|(s, op)| Entry::DeleteOperation(*s, *op)),
            )
            .collect();
        out.sort_unstable_by_key(Entry::seq);
        out
    }

    /// Without the entries up to `seq` (committed, and in the searcher now).
    pub(crate) fn committed_through(&self, seq: u64) -> Fresh {
        Fresh {
            deletes: self
                .deletes
                .iter()
                .filter(|(s, _)| *s > seq)
                .copied()
                .collect(),
            ..self.rebuilt(
                self.chunks
                    .iter()
                    .filter(|c| c.seq > seq)
                    .cloned()
                    .collect(),
            )
        }
    }

    fn rebuilt(&self, chunks: Vec<Arc<Chunk>>) -> Fresh {
        let mut current = imbl::HashMap::new();
        for c in &chunks {
            for id in &c.rewrites {
                current.insert(*id, c.seq);
            }
        }
        Fresh {
            bytes: chunks.iter().map(|c| c.bytes).sum(),
            chunks,
            deletes: self.deletes.clone(),
            current,
            next_seq: self.next_seq,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether anything waits for a commit.
    pub(crate) fn has_entries(&self) -> bool {
        !self.chunks.is_empty() || !self.deletes.is_empty()
    }

    /// The newest entry's sequence number (0 when none was ever made).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Documents held (copies, current or not).
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.docs.len()).sum()
    }

    /// About the memory the documents take.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
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

    /// The best `limit` matches after `after`, as the collector ranks them, with
    /// copies of the annotations.
    pub(crate) fn ranked(
        &self,
        filter: &SearchFilter,
        scope: &Scope,
        order: SortOrder,
        after: Option<&Ranked>,
        limit: usize,
    ) -> Vec<(Ranked, Annotation)> {
        // The best `limit` by reference, then owned.
        let mut heap: BinaryHeap<(RefKey<'_>, Best<'_>)> = BinaryHeap::with_capacity(limit + 1);
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
                heap.push((key, Best(a)));
            } else if heap.peek().is_some_and(|top| key < top.0) {
                heap.pop();
                heap.push((key, Best(a)));
            }
        }
        let mut out: Vec<(Ranked, Annotation)> = heap
            .into_iter()
            .map(|((rank, media_id, start_ms, id), a)| {
                let key = SortKey {
                    media_id: media_id.to_owned(),
                    start_ms,
                    id,
                };
                ((rank, key), a.0.clone())
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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
        let mut hits: Vec<(f32, &Annotation)> = self
            .matching(filter, scope)
            .filter_map(|a| {
                let v = a.embedding.as_deref().filter(|v| v.len() == vector.len())?;
                Some((query::cosine(vector, v), a))
            })
            .collect();
        hits.sort_by(|a, b| {
            b.0.total_cmp(&a.0).then_with(|| {
                (a.1.media_id.as_str(), a.1.start_ms, a.1.id).cmp(&(
                    b.1.media_id.as_str(),
                    b.1.start_ms,
                    b.1.id,
                ))
            })
        });
        hits.truncate(k);
        hits.into_iter()
            .map(|(similarity, a)| KnnHit {
                id: a.id,
                key: SortKey::of(a),
                similarity,
                annotation: Some(a.clone()),
            })
            .collect()
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

/// A rank key and time key by reference (what [`Fresh::ranked`] orders by).
type RefKey<'a> = (u32, &'a str, i64, Uuid);

/// An annotation riding along with its key in a heap ordered by the key alone.
struct Best<'a>(&'a Annotation);

impl PartialEq for Best<'_> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Best<'_> {}

impl PartialOrd for Best<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Best<'_> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
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

/// About the bytes an annotation takes in memory: its vector, its strings, a guess for
/// `data` (measuring it would cost more than the bound is worth), and the struct.
fn approx_bytes(a: &Annotation) -> usize {
    std::mem::size_of::<Annotation>()
        + a.embedding.as_ref().map_or(0, |v| v.len() * 4)
        + a.media_id.len()
        + a.label.as_ref().map_or(0, String::len)
        + a.annotation_type.len()
        + a.pivot_id.len()
        + a.data.as_ref().map_or(0, |_| 256)
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
