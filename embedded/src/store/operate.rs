//! Operating the store: rollback and roll forward with the key's activation history,
//! forced expiry, and the garbage collection of a run's annotations. Like finish and
//! cancel, each change loads its state on the single writer, asks
//! [`annostore_core::lifecycle`] for the plan and writes it as one batch, so it is
//! atomic against finishes, other activations and upserts.

use super::FjallStore;
use super::records::*;
use annostore_core::lifecycle::{self, ActivationPlan, LifecycleError};
use annostore_core::model::{Activation, ActivationReason, Operation, OperationKey};
use annostore_core::store::{StoreError, StoreResult};
use time::OffsetDateTime;
use tracing::debug;
use uuid::Uuid;

impl FjallStore {
    pub(super) async fn activate(
        &self,
        id: Uuid,
        reason: ActivationReason,
        actor: Option<String>,
        now: OffsetDateTime,
    ) -> StoreResult<ActivationPlan> {
        self.write(move |t| {
            let target = require_op(t, id)?;
            let key = op_key_bytes(&target.key());
            let active = active_of(t, &key)?;
            let plan = lifecycle::activate(&target, active.as_ref(), reason, actor, now)?;
            let Some(activation) = &plan.activation else {
                return Ok(plan);
            };
            let mut b = t.db.batch();
            write_op(t, &mut b, Some(&target), &plan.operation)?;
            if let Some(d) = &plan.deactivated {
                write_op(t, &mut b, active.as_ref(), d)?;
            }
            b.insert(&t.active, key, plan.operation.id.as_bytes().to_vec());
            write_activation(t, &mut b, activation)?;
            b.commit().io()?;
            Ok(plan)
        })
        .await
    }

    /// The key's history, newest first: its entries sort by sequence under the key.
    pub(super) async fn history(
        &self,
        key: &OperationKey,
        limit: usize,
    ) -> StoreResult<Vec<Activation>> {
        let prefix = op_key_bytes(key);
        self.read(move |t| {
            let mut out = Vec::new();
            for g in t.activations.prefix(&prefix).rev().take(limit) {
                let (_, v) = g.into_inner().io()?;
                out.push(from_json("activation", &v)?);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn expire_now(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Operation>> {
        self.write(move |t| {
            let op = require_op(t, id)?;
            let Some(expired) = lifecycle::force_expire(&op, now) else {
                return Ok(None);
            };
            let mut b = t.db.batch();
            write_op(t, &mut b, Some(&op), &expired)?;
            b.commit().io()?;
            Ok(Some(expired))
        })
        .await
    }

    pub(super) async fn begin_collecting(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        self.write(move |t| {
            let op = require_op(t, id)?;
            let (collecting, changed) = lifecycle::begin_collection(&op, now)?;
            if changed {
                let mut b = t.db.batch();
                write_op(t, &mut b, Some(&op), &collecting)?;
                b.commit().io()?;
            }
            Ok(collecting)
        })
        .await
    }

    /// Deletes the bodies, ownership and listing entries of the ids the operation owns,
    /// in one batch. An id's owner is the prefix of its `anns` record, the same record
    /// the upsert checks, so an id deleted here is free for any run afterwards.
    pub(super) async fn delete_owned(&self, operation_id: Uuid, ids: &[Uuid]) -> StoreResult<u64> {
        let mut ids = ids.to_vec();
        // Key order (and each id once): the batch's reads stay close.
        ids.sort_unstable();
        ids.dedup();
        self.write(move |t| {
            let op = require_op(t, operation_id)?;
            if op.collected.is_none() {
                return Err(LifecycleError::CollectionNotBegun { id: op.id }.into());
            }
            let mut deleted = Vec::with_capacity(ids.len());
            let mut b = t.db.batch();
            for id in ids {
                if owner_of(t, &id)? == Some(operation_id) {
                    b.remove(&t.anns, id.as_bytes().to_vec());
                    b.remove(&t.op_anns, pair(operation_id, id).to_vec());
                    deleted.push(id);
                }
            }
            if deleted.is_empty() {
                return Ok(0);
            }
            b.commit().io()?;
            let n = deleted.len() as u64;
            // These ids changed owner (to none): an upsert that read them before now
            // re-reads them on the writer (see `recent`).
            t.recent.record(deleted.into_iter());
            debug!(operation = %operation_id, deleted = n, "annotations deleted");
            Ok(n)
        })
        .await
    }

    pub(super) async fn end_collecting(
        &self,
        id: Uuid,
        freed: u64,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        self.write(move |t| {
            let op = require_op(t, id)?;
            if op.collected.is_none() {
                return Err(LifecycleError::CollectionNotBegun { id: op.id }.into());
            }
            let Some(done) = lifecycle::end_collection(&op, freed, now) else {
                // Already recorded as done: the first record stands.
                return Ok(op);
            };
            let mut b = t.db.batch();
            write_op(t, &mut b, Some(&op), &done)?;
            b.commit().io()?;
            Ok(done)
        })
        .await
    }
}

/// The key's active run (by its `active` pointer), if any.
pub(super) fn active_of(t: &super::Tables, key: &[u8]) -> StoreResult<Option<Operation>> {
    match t.active.get(key).io()? {
        Some(v) => load_op(t, uuid_of("active pointer", &v)?),
        None => Ok(None),
    }
}

/// Adds a history entry to the batch, under (KEY, sequence).
pub(super) fn write_activation(
    t: &super::Tables,
    b: &mut fjall::OwnedWriteBatch,
    a: &Activation,
) -> StoreResult<()> {
    if a.sequence == 0 {
        return Err(StoreError::Corrupt(format!(
            "activation of {} without a sequence number",
            a.operation_id
        )));
    }
    b.insert(
        &t.activations,
        key_op_key(&a.key(), a.sequence),
        to_json(a)?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::recent::Check;
    use super::*;
    use annostore_core::store::Store;
    use annostore_core::testkit::store::{annotation, at, start_request};

    /// An upsert that read an id as owned before a collection deleted it must re-read
    /// it on the writer, or it would refuse an id that is free by then.
    #[tokio::test]
    async fn deleted_ids_are_logged_for_upserts_that_read_them_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        let op = store
            .start_operation(start_request("objects", 1, "p"), 60, at(0))
            .await
            .unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = [annotation(&op, a, "x"), annotation(&op, b, "y")];
        let up = store
            .upsert_annotations(op.id, &batch, at(0))
            .await
            .unwrap();
        store.complete_work(&[up.work]).await.unwrap();
        store.cancel_operation(op.id, at(1)).await.unwrap();
        store.begin_collection(op.id, at(2)).await.unwrap();
        let recent = &store.shared.tables.recent;
        let mark = recent.mark();
        assert_eq!(
            recent.checks(mark, &[a, b]),
            Some(vec![Check::Trust, Check::Trust])
        );
        assert_eq!(store.delete_annotations(op.id, &[a]).await.unwrap(), 1);
        assert_eq!(
            recent.checks(mark, &[a, b]),
            Some(vec![Check::Reread, Check::Trust])
        );
    }
}
