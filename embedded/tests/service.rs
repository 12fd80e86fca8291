//! The service over the embedded engines, where it must correct what the index says:
//! documents the store disagrees with never reach a client (on an index that keeps no
//! copies, as Elasticsearch: the store confirms every hit).

use annostore_core::clock::SystemClock;
use annostore_core::index::Existing;
use annostore_core::model::SearchRequest;
use annostore_core::testkit::store::start_request;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_duplicate_documents_are_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (_, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    let engines = annostore_core::service::Engines {
        index: Arc::new(WithoutCopies(engines.index.clone())),
        ..engines
    };
    let service = annostore_core::service::Service::new(
        engines.clone(),
        annostore_core::validate::Limits::default(),
        Arc::new(SystemClock),
    );
    let op = service
        .start(start_request("objects", 1, "p"))
        .await
        .unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let items: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "media_id": "m", "start_ms": i * 100, "end_ms": i * 100 + 50}))
        .collect();
    service.upsert(op.id, &items).await.unwrap();
    service.finish(op.id).await.unwrap();

    // What two racing rewrites of one id can leave in an index written by many nodes:
    // a copy at an old position (first in order here), and a second copy at the right
    // one.
    let current = engines.store.get_annotations(&ids[..1]).await.unwrap()[0]
        .clone()
        .unwrap();
    let mut stale = current.clone();
    stale.start_ms = -900;
    stale.end_ms = -850;
    engines
        .index
        .upsert(&[stale, current.clone()], Existing::Only(&[]))
        .await
        .unwrap();

    for limit in [1, 2, 100] {
        let mut req = SearchRequest {
            limit: Some(limit),
            ..Default::default()
        };
        let mut got = Vec::new();
        loop {
            let page = service.search(&req).await.unwrap();
            got.extend(page.annotations.iter().map(|a| (a.id, a.start_ms)));
            match page.next_page_token {
                Some(t) => req.page_token = Some(t),
                None => break,
            }
        }
        let expected: Vec<_> = ids.iter().copied().zip([0, 100, 200]).collect();
        assert_eq!(got, expected, "page size {limit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_restores_lost_and_damaged_documents() {
    use annostore_core::index::Index;
    use annostore_embedded::index::{IndexOptions, TantivyIndex};

    let dir = tempfile::tempdir().unwrap();
    let (_, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    // The same store, with an index this test can damage directly.
    let tantivy =
        Arc::new(TantivyIndex::open(&dir.path().join("index-2"), IndexOptions::default()).unwrap());
    let engines = annostore_core::service::Engines {
        index: tantivy.clone(),
        ..engines
    };
    let service = annostore_core::service::Service::new(
        engines.clone(),
        annostore_core::validate::Limits::default(),
        Arc::new(SystemClock),
    );
    let mut ops = Vec::new();
    for pivot in ["a", "b"] {
        let op = service
            .start(start_request("objects", 1, pivot))
            .await
            .unwrap();
        let items: Vec<_> = (0..3)
            .map(|i| json!({"media_id": pivot, "start_ms": i * 10, "end_ms": i * 10 + 5}))
            .collect();
        service.upsert(op.id, &items).await.unwrap();
        service.finish(op.id).await.unwrap();
        ops.push(op.id);
    }
    assert_eq!(visible(&service).await, 6);

    // Lost: one operation's documents; damaged: a stale copy of one of the other's.
    tantivy.delete_operation(ops[0]).await.unwrap();
    let mut stale = engines
        .store
        .annotations_of_operation(ops[1], None, 1)
        .await
        .unwrap()[0]
        .clone();
    stale.start_ms += 1_000;
    stale.end_ms += 1_000;
    tantivy.upsert(&[stale], Existing::Only(&[])).await.unwrap();
    assert_eq!(visible(&service).await, 3);
    assert_eq!(tantivy.count_operation(ops[1]).await.unwrap(), 4);

    let one = service.reindex(Some(ops[0])).await.unwrap();
    assert_eq!((one.operations, one.annotations), (1, 3));
    assert_eq!(visible(&service).await, 6);
    let all = service.reindex(None).await.unwrap();
    assert_eq!((all.operations, all.annotations), (2, 6));
    for op in &ops {
        assert_eq!(tantivy.count_operation(*op).await.unwrap(), 3);
    }
}

/// How many annotations a search with no filter shows.
async fn visible(service: &annostore_core::service::Service) -> usize {
    service
        .search(&SearchRequest::default())
        .await
        .unwrap()
        .annotations
        .len()
}

/// The keys of a media item's runs are scanned for once and then cached: a run of a new
/// key started through this service shows at once, one started by another node shows
/// when its start event arrives (until then the cached keys stand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_items_keys_are_cached_until_a_run_naming_it_starts() {
    use annostore_core::events::{EventEnvelope, OperationEvent};
    use std::collections::BTreeSet;

    let dir = tempfile::tempdir().unwrap();
    let (service, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    let naming = |pivot: &str| {
        let mut req = start_request("objects", 1, pivot);
        req.metadata = Some(serde_json::Map::from_iter([(
            "media_id".to_string(),
            json!("clip.mp4"),
        )]));
        req
    };
    let pivots = |runs: &annostore_core::service::MediaRuns| -> BTreeSet<String> {
        runs.keys.iter().map(|k| k.pivot_id.clone()).collect()
    };
    service.start(naming("sha-a")).await.unwrap();
    let first = service.media_runs("clip.mp4", None).await.unwrap();
    assert_eq!(pivots(&first), BTreeSet::from(["sha-a".to_string()]));

    // Started here: shows at once.
    service.start(naming("sha-b")).await.unwrap();
    let second = service.media_runs("clip.mp4", None).await.unwrap();
    assert_eq!(
        pivots(&second),
        BTreeSet::from(["sha-a".into(), "sha-b".into()])
    );

    // Written by another node straight to the store: the cached keys stand...
    let other = engines
        .store
        .start_operation(naming("sha-c"), 60, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    let cached = service.media_runs("clip.mp4", None).await.unwrap();
    assert_eq!(pivots(&cached), pivots(&second));
    // ...until its start event arrives.
    service.follow_event(&EventEnvelope {
        node: Uuid::now_v7(),
        event: OperationEvent::Started { operation: other },
    });
    let third = service.media_runs("clip.mp4", None).await.unwrap();
    assert_eq!(
        pivots(&third),
        BTreeSet::from(["sha-a".into(), "sha-b".into(), "sha-c".into()])
    );
    // Each key lists its run, newest first.
    assert!(third.keys.iter().all(|k| k.runs.len() == 1));
}

/// An index that hands out no copies of what it matched (as Elasticsearch), so every
/// hit is read from the store and checked against it.
struct WithoutCopies(Arc<dyn annostore_core::index::Index>);

#[async_trait::async_trait]
impl annostore_core::index::Index for WithoutCopies {
    async fn upsert(
        &self,
        xs: &[annostore_core::model::Annotation],
        existing: Existing<'_>,
    ) -> Result<(), annostore_core::index::IndexError> {
        self.0.upsert(xs, existing).await
    }
    async fn search(
        &self,
        q: &annostore_core::index::IndexQuery,
    ) -> Result<Vec<annostore_core::index::Hit>, annostore_core::index::IndexError> {
        let mut hits = self.0.search(q).await?;
        for h in &mut hits {
            h.annotation = None;
        }
        Ok(hits)
    }
    async fn knn(
        &self,
        q: &annostore_core::index::KnnQuery,
    ) -> Result<Vec<annostore_core::index::KnnHit>, annostore_core::index::IndexError> {
        let mut hits = self.0.knn(q).await?;
        for h in &mut hits {
            h.annotation = None;
        }
        Ok(hits)
    }
    async fn aggregate(
        &self,
        q: &annostore_core::index::AggregateQuery,
    ) -> Result<annostore_core::query::Aggregates, annostore_core::index::IndexError> {
        self.0.aggregate(q).await
    }
    async fn count_operation(&self, op: Uuid) -> Result<u64, annostore_core::index::IndexError> {
        self.0.count_operation(op).await
    }
    async fn delete_operation(&self, op: Uuid) -> Result<u64, annostore_core::index::IndexError> {
        self.0.delete_operation(op).await
    }
    async fn sync(&self) -> Result<(), annostore_core::index::IndexError> {
        self.0.sync().await
    }
}

/// A newer run's finish applied in the store but its answer lost: this node's snapshot
/// still shows the run before it. An older run's finish then answers "superseded", and
/// from that answer on no search may show a run older than the one that superseded it
/// (the finish brings the snapshot up to the store's active run first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_finish_brings_the_newer_run_into_view() {
    use annostore_core::testkit::faults::{FaultyStore, StoreFaults, WriteFault};
    let dir = tempfile::tempdir().unwrap();
    let (_, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    let store = FaultyStore::new(engines.store.clone());
    let engines = annostore_core::service::Engines {
        store: store.clone(),
        ..engines
    };
    let service = annostore_core::service::Service::new(
        engines,
        annostore_core::validate::Limits::default(),
        Arc::new(SystemClock),
    );
    let mut runs = Vec::new();
    for n in 0..3 {
        let op = service
            .start(start_request("objects", 1, "k"))
            .await
            .unwrap();
        let item = json!({"media_id": "m", "start_ms": n, "end_ms": n + 1});
        service.upsert(op.id, &[item]).await.unwrap();
        runs.push(op.id);
    }
    let (oldest, older, newest) = (runs[0], runs[1], runs[2]);
    service.finish(oldest).await.unwrap();
    let shown = |page: annostore_core::model::SearchPage| -> Vec<Uuid> {
        page.annotations.iter().map(|a| a.operation_id).collect()
    };
    let req = SearchRequest::default();
    assert_eq!(shown(service.search(&req).await.unwrap()), vec![oldest]);

    store.inject(
        StoreFaults {
            fail_percent: 100,
            when: WriteFault::After,
        },
        1,
    );
    assert!(service.finish(newest).await.is_err(), "its answer was lost");
    store.heal();
    // The store has the newest run active; this node has not heard.
    assert_eq!(shown(service.search(&req).await.unwrap()), vec![oldest]);

    let superseded = service.finish(older).await.unwrap();
    assert!(!superseded.active);
    assert_eq!(shown(service.search(&req).await.unwrap()), vec![newest]);
}
