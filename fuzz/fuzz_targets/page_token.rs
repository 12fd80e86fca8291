//! Page tokens as clients send them back: `page::decode_search` against a fixed
//! request, and `page::decode_operations`. The first byte picks what the rest is:
//! 0: the token itself, as text; 1: the bytes inside the base64 (so the fuzzer reaches
//! the JSON decoder); 2: a JSON object that gets the right version and request
//! fingerprint (so it reaches the checks past them).
//! Must hold: no panic; over-long tokens are refused; an accepted token's position is
//! finite and encodes back to a token that decodes to the same cursor; a token from
//! another request is refused.

#![no_main]

#[path = "common.rs"]
mod common;

use annostore_core::index::Position;
use annostore_core::model::{ScanOrder, SearchFilter, SortKey, SortOrder};
use annostore_core::page::{self, Cursor, RequestShape};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use uuid::Uuid;

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else {
        return;
    };
    let filter = SearchFilter {
        media_id: Some("movie-42".into()),
        ..Default::default()
    };
    let shape = RequestShape {
        filter: &filter,
        order: SortOrder::Confidence,
        knn: None,
    };
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => URL_SAFE_NO_PAD.encode(rest),
        _ => {
            let Ok(Value::Object(mut t)) = serde_json::from_slice::<Value>(rest) else {
                return;
            };
            let real = token_json(&shape);
            t.insert("v".into(), real["v"].clone());
            t.insert("f".into(), real["f"].clone());
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&t).unwrap())
        }
    };
    let got = page::decode_search(&shape, &token);
    if token.len() > 2_048 {
        assert!(got.is_err(), "an over-long token was accepted");
    }
    if let Ok(cursor) = got {
        assert!(cursor.after.rank.is_none_or(f32::is_finite));
        let again = page::encode_search(&shape, &cursor);
        assert_eq!(page::decode_search(&shape, &again).unwrap(), cursor);
        // Bound to its request: the same position under another order is refused.
        let other = RequestShape {
            filter: &filter,
            order: SortOrder::Time,
            knn: None,
        };
        assert!(page::decode_search(&other, &again).is_err());
    }
    // Operation listings: a token reads back as itself in its own order, and never
    // in the other one (tokens are bound to the order they were made for).
    for (order, other) in [
        (ScanOrder::NewestFirst, ScanOrder::OldestFirst),
        (ScanOrder::OldestFirst, ScanOrder::NewestFirst),
    ] {
        if let Ok(last) = page::decode_operations(&token, order) {
            let again = page::encode_operations(last, order);
            assert_eq!(page::decode_operations(&again, order).unwrap(), last);
            assert!(page::decode_operations(&again, other).is_err());
        }
    }
});

/// A real token's JSON for `shape`, to copy its version and fingerprint from.
fn token_json(shape: &RequestShape<'_>) -> Value {
    let cursor = Cursor {
        after: Position {
            rank: Some(0.5),
            key: SortKey {
                media_id: "movie-42".into(),
                start_ms: 0,
                id: Uuid::nil(),
            },
        },
        view: 0,
    };
    let token = page::encode_search(shape, &cursor);
    let bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        v.get("f").is_some(),
        "tokens carry a fingerprint: {}",
        json!(v)
    );
    v
}
