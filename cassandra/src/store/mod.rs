//! [`CassandraStore`]: the `Store` trait on Cassandra/ScyllaDB.
//!
//! Every lifecycle change follows `core::lifecycle`: load the rows, ask the pure
//! function for the result, and write it with a compare-and-set on the operation's
//! `version` (`UPDATE ... IF version = ?`). A write that did not apply re-reads and
//! decides again ([`crate::cas`]). Operation numbers and the key's active pointer move
//! only by conditional writes on `key_state`; annotation ids are claimed with
//! `INSERT ... IF NOT EXISTS` on `annotation_owners` (see [`upsert`]).
//!
//! Reads never rely on clustering order, clustering ranges or `ORDER BY` for
//! correctness: rows of a bounded partition are sorted here (a range, where used, only
//! saves reading; its result is filtered here again). No `IN`, no `ALLOW FILTERING`.
//!
//! [`rows`] holds the row helpers and the cells of [`crate::cas`] (operation rows; the
//! pointer protocol on `key_state`), [`moves`] finish, rollback, cancel and forced
//! expiry, [`history`] the activation history, [`collect`] garbage collection,
//! [`scans`] the scans of operations, buckets and hours, [`upsert`] the upsert of a
//! batch.

use crate::cas::{self, Attempts, NumberClaim, OpCell, Pointer, PointerAt, PointerCell, Why};
use crate::config::CassandraConfig;
use crate::schema::check_keyspace;
use crate::session::*;
use crate::statements::Statements;
use annostore_core::clock::unix_ms;
use annostore_core::lifecycle::{self, ActivationPlan, FinishPlan};
use annostore_core::model::{
    Activation, ActivationReason, Annotation, AnnotationType, Operation, OperationFilter,
    OperationKey, ScanOrder, StartOperation,
};
use annostore_core::store::{IndexWork, PutType, Store, StoreError, StoreResult, Upserted};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

mod collect;
mod history;
mod moves;
mod rows;
mod scans;
mod upsert;

use scans::decode_work;

/// Reads in flight at once for one call (loads by id, buckets).
const FAN_OUT: usize = 32;
/// Shards of `started_operations`.
const STARTED_SHARDS: i32 = 16;
/// Buckets of `operation_annotations` per operation.
const ANNOTATION_BUCKETS: u8 = 64;
const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// The store on a Cassandra or ScyllaDB cluster. Cheap to clone.
#[derive(Clone)]
pub struct CassandraStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) session: Session,
    pub(crate) st: Statements,
    /// The server honours conditions, ranges and clustering order (not kassandra).
    pub(crate) honoured: bool,
}

impl CassandraStore {
    /// Connects and prepares every statement. The schema must exist
    /// ([`crate::apply_schema`]).
    pub async fn connect(config: &CassandraConfig) -> Result<Self, StoreError> {
        check_keyspace(&config.keyspace)?;
        let session = connect_session(config).await?;
        let st = Statements::prepare(&session, &config.keyspace, config.page_size).await?;
        let honoured = st.conditions_honoured();
        if !honoured {
            tracing::warn!(
                "the CQL server ignores conditions (IF ...) and clustering ranges: \
                 compare-and-set writes always apply; fine for a test server, unsafe \
                 with more than one annostore node"
            );
        }
        Ok(CassandraStore {
            inner: Arc::new(Inner {
                session,
                st,
                honoured,
            }),
        })
    }

    /// False on a server that ignores LWT conditions (kassandra); see the tests.
    pub fn conditions_honoured(&self) -> bool {
        self.inner.honoured
    }

    fn s(&self) -> &Session {
        &self.inner.session
    }

    fn st(&self) -> &Statements {
        &self.inner.st
    }
}

// ---- encodings ----

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn key_values(k: &OperationKey) -> StoreResult<Vec<V>> {
    Ok(vec![
        text(k.annotation_type.clone()),
        int(version_i32(k.annotation_type_version)?),
        text(k.pivot_id.clone()),
    ])
}

fn version_i32(v: u32) -> StoreResult<i32> {
    i32::try_from(v).map_err(|_| StoreError::Corrupt(format!("type version {v} out of range")))
}

fn count_i64(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} out of range")))
}

/// Milliseconds of a UUIDv7 (0 for other versions: their rows share the first bucket).
fn uuid_ms(id: Uuid) -> i64 {
    id.get_timestamp()
        .map(|t| {
            let (s, n) = t.to_unix();
            (s as i64) * 1_000 + i64::from(n / 1_000_000)
        })
        .unwrap_or(0)
}

fn started_shard(id: Uuid) -> i32 {
    i32::from(id.as_bytes()[15]) % STARTED_SHARDS
}

fn annotation_bucket(id: Uuid) -> i32 {
    i32::from(id.as_bytes()[15] % ANNOTATION_BUCKETS)
}

fn not_found(what: &'static str, id: Uuid) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_string(),
    }
}

#[async_trait]
impl Store for CassandraStore {
    async fn put_type(&self, def: AnnotationType) -> StoreResult<PutType> {
        let existing = self.get_type(&def.name, def.version).await?;
        let existing = match existing {
            Some(e) => e,
            None => {
                let r = self
                    .st()
                    .type_insert_if_absent
                    .run(
                        self.s(),
                        vec![
                            text(def.name.clone()),
                            int(version_i32(def.version)?),
                            text(to_json(&def)?),
                        ],
                    )
                    .await?;
                if applied(r)? {
                    return Ok(PutType::Created(def));
                }
                // Another node registered it first: compare with what it wrote.
                self.get_type(&def.name, def.version)
                    .await?
                    .ok_or_else(|| StoreError::Io("type registration vanished".into()))?
            }
        };
        if existing.same_definition(&def) {
            Ok(PutType::Unchanged(existing))
        } else {
            Err(StoreError::TypeConflict(format!(
                "{} version {}",
                def.name, def.version
            )))
        }
    }

    async fn get_type(&self, name: &str, version: u32) -> StoreResult<Option<AnnotationType>> {
        let rows = self
            .st()
            .type_get
            .rows(self.s(), vec![text(name), int(version_i32(version)?)])
            .await?;
        match rows.first() {
            Some(r) => Ok(Some(from_json("annotation type", text_at(r, 0)?)?)),
            None => Ok(None),
        }
    }

    async fn list_types(&self) -> StoreResult<Vec<AnnotationType>> {
        let rows = self.st().type_scan.rows(self.s(), vec![]).await?;
        rows.iter()
            .map(|r| from_json("annotation type", text_at(r, 0)?))
            .collect()
    }

    async fn start_operation(
        &self,
        req: StartOperation,
        lease_seconds: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        let key = OperationKey {
            annotation_type: req.annotation_type.clone(),
            annotation_type_version: req.annotation_type_version,
            pivot_id: req.pivot_id.clone(),
        };
        let kv = key_values(&key)?;
        let mut attempts = Attempts::new("claim an operation number");
        let (previous, number) = loop {
            attempts.take()?;
            let (last, _) = self.key_state(&key).await?;
            let claim = NumberClaim::after(last);
            let result = match claim {
                NumberClaim::First => {
                    let mut v = kv.clone();
                    v.push(big(1));
                    self.st().key_first.run(self.s(), v).await?
                }
                NumberClaim::Advance { expect, next } => {
                    let mut v = vec![big(count_i64(next)?)];
                    v.extend(kv.clone());
                    v.push(big(count_i64(expect)?));
                    self.st().key_advance.run(self.s(), v).await?
                }
            };
            if applied(result)? {
                break (last, claim.number());
            }
            tracing::debug!(?claim, "operation number taken meanwhile; re-reading");
        };
        let op = lifecycle::start(&req, Uuid::now_v7(), previous, lease_seconds, now);
        debug_assert_eq!(op.operation_number, number);
        let day = uuid_ms(op.id).div_euclid(DAY_MS);
        let st = self.st();
        let mut key_op = kv.clone();
        key_op.push(big(count_i64(op.operation_number)?));
        key_op.push(uuid(op.id));
        let lease = op.lease_expires_at.map(unix_ms).unwrap_or_default();
        // A crash after the number claim and before these writes leaves a gap in the
        // key's numbers, never a duplicate. Every write of an `operations` row is
        // conditional (Paxos timestamps), so clock skew cannot reorder them.
        let inserted = st
            .op_insert
            .run(
                self.s(),
                vec![
                    uuid(op.id),
                    big(count_i64(op.version)?),
                    text(to_json(&op)?),
                ],
            )
            .await?;
        if !applied(inserted)? {
            return Err(StoreError::Io(format!(
                "operation id {} already taken",
                op.id
            )));
        }
        self.write_batch(vec![
            (&st.key_ops_insert.prepared, key_op),
            (&st.day_ops_insert.prepared, vec![big(day), uuid(op.id)]),
            (&st.days_insert.prepared, vec![int(0), big(day)]),
            (
                &st.started_insert.prepared,
                vec![int(started_shard(op.id)), uuid(op.id), big(lease)],
            ),
        ])
        .await?;
        Ok(op)
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
        self.delete_collected(operation_id, ids).await
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
        self.load_op(id).await
    }

    async fn list_operations(
        &self,
        filter: &OperationFilter,
        order: ScanOrder,
        cursor: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Operation>> {
        self.list(filter, order, cursor, limit).await
    }

    async fn active_operations(&self) -> StoreResult<Vec<Operation>> {
        let rows = self.st().key_scan_active.rows(self.s(), vec![]).await?;
        let ids = rows
            .iter()
            .map(|r| opt_uuid_at(r, 0))
            .collect::<StoreResult<Vec<_>>>()?;
        self.load_ops(ids.into_iter().flatten().collect()).await
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
        self.finish(id, now, searchable).await
    }

    async fn cancel_operation(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation> {
        self.cancel(id, now).await
    }

    async fn expire_operation(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Operation>> {
        let op = self.require_op(id).await?;
        self.expire(op, now).await
    }

    async fn lapsed_operations(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<Uuid>> {
        let now_ms = unix_ms(now);
        let shards: Vec<Vec<scylla::value::Row>> = stream::iter(0..STARTED_SHARDS)
            .map(|shard| self.st().started_get.rows(self.s(), vec![int(shard)]))
            .buffer_unordered(FAN_OUT)
            .try_collect()
            .await?;
        let mut candidates = Vec::new();
        for r in shards.iter().flatten() {
            let lease = i64_at(r, 1)?;
            if lease <= now_ms {
                candidates.push((lease, uuid_at(r, 0)?));
            }
        }
        candidates.sort_unstable();
        let mut out = Vec::new();
        for (_, id) in candidates {
            if out.len() >= limit {
                break;
            }
            // The index row is written after the operation: trust the operation.
            match self.load_op(id).await? {
                Some(op) if lifecycle::lease_lapsed(&op, now) => out.push(id),
                Some(op) if op.status != annostore_core::model::OperationStatus::Started => {
                    self.sync_started(&op).await?;
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn get_annotations(&self, ids: &[Uuid]) -> StoreResult<Vec<Option<Annotation>>> {
        stream::iter(ids.to_vec())
            .map(|id| self.load_annotation(id))
            .buffered(FAN_OUT)
            .try_collect()
            .await
    }

    async fn annotations_of_operation(
        &self,
        operation_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Annotation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The first `limit` ids above `after` of each bucket, merged.
        let buckets: Vec<Vec<Uuid>> = stream::iter(0..i32::from(ANNOTATION_BUCKETS))
            .map(|b| self.bucket_ids(operation_id, b, after, limit))
            .buffer_unordered(FAN_OUT)
            .try_collect()
            .await?;
        let mut ids: Vec<Uuid> = buckets.into_iter().flatten().collect();
        ids.sort_unstable();
        ids.truncate(limit);
        let loaded = self.get_annotations(&ids).await?;
        Ok(loaded
            .into_iter()
            .flatten()
            .filter(|a| a.operation_id == operation_id)
            .collect())
    }

    async fn pending_work(
        &self,
        operation_id: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<IndexWork>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        match operation_id {
            Some(op) => {
                let rows = self
                    .st()
                    .pending_op_get
                    .rows(self.s(), vec![uuid(op)])
                    .await?;
                let mut work = decode_work(&rows)?;
                work.truncate(limit);
                Ok(work)
            }
            None => self.oldest_work(limit).await,
        }
    }

    async fn complete_work(&self, work: &[IndexWork]) -> StoreResult<()> {
        stream::iter(work.to_vec())
            .map(|w| self.complete_one(w))
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}
