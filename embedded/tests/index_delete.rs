//! Deleting an operation's documents from the tantivy index (garbage collection):
//! search, counts and kNN stop seeing them, other runs keep theirs, the vectors leave
//! the graphs, and all of it holds after close and reopen.

use annostore_core::index::{Existing, Index, KnnQuery, Scope};
use annostore_core::model::{Annotation, SearchFilter, SortKey};
use annostore_core::query::cosine;
use annostore_core::testkit::index as suite;
use annostore_embedded::index::{IndexOptions, KnnPath, TantivyIndex};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const DIM: usize = 4;

/// Commits only when asked (or after an hour): a delete that did not ask for its
/// commit would hang, and the tests bound every wait.
fn lazy() -> IndexOptions {
    IndexOptions {
        memory_budget_bytes: 32 << 20,
        indexing_threads: 1,
        commit_interval: Duration::from_secs(3_600),
        commit_docs: 1_000_000,
        ..IndexOptions::default()
    }
}

fn open(dir: &Path) -> Arc<TantivyIndex> {
    Arc::new(TantivyIndex::open(dir, lazy()).unwrap())
}

/// `n` annotations of `op` over three media items, each with a vector.
fn run(op: Uuid, n: usize, salt: f32) -> Vec<Annotation> {
    (0..n)
        .map(|i| {
            let start = i as i64 * 10;
            let mut a = suite::annotation(op, &format!("m{}", i % 3), start, start + 5);
            // Never the zero vector (all similarities 0).
            let x = i as f32 + salt + 1.0;
            a.embedding = Some((0..DIM).map(|d| (x * (d as f32 + 1.0)).sin()).collect());
            a
        })
        .collect()
}

/// Upserts and asks for the commit the upsert waits for (the index commits lazily).
/// Upserts and commits at once (this index commits only when asked).
async fn upsert_now(index: &Arc<TantivyIndex>, xs: &[Annotation]) {
    index.upsert(xs, Existing::Unknown).await.unwrap();
    index.refresh().await;
    bounded(index.sync()).await.unwrap();
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the delete's commit was not asked for")
}

fn ids(xs: &[Annotation]) -> HashSet<Uuid> {
    xs.iter().map(|a| a.id).collect()
}

/// The `k` survivors nearest to `v`, by exact cosine, then time key (the index's order).
fn nearest(xs: &[Annotation], v: &[f32], k: usize) -> Vec<Uuid> {
    let mut scored: Vec<(f32, SortKey)> = xs
        .iter()
        .map(|a| {
            (
                cosine(v, a.embedding.as_deref().unwrap_or_default()),
                SortKey::of(a),
            )
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, key)| key.id).collect()
}

/// What the index shows with both runs in scope: the time-ordered search, the count of
/// each run, and kNN from every deleted vector on both paths, which must all come from
/// the survivors.
async fn check_only_survivors(
    index: &Arc<TantivyIndex>,
    deleted: &[Annotation],
    survivors: &[Annotation],
) {
    let (gone, kept) = (deleted[0].operation_id, survivors[0].operation_id);
    let dyn_index: Arc<dyn Index> = index.clone();
    assert_eq!(index.count_operation(gone).await.unwrap(), 0);
    assert_eq!(
        index.count_operation(kept).await.unwrap(),
        survivors.len() as u64
    );
    assert_eq!(index.num_docs(), survivors.len() as u64);
    let scope = suite::visible(&[gone, kept]);
    let hits = suite::search_all(&dyn_index, &SearchFilter::default(), &scope, 7).await;
    let keys: Vec<_> = hits.into_iter().map(|h| h.key).collect();
    assert_eq!(keys, suite::sorted_keys(survivors));
    let own = suite::search_all(
        &dyn_index,
        &SearchFilter::default(),
        &Scope::Operation(gone),
        7,
    )
    .await;
    assert!(own.is_empty(), "a preview of the deleted run finds nothing");

    let kept_ids = ids(survivors);
    for (threshold, k, path) in [(20_000, 8, KnnPath::Exact), (0, 4, KnnPath::Graph)] {
        index.set_exact_threshold(threshold);
        for a in deleted {
            let q = KnnQuery {
                filter: SearchFilter::default(),
                scope: scope.clone(),
                vector: a.embedding.clone().unwrap(),
                k,
            };
            let (hits, took) = index.knn_with_path(&q).await.unwrap();
            // The graph may give up on a graph most of whose nodes were removed and
            // fall back to comparing every candidate: right either way.
            if path == KnnPath::Exact {
                assert_eq!(took, KnnPath::Exact);
                let got: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
                assert_eq!(got, nearest(survivors, &q.vector, k));
            } else {
                assert_ne!(took, KnnPath::Empty);
            }
            assert_eq!(hits.len(), k.min(survivors.len()));
            assert!(
                hits.iter().all(|h| kept_ids.contains(&h.id)),
                "{path:?}: a deleted document's vector came back"
            );
        }
    }
    index.set_exact_threshold(20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_run_is_gone_from_search_counts_and_knn_and_stays_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let xa = run(a, 30, 0.0);
    let xb = run(b, 10, 0.5);
    {
        let index = open(dir.path());
        upsert_now(&index, &xa).await;
        upsert_now(&index, &xb).await;
        assert_eq!(index.count_operation(a).await.unwrap(), 30);
        assert_eq!(index.vectors_in_graphs(), 40);

        let removed = bounded(index.delete_operation(a)).await.unwrap();
        assert_eq!(removed, 30);
        check_only_survivors(&index, &xa, &xb).await;
        assert_eq!(
            index.vectors_in_graphs(),
            10,
            "the run's vectors were swept"
        );
        // Again, through the trait: nothing left to remove.
        let dyn_index: Arc<dyn Index> = index.clone();
        assert_eq!(bounded(dyn_index.delete_operation(a)).await.unwrap(), 0);
        assert_eq!(index.count_operation(b).await.unwrap(), 10);
    }
    // Durable: reopened, from the saved graphs.
    let index = open(dir.path());
    let opened = index.vectors_opened();
    assert_eq!((opened.from_snapshot, opened.added), (10, 0));
    assert_eq!(index.vectors_in_graphs(), 10);
    check_only_survivors(&index, &xa, &xb).await;

    // The freed ids can come back under a new run (a collected run's ids, claimed).
    let c = Uuid::now_v7();
    let xc: Vec<Annotation> = xa
        .iter()
        .map(|x| Annotation {
            operation_id: c,
            ..x.clone()
        })
        .collect();
    upsert_now(&index, &xc).await;
    assert_eq!(index.count_operation(c).await.unwrap(), 30);
    assert_eq!(index.count_operation(a).await.unwrap(), 0);
    assert_eq!(index.vectors_in_graphs(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_run_stays_gone_when_the_graphs_are_rebuilt() {
    // Closed right after the delete, with no save of the graphs (a crash): the
    // reopened graphs are rebuilt from the documents, and the deleted run's vectors
    // are not among them.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let xa = run(a, 12, 0.25);
    let xb = run(b, 6, 0.75);
    {
        let index = open(dir.path());
        upsert_now(&index, &xa).await;
        upsert_now(&index, &xb).await;
        assert_eq!(bounded(index.delete_operation(a)).await.unwrap(), 12);
    }
    std::fs::remove_dir_all(dir.path().join("vectors")).unwrap();
    let index = open(dir.path());
    let opened = index.vectors_opened();
    assert_eq!((opened.from_snapshot, opened.added), (0, 6));
    check_only_survivors(&index, &xa, &xb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_unknown_run_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(dir.path());
    let b = Uuid::now_v7();
    let xb = run(b, 5, 0.0);
    upsert_now(&index, &xb).await;
    assert_eq!(
        bounded(index.delete_operation(Uuid::now_v7()))
            .await
            .unwrap(),
        0
    );
    assert_eq!(index.count_operation(b).await.unwrap(), 5);
    assert_eq!(index.num_docs(), 5);
    assert_eq!(index.vectors_in_graphs(), 5);
}
