//! The search index seam. The index answers which annotation ids match; the store
//! answers what they are. Visibility is decided at query time from a [`Scope`], never
//! by rewriting documents.

use crate::model::{Annotation, SearchFilter, SortKey};
use crate::query::{AggregateSpec, Aggregates, SortOrder};
use crate::visibility::Visibility;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index unavailable: {0}")]
    Unavailable(String),
    #[error("index rejected the request: {0}")]
    Rejected(String),
    /// The query is valid but this index cannot answer it as asked (too many buckets,
    /// an order it does not serve, ...): the client must change it (422).
    #[error("{0}")]
    Unanswerable(String),
}

/// The last version of each id, in first-seen order: within one upsert call a later
/// copy of an id wins, in every engine (and no retry can reorder two copies of one id).
pub fn latest_per_id(annotations: &[Annotation]) -> Vec<&Annotation> {
    let mut seen = HashSet::with_capacity(annotations.len());
    let mut latest: Vec<&Annotation> = annotations
        .iter()
        .rev()
        .filter(|a| seen.insert(a.id))
        .collect();
    latest.reverse();
    latest
}

/// Which operations' annotations a search may return.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The active operations of a snapshot.
    Visible(Arc<Visibility>),
    /// One operation only (a preview of a STARTED run, or one active run).
    Operation(Uuid),
}

impl Scope {
    /// True when an annotation of `operation_id` may be returned.
    pub fn allows(&self, operation_id: &Uuid) -> bool {
        match self {
            Scope::Visible(v) => v.is_active(operation_id),
            Scope::Operation(id) => id == operation_id,
        }
    }

    /// The same test on an operation's 64-bit key (what index documents carry).
    pub fn allows_key(&self, key: u64) -> bool {
        match self {
            Scope::Visible(v) => v.is_active_key(key),
            Scope::Operation(id) => crate::visibility::op_key(id) == key,
        }
    }
}

/// One search against the index: filters, scope, order, the position to continue
/// after (exclusive), and how many hits at most.
#[derive(Debug, Clone)]
pub struct IndexQuery {
    pub filter: SearchFilter,
    pub scope: Scope,
    /// [`SortOrder::Time`] or [`SortOrder::Confidence`]; scores come from [`Index::knn`].
    pub order: SortOrder,
    pub after: Option<Position>,
    pub limit: usize,
}

/// A place in a search order: the rank (confidence for [`SortOrder::Confidence`],
/// `None` for time) and the time key. See [`crate::query::compare`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<f32>,
    pub key: SortKey,
}

impl Position {
    pub fn time(key: SortKey) -> Position {
        Position { rank: None, key }
    }
}

/// A matching annotation: its id and position in search order (`rank` as in
/// [`Position`]), and the annotation itself when the index keeps a copy of what it
/// matched (the service then reads no store for it; see [`Hit::annotation`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub key: SortKey,
    pub rank: Option<f32>,
    /// The copy the index matched, as the store held it when the index was written.
    /// An index keeps copies only where it is written in the store's order for each
    /// id (one process's pipeline, invariant 9), so a copy of a run that finished is
    /// that run's annotation: a finish waits until the index holds every batch, and a
    /// finished run takes no writes.
    pub annotation: Option<Annotation>,
}

impl Hit {
    pub fn position(&self) -> Position {
        Position {
            rank: self.rank,
            key: self.key.clone(),
        }
    }
}

/// A nearest-neighbour search: the `k` annotations in scope that match `filter`, carry
/// an embedding of `vector.len()` dimensions, and are most similar to `vector` by
/// cosine similarity. Filtered, not post-filtered: when fewer than `k` match, all of
/// them come back.
#[derive(Debug, Clone)]
pub struct KnnQuery {
    pub filter: SearchFilter,
    pub scope: Scope,
    pub vector: Vec<f32>,
    pub k: usize,
}

/// A neighbour: its id, time key and the similarity the index computed (the service
/// recomputes it exactly from the stored embedding).
#[derive(Debug, Clone, PartialEq)]
pub struct KnnHit {
    pub id: Uuid,
    pub key: SortKey,
    pub similarity: f32,
    /// As [`Hit::annotation`].
    pub annotation: Option<Annotation>,
}

/// Counts over the annotations in scope that match `filter`.
#[derive(Debug, Clone)]
pub struct AggregateQuery {
    pub filter: SearchFilter,
    pub scope: Scope,
    pub spec: AggregateSpec,
}

/// Which annotations of an upsert the index may already hold. Engines that replace by
/// id natively ignore it; engines where replacing costs (tantivy: a delete) use it to
/// skip that cost for ids the store knows are new.
#[derive(Debug, Clone, Copy)]
pub enum Existing<'a> {
    /// Any of them may be indexed (replays of index work).
    Unknown,
    /// Only these ids may be indexed; the rest are new.
    Only(&'a [Uuid]),
}

impl Existing<'_> {
    /// What to test a batch's ids against: built once per batch, so a batch of
    /// rewrites costs one hash lookup per id, not a scan of the list.
    pub fn lookup(&self) -> MayExist {
        match self {
            Existing::Unknown => MayExist::Any,
            Existing::Only(ids) => MayExist::Only(ids.iter().copied().collect()),
        }
    }
}

/// The ids that may already be indexed (see [`Existing::lookup`]).
#[derive(Debug, Clone)]
pub enum MayExist {
    Any,
    Only(HashSet<Uuid>),
}

impl MayExist {
    pub fn contains(&self, id: &Uuid) -> bool {
        match self {
            MayExist::Any => true,
            MayExist::Only(ids) => ids.contains(id),
        }
    }
}

/// The version of a fast-path write: from the operation `version` the store gave the
/// batch. An id belongs to one operation, whose version grows with every batch, so for
/// one id these only grow.
pub fn batch_version(operation_version: u64) -> u64 {
    operation_version.saturating_mul(2)
}

/// The version of a replay or reindex write, from the operation `version` read BEFORE
/// reading the annotations back: above every earlier batch's write, and below the
/// write of the batch of that very version (a store may give a batch its version
/// before its bodies are readable, so the copy read may be older than that batch's).
pub fn replay_version(operation_version_read_before: u64) -> u64 {
    batch_version(operation_version_read_before).saturating_sub(1)
}

#[async_trait]
pub trait Index: Send + Sync + 'static {
    /// Adds or replaces these annotations (by id). Once this returns Ok they are
    /// searchable; they survive a restart of the index once [`Index::sync`] says so.
    async fn upsert(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
    ) -> Result<(), IndexError>;
    /// The same, as the service writes, with a version that only grows for one
    /// annotation id (see [`batch_version`] and [`replay_version`]), so an index shared
    /// by many nodes can refuse a late, older copy while accepting the same version
    /// again (Elasticsearch: `external_gte` versions). An index written by one process
    /// in order needs nothing more than `upsert`.
    async fn upsert_versioned(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
        version: u64,
    ) -> Result<(), IndexError> {
        let _ = version;
        self.upsert(annotations, existing).await
    }
    /// Matching annotations in scope, in the query's order.
    async fn search(&self, query: &IndexQuery) -> Result<Vec<Hit>, IndexError>;
    /// The nearest neighbours of a vector among the matching annotations in scope,
    /// most similar first.
    async fn knn(&self, query: &KnnQuery) -> Result<Vec<KnnHit>, IndexError>;
    /// Counts over the matching annotations in scope (see [`crate::query::Aggregator`]
    /// for the semantics).
    async fn aggregate(&self, query: &AggregateQuery) -> Result<Aggregates, IndexError>;
    /// Returns once every write that returned before this call survives a restart of
    /// the index. An index may hold writes for a while to make many durable at once
    /// (tantivy: one commit for everything within its commit interval); one that is
    /// durable on every write returns at once.
    async fn sync(&self) -> Result<(), IndexError> {
        Ok(())
    }
    /// How many annotations of an operation the index holds.
    async fn count_operation(&self, operation_id: Uuid) -> Result<u64, IndexError>;
    /// Removes every document of an operation (garbage collection), durably, and
    /// returns how many it removed. Removing none is not an error.
    async fn delete_operation(&self, operation_id: Uuid) -> Result<u64, IndexError>;
    /// Asks that the writes held so far become searchable now, not at the next
    /// scheduled commit: someone waits for them (a finish, a preview). A hint, like
    /// Elasticsearch's refresh; an index that commits every write needs nothing here.
    async fn refresh(&self) {}
    /// True when the index may lack documents the store holds and must be refilled
    /// from it before serving (`Service::recover`): it was just created, or found in
    /// an older format and emptied, or a refill was cut short. An index kept apart
    /// from this process's files (Elasticsearch) answers false.
    fn needs_rebuild(&self) -> bool {
        false
    }
    /// Records, durably, that the index was refilled from the store.
    async fn rebuilt(&self) -> Result<(), IndexError> {
        Ok(())
    }
}
