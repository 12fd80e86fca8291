//! Page tokens: opaque to clients, validated on return.
//!
//! A search token carries the position to continue after and a fingerprint of the
//! filters it was made for, so a token used with other filters (or edited) is a 400,
//! not a silently wrong page.

use crate::error::Error;
use crate::model::{SearchFilter, SortKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Tokens longer than this are refused before decoding.
const MAX_TOKEN_LEN: usize = 2_048;

#[derive(Serialize, Deserialize)]
struct SearchToken {
    v: u8,
    f: u64,
    after: SortKey,
}

pub fn encode_search(filter: &SearchFilter, after: &SortKey) -> String {
    let token = SearchToken {
        v: 1,
        f: fingerprint(filter),
        after: after.clone(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

pub fn decode_search(filter: &SearchFilter, token: &str) -> Result<SortKey, Error> {
    let bad = || Error::BadRequest("page_token is not valid for this search".into());
    if token.len() > MAX_TOKEN_LEN {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let t: SearchToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.v != 1 || t.f != fingerprint(filter) {
        return Err(bad());
    }
    Ok(t.after)
}

pub fn encode_operations(last: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

pub fn decode_operations(token: &str) -> Result<Uuid, Error> {
    let bad = || Error::BadRequest("page_token is not valid for this listing".into());
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    Uuid::from_slice(&bytes).map_err(|_| bad())
}

/// FNV-1a over the filters' canonical JSON: stable across processes and versions,
/// which `std`'s hasher is not. Hand-written because it is six lines.
fn fingerprint(filter: &SearchFilter) -> u64 {
    let bytes = serde_json::to_vec(filter).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bind_to_their_filter() {
        let f = SearchFilter {
            media_id: Some("m".into()),
            ..Default::default()
        };
        let key = SortKey {
            media_id: "m".into(),
            start_ms: 5,
            id: Uuid::now_v7(),
        };
        let t = encode_search(&f, &key);
        assert_eq!(decode_search(&f, &t).unwrap(), key);
        let other = SearchFilter::default();
        assert!(decode_search(&other, &t).is_err());
        assert!(decode_search(&f, "garbage!").is_err());
        let mut tampered = t.clone();
        tampered.insert(3, 'A');
        assert!(decode_search(&f, &tampered).is_err());
    }
}
