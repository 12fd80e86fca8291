//! `annostore serve` on the distributed engines that can run here: the Cassandra store
//! on the in-process CQL server kassandra, the SQS retry queue on moto's server, and
//! Kafka events on librdkafka's mock cluster (the index stays embedded: no
//! Elasticsearch runs here). Checks the wiring end to end, from configuration in the
//! environment: `schema apply`, a run and the run that replaces it, a restart (the
//! truth is in Cassandra, not in the node), and `reconcile --once`.

use annostore_sqs::testkit::moto;
use annostore_tests::{Server, binary, s};
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use std::process::Command;
use uuid::Uuid;

fn items(n: usize, label: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"media_id": "m", "start_ms": i * 10, "end_ms": i * 10 + 5, "label": label}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_cassandra_sqs_and_kafka() {
    let Some(moto) = moto() else { return };
    let kafka = MockCluster::new(1).expect("librdkafka mock cluster");
    let topic = format!("events-{}", Uuid::new_v4().simple());
    // The mock cluster has no CreateTopics: the topic exists before `schema apply`,
    // which must find it there.
    kafka.create_topic(&topic, 3, 1).expect("create topic");
    let tag = Uuid::new_v4().simple().to_string();
    let contact = format!("[\"{}\"]", annostore_cassandra::testkit::kassandra());
    let keyspace = format!("bb_{}", &tag[..12]);
    let env: Vec<(&str, String)> = vec![
        ("ANNOSTORE_STORE__KIND", "cassandra".into()),
        ("ANNOSTORE_STORE__CONTACT_POINTS", contact),
        ("ANNOSTORE_STORE__KEYSPACE", keyspace.clone()),
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
        ("ANNOSTORE_EVENTS__KIND", "kafka".into()),
        ("ANNOSTORE_EVENTS__BROKERS", kafka.bootstrap_servers()),
        ("ANNOSTORE_EVENTS__TOPIC", topic.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let dir = tempfile::tempdir().unwrap();
    let command = |args: &[&str]| {
        let mut c = Command::new(binary());
        c.args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .current_dir(dir.path());
        for (k, v) in &env {
            c.env(k, v);
        }
        c
    };
    // Before the schema, serve cannot start, and says what to do.
    let out = command(&["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&keyspace) && err.contains("annostore schema apply"),
        "{err}"
    );

    let mut apply = command(&["schema", "apply"]);
    let out = apply.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("[store] cassandra: keyspace {keyspace}")),
        "{text}"
    );
    assert!(text.contains("[index] embedded"), "{text}");
    assert!(
        text.contains(&format!("[queue] sqs: queues retry-{tag}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("[events] kafka: topic {topic} already in place")),
        "{text}"
    );
    // Idempotent.
    assert!(apply.output().unwrap().status.success());

    let mut srv = Server::start_with(&env);
    srv.register("objects", 1).await;
    let first = s(&srv.start_op("objects", 1, "movie-1").await, "id");
    srv.upsert_ok(&first, &items(3, "cat")).await;
    assert!(srv.search_all(&json!({}), 10).await.is_empty());
    srv.finish(&first).await.expect(200);
    assert_eq!(srv.search_all(&json!({}), 10).await.len(), 3);

    let second = s(&srv.start_op("objects", 1, "movie-1").await, "id");
    srv.upsert_ok(&second, &items(2, "dog")).await;
    let shown = srv.search_all(&json!({}), 10).await;
    assert!(shown.iter().all(|a| a["label"] == "cat") && shown.len() == 3);
    srv.finish(&second).await.expect(200);
    let shown = srv.search_all(&json!({}), 10).await;
    assert!(
        shown.iter().all(|a| a["label"] == "dog") && shown.len() == 2,
        "{shown:?}"
    );

    // The node keeps nothing of the truth: after a restart it reads it from Cassandra.
    srv.restart();
    let op = srv.get(&format!("/v1/operations/{first}")).await;
    assert_eq!(op.expect(200)["status"], "FINISHED");
    assert_eq!(op.expect(200)["active"], false);
    assert_eq!(srv.search_all(&json!({}), 10).await.len(), 2);

    srv.kill9();
    assert_eq!(
        srv.reconcile_once()["audit"],
        json!({"checked": 1, "mismatched": 0, "repaired": 0})
    );
}
