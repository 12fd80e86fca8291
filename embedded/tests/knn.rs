//! Filtered nearest-neighbour search on the tantivy index, against a brute-force model
//! (exact cosine over the annotations that `query::matches` and the scope allow), on
//! both paths (exact and graph, forced by the exact-search threshold), across
//! replacements, scope changes, deletes and reopening.

use annostore_core::index::{Existing, Index, KnnHit, KnnQuery, Scope};
use annostore_core::model::{Annotation, SearchFilter, SortKey};
use annostore_core::query::{cosine, matches};
use annostore_core::testkit::index as suite;
use annostore_embedded::index::{IndexOptions, KnnPath, TantivyIndex, VectorOptions};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

const DIM: usize = 8;

/// The two paths, forced.
#[derive(Debug, Clone, Copy)]
enum Path_ {
    Exact,
    Graph,
}

fn options(path: Path_) -> IndexOptions {
    IndexOptions {
        commit_interval: Duration::from_millis(1),
        memory_budget_bytes: 32 << 20,
        indexing_threads: 1,
        vectors: VectorOptions {
            exact_threshold: match path {
                Path_::Exact => usize::MAX,
                Path_::Graph => 0,
            },
            // Small graphs: searching wide makes the graph path exact here.
            expansion_search: 256,
            ..VectorOptions::default()
        },
        ..IndexOptions::default()
    }
}

/// A deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vector(&mut self, centre: &[f32]) -> Vec<f32> {
        centre.iter().map(|c| c + 0.2 * self.unit()).collect()
    }
}

/// `n` annotations of `op` in 6 media items and 10 clusters; label "rare" on every
/// 50th, "common" on the others.
fn dataset(op: Uuid, n: usize, seed: u64) -> Vec<Annotation> {
    let mut rng = Rng(seed | 1);
    let centres: Vec<Vec<f32>> = (0..10)
        .map(|_| (0..DIM).map(|_| rng.unit()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let mut a = suite::annotation(
                op,
                &format!("m{}", i % 6),
                (i * 40) as i64,
                (i * 40 + 40) as i64,
            );
            a.label = Some(if i % 50 == 0 { "rare" } else { "common" }.into());
            a.embedding = Some(rng.vector(&centres[i % 10]));
            a
        })
        .collect()
}

/// The model: exact cosine over the matching annotations in scope with a vector of the
/// query's dimension, similarity descending, then time key.
fn brute_force(all: &[Annotation], q: &KnnQuery) -> Vec<(Uuid, f32)> {
    let mut hits: Vec<(f32, SortKey)> = all
        .iter()
        .filter(|a| matches(&q.filter, a) && q.scope.allows(&a.operation_id))
        .filter_map(|a| {
            let v = a.embedding.as_ref()?;
            (v.len() == q.vector.len() && !v.is_empty()).then(|| (cosine(&q.vector, v), key(a)))
        })
        .collect();
    hits.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    hits.truncate(q.k);
    hits.into_iter().map(|(s, k)| (k.id, s)).collect()
}

fn key(a: &Annotation) -> SortKey {
    SortKey {
        media_id: a.media_id.clone(),
        start_ms: a.start_ms,
        id: a.id,
    }
}

fn ids(hits: &[KnnHit]) -> Vec<(Uuid, f32)> {
    hits.iter().map(|h| (h.id, h.similarity)).collect()
}

fn query(filter: SearchFilter, scope: Scope, vector: Vec<f32>, k: usize) -> KnnQuery {
    KnnQuery {
        filter,
        scope,
        vector,
        k,
    }
}

fn open(dir: &Path, path: Path_) -> TantivyIndex {
    TantivyIndex::open(dir, options(path)).unwrap()
}

/// The filters of the tests: many candidates, a sixth, few, none.
fn filters() -> Vec<(&'static str, SearchFilter)> {
    vec![
        ("all", SearchFilter::default()),
        (
            "one media",
            SearchFilter {
                media_id: Some("m1".into()),
                ..SearchFilter::default()
            },
        ),
        (
            "rare label",
            SearchFilter {
                label: Some("rare".into()),
                ..SearchFilter::default()
            },
        ),
        (
            "no match",
            SearchFilter {
                label: Some("absent".into()),
                ..SearchFilter::default()
            },
        ),
    ]
}

/// Every filter, a few query vectors and k values, on the path asked for (or none, when
/// nothing matches). The exact path equals the model. The graph path is approximate
/// (HNSW on clustered data can miss a neighbour even when the beam is wider than the
/// graph): each hit must be a candidate with its exact similarity, in order, the page
/// full, and recall@k over all the queries at least 0.9.
async fn check_all(index: &TantivyIndex, all: &[Annotation], scope: &Scope, path: Path_) {
    let mut rng = Rng(99);
    let (mut found, mut wanted) = (0usize, 0usize);
    for (name, filter) in filters() {
        for k in [1, 10, 1_000] {
            for _ in 0..5 {
                let v: Vec<f32> = (0..DIM).map(|_| rng.unit()).collect();
                let q = query(filter.clone(), scope.clone(), v, k);
                let (hits, took) = index.knn_with_path(&q).await.unwrap();
                let want = brute_force(all, &q);
                let every = brute_force(
                    all,
                    &KnnQuery {
                        k: usize::MAX,
                        ..q.clone()
                    },
                );
                let candidates = every.len();
                let expected = match path {
                    _ if candidates == 0 => KnnPath::Empty,
                    Path_::Exact => KnnPath::Exact,
                    // No more candidates than k: all of them, exactly.
                    Path_::Graph if candidates <= k => KnnPath::Exact,
                    Path_::Graph => KnnPath::Graph,
                };
                assert_eq!(took, expected, "filter {name}, k {k}");
                if took != KnnPath::Graph {
                    assert_eq!(ids(&hits), want, "filter {name}, k {k}, {path:?}");
                    continue;
                }
                let exact: std::collections::HashMap<Uuid, f32> = every.into_iter().collect();
                for h in &hits {
                    assert_eq!(
                        exact.get(&h.id),
                        Some(&h.similarity),
                        "filter {name}, k {k}: a hit that is not a candidate, or mis-scored"
                    );
                }
                assert!(
                    hits.windows(2).all(|w| w[0].similarity > w[1].similarity
                        || (w[0].similarity == w[1].similarity && w[0].key < w[1].key)),
                    "filter {name}, k {k}: hits out of order"
                );
                assert_eq!(hits.len(), want.len(), "filter {name}, k {k}: short page");
                let want: std::collections::HashSet<Uuid> =
                    want.iter().map(|(id, _)| *id).collect();
                found += hits.iter().filter(|h| want.contains(&h.id)).count();
                wanted += want.len();
            }
        }
    }
    assert!(
        found as f64 >= 0.9 * wanted as f64,
        "graph recall {found}/{wanted} below 0.9"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knn_equals_brute_force_on_both_paths() {
    for path in [Path_::Exact, Path_::Graph] {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path(), path);
        let op = Uuid::new_v4();
        let all = dataset(op, 600, 7);
        for chunk in all.chunks(200) {
            index.upsert(chunk, Existing::Only(&[])).await.unwrap();
            // Committed: the paths below are the committed documents'.
            index.sync().await.unwrap();
        }
        check_all(&index, &all, &suite::visible(&[op]), path).await;
        // One operation's scope sees the same.
        check_all(&index, &all, &Scope::Operation(op), path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_vector_is_found_by_its_new_value_only() {
    for path in [Path_::Exact, Path_::Graph] {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path(), path);
        let op = Uuid::new_v4();
        let mut all = dataset(op, 300, 11);
        index.upsert(&all, Existing::Unknown).await.unwrap();
        // Committed: the paths below are the committed documents'.
        index.sync().await.unwrap();
        // Move every 3rd annotation far away: its old vector must not be found.
        let mut moved = Vec::new();
        for a in all.iter_mut().step_by(3) {
            let v = a.embedding.as_mut().unwrap();
            for x in v.iter_mut() {
                *x = -*x + 0.5;
            }
            moved.push(a.clone());
        }
        let moved_ids: Vec<Uuid> = moved.iter().map(|a| a.id).collect();
        index
            .upsert(&moved, Existing::Only(&moved_ids))
            .await
            .unwrap();
        // Committed: the paths below are the committed documents'.
        index.sync().await.unwrap();
        assert_eq!(index.num_docs(), 300);
        // The sweep after the commit took the old versions out of the graphs.
        assert_eq!(index.vectors_in_graphs(), 300);
        check_all(&index, &all, &suite::visible(&[op]), path).await;
        // The old vector of a moved annotation: the nearest is no longer itself at 1.0.
        let old = dataset(op, 300, 11);
        let q = query(
            SearchFilter::default(),
            suite::visible(&[op]),
            old[0].embedding.clone().unwrap(),
            1,
        );
        let hits = index.knn(&q).await.unwrap();
        assert_eq!(ids(&hits), brute_force(&all, &q));
        assert!(hits[0].id != old[0].id || hits[0].similarity < 0.999);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_run_never_comes_back() {
    for path in [Path_::Exact, Path_::Graph] {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path(), path);
        let (old_run, new_run) = (Uuid::new_v4(), Uuid::new_v4());
        let old = dataset(old_run, 300, 3);
        // The new run: same places, other vectors.
        let new = dataset(new_run, 300, 5);
        index.upsert(&old, Existing::Only(&[])).await.unwrap();
        // Committed: the paths below are the committed documents'.
        index.sync().await.unwrap();
        index.upsert(&new, Existing::Only(&[])).await.unwrap();
        // Committed: the paths below are the committed documents'.
        index.sync().await.unwrap();
        let both: Vec<Annotation> = old.iter().chain(&new).cloned().collect();
        check_all(&index, &both, &suite::visible(&[old_run]), path).await;
        // The new run becomes the active one: only its vectors are found...
        let scope = suite::visible(&[new_run]);
        check_all(&index, &both, &scope, path).await;
        for a in old.iter().take(20) {
            let q = query(
                SearchFilter::default(),
                scope.clone(),
                a.embedding.clone().unwrap(),
                10,
            );
            let hits = index.knn(&q).await.unwrap();
            assert!(hits.iter().all(|h| h.id != a.id));
        }
        // ... and once the old run is deleted, its vectors leave the graphs.
        index.delete_operation(old_run).await.unwrap();
        assert_eq!(index.vectors_in_graphs(), 300);
        check_all(&index, &new, &scope, path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let op = Uuid::new_v4();
    let mut all = dataset(op, 400, 21);
    {
        let index = open(dir.path(), Path_::Graph);
        assert_eq!(index.vectors_opened().added, 0);
        index
            .upsert(&all[..200], Existing::Only(&[]))
            .await
            .unwrap();
        // Committed: the paths below are the committed documents'.
        index.sync().await.unwrap();
    }
    // A snapshot of the graphs as of this close, kept to play a stale one later.
    let stale = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("vectors"), stale.path());
    {
        let index = open(dir.path(), Path_::Graph);
        let opened = index.vectors_opened();
        assert_eq!(
            (opened.from_snapshot, opened.added, opened.removed),
            (200, 0, 0)
        );
        check_all(&index, &all[..200], &suite::visible(&[op]), Path_::Graph).await;
        index
            .upsert(&all[200..], Existing::Only(&[]))
            .await
            .unwrap();
        // Committed: the paths below are the committed documents'.
        index.sync().await.unwrap();
        // Replace the first 50 with new vectors.
        for a in &mut all[..50] {
            a.embedding = Some(a.embedding.as_ref().unwrap().iter().map(|x| -x).collect());
        }
        let replaced: Vec<Uuid> = all[..50].iter().map(|a| a.id).collect();
        index
            .upsert(&all[..50], Existing::Only(&replaced))
            .await
            .unwrap();
        // Committed: the paths below are the committed documents'.
        index.sync().await.unwrap();
    }
    {
        let index = open(dir.path(), Path_::Graph);
        let opened = index.vectors_opened();
        assert_eq!(
            (opened.from_snapshot, opened.added, opened.removed),
            (400, 0, 0)
        );
        check_all(&index, &all, &suite::visible(&[op]), Path_::Graph).await;
    }
    // The stale snapshot (as after a crash): the open catches up from the documents.
    std::fs::remove_dir_all(dir.path().join("vectors")).unwrap();
    copy_dir(stale.path(), &dir.path().join("vectors"));
    {
        let index = open(dir.path(), Path_::Graph);
        let opened = index.vectors_opened();
        assert_eq!(
            (opened.from_snapshot, opened.added, opened.removed),
            (200, 250, 50)
        );
        check_all(&index, &all, &suite::visible(&[op]), Path_::Graph).await;
    }
    // No snapshot at all: everything is rebuilt from the documents.
    std::fs::remove_dir_all(dir.path().join("vectors")).unwrap();
    {
        let index = open(dir.path(), Path_::Exact);
        let opened = index.vectors_opened();
        assert_eq!(
            (opened.from_snapshot, opened.added, opened.removed),
            (0, 400, 0)
        );
        check_all(&index, &all, &suite::visible(&[op]), Path_::Exact).await;
    }
    {
        let index = open(dir.path(), Path_::Graph);
        check_all(&index, &all, &suite::visible(&[op]), Path_::Graph).await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_vectors_of_the_query_dimension_match() {
    for path in [Path_::Exact, Path_::Graph] {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path(), path);
        let op = Uuid::new_v4();
        let mut all = dataset(op, 300, 13);
        // A third carry 4 dimensions, a third none.
        for (i, a) in all.iter_mut().enumerate() {
            match i % 3 {
                0 => a.embedding = Some(a.embedding.as_ref().unwrap()[..4].to_vec()),
                1 => a.embedding = None,
                _ => {}
            }
        }
        index.upsert(&all, Existing::Only(&[])).await.unwrap();
        // Committed: the paths below are the committed documents'.
        index.sync().await.unwrap();
        let scope = suite::visible(&[op]);
        check_all(&index, &all, &scope, path).await;
        let mut rng = Rng(5);
        for dim in [4, 3, 16] {
            let v: Vec<f32> = (0..dim).map(|_| rng.unit()).collect();
            let q = query(SearchFilter::default(), scope.clone(), v, 1_000);
            let hits = index.knn(&q).await.unwrap();
            let want = brute_force(&all, &q);
            assert_eq!(ids(&hits), want, "dimension {dim}");
            assert_eq!(hits.len(), if dim == 4 { 100 } else { 0 });
        }
        // An empty vector matches nothing.
        let q = query(SearchFilter::default(), scope.clone(), Vec::new(), 10);
        assert!(index.knn(&q).await.unwrap().is_empty());
    }
}

/// Exact answers for every filter, a few vectors and k values.
async fn check_exact(index: &TantivyIndex, all: &[Annotation], scope: &Scope, what: &str) {
    let mut rng = Rng(31);
    for (name, filter) in filters() {
        for k in [1, 10, 1_000] {
            for _ in 0..3 {
                let v: Vec<f32> = (0..DIM).map(|_| rng.unit()).collect();
                let q = query(filter.clone(), scope.clone(), v, k);
                let hits = index.knn(&q).await.unwrap();
                assert_eq!(
                    ids(&hits),
                    brute_force(all, &q),
                    "{what}: filter {name}, k {k}"
                );
            }
        }
    }
}

/// Documents not yet committed are searched exactly, alone and beside committed ones,
/// and a fresh copy of an id hides its committed copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_and_committed_vectors_answer_as_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(
        dir.path(),
        IndexOptions {
            // Commits only when asked.
            commit_interval: Duration::from_secs(3_600),
            commit_docs: 1_000_000,
            ..options(Path_::Exact)
        },
    )
    .unwrap();
    let op = Uuid::new_v4();
    let scope = suite::visible(&[op]);
    let mut all = dataset(op, 300, 17);
    index
        .upsert(&all[..150], Existing::Only(&[]))
        .await
        .unwrap();
    check_exact(&index, &all[..150], &scope, "fresh only").await;
    assert_eq!(index.uncommitted_docs(), 150);

    index.refresh().await;
    index.sync().await.unwrap();
    index
        .upsert(&all[150..], Existing::Only(&[]))
        .await
        .unwrap();
    check_exact(&index, &all, &scope, "half committed, half fresh").await;

    // Every 4th committed one moves far away, as a fresh copy.
    let mut moved = Vec::new();
    for a in all[..150].iter_mut().step_by(4) {
        for x in a.embedding.as_mut().unwrap().iter_mut() {
            *x = -*x + 0.5;
        }
        moved.push(a.clone());
    }
    let moved_ids: Vec<Uuid> = moved.iter().map(|a| a.id).collect();
    index
        .upsert(&moved, Existing::Only(&moved_ids))
        .await
        .unwrap();
    assert_eq!(
        index.num_docs(),
        300 + moved.len() as u64,
        "copies, old and new"
    );
    check_exact(&index, &all, &scope, "fresh copies over committed ones").await;

    index.refresh().await;
    index.sync().await.unwrap();
    assert_eq!(index.num_docs(), 300);
    check_exact(&index, &all, &scope, "all committed").await;
}
