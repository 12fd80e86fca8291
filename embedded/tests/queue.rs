//! The retry queue conformance suite on fjall (manual clock, so no sleeping), plus
//! fjall-specific behaviour: de-duplicated enqueues, stale receipts, reopen.

use annostore_core::clock::ManualClock;
use annostore_core::queue::RetryQueue;
use annostore_core::testkit::queue::{self as suite, QueueFixture, work};
use annostore_core::testkit::store::at;
use annostore_embedded::queue::QueueOptions;
use annostore_embedded::store::FjallStore;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const MAX_BACKOFF: Duration = Duration::from_secs(300);

fn options(clock: &ManualClock, max_receives: u32) -> QueueOptions {
    QueueOptions {
        base_backoff: Duration::from_millis(500),
        max_backoff: MAX_BACKOFF,
        max_receives,
        clock: Arc::new(clock.clone()),
    }
}

fn fixture() -> (TempDir, QueueFixture) {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    let clock = ManualClock::new(at(0));
    let queue = Arc::new(store.retry_queue(options(&clock, 3)));
    let fixture = QueueFixture {
        queue,
        max_receives: 3,
        elapse_backoff: Box::new(move || {
            clock.advance_ms(MAX_BACKOFF.as_millis() as i64 + 1);
            Box::pin(async {})
        }),
    };
    (dir, fixture)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (dir, fixture) = fixture();
                suite::$name(fixture).await;
                drop(dir);
            }
        )*
    };
}

conformance!(
    enqueue_receive_ack,
    receive_respects_max,
    backoff_hides_received_items,
    dead_letter_after_max_receives,
    dead_letters_inspect_by_work_id,
    redrive_by_ids,
    redrive_all,
    purge_dead_letters_by_ids_and_all,
);

#[tokio::test]
async fn run_all_on_fjall() {
    let dirs = Arc::new(parking_lot::Mutex::new(Vec::new()));
    suite::run_all(|| {
        let dirs = dirs.clone();
        async move {
            let (dir, fixture) = fixture();
            dirs.lock().push(dir);
            fixture
        }
    })
    .await;
}

#[tokio::test]
async fn backoff_doubles_and_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    let clock = ManualClock::new(at(0));
    let q = store.retry_queue(QueueOptions {
        max_backoff: Duration::from_millis(1_500),
        ..options(&clock, 10)
    });
    q.enqueue(&work()).await.unwrap();
    // Backoffs after receive 1, 2, 3, 4: 500, 1000, 1500 (capped), 1500.
    for (n, backoff) in [(1, 500), (2, 1_000), (3, 1_500), (4, 1_500)] {
        let got = q.receive(10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, n);
        clock.advance_ms(backoff - 1);
        assert!(q.receive(10).await.unwrap().is_empty(), "still backing off");
        clock.advance_ms(1);
    }
    assert_eq!(q.receive(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn zero_backoff_redelivers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    let clock = ManualClock::new(at(0));
    let q = store.retry_queue(QueueOptions {
        base_backoff: Duration::ZERO,
        ..options(&clock, 2)
    });
    let w = work();
    q.enqueue(&w).await.unwrap();
    assert_eq!(q.receive(10).await.unwrap()[0].receive_count, 1);
    assert_eq!(q.receive(10).await.unwrap()[0].receive_count, 2);
    assert!(q.receive(10).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap(), 0);
    assert_eq!(q.dead_letters(10).await.unwrap()[0].work, w);
}

#[tokio::test]
async fn enqueue_of_queued_work_does_not_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    let clock = ManualClock::new(at(0));
    let q = store.retry_queue(options(&clock, 10));
    let w = work();
    q.enqueue(&w).await.unwrap();
    q.enqueue(&w).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
    let got = q.receive(10).await.unwrap();
    q.enqueue(&w).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        1,
        "still queued while backing off"
    );
    q.ack(&got[0].receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    // Once acknowledged it can be queued again.
    q.enqueue(&w).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn stale_receipt_does_not_remove_a_redelivered_item() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    let clock = ManualClock::new(at(0));
    let q = store.retry_queue(options(&clock, 10));
    q.enqueue(&work()).await.unwrap();
    let first = q.receive(10).await.unwrap();
    clock.advance_ms(1_000);
    let second = q.receive(10).await.unwrap();
    assert_eq!(second.len(), 1);
    q.ack(&first[0].receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
    q.ack(&second[0].receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn queue_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at(0));
    let (queued, dead) = (work(), work());
    {
        let store = FjallStore::open(dir.path()).unwrap();
        let q = store.retry_queue(QueueOptions {
            base_backoff: Duration::ZERO,
            ..options(&clock, 1)
        });
        q.enqueue(&dead).await.unwrap();
        q.receive(10).await.unwrap();
        q.receive(10).await.unwrap(); // second receive: dead-lettered
        q.enqueue(&queued).await.unwrap();
        // The queue holds the database open too: it closes when both are dropped.
    }
    let store = FjallStore::open(dir.path()).unwrap();
    let q = store.retry_queue(options(&clock, 10));
    assert_eq!(q.depth().await.unwrap(), 1);
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].work, queued);
    assert_eq!(q.dead_letters(10).await.unwrap()[0].work, dead);
}

/// Dead-letters `w` (one receive past `max_receives` = 1, no backoff).
async fn kill(q: &dyn RetryQueue, w: &annostore_core::store::IndexWork) {
    q.enqueue(w).await.unwrap();
    q.receive(10).await.unwrap();
    q.receive(10).await.unwrap();
    assert!(q.dead_letter(w.id).await.unwrap().is_some());
}

#[tokio::test]
async fn redrive_replaces_a_queued_copy_of_the_same_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    let clock = ManualClock::new(at(0));
    let q = store.retry_queue(QueueOptions {
        base_backoff: Duration::ZERO,
        ..options(&clock, 1)
    });
    let w = work();
    kill(&q, &w).await;
    // The sweep re-enqueues the pending record while its old message is dead: a copy
    // is queued beside the dead letter.
    q.enqueue(&w).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
    assert_eq!(q.redrive(Some(&[w.id])).await.unwrap(), 1);
    assert_eq!(q.depth().await.unwrap(), 1, "one copy of the work");
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].work.id, got[0].receive_count), (w.id, 1));
    q.ack(&got[0].receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    assert!(q.receive(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn redrives_and_purges_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at(0));
    let opts = || QueueOptions {
        base_backoff: Duration::ZERO,
        ..options(&clock, 1)
    };
    let (back, purged, kept) = (work(), work(), work());
    {
        let store = FjallStore::open(dir.path()).unwrap();
        let q = store.retry_queue(opts());
        for w in [&back, &purged, &kept] {
            kill(&q, w).await;
        }
        assert_eq!(q.redrive(Some(&[back.id])).await.unwrap(), 1);
        assert_eq!(q.purge_dead_letters(Some(&[purged.id])).await.unwrap(), 1);
    }
    let store = FjallStore::open(dir.path()).unwrap();
    let q = store.retry_queue(opts());
    assert!(q.dead_letter(back.id).await.unwrap().is_none());
    assert!(q.dead_letter(purged.id).await.unwrap().is_none());
    assert_eq!(q.dead_letter(kept.id).await.unwrap().unwrap().work, kept);
    assert_eq!(q.dead_letter_count().await.unwrap(), 1);
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].work.id, got[0].receive_count), (back.id, 1));
}
