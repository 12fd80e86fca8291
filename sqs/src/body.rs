//! The body of a retry-queue message: a compact JSON encoding of [`IndexWork`].
//!
//! SQS takes bodies of at most 256 KiB (262,144 bytes), and a batch may hold 10,000
//! annotation ids: as JSON strings they would take ~390 KB. So the ids travel as one
//! base64 string of their 16-byte forms (10,000 ids: 213,336 bytes), and the rest stays
//! readable:
//!
//! ```json
//! {"v":1,"id":"0190…","operation_id":"0190…","kind":"upsert","annotation_ids":"AZC…"}
//! ```
//!
//! `v` is the format version; a body of another version, or one that does not parse, is
//! [`QueueError::Corrupt`].

use annostore_core::queue::QueueError;
use annostore_core::store::{IndexWork, IndexWorkKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The largest body SQS accepts by default, and what moto and ElasticMQ take.
pub const MAX_BODY_BYTES: usize = 262_144;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Body {
    v: u32,
    id: Uuid,
    operation_id: Uuid,
    #[serde(flatten)]
    kind: Kind,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Kind {
    /// `annotation_ids`: base64 (standard, padded) of the ids' 16-byte forms, in order.
    Upsert { annotation_ids: String },
}

/// The body of `work`, or [`QueueError::TooLarge`] when SQS would refuse it.
pub fn encode(work: &IndexWork) -> Result<String, QueueError> {
    let kind = match &work.kind {
        IndexWorkKind::Upsert { annotation_ids } => {
            let mut raw = Vec::with_capacity(annotation_ids.len() * 16);
            for id in annotation_ids {
                raw.extend_from_slice(id.as_bytes());
            }
            Kind::Upsert {
                annotation_ids: STANDARD.encode(raw),
            }
        }
    };
    let body = serde_json::to_string(&Body {
        v: VERSION,
        id: work.id,
        operation_id: work.operation_id,
        kind,
    })
    .map_err(|e| QueueError::Corrupt(format!("cannot encode index work {}: {e}", work.id)))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(QueueError::TooLarge {
            bytes: body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(body)
}

/// The work in a body.
pub fn decode(body: &str) -> Result<IndexWork, QueueError> {
    let corrupt = |what: String| QueueError::Corrupt(what);
    let b: Body =
        serde_json::from_str(body).map_err(|e| corrupt(format!("not index work: {e}")))?;
    if b.v != VERSION {
        return Err(corrupt(format!(
            "body format version {} (this build reads {VERSION})",
            b.v
        )));
    }
    let kind = match b.kind {
        Kind::Upsert { annotation_ids } => {
            let raw = STANDARD
                .decode(annotation_ids)
                .map_err(|e| corrupt(format!("annotation_ids are not base64: {e}")))?;
            let (chunks, rest) = raw.as_chunks::<16>();
            if !rest.is_empty() {
                return Err(corrupt(format!(
                    "annotation_ids hold {} bytes, not a multiple of 16",
                    raw.len()
                )));
            }
            IndexWorkKind::Upsert {
                annotation_ids: chunks.iter().map(|c| Uuid::from_bytes(*c)).collect(),
            }
        }
    };
    Ok(IndexWork {
        id: b.id,
        operation_id: b.operation_id,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(n: usize) -> IndexWork {
        IndexWork {
            id: Uuid::now_v7(),
            operation_id: Uuid::now_v7(),
            kind: IndexWorkKind::Upsert {
                annotation_ids: (0..n).map(|_| Uuid::new_v4()).collect(),
            },
        }
    }

    #[test]
    fn round_trips() {
        for n in [0, 1, 2, 57] {
            let w = work(n);
            let body = encode(&w).unwrap();
            assert_eq!(decode(&body).unwrap(), w, "{n} ids");
        }
    }

    #[test]
    fn the_largest_batch_fits() {
        // Limits::max_batch is 10,000.
        let w = work(10_000);
        let body = encode(&w).unwrap();
        assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
        assert_eq!(decode(&body).unwrap(), w);
    }

    #[test]
    fn too_large_is_a_typed_error() {
        // 13,000 ids take 277,336 bytes of base64.
        match encode(&work(13_000)) {
            Err(QueueError::TooLarge { bytes, limit }) => {
                assert!(bytes > limit);
                assert_eq!(limit, MAX_BODY_BYTES);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_corrupt() {
        let w = work(1);
        let good = encode(&w).unwrap();
        let bad = [
            "not json".to_string(),
            "{}".to_string(),
            good.replace("\"v\":1", "\"v\":2"),
            good.replace("\"kind\":\"upsert\"", "\"kind\":\"delete\""),
            good.replace("\"annotation_ids\":\"", "\"annotation_ids\":\"!!"),
            serde_json::json!({
                "v": 1, "id": w.id, "operation_id": w.operation_id,
                "kind": "upsert", "annotation_ids": STANDARD.encode([1u8; 15]),
            })
            .to_string(),
        ];
        for body in bad {
            assert!(
                matches!(decode(&body), Err(QueueError::Corrupt(_))),
                "{body:.80}"
            );
        }
    }
}
