//! The index pipeline over the embedded engines: upserts are acknowledged before they
//! are indexed, so what the pipeline promises is tested with the index held or failing
//! on purpose (the real tantivy index behind a fault-injecting layer).

use annostore_core::clock::SystemClock;
use annostore_core::model::{SearchFilter, SearchRequest};
use annostore_core::service::{Engines, Service};
use annostore_core::testkit::faults::FaultyIndex;
use annostore_core::testkit::store::start_request;
use annostore_core::validate::Limits;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

mod common;

/// How long a test watches for something that must not happen.
const WATCH: Duration = Duration::from_millis(300);

async fn service(dir: &std::path::Path, in_flight: u32) -> (Service, Engines, Arc<FaultyIndex>) {
    let (_, engines) = common::service(dir, Arc::new(SystemClock)).await;
    let faulty = FaultyIndex::new(engines.index.clone());
    let engines = Engines {
        index: faulty.clone(),
        ..engines
    };
    let service = Service::new(engines.clone(), Limits::default(), Arc::new(SystemClock))
        .with_index_in_flight(in_flight);
    (service, engines, faulty)
}

/// Starts an operation and upserts two annotations into it, whose indexing the
/// index then holds: the batch is acknowledged and on its way.
async fn held_batch(service: &Service, faulty: &FaultyIndex) -> (Uuid, Uuid, Uuid) {
    let op = service
        .start(start_request("objects", 1, "p"))
        .await
        .unwrap();
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    faulty.hold();
    service
        .upsert(op.id, &[item(x, 0), item(y, 100)])
        .await
        .unwrap();
    faulty.held(1).await;
    (op.id, x, y)
}

/// True if `event` does not happen while the test watches.
async fn never(event: impl std::future::Future) -> bool {
    tokio::time::timeout(WATCH, event).await.is_err()
}

fn item(id: Uuid, start_ms: i64) -> Value {
    json!({"id": id, "media_id": "m", "start_ms": start_ms, "end_ms": start_ms + 10})
}

fn preview(op: Uuid) -> SearchRequest {
    SearchRequest {
        filter: SearchFilter {
            operation_id: Some(op),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_is_indexed_after_the_batch_it_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let (service, engines, faulty) = service(dir.path(), 100_000).await;
    let (op, x, y) = held_batch(&service, &faulty).await;
    // Acknowledged while the first batch is still on its way to the index.
    service.upsert(op, &[item(x, 500)]).await.unwrap();
    assert!(
        never(faulty.held(2)).await,
        "the rewrite overtook the batch it rewrites"
    );

    faulty.release();
    let page = service.search(&preview(op)).await.unwrap();
    assert_eq!(faulty.passed(), vec![vec![x, y], vec![x]]);
    assert_eq!(engines.index.count_operation(op).await.unwrap(), 2);
    let got: Vec<(Uuid, i64)> = page
        .annotations
        .iter()
        .map(|a| (a.id, a.start_ms))
        .collect();
    assert_eq!(got, vec![(y, 100), (x, 500)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_wait_when_the_index_falls_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _, faulty) = service(dir.path(), 1_000).await;
    let service = Arc::new(service);
    let op = service
        .start(start_request("objects", 1, "p"))
        .await
        .unwrap();
    let batch =
        |from: i64| -> Vec<Value> { (0..1_000).map(|i| item(Uuid::new_v4(), from + i)).collect() };

    faulty.hold();
    service.upsert(op.id, &batch(0)).await.unwrap();
    assert_eq!(service.index_in_flight(), 1_000);
    let mut second = {
        let (service, items) = (service.clone(), batch(10_000));
        tokio::spawn(async move { service.upsert(op.id, &items).await })
    };
    assert!(
        never(&mut second).await,
        "a batch went past a full pipeline"
    );
    faulty.release();
    assert_eq!(second.await.unwrap().unwrap(), 1_000);
    assert_eq!(previewed(&service, op.id).await, 2_000);
}

/// Waits for the run's indexing and counts what a preview shows.
async fn previewed(service: &Service, op: Uuid) -> usize {
    let mut req = preview(op);
    req.limit = Some(1_000);
    let mut n = 0;
    loop {
        let page = service.search(&req).await.unwrap();
        n += page.annotations.len();
        match page.next_page_token {
            Some(t) => req.page_token = Some(t),
            None => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_waits_for_indexing_and_retries_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (service, engines, faulty) = service(dir.path(), 100_000).await;
    let service = Arc::new(service);
    let op = service
        .start(start_request("objects", 1, "p"))
        .await
        .unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();

    // The first batch fails in the index (it goes to the retry queue); the second is held.
    faulty.fail_next(1);
    service.upsert(op.id, &[item(ids[0], 0)]).await.unwrap();
    faulty.hold();
    let items = [item(ids[1], 10), item(ids[2], 20)];
    service.upsert(op.id, &items).await.unwrap();
    faulty.held(1).await;

    let mut finish = {
        let service = service.clone();
        tokio::spawn(async move { service.finish(op.id).await })
    };
    assert!(
        never(&mut finish).await,
        "finished while a batch was still on its way"
    );
    faulty.release();
    let finish = finish.await.unwrap().unwrap();
    assert!(finish.active);
    assert_eq!(engines.index.count_operation(op.id).await.unwrap(), 3);
    let page = service.search(&SearchRequest::default()).await.unwrap();
    let got: Vec<Uuid> = page.annotations.iter().map(|a| a.id).collect();
    assert_eq!(got, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waits_for_the_operations_batches_on_their_way() {
    let dir = tempfile::tempdir().unwrap();
    let (service, engines, faulty) = service(dir.path(), 100_000).await;
    let service = Arc::new(service);
    let (op, x, y) = held_batch(&service, &faulty).await;
    // The retry queue (or a finish) replays that batch's work while it is on its way.
    let work = engines.store.pending_work(Some(op), 10).await.unwrap();
    assert_eq!(work.len(), 1);
    let mut replay = {
        let (service, work) = (service.clone(), work[0].clone());
        tokio::spawn(async move { service.reconciler().apply(&work).await })
    };
    assert!(
        never(faulty.held(2)).await,
        "the replay went to the index beside the batch it replays"
    );
    assert!(
        never(&mut replay).await,
        "the replay ended before the batch on its way"
    );
    faulty.release();
    replay.await.unwrap().unwrap();
    assert_eq!(faulty.passed(), vec![vec![x, y], vec![x, y]]);
    assert_eq!(engines.index.count_operation(op).await.unwrap(), 2);
}
