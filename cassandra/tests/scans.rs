//! Scans beyond the conformance suite's sizes: annotations spread over many buckets,
//! and listing by a full key (its own partition), both paged.

mod common;

use annostore_core::model::OperationFilter;
use annostore_core::store::Store;
use annostore_core::testkit::store::{annotation, at, start_request};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_of_operation_pages_across_buckets() {
    let s = common::fresh_store("pages").await;
    let op = s
        .start_operation(start_request("objects", 1, "p"), 600, at(0))
        .await
        .unwrap();
    // v4 and v7 ids: the bucket must not depend on the id's version.
    let mut all: Vec<_> = (0..300)
        .map(|i| {
            let id = if i % 2 == 0 {
                Uuid::new_v4()
            } else {
                Uuid::now_v7()
            };
            annotation(&op, id, "a")
        })
        .collect();
    for chunk in all.chunks(100) {
        s.upsert_annotations(op.id, chunk, at(1)).await.unwrap();
    }
    all.sort_by_key(|a| a.id);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.annotations_of_operation(op.id, after, 47).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 47);
        after = page.last().map(|a| a.id);
        seen.extend(page);
    }
    assert_eq!(seen, all, "every annotation once, in id order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_by_full_key_pages_newest_first() {
    let s = common::fresh_store("bykey").await;
    let mut mine = Vec::new();
    for i in 0..7 {
        mine.push(
            s.start_operation(start_request("objects", 1, "k"), 600, at(i))
                .await
                .unwrap()
                .id,
        );
        // Another key in between: must not show up.
        s.start_operation(start_request("objects", 1, "other"), 600, at(i))
            .await
            .unwrap();
    }
    mine.reverse();
    let key = OperationFilter {
        annotation_type: Some("objects".into()),
        annotation_type_version: Some(1),
        pivot_id: Some("k".into()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s.list_operations(&key, before, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|o| o.id);
        seen.extend(page.into_iter().map(|o| o.id));
    }
    assert_eq!(seen, mine);
}
