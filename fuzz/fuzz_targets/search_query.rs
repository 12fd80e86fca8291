//! A search request body, from raw bytes, as the API reads it (`SearchRequest` from
//! JSON), then the service's filter checks against fixed registered types
//! (`Service::check_search_filter`) and, for a checked filter, the search semantics
//! (`query::matches`) on fixed annotations.
//! Must hold: no panic; a refused filter names at least one problem; an accepted one
//! keeps every limit, its text fields are filled in from the schemas, it survives a
//! JSON round trip unchanged and is accepted again, and a page token made for it
//! decodes for it.

#![no_main]

#[path = "common.rs"]
mod common;

use annostore_core::Error;
use annostore_core::index::Position;
use annostore_core::model::{SearchFilter, SearchRequest, SortKey, SortOrder};
use annostore_core::page::{self, Cursor, RequestShape};
use annostore_core::query;
use annostore_core::service::Service;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

fuzz_target!(|bytes: &[u8]| {
    let Ok(req) = serde_json::from_slice::<SearchRequest>(bytes) else {
        return; // 400 or 422 from the extractor
    };
    let types = [common::annotation_type(), common::strict_type()];
    let limits = common::limits();
    let checked = match Service::check_search_filter(&req.filter, &types, &limits) {
        Err(Error::Invalid(errors)) => {
            assert!(!errors.is_empty(), "refused without a reason");
            return;
        }
        Err(e) => panic!("a filter check answered {e:?}, not a 422"),
        Ok(f) => f,
    };
    let f = &req.filter;
    if let Some(r) = &f.time_range {
        assert!(r.start_ms <= r.end_ms);
    }
    for c in [f.min_confidence, f.max_confidence].into_iter().flatten() {
        assert!((0.0..=1.0).contains(&c));
    }
    for list in [&f.media_ids, &f.annotation_types, &f.labels]
        .into_iter()
        .flatten()
    {
        assert!(!list.is_empty() && list.len() <= limits.max_filter_values);
        assert!(list.iter().all(|v| v.len() <= limits.max_string_bytes));
    }
    if let Some(r) = &f.region {
        assert!(r.check().is_ok());
    }
    if let Some(t) = &checked.text {
        assert!(!t.fields.is_empty(), "text fields are filled in");
        assert!(t.query.len() <= limits.max_string_bytes);
    }
    if let Some(d) = &f.data {
        assert!(!d.is_empty() && d.len() <= limits.max_data_conditions);
    }
    // The semantics answer for anything the checks let through.
    for a in common::annotations() {
        let _ = query::matches(&checked, &a);
    }
    // What was accepted reads back the same and is accepted again.
    let json = serde_json::to_vec(f).expect("a filter serialises");
    let again: SearchFilter = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("{} does not read back: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(&again, f);
    assert_eq!(
        Service::check_search_filter(&again, &types, &limits)
            .ok()
            .as_ref(),
        Some(&checked)
    );
    // A token made for this request decodes for it.
    let shape = RequestShape {
        filter: f,
        order: req.sort.unwrap_or(SortOrder::Time),
        knn: req.knn.as_ref(),
    };
    let cursor = Cursor {
        after: Position {
            rank: None,
            key: SortKey {
                media_id: "m".into(),
                start_ms: 1,
                id: Uuid::nil(),
            },
        },
        view: 7,
    };
    let token = page::encode_search(&shape, &cursor);
    assert_eq!(page::decode_search(&shape, &token).unwrap(), cursor);
    if let Some(t) = &req.page_token {
        let _ = page::decode_search(&shape, t);
    }
});
