//! Operating annostore on the distributed engines that run here: the Cassandra store on
//! kassandra and the SQS retry queue on moto (the index stays embedded: no
//! Elasticsearch runs here). The black-box scenarios of `operating.rs` run against
//! `annostore serve` on them; the whole-service scenarios of
//! `annostore_core::testkit::operating` (dead letters on SQS's dead-letter queue, the
//! consistency report, garbage collection racing rollbacks) against a `Service` built
//! on them, with the index behind a fault layer.
//!
//! kassandra ignores LWT conditions, so the races these scenarios provoke between
//! requests of one node are what they check; races between nodes' conditional writes
//! are `cassandra/tests/concurrency.rs`'s, on a real cluster.

#[path = "operating/media.rs"]
mod media;
#[path = "operating/scenarios.rs"]
mod scenarios;

use annostore_cassandra::{CassandraConfig, CassandraStore, apply_schema};
use annostore_core::cache::MokaOperationCache;
use annostore_core::clock::SystemClock;
use annostore_core::events::LocalEventBus;
use annostore_core::service::{Engines, Service};
use annostore_core::testkit::faults::FaultyIndex;
use annostore_core::testkit::operating as scenario;
use annostore_core::validate::Limits;
use annostore_embedded::index::{IndexOptions, TantivyIndex};
use annostore_sqs::testkit::{Moto, moto};
use annostore_sqs::{SqsConfig, SqsRetryQueue};
use annostore_tests::{Server, binary};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use uuid::Uuid;

/// `annostore serve` on a fresh keyspace and fresh queues, its schema applied, with
/// the scenarios' GC settings.
fn server(moto: &Moto) -> Server {
    let tag = Uuid::new_v4().simple().to_string();
    let contact = format!("[\"{}\"]", annostore_cassandra::testkit::kassandra());
    let mut env: Vec<(&str, String)> = vec![
        ("ANNOSTORE_STORE__KIND", "cassandra".into()),
        ("ANNOSTORE_STORE__CONTACT_POINTS", contact),
        ("ANNOSTORE_STORE__KEYSPACE", format!("ops_{}", &tag[..12])),
        ("ANNOSTORE_QUEUE__KIND", "sqs".into()),
        ("ANNOSTORE_QUEUE__ENDPOINT", moto.endpoint.clone()),
        ("ANNOSTORE_QUEUE__QUEUE_NAME", format!("retry-{tag}")),
        (
            "ANNOSTORE_QUEUE__DEAD_LETTER_QUEUE_NAME",
            format!("dlq-{tag}"),
        ),
        ("ANNOSTORE_QUEUE__ACCESS_KEY_ID", "test".into()),
        ("ANNOSTORE_QUEUE__SECRET_ACCESS_KEY", "test".into()),
        ("ANNOSTORE_QUEUE__WAIT_SECONDS", "1".into()),
    ];
    env.extend(scenarios::GC_ENV.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut apply = Command::new(binary());
    apply
        .args(["schema", "apply", "--data-dir"])
        .arg(dir.path())
        .current_dir(dir.path());
    for (k, v) in &env {
        apply.env(k, v);
    }
    let out = apply.output().expect("schema apply");
    assert!(
        out.status.success(),
        "schema apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with(&env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_counts_and_bulk_ends_on_cassandra_and_sqs() {
    let Some(moto) = moto() else { return };
    scenarios::scans_counts_and_bulk_ends(&server(&moto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_under_concurrent_searches_on_cassandra_and_sqs() {
    let Some(moto) = moto() else { return };
    scenarios::rollback_under_concurrent_searches(&server(&moto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_cassandra_and_sqs() {
    let Some(moto) = moto() else { return };
    scenarios::gc_frees_what_is_no_longer_visible(&mut server(&moto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_runs_on_cassandra_and_sqs() {
    let Some(moto) = moto() else { return };
    scenarios::one_call_runs(&server(&moto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_on_cassandra_and_sqs() {
    let Some(moto) = moto() else { return };
    scenarios::admin_cli(&server(&moto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_are_listed_from_their_runs_on_cassandra_and_sqs() {
    let Some(moto) = moto() else { return };
    media::listed_from_their_runs(&server(&moto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_items_keys_follow_its_runs_on_cassandra_and_sqs() {
    let Some(moto) = moto() else { return };
    media::keys_follow_runs(&server(&moto)).await;
}

/// Receives before a message goes to the dead-letter queue, and its backoff.
const MAX_RECEIVES: u32 = 2;
const BACKOFF_SECONDS: u32 = 1;

/// A service on a fresh keyspace and fresh queues, the embedded index behind a fault
/// layer.
async fn service(moto: &Moto) -> (TempDir, Arc<Service>, Arc<FaultyIndex>) {
    let tag = Uuid::new_v4().simple().to_string();
    let store_config = CassandraConfig {
        contact_points: vec![annostore_cassandra::testkit::kassandra().to_string()],
        keyspace: format!("opsvc_{}", &tag[..12]),
        ..Default::default()
    };
    apply_schema(&store_config).await.expect("apply schema");
    let store = CassandraStore::connect(&store_config)
        .await
        .expect("connect");
    let queue_config = SqsConfig {
        endpoint: Some(moto.endpoint.clone()),
        region: "us-east-1".into(),
        queue_name: format!("ops-{tag}"),
        dead_letter_queue_name: format!("ops-{tag}-dlq"),
        max_receives: MAX_RECEIVES,
        wait_seconds: 0,
        base_backoff_seconds: BACKOFF_SECONDS,
        max_backoff_seconds: BACKOFF_SECONDS,
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
    };
    SqsRetryQueue::ensure_queues(&queue_config)
        .await
        .expect("queues");
    let queue = SqsRetryQueue::connect(&queue_config)
        .await
        .expect("connect");
    let dir = tempfile::tempdir().expect("temp dir");
    let tantivy = TantivyIndex::open(
        &dir.path().join("index"),
        IndexOptions {
            commit_interval: Duration::from_millis(20),
            ..IndexOptions::default()
        },
    )
    .expect("index");
    let faulty = FaultyIndex::new(Arc::new(tantivy));
    let engines = Engines {
        store: Arc::new(store),
        index: faulty.clone(),
        queue: Arc::new(queue),
        cache: Arc::new(MokaOperationCache::default()),
        events: Arc::new(LocalEventBus::default()),
    };
    let service = Service::new(engines, Limits::default(), Arc::new(SystemClock));
    (dir, Arc::new(service), faulty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_on_sqs_redrive_once_the_index_is_healthy() {
    let Some(moto) = moto() else { return };
    let (_dir, service, faulty) = service(&moto).await;
    // SQS's backoff is a visibility timeout: it runs out on moto's wall clock.
    let elapse: scenario::Elapse = Box::new(|| {
        Box::pin(tokio::time::sleep(Duration::from_millis(
            u64::from(BACKOFF_SECONDS) * 1_000 + 250,
        )))
    });
    scenario::dead_letters_redrive_once_the_index_is_healthy(service, faulty, MAX_RECEIVES, elapse)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_on_cassandra_finds_and_repairs_damage() {
    let Some(moto) = moto() else { return };
    let (_dir, service, _) = service(&moto).await;
    scenario::consistency_finds_and_repairs_damage(service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_cassandra_never_collects_the_active_run() {
    let Some(moto) = moto() else { return };
    let (_dir, service, _) = service(&moto).await;
    scenario::gc_never_collects_the_active_run(service).await;
}
