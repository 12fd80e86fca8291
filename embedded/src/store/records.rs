//! Key encodings and record helpers shared by the store's operations.

use super::Tables;
use annostore_core::clock::unix_ms;
use annostore_core::lifecycle;
use annostore_core::model::{Annotation, BBox, Operation, OperationKey, OperationStatus};
use annostore_core::store::{IndexWork, StoreError, StoreResult};
use fjall::OwnedWriteBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// The stored form of an annotation, after the 16-byte owner prefix: only what its
/// operation does not already say. The id is the key; type, version, pivot id and
/// operation id come from the owner's record. Written once per annotation, so the
/// names are short: about half the bytes of the full JSON (less to encode, journal,
/// flush and compact).
#[derive(Serialize)]
struct BodyRef<'a> {
    #[serde(rename = "m")]
    media_id: &'a str,
    #[serde(rename = "s")]
    start_ms: i64,
    #[serde(rename = "e")]
    end_ms: i64,
    #[serde(rename = "l", skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(rename = "c", skip_serializing_if = "Option::is_none")]
    confidence: Option<f32>,
    #[serde(rename = "b", skip_serializing_if = "Option::is_none")]
    bbox: Option<&'a BBox>,
    #[serde(rename = "v", skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a [f32]>,
    #[serde(rename = "d", skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "m")]
    media_id: String,
    #[serde(rename = "s")]
    start_ms: i64,
    #[serde(rename = "e")]
    end_ms: i64,
    #[serde(rename = "l", default)]
    label: Option<String>,
    #[serde(rename = "c", default)]
    confidence: Option<f32>,
    #[serde(rename = "b", default)]
    bbox: Option<BBox>,
    #[serde(rename = "v", default)]
    embedding: Option<Vec<f32>>,
    #[serde(rename = "d", default)]
    data: Option<Value>,
}

/// An `anns` value: the owner's id, then the body.
pub(crate) fn encode_annotation(a: &Annotation) -> StoreResult<Vec<u8>> {
    let mut v = Vec::with_capacity(160);
    v.extend_from_slice(a.operation_id.as_bytes());
    let body = BodyRef {
        media_id: &a.media_id,
        start_ms: a.start_ms,
        end_ms: a.end_ms,
        label: a.label.as_deref(),
        confidence: a.confidence,
        bbox: a.bbox.as_ref(),
        embedding: a.embedding.as_deref(),
        data: a.data.as_ref(),
    };
    serde_json::to_writer(&mut v, &body)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode annotation: {e}")))?;
    Ok(v)
}

/// The owner operation of an `anns` value.
pub(crate) fn owner_prefix(v: &[u8]) -> StoreResult<Uuid> {
    v.get(..16)
        .and_then(|b| Uuid::from_slice(b).ok())
        .ok_or_else(|| StoreError::Corrupt("annotation record too short".into()))
}

/// Rebuilds annotation `id` from its `anns` value and its owner operation.
pub(crate) fn decode_annotation(id: Uuid, v: &[u8], owner: &Operation) -> StoreResult<Annotation> {
    if owner_prefix(v)? != owner.id {
        return Err(StoreError::Corrupt(format!(
            "annotation {id} decoded with the wrong operation"
        )));
    }
    let body: Body = from_json("annotation", &v[16..])?;
    Ok(Annotation {
        id,
        media_id: body.media_id,
        start_ms: body.start_ms,
        end_ms: body.end_ms,
        label: body.label,
        confidence: body.confidence,
        bbox: body.bbox,
        embedding: body.embedding,
        data: body.data,
        annotation_type: owner.annotation_type.clone(),
        annotation_type_version: owner.annotation_type_version,
        pivot_id: owner.pivot_id.clone(),
        operation_id: owner.id,
    })
}

/// The operation that owns annotation `id`, if any (from the record's owner prefix).
pub(crate) fn owner_of(t: &Tables, id: &Uuid) -> StoreResult<Option<Uuid>> {
    match t.anns.get(id.as_bytes()).io()? {
        Some(v) => owner_prefix(&v).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn load_work(t: &Tables, id: &[u8]) -> StoreResult<Option<IndexWork>> {
    match t.pending.get(id).io()? {
        Some(v) => Ok(Some(from_json("index work", &v)?)),
        None => Ok(None),
    }
}

/// Whether the operation has pending index work other than `searchable`'s.
pub(crate) fn unsearchable_work(
    t: &Tables,
    op: Uuid,
    searchable: &std::collections::HashSet<Uuid>,
) -> StoreResult<bool> {
    for entry in t.pending_by_op.prefix(op.as_bytes()) {
        let key = entry.key().io()?;
        let work = uuid_of("pending_by_op key", key.get(16..).unwrap_or_default())?;
        if !searchable.contains(&work) {
            return Ok(true);
        }
    }
    Ok(false)
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

#[cfg(test)]
mod tests {
    use super::*;
    use annostore_core::lifecycle;
    use annostore_core::testkit::store::{annotation, start_request};

    fn operation(pivot: &str) -> Operation {
        let now = OffsetDateTime::UNIX_EPOCH;
        lifecycle::start(
            &start_request("objects", 3, pivot),
            Uuid::now_v7(),
            None,
            60,
            now,
        )
    }

    #[test]
    fn an_annotation_round_trips_through_its_record() {
        let op = operation("video-1");
        let mut a = annotation(&op, Uuid::new_v4(), "cat");
        a.bbox = Some(BBox {
            x: 0.1,
            y: 0.2,
            w: 0.3,
            h: 0.4,
        });
        let v = encode_annotation(&a).unwrap();
        assert_eq!(owner_prefix(&v).unwrap(), op.id);
        assert_eq!(decode_annotation(a.id, &v, &op).unwrap(), a);

        let mut bare = annotation(&op, Uuid::new_v4(), "x");
        (bare.label, bare.confidence, bare.embedding, bare.data) = (None, None, None, None);
        let v = encode_annotation(&bare).unwrap();
        assert_eq!(decode_annotation(bare.id, &v, &op).unwrap(), bare);
    }

    #[test]
    fn a_record_read_with_another_operation_is_corrupt() {
        let (op, other) = (operation("a"), operation("b"));
        let a = annotation(&op, Uuid::new_v4(), "cat");
        let v = encode_annotation(&a).unwrap();
        assert!(matches!(
            decode_annotation(a.id, &v, &other),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(owner_prefix(&v[..8]), Err(StoreError::Corrupt(_))));
    }
}
