//! Page tokens: opaque to clients, validated on return.
//!
//! A search token carries the position to continue after, a fingerprint of the request
//! it was made for (filters, order, nearest-neighbour query), so a token used with
//! another request (or edited) is a 400, not a silently wrong page, and the fingerprint
//! of the view (the set of visible runs) that its pages come from. The service keeps
//! recent views in memory, so the next page is read from the same view even if a run
//! finished in between; when that view is no longer held, the page comes from the
//! current view and says so (`view_changed`).

use crate::error::Error;
use crate::index::Position;
use crate::model::{Knn, ScanOrder, SearchFilter, SortOrder};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Tokens longer than this are refused before decoding.
const MAX_TOKEN_LEN: usize = 2_048;

/// The version of the token format.
const TOKEN_VERSION: u8 = 2;

#[derive(Serialize, Deserialize)]
struct SearchToken {
    v: u8,
    f: u64,
    after: Position,
    view: u64,
}

/// Where a page continues: after `after`, in the view with fingerprint `view`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub after: Position,
    pub view: u64,
}

/// What a token is bound to: everything in a search request but its paging.
#[derive(Serialize)]
pub struct RequestShape<'a> {
    pub filter: &'a SearchFilter,
    pub order: SortOrder,
    pub knn: Option<&'a Knn>,
}

pub fn encode_search(shape: &RequestShape<'_>, cursor: &Cursor) -> String {
    let token = SearchToken {
        v: TOKEN_VERSION,
        f: fingerprint(shape),
        after: cursor.after.clone(),
        view: cursor.view,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

pub fn decode_search(shape: &RequestShape<'_>, token: &str) -> Result<Cursor, Error> {
    let bad = || Error::BadRequest("page_token is not valid for this search".into());
    if token.len() > MAX_TOKEN_LEN {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let t: SearchToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.v != TOKEN_VERSION || t.f != fingerprint(shape) {
        return Err(bad());
    }
    if t.after.rank.is_some_and(|r| !r.is_finite()) {
        return Err(bad());
    }
    Ok(Cursor {
        after: t.after,
        view: t.view,
    })
}

/// A token for the next page of an operation listing: the last id, and the order the
/// listing walks (a token of one order is refused by the other).
pub fn encode_operations(last: Uuid, order: ScanOrder) -> String {
    match order {
        // 16 bytes, as tokens were before listings had an order.
        ScanOrder::NewestFirst => URL_SAFE_NO_PAD.encode(last.as_bytes()),
        ScanOrder::OldestFirst => {
            let mut bytes = vec![OLDEST_FIRST];
            bytes.extend_from_slice(last.as_bytes());
            URL_SAFE_NO_PAD.encode(bytes)
        }
    }
}

pub fn decode_operations(token: &str, order: ScanOrder) -> Result<Uuid, Error> {
    let bad = || Error::BadRequest("page_token is not valid for this listing".into());
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let id = match (order, bytes.as_slice()) {
        (ScanOrder::NewestFirst, id) if id.len() == 16 => id,
        (ScanOrder::OldestFirst, [OLDEST_FIRST, id @ ..]) => id,
        _ => return Err(bad()),
    };
    Uuid::from_slice(id).map_err(|_| bad())
}

const OLDEST_FIRST: u8 = 1;

/// FNV-1a over the request's canonical JSON: stable across processes and versions,
/// which `std`'s hasher is not. Hand-written because it is six lines.
fn fingerprint(shape: &RequestShape<'_>) -> u64 {
    let bytes = serde_json::to_vec(shape).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SortKey;

    #[test]
    fn tokens_round_trip_and_bind_to_their_request() {
        let f = SearchFilter {
            media_id: Some("m".into()),
            ..Default::default()
        };
        let shape = |filter, order| RequestShape {
            filter,
            order,
            knn: None,
        };
        let cursor = Cursor {
            after: Position {
                rank: Some(0.5),
                key: SortKey {
                    media_id: "m".into(),
                    start_ms: 5,
                    id: Uuid::now_v7(),
                },
            },
            view: 42,
        };
        let t = encode_search(&shape(&f, SortOrder::Confidence), &cursor);
        assert_eq!(
            decode_search(&shape(&f, SortOrder::Confidence), &t).unwrap(),
            cursor
        );
        let other = SearchFilter::default();
        assert!(decode_search(&shape(&other, SortOrder::Confidence), &t).is_err());
        assert!(decode_search(&shape(&f, SortOrder::Time), &t).is_err());
        assert!(decode_search(&shape(&f, SortOrder::Confidence), "garbage!").is_err());
        let mut tampered = t.clone();
        tampered.insert(3, 'A');
        assert!(decode_search(&shape(&f, SortOrder::Confidence), &tampered).is_err());
    }
}
