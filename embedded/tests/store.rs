//! The store conformance suite on fjall, plus what only an embedded engine can show:
//! durability across reopen and across a crash, and group commit under concurrency.

use annostore_core::model::{ActivationReason, AnnotationType, Operation};
use annostore_core::store::{PutType, Store, StoreError};
use annostore_core::testkit::store::{self as suite, annotation, at, start_request};
use annostore_embedded::store::FjallStore;
use std::sync::Arc;
use tempfile::TempDir;
use uuid::Uuid;

fn fresh() -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FjallStore::open(dir.path()).expect("open");
    (dir, Arc::new(store))
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (dir, store) = fresh();
                suite::$name(store).await;
                drop(dir);
            }
        )*
    };
}

conformance!(
    types,
    numbering_per_key,
    upsert_counts_replaces_and_renews,
    upsert_id_conflict_writes_nothing,
    upsert_rejections,
    lapsed_lease_is_recorded_expired,
    finish_refused_while_work_pending,
    finish_activates_and_supersedes,
    finish_out_of_order_stays_inactive,
    finish_is_idempotent,
    finish_rejections,
    cancel_rules,
    list_operations_pages_and_filters,
    active_operations_one_per_key,
    pending_and_complete_work,
    annotations_of_operation_pages,
    list_operations_oldest_first_and_cursors,
    list_operations_admin_filters,
    finish_records_activation_history,
    rollback_and_roll_forward,
    a_newer_run_finishing_after_a_rollback_becomes_active,
    activation_refusals_change_nothing,
    force_expire_rules,
    begin_collection_rules,
    delete_annotations_rules,
    collected_ids_can_be_claimed_again,
    end_collection_records_freed,
    retire_then_collect_spares_the_active_run,
);

/// `run_all` itself (what other engines call) runs through on fjall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_fjall() {
    let dirs = Arc::new(parking_lot::Mutex::new(Vec::new()));
    suite::run_all(|| {
        let dirs = dirs.clone();
        async move {
            let (dir, store) = fresh();
            dirs.lock().push(dir);
            store
        }
    })
    .await;
}

fn objects_type() -> AnnotationType {
    AnnotationType {
        name: "objects".into(),
        version: 1,
        schema: serde_json::json!({"type": "object"}),
        embedding_dim: None,
        created_at: at(0),
    }
}

#[tokio::test]
async fn data_and_pending_work_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (op, done, batch, work) = {
        let store = FjallStore::open(dir.path()).unwrap();
        store.put_type(objects_type()).await.unwrap();
        let op = store
            .start_operation(start_request("objects", 1, "p"), 600, at(0))
            .await
            .unwrap();
        let batch: Vec<_> = (0..10)
            .map(|_| annotation(&op, Uuid::new_v4(), "x"))
            .collect();
        let up = store
            .upsert_annotations(op.id, &batch, at(1_000))
            .await
            .unwrap();
        let done = store
            .start_operation(start_request("objects", 1, "q"), 600, at(0))
            .await
            .unwrap();
        let done = store
            .finish_operation(done.id, at(2_000))
            .await
            .unwrap()
            .operation;
        (up.operation, done, batch, up.work)
        // The store drops here: its writer finishes and the database closes.
    };

    let store = FjallStore::open(dir.path()).unwrap();
    assert!(matches!(
        store.put_type(objects_type()).await.unwrap(),
        PutType::Unchanged(_)
    ));
    assert_eq!(store.get_operation(op.id).await.unwrap(), Some(op.clone()));
    let ids: Vec<Uuid> = batch.iter().map(|a| a.id).collect();
    let got: Vec<_> = store
        .get_annotations(&ids)
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(got, batch);
    assert_eq!(
        store.pending_work(Some(op.id), 10).await.unwrap(),
        vec![work.clone()]
    );
    assert_eq!(store.pending_work(None, 10).await.unwrap(), vec![work]);
    assert_eq!(store.active_operations().await.unwrap(), vec![done]);
    assert_eq!(
        store.lapsed_operations(at(10_000_000), 10).await.unwrap(),
        vec![op.id]
    );
    // Numbering continues where it was.
    let next = store
        .start_operation(start_request("objects", 1, "p"), 600, at(3_000))
        .await
        .unwrap();
    assert_eq!(next.operation_number, 2);
}

/// Rollbacks, the history and collections are as durable as finishes.
#[tokio::test]
async fn history_and_collections_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = start_request("objects", 1, "p");
    let (one, two, history, collected, kept) = {
        let store = FjallStore::open(dir.path()).unwrap();
        let mut runs = Vec::new();
        for i in 0..3 {
            let op = store
                .start_operation(key.clone(), 600, at(i))
                .await
                .unwrap();
            let batch = vec![annotation(&op, Uuid::new_v4(), "x")];
            let up = store
                .upsert_annotations(op.id, &batch, at(i))
                .await
                .unwrap();
            store.complete_work(&[up.work]).await.unwrap();
            store.finish_operation(op.id, at(1_000 + i)).await.unwrap();
            runs.push((op, batch));
        }
        let (one, two, three) = (&runs[0], &runs[1], &runs[2]);
        store
            .activate_operation(
                two.0.id,
                ActivationReason::Rollback,
                Some("admin".into()),
                at(2_000),
            )
            .await
            .unwrap();
        store.begin_collection(one.0.id, at(3_000)).await.unwrap();
        let freed = store
            .delete_annotations(one.0.id, &[one.1[0].id])
            .await
            .unwrap();
        let collected = store
            .end_collection(one.0.id, freed, at(4_000))
            .await
            .unwrap();
        let history = store.activations(&one.0.key(), 10).await.unwrap();
        assert_eq!(history.len(), 4);
        (one.clone(), two.0.id, history, collected, three.1.clone())
    };
    let store = FjallStore::open(dir.path()).unwrap();
    assert_eq!(store.activations(&one.0.key(), 10).await.unwrap(), history);
    assert_eq!(history[0].reason, ActivationReason::Rollback);
    let active = store.active_operations().await.unwrap();
    assert_eq!(active.iter().map(|o| o.id).collect::<Vec<_>>(), vec![two]);
    assert_eq!(active[0].activation, 4);
    assert_eq!(
        store.get_operation(one.0.id).await.unwrap(),
        Some(collected)
    );
    assert_eq!(
        store.get_annotations(&[one.1[0].id]).await.unwrap(),
        vec![None]
    );
    assert_eq!(
        store.get_annotations(&[kept[0].id]).await.unwrap(),
        vec![Some(kept[0].clone())]
    );
    // The sequence goes on from the stored history.
    let four = store.start_operation(key, 600, at(5_000)).await.unwrap();
    let plan = store.finish_operation(four.id, at(6_000)).await.unwrap();
    assert_eq!(plan.activation.unwrap().sequence, 5);
}

const CRASH_DIR: &str = "ANNOSTORE_CRASH_TEST_DIR";

/// The child half of `acknowledged_writes_survive_a_crash`: writes, prints what was
/// acknowledged, then aborts without running any destructor.
#[tokio::test]
#[ignore = "run by acknowledged_writes_survive_a_crash in a child process"]
async fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_DIR) else {
        return;
    };
    let store = FjallStore::open(&dir).unwrap();
    let op = store
        .start_operation(start_request("objects", 1, "p"), 600, at(0))
        .await
        .unwrap();
    // On a line of its own: libtest has printed "test crash_child ... " before.
    println!("\nop {}", op.id);
    for _ in 0..20 {
        let batch: Vec<_> = (0..50)
            .map(|_| annotation(&op, Uuid::new_v4(), "x"))
            .collect();
        store
            .upsert_annotations(op.id, &batch, at(1_000))
            .await
            .unwrap();
        for a in &batch {
            println!("ack {}", a.id);
        }
    }
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

#[tokio::test]
async fn acknowledged_writes_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR, dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child aborts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut op = None;
    let mut acked = Vec::new();
    for line in stdout.lines() {
        if let Some(id) = line.strip_prefix("op ") {
            op = Some(Uuid::parse_str(id).unwrap());
        } else if let Some(id) = line.strip_prefix("ack ") {
            acked.push(Uuid::parse_str(id).unwrap());
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let op = op.unwrap_or_else(|| panic!("no operation in the child's output: {stdout}{stderr}"));
    assert_eq!(acked.len(), 1_000, "child output: {stdout}");

    let store = FjallStore::open(dir.path()).unwrap();
    let got = store.get_annotations(&acked).await.unwrap();
    assert!(
        got.iter().all(Option::is_some),
        "every acknowledged annotation is there"
    );
    let op: Operation = store.get_operation(op).await.unwrap().unwrap();
    assert_eq!(op.annotation_count, 1_000);
    assert_eq!(
        store.pending_work(Some(op.id), 100).await.unwrap().len(),
        20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upserts_all_land() {
    const TASKS: usize = 8;
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 100;
    let (_dir, store) = fresh();
    let shared = store
        .start_operation(start_request("objects", 1, "shared"), 600, at(0))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..TASKS {
        let store = store.clone();
        let shared = shared.clone();
        handles.push(tokio::spawn(async move {
            // Each task writes into the shared operation and into one of its own.
            let own = store
                .start_operation(start_request("objects", 1, &format!("own-{i}")), 600, at(0))
                .await
                .unwrap();
            for _ in 0..BATCHES {
                for op in [&shared, &own] {
                    let batch: Vec<_> = (0..PER_BATCH)
                        .map(|_| annotation(op, Uuid::new_v4(), "x"))
                        .collect();
                    store
                        .upsert_annotations(op.id, &batch, at(1_000))
                        .await
                        .unwrap();
                }
            }
            own.id
        }));
    }
    let mut own_ids = Vec::new();
    for h in handles {
        own_ids.push(h.await.unwrap());
    }
    let shared = store.get_operation(shared.id).await.unwrap().unwrap();
    assert_eq!(
        shared.annotation_count,
        (TASKS * BATCHES * PER_BATCH) as u64
    );
    for id in own_ids {
        let own = store.get_operation(id).await.unwrap().unwrap();
        assert_eq!(own.annotation_count, (BATCHES * PER_BATCH) as u64);
    }
    assert_eq!(
        store.pending_work(None, 10_000).await.unwrap().len(),
        TASKS * BATCHES * 2
    );
    assert_eq!(
        store
            .annotations_of_operation(shared.id, None, 100_000)
            .await
            .unwrap()
            .len(),
        TASKS * BATCHES * PER_BATCH
    );
}

/// Two operations race to claim the same ids, round after round. Ownership is read off
/// the writer (see `store/recent.rs`), so this is where a stale read would let both
/// claims through: exactly one must win each round, and the ids must be its.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_of_one_id_have_one_winner() {
    const ROUNDS: usize = 200;
    let (_dir, store) = fresh();
    let mut ops = Vec::new();
    for p in ["left", "right"] {
        let op = store
            .start_operation(start_request("objects", 1, p), 600, at(0))
            .await
            .unwrap();
        ops.push(op);
    }
    for round in 0..ROUNDS {
        let contested: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut tasks = Vec::new();
        for op in &ops {
            let (store, op, contested) = (store.clone(), op.clone(), contested.clone());
            tasks.push(tokio::spawn(async move {
                // Some ids of its own too, so a loser that wrote anything would show.
                let mut batch: Vec<_> = (0..50)
                    .map(|_| annotation(&op, Uuid::new_v4(), "own"))
                    .collect();
                batch.extend(contested.iter().map(|id| annotation(&op, *id, "contested")));
                store.upsert_annotations(op.id, &batch, at(1_000)).await
            }));
        }
        let mut winners = Vec::new();
        for (op, task) in ops.iter().zip(tasks) {
            match task.await.unwrap() {
                Ok(_) => winners.push(op.id),
                Err(StoreError::IdConflict { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let owners: Vec<Uuid> = store
            .get_annotations(&contested)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.expect("claimed").operation_id)
            .collect();
        assert_eq!(owners, vec![winners[0]; 3], "round {round}");
    }
    let counts: Vec<u64> = annotation_counts(&store, &ops).await;
    assert_eq!(counts.iter().sum::<u64>(), (ROUNDS * 53) as u64);
}

async fn annotation_counts(store: &Arc<dyn Store>, ops: &[Operation]) -> Vec<u64> {
    let mut out = Vec::new();
    for op in ops {
        out.push(
            store
                .get_operation(op.id)
                .await
                .unwrap()
                .unwrap()
                .annotation_count,
        );
    }
    out
}
