//! Two API nodes sharing one store and one index, each with its own cache and its own
//! `KafkaEventBus`: a finish on node A moves what node B's searches show, through
//! Kafka, and through the periodic refresh from the store when the event is lost.
//!
//! Runs on librdkafka's mock cluster (in process, nothing to install). With
//! `ANNOSTORE_TEST_KAFKA` set, `real_broker_*` runs the same against that cluster
//! (creating a fresh topic); `ANNOSTORE_REQUIRE_KAFKA=1` makes its absence a failure.

use annostore_core::cache::{MokaOperationCache, OperationCache};
use annostore_core::clock::SystemClock;
use annostore_core::events::{EventBus, EventEnvelope, EventError, Subscription};
use annostore_core::model::{
    OperationStatus, SearchFilter, SearchRequest, StartOperation, TypeDefinition,
};
use annostore_core::service::{Engines, Service};
use annostore_core::validate::Limits;
use annostore_kafka::{KafkaConfig, KafkaEventBus, ensure_topic};
use async_trait::async_trait;
use rdkafka::mocking::MockCluster;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long B may take to see A's finish through Kafka before the test fails. The
/// real figure is printed; it is normally a few milliseconds.
const EVENT_BOUND: Duration = Duration::from_secs(2);
const PIVOT: &str = "movie-42";
const ANNOTATIONS_PER_RUN: usize = 5;

/// An event bus that loses what it is told to publish while `lose` is set: what a
/// Kafka outage does to the events of that time.
struct Lossy {
    inner: KafkaEventBus,
    lose: AtomicBool,
}

#[async_trait]
impl EventBus for Lossy {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), EventError> {
        if self.lose.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.publish(event).await
    }

    fn subscribe(&self) -> Subscription {
        self.inner.subscribe()
    }
}

struct Nodes {
    a: Arc<Service>,
    b: Arc<Service>,
    a_bus: Arc<Lossy>,
    _dir: tempfile::TempDir,
}

/// One store and one index (the embedded engines, opened once), two services on them.
async fn two_nodes(config: &KafkaConfig) -> Nodes {
    let dir = tempfile::tempdir().unwrap();
    let engines = annostore_embedded::open(dir.path()).unwrap();
    let a_bus = Arc::new(Lossy {
        inner: KafkaEventBus::connect(config).await.unwrap(),
        lose: AtomicBool::new(false),
    });
    let b_bus = KafkaEventBus::connect(config).await.unwrap();
    assert_ne!(
        a_bus.inner.group(),
        b_bus.group(),
        "a consumer group per node"
    );
    let node = |cache: Arc<dyn OperationCache>, events: Arc<dyn EventBus>| {
        Arc::new(Service::new(
            Engines {
                cache,
                events,
                ..engines.clone()
            },
            Limits::default(),
            Arc::new(SystemClock),
        ))
    };
    let a = node(Arc::new(MokaOperationCache::default()), a_bus.clone());
    let b = node(Arc::new(MokaOperationCache::default()), Arc::new(b_bus));
    for s in [&a, &b] {
        s.follow_events();
        s.warm_up().await.unwrap();
    }
    assert_ne!(a.node_id(), b.node_id());
    a.put_type(
        "objects",
        1,
        TypeDefinition {
            schema: json!({}),
            embedding_dim: None,
        },
    )
    .await
    .unwrap();
    Nodes {
        a,
        b,
        a_bus,
        _dir: dir,
    }
}

/// Starts, fills and finishes a run of the test's key on `node`; returns its id once
/// the finish has returned.
async fn run(node: &Service) -> Uuid {
    let op = node
        .start(StartOperation {
            producer: None,
            annotation_type: "objects".into(),
            annotation_type_version: 1,
            pivot_id: PIVOT.into(),
            lease_seconds: None,
            metadata: None,
        })
        .await
        .unwrap();
    let items: Vec<_> = (0..ANNOTATIONS_PER_RUN)
        .map(|i| json!({"media_id": PIVOT, "start_ms": i * 1000, "end_ms": i * 1000 + 500}))
        .collect();
    node.upsert(op.id, &items).await.unwrap();
    node.finish(op.id).await.unwrap();
    op.id
}

/// The runs whose annotations a search on `node` shows. Fails if it shows a run partly
/// or two runs at once.
async fn visible_runs(node: &Service) -> BTreeSet<Uuid> {
    let page = node
        .search(&SearchRequest {
            filter: SearchFilter {
                pivot_id: Some(PIVOT.into()),
                ..SearchFilter::default()
            },
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let runs: BTreeSet<Uuid> = page.annotations.iter().map(|a| a.operation_id).collect();
    assert!(
        runs.len() <= 1,
        "two runs of one key visible at once: {runs:?}"
    );
    if !runs.is_empty() {
        assert_eq!(
            page.annotations.len(),
            ANNOTATIONS_PER_RUN,
            "a run shown partly"
        );
    }
    runs
}

/// Polls `node`'s search until it shows exactly `run`, and returns how long that took.
/// Along the way it may show only `before` (the run it showed until now).
async fn until_visible(
    node: &Service,
    run: Uuid,
    before: Option<Uuid>,
    bound: Duration,
) -> Duration {
    let since = Instant::now();
    loop {
        let runs = visible_runs(node).await;
        if runs == BTreeSet::from([run]) {
            return since.elapsed();
        }
        assert_eq!(
            runs,
            before.into_iter().collect(),
            "only the previous run, or the new one, may be visible"
        );
        assert!(
            since.elapsed() < bound,
            "node B still shows {runs:?} {:?} after node A's finish of {run}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The scenario both the mock cluster and a real broker run.
async fn finish_on_a_is_seen_on_b(config: &KafkaConfig) {
    let nodes = two_nodes(config).await;
    assert!(visible_runs(&nodes.b).await.is_empty());

    let run1 = run(&nodes.a).await;
    let first = until_visible(&nodes.b, run1, None, EVENT_BOUND).await;
    let run2 = run(&nodes.a).await;
    let second = until_visible(&nodes.b, run2, Some(run1), EVENT_BOUND).await;
    println!(
        "node A finish returned -> node B's search changed: run 1 in {:.1} ms, run 2 in {:.1} ms",
        first.as_secs_f64() * 1e3,
        second.as_secs_f64() * 1e3
    );
    // B's cache has A's view of both runs, from the events alone.
    let b_cache = &nodes.b.engines().cache;
    assert!(b_cache.get(&run2).is_some_and(|o| o.active));
    assert!(
        b_cache
            .get(&run1)
            .is_some_and(|o| !o.active && o.superseded_by == Some(run2))
    );
}

fn mock() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    KafkaConfig,
) {
    let cluster = MockCluster::new(1).unwrap();
    let config = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        ..KafkaConfig::default()
    };
    cluster.create_topic(&config.topic, 3, 1).unwrap();
    (cluster, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_on_one_node_is_visible_on_the_other_through_kafka() {
    let (_cluster, config) = mock();
    finish_on_a_is_seen_on_b(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_lifecycle_changes_reach_the_other_nodes_cache() {
    let (_cluster, config) = mock();
    let nodes = two_nodes(&config).await;
    let op = nodes
        .a
        .start(StartOperation {
            producer: None,
            annotation_type: "objects".into(),
            annotation_type_version: 1,
            pivot_id: PIVOT.into(),
            lease_seconds: None,
            metadata: None,
        })
        .await
        .unwrap();
    let b_cache = nodes.b.engines().cache.clone();
    let status = || b_cache.get(&op.id).map(|o| o.status);
    let deadline = Instant::now() + EVENT_BOUND;
    while status() != Some(OperationStatus::Started) {
        assert!(Instant::now() < deadline, "B never heard of the start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    nodes.a.cancel(op.id).await.unwrap();
    // B answers from its cache: without the event it would say STARTED for its TTL.
    let deadline = Instant::now() + EVENT_BOUND;
    while status() != Some(OperationStatus::Cancelled) {
        assert!(Instant::now() < deadline, "B never heard of the cancel");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        nodes.b.operation(op.id).await.unwrap().status,
        OperationStatus::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_event_is_made_up_for_by_the_refresh_from_the_store() {
    let (_cluster, config) = mock();
    let nodes = two_nodes(&config).await;
    let run1 = run(&nodes.a).await;
    until_visible(&nodes.b, run1, None, EVENT_BOUND).await;

    // Run 2's events are lost: B keeps showing run 1 until it refreshes.
    nodes.a_bus.lose.store(true, Ordering::SeqCst);
    let run2 = run(&nodes.a).await;
    assert_eq!(visible_runs(&nodes.b).await, BTreeSet::from([run1]));
    assert_eq!(
        nodes.b.refresh_visibility().await.unwrap(),
        1,
        "one key moved"
    );
    assert_eq!(visible_runs(&nodes.b).await, BTreeSet::from([run2]));
    assert_eq!(
        nodes.b.refresh_visibility().await.unwrap(),
        0,
        "in step now"
    );

    // The same through the periodic refresh, as the server runs it.
    let refresh = nodes.b.spawn_visibility_refresh(Duration::from_millis(100));
    let run3 = run(&nodes.a).await;
    let took = until_visible(&nodes.b, run3, Some(run2), Duration::from_secs(10)).await;
    println!(
        "lost event: node B converged through the refresh in {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    refresh.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_missing_topic_says_to_create_it() {
    let (_cluster, config) = mock();
    let missing = KafkaConfig {
        topic: "no-such-topic".into(),
        ..config
    };
    match KafkaEventBus::connect(&missing).await {
        Err(EventError::Config(m)) => assert!(m.contains("schema apply"), "{m}"),
        Err(e) => panic!("expected a configuration error, got {e}"),
        Ok(_) => panic!("connected to a topic that does not exist"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topic_leaves_an_existing_topic_alone() {
    // The mock cluster cannot create topics through the admin API; a real broker
    // covers creation (real_broker_* below).
    let (_cluster, config) = mock();
    assert!(!ensure_topic(&config, 3, 1).await.unwrap());
}

/// The real broker named by `ANNOSTORE_TEST_KAFKA`, with a fresh topic; `None`
/// (loudly) when it is not set, unless `ANNOSTORE_REQUIRE_KAFKA=1`.
fn real_broker() -> Option<KafkaConfig> {
    match std::env::var("ANNOSTORE_TEST_KAFKA") {
        Ok(brokers) if !brokers.is_empty() => Some(KafkaConfig {
            brokers,
            topic: format!("annostore-test-{}", Uuid::now_v7()),
            ..KafkaConfig::default()
        }),
        _ => {
            let required = std::env::var("ANNOSTORE_REQUIRE_KAFKA").is_ok_and(|v| v == "1");
            eprintln!(
                "\n==============================================================\n\
                 SKIPPED: no Kafka broker (set ANNOSTORE_TEST_KAFKA=host:port)\n\
                 ==============================================================\n"
            );
            assert!(
                !required,
                "ANNOSTORE_REQUIRE_KAFKA=1 but ANNOSTORE_TEST_KAFKA is not set"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_broker_topic_creation_is_idempotent_and_events_flow() {
    let Some(config) = real_broker() else { return };
    assert!(ensure_topic(&config, 3, 1).await.unwrap(), "created");
    assert!(!ensure_topic(&config, 3, 1).await.unwrap(), "already there");
    finish_on_a_is_seen_on_b(&config).await;
}
