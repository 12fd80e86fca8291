//! The operating scenarios (`annostore_core::testkit::operating`) on the embedded
//! engines: dead letters, the consistency report, garbage collection racing rollbacks.

mod common;

use annostore_core::cache::MokaOperationCache;
use annostore_core::clock::{ManualClock, SystemClock};
use annostore_core::events::LocalEventBus;
use annostore_core::service::{Engines, Service};
use annostore_core::testkit::faults::FaultyIndex;
use annostore_core::testkit::operating as scenario;
use annostore_core::validate::Limits;
use std::sync::Arc;
use tempfile::TempDir;
use time::OffsetDateTime;

const MAX_RECEIVES: u32 = 3;

/// A service on fresh embedded engines, the index behind a fault layer, the queue on
/// a clock the test moves.
fn service() -> (TempDir, Arc<Service>, Arc<FaultyIndex>, ManualClock) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let (store, queue, tantivy) = common::parts(dir.path(), MAX_RECEIVES, clock.clone());
    let faulty = FaultyIndex::new(Arc::new(tantivy));
    let engines = Engines {
        store: Arc::new(store),
        index: faulty.clone(),
        queue: Arc::new(queue),
        cache: Arc::new(MokaOperationCache::default()),
        events: Arc::new(LocalEventBus::default()),
    };
    let service = Service::new(engines, Limits::default(), Arc::new(SystemClock));
    (dir, Arc::new(service), faulty, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_redrive_once_the_index_is_healthy() {
    let (_dir, service, faulty, clock) = service();
    let elapse: scenario::Elapse = Box::new(move || {
        let clock = clock.clone();
        Box::pin(async move { clock.advance_ms(2_000) })
    });
    scenario::dead_letters_redrive_once_the_index_is_healthy(service, faulty, MAX_RECEIVES, elapse)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_finds_and_repairs_damage() {
    let (_dir, service, _, _) = service();
    scenario::consistency_finds_and_repairs_damage(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_never_collects_the_active_run() {
    let (_dir, service, _, _) = service();
    scenario::gc_never_collects_the_active_run(service).await;
}
