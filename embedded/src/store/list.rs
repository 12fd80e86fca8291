//! [`Store::list_operations`](annostore_core::store::Store::list_operations) on fjall:
//! a filter naming a whole key reads that key's runs from `key_ops`; any other filter
//! scans `ops` by id (UUIDv7, so by start time) from the cursor on.

use super::Tables;
use super::records::*;
use annostore_core::model::{Operation, OperationFilter, OperationKey, ScanOrder};
use annostore_core::store::StoreResult;
use std::ops::Bound::{Excluded, Unbounded};
use uuid::Uuid;

pub(super) fn operations(
    t: &Tables,
    filter: &OperationFilter,
    order: ScanOrder,
    cursor: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<Operation>> {
    if let (Some(ty), Some(version), Some(pivot)) = (
        &filter.annotation_type,
        filter.annotation_type_version,
        &filter.pivot_id,
    ) {
        let key = OperationKey {
            annotation_type: ty.clone(),
            annotation_type_version: version,
            pivot_id: pivot.clone(),
        };
        // A key's runs by run number, which orders them as their ids do (a key's runs
        // are numbered as they start): the viewer lists a key's runs on every poll.
        let range = t.key_ops.prefix(op_key_bytes(&key));
        let ops = in_order(range, order).filter_map(|g| {
            let read = || -> StoreResult<Option<Operation>> {
                let (_, v) = g.into_inner().io()?;
                let id = uuid_of("key_ops value", &v)?;
                if !order.past(&id, cursor) {
                    return Ok(None);
                }
                require_op(t, id).map(Some)
            };
            read().transpose()
        });
        return matching(ops, filter, limit);
    }
    let bounds = match (order, cursor) {
        (_, None) => (Unbounded, Unbounded),
        (ScanOrder::NewestFirst, Some(c)) => (Unbounded, Excluded(*c.as_bytes())),
        (ScanOrder::OldestFirst, Some(c)) => (Excluded(*c.as_bytes()), Unbounded),
    };
    let ops = in_order(t.ops.range(bounds), order).map(|g| {
        let (_, v) = g.into_inner().io()?;
        from_json::<Operation>("operation", &v)
    });
    matching(ops, filter, limit)
}

/// A range newest first or oldest first.
fn in_order<'a, I>(range: I, order: ScanOrder) -> Box<dyn Iterator<Item = I::Item> + 'a>
where
    I: DoubleEndedIterator + 'a,
{
    match order {
        ScanOrder::NewestFirst => Box::new(range.rev()),
        ScanOrder::OldestFirst => Box::new(range),
    }
}

/// The first `limit` operations that match `filter`.
fn matching(
    ops: impl Iterator<Item = StoreResult<Operation>>,
    filter: &OperationFilter,
    limit: usize,
) -> StoreResult<Vec<Operation>> {
    let mut out = Vec::new();
    for op in ops {
        if out.len() >= limit {
            break;
        }
        let op = op?;
        if filter.matches(&op) {
            out.push(op);
        }
    }
    Ok(out)
}
