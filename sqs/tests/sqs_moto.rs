//! The SQS retry queue against a real moto server: the queue conformance suite, and what
//! is SQS's own (redrive, queue setup, message size, backoff by visibility, corrupt
//! messages).

use annostore_sqs::testkit as moto;

use annostore_core::queue::{QueueError, RetryQueue};
use annostore_core::store::{IndexWork, IndexWorkKind};
use annostore_core::testkit::queue::{self as suite, QueueFixture};
use annostore_sqs::{SqsConfig, SqsRetryQueue};
use aws_sdk_sqs::types::QueueAttributeName;
use moto::Moto;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A setting for fresh queues on `moto`: backoffs of 1 s, no long-poll.
fn config(moto: &Moto) -> SqsConfig {
    let name = format!("annostore-test-{}", Uuid::new_v4().simple());
    SqsConfig {
        endpoint: Some(moto.endpoint.clone()),
        region: "us-east-1".into(),
        dead_letter_queue_name: format!("{name}-dlq"),
        queue_name: name,
        max_receives: 3,
        wait_seconds: 0,
        base_backoff_seconds: 1,
        max_backoff_seconds: 1,
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
    }
}

async fn queue(cfg: &SqsConfig) -> SqsRetryQueue {
    SqsRetryQueue::ensure_queues(cfg).await.unwrap();
    SqsRetryQueue::connect(cfg).await.unwrap()
}

/// Lets `seconds` of backoff run out (plus a margin: moto compares wall-clock times).
async fn wait_out(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds + 0.25)).await;
}

async fn raw_client(cfg: &SqsConfig) -> aws_sdk_sqs::Client {
    let creds = aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(cfg.region.clone()))
        .endpoint_url(cfg.endpoint.clone().unwrap())
        .credentials_provider(creds)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

async fn url(client: &aws_sdk_sqs::Client, name: &str) -> String {
    client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

fn work(ids: usize) -> IndexWork {
    IndexWork {
        id: Uuid::now_v7(),
        operation_id: Uuid::now_v7(),
        kind: IndexWorkKind::Upsert {
            annotation_ids: (0..ids).map(|_| Uuid::new_v4()).collect(),
        },
    }
}

#[tokio::test]
async fn conformance() {
    let Some(moto) = moto::moto() else { return };
    suite::run_all(|| {
        let cfg = config(&moto);
        async move {
            let q = queue(&cfg).await;
            QueueFixture {
                queue: Arc::new(q),
                max_receives: cfg.max_receives,
                elapse_backoff: Box::new(move || Box::pin(wait_out(1.0))),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn backoff_doubles_through_change_message_visibility() {
    let Some(moto) = moto::moto() else { return };
    let cfg = SqsConfig {
        max_receives: 5,
        base_backoff_seconds: 1,
        max_backoff_seconds: 4,
        ..config(&moto)
    };
    let q = queue(&cfg).await;
    let w = work(2);
    q.enqueue(&w).await.unwrap();

    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receive_count, 1);
    wait_out(1.0).await;

    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1, "visible again after the 1 s backoff");
    assert_eq!(got[0].receive_count, 2);
    // Second backoff: 2 s. After 1.25 s it is still hidden...
    wait_out(1.0).await;
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "the second backoff is 2 s, not 1 s"
    );
    // ...and after 2.5 s it is back.
    wait_out(1.0).await;
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1, "visible again after the 2 s backoff");
    assert_eq!(got[0].receive_count, 3);
    assert_eq!(got[0].work, w);
    q.ack(&got[0].receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn long_poll_returns_work_sent_while_waiting() {
    let Some(moto) = moto::moto() else { return };
    let cfg = SqsConfig {
        wait_seconds: 5,
        ..config(&moto)
    };
    let q = Arc::new(queue(&cfg).await);
    let w = work(1);
    let sender = {
        let q = q.clone();
        let w = w.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            q.enqueue(&w).await.unwrap();
        })
    };
    let got = q.receive(10).await.unwrap();
    sender.await.unwrap();
    assert_eq!(got.len(), 1, "the long-poll waited for the message");
    assert_eq!(got[0].work, w);
}

#[tokio::test]
async fn redrive_moves_to_dead_letters_and_the_peek_keeps_them() {
    let Some(moto) = moto::moto() else { return };
    let cfg = SqsConfig {
        max_receives: 2,
        ..config(&moto)
    };
    let q = queue(&cfg).await;
    let w = work(3);
    q.enqueue(&w).await.unwrap();
    for n in 1..=2 {
        let got = q.receive(10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, n);
        wait_out(1.0).await;
    }
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "redriven, not delivered"
    );
    assert_eq!(q.depth().await.unwrap(), 0);
    assert_eq!(q.dead_letter_count().await.unwrap(), 1);
    // A peek leaves the dead letters where they are, however often.
    for _ in 0..3 {
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].work, w);
        assert!(dead[0].receive_count >= 2, "{}", dead[0].receive_count);
        assert_eq!(q.dead_letter_count().await.unwrap(), 1);
    }
    // A dead letter's receipt acknowledges nothing.
    let dead = q.dead_letters(1).await.unwrap();
    q.ack(&dead[0].receipt).await.unwrap();
    assert_eq!(q.dead_letter_count().await.unwrap(), 1);
    assert!(q.dead_letters(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn ensure_queues_is_idempotent_and_updates_the_redrive() {
    let Some(moto) = moto::moto() else { return };
    let cfg = config(&moto);
    SqsRetryQueue::ensure_queues(&cfg).await.unwrap();
    SqsRetryQueue::ensure_queues(&cfg).await.unwrap();
    let changed = SqsConfig {
        max_receives: 7,
        ..cfg.clone()
    };
    SqsRetryQueue::ensure_queues(&changed).await.unwrap();

    let raw = raw_client(&cfg).await;
    let main = url(&raw, &cfg.queue_name).await;
    let dlq = url(&raw, &cfg.dead_letter_queue_name).await;
    let attrs = raw
        .get_queue_attributes()
        .queue_url(&main)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    let dlq_arn = raw
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    assert_eq!(redrive["deadLetterTargetArn"], dlq_arn.as_str());
    let max = &redrive["maxReceiveCount"];
    assert!(
        max == 7 || max == "7",
        "maxReceiveCount follows the setting: {redrive}"
    );
    assert_eq!(
        attrs[&QueueAttributeName::MessageRetentionPeriod],
        "1209600"
    );

    let q = SqsRetryQueue::connect(&changed).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn connect_to_missing_queues_says_what_to_run() {
    let Some(moto) = moto::moto() else { return };
    let cfg = config(&moto);
    let err = SqsRetryQueue::connect(&cfg).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, QueueError::Unavailable(_)), "{msg}");
    assert!(msg.contains(&cfg.queue_name), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(msg.contains("annostore schema apply"), "{msg}");
}

#[tokio::test]
async fn unreachable_sqs_is_unavailable_with_context() {
    // Nothing listens on a port just freed (no moto needed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = SqsConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        ..SqsConfig::default()
    };
    let err = SqsRetryQueue::connect(&cfg).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, QueueError::Unavailable(_)), "{msg}");
    assert!(msg.contains("GetQueueUrl"), "{msg}");
    assert!(msg.contains("annostore-index-retry"), "{msg}");
}

#[tokio::test]
async fn the_largest_batch_round_trips() {
    let Some(moto) = moto::moto() else { return };
    let q = queue(&config(&moto)).await;
    let w = work(10_000); // Limits::max_batch
    q.enqueue(&w).await.unwrap();
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].work, w);
    // One that SQS would refuse is refused before it is sent.
    let too_big = work(13_000);
    assert!(matches!(
        q.enqueue(&too_big).await,
        Err(QueueError::TooLarge { .. })
    ));
    assert_eq!(q.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn a_corrupt_message_does_not_block_the_queue() {
    let Some(moto) = moto::moto() else { return };
    let cfg = SqsConfig {
        max_receives: 2,
        ..config(&moto)
    };
    let q = queue(&cfg).await;
    let raw = raw_client(&cfg).await;
    let main = url(&raw, &cfg.queue_name).await;
    raw.send_message()
        .queue_url(&main)
        .message_body("{\"not\":\"index work\"}")
        .send()
        .await
        .unwrap();
    let w = work(1);
    q.enqueue(&w).await.unwrap();

    let got = q.receive(10).await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "the good message is delivered, the bad one not"
    );
    assert_eq!(got[0].work, w);
    q.ack(&got[0].receipt).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        1,
        "the corrupt one is backing off"
    );

    // It backs off like any message, and the redrive takes it after max_receives.
    wait_out(1.0).await;
    assert!(q.receive(10).await.unwrap().is_empty());
    wait_out(1.0).await;
    assert!(q.receive(10).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap(), 0);
    assert_eq!(q.dead_letter_count().await.unwrap(), 1);
    assert!(
        q.dead_letters(10).await.unwrap().is_empty(),
        "the peek skips what it cannot decode"
    );
}

/// Puts work straight into the dead-letter queue (as the redrive would), raw bodies
/// included.
async fn bury(cfg: &SqsConfig, bodies: &[String]) {
    let raw = raw_client(cfg).await;
    let dlq = url(&raw, &cfg.dead_letter_queue_name).await;
    for b in bodies {
        raw.send_message()
            .queue_url(&dlq)
            .message_body(b)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn dead_letter_scans_go_past_one_receive_and_give_the_rest_back() {
    let Some(moto) = moto::moto() else { return };
    let cfg = config(&moto);
    let q = queue(&cfg).await;
    let all: Vec<IndexWork> = (0..25).map(|_| work(1)).collect();
    let bodies: Vec<String> = all
        .iter()
        .map(|w| annostore_sqs::body::encode(w).unwrap())
        .collect();
    bury(&cfg, &bodies).await;
    assert_eq!(q.dead_letter_count().await.unwrap(), 25);
    // Each of them is found, wherever a receive puts it.
    for w in [&all[0], &all[12], &all[24]] {
        let d = q.dead_letter(w.id).await.unwrap().expect("found");
        assert_eq!(&d.work, w);
    }
    assert!(q.dead_letter(Uuid::now_v7()).await.unwrap().is_none());
    // What the scans held is visible again at once: a peek sees all of it.
    assert_eq!(q.dead_letters(100).await.unwrap().len(), 25);
    let named = [all[3].id, all[17].id, all[21].id];
    assert_eq!(q.purge_dead_letters(Some(&named)).await.unwrap(), 3);
    assert_eq!(q.redrive(Some(&[all[5].id])).await.unwrap(), 1);
    assert_eq!(q.dead_letter_count().await.unwrap(), 21);
    assert_eq!(q.depth().await.unwrap(), 1);
    assert_eq!(q.purge_dead_letters(None).await.unwrap(), 21);
    assert_eq!(q.dead_letter_count().await.unwrap(), 0);
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].work.id, got[0].receive_count), (all[5].id, 1));
}

#[tokio::test]
async fn redrive_of_all_takes_corrupt_letters_and_every_copy() {
    let Some(moto) = moto::moto() else { return };
    let cfg = config(&moto);
    let q = queue(&cfg).await;
    let (w1, w2) = (work(1), work(2));
    let b1 = annostore_sqs::body::encode(&w1).unwrap();
    let b2 = annostore_sqs::body::encode(&w2).unwrap();
    // w1 twice (a standard queue does not deduplicate), and a body nothing decodes.
    bury(
        &cfg,
        &[b1.clone(), b1, b2, "{\"not\":\"index work\"}".into()],
    )
    .await;
    assert_eq!(q.dead_letter_count().await.unwrap(), 4);
    assert_eq!(
        q.redrive(Some(&[w1.id])).await.unwrap(),
        2,
        "both copies of the work"
    );
    assert_eq!(q.dead_letter_count().await.unwrap(), 2);
    assert_eq!(
        q.redrive(None).await.unwrap(),
        2,
        "all: the corrupt one goes back too"
    );
    assert_eq!(q.dead_letter_count().await.unwrap(), 0);
    assert_eq!(q.depth().await.unwrap(), 4);
    // Delivered: the good ones; the corrupt one is skipped by receive, as always.
    let got = q.receive(10).await.unwrap();
    let ids: Vec<Uuid> = got.iter().map(|d| d.work.id).collect();
    assert_eq!(ids.iter().filter(|i| **i == w1.id).count(), 2);
    assert_eq!(ids.iter().filter(|i| **i == w2.id).count(), 1);
    assert!(got.iter().all(|d| d.receive_count == 1));
}
