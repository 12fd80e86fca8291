//! The search index on tantivy.
//!
//! Documents carry only what search needs (no stored fields): the service fetches the
//! annotations themselves from the store. Visibility is decided at query time from the
//! document's 64-bit operation key, so finishing a run never rewrites documents.
//!
//! Writes use group commit: callers build their documents without a lock, hand them
//! to the writer under its lock (a short critical section: indexing itself happens in
//! tantivy's worker threads) and wait; a dedicated committer thread takes the lock,
//! commits every pending batch at once, reloads the reader and tells the waiters. Each
//! caller's documents belong to the *batch* that was open while it held the lock; the
//! committer closes a batch under the lock, so a batch's documents are exactly those
//! of one commit (or one rollback).
//!
//! Search order (media_id, start_ms, id), or confidence first, is computed by
//! [`collector::SortedCollector`] on fast fields, comparing media ids by their
//! per-segment term ordinals. Text and `data` filters search terms of their own
//! ([`terms`]), fuzzy text through [`text`]; aggregations count in [`aggregate`].

mod aggregate;
mod cells;
mod collector;
mod columns;
mod fresh;
mod knn;
mod query;
mod terms;
mod text;
mod writer;

pub use crate::vectors::VectorOptions;
pub use knn::{KnnPath, VectorsOpened};

use crate::vectors::Vectors;
use annostore_core::index::{
    AggregateQuery, Existing, Hit, Index, IndexError, IndexQuery, KnnHit, KnnQuery, latest_per_id,
};
use annostore_core::model::Annotation;
use annostore_core::query::{Aggregates, Corners, MISSING_RANK, SortOrder};
use annostore_core::visibility::op_key;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use collector::{ConfidenceRank, NoRank, Rank, Ranked, SortedCollector};
use columns::ColumnCache;
use fresh::Fresh;
use parking_lot::{Condvar, Mutex};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;
use tantivy::collector::Count;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::UserOperation;
use tantivy::query::TermQuery;
use tantivy::query::doc_predicate_query::{DocPredicateQuery, FunctionPredicate};
use tantivy::schema::Value as _;
use tantivy::schema::{
    BytesOptions, FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, SchemaBuilder,
};
use tantivy::{
    DocAddress, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
use uuid::Uuid;
use writer::{Requests, commit_loop};

/// How the index writer is sized.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// The writer's memory budget over all its threads, in bytes.
    pub memory_budget_bytes: usize,
    /// Indexing threads of the writer.
    pub indexing_threads: usize,
    /// Writes are searchable at once ([`fresh`]) and made durable by a commit at most
    /// this long after, unless [`Index::refresh`] asks for one sooner. Every commit
    /// makes new segments (fsynced files, later merged), so fewer, larger commits cost
    /// much less per document.
    pub commit_interval: Duration,
    /// ... or as soon as this many documents wait ...
    pub commit_docs: usize,
    /// ... or this many bytes of them (about), which the fresh documents hold in memory.
    pub commit_bytes: usize,
    /// Nearest-neighbour search: the graphs' parameters and the exact-search threshold.
    pub vectors: VectorOptions,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            memory_budget_bytes: 256 << 20,
            // Half the cores: the store's writer and the requests need the rest
            // (measured on 2 cores: one indexing thread indexes faster than two).
            indexing_threads: crate::half_the_cores(),
            commit_interval: Duration::from_millis(500),
            // Fresh documents are searched by brute force: a bounded number of them.
            commit_docs: 50_000,
            commit_bytes: 64 << 20,
            vectors: VectorOptions::default(),
        }
    }
}

/// The schema's fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub id_hi: Field,
    pub id_lo: Field,
    pub op: Field,
    pub media_id: Field,
    pub annotation_type: Field,
    pub annotation_type_version: Field,
    pub pivot_id: Field,
    pub label: Field,
    pub start_ms: Field,
    pub end_ms: Field,
    pub confidence: Field,
    pub operation_id: Field,
    /// A box's corners ([`Corners::of`]), for region filters.
    pub x1: Field,
    pub y1: Field,
    pub x2: Field,
    pub y2: Field,
    /// Text tokens of the label and of `data` strings ([`terms::text_terms`]).
    pub text: Field,
    /// `data` fields: presence and values ([`terms::data_terms`]).
    pub data: Field,
    /// Where on its media item's timeline the document lies ([`cells::terms`]).
    pub cells: Field,
    /// The annotation itself ([`crate::codec`]), stored: what a search answers with.
    pub body: Field,
    pub vectors: knn::VectorFields,
}

pub(crate) const ID_HI: &str = "id_hi";
pub(crate) const BODY: &str = "body";
pub(crate) const ID_LO: &str = "id_lo";
pub(crate) const OP: &str = "op";
pub(crate) const MEDIA_ID: &str = "media_id";
pub(crate) const START_MS: &str = "start_ms";
pub(crate) const END_MS: &str = "end_ms";
pub(crate) const LABEL: &str = "label";
pub(crate) const CONFIDENCE: &str = "confidence";
pub(crate) const ANNOTATION_TYPE: &str = "annotation_type";
pub(crate) const ANNOTATION_TYPE_VERSION: &str = "annotation_type_version";

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut b = SchemaBuilder::new();
        let fields = Fields {
            // No field is indexed per document (no id term, no numeric terms): every
            // unique term costs FST work at each flush and merge. Ids and times are fast
            // fields only; tantivy answers range filters from the columns.
            id_hi: b.add_u64_field(ID_HI, FAST),
            id_lo: b.add_u64_field(ID_LO, FAST),
            op: b.add_u64_field(OP, FAST),
            media_id: b.add_text_field(MEDIA_ID, STRING | FAST),
            // Fast too, for aggregations by type.
            annotation_type: b.add_text_field(ANNOTATION_TYPE, STRING | FAST),
            annotation_type_version: b.add_u64_field(ANNOTATION_TYPE_VERSION, INDEXED | FAST),
            pivot_id: b.add_text_field("pivot_id", STRING),
            label: b.add_text_field(LABEL, STRING | FAST),
            start_ms: b.add_i64_field(START_MS, FAST),
            end_ms: b.add_i64_field(END_MS, FAST),
            confidence: b.add_f64_field(CONFIDENCE, FAST),
            operation_id: b.add_text_field("operation_id", STRING),
            x1: b.add_f64_field("x1", FAST),
            y1: b.add_f64_field("y1", FAST),
            x2: b.add_f64_field("x2", FAST),
            y2: b.add_f64_field("y2", FAST),
            // Terms only for annotations with text or data.
            text: b.add_bytes_field("text", BytesOptions::default().set_indexed()),
            data: b.add_bytes_field("data", BytesOptions::default().set_indexed()),
            cells: b.add_bytes_field("cells", BytesOptions::default().set_indexed()),
            body: b.add_bytes_field(BODY, BytesOptions::default().set_stored()),
            vectors: knn::VectorFields::add_to(&mut b),
        };
        (b.build(), fields)
    }

    fn document(&self, a: &Annotation) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        let (hi, lo) = a.id.as_u64_pair();
        doc.add_u64(self.id_hi, hi);
        doc.add_u64(self.id_lo, lo);
        doc.add_u64(self.op, op_key(&a.operation_id));
        doc.add_text(self.media_id, &a.media_id);
        doc.add_text(self.annotation_type, &a.annotation_type);
        doc.add_u64(
            self.annotation_type_version,
            u64::from(a.annotation_type_version),
        );
        doc.add_text(self.pivot_id, &a.pivot_id);
        if let Some(label) = &a.label {
            doc.add_text(self.label, label);
        }
        doc.add_i64(self.start_ms, a.start_ms);
        doc.add_i64(self.end_ms, a.end_ms);
        if let Some(c) = a.confidence {
            doc.add_f64(self.confidence, f64::from(c));
        }
        doc.add_text(self.operation_id, uuid_text(&a.operation_id));
        // A box with a NaN corner fails every comparison of `Region::holds`: like a
        // missing box it gets no corners (in the column, NaN would sort above numbers).
        if let Some(c) = a.bbox.as_ref().map(Corners::of)
            && ![c.x1, c.y1, c.x2, c.y2].iter().any(|v| v.is_nan())
        {
            doc.add_f64(self.x1, columns::zero_folded(c.x1));
            doc.add_f64(self.y1, columns::zero_folded(c.y1));
            doc.add_f64(self.x2, columns::zero_folded(c.x2));
            doc.add_f64(self.y2, columns::zero_folded(c.y2));
        }
        for t in terms::text_terms(a) {
            doc.add_bytes(self.text, &t);
        }
        for t in terms::data_terms(a) {
            doc.add_bytes(self.data, &t);
        }
        for t in cells::terms(a) {
            doc.add_bytes(self.cells, &t);
        }
        let mut body = Vec::with_capacity(160);
        crate::codec::encode(a, &mut body);
        doc.add_bytes(self.body, &body);
        doc
    }
}

/// A UUID as indexed: lower-case hyphenated, without a heap allocation.
pub(crate) fn uuid_text(id: &Uuid) -> UuidText {
    let mut buf = [0u8; 36];
    id.hyphenated().encode_lower(&mut buf);
    UuidText(buf)
}

pub(crate) struct UuidText([u8; 36]);

impl AsRef<str> for UuidText {
    fn as_ref(&self) -> &str {
        // encode_lower writes ASCII only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

struct Inner {
    fields: Fields,
    /// Fast-field columns kept open per segment (see [`columns`]).
    columns: Arc<ColumnCache>,
    /// Used by the committer thread only (and rollbacks), one entry after the other:
    /// tantivy's `run` stamps operations, then queues deletes, then sends adds, and two
    /// interleaved calls would leave the delete queue out of opstamp order.
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    /// What searches read: the committed searcher and the fresh documents, swapped
    /// together (see [`fresh`]). Changed only under `view_lock`.
    view: ArcSwap<View>,
    view_lock: Mutex<()>,
    requests: Mutex<Requests>,
    commit_interval: Duration,
    commit_docs: usize,
    commit_bytes: usize,
    /// Adds wait while the fresh documents hold this many bytes or documents (the
    /// committer is behind).
    max_fresh_bytes: usize,
    max_fresh_docs: usize,
    wake: Condvar,
    /// The newest fresh entry committed. Cloned by each waiter; the only sender lives in
    /// the committer thread: when the thread dies, waiting fails instead of hanging.
    committed: watch::Receiver<u64>,
    /// The HNSW graphs of the documents' vectors (see [`knn`]).
    vectors: Vectors,
    /// Where the graphs' snapshot is saved at close.
    vectors_dir: std::path::PathBuf,
    vectors_opened: VectorsOpened,
    /// Present while the index must be refilled from the store ([`REBUILD_MARKER`]).
    marker: std::path::PathBuf,
    needs_rebuild: std::sync::atomic::AtomicBool,
}

/// A committed searcher and the documents handed to the writer since its commit.
pub(crate) struct View {
    searcher: Searcher,
    fresh: Fresh,
}

/// A file in the index directory that says the index may lack what the store holds:
/// written when the index is created or emptied, removed once it was refilled
/// (see [`Index::needs_rebuild`]), so a refill cut short is done again at the next open.
const REBUILD_MARKER: &str = "REFILL_FROM_STORE";

/// Removes everything in `dir` (an index of an older format, with its graphs).
fn empty_dir(dir: &Path) -> Result<(), IndexError> {
    for entry in std::fs::read_dir(dir).map_err(unavailable)? {
        let path = entry.map_err(unavailable)?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(unavailable)?;
        } else {
            std::fs::remove_file(&path).map_err(unavailable)?;
        }
    }
    Ok(())
}

/// The tantivy index behind [`Index`].
pub struct TantivyIndex {
    inner: Arc<Inner>,
    committer: Option<JoinHandle<()>>,
}

fn unavailable(e: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(e.to_string())
}

impl TantivyIndex {
    /// Opens the index in `dir`, creating it (and the directory) when missing.
    pub fn open(dir: &Path, opts: IndexOptions) -> Result<TantivyIndex, IndexError> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let (schema, fields) = Fields::schema();
        let marker = dir.join(REBUILD_MARKER);
        let directory = MmapDirectory::open(dir).map_err(unavailable)?;
        if tantivy::Index::exists(&directory).map_err(unavailable)? {
            let found = tantivy::Index::open(directory.clone()).map_err(unavailable)?;
            if found.schema() != schema {
                warn!(dir = %dir.display(), "the index was written by an older annostore: emptying it, to be refilled from the store");
                drop(found);
                empty_dir(dir)?;
                std::fs::write(&marker, b"").map_err(unavailable)?;
            }
        } else {
            // A new index over a store that may already hold runs (a first start, or
            // an index directory lost).
            std::fs::write(&marker, b"").map_err(unavailable)?;
        }
        let needs_rebuild = marker.exists();
        let directory = MmapDirectory::open(dir).map_err(unavailable)?;
        let index = tantivy::Index::open_or_create(directory, schema).map_err(unavailable)?;
        let writer: IndexWriter = index
            .writer_with_num_threads(opts.indexing_threads.max(1), opts.memory_budget_bytes)
            .map_err(unavailable)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(unavailable)?;
        let vectors = Vectors::new(opts.vectors.clone());
        let vectors_dir = dir.join("vectors");
        let vectors_opened = knn::restore(&vectors, &reader.searcher(), &vectors_dir)
            .map_err(IndexError::Unavailable)?;
        if vectors_opened.from_snapshot + vectors_opened.added > 0 {
            info!(?vectors_opened, "vector graphs restored");
        }
        let (tx, rx) = watch::channel(0u64);
        let view = ArcSwap::from_pointee(View {
            searcher: reader.searcher(),
            fresh: Fresh::default(),
        });
        let inner = Arc::new(Inner {
            fields,
            columns: Arc::new(ColumnCache::default()),
            writer: Mutex::new(writer),
            reader,
            view,
            view_lock: Mutex::new(()),
            requests: Mutex::new(Requests::default()),
            commit_interval: opts.commit_interval,
            commit_docs: opts.commit_docs.max(1),
            commit_bytes: opts.commit_bytes.max(1),
            max_fresh_bytes: opts.commit_bytes.max(1).saturating_mul(4),
            max_fresh_docs: opts.commit_docs.max(1).saturating_mul(4),
            wake: Condvar::new(),
            committed: rx,
            vectors,
            vectors_dir,
            vectors_opened,
            marker,
            needs_rebuild: std::sync::atomic::AtomicBool::new(needs_rebuild),
        });
        let for_thread = inner.clone();
        let committer = std::thread::Builder::new()
            .name("annostore-index-commit".into())
            .spawn(move || commit_loop(&for_thread, tx))
            .map_err(unavailable)?;
        crate::priority::lower_background_threads();
        Ok(TantivyIndex {
            inner,
            committer: Some(committer),
        })
    }

    /// Deletes every document of an operation (garbage collection of dropped runs) and
    /// returns how many the index held before (see [`Index::delete_operation`]).
    ///
    /// Documents carry their operation id as an indexed term (`operation_id`, one term
    /// per run, not per document: what `count_operation` reads), so the delete is one
    /// delete-by-term: tantivy marks the term's postings dead in each segment, with no
    /// scan of the columns. The commit that holds it is waited for, as an upsert's is,
    /// and asked for now (someone waits: a collection pass). The run's vectors leave
    /// the graphs after that commit: a batch that deletes makes the committer sweep
    /// every key no live document has ([`crate::vectors::Vectors::batch_done`]), and
    /// kNN only ever considers live documents anyway.
    ///
    /// The count is of the documents searchable before the delete, fresh ones
    /// included.
    pub async fn delete_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        let (before, seq) = {
            let _changing = self.inner.view_lock.lock();
            let view = self.inner.view.load_full();
            let before = self.count_operation_in(&view, operation_id)?;
            let fresh = view.fresh.deleting(operation_id);
            let seq = fresh.last_seq();
            self.inner.view.store(Arc::new(View {
                searcher: view.searcher.clone(),
                fresh,
            }));
            (before, seq)
        };
        self.committed(seq, true).await?;
        debug!(operation = %operation_id, removed = before, "index documents deleted");
        Ok(before)
    }

    /// Live documents with this term in `searcher`'s snapshot.
    fn count_of(&self, searcher: &Searcher, term: Term) -> Result<u64, IndexError> {
        let q = TermQuery::new(term, IndexRecordOption::Basic);
        let n = searcher.search(&q, &Count).map_err(unavailable)?;
        Ok(n as u64)
    }

    /// Current documents of an operation in a view: committed ones (but those a fresh
    /// copy replaces) and fresh ones.
    fn count_operation_in(&self, view: &View, operation_id: Uuid) -> Result<u64, IndexError> {
        let term = Term::from_field_text(
            self.inner.fields.operation_id,
            uuid_text(&operation_id).as_ref(),
        );
        let committed = match view.fresh.masks() {
            None => self.count_of(&view.searcher, term)?,
            Some(mask) => {
                let q = TermQuery::new(term, IndexRecordOption::Basic);
                let collector = collector::Ids;
                let ids = view.searcher.search(&q, &collector).map_err(unavailable)?;
                ids.into_iter()
                    .filter(|(hi, lo)| !mask.hides(*hi, *lo))
                    .count() as u64
            }
        };
        Ok(committed + view.fresh.count_operation(operation_id))
    }

    /// Documents added and not yet committed.
    pub fn uncommitted_docs(&self) -> usize {
        self.inner.view.load().fresh.len()
    }

    /// What open found about the vectors (snapshot, catch-up, time).
    pub fn vectors_opened(&self) -> VectorsOpened {
        self.inner.vectors_opened
    }

    /// Keys in the vector graphs (live vectors, and dead ones not yet swept).
    pub fn vectors_in_graphs(&self) -> usize {
        self.inner.vectors.len()
    }

    /// Changes [`VectorOptions::exact_threshold`] (benchmarks compare the paths).
    pub fn set_exact_threshold(&self, candidates: usize) {
        self.inner.vectors.set_exact_threshold(candidates);
    }

    /// [`Index::knn`], also telling which path the search took.
    pub async fn knn_with_path(
        &self,
        query: &KnnQuery,
    ) -> Result<(Vec<KnnHit>, KnnPath), IndexError> {
        let view = self.inner.view();
        let q = query::build(&self.inner.fields, &self.inner.columns, &query.filter)?;
        let inner = self.inner.clone();
        let query = query.clone();
        // A wide filter passes over every document: off the async workers.
        tokio::task::spawn_blocking(move || {
            let mask = view.fresh.masks();
            let (mut hits, path) = knn::search(
                &inner.vectors,
                &inner.columns,
                &view.searcher,
                &*q,
                &query,
                mask.as_ref(),
            )?;
            if !view.fresh.is_empty() {
                hits.extend(view.fresh.nearest(
                    &query.filter,
                    &query.scope,
                    &query.vector,
                    query.k,
                ));
                hits.sort_by(|a, b| {
                    b.similarity
                        .total_cmp(&a.similarity)
                        .then_with(|| a.key.cmp(&b.key))
                });
                hits.truncate(query.k);
            }
            Ok::<_, tantivy::TantivyError>((hits, path))
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }

    /// Live documents in the current snapshot, committed and fresh copies alike.
    pub fn num_docs(&self) -> u64 {
        let view = self.inner.view();
        view.searcher.num_docs() + view.fresh.len() as u64
    }

    /// Adds an upsert's documents to the fresh documents (searchable when this returns)
    /// for the committer to make durable; waits first while the committer is too far
    /// behind.
    async fn add(&self, docs: Vec<Annotation>, rewrites: Vec<u128>) -> Result<(), IndexError> {
        let mut committed = self.inner.committed.clone();
        loop {
            let view = self.inner.view.load();
            if view.fresh.bytes() < self.inner.max_fresh_bytes
                && view.fresh.len() < self.inner.max_fresh_docs
            {
                break;
            }
            drop(view);
            committed
                .changed()
                .await
                .map_err(|_| IndexError::Unavailable("the index committer stopped".into()))?;
        }
        {
            let _changing = self.inner.view_lock.lock();
            let view = self.inner.view.load();
            let fresh = view.fresh.with(docs, rewrites);
            self.inner.view.store(Arc::new(View {
                searcher: view.searcher.clone(),
                fresh,
            }));
        }
        // Under the lock, so the committer cannot miss it between test and wait.
        let _req = self.inner.requests.lock();
        self.inner.wake.notify_all();
        Ok(())
    }

    /// Waits until the fresh entries up to `seq` are committed; `urgent` asks for that
    /// commit now rather than at the interval.
    async fn committed(&self, seq: u64, urgent: bool) -> Result<(), IndexError> {
        if seq == 0 {
            // Nothing was ever added.
            return Ok(());
        }
        let mut committed = self.inner.committed.clone();
        if urgent {
            self.inner.requests.lock().urgent = true;
            self.inner.wake.notify_all();
        }
        committed
            .wait_for(|done| *done >= seq)
            .await
            .map(drop)
            .map_err(|_| IndexError::Unavailable("the index committer stopped".into()))
    }
}

impl TantivyIndex {
    /// A search in the order `R` ranks by.
    async fn search_ranked<R: Rank>(&self, query: &IndexQuery) -> Result<Vec<Hit>, IndexError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let view = self.inner.view();
        let q = query::build(&self.inner.fields, &self.inner.columns, &query.filter)?;
        let after = query.after.as_ref().map(|p| {
            let rank = if R::RANKED {
                collector::rank_key(p.rank.unwrap_or(MISSING_RANK))
            } else {
                0
            };
            (rank, p.key.clone())
        });
        let collector = SortedCollector::<R>::new(
            self.inner.columns.clone(),
            query.scope.clone(),
            view.fresh.masks(),
            after.clone(),
            query.limit,
        );
        let (filter, scope, limit) = (query.filter.clone(), query.scope.clone(), query.limit);
        let order = if R::RANKED {
            SortOrder::Confidence
        } else {
            SortOrder::Time
        };
        let body = self.inner.fields.body;
        let narrow = query::is_narrow(&query.filter);
        let search = move || {
            let mut found: Vec<(Ranked, Source)> = view
                .searcher
                .search(&*q, &collector)?
                .into_iter()
                .map(|(r, at)| (r, Source::Committed(at)))
                .collect();
            if !view.fresh.is_empty() {
                let fresh = view
                    .fresh
                    .ranked(&filter, &scope, order, after.as_ref(), limit);
                found.extend(
                    fresh
                        .into_iter()
                        .map(|(r, a)| (r, Source::Fresh(Box::new(a)))),
                );
                found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                found.truncate(limit);
            }
            found
                .into_iter()
                .map(|((rank, key), source)| {
                    let annotation = match source {
                        Source::Fresh(a) => *a,
                        Source::Committed(at) => stored(&view.searcher, body, at)?,
                    };
                    Ok(Hit {
                        id: key.id,
                        key,
                        rank: R::RANKED.then(|| collector::rank_of_key(rank)),
                        annotation: Some(annotation),
                    })
                })
                .collect::<tantivy::Result<Vec<Hit>>>()
        };
        if narrow {
            search().map_err(unavailable)
        } else {
            // A catalogue-wide query can scan for 100 ms: off the async workers.
            tokio::task::spawn_blocking(search)
                .await
                .map_err(unavailable)?
                .map_err(unavailable)
        }
    }
}

/// Where a hit's annotation comes from.
enum Source {
    Committed(DocAddress),
    Fresh(Box<Annotation>),
}

/// The annotation a committed document keeps ([`codec`]).
pub(crate) fn stored(
    searcher: &Searcher,
    body: Field,
    at: DocAddress,
) -> tantivy::Result<Annotation> {
    let doc: TantivyDocument = searcher.doc(at)?;
    let bytes = doc
        .get_first(body)
        .and_then(|v| v.as_bytes())
        .ok_or_else(|| {
            tantivy::TantivyError::InternalError("a document without its body".into())
        })?;
    crate::codec::decode(bytes, true)
        .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))
}

/// Matches the documents whose id is in `ids`, from the id fast fields. Replacing by id
/// is rare (a producer rewriting an annotation, or a replay), so ids carry no term of
/// their own; a delete scans the id columns instead.
fn ids_query(ids: HashSet<(u64, u64)>) -> DocPredicateQuery {
    let ids = Arc::new(ids);
    DocPredicateQuery::from(FunctionPredicate::from(
        move |segment: &tantivy::SegmentReader| {
            let hi = segment.fast_fields().u64(ID_HI)?;
            let lo = segment.fast_fields().u64(ID_LO)?;
            let ids = ids.clone();
            Ok(move |doc: tantivy::DocId| {
                hi.first(doc)
                    .zip(lo.first(doc))
                    .is_some_and(|pair| ids.contains(&pair))
            })
        },
    ))
}

impl Inner {
    /// The writer's operations for these annotations, and the vectors (with new keys)
    /// to put into their graphs first.
    #[allow(clippy::type_complexity)]
    fn documents<'a>(
        &self,
        annotations: impl Iterator<Item = &'a Annotation>,
    ) -> (Vec<UserOperation>, Vec<(u64, Vec<f32>)>) {
        let f = &self.fields;
        let mut vectors = Vec::new();
        let ops = annotations
            .map(|a| {
                let mut doc = f.document(a);
                if let Some(v) = knn::embedding(a) {
                    let key = self.vectors.next_key();
                    f.vectors.add(&mut doc, key, v);
                    vectors.push((key, v.to_vec()));
                }
                UserOperation::Add(doc)
            })
            .collect();
        (ops, vectors)
    }

    /// The current view, the column cache pruned to its searcher's segments.
    fn view(&self) -> Arc<View> {
        let view = self.view.load_full();
        self.columns.prune(&view.searcher);
        view
    }
}

impl Drop for TantivyIndex {
    fn drop(&mut self) {
        self.inner.requests.lock().shutdown = true;
        self.inner.wake.notify_all();
        if let Some(handle) = self.committer.take()
            && handle.join().is_err()
        {
            error!("the index committer panicked");
        }
        if let Err(e) = self.inner.vectors.save(&self.inner.vectors_dir) {
            warn!(error = %e, "cannot save the vector graphs; the next open rebuilds them");
        }
    }
}

#[async_trait]
impl Index for TantivyIndex {
    async fn delete_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        // The inherent method (callers holding a `TantivyIndex` reach it directly).
        TantivyIndex::delete_operation(self, operation_id).await
    }

    async fn upsert(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
    ) -> Result<(), IndexError> {
        if annotations.is_empty() {
            return Ok(());
        }
        // The same id twice in one call keeps the last version.
        let latest = latest_per_id(annotations);
        let may_exist = existing.lookup();
        let rewrites: Vec<u128> = latest
            .iter()
            .filter(|a| may_exist.contains(&a.id))
            .map(|a| a.id.as_u128())
            .collect();
        let docs: Vec<Annotation> = latest.into_iter().cloned().collect();
        self.add(docs, rewrites).await
    }

    async fn search(&self, query: &IndexQuery) -> Result<Vec<Hit>, IndexError> {
        match query.order {
            SortOrder::Time => self.search_ranked::<NoRank>(query).await,
            SortOrder::Confidence => self.search_ranked::<ConfidenceRank>(query).await,
            SortOrder::Score => Err(IndexError::Unanswerable(
                "score order needs a nearest-neighbour search".into(),
            )),
        }
    }

    async fn knn(&self, query: &KnnQuery) -> Result<Vec<KnnHit>, IndexError> {
        Ok(self.knn_with_path(query).await?.0)
    }

    async fn aggregate(&self, query: &AggregateQuery) -> Result<Aggregates, IndexError> {
        let view = self.inner.view();
        let collector = aggregate::AggregateCollector::new(
            self.inner.columns.clone(),
            query.scope.clone(),
            query.spec.clone(),
            view.fresh.masks(),
        )?;
        let q = query::build(&self.inner.fields, &self.inner.columns, &query.filter)?;
        let query = query.clone();
        // A catalogue-wide count visits every document: off the async workers.
        let counts = tokio::task::spawn_blocking(move || {
            view.searcher.search(&*q, &collector).map(|counts| {
                counts.and_then(|mut c| {
                    view.fresh
                        .count_into(&mut c, &query.filter, &query.scope, &query.spec)?;
                    c.finish(&query.spec)
                })
            })
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)??;
        Ok(counts)
    }

    async fn count_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        self.count_operation_in(&self.inner.view(), operation_id)
    }

    async fn sync(&self) -> Result<(), IndexError> {
        // Every add that returned is an entry up to this one.
        let seq = self.inner.view.load().fresh.last_seq();
        self.committed(seq, false).await
    }

    async fn refresh(&self) {
        self.inner.requests.lock().urgent = true;
        self.inner.wake.notify_all();
    }

    fn needs_rebuild(&self) -> bool {
        self.inner.needs_rebuild.load(Ordering::Acquire)
    }

    async fn rebuilt(&self) -> Result<(), IndexError> {
        // Everything written so far committed first: the marker goes only after that.
        let seq = self.inner.view.load().fresh.last_seq();
        self.committed(seq, true).await?;
        match std::fs::remove_file(&self.inner.marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unavailable(e)),
        }
        self.inner.needs_rebuild.store(false, Ordering::Release);
        Ok(())
    }
}
