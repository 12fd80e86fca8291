//! The source of truth on fjall, with a single writer thread and group commit.
//!
//! # Writes
//!
//! Every mutation (of the store and of the retry queue, which lives in the same
//! [`Database`]) is sent to ONE dedicated std thread. The thread takes the first request
//! waiting, then drains whatever else is already queued (up to [`StoreOptions::max_group`]),
//! applies each request as its own check-then-write batch (reads first; a failed check
//! writes nothing), calls `persist(SyncAll)` once for the whole group, and only then
//! answers every request of the group. An `Ok` therefore means durable. As the writer is
//! alone, check-then-write is atomic. Reads run on the caller (scans on the blocking pool);
//! they may see a write of the current group a few microseconds before its fsync returns.
//!
//! # Keyspaces
//!
//! `KEY` below is the encoded [`OperationKey`]:
//! `u16 BE len(type) | type | u32 BE version | u16 BE len(pivot) | pivot` (length
//! prefixes, so no separator byte can be ambiguous and prefix scans are exact).
//! Uuids are their 16 raw bytes; ops, index work and annotations ids from the store are
//! UUIDv7, so byte order is time order.
//!
//! | keyspace        | key                                   | value                          |
//! |-----------------|---------------------------------------|--------------------------------|
//! | `types`         | u16 len + name + u32 BE version       | `AnnotationType` JSON          |
//! | `ops`           | op id                                 | `Operation` JSON               |
//! | `key_ops`       | KEY + u64 BE operation_number         | op id (last under KEY = newest)|
//! | `active`        | KEY                                   | op id of the key's active run  |
//! | `activations`   | KEY + u64 BE sequence                 | `Activation` JSON (the key's history; last under KEY = newest) |
//! | `anns`          | annotation id                         | owner op id (16) + body JSON (see [`records::encode_annotation`]) |
//! | `op_anns`       | op id + annotation id                 | empty                          |
//! | `pending`       | work id                               | `IndexWork` JSON               |
//! | `pending_by_op` | op id + work id                       | empty                          |
//! | `started`       | lease expiry (i64 ms, sign-flipped BE) + op id | empty (STARTED ops by expiry) |
//! | `queue`, `queue_ids`, `dead_letters` | see [`crate::queue`] |                            |
//!
//! The owner prefix of `anns` values lets the upsert check ownership without decoding
//! JSON; `started` is kept in step with `ops` by [`records::write_op`] on every operation
//! write. A history entry is written in the same batch as the activation it records
//! (a finish, a rollback, a roll forward). [`writer`] holds the single writer thread;
//! [`upsert`] the upsert of a batch; [`operate`] rollbacks, forced expiry and garbage
//! collection; [`records`] the key encodings.

use crate::queue::{FjallRetryQueue, QueueOptions};
use annostore_core::clock::unix_ms;
use annostore_core::lifecycle::{self, ActivationPlan, FinishPlan};
use annostore_core::model::{
    Activation, ActivationReason, Annotation, AnnotationType, Operation, OperationFilter,
    OperationKey, OperationStatus, ScanOrder, StartOperation,
};
use annostore_core::store::{IndexWork, PutType, Store, StoreError, StoreResult, Upserted};
use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

mod list;
mod operate;
mod recent;
pub(crate) mod records;
mod upsert;
mod writer;

use records::*;
use writer::*;

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// At most this many requests share one fsync.
    pub max_group: usize,
    /// fjall block cache, in bytes.
    pub cache_size: u64,
    /// fjall's background threads (memtable flushes and compactions).
    pub worker_threads: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_group: 256,
            cache_size: 64 * 1024 * 1024,
            // Half the cores, as for the index's writer: on 2 cores, one worker gave
            // faster upserts and a finish p99 well under 5 ms, where two workers'
            // concurrent flush and compaction writes made single fsyncs wait 40 ms.
            worker_threads: crate::half_the_cores(),
        }
    }
}

/// The keyspaces of the database (store and retry queue).
pub(crate) struct Tables {
    pub(crate) db: Database,
    types: Keyspace,
    ops: Keyspace,
    key_ops: Keyspace,
    active: Keyspace,
    activations: Keyspace,
    anns: Keyspace,
    op_anns: Keyspace,
    pending: Keyspace,
    pending_by_op: Keyspace,
    started: Keyspace,
    pub(crate) queue: Keyspace,
    pub(crate) queue_ids: Keyspace,
    pub(crate) dead_letters: Keyspace,
    /// Ids of recent upserts (see [`recent`]).
    recent: recent::Recent,
}

impl Tables {
    fn open(db: Database) -> fjall::Result<Tables> {
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Tables {
            types: ks("types")?,
            ops: ks("ops")?,
            key_ops: ks("key_ops")?,
            active: ks("active")?,
            activations: ks("activations")?,
            anns: ks("anns")?,
            op_anns: ks("op_anns")?,
            pending: ks("pending")?,
            pending_by_op: ks("pending_by_op")?,
            started: ks("started")?,
            queue: ks("queue")?,
            queue_ids: ks("queue_ids")?,
            dead_letters: ks("dead_letters")?,
            recent: recent::Recent::default(),
            db,
        })
    }
}

// ---- the store ----

pub(crate) struct Shared {
    // Field order matters: the writer (and its thread) goes before the tables.
    pub(crate) writer: Writer,
    pub(crate) tables: Arc<Tables>,
}

/// The embedded [`Store`] on fjall. Cheap to clone; the database closes (after finishing
/// the queued writes) when the last clone, and the last queue built on it, is dropped.
#[derive(Clone)]
pub struct FjallStore {
    shared: Arc<Shared>,
}

impl FjallStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<FjallStore> {
        Self::open_with(path, StoreOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, opts: StoreOptions) -> StoreResult<FjallStore> {
        let db = Database::builder(path.as_ref())
            .manual_journal_persist(true)
            .cache_size(opts.cache_size)
            .worker_threads(opts.worker_threads.max(1))
            .open()
            .io()?;
        let tables = Arc::new(Tables::open(db).io()?);
        crate::priority::lower_background_threads();
        let writer = Writer::spawn(tables.clone(), opts.max_group)
            .map_err(|e| StoreError::Io(format!("cannot start the store writer: {e}")))?;
        Ok(FjallStore {
            shared: Arc::new(Shared { writer, tables }),
        })
    }

    /// The retry queue, in the same database and behind the same writer.
    pub fn retry_queue(&self, opts: QueueOptions) -> FjallRetryQueue {
        FjallRetryQueue::new(self.shared.clone(), opts)
    }

    fn tables(&self) -> Arc<Tables> {
        self.shared.tables.clone()
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tables) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.shared.writer.submit(io_error, f).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tables) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let tables = self.tables();
        tokio::task::spawn_blocking(move || f(&tables))
            .await
            .map_err(join_error)?
    }
}

#[async_trait]
impl Store for FjallStore {
    async fn put_type(&self, def: AnnotationType) -> StoreResult<PutType> {
        let value = to_json(&def)?;
        self.write(move |t| {
            let key = type_key(&def.name, def.version);
            if let Some(v) = t.types.get(&key).io()? {
                let existing: AnnotationType = from_json("annotation type", &v)?;
                return if existing.same_definition(&def) {
                    Ok(PutType::Unchanged(existing))
                } else {
                    Err(StoreError::TypeConflict(format!(
                        "{} version {}",
                        def.name, def.version
                    )))
                };
            }
            t.types.insert(key, value).io()?;
            Ok(PutType::Created(def))
        })
        .await
    }

    async fn get_type(&self, name: &str, version: u32) -> StoreResult<Option<AnnotationType>> {
        match self.shared.tables.types.get(type_key(name, version)).io()? {
            Some(v) => Ok(Some(from_json("annotation type", &v)?)),
            None => Ok(None),
        }
    }

    async fn list_types(&self) -> StoreResult<Vec<AnnotationType>> {
        self.read(|t| {
            t.types
                .iter()
                .map(|g| {
                    let (_, v) = g.into_inner().io()?;
                    from_json("annotation type", &v)
                })
                .collect()
        })
        .await
    }

    async fn start_operation(
        &self,
        req: StartOperation,
        lease_seconds: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        self.write(move |t| {
            let key = OperationKey {
                annotation_type: req.annotation_type.clone(),
                annotation_type_version: req.annotation_type_version,
                pivot_id: req.pivot_id.clone(),
            };
            let prefix = op_key_bytes(&key);
            let previous = match t.key_ops.prefix(&prefix).next_back() {
                Some(g) => {
                    let k = g.key().io()?;
                    let tail = k
                        .get(prefix.len()..)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .ok_or_else(|| StoreError::Corrupt("key_ops key".into()))?;
                    Some(u64::from_be_bytes(tail))
                }
                None => None,
            };
            let op = lifecycle::start(&req, Uuid::now_v7(), previous, lease_seconds, now);
            let mut b = t.db.batch();
            write_op(t, &mut b, None, &op)?;
            b.insert(
                &t.key_ops,
                key_op_key(&key, op.operation_number),
                op.id.as_bytes().to_vec(),
            );
            b.commit().io()?;
            Ok(op)
        })
        .await
    }

    async fn activate_operation(
        &self,
        id: Uuid,
        reason: ActivationReason,
        actor: Option<String>,
        now: OffsetDateTime,
    ) -> StoreResult<ActivationPlan> {
        self.activate(id, reason, actor, now).await
    }

    async fn activations(&self, key: &OperationKey, limit: usize) -> StoreResult<Vec<Activation>> {
        self.history(key, limit).await
    }

    async fn force_expire(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Option<Operation>> {
        self.expire_now(id, now).await
    }

    async fn begin_collection(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation> {
        self.begin_collecting(id, now).await
    }

    async fn delete_annotations(&self, operation_id: Uuid, ids: &[Uuid]) -> StoreResult<u64> {
        self.delete_owned(operation_id, ids).await
    }

    async fn end_collection(
        &self,
        id: Uuid,
        freed: u64,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        self.end_collecting(id, freed, now).await
    }

    async fn get_operation(&self, id: Uuid) -> StoreResult<Option<Operation>> {
        load_op(&self.shared.tables, id)
    }

    async fn list_operations(
        &self,
        filter: &OperationFilter,
        order: ScanOrder,
        cursor: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Operation>> {
        let filter = filter.clone();
        self.read(move |t| list::operations(t, &filter, order, cursor, limit))
            .await
    }

    async fn active_operations(&self) -> StoreResult<Vec<Operation>> {
        self.read(|t| {
            let mut out = Vec::new();
            for g in t.active.iter() {
                let (_, v) = g.into_inner().io()?;
                let id = uuid_of("active pointer", &v)?;
                out.push(require_op(t, id)?);
            }
            Ok(out)
        })
        .await
    }

    async fn pending_work_ids(&self, operation_id: Uuid) -> StoreResult<Vec<Uuid>> {
        // The keys alone: no work record is read or parsed.
        self.read(move |t| {
            t.pending_by_op
                .prefix(operation_id.as_bytes())
                .map(|g| {
                    let k = g.key().io()?;
                    uuid_of("pending_by_op key", k.get(16..).unwrap_or_default())
                })
                .collect()
        })
        .await
    }

    async fn upsert_annotations(
        &self,
        operation_id: Uuid,
        annotations: &[Annotation],
        now: OffsetDateTime,
    ) -> StoreResult<Upserted> {
        self.upsert_batch(operation_id, annotations, now).await
    }

    async fn finish_operation_with(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        searchable: &[Uuid],
    ) -> StoreResult<FinishPlan> {
        let searchable: HashSet<Uuid> = searchable.iter().copied().collect();
        self.write(move |t| {
            let op = require_op(t, id)?;
            if op.status == OperationStatus::Started
                && !lifecycle::lease_lapsed(&op, now)
                && unsearchable_work(t, id, &searchable)?
            {
                return Err(StoreError::PendingIndexWork(id));
            }
            let key = op_key_bytes(&op.key());
            let active = operate::active_of(t, &key)?;
            let plan = match lifecycle::finish(&op, active.as_ref(), now) {
                Ok(plan) => plan,
                Err(e) => {
                    record_expiry(t, &op, now)?;
                    return Err(e.into());
                }
            };
            if !plan.changed {
                return Ok(plan);
            }
            let mut b = t.db.batch();
            write_op(t, &mut b, Some(&op), &plan.operation)?;
            if let Some(d) = &plan.deactivated {
                write_op(t, &mut b, active.as_ref(), d)?;
            }
            if let Some(new_active) = plan.new_active() {
                b.insert(&t.active, key, new_active.as_bytes().to_vec());
            }
            // The history entry goes in the same batch: never a finish without it.
            if let Some(a) = &plan.activation {
                operate::write_activation(t, &mut b, a)?;
            }
            b.commit().io()?;
            Ok(plan)
        })
        .await
    }

    async fn cancel_operation(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation> {
        self.write(move |t| {
            let op = require_op(t, id)?;
            match lifecycle::cancel(&op, now) {
                Ok((cancelled, changed)) => {
                    if changed {
                        let mut b = t.db.batch();
                        write_op(t, &mut b, Some(&op), &cancelled)?;
                        b.commit().io()?;
                    }
                    Ok(cancelled)
                }
                Err(e) => {
                    record_expiry(t, &op, now)?;
                    Err(e.into())
                }
            }
        })
        .await
    }

    async fn expire_operation(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Operation>> {
        self.write(move |t| {
            let op = require_op(t, id)?;
            match lifecycle::expire_if_lapsed(&op, now) {
                Some(expired) => {
                    let mut b = t.db.batch();
                    write_op(t, &mut b, Some(&op), &expired)?;
                    b.commit().io()?;
                    Ok(Some(expired))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn lapsed_operations(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<Uuid>> {
        self.read(move |t| {
            // lease_lapsed: expiry <= now.
            let mut upper = [0xffu8; 24];
            upper[..8].copy_from_slice(&ms_key(unix_ms(now)));
            let mut out = Vec::new();
            for g in t.started.range(..=upper).take(limit) {
                let k = g.key().io()?;
                out.push(uuid_of("started key", k.get(8..).unwrap_or_default())?);
            }
            Ok(out)
        })
        .await
    }

    async fn get_annotations(&self, ids: &[Uuid]) -> StoreResult<Vec<Option<Annotation>>> {
        let ids = ids.to_vec();
        self.read(move |t| {
            // Hits of one search come from a few operations: each is read once.
            let mut owners: HashMap<Uuid, Operation> = HashMap::new();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(v) = t.anns.get(id.as_bytes()).io()? else {
                    out.push(None);
                    continue;
                };
                let owner = owner_prefix(&v)?;
                let op = match owners.entry(owner) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(require_op(t, owner)?),
                };
                out.push(Some(decode_annotation(id, &v, op)?));
            }
            Ok(out)
        })
        .await
    }

    async fn annotations_of_operation(
        &self,
        operation_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Annotation>> {
        self.read(move |t| {
            let Some(op) = load_op(t, operation_id)? else {
                return Ok(Vec::new());
            };
            let prefix = *operation_id.as_bytes();
            let iter = match after {
                Some(a) => t.op_anns.range::<[u8; 32], _>((
                    Bound::Excluded(pair(operation_id, a)),
                    Bound::Unbounded,
                )),
                None => t.op_anns.prefix(prefix),
            };
            let mut out = Vec::new();
            for g in iter {
                if out.len() >= limit {
                    break;
                }
                let k = g.key().io()?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let id = uuid_of("op_anns key", k.get(16..).unwrap_or_default())?;
                if let Some(v) = t.anns.get(id.as_bytes()).io()? {
                    out.push(decode_annotation(id, &v, &op)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn pending_work(
        &self,
        operation_id: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<IndexWork>> {
        self.read(move |t| {
            let mut out = Vec::new();
            match operation_id {
                Some(op) => {
                    for g in t.pending_by_op.prefix(op.as_bytes()) {
                        if out.len() >= limit {
                            break;
                        }
                        let k = g.key().io()?;
                        if let Some(w) = load_work(t, k.get(16..).unwrap_or_default())? {
                            out.push(w);
                        }
                    }
                }
                None => {
                    for g in t.pending.iter().take(limit) {
                        let (_, v) = g.into_inner().io()?;
                        out.push(from_json("index work", &v)?);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn complete_work(&self, work: &[IndexWork]) -> StoreResult<()> {
        let keys: Vec<(Uuid, Uuid)> = work.iter().map(|w| (w.id, w.operation_id)).collect();
        self.write(move |t| {
            let mut b = t.db.batch();
            for (id, op) in keys {
                if t.pending.contains_key(id.as_bytes()).io()? {
                    b.remove(&t.pending, id.as_bytes().to_vec());
                    b.remove(&t.pending_by_op, pair(op, id).to_vec());
                }
            }
            b.commit().io()
        })
        .await
    }
}
