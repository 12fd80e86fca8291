//! An upsert body, from raw bytes, as the API reads it: JSON into `{"annotations": [..]}`
//! (unknown fields refused), then `validate::annotation_batch` against a fixed type.
//! Must hold: no panic; a refused batch names at least one problem, each with the index
//! of a real item; an accepted batch has one input per item, within every limit, and
//! reads back the same from its own JSON.

#![no_main]

#[path = "common.rs"]
mod common;

use annostore_core::model::AnnotationInput;
use annostore_core::validate::{self, Limits};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertBody {
    annotations: Vec<Value>,
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(body) = serde_json::from_slice::<UpsertBody>(bytes) else {
        return; // 400 or 422 from the extractor
    };
    let ty = common::compiled();
    let limits = common::limits();
    match validate::annotation_batch(&body.annotations, &ty, &limits) {
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without a reason");
            for e in &errors {
                let i = e.index.expect("batch errors carry the item's index");
                assert!(i < body.annotations.len(), "index {i} out of the batch");
                assert!(!e.reason.is_empty());
            }
        }
        Ok(inputs) => {
            assert_eq!(inputs.len(), body.annotations.len());
            for (item, input) in body.annotations.iter().zip(&inputs) {
                within_limits(input, &limits);
                // What was accepted reads back the same from its own JSON.
                let again = serde_json::to_value(input).expect("an input serialises");
                let reread = validate::annotation(&again, &ty, &limits)
                    .unwrap_or_else(|e| panic!("{again} was accepted once, then {e:?}"));
                assert_eq!(&reread, input, "from {item}");
            }
        }
    }
});

fn within_limits(a: &AnnotationInput, limits: &Limits) {
    let name_ok = |s: &str| {
        !s.is_empty() && s.len() <= limits.max_string_bytes && !s.chars().any(char::is_control)
    };
    assert!(name_ok(&a.media_id), "media_id {:?}", a.media_id);
    assert!(0 <= a.start_ms && a.start_ms <= a.end_ms && a.end_ms <= 9_000_000_000_000);
    if let Some(l) = &a.label {
        assert!(l.len() <= limits.max_string_bytes);
    }
    let unit =
        |x: f32| x.is_finite() && (0.0..=1.0).contains(&x) && x.to_bits() != (-0.0f32).to_bits();
    if let Some(c) = a.confidence {
        assert!(unit(c), "confidence {c}");
    }
    if let Some(b) = &a.bbox {
        assert!([b.x, b.y, b.w, b.h].into_iter().all(unit), "{b:?}");
        assert!(b.x + b.w <= 1.0 + 1e-4 && b.y + b.h <= 1.0 + 1e-4, "{b:?}");
    }
    if let Some(e) = &a.embedding {
        assert_eq!(e.len(), 4);
        assert!(e.iter().all(|x| x.is_finite()), "{e:?}");
    }
    if let Some(d) = &a.data {
        assert!(!d.is_null());
        assert!(validate::depth(d) <= limits.max_data_depth);
        assert!(serde_json::to_vec(d).unwrap().len() <= limits.max_data_bytes);
    }
}
