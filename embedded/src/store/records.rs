//! Key encodings and record helpers shared by the store's operations.

use super::Tables;
use annostore_core::clock::unix_ms;
use annostore_core::lifecycle;
use annostore_core::model::{Annotation, Operation, OperationKey, OperationStatus};
use annostore_core::store::{IndexWork, StoreError, StoreResult};
use fjall::OwnedWriteBatch;
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) trait IoExt<T> {
    fn io(self) -> StoreResult<T>;
}

impl<T> IoExt<T> for fjall::Result<T> {
    fn io(self) -> StoreResult<T> {
        self.map_err(|e| StoreError::Io(e.to_string()))
    }
}

pub(crate) fn io_error(e: String) -> StoreError {
    StoreError::Io(e)
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(format!("store read task failed: {e}"))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn uuid_of(what: &str, bytes: &[u8]) -> StoreResult<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::Corrupt(format!("{what}: not a uuid")))
}

pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    // Names longer than u16::MAX are rejected by validation long before; truncating the
    // length would only make such keys collide, never corrupt others.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn type_key(name: &str, version: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + name.len());
    push_str(&mut k, name);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

pub(crate) fn op_key_bytes(key: &OperationKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + key.annotation_type.len() + key.pivot_id.len());
    push_str(&mut k, &key.annotation_type);
    k.extend_from_slice(&key.annotation_type_version.to_be_bytes());
    push_str(&mut k, &key.pivot_id);
    k
}

pub(crate) fn key_op_key(key: &OperationKey, number: u64) -> Vec<u8> {
    let mut k = op_key_bytes(key);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

pub(crate) fn pair(a: Uuid, b: Uuid) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(a.as_bytes());
    k[16..].copy_from_slice(b.as_bytes());
    k
}

/// i64 milliseconds as big-endian bytes that sort like the numbers (sign bit flipped).
pub(crate) fn ms_key(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn started_key(expires: OffsetDateTime, id: Uuid) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&ms_key(unix_ms(expires)));
    k[8..].copy_from_slice(id.as_bytes());
    k
}

pub(crate) fn lease_entry(op: &Operation) -> Option<[u8; 24]> {
    match (op.status, op.lease_expires_at) {
        (OperationStatus::Started, Some(t)) => Some(started_key(t, op.id)),
        _ => None,
    }
}

/// Writes an operation and keeps the `started` index in step with it.
pub(crate) fn write_op(
    t: &Tables,
    b: &mut OwnedWriteBatch,
    old: Option<&Operation>,
    new: &Operation,
) -> StoreResult<()> {
    let old_entry = old.and_then(lease_entry);
    let new_entry = lease_entry(new);
    if old_entry != new_entry {
        if let Some(k) = old_entry {
            b.remove(&t.started, k.to_vec());
        }
        if let Some(k) = new_entry {
            b.insert(&t.started, k.to_vec(), Vec::new());
        }
    }
    b.insert(&t.ops, new.id.as_bytes().to_vec(), to_json(new)?);
    Ok(())
}

pub(crate) fn load_op(t: &Tables, id: Uuid) -> StoreResult<Option<Operation>> {
    match t.ops.get(id.as_bytes()).io()? {
        Some(v) => Ok(Some(from_json("operation", &v)?)),
        None => Ok(None),
    }
}

pub(crate) fn require_op(t: &Tables, id: Uuid) -> StoreResult<Operation> {
    load_op(t, id)?.ok_or_else(|| StoreError::NotFound {
        what: "operation",
        id: id.to_string(),
    })
}

pub(crate) fn decode_annotation(v: &[u8]) -> StoreResult<Annotation> {
    if v.len() < 16 {
        return Err(StoreError::Corrupt("annotation record too short".into()));
    }
    from_json("annotation", &v[16..])
}

pub(crate) fn load_work(t: &Tables, id: &[u8]) -> StoreResult<Option<IndexWork>> {
    match t.pending.get(id).io()? {
        Some(v) => Ok(Some(from_json("index work", &v)?)),
        None => Ok(None),
    }
}

/// Records the expiry of a lapsed operation (its own batch); true if it wrote.
pub(crate) fn record_expiry(t: &Tables, op: &Operation, now: OffsetDateTime) -> StoreResult<bool> {
    match lifecycle::expire_if_lapsed(op, now) {
        Some(expired) => {
            let mut b = t.db.batch();
            write_op(t, &mut b, Some(op), &expired)?;
            b.commit().io()?;
            Ok(true)
        }
        None => Ok(false),
    }
}
