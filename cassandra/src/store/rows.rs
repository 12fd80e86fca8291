//! Row helpers of the store: loading operations, their compare-and-set write (with the
//! lapse index kept in step), expiry, the key's state, logged batches, and the cells
//! of [`crate::cas`]: operation rows alone, and the active pointer protocol on
//! `key_state` with the key's history.

use super::*;

impl CassandraStore {
    pub(super) async fn load_op(&self, id: Uuid) -> StoreResult<Option<Operation>> {
        let rows = self.st().op_get.rows(self.s(), vec![uuid(id)]).await?;
        match rows.first() {
            Some(r) => Ok(Some(from_json("operation", text_at(r, 0)?)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn require_op(&self, id: Uuid) -> StoreResult<Operation> {
        self.load_op(id)
            .await?
            .ok_or_else(|| not_found("operation", id))
    }

    /// Loads operations by id, keeping the order, skipping ids without a row.
    pub(super) async fn load_ops(&self, ids: Vec<Uuid>) -> StoreResult<Vec<Operation>> {
        let loaded: Vec<Option<Operation>> = stream::iter(ids)
            .map(|id| self.load_op(id))
            .buffered(FAN_OUT)
            .try_collect()
            .await?;
        Ok(loaded.into_iter().flatten().collect())
    }

    /// `UPDATE operations ... IF version = expect`, then the lapse index in step.
    pub(super) async fn cas_op(&self, op: &Operation, expect: u64) -> StoreResult<bool> {
        let result = self
            .st()
            .op_cas
            .run(
                self.s(),
                vec![
                    big(count_i64(op.version)?),
                    text(to_json(op)?),
                    uuid(op.id),
                    big(count_i64(expect)?),
                ],
            )
            .await?;
        if !applied(result)? {
            tracing::debug!(operation = %op.id, expect, "operation changed meanwhile; re-reading");
            return Ok(false);
        }
        self.sync_started(op).await?;
        Ok(true)
    }

    /// Keeps `started_operations` in step with the operation's status and lease.
    pub(super) async fn sync_started(&self, op: &Operation) -> StoreResult<()> {
        let shard = Some(scylla::value::CqlValue::Int(started_shard(op.id)));
        match (op.status, op.lease_expires_at) {
            (annostore_core::model::OperationStatus::Started, Some(lease)) => {
                self.st()
                    .started_insert
                    .run(self.s(), vec![shard, uuid(op.id), big(unix_ms(lease))])
                    .await?;
            }
            _ => {
                self.st()
                    .started_delete
                    .run(self.s(), vec![shard, uuid(op.id)])
                    .await?;
            }
        }
        Ok(())
    }

    /// Records EXPIRED if `op`'s lease has lapsed at `now`; true when it had lapsed
    /// (whoever recorded it).
    pub(super) async fn record_expiry(
        &self,
        op: &Operation,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        Ok(self.expire(op.clone(), now).await?.is_some() || lifecycle::lease_lapsed(op, now))
    }

    /// The expiry this call recorded, if any.
    pub(super) async fn expire(
        &self,
        mut op: Operation,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Operation>> {
        let mut attempts = Attempts::new("expire operation");
        loop {
            attempts.take()?;
            let Some(expired) = lifecycle::expire_if_lapsed(&op, now) else {
                return Ok(None);
            };
            if self.cas_op(&expired, op.version).await? {
                return Ok(Some(expired));
            }
            op = self.require_op(op.id).await?;
        }
    }

    /// The key's last operation number and where its active pointer stands.
    pub(super) async fn key_state(
        &self,
        key: &OperationKey,
    ) -> StoreResult<(Option<u64>, PointerAt)> {
        let rows = self.st().key_get.rows(self.s(), key_values(key)?).await?;
        match rows.first() {
            Some(r) => {
                let last = opt_i64_at(r, 0)?.map(|n| n.max(0) as u64);
                let at = PointerAt {
                    id: opt_uuid_at(r, 1)?,
                    sequence: opt_i64_at(r, 2)?.map(|n| n.max(0) as u64),
                };
                Ok((last, at))
            }
            None => Ok((None, PointerAt::default())),
        }
    }

    /// Whether the operation has pending index work other than `searchable`'s.
    pub(super) async fn has_unsearchable(
        &self,
        op: Uuid,
        searchable: &[Uuid],
    ) -> StoreResult<bool> {
        let rows = self
            .st()
            .pending_op_get
            .rows(self.s(), vec![uuid(op)])
            .await?;
        Ok(super::decode_work(&rows)?
            .iter()
            .any(|w| !searchable.contains(&w.id)))
    }

    pub(super) async fn write_batch(
        &self,
        parts: Vec<(&scylla::statement::prepared::PreparedStatement, Vec<V>)>,
    ) -> StoreResult<()> {
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_is_idempotent(true);
        let mut values = Vec::with_capacity(parts.len());
        for (stmt, v) in parts {
            // Cassandra refuses conditional statements in a multi-partition batch, and
            // kassandra would not notice: keep them out.
            debug_assert!(
                !stmt.get_statement().contains(" IF "),
                "{}",
                stmt.get_statement()
            );
            batch.append_statement(stmt.clone());
            values.push(v);
        }
        self.s().batch(&batch, values).await.map_err(io)?;
        Ok(())
    }
}

/// Operation rows, for [`cas::update_op`].
pub(super) struct Rows<'a>(pub(super) &'a CassandraStore);

#[async_trait]
impl OpCell for Rows<'_> {
    async fn load(&mut self, id: Uuid) -> StoreResult<Option<Operation>> {
        self.0.load_op(id).await
    }

    async fn write_op(&mut self, op: &Operation, expect_version: u64) -> StoreResult<bool> {
        self.0.cas_op(op, expect_version).await
    }
}

/// The pointer protocol of [`crate::cas::pointer`] on `key_state`, `operations` and
/// `activations`.
pub(super) struct KeyPointer<'a> {
    pub(super) store: &'a CassandraStore,
    pub(super) key: OperationKey,
}

#[async_trait]
impl OpCell for KeyPointer<'_> {
    async fn load(&mut self, id: Uuid) -> StoreResult<Option<Operation>> {
        self.store.load_op(id).await
    }

    async fn write_op(&mut self, op: &Operation, expect_version: u64) -> StoreResult<bool> {
        self.store.cas_op(op, expect_version).await
    }
}

#[async_trait]
impl PointerCell for KeyPointer<'_> {
    async fn current(&mut self) -> StoreResult<Pointer> {
        let (_, at) = self.store.key_state(&self.key).await?;
        let run = match at.id {
            // Operations are written before any pointer names them.
            Some(id) => match self.store.load_op(id).await? {
                Some(op) => Some(op),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "the active pointer names operation {id}, which does not exist"
                    )));
                }
            },
            None => None,
        };
        Ok(Pointer { at, run })
    }

    async fn move_pointer(&mut self, from: PointerAt, to: PointerAt) -> StoreResult<bool> {
        let seq = |s: Option<u64>| -> StoreResult<V> {
            s.map(|n| count_i64(n).map(big))
                .transpose()
                .map(Option::flatten)
        };
        let mut v = vec![to.id.and_then(uuid), seq(to.sequence)?];
        v.extend(key_values(&self.key)?);
        v.push(from.id.and_then(uuid));
        v.push(seq(from.sequence)?);
        let r = self
            .store
            .st()
            .key_move_active
            .run(self.store.s(), v)
            .await?;
        applied(r)
    }

    async fn record(&mut self, activation: &Activation) -> StoreResult<()> {
        let mut v = key_values(&self.key)?;
        v.push(big(count_i64(activation.sequence)?));
        v.push(text(to_json(activation)?));
        self.store
            .st()
            .activation_insert
            .run(self.store.s(), v)
            .await?;
        Ok(())
    }
}
