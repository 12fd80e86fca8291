//! What a node does before serving (`Service::recover`): an index that may lack what
//! the store holds is refilled from it, whether it was lost, found in an older format,
//! or its refill was cut short.

use annostore_core::clock::SystemClock;
use annostore_core::index::Index;
use annostore_core::model::{OperationStatus, SearchFilter, SearchRequest};
use annostore_core::testkit::store::start_request;
use annostore_embedded::index::{IndexOptions, TantivyIndex};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

mod common;

/// A finished run of 30 annotations on media `m` and a STARTED one of 5, then the
/// engines closed.
async fn write_runs(dir: &Path) -> (uuid::Uuid, uuid::Uuid) {
    let (service, engines) = common::service(dir, Arc::new(SystemClock)).await;
    service.recover().await.unwrap();
    let finished = service
        .start(start_request("objects", 1, "a"))
        .await
        .unwrap();
    let items: Vec<_> = (0..30)
        .map(|i| json!({"media_id": "m", "start_ms": i * 100, "end_ms": i * 100 + 50}))
        .collect();
    service.upsert(finished.id, &items).await.unwrap();
    service.finish(finished.id).await.unwrap();
    let started = service
        .start(start_request("objects", 1, "b"))
        .await
        .unwrap();
    let items: Vec<_> = (0..5)
        .map(|i| json!({"media_id": "n", "start_ms": i, "end_ms": i + 1}))
        .collect();
    service.upsert(started.id, &items).await.unwrap();
    service.settle().await;
    drop(service);
    drop(engines);
    (finished.id, started.id)
}

async fn visible_on_m(service: &annostore_core::service::Service) -> usize {
    let page = service
        .search(&SearchRequest {
            filter: SearchFilter {
                media_id: Some("m".into()),
                ..Default::default()
            },
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    page.annotations.len()
}

async fn preview(service: &annostore_core::service::Service, op: uuid::Uuid) -> usize {
    let page = service
        .search(&SearchRequest {
            filter: SearchFilter {
                operation_id: Some(op),
                ..Default::default()
            },
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    page.annotations.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_index_is_refilled_from_the_store_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (finished, started) = write_runs(dir.path()).await;
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();

    let (service, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    service.warm_up().await.unwrap();
    assert!(engines.index.needs_rebuild());
    assert_eq!(visible_on_m(&service).await, 0, "the new index is empty");
    service.recover().await.unwrap();
    assert!(!engines.index.needs_rebuild());
    assert_eq!(visible_on_m(&service).await, 30);
    assert_eq!(preview(&service, started).await, 5);
    assert_eq!(engines.index.count_operation(finished).await.unwrap(), 30);
    let op = service.operation(started).await.unwrap();
    assert_eq!(op.status, OperationStatus::Started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_an_older_format_is_emptied_and_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let (finished, _) = write_runs(dir.path()).await;
    // An index whose schema is not today's, where the index lives.
    let index_dir = dir.path().join("index");
    std::fs::remove_dir_all(&index_dir).unwrap();
    std::fs::create_dir_all(&index_dir).unwrap();
    {
        let mut b = tantivy::schema::SchemaBuilder::new();
        b.add_u64_field("older", tantivy::schema::FAST);
        tantivy::Index::create_in_dir(&index_dir, b.build()).unwrap();
    }
    let (service, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    service.warm_up().await.unwrap();
    assert!(engines.index.needs_rebuild());
    service.recover().await.unwrap();
    assert_eq!(visible_on_m(&service).await, 30);
    assert_eq!(engines.index.count_operation(finished).await.unwrap(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_cut_short_is_done_again_and_a_refilled_index_is_not() {
    let dir = tempfile::tempdir().unwrap();
    write_runs(dir.path()).await;
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    // Opened and closed without a refill: the next open still asks for one.
    drop(TantivyIndex::open(&dir.path().join("index"), IndexOptions::default()).unwrap());
    let index = TantivyIndex::open(&dir.path().join("index"), IndexOptions::default()).unwrap();
    assert!(index.needs_rebuild());
    drop(index);

    let (service, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    service.warm_up().await.unwrap();
    service.recover().await.unwrap();
    assert_eq!(visible_on_m(&service).await, 30);
    drop(service);
    drop(engines);
    let index = TantivyIndex::open(&dir.path().join("index"), IndexOptions::default()).unwrap();
    assert!(!index.needs_rebuild(), "refilled once, kept");
}
