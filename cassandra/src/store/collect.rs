//! Garbage collection of a run: the marks on its row (begun, done), each a
//! compare-and-set atomic against activations ([`crate::cas::update`]), and the
//! deletion of its annotations.
//!
//! Deleting one annotation: its body and its row in `operation_annotations` (one
//! logged batch), then its row in `annotation_owners` (`DELETE ... IF operation_id =
//! ?`). The owner row goes last: while it names the run, no other operation can claim
//! the id and write a body that this deletion would then remove. A crash between the
//! two leaves only the owner row: the id stays claimed by the collected run (deleting
//! the same ids again removes it; the run's listing no longer shows the id, so a later
//! collection pass does not).

use super::rows::Rows;
use super::*;
use annostore_core::lifecycle::LifecycleError;

impl CassandraStore {
    pub(super) async fn begin_collecting(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        let mut attempts = Attempts::new("begin collection");
        let (op, _) = cas::update_op(&mut Rows(self), id, &mut attempts, |op| {
            let (next, changed) = lifecycle::begin_collection(op, now)?;
            Ok(changed.then_some(next))
        })
        .await?;
        Ok(op)
    }

    pub(super) async fn end_collecting(
        &self,
        id: Uuid,
        freed: u64,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        let mut attempts = Attempts::new("end collection");
        let (op, _) = cas::update_op(&mut Rows(self), id, &mut attempts, |op| {
            if op.collected.is_none() {
                return Err(LifecycleError::CollectionNotBegun { id: op.id }.into());
            }
            Ok(lifecycle::end_collection(op, freed, now))
        })
        .await?;
        Ok(op)
    }

    pub(super) async fn delete_collected(
        &self,
        operation_id: Uuid,
        ids: &[Uuid],
    ) -> StoreResult<u64> {
        let op = self.require_op(operation_id).await?;
        if op.collected.is_none() {
            return Err(LifecycleError::CollectionNotBegun { id: operation_id }.into());
        }
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let deleted: Vec<bool> = stream::iter(ids)
            .map(|id| self.delete_one(operation_id, id))
            .buffer_unordered(FAN_OUT)
            .try_collect()
            .await?;
        Ok(deleted.into_iter().filter(|d| *d).count() as u64)
    }

    /// Deletes annotation `id` if `operation_id` owns it; true when this call released
    /// its ownership.
    async fn delete_one(&self, operation_id: Uuid, id: Uuid) -> StoreResult<bool> {
        let rows = self.st().owner_get.rows(self.s(), vec![uuid(id)]).await?;
        let owner = match rows.first() {
            Some(r) => opt_uuid_at(r, 0)?,
            None => None,
        };
        if owner != Some(operation_id) {
            return Ok(false);
        }
        let st = self.st();
        self.write_batch(vec![
            (&st.ann_delete.prepared, vec![uuid(id)]),
            (
                &st.op_ann_delete.prepared,
                vec![
                    uuid(operation_id),
                    int(annotation_bucket(id)),
                    blob(id.as_bytes()),
                ],
            ),
        ])
        .await?;
        let released = st
            .owner_release
            .run(self.s(), vec![uuid(id), uuid(operation_id)])
            .await?;
        applied(released)
    }
}
