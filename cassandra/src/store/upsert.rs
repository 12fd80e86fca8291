//! The upsert of a batch, all or nothing, with many writers at once.
//!
//! 1. Check the operation (a lapsed lease is recorded EXPIRED) and read who owns each
//!    id. An id of another operation fails the batch before anything is written.
//! 2. Claim the unowned ids (`INSERT ... IF NOT EXISTS` on `annotation_owners`). A claim
//!    lost to another operation releases this batch's claims and fails it.
//! 3. Record the pending index work (before the operation changes, so a finish that
//!    runs from here on is refused with `PendingIndexWork`).
//! 4. Compare-and-set the operation (count, lease, version); on a conflict re-read and
//!    re-apply `lifecycle::accept_upsert`. If the operation stopped accepting (finished,
//!    cancelled, lapsed), undo steps 2 and 3 and fail.
//! 5. Write the annotations and their rows in `operation_annotations`.
//!
//! A crash inside step 5 leaves the pending record naming ids whose bodies may be
//! missing: the replay then finds fewer annotations than the count says (documented
//! gap; the producer's retry of the batch rewrites them).

use super::*;
use annostore_core::model::OperationStatus;
use annostore_core::store::IndexWorkKind;

enum Owner {
    Mine,
    Other(Uuid),
    Nobody,
}

impl CassandraStore {
    pub(super) async fn upsert_batch(
        &self,
        operation_id: Uuid,
        annotations: &[Annotation],
        now: OffsetDateTime,
    ) -> StoreResult<Upserted> {
        for a in annotations {
            if a.operation_id != operation_id {
                return Err(StoreError::Corrupt(format!(
                    "annotation {} of operation {} upserted into {operation_id}",
                    a.id, a.operation_id
                )));
            }
        }
        // 1. The operation, and the owners of the ids.
        let op = self.require_op(operation_id).await?;
        if self.record_expiry(&op, now).await? {
            return Err(lifecycle::LifecycleError::NotStarted {
                id: op.id,
                status: OperationStatus::Expired,
            }
            .into());
        }
        lifecycle::accept_upsert(&op, 0, now)?;
        let mut sorted: Vec<Uuid> = annotations.iter().map(|a| a.id).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let owners: Vec<Owner> = stream::iter(sorted.iter().copied())
            .map(|id| self.owner(id, operation_id))
            .buffered(FAN_OUT)
            .try_collect()
            .await?;
        let mut created = Vec::new();
        let mut replaced = Vec::new();
        for (id, owner) in sorted.iter().zip(owners) {
            match owner {
                Owner::Mine => replaced.push(*id),
                Owner::Other(o) => return Err(StoreError::IdConflict { id: *id, owner: o }),
                Owner::Nobody => created.push(*id),
            }
        }
        // 2. Claim the new ids.
        let claims: Vec<(Uuid, Owner)> = stream::iter(created.iter().copied())
            .map(|id| async move { Ok::<_, StoreError>((id, self.claim(id, operation_id).await?)) })
            .buffered(FAN_OUT)
            .try_collect()
            .await?;
        let mut claimed = Vec::new();
        let mut conflict = None;
        for (id, outcome) in claims {
            match outcome {
                Owner::Nobody => claimed.push(id),
                // A concurrent batch of this operation claimed (and counted) it.
                Owner::Mine => replaced.push(id),
                Owner::Other(o) => {
                    conflict = conflict.or(Some(StoreError::IdConflict { id, owner: o }))
                }
            }
        }
        if let Some(e) = conflict {
            self.release(&claimed, operation_id).await?;
            return Err(e);
        }
        replaced.sort_unstable();
        // 3. The pending index work.
        let work = IndexWork {
            id: Uuid::now_v7(),
            operation_id,
            kind: IndexWorkKind::Upsert {
                annotation_ids: annotations.iter().map(|a| a.id).collect(),
            },
        };
        if let Err(e) = self.record_work(&work).await {
            self.release(&claimed, operation_id).await?;
            return Err(e);
        }
        // 4. The operation.
        let updated = match self.accept(op, claimed.len() as u64, now).await {
            Ok(updated) => updated,
            Err(e) => {
                self.complete_work(std::slice::from_ref(&work)).await?;
                self.release(&claimed, operation_id).await?;
                return Err(e);
            }
        };
        // 5. The annotations.
        stream::iter(annotations.to_vec())
            .map(|a| self.write_annotation(operation_id, a))
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(Upserted {
            operation: updated,
            work,
            replaced,
        })
    }

    async fn write_annotation(&self, operation_id: Uuid, a: Annotation) -> StoreResult<()> {
        let st = self.st();
        self.write_batch(vec![
            (
                &st.ann_insert.prepared,
                vec![uuid(a.id), uuid(operation_id), text(to_json(&a)?)],
            ),
            (
                &st.op_ann_insert.prepared,
                vec![
                    uuid(operation_id),
                    int(annotation_bucket(a.id)),
                    blob(a.id.as_bytes()),
                ],
            ),
        ])
        .await
    }

    async fn owner(&self, id: Uuid, me: Uuid) -> StoreResult<Owner> {
        let rows = self.st().owner_get.rows(self.s(), vec![uuid(id)]).await?;
        Ok(match rows.first() {
            Some(r) => match opt_uuid_at(r, 0)? {
                Some(o) if o == me => Owner::Mine,
                Some(o) => Owner::Other(o),
                None => Owner::Nobody,
            },
            None => Owner::Nobody,
        })
    }

    /// `Nobody` when this call claimed the id; else who holds it.
    async fn claim(&self, id: Uuid, me: Uuid) -> StoreResult<Owner> {
        let r = self
            .st()
            .owner_claim
            .run(self.s(), vec![uuid(id), uuid(me)])
            .await?;
        if applied(r)? {
            return Ok(Owner::Nobody);
        }
        match self.owner(id, me).await? {
            // Released between the claim and this read: report it as a conflict
            // with nobody in particular is wrong, so retrying is the caller's job.
            Owner::Nobody => Err(StoreError::Io(format!(
                "annotation id {id}: ownership changed during the upsert; retry"
            ))),
            owner => Ok(owner),
        }
    }

    /// Gives back ids this batch claimed (only while they are still this operation's).
    async fn release(&self, ids: &[Uuid], me: Uuid) -> StoreResult<()> {
        stream::iter(ids.iter().copied())
            .map(|id| {
                self.st()
                    .owner_release
                    .run(self.s(), vec![uuid(id), uuid(me)])
            })
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    async fn record_work(&self, work: &IndexWork) -> StoreResult<()> {
        let st = self.st();
        let hour = uuid_ms(work.id).div_euclid(HOUR_MS);
        let body = to_json(work)?;
        self.write_batch(vec![
            (
                &st.pending_op_insert.prepared,
                vec![uuid(work.operation_id), uuid(work.id), text(body.clone())],
            ),
            (
                &st.pending_hour_insert.prepared,
                vec![big(hour), uuid(work.id), text(body)],
            ),
            (&st.hours_insert.prepared, vec![int(0), big(hour)]),
        ])
        .await
    }

    /// Compare-and-set of `lifecycle::accept_upsert`, re-read on conflict. A lapsed
    /// lease found on a re-read is recorded EXPIRED.
    async fn accept(
        &self,
        mut op: Operation,
        new: u64,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        let mut attempts = Attempts::new("upsert into operation");
        loop {
            attempts.take()?;
            let updated = match lifecycle::accept_upsert(&op, new, now) {
                Ok(u) => u,
                Err(e) => {
                    self.record_expiry(&op, now).await?;
                    return Err(e.into());
                }
            };
            if self.cas_op(&updated, op.version).await? {
                return Ok(updated);
            }
            op = self.require_op(op.id).await?;
        }
    }
}
