//! Changes of one operation row alone: forced expiry and the garbage collection marks.
//! Each is a compare-and-set on the row's version, decided again on the row as re-read
//! when another writer got there first. Beginning a collection is atomic against
//! activations this way: an activation writes the run's row (marked active) before it
//! moves the pointer, so of a collection and an activation racing on one run, one
//! write fails, re-reads, and is refused by the lifecycle rule (a collected run cannot
//! be activated; an active one cannot be collected).

use super::Attempts;
use super::pointer::{OpCell, reload};
use annostore_core::model::Operation;
use annostore_core::store::StoreResult;
use uuid::Uuid;

/// Applies `change` to operation `id`: `Ok(None)` from it means nothing to write, an
/// error refuses. Returns the row as it stands and whether this call wrote it.
pub async fn update_op<C, F>(
    cell: &mut C,
    id: Uuid,
    attempts: &mut Attempts,
    mut change: F,
) -> StoreResult<(Operation, bool)>
where
    C: OpCell + ?Sized,
    F: FnMut(&Operation) -> StoreResult<Option<Operation>> + Send,
{
    loop {
        attempts.take()?;
        let op = reload(cell, id).await?;
        let Some(next) = change(&op)? else {
            return Ok((op, false));
        };
        if cell.write_op(&next, op.version).await? {
            return Ok((next, true));
        }
        tracing::debug!(operation = %id, "operation changed meanwhile; re-reading");
    }
}
