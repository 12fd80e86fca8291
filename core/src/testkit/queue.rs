//! Conformance suite for the `queue` seam.
//!
//! Every function takes a fresh, empty queue in a [`QueueFixture`] and panics on a
//! failure. Time is the fixture's business: an engine with an injectable clock moves it
//! in `elapse_backoff`; a real remote queue would wait there instead.

use crate::queue::{Delivery, RetryQueue};
use crate::store::{IndexWork, IndexWorkKind};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use uuid::Uuid;

pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct QueueFixture {
    pub queue: Arc<dyn RetryQueue>,
    /// Receives after which an item goes to the dead letters (at least 2).
    pub max_receives: u32,
    /// Makes the backoff of every received item run out (the longest one included).
    /// The backoff must be long enough that a receive right after another sees nothing.
    pub elapse_backoff: Box<dyn Fn() -> BoxFuture + Send + Sync>,
}

pub fn work() -> IndexWork {
    IndexWork {
        id: Uuid::now_v7(),
        operation_id: Uuid::now_v7(),
        kind: IndexWorkKind::Upsert {
            annotation_ids: vec![Uuid::new_v4(), Uuid::new_v4()],
        },
    }
}

fn works(d: &[Delivery]) -> HashSet<Uuid> {
    d.iter().map(|d| d.work.id).collect()
}

/// Every test of the suite, each on a fresh queue from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueFixture>,
{
    enqueue_receive_ack(make().await).await;
    receive_respects_max(make().await).await;
    backoff_hides_received_items(make().await).await;
    dead_letter_after_max_receives(make().await).await;
    dead_letters_inspect_by_work_id(make().await).await;
    redrive_by_ids(make().await).await;
    redrive_all(make().await).await;
    purge_dead_letters_by_ids_and_all(make().await).await;
}

pub async fn enqueue_receive_ack(f: QueueFixture) {
    let q = f.queue.as_ref();
    assert_eq!(q.depth().await.unwrap(), 0);
    assert!(q.receive(10).await.unwrap().is_empty());
    let (w1, w2) = (work(), work());
    q.enqueue(&w1).await.unwrap();
    q.enqueue(&w2).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 2);

    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(works(&got), HashSet::from([w1.id, w2.id]));
    for d in &got {
        assert_eq!(d.receive_count, 1);
        let expected = if d.work.id == w1.id { &w1 } else { &w2 };
        assert_eq!(&d.work, expected, "the work round-trips whole");
    }
    // Received but not acknowledged: still counted.
    assert_eq!(q.depth().await.unwrap(), 2);
    for d in &got {
        q.ack(&d.receipt).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 0);
    // Acknowledging again, or something unknown, is fine.
    q.ack(&got[0].receipt).await.unwrap();
    q.ack("not-a-receipt").await.unwrap();
    (f.elapse_backoff)().await;
    assert!(q.receive(10).await.unwrap().is_empty());
    assert!(q.dead_letters(10).await.unwrap().is_empty());
}

pub async fn receive_respects_max(f: QueueFixture) {
    let q = f.queue.as_ref();
    let all: Vec<IndexWork> = (0..5).map(|_| work()).collect();
    for w in &all {
        q.enqueue(w).await.unwrap();
    }
    let first = q.receive(2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = q.receive(10).await.unwrap();
    assert_eq!(rest.len(), 3);
    let seen: HashSet<Uuid> = works(&first).union(&works(&rest)).copied().collect();
    assert_eq!(seen, all.iter().map(|w| w.id).collect());
    assert!(q.receive(10).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap(), 5);
}

pub async fn backoff_hides_received_items(f: QueueFixture) {
    let q = f.queue.as_ref();
    let w = work();
    q.enqueue(&w).await.unwrap();
    let first = q.receive(10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert!(
        q.receive(10).await.unwrap().is_empty(),
        "invisible during its backoff"
    );
    assert_eq!(q.depth().await.unwrap(), 1);

    (f.elapse_backoff)().await;
    let second = q.receive(10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].work, w);
    assert_eq!(second[0].receive_count, 2);
    assert!(q.receive(10).await.unwrap().is_empty());
    q.ack(&second[0].receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    (f.elapse_backoff)().await;
    assert!(q.receive(10).await.unwrap().is_empty());
}

pub async fn dead_letter_after_max_receives(f: QueueFixture) {
    assert!(f.max_receives >= 2);
    let q = f.queue.as_ref();
    let doomed = work();
    let healthy = work();
    q.enqueue(&doomed).await.unwrap();
    for n in 1..=f.max_receives {
        let got = q.receive(10).await.unwrap();
        assert_eq!(got.len(), 1, "receive {n}");
        assert_eq!(got[0].work, doomed);
        assert_eq!(got[0].receive_count, n);
        assert!(q.dead_letters(10).await.unwrap().is_empty());
        assert_eq!(q.dead_letter_count().await.unwrap(), 0);
        (f.elapse_backoff)().await;
    }
    q.enqueue(&healthy).await.unwrap();
    // One receive too many: the item moves aside and is not delivered.
    let got = q.receive(10).await.unwrap();
    assert_eq!(works(&got), HashSet::from([healthy.id]));
    assert_eq!(q.depth().await.unwrap(), 1);
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(q.dead_letter_count().await.unwrap(), 1);
    assert_eq!(dead[0].work, doomed);
    assert!(dead[0].receive_count >= f.max_receives);
    assert!(q.dead_letters(0).await.unwrap().is_empty());
    q.ack(&got[0].receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    (f.elapse_backoff)().await;
    assert!(q.receive(10).await.unwrap().is_empty());
    assert_eq!(q.dead_letters(10).await.unwrap().len(), 1);
}

/// Enqueues `n` works and receives until every one of them is a dead letter.
async fn dead(f: &QueueFixture, n: usize) -> Vec<IndexWork> {
    let q = f.queue.as_ref();
    let all: Vec<IndexWork> = (0..n).map(|_| work()).collect();
    for w in &all {
        q.enqueue(w).await.unwrap();
    }
    // Each round receives every item once (they are due together); one round past
    // `max_receives` moves them aside. A few spare rounds for a queue that returns
    // fewer than asked.
    for _ in 0..(f.max_receives + 1) * 3 {
        if q.dead_letter_count().await.unwrap() == n as u64 {
            break;
        }
        q.receive(10).await.unwrap();
        (f.elapse_backoff)().await;
    }
    assert_eq!(q.dead_letter_count().await.unwrap(), n as u64);
    assert_eq!(q.depth().await.unwrap(), 0);
    all
}

fn ids(w: &[IndexWork]) -> HashSet<Uuid> {
    w.iter().map(|w| w.id).collect()
}

pub async fn dead_letters_inspect_by_work_id(f: QueueFixture) {
    let q = f.queue.as_ref();
    let gone = dead(&f, 2).await;
    let queued = work();
    q.enqueue(&queued).await.unwrap();
    for w in &gone {
        let d = q.dead_letter(w.id).await.unwrap().expect("a dead letter");
        assert_eq!(&d.work, w, "the work round-trips whole");
        assert!(d.receive_count >= f.max_receives);
    }
    assert_eq!(works(&q.dead_letters(10).await.unwrap()), ids(&gone));
    assert!(q.dead_letter(Uuid::now_v7()).await.unwrap().is_none());
    assert!(
        q.dead_letter(queued.id).await.unwrap().is_none(),
        "queued work is not a dead letter"
    );
    // Inspecting moves nothing.
    assert_eq!(q.dead_letter_count().await.unwrap(), 2);
    assert_eq!(q.depth().await.unwrap(), 1);
}

pub async fn redrive_by_ids(f: QueueFixture) {
    let q = f.queue.as_ref();
    let gone = dead(&f, 3).await;
    let moved = q
        .redrive(Some(&[gone[0].id, Uuid::now_v7()]))
        .await
        .unwrap();
    assert_eq!(moved, 1, "only the dead letter named moves");
    assert!(q.dead_letter(gone[0].id).await.unwrap().is_none());
    assert!(q.dead_letter(gone[1].id).await.unwrap().is_some());
    assert_eq!(q.dead_letter_count().await.unwrap(), 2);
    assert_eq!(
        works(&q.dead_letters(10).await.unwrap()),
        ids(&gone[1..]),
        "the others stay dead"
    );
    assert_eq!(q.depth().await.unwrap(), 1);
    // Due now, its receive count starting over.
    let got = q.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].work, gone[0]);
    assert_eq!(got[0].receive_count, 1);
    // No longer dead: naming it again moves nothing.
    assert_eq!(q.redrive(Some(&[gone[0].id])).await.unwrap(), 0);
    assert_eq!(q.redrive(Some(&[])).await.unwrap(), 0);
    assert_eq!(q.dead_letter_count().await.unwrap(), 2);
    q.ack(&got[0].receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    (f.elapse_backoff)().await;
    assert!(q.receive(10).await.unwrap().is_empty());
}

pub async fn redrive_all(f: QueueFixture) {
    let q = f.queue.as_ref();
    let gone = dead(&f, 2).await;
    assert_eq!(q.redrive(None).await.unwrap(), 2);
    assert_eq!(q.dead_letter_count().await.unwrap(), 0);
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap(), 2);
    let got = q.receive(10).await.unwrap();
    assert_eq!(works(&got), ids(&gone));
    assert!(got.iter().all(|d| d.receive_count == 1));
    assert_eq!(q.redrive(None).await.unwrap(), 0, "nothing left to move");
}

pub async fn purge_dead_letters_by_ids_and_all(f: QueueFixture) {
    let q = f.queue.as_ref();
    let gone = dead(&f, 3).await;
    let queued = work();
    q.enqueue(&queued).await.unwrap();
    let purged = q
        .purge_dead_letters(Some(&[gone[0].id, Uuid::now_v7(), queued.id]))
        .await
        .unwrap();
    assert_eq!(purged, 1, "only dead letters go");
    assert!(q.dead_letter(gone[0].id).await.unwrap().is_none());
    assert_eq!(q.dead_letter_count().await.unwrap(), 2);
    assert_eq!(works(&q.dead_letters(10).await.unwrap()), ids(&gone[1..]));
    assert_eq!(q.depth().await.unwrap(), 1, "queued work stays");
    assert_eq!(q.purge_dead_letters(Some(&[gone[0].id])).await.unwrap(), 0);
    // A purged letter cannot be redriven.
    assert_eq!(q.redrive(Some(&[gone[0].id])).await.unwrap(), 0);

    assert_eq!(q.purge_dead_letters(None).await.unwrap(), 2);
    assert_eq!(q.dead_letter_count().await.unwrap(), 0);
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    for w in &gone {
        assert!(q.dead_letter(w.id).await.unwrap().is_none());
    }
    assert_eq!(q.purge_dead_letters(None).await.unwrap(), 0);
    assert_eq!(q.redrive(None).await.unwrap(), 0);
    let got = q.receive(10).await.unwrap();
    assert_eq!(works(&got), HashSet::from([queued.id]));
}
