//! Scans beyond the conformance suite's sizes: annotations spread over many buckets,
//! and listing by a full key (its own partition), both paged.

mod common;

use annostore_core::model::{OperationFilter, ScanOrder};
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
        let page = s
            .list_operations(&key, ScanOrder::NewestFirst, before, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|o| o.id);
        seen.extend(page.into_iter().map(|o| o.id));
    }
    assert_eq!(seen, mine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_in_either_order_by_key_and_by_day() {
    let s = common::fresh_store("order").await;
    let mut k = Vec::new();
    let mut all = Vec::new();
    for i in 0..5 {
        let a = s
            .start_operation(start_request("objects", 1, "k"), 600, at(i))
            .await
            .unwrap();
        let b = s
            .start_operation(start_request("other", 1, "x"), 600, at(i))
            .await
            .unwrap();
        k.push(a.id);
        all.extend([a.id, b.id]);
    }
    let key = OperationFilter {
        annotation_type: Some("objects".into()),
        annotation_type_version: Some(1),
        pivot_id: Some("k".into()),
        ..Default::default()
    };
    let page_all = |filter: OperationFilter, order| {
        let s = s.clone();
        async move {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = s.list_operations(&filter, order, cursor, 2).await.unwrap();
                assert!(page.len() <= 2);
                if page.is_empty() {
                    break;
                }
                cursor = page.last().map(|o| o.id);
                seen.extend(page.into_iter().map(|o| o.id));
            }
            seen
        }
    };
    assert_eq!(page_all(key.clone(), ScanOrder::OldestFirst).await, k);
    assert_eq!(
        page_all(OperationFilter::default(), ScanOrder::OldestFirst).await,
        all
    );
    k.reverse();
    all.reverse();
    assert_eq!(page_all(key, ScanOrder::NewestFirst).await, k);
    assert_eq!(
        page_all(OperationFilter::default(), ScanOrder::NewestFirst).await,
        all
    );
}
