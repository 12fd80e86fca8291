//! The tantivy index: the conformance suite, persistence, concurrency and paging
//! (the property test against a brute-force model is in `index_model.rs`).

use annostore_core::index::Existing;
use annostore_core::index::{Index, IndexError, IndexQuery, Scope};
use annostore_core::model::{Annotation, SearchFilter, SortKey};
use annostore_core::query::SortOrder;
use annostore_core::testkit::index as suite;
use annostore_embedded::index::{IndexOptions, TantivyIndex};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Default sizing, committing at once: these tests wait for every upsert.
fn quick() -> IndexOptions {
    IndexOptions {
        commit_interval: Duration::from_millis(1),
        ..IndexOptions::default()
    }
}

fn small() -> IndexOptions {
    IndexOptions {
        memory_budget_bytes: 32 << 20,
        indexing_threads: 1,
        ..quick()
    }
}

/// Commits only when asked (or after an hour).
fn lazy(commit_docs: usize) -> IndexOptions {
    IndexOptions {
        commit_interval: Duration::from_secs(3_600),
        commit_docs,
        ..small()
    }
}

/// Documents in the index's files, as a second reader of the directory sees them.
fn on_disk(dir: &std::path::Path) -> u64 {
    let index = tantivy::Index::open_in_dir(dir).unwrap();
    index.reader().unwrap().searcher().num_docs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_searchable_at_once_and_durable_when_refresh_asks() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(TantivyIndex::open(dir.path(), lazy(1_000)).unwrap());
    let op = Uuid::new_v4();
    let xs: Vec<Annotation> = (0..10).map(|i| suite::annotation(op, "m", i, i)).collect();
    index.upsert(&xs, Existing::Unknown).await.unwrap();
    // Searchable without a commit (none can happen now: an hour, or 1,000 documents).
    assert_eq!(index.count_operation(op).await.unwrap(), 10);
    assert_eq!(index.uncommitted_docs(), 10);
    assert_eq!(on_disk(dir.path()), 0);
    let syncing = {
        let index = index.clone();
        tokio::spawn(async move { index.sync().await })
    };
    tokio::task::yield_now().await;
    assert!(!syncing.is_finished(), "durable without a commit");
    index.refresh().await;
    syncing.await.unwrap().unwrap();
    assert_eq!(on_disk(dir.path()), 10);
    assert_eq!(index.count_operation(op).await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enough_held_documents_commit_without_asking() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), lazy(10)).unwrap();
    let op = Uuid::new_v4();
    let xs: Vec<Annotation> = (0..10).map(|i| suite::annotation(op, "m", i, i)).collect();
    index.upsert(&xs, Existing::Unknown).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(60), index.sync())
        .await
        .expect("ten documents are enough for a commit")
        .unwrap();
    assert_eq!(on_disk(dir.path()), 10);
    assert_eq!(index.count_operation(op).await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let index: Arc<dyn Index> = Arc::new(TantivyIndex::open(dir.path(), quick()).unwrap());
    suite::run_all(index.clone()).await;
    suite::run_operating(index.clone()).await;
    suite::run_search_language(index).await;
}

/// Every document searched while fresh: the index never commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_with_every_document_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), lazy(usize::MAX)).unwrap();
    let index: Arc<dyn Index> = Arc::new(index);
    suite::run_all(index.clone()).await;
    suite::run_operating(index.clone()).await;
    suite::run_search_language(index).await;
}

/// Every document committed before anything reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_with_every_document_committed() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), lazy(usize::MAX)).unwrap();
    let index: Arc<dyn Index> = Arc::new(Committing(index));
    suite::run_all(index.clone()).await;
    suite::run_operating(index.clone()).await;
    suite::run_search_language(index).await;
}

/// An index whose writes return once committed.
struct Committing(TantivyIndex);

#[async_trait::async_trait]
impl Index for Committing {
    async fn upsert(&self, xs: &[Annotation], existing: Existing<'_>) -> Result<(), IndexError> {
        self.0.upsert(xs, existing).await?;
        self.0.refresh().await;
        self.0.sync().await
    }
    async fn search(&self, q: &IndexQuery) -> Result<Vec<annostore_core::index::Hit>, IndexError> {
        self.0.search(q).await
    }
    async fn knn(
        &self,
        q: &annostore_core::index::KnnQuery,
    ) -> Result<Vec<annostore_core::index::KnnHit>, IndexError> {
        self.0.knn(q).await
    }
    async fn aggregate(
        &self,
        q: &annostore_core::index::AggregateQuery,
    ) -> Result<annostore_core::query::Aggregates, IndexError> {
        self.0.aggregate(q).await
    }
    async fn count_operation(&self, op: Uuid) -> Result<u64, IndexError> {
        self.0.count_operation(op).await
    }
    async fn delete_operation(&self, op: Uuid) -> Result<u64, IndexError> {
        Index::delete_operation(&self.0, op).await
    }
}

#[tokio::test]
async fn score_order_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), small()).unwrap();
    let got = index
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: Scope::Operation(Uuid::new_v4()),
            order: SortOrder::Score,
            after: None,
            limit: 10,
        })
        .await;
    assert!(matches!(got, Err(IndexError::Unanswerable(_))), "{got:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn conformance_suite_on_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), small()).unwrap();
    suite::run_all(Arc::new(index)).await;
}

#[tokio::test]
async fn reopen_keeps_documents() {
    let dir = tempfile::tempdir().unwrap();
    let op = Uuid::new_v4();
    let xs: Vec<Annotation> = (0..50)
        .map(|i| suite::annotation(op, &format!("m{}", i % 3), i, i + 1))
        .collect();
    {
        let index = TantivyIndex::open(dir.path(), small()).unwrap();
        index.upsert(&xs, Existing::Unknown).await.unwrap();
        assert_eq!(index.num_docs(), 50);
    }
    let index: Arc<dyn Index> = Arc::new(TantivyIndex::open(dir.path(), small()).unwrap());
    assert_eq!(index.count_operation(op).await.unwrap(), 50);
    let hits = suite::search_all(&index, &SearchFilter::default(), &Scope::Operation(op), 7).await;
    let got: Vec<SortKey> = hits.into_iter().map(|h| h.key).collect();
    assert_eq!(got, suite::sorted_keys(&xs));
}

#[tokio::test]
async fn delete_operation_removes_its_documents() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), small()).unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let xa: Vec<Annotation> = (0..20).map(|i| suite::annotation(a, "m", i, i)).collect();
    let xb: Vec<Annotation> = (0..5).map(|i| suite::annotation(b, "m", i, i)).collect();
    index.upsert(&xa, Existing::Unknown).await.unwrap();
    index.upsert(&xb, Existing::Unknown).await.unwrap();
    assert_eq!(index.num_docs(), 25);
    index.delete_operation(a).await.unwrap();
    assert_eq!(index.count_operation(a).await.unwrap(), 0);
    assert_eq!(index.count_operation(b).await.unwrap(), 5);
    assert_eq!(index.num_docs(), 5);
}

/// Time order reads a page media item by media item when matches are many and spread
/// out, and falls back to every match when they sit in the last media ids (the walk
/// gives up): both must page exactly as sorting every visible match does, deleted
/// documents and hidden runs included.
#[tokio::test]
async fn time_order_pages_equal_brute_force_whichever_way_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), small()).unwrap();
    let ops: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    // Every segment holds every media item, in an order that is not theirs.
    let all: Vec<Annotation> = (0..50)
        .flat_map(|i| (0..40).rev().map(move |m| (i, m)))
        .map(|(i, m)| Annotation {
            // "late": the last media ids, and one document per segment in the first.
            label: Some(
                if m >= 35 || (m == 0 && i % 25 == 0) {
                    "late"
                } else {
                    "common"
                }
                .into(),
            ),
            ..suite::annotation(ops[m], &format!("m{m:02}"), i % 7, i % 7 + 1)
        })
        .collect();
    for half in all.chunks(1_000) {
        index.upsert(half, Existing::Unknown).await.unwrap();
    }
    // A deleted run (alive bitsets) and a hidden one (scope).
    index.delete_operation(ops[1]).await.unwrap();
    let shown: Vec<Uuid> = ops.iter().copied().filter(|op| *op != ops[2]).collect();
    let scope = suite::visible(&shown);
    for label in ["common", "late"] {
        let mut want: Vec<SortKey> = all
            .iter()
            .filter(|a| a.label.as_deref() == Some(label))
            .filter(|a| a.operation_id != ops[1] && a.operation_id != ops[2])
            .map(SortKey::of)
            .collect();
        want.sort();
        for limit in [1, 3, 7, 10, 60, 500] {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let hits = index
                    .search(&IndexQuery {
                        filter: SearchFilter {
                            label: Some(label.into()),
                            ..SearchFilter::default()
                        },
                        scope: scope.clone(),
                        order: SortOrder::Time,
                        after: after.clone(),
                        limit,
                    })
                    .await
                    .unwrap();
                let Some(last) = hits.last() else { break };
                after = Some(last.position());
                got.extend(hits.iter().map(|h| h.key.clone()));
                assert!(
                    got.len() <= want.len(),
                    "{label}, pages of {limit}: too many"
                );
            }
            assert_eq!(got, want, "{label}, pages of {limit}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upserts_share_commits_and_are_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(TantivyIndex::open(dir.path(), quick()).unwrap());
    let ops: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let batches = 10;
    let per_batch = 1_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (t, op) in ops.iter().copied().enumerate() {
        let index = index.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..batches {
                let xs: Vec<Annotation> = (0..per_batch)
                    .map(|i| {
                        let mut a =
                            suite::annotation(op, &format!("media-{t}-{}", i % 50), i, i + 40);
                        a.label = Some(format!("l{}", i % 7));
                        a.confidence = Some((i % 100) as f32 / 100.0);
                        a.start_ms += b * 10_000;
                        a.end_ms += b * 10_000;
                        a
                    })
                    .collect();
                index.upsert(&xs, Existing::Unknown).await.unwrap();
                // Searchable as soon as upsert returns.
                let n = index.count_operation(op).await.unwrap();
                assert!(n >= ((b + 1) * per_batch) as u64, "{n} after batch {b}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = ops.len() as i64 * batches * per_batch;
    eprintln!(
        "indexed {total} annotations in {elapsed:?}: {:.0}/s",
        total as f64 / elapsed.as_secs_f64()
    );
    let dyn_index: Arc<dyn Index> = index.clone();
    for op in &ops {
        assert_eq!(
            index.count_operation(*op).await.unwrap(),
            (batches * per_batch) as u64
        );
    }
    let scope = suite::visible(&ops);
    let filter = SearchFilter {
        media_id: Some("media-2-7".into()),
        ..Default::default()
    };
    let hits = suite::search_all(&dyn_index, &filter, &scope, 64).await;
    assert_eq!(hits.len() as i64, batches * per_batch / 50);
    assert_eq!(index.num_docs(), total as u64);
}
