//! The reconciler's rounds on the embedded engines: failed index work is retried until
//! the index has it, work whose message was never sent is found by the sweep, and the
//! audit rebuilds what the index lost.

use annostore_core::cache::MokaOperationCache;
use annostore_core::clock::{Clock, ManualClock, SystemClock};
use annostore_core::events::LocalEventBus;
use annostore_core::index::{Index, batch_version, replay_version};
use annostore_core::model::{Annotation, SearchRequest, TypeDefinition};
use annostore_core::service::{Engines, Service};
use annostore_core::testkit::faults::FaultyIndex;
use annostore_core::testkit::store::{annotation, start_request};
use annostore_core::validate::Limits;
use annostore_embedded::index::{IndexOptions, TantivyIndex};
use annostore_embedded::queue::QueueOptions;
use annostore_embedded::store::FjallStore;
use annostore_reconciler::{ReconcilerConfig, Worker};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

fn items(media: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"media_id": media, "start_ms": i * 10, "end_ms": i * 10 + 5}))
        .collect()
}

/// A service on the embedded store and queue, over `index`.
async fn service(dir: &Path, index: Arc<dyn Index>) -> (Arc<Service>, Engines) {
    let engines = annostore_embedded::open(dir).expect("open the embedded engines");
    with_engines(Engines { index, ..engines }).await
}

async fn with_engines(engines: Engines) -> (Arc<Service>, Engines) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let service = Service::new(engines.clone(), Limits::default(), clock);
    let def = TypeDefinition {
        schema: json!({}),
        embedding_dim: None,
    };
    service.put_type("objects", 1, def).await.unwrap();
    (Arc::new(service), engines)
}

fn worker(service: &Arc<Service>) -> Worker {
    Worker::new(
        service.clone(),
        Arc::new(SystemClock),
        ReconcilerConfig::default(),
    )
}

async fn visible(service: &Service) -> usize {
    let page = service.search(&SearchRequest::default()).await.unwrap();
    page.annotations.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_index_work_is_retried_until_the_index_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let tantivy = TantivyIndex::open(&dir.path().join("own-index"), IndexOptions::default())
        .expect("open the index");
    let faulty = FaultyIndex::new(Arc::new(tantivy));
    // The queue's clock is the test's, so backoffs run out when the test says.
    let queue_clock = ManualClock::new(OffsetDateTime::now_utc());
    let store = FjallStore::open(dir.path().join("store")).unwrap();
    let queue = store.retry_queue(QueueOptions {
        base_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(60),
        max_receives: 100,
        clock: Arc::new(queue_clock.clone()),
    });
    let (service, engines) = with_engines(Engines {
        store: Arc::new(store),
        index: faulty.clone(),
        queue: Arc::new(queue),
        cache: Arc::new(MokaOperationCache::default()),
        events: Arc::new(LocalEventBus::default()),
    })
    .await;

    // First a batch that gets through, so the index holds a version to be ordered after.
    let op = service
        .start(start_request("objects", 1, "p"))
        .await
        .unwrap();
    service.upsert(op.id, &items("m", 1)).await.unwrap();
    service.settle().await;
    let after_first = engines.store.get_operation(op.id).await.unwrap().unwrap();
    assert_eq!(
        faulty.versions(),
        vec![Some(batch_version(after_first.version))]
    );

    faulty.fail_percent(100);
    service.upsert(op.id, &items("n", 3)).await.unwrap();
    service.settle().await;
    assert_eq!(
        engines.queue.depth().await.unwrap(),
        1,
        "the failed batch is queued"
    );
    assert!(
        service.finish(op.id).await.is_err(),
        "finish needs the index"
    );

    // Still failing: the round applies nothing and the work stays, backing off.
    let round = worker(&service).run_once().await.unwrap();
    assert_eq!(round.applied, 0);
    assert!(round.failed >= 1, "{round:?}");
    assert_eq!(
        engines
            .store
            .pending_work(Some(op.id), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    faulty.fail_percent(0);
    // Backing off: nothing is due yet.
    let round = worker(&service).run_once().await.unwrap();
    assert_eq!((round.applied, round.failed), (0, 0), "{round:?}");
    queue_clock.advance_ms(61_000);
    let round = worker(&service).run_once().await.unwrap();
    assert_eq!((round.applied, round.failed), (1, 0), "{round:?}");
    // The replay's version is above the first batch's write and below the write of
    // the batch it replays.
    let before_replay = engines.store.get_operation(op.id).await.unwrap().unwrap();
    let replayed = faulty.versions().last().copied().flatten().unwrap();
    assert_eq!(replayed, replay_version(before_replay.version));
    assert!(batch_version(after_first.version) < replayed);
    assert!(replayed < batch_version(before_replay.version));
    assert!(
        engines
            .store
            .pending_work(None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    service.finish(op.id).await.unwrap();
    assert_eq!(visible(&service).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_finds_work_whose_message_was_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let tantivy: Arc<dyn Index> = Arc::new(
        TantivyIndex::open(&dir.path().join("own-index"), IndexOptions::default()).unwrap(),
    );
    let (service, engines) = service(dir.path(), tantivy.clone()).await;
    let op = service
        .start(start_request("objects", 1, "p"))
        .await
        .unwrap();
    // A node that died right after its store write: pending work, no index write, no
    // message.
    let annotations: Vec<Annotation> = (0..4)
        .map(|_| annotation(&op, Uuid::new_v4(), "a"))
        .collect();
    let now = SystemClock.now();
    engines
        .store
        .upsert_annotations(op.id, &annotations, now)
        .await
        .unwrap();
    assert_eq!(engines.queue.depth().await.unwrap(), 0);
    assert_eq!(tantivy.count_operation(op.id).await.unwrap(), 0);

    let round = worker(&service).run_once().await.unwrap();
    assert_eq!((round.swept, round.applied, round.failed), (1, 1, 0));
    tantivy.refresh().await;
    assert_eq!(tantivy.count_operation(op.id).await.unwrap(), 4);
    service.finish(op.id).await.unwrap();
    assert_eq!(visible(&service).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_rebuilds_what_the_index_lost() {
    let dir = tempfile::tempdir().unwrap();
    let tantivy = Arc::new(
        TantivyIndex::open(&dir.path().join("own-index"), IndexOptions::default()).unwrap(),
    );
    let (service, _) = service(dir.path(), tantivy.clone()).await;
    let mut ops = Vec::new();
    for pivot in ["a", "b"] {
        let op = service
            .start(start_request("objects", 1, pivot))
            .await
            .unwrap();
        service.upsert(op.id, &items(pivot, 3)).await.unwrap();
        service.finish(op.id).await.unwrap();
        ops.push(op.id);
    }
    let w = worker(&service);
    let clean = w.audit_once().await.unwrap();
    assert_eq!((clean.checked, clean.mismatched), (2, 0));

    tantivy.delete_operation(ops[0]).await.unwrap();
    assert_eq!(visible(&service).await, 3);
    let audit = w.audit_once().await.unwrap();
    assert_eq!((audit.checked, audit.mismatched, audit.repaired), (2, 1, 1));
    tantivy.refresh().await;
    assert_eq!(visible(&service).await, 6);
    let again = w.audit_once().await.unwrap();
    assert_eq!(again.mismatched, 0);
}
