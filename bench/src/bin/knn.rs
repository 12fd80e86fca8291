//! `annostore-knn-bench`: filtered nearest-neighbour search on the tantivy index.
//!
//! Run: `cargo run --release -p annostore-bench --no-default-features --bin
//! annostore-knn-bench -- [--vectors 1000000] [--dim 512] [--clusters 1000]`
//! Loads clustered vectors (gaussian clusters) straight into the index (no store), then
//! measures top-k latency (p50/p99) and recall@k against an exact brute force, for
//! filters selecting 100%, 10%, 1% and 0.1% of the annotations, on the path the index
//! picks and on each path forced; then the close (snapshot) and open times, with the
//! snapshot and, with `--rebuild`, without it.

use annostore_core::index::{Existing, Index, KnnQuery, Scope};
use annostore_core::model::{Annotation, SearchFilter};
use annostore_core::visibility::Visibility;
use annostore_embedded::index::{IndexOptions, KnnPath, TantivyIndex, VectorOptions};
use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    vectors: usize,
    #[arg(long, default_value_t = 512)]
    dim: usize,
    #[arg(long, default_value_t = 1_000)]
    clusters: usize,
    /// Spread of a cluster (per dimension; centres are N(0, 1)).
    #[arg(long, default_value_t = 0.7)]
    sigma: f32,
    /// Queries per filter.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[arg(long, default_value_t = 16)]
    connectivity: usize,
    #[arg(long, default_value_t = 128)]
    expansion_add: usize,
    #[arg(long, default_value_t = 64)]
    expansion_search: usize,
    #[arg(long, default_value_t = 20_000)]
    exact_threshold: usize,
    /// Concurrent producers while loading.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Also time an open that rebuilds the graphs without the snapshot.
    #[arg(long)]
    rebuild: bool,
    /// Data directory (default: a temporary one).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Skip the load and search what an earlier run with the same `--vectors`, `--dim`,
    /// `--clusters` and `--sigma` left in `--data-dir` (for profiling the searches).
    #[arg(long, requires = "data_dir")]
    reuse: bool,
    /// Measure only the filters whose name starts with one of these (100%, 10%, 1%,
    /// 0.1%); all when absent.
    #[arg(long, value_delimiter = ',')]
    filters: Vec<String>,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Annotations per media item: a media filter selects 0.1% of a million.
const PER_MEDIA: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// A deterministic generator (xorshift64*) with gaussian samples.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

struct Data {
    centres: Vec<Vec<f32>>,
    sigma: f32,
}

impl Data {
    fn vector(&self, i: usize) -> Vec<f32> {
        let mut rng = Rng::new(i as u64 + 1);
        let c = &self.centres[(rng.next() % self.centres.len() as u64) as usize];
        c.iter().map(|x| x + self.sigma * rng.gauss()).collect()
    }

    fn query(&self, q: usize) -> Vec<f32> {
        self.vector(usize::MAX / 2 + q)
    }
}

fn media(i: usize) -> usize {
    i / PER_MEDIA
}

fn kind(i: usize) -> &'static str {
    if i.is_multiple_of(10) {
        "faces"
    } else {
        "objects"
    }
}

fn rare(i: usize) -> bool {
    i % 100 == 1
}

fn operation(i: usize) -> Uuid {
    Uuid::from_u64_pair(media(i) as u64 + 1, u64::from(kind(i) == "faces") + 1)
}

fn annotation(data: &Data, i: usize) -> Annotation {
    Annotation {
        id: Uuid::from_u64_pair(0xA11, i as u64),
        media_id: format!("m{:04}", media(i)),
        start_ms: (i % PER_MEDIA) as i64 * 40,
        end_ms: (i % PER_MEDIA) as i64 * 40 + 40,
        label: Some(if rare(i) { "rare" } else { "common" }.into()),
        confidence: Some(0.9),
        bbox: None,
        embedding: Some(data.vector(i)),
        data: None,
        annotation_type: kind(i).into(),
        annotation_type_version: 1,
        pivot_id: "p".into(),
        operation_id: operation(i),
    }
}

/// A filter, its share, and the brute-force test of it.
struct Selectivity {
    name: &'static str,
    filter: SearchFilter,
    test: Box<dyn Fn(usize) -> bool + Send + Sync>,
}

fn selectivities(n: usize) -> Vec<Selectivity> {
    let one_media = (n / PER_MEDIA / 2).min(n.saturating_sub(1) / PER_MEDIA);
    vec![
        Selectivity {
            name: "100%",
            filter: SearchFilter::default(),
            test: Box::new(|_| true),
        },
        Selectivity {
            name: "10% (type)",
            filter: SearchFilter {
                annotation_type: Some("faces".into()),
                ..SearchFilter::default()
            },
            test: Box::new(|i| kind(i) == "faces"),
        },
        Selectivity {
            name: "1% (label)",
            filter: SearchFilter {
                label: Some("rare".into()),
                ..SearchFilter::default()
            },
            test: Box::new(rare),
        },
        Selectivity {
            name: "0.1% (media)",
            filter: SearchFilter {
                media_id: Some(format!("m{one_media:04}")),
                ..SearchFilter::default()
            },
            test: Box::new(move |i| media(i) == one_media),
        },
    ]
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Exact top-k ids (as indexes) by cosine among the annotations `test` keeps.
fn exact(
    all: &[f32],
    dim: usize,
    q: &[f32],
    k: usize,
    test: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<usize> {
    let q = normalised(q);
    let n = all.len() / dim;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = n.div_ceil(threads);
    let mut best: Vec<(f32, usize)> = std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                let q = &q;
                s.spawn(move || {
                    let mut top: Vec<(f32, usize)> = Vec::new();
                    for i in t * chunk..((t + 1) * chunk).min(n) {
                        if !test(i) {
                            continue;
                        }
                        let v = &all[i * dim..(i + 1) * dim];
                        let sim: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                        top.push((sim, i));
                        if top.len() >= 4 * k + 64 {
                            top.sort_by(|a, b| b.0.total_cmp(&a.0));
                            top.truncate(k);
                        }
                    }
                    top
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_default())
            .collect()
    });
    best.sort_by(|a, b| b.0.total_cmp(&a.0));
    best.truncate(k);
    best.into_iter().map(|(_, i)| i).collect()
}

fn options(args: &Args) -> IndexOptions {
    IndexOptions {
        vectors: VectorOptions {
            connectivity: args.connectivity,
            expansion_add: args.expansion_add,
            expansion_search: args.expansion_search,
            exact_threshold: args.exact_threshold,
        },
        ..IndexOptions::default()
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_owned());
    let n = args.vectors;
    let mut rng = Rng::new(42);
    let data = Arc::new(Data {
        centres: (0..args.clusters)
            .map(|_| (0..args.dim).map(|_| rng.gauss()).collect())
            .collect(),
        sigma: args.sigma,
    });
    println!(
        "knn bench: {n} vectors of {} dimensions in {} clusters; M {} ef_add {} ef_search {} exact threshold {}; {} cores",
        args.dim,
        args.clusters,
        args.connectivity,
        args.expansion_add,
        args.expansion_search,
        args.exact_threshold,
        std::thread::available_parallelism().map_or(1, |t| t.get())
    );

    // Load.
    let index = Arc::new(TantivyIndex::open(&dir.join("index"), options(&args))?);
    if !args.reuse {
        load(&index, &args, &data).await?;
    }
    // The ground truth's vectors, normalised.
    let mut all = Vec::with_capacity(n * args.dim);
    for i in 0..n {
        all.extend(normalised(&data.vector(i)));
    }

    let scope = Scope::Visible(Arc::new(Visibility::from_active(
        (0..n).map(operation).collect::<HashSet<_>>(),
    )));
    measure(&index, &args, &data, &all, &scope).await?;

    // Close (saves the snapshot) and open with it.
    let started = Instant::now();
    drop(Arc::try_unwrap(index).map_err(|_| anyhow::anyhow!("index still shared"))?);
    println!(
        "close (graph snapshot saved): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    reopen(&dir, &args, "with the snapshot")?;
    if args.rebuild {
        std::fs::remove_dir_all(dir.join("index").join("vectors"))
            .context("removing the snapshot")?;
        reopen(&dir, &args, "rebuilding the graphs from the columns")?;
    }
    Ok(())
}

/// Loads `--vectors` annotations from `--producers` concurrent writers.
async fn load(index: &Arc<TantivyIndex>, args: &Args, data: &Arc<Data>) -> anyhow::Result<()> {
    let n = args.vectors;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let (index, data, next) = (index.clone(), data.clone(), next.clone());
        let batch = args.batch;
        producers.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(batch, std::sync::atomic::Ordering::AcqRel);
                if from >= n {
                    return anyhow::Ok(());
                }
                let to = (from + batch).min(n);
                let data2 = data.clone();
                let xs = tokio::task::spawn_blocking(move || {
                    (from..to)
                        .map(|i| annotation(&data2, i))
                        .collect::<Vec<_>>()
                })
                .await?;
                index.upsert(&xs, Existing::Only(&[])).await?;
                if to % 100_000 < batch {
                    eprintln!("  loaded {to} in {:.0} s", started.elapsed().as_secs_f64());
                }
            }
        }));
    }
    for p in producers {
        p.await??;
    }
    let load = started.elapsed().as_secs_f64();
    println!(
        "load: {n} annotations in {load:.1} s ({:.0}/s), {} documents",
        n as f64 / load,
        index.num_docs()
    );

    Ok(())
}

fn reopen(dir: &Path, args: &Args, how: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let index = TantivyIndex::open(&dir.join("index"), options(args))?;
    let opened = index.vectors_opened();
    println!(
        "open {how}: {:.1} s (vectors: {} from the snapshot, {} added, {} removed, {:.1} s)",
        started.elapsed().as_secs_f64(),
        opened.from_snapshot,
        opened.added,
        opened.removed,
        opened.seconds
    );
    Ok(())
}

async fn measure(
    index: &TantivyIndex,
    args: &Args,
    data: &Data,
    all: &[f32],
    scope: &Scope,
) -> anyhow::Result<()> {
    let k = args.k;
    for sel in selectivities(args.vectors) {
        if !args.filters.is_empty()
            && !args
                .filters
                .iter()
                .any(|f| sel.name.starts_with(f.as_str()))
        {
            continue;
        }
        let queries: Vec<Vec<f32>> = (0..args.queries).map(|q| data.query(q)).collect();
        let truth: Vec<Vec<Uuid>> = queries
            .iter()
            .map(|q| {
                exact(all, args.dim, q, k, &*sel.test)
                    .into_iter()
                    .map(|i| Uuid::from_u64_pair(0xA11, i as u64))
                    .collect()
            })
            .collect();
        for (label, threshold) in [
            ("chosen", args.exact_threshold),
            ("exact", usize::MAX),
            ("graph", 0),
        ] {
            index.set_exact_threshold(threshold);
            let mut hist = Histogram::<u64>::new(3)?;
            let (mut found, mut wanted) = (0usize, 0usize);
            let mut paths = (0, 0);
            // A forced path can be slow where it is the wrong one: fewer queries.
            let take = if label == "chosen" {
                queries.len()
            } else {
                queries.len().min(20)
            };
            for (q, want) in queries.iter().zip(&truth).take(take) {
                let query = KnnQuery {
                    filter: sel.filter.clone(),
                    scope: scope.clone(),
                    vector: q.clone(),
                    k,
                };
                let t = Instant::now();
                let (hits, path) = index.knn_with_path(&query).await?;
                hist.record(t.elapsed().as_micros() as u64)?;
                match path {
                    KnnPath::Exact => paths.0 += 1,
                    KnnPath::Graph => paths.1 += 1,
                    KnnPath::Empty => {}
                }
                let got: HashSet<Uuid> = hits.iter().map(|h| h.id).collect();
                found += want.iter().filter(|id| got.contains(id)).count();
                wanted += want.len();
            }
            println!(
                "{:<13} {:<6} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  recall@{k} {:.4}  (exact {}, graph {})",
                sel.name,
                label,
                hist.value_at_quantile(0.5) as f64 / 1e3,
                hist.value_at_quantile(0.99) as f64 / 1e3,
                hist.max() as f64 / 1e3,
                found as f64 / wanted.max(1) as f64,
                paths.0,
                paths.1
            );
        }
    }
    index.set_exact_threshold(args.exact_threshold);
    Ok(())
}
