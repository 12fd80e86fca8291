//! Operating scenarios on a whole `Service` over real engines: dead letters redriven
//! once the index is healthy, the consistency report and its repair, and garbage
//! collection racing rollbacks under concurrent searches. The embedded engines run
//! them in `embedded/tests/operating.rs`; Cassandra and SQS (moto) in
//! `tests/tests/distributed_operating.rs`.

use crate::error::Error;
use crate::model::{
    ActivationReason, Operation, OperationFilter, SearchFilter, SearchRequest, TypeDefinition,
};
use crate::service::{GcOptions, Retention, Service};
use crate::testkit::faults::FaultyIndex;
use crate::testkit::store::start_request;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use uuid::Uuid;

pub type Elapse = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

const TYPE: &str = "objects";

async fn register(service: &Service) {
    let def = TypeDefinition {
        schema: json!({}),
        embedding_dim: None,
    };
    service.put_type(TYPE, 1, def).await.expect("type");
}

/// `n` annotations of `pivot`'s media, from the `from`-th on (ids are derived from the
/// content: different `from`, different annotations).
fn items_from(pivot: &str, from: usize, n: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| json!({"media_id": format!("m-{pivot}"), "start_ms": i * 10, "end_ms": i * 10 + 5, "label": "x"}))
        .collect()
}

fn items(pivot: &str, n: usize) -> Vec<Value> {
    items_from(pivot, 0, n)
}

async fn finished_run(service: &Service, pivot: &str, n: usize) -> Operation {
    let op = service
        .start(start_request(TYPE, 1, pivot))
        .await
        .expect("start");
    service
        .upsert(op.id, &items(pivot, n))
        .await
        .expect("upsert");
    service.finish(op.id).await.expect("finish")
}

/// The run ids a search of `pivot` shows, and how many annotations.
async fn shown(service: &Service, pivot: &str) -> Result<(BTreeSet<Uuid>, usize), Error> {
    let req = SearchRequest {
        filter: SearchFilter {
            pivot_id: Some(pivot.to_owned()),
            ..Default::default()
        },
        limit: Some(1_000),
        ..Default::default()
    };
    let page = service.search(&req).await?;
    Ok((
        page.annotations.iter().map(|a| a.operation_id).collect(),
        page.annotations.len(),
    ))
}

/// The index fails every write: three batches end as dead letters after the queue's
/// receives run out. Listed and inspected with their pending records; once the index
/// heals, redriving one and then all resolves them, the pending records go and the run
/// finishes whole. A purge drops only the message: the pending record stays.
pub async fn dead_letters_redrive_once_the_index_is_healthy(
    service: Arc<Service>,
    faulty: Arc<FaultyIndex>,
    max_receives: u32,
    elapse: Elapse,
) {
    register(&service).await;
    faulty.fail_percent(100);
    let op = service
        .start(start_request(TYPE, 1, "dead"))
        .await
        .expect("start");
    for batch in 0..3 {
        service
            .upsert(op.id, &items_from("dead", batch * 4, 4))
            .await
            .expect("upsert");
    }
    service.settle().await;
    let queue = &service.engines().queue;
    let reconciler = service.reconciler();
    let mut rounds = 0;
    while queue.dead_letter_count().await.expect("count") < 3 {
        rounds += 1;
        assert!(
            rounds <= max_receives + 3,
            "no dead letters after {rounds} rounds"
        );
        let _ = reconciler.run_queue_once(10).await;
        elapse().await;
    }
    let (letters, total) = service.dead_letters(100).await.expect("list");
    assert_eq!((letters.len(), total), (3, 3));
    for d in &letters {
        assert_eq!(d.operation_id, op.id);
        assert!(d.pending, "the store still holds the work");
        assert_eq!(d.annotations, 4);
        assert!(d.receive_count >= max_receives, "{d:?}");
    }
    let one = service.dead_letter(letters[0].work_id).await.expect("show");
    assert_eq!(one.annotation_ids.as_ref().map(Vec::len), Some(4));
    assert!(matches!(
        service.dead_letter(Uuid::now_v7()).await,
        Err(Error::NotFound { .. })
    ));

    // Healed: redrive one, then the rest.
    faulty.heal();
    let first = [letters[0].work_id];
    assert_eq!(
        service
            .redrive_dead_letters(Some(&first))
            .await
            .expect("redrive"),
        1
    );
    assert_eq!(queue.dead_letter_count().await.expect("count"), 2);
    drain(&service, 1).await;
    assert_eq!(
        pending(&service, op.id).await.len(),
        2,
        "one resolved, two left"
    );
    assert_eq!(
        service.redrive_dead_letters(None).await.expect("redrive"),
        2
    );
    drain(&service, 2).await;
    assert!(pending(&service, op.id).await.is_empty());
    assert_eq!(queue.dead_letter_count().await.expect("count"), 0);
    let done = service.finish(op.id).await.expect("finish");
    assert!(done.active);
    assert_eq!(shown(&service, "dead").await.expect("search").1, 12);

    // A purge drops the message, not the work of a live run.
    faulty.fail_percent(100);
    let other = service
        .start(start_request(TYPE, 1, "purged"))
        .await
        .expect("start");
    service
        .upsert(other.id, &items("purged", 2))
        .await
        .expect("upsert");
    service.settle().await;
    let mut rounds = 0;
    while queue.dead_letter_count().await.expect("count") < 1 {
        rounds += 1;
        assert!(rounds <= max_receives + 3, "no dead letter");
        let _ = reconciler.run_queue_once(10).await;
        elapse().await;
    }
    let purged = service.purge_dead_letters(None).await.expect("purge");
    assert_eq!((purged.purged, purged.pending_dropped), (1, 0));
    assert_eq!(queue.dead_letter_count().await.expect("count"), 0);
    assert_eq!(
        pending(&service, other.id).await.len(),
        1,
        "the work stays pending"
    );
    faulty.heal();
    // The finish replays it from the store: nothing was lost.
    service.finish(other.id).await.expect("finish");
    assert_eq!(shown(&service, "purged").await.expect("search").1, 2);
}

async fn pending(service: &Service, id: Uuid) -> Vec<crate::store::IndexWork> {
    service
        .engines()
        .store
        .pending_work(Some(id), 100)
        .await
        .expect("pending")
}

/// Runs the reconciler's queue until `n` pieces of work applied (bounded).
async fn drain(service: &Service, n: usize) {
    let mut applied = 0;
    for _ in 0..200 {
        applied += service
            .reconciler()
            .run_queue_once(10)
            .await
            .expect("queue")
            .applied;
        if applied >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("only {applied} of {n} redriven letters applied");
}

/// Damage the index (a run's documents lost): the report finds it, a repair rebuilds
/// it, and the run is whole again.
pub async fn consistency_finds_and_repairs_damage(service: Arc<Service>) {
    register(&service).await;
    let op = finished_run(&service, "damaged", 20).await;
    let healthy = finished_run(&service, "healthy", 5).await;
    let filter = OperationFilter::default();
    let report = service
        .consistency(&filter, 100, false, false)
        .await
        .expect("report");
    assert_eq!((report.checked, report.disagreeing), (2, 0));
    let removed = service
        .engines()
        .index
        .delete_operation(op.id)
        .await
        .expect("delete");
    assert_eq!(removed, 20);
    let report = service
        .consistency(&filter, 100, false, true)
        .await
        .expect("report");
    assert_eq!(report.disagreeing, 1);
    assert_eq!(
        report.operations.len(),
        1,
        "only the disagreeing one listed"
    );
    let row = &report.operations[0];
    assert_eq!((row.operation_id, row.store, row.index), (op.id, 20, 0));
    let repaired = service
        .consistency(&filter, 100, true, false)
        .await
        .expect("repair");
    assert_eq!((repaired.disagreeing, repaired.repaired), (1, 1));
    let after = service
        .consistency(&filter, 100, false, false)
        .await
        .expect("report");
    assert_eq!(after.disagreeing, 0);
    assert_eq!(shown(&service, "damaged").await.expect("search").1, 20);
    assert_eq!(
        shown(&service, "healthy").await.expect("search").0,
        BTreeSet::from([healthy.id])
    );
}

/// Garbage collection with no retention, pass after pass, while an admin rolls a key
/// back and forward and readers search it: every search shows one run, whole; GC
/// never touches the active run; once it has collected the other one, rollbacks are
/// refused and the active run is still whole in store and index.
pub async fn gc_never_collects_the_active_run(service: Arc<Service>) {
    register(&service).await;
    const N: usize = 50;
    let one = finished_run(&service, "race", N).await;
    let two = finished_run(&service, "race", N).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (service, stop) = (service.clone(), stop.clone());
        tokio::spawn(async move {
            let mut searches = 0;
            while !stop.load(Ordering::SeqCst) {
                let (runs, n) = shown(&service, "race").await.expect("search");
                assert_eq!(runs.len(), 1, "one run at a time: {runs:?}");
                assert_eq!(n, N, "the run whole");
                searches += 1;
            }
            searches
        })
    };
    let mover = {
        let service = service.clone();
        let key = one.key();
        tokio::spawn(async move {
            let mut moves = 0;
            for i in 0..30 {
                let moved = if i % 2 == 0 {
                    service.rollback(&key, None, None).await
                } else {
                    service.roll_forward(&key, None, None).await
                };
                match moved {
                    Ok(_) => moves += 1,
                    // The other run was collected: nothing left to move to.
                    Err(Error::Conflict(_)) => break,
                    Err(e) => panic!("move {i}: {e}"),
                }
            }
            moves
        })
    };
    let options = GcOptions {
        retention: Retention {
            superseded: Duration::ZERO,
            ended: Duration::ZERO,
        },
        batch: 7,
        ..GcOptions::default()
    };
    let mut collected = 0;
    for _ in 0..30 {
        collected += service
            .collect_garbage(&options)
            .await
            .expect("gc")
            .collected;
        tokio::task::yield_now().await;
    }
    mover.await.expect("mover");
    // The mover may have ended with the collected run's rollback refused; one more
    // pass collects whichever is inactive now.
    collected += service
        .collect_garbage(&options)
        .await
        .expect("gc")
        .collected;
    stop.store(true, Ordering::SeqCst);
    reader.await.expect("reader");
    assert_eq!(collected, 1, "exactly the inactive run is collected");
    let store = &service.engines().store;
    let one = store
        .get_operation(one.id)
        .await
        .expect("get")
        .expect("one");
    let two = store
        .get_operation(two.id)
        .await
        .expect("get")
        .expect("two");
    let (active, gone) = if one.active { (one, two) } else { (two, one) };
    assert!(
        gone.collected
            .as_ref()
            .is_some_and(|c| c.finished_at.is_some())
    );
    assert_eq!(
        store
            .annotations_of_operation(active.id, None, 1_000)
            .await
            .expect("list")
            .len(),
        N
    );
    assert!(
        store
            .annotations_of_operation(gone.id, None, 1_000)
            .await
            .expect("list")
            .is_empty()
    );
    let index = &service.engines().index;
    assert_eq!(
        index.count_operation(active.id).await.expect("count"),
        N as u64
    );
    assert_eq!(index.count_operation(gone.id).await.expect("count"), 0);
    assert!(matches!(
        service
            .activate_run(gone.id, ActivationReason::Rollback, None)
            .await,
        Err(Error::Conflict(_))
    ));
}
