//! The upsert of a batch: encoding and ownership reads on the caller, then one
//! check-then-write on the single writer (see [`super::recent`] for why the reads are
//! trusted there).

use super::records::*;
use super::{FjallStore, recent};
use annostore_core::lifecycle;
use annostore_core::model::{Annotation, OperationStatus};
use annostore_core::store::{IndexWork, IndexWorkKind, StoreError, StoreResult, Upserted};
use time::OffsetDateTime;
use uuid::Uuid;

impl FjallStore {
    pub(super) async fn upsert_batch(
        &self,
        operation_id: Uuid,
        annotations: &[Annotation],
        now: OffsetDateTime,
    ) -> StoreResult<Upserted> {
        // Encoding happens here, on the caller, so the single writer only checks and writes.
        let mut ids = Vec::with_capacity(annotations.len());
        let mut encoded = Vec::with_capacity(annotations.len());
        for a in annotations {
            if a.operation_id != operation_id {
                return Err(StoreError::Corrupt(format!(
                    "annotation {} of operation {} upserted into {operation_id}",
                    a.id, a.operation_id
                )));
            }
            ids.push(a.id);
            encoded.push(encode_annotation(a)?);
        }
        // So is the index work (its id is a UUIDv7 from this process: time-ordered still).
        let work = IndexWork {
            id: Uuid::now_v7(),
            operation_id,
            kind: IndexWorkKind::Upsert {
                annotation_ids: ids.clone(),
            },
        };
        let work_json = to_json(&work)?;
        // Ids go in key order, so a batch's memtable searches stay close.
        let mut sorted: Vec<(Uuid, Vec<u8>)> = ids.into_iter().zip(encoded).collect();
        sorted.sort_unstable_by_key(|(id, _)| *id);
        let sorted_ids: Vec<Uuid> = sorted.iter().map(|(id, _)| *id).collect();
        // Who owns each id, read here rather than on the writer (see `recent`).
        let mark = self.shared.tables.recent.mark();
        let owners = self
            .read(move |t| {
                let owners = sorted_ids
                    .iter()
                    .map(|id| owner_of(t, id))
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok((sorted_ids, owners))
            })
            .await?;
        self.write(move |t| {
            let op = require_op(t, operation_id)?;
            if record_expiry(t, &op, now)? {
                return Err(lifecycle::LifecycleError::NotStarted {
                    id: op.id,
                    status: OperationStatus::Expired,
                }
                .into());
            }
            let (ids, mut owners) = owners;
            match t.recent.checks(mark, &ids) {
                Some(checks) => {
                    for ((id, check), owner) in ids.iter().zip(checks).zip(owners.iter_mut()) {
                        if check == recent::Check::Reread {
                            *owner = owner_of(t, id)?;
                        }
                    }
                }
                None => {
                    for (id, owner) in ids.iter().zip(owners.iter_mut()) {
                        *owner = owner_of(t, id)?;
                    }
                }
            }
            let mut created = Vec::new();
            let mut replaced = Vec::new();
            for (id, owner) in ids.iter().zip(owners) {
                match owner {
                    Some(owner) if owner == operation_id => replaced.push(*id),
                    Some(owner) => return Err(StoreError::IdConflict { id: *id, owner }),
                    None => created.push(*id),
                }
            }
            let updated = lifecycle::accept_upsert(&op, created.len() as u64, now)?;
            let mut b = t.db.batch();
            for (id, v) in sorted {
                b.insert(&t.anns, id.as_bytes().to_vec(), v);
                b.insert(&t.op_anns, pair(operation_id, id).to_vec(), Vec::new());
            }
            write_op(t, &mut b, Some(&op), &updated)?;
            b.insert(&t.pending, work.id.as_bytes().to_vec(), work_json);
            b.insert(
                &t.pending_by_op,
                pair(operation_id, work.id).to_vec(),
                Vec::new(),
            );
            b.commit().io()?;
            // Only new ids change owner: a rewrite keeps its operation's.
            t.recent.record(created.into_iter());
            Ok(Upserted {
                operation: updated,
                work,
                replaced,
            })
        })
        .await
    }
}
