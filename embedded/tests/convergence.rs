//! Convergence with a failing index: 30% of index writes fail on purpose while 20 runs of
//! 5,000 annotations are written by 4 producers and finished, and a reader searches all
//! along. Every run must end complete in the index, once, and no search may ever show
//! part of a run.

mod common;

use annostore_core::Error;
use annostore_core::cache::MokaOperationCache;
use annostore_core::clock::{ManualClock, SystemClock};
use annostore_core::index::Index;
use annostore_core::model::{Operation, SearchFilter, SearchRequest, TypeDefinition};
use annostore_core::service::{Engines, Service};
use annostore_core::testkit::faults::FaultyIndex;
use annostore_core::testkit::store::start_request;
use annostore_core::validate::Limits;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;

const RUNS: usize = 20;
const PER_RUN: usize = 5_000;
const BATCH: usize = 500;
const PRODUCERS: usize = 4;

fn media(run: usize) -> String {
    format!("video-{run:02}")
}

fn batch(run: usize, from: usize) -> Vec<Value> {
    (from..from + BATCH)
        .map(|i| {
            let label = ["person", "car"][i % 2];
            json!({"media_id": media(run), "start_ms": i * 40, "end_ms": i * 40 + 40, "label": label})
        })
        .collect()
}

/// How many annotations a search of one run's media shows, over all its pages.
async fn shown(service: &Service, run: usize) -> Result<usize, Error> {
    let mut req = SearchRequest {
        filter: SearchFilter {
            media_id: Some(media(run)),
            ..Default::default()
        },
        limit: Some(1_000),
        ..Default::default()
    };
    let mut n = 0;
    loop {
        let page = service.search(&req).await?;
        n += page.annotations.len();
        match page.next_page_token {
            Some(t) if !page.annotations.is_empty() => req.page_token = Some(t),
            _ => return Ok(n),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_converge_while_the_index_fails_30_percent_of_writes() {
    let dir = tempfile::tempdir().unwrap();
    let queue_clock = ManualClock::new(OffsetDateTime::now_utc());
    let (store, queue, tantivy) = common::parts(dir.path(), 1_000, queue_clock.clone());
    let faulty = FaultyIndex::new(Arc::new(tantivy));
    faulty.fail_percent(30);
    let engines = Engines {
        store: Arc::new(store),
        index: faulty.clone(),
        queue: Arc::new(queue),
        cache: Arc::new(MokaOperationCache::default()),
        events: Arc::new(annostore_core::events::LocalEventBus::default()),
    };
    let service = Arc::new(Service::new(
        engines.clone(),
        Limits::default(),
        Arc::new(SystemClock),
    ));
    let def = TypeDefinition {
        schema: json!({}),
        embedding_dim: None,
    };
    service.put_type("objects", 1, def).await.unwrap();

    // The reader: a run is either not shown or shown whole, on every search.
    let writing = Arc::new(AtomicBool::new(true));
    let reader = {
        let (service, writing) = (service.clone(), writing.clone());
        tokio::spawn(async move {
            let mut searches = 0usize;
            while writing.load(Ordering::SeqCst) {
                for run in 0..RUNS {
                    // A failed search (the index down for this call) shows nothing at all.
                    if let Ok(n) = shown(&service, run).await {
                        assert!(
                            n == 0 || n == PER_RUN,
                            "run {run} shown with {n} annotations"
                        );
                        searches += 1;
                    }
                }
            }
            searches
        })
    };

    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let service = service.clone();
        producers.push(tokio::spawn(async move {
            let mut finished: Vec<(usize, Operation)> = Vec::new();
            for run in (p..RUNS).step_by(PRODUCERS) {
                let op = service
                    .start(start_request("objects", 1, &media(run)))
                    .await
                    .unwrap();
                for from in (0..PER_RUN).step_by(BATCH) {
                    service.upsert(op.id, &batch(run, from)).await.unwrap();
                }
                // A client retries a finish that the index made fail (503).
                let mut attempts = 0;
                let done = loop {
                    attempts += 1;
                    match service.finish(op.id).await {
                        Ok(done) => break done,
                        Err(Error::Unavailable { .. }) if attempts < 200 => continue,
                        Err(e) => panic!("finishing run {run}: {e}"),
                    }
                };
                assert!(done.active);
                finished.push((run, done));
            }
            finished
        }));
    }
    let mut runs = Vec::new();
    for p in producers {
        runs.extend(p.await.unwrap());
    }
    writing.store(false, Ordering::SeqCst);
    let searches = reader.await.unwrap();
    assert!(searches > 0, "the reader never got an answer");

    // Drain the retry queue (its clock moves past every backoff) through the reconciler.
    let reconciler = service.reconciler();
    let mut passes = 0;
    while engines.queue.depth().await.unwrap() > 0 {
        passes += 1;
        assert!(passes < 1_000, "the retry queue does not drain");
        queue_clock.advance_ms(1_000);
        reconciler.run_queue_once(1_000).await.unwrap();
    }
    assert!(
        engines
            .store
            .pending_work(None, 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(engines.queue.dead_letter_count().await.unwrap(), 0);

    faulty.fail_percent(0);
    assert_eq!(runs.len(), RUNS);
    for (run, op) in &runs {
        assert_eq!(
            faulty.count_operation(op.id).await.unwrap(),
            PER_RUN as u64,
            "run {run}: documents in the index"
        );
        assert_eq!(shown(&service, *run).await.unwrap(), PER_RUN, "run {run}");
    }
}
