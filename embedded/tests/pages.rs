//! Page tokens pin the view of their first page: a run that finishes between two pages
//! does not change what the later pages show, and when the view is no longer held (a
//! node that never saw it, or one restarted) the page says `view_changed`.

use annostore_core::clock::SystemClock;
use annostore_core::model::{SearchFilter, SearchPage, SearchRequest, SortKey, StartOperation};
use annostore_core::service::Service;
use annostore_core::validate::Limits;
use serde_json::json;
use std::sync::Arc;

mod common;

async fn run(service: &Service, label: &str) -> uuid::Uuid {
    let op = service
        .start(StartOperation {
            producer: None,
            annotation_type: "objects".into(),
            annotation_type_version: 1,
            pivot_id: "video".into(),
            lease_seconds: None,
            metadata: None,
        })
        .await
        .expect("start");
    let items: Vec<_> = (0..10)
        .map(|i| json!({"media_id": "v", "start_ms": i * 1000, "end_ms": i * 1000 + 500, "label": label}))
        .collect();
    service.upsert(op.id, &items).await.expect("upsert");
    service.finish(op.id).await.expect("finish");
    op.id
}

fn labels(page: &SearchPage) -> Vec<String> {
    page.annotations
        .iter()
        .map(|a| a.label.clone().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_keeps_its_first_pages_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    run(&service, "first").await;
    let req = SearchRequest {
        filter: SearchFilter {
            media_id: Some("v".into()),
            ..Default::default()
        },
        limit: Some(4),
        ..Default::default()
    };
    let page1 = service.search(&req).await.expect("page 1");
    assert_eq!(labels(&page1), vec!["first"; 4]);
    let token = page1.next_page_token.clone().expect("more pages");

    // A second run of the key finishes between the pages.
    run(&service, "second").await;
    let fresh = service.search(&req).await.expect("a new search");
    assert_eq!(
        labels(&fresh),
        vec!["second"; 4],
        "new searches see the new run"
    );

    // The token's pages still read the first run, to its end.
    let mut next = SearchRequest {
        page_token: Some(token.clone()),
        ..req.clone()
    };
    let mut rest = Vec::new();
    loop {
        let page = service.search(&next).await.expect("next page");
        assert!(!page.view_changed, "the view was held");
        rest.extend(labels(&page));
        match page.next_page_token {
            Some(t) => next.page_token = Some(t),
            None => break,
        }
    }
    assert_eq!(rest, vec!["first"; 6], "later pages mixed runs");

    // A node that never saw the first view (here: a second service on the same
    // engines) continues in the current view and says so.
    let other = Service::new(engines, Limits::default(), Arc::new(SystemClock));
    let page = other
        .search(&SearchRequest {
            page_token: Some(token),
            ..req.clone()
        })
        .await
        .expect("page on another node");
    assert!(page.view_changed, "a page from another view must say so");
    assert_eq!(labels(&page), vec!["second"; 4]);
    let cursor = page1.annotations.last().map(SortKey::of);
    let first = page.annotations.first().map(SortKey::of);
    assert!(
        first > cursor,
        "it continues after the cursor: {first:?} after {cursor:?}"
    );
}
