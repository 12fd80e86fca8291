//! Two services on one store and one index, with caches of their own, following each
//! other through one in-process `LocalEventBus`: what many API nodes do through Kafka.

mod common;

use annostore_core::cache::MokaOperationCache;
use annostore_core::clock::{Clock, ManualClock, SystemClock};
use annostore_core::events::{
    Delivery, EventBus, EventEnvelope, EventError, Followed, LocalEventBus, Subscription,
};
use annostore_core::model::{OperationStatus, StartOperation};
use annostore_core::service::{Engines, Service};
use annostore_core::validate::Limits;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const BOUND: Duration = Duration::from_secs(5);

/// Nodes A and B: A registered the type; both follow the bus and are warmed up.
async fn two_nodes(dir: &std::path::Path, clock: Arc<dyn Clock>) -> (Arc<Service>, Arc<Service>) {
    let (a, b, _) = nodes(dir, clock, true).await;
    (a, b)
}

/// Nodes A and B; B follows the bus only if `b_follows`, else its subscription is
/// returned for the test to deliver when it likes.
async fn nodes(
    dir: &std::path::Path,
    clock: Arc<dyn Clock>,
    b_follows: bool,
) -> (Arc<Service>, Arc<Service>, Option<Subscription>) {
    let (a, engines) = common::service(dir, clock.clone()).await;
    let a = Arc::new(a);
    let b = Arc::new(Service::new(
        Engines {
            cache: Arc::new(MokaOperationCache::default()),
            ..engines
        },
        Limits::default(),
        clock,
    ));
    a.follow_events();
    let held = if b_follows {
        b.follow_events();
        None
    } else {
        Some(b.engines().events.subscribe())
    };
    for s in [&a, &b] {
        s.warm_up().await.unwrap();
    }
    (a, b, held)
}

fn start_request(pivot: &str, lease_seconds: Option<u32>) -> StartOperation {
    StartOperation {
        producer: None,
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: pivot.into(),
        lease_seconds,
        metadata: None,
    }
}

/// Polls `node`'s cache until it holds `id` in `status`.
async fn until_cached(node: &Service, id: Uuid, status: OperationStatus) {
    let deadline = Instant::now() + BOUND;
    while node.engines().cache.get(&id).map(|o| o.status) != Some(status) {
        assert!(
            Instant::now() < deadline,
            "{id} never reached {status:?} in the cache"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_on_one_node_reaches_the_others_cache() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let (a, b) = two_nodes(dir.path(), Arc::new(clock.clone())).await;
    let op = a.start(start_request("p", Some(1))).await.unwrap();
    until_cached(&b, op.id, OperationStatus::Started).await;
    clock.advance_ms(2_000);
    assert_eq!(a.expire_lapsed().await.unwrap(), 1);
    until_cached(&b, op.id, OperationStatus::Expired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_finishes_on_two_nodes_leave_both_showing_the_newest_run() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (a, b) = two_nodes(dir.path(), clock).await;
    let mut runs = Vec::new();
    for i in 0..8 {
        let op = a.start(start_request("movie", None)).await.unwrap();
        a.upsert(
            op.id,
            &[json!({"media_id": "movie", "start_ms": i, "end_ms": i + 1})],
        )
        .await
        .unwrap();
        runs.push(op.id);
    }
    // Finish them all at once: the even runs on A, newest first, the odd ones on B,
    // oldest first, so events and local updates interleave every way.
    let on_a = [6, 4, 2, 0].map(|i| (a.clone(), runs[i]));
    let on_b = [1, 3, 5, 7].map(|i| (b.clone(), runs[i]));
    let mut finishes = Vec::new();
    for ((node_a, id_a), (node_b, id_b)) in on_a.into_iter().zip(on_b) {
        finishes.push(tokio::spawn(async move { node_a.finish(id_a).await }));
        finishes.push(tokio::spawn(async move { node_b.finish(id_b).await }));
    }
    for f in finishes {
        f.await.unwrap().unwrap();
    }
    let newest = *runs.last().unwrap();
    let stored: Vec<Uuid> = a
        .engines()
        .store
        .active_operations()
        .await
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(stored, vec![newest], "the store's active run");
    for node in [&a, &b] {
        let deadline = Instant::now() + BOUND;
        loop {
            let v = node.engines().cache.visibility();
            assert!(v.len() <= 1, "two runs of one key visible");
            if v.is_active(&newest) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node never showed the newest run"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Once each node has followed every event the other published (a marker event from
    // each, published last, has arrived), each still shows only the newest run.
    sync(&a, &b).await;
    sync(&b, &a).await;
    for node in [&a, &b] {
        let v = node.engines().cache.visibility();
        assert!(
            v.is_active(&newest) && v.len() == 1,
            "an older run came back"
        );
        // A refresh from the store finds nothing to move.
        assert_eq!(node.refresh_visibility().await.unwrap(), 0);
    }
}

/// Starts, fills and finishes a run of key `movie` on `node`.
async fn run(node: &Service) -> Uuid {
    let op = node.start(start_request("movie", None)).await.unwrap();
    node.upsert(
        op.id,
        &[json!({"media_id": "movie", "start_ms": 0, "end_ms": 1})],
    )
    .await
    .unwrap();
    node.finish(op.id).await.unwrap();
    op.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_older_activations_arriving_late_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, held) = nodes(dir.path(), Arc::new(SystemClock), false).await;
    let mut held = held.unwrap();
    // A finishes runs 1 and 2; B, not having heard, finishes run 3 itself.
    let (run1, run2) = (run(&a).await, run(&a).await);
    let run3 = run(&b).await;
    let shows_run3_only = |node: &Service| {
        let v = node.engines().cache.visibility();
        v.is_active(&run3) && v.len() == 1
    };
    assert!(shows_run3_only(&b));
    // Now A's events reach B: A's activations of runs 1 and 2, then B's own.
    let mut applied = 0;
    let mut own = 0;
    while applied < 4 || own < 2 {
        let Some(Delivery::Event(envelope)) = held.recv().await else {
            panic!("the bus closed or lost events")
        };
        match b.follow_event(&envelope) {
            Followed::Applied => applied += 1,
            Followed::Own => own += 1,
        }
        assert!(shows_run3_only(&b), "after {envelope:?}");
    }
    assert!(b.engines().cache.get(&run1).is_some_and(|o| !o.active));
    assert!(b.engines().cache.get(&run2).is_some_and(|o| !o.active));
    // A heard B's activation of run 3 in the ordinary way.
    sync(&b, &a).await;
    assert!(shows_run3_only(&a));
}

/// Returns once `to` has followed every event `from` published so far: the local bus
/// delivers in publishing order, so a marker published now arrives after them.
async fn sync(from: &Service, to: &Service) {
    let marker = from.start(start_request("marker", None)).await.unwrap();
    until_cached(to, marker.id, OperationStatus::Started).await;
}

/// A bus whose publishing fails, or never answers.
struct Broken {
    hangs: bool,
}

#[async_trait::async_trait]
impl EventBus for Broken {
    async fn publish(&self, _: &EventEnvelope) -> Result<(), EventError> {
        if self.hangs {
            std::future::pending::<()>().await;
        }
        Err(EventError::Transport("the broker is down".into()))
    }

    fn subscribe(&self) -> Subscription {
        LocalEventBus::default().subscribe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_fails_or_hangs_never_fails_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (_, engines) = common::service(dir.path(), Arc::new(SystemClock)).await;
    for hangs in [false, true] {
        let service = Arc::new(Service::new(
            Engines {
                events: Arc::new(Broken { hangs }),
                ..engines.clone()
            },
            Limits::default(),
            Arc::new(SystemClock),
        ));
        service.follow_events();
        let id = run(&service).await;
        let v = service.engines().cache.visibility();
        assert!(v.is_active(&id), "hangs: {hangs}");
        let op = service.start(start_request("other", None)).await.unwrap();
        assert_eq!(
            service.cancel(op.id).await.unwrap().status,
            OperationStatus::Cancelled
        );
    }
}
