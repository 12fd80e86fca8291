//! A compact binary form of an annotation, read back without parsing JSON: the copy
//! the index keeps of each document ([`crate::index`]), so a search answers without a
//! store read per hit.
//!
//! `[version 1][flags][id 16][operation id 16][start_ms i64][end_ms i64]
//! [type version u32][media id][type][pivot id]`, then, as the flags say, `[label]`,
//! `[confidence f32]`, `[bbox 4 x f32]`, `[data: JSON]`, and last `[embedding: count u32,
//! then f32s]`, so a reader that leaves the vector out stops before it. Strings and JSON
//! are a u32 length and the bytes; numbers are little-endian. Hand-written rather than a
//! serde format: the layout is the contract (vectors as raw f32, skippable), and it is
//! a few dozen lines.

use annostore_core::model::{Annotation, BBox};
use uuid::Uuid;

const VERSION: u8 = 1;
const LABEL: u8 = 1;
const CONFIDENCE: u8 = 1 << 1;
const BOX: u8 = 1 << 2;
const DATA: u8 = 1 << 3;
const EMBEDDING: u8 = 1 << 4;

#[derive(Debug, thiserror::Error)]
#[error("an annotation's binary form is damaged: {0}")]
pub struct CodecError(&'static str);

/// Appends `a`'s binary form to `out`.
pub(crate) fn encode(a: &Annotation, out: &mut Vec<u8>) {
    let mut flags = 0;
    for (present, flag) in [
        (a.label.is_some(), LABEL),
        (a.confidence.is_some(), CONFIDENCE),
        (a.bbox.is_some(), BOX),
        (a.data.is_some(), DATA),
        (a.embedding.is_some(), EMBEDDING),
    ] {
        if present {
            flags |= flag;
        }
    }
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(a.id.as_bytes());
    out.extend_from_slice(a.operation_id.as_bytes());
    out.extend_from_slice(&a.start_ms.to_le_bytes());
    out.extend_from_slice(&a.end_ms.to_le_bytes());
    out.extend_from_slice(&a.annotation_type_version.to_le_bytes());
    put_bytes(out, a.media_id.as_bytes());
    put_bytes(out, a.annotation_type.as_bytes());
    put_bytes(out, a.pivot_id.as_bytes());
    if let Some(l) = &a.label {
        put_bytes(out, l.as_bytes());
    }
    if let Some(c) = a.confidence {
        out.extend_from_slice(&c.to_le_bytes());
    }
    if let Some(b) = &a.bbox {
        for x in [b.x, b.y, b.w, b.h] {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    if let Some(d) = &a.data {
        // Writing a `Value` into a Vec cannot fail.
        let json = serde_json::to_vec(d).unwrap_or_default();
        put_bytes(out, &json);
    }
    if let Some(v) = &a.embedding {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Bounded far below 4 GiB by the request limits.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads an annotation back; with `embedding` false, leaves its vector out (unread).
pub(crate) fn decode(bytes: &[u8], embedding: bool) -> Result<Annotation, CodecError> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return Err(CodecError("unknown version"));
    }
    let flags = r.u8()?;
    let id = r.uuid()?;
    let operation_id = r.uuid()?;
    let start_ms = i64::from_le_bytes(r.array()?);
    let end_ms = i64::from_le_bytes(r.array()?);
    let annotation_type_version = u32::from_le_bytes(r.array()?);
    let media_id = r.string()?;
    let annotation_type = r.string()?;
    let pivot_id = r.string()?;
    let label = (flags & LABEL != 0).then(|| r.string()).transpose()?;
    let confidence = (flags & CONFIDENCE != 0).then(|| r.f32()).transpose()?;
    let bbox = (flags & BOX != 0)
        .then(|| {
            Ok(BBox {
                x: r.f32()?,
                y: r.f32()?,
                w: r.f32()?,
                h: r.f32()?,
            })
        })
        .transpose()?;
    let data = (flags & DATA != 0)
        .then(|| serde_json::from_slice(r.bytes()?).map_err(|_| CodecError("data is not JSON")))
        .transpose()?;
    let embedding = (embedding && flags & EMBEDDING != 0)
        .then(|| {
            let n = u32::from_le_bytes(r.array()?) as usize;
            let raw = r.take(n.checked_mul(4).ok_or(CodecError("vector too long"))?)?;
            Ok(raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        })
        .transpose()?;
    Ok(Annotation {
        id,
        media_id,
        start_ms,
        end_ms,
        label,
        confidence,
        bbox,
        embedding,
        data,
        annotation_type,
        annotation_type_version,
        pivot_id,
        operation_id,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn f32(&mut self) -> Result<f32, CodecError> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    fn uuid(&mut self) -> Result<Uuid, CodecError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CodecError("a string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Annotation {
        Annotation {
            id: Uuid::new_v4(),
            media_id: "movie-42".into(),
            start_ms: -5,
            end_ms: i64::MAX,
            label: Some("person é".into()),
            confidence: Some(0.93),
            bbox: Some(BBox {
                x: 0.1,
                y: 0.2,
                w: 0.3,
                h: f32::NAN,
            }),
            embedding: Some(vec![0.5, -1.25, f32::MIN_POSITIVE]),
            data: Some(json!({"track": 7, "caption": "a \"red\" car", "n": [1, 2.5]})),
            annotation_type: "objects".into(),
            annotation_type_version: 3,
            pivot_id: "p".into(),
            operation_id: Uuid::now_v7(),
        }
    }

    fn roundtrip(a: &Annotation, embedding: bool) -> Annotation {
        let mut out = Vec::new();
        encode(a, &mut out);
        decode(&out, embedding).unwrap()
    }

    #[test]
    fn every_field_round_trips() {
        let a = full();
        let b = roundtrip(&a, true);
        // NaN differs from itself: compare the rest, and its bits.
        assert_eq!(b.bbox.map(|b| b.h.to_bits()), a.bbox.map(|b| b.h.to_bits()));
        let nan_free = |mut x: Annotation| {
            if let Some(b) = &mut x.bbox {
                b.h = 0.0;
            }
            x
        };
        assert_eq!(nan_free(b), nan_free(a));
    }

    #[test]
    fn absent_fields_stay_absent_and_the_vector_can_be_left_out() {
        let mut a = full();
        (a.label, a.confidence, a.bbox, a.data) = (None, None, None, None);
        assert_eq!(roundtrip(&a, true), a);
        let mut without = a.clone();
        without.embedding = None;
        assert_eq!(roundtrip(&a, false), without);
        a.embedding = Some(vec![]);
        assert_eq!(roundtrip(&a, true), a);
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode(&full(), &mut out);
        for n in 0..out.len() {
            assert!(decode(&out[..n], true).is_err(), "cut at {n}");
        }
        out[0] = 9;
        assert!(decode(&out, true).is_err());
    }
}
