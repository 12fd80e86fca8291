//! `annostore-bench`: throughput and latency of the service on the embedded engines,
//! in process (no HTTP), on a fresh data directory.
//!
//! Run: `cargo run --release -p annostore-bench -- [--annotations 1000000] [--finish-runs 300]
//! [--large-runs 100]`
//! Measures: upsert throughput (1,000-annotation batches from 4 concurrent producers,
//! indexing included), search latency for media + type + time range over what that
//! loaded, catalogue-wide label, fuzzy text and confidence-ordered queries and a media
//! item's timeline aggregation, and finish latency for runs of 500 and of 50,000
//! annotations. Issue 5's figures: `--annotations 10000000 --finish-runs 0 --large-runs 0`.

use annostore_core::clock::SystemClock;
use annostore_core::model::{
    SearchFilter, SearchRequest, SortOrder, StartOperation, TextQuery, TimeRange, TypeDefinition,
};
use annostore_core::query::{AggregateSpec, HistogramSpec};
use annostore_core::service::{AggregateRequest, Service};
use annostore_core::validate::Limits;
use anyhow::{Context, ensure};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Annotations to load in the upsert phase (and search over).
    #[arg(long, default_value_t = 1_000_000)]
    annotations: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Annotations per upsert call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Searches to time.
    #[arg(long, default_value_t = 10_000)]
    searches: usize,
    /// Runs of 500 annotations to finish.
    #[arg(long, default_value_t = 300)]
    finish_runs: usize,
    /// Runs of 50,000 annotations to finish.
    #[arg(long, default_value_t = 100)]
    large_runs: usize,
    /// Annotations that may be stored and not yet indexed.
    #[arg(long, default_value_t = annostore_core::service::DEFAULT_INDEX_IN_FLIGHT)]
    index_in_flight: u32,
    /// Data directory (default: a temporary one).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Skip the upsert phase and search what an earlier run with the same
    /// `--annotations` loaded into `--data-dir` (for profiling the query phases).
    #[arg(long, requires = "data_dir")]
    reuse: bool,
}

// The server binary uses mimalloc too; the bench measures what it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Annotations per media item (one run per media item in the load phase).
const PER_MEDIA: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_owned());
    let engines = annostore_embedded::open(&dir).context("opening engines")?;
    let service = Arc::new(
        Service::new(engines, Limits::default(), Arc::new(SystemClock))
            .with_index_in_flight(args.index_in_flight),
    );
    service
        .put_type(
            "objects",
            1,
            TypeDefinition {
                schema: json!({"type": "object"}),
                embedding_dim: None,
            },
        )
        .await?;
    println!(
        "machine: {} cores; annostore-bench {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION")
    );

    let media_count = args.annotations.div_ceil(PER_MEDIA);
    let total = media_count * PER_MEDIA;
    if args.reuse {
        // What `serve` does at start: the active set from the store.
        service.warm_up().await?;
    } else {
        load(&args, &service, media_count).await?;
    }

    // 2. Scoped search, over exactly the annotations loaded: media + type + 10 s window.
    let mut h = Histogram::<u64>::new(3)?;
    let mut found = 0usize;
    let mut rng = fastrand_seed(7);
    for _ in 0..args.searches {
        let m = (next(&mut rng) % media_count as u64) as usize;
        let from = (next(&mut rng) % (PER_MEDIA as u64 * 1_000)) as i64;
        let req = SearchRequest {
            filter: SearchFilter {
                media_id: Some(format!("video-{m:05}")),
                annotation_type: Some("objects".into()),
                time_range: Some(TimeRange::new(from, from + 10_000)),
                ..Default::default()
            },
            limit: Some(100),
            ..Default::default()
        };
        let t = Instant::now();
        let page = service.search(&req).await?;
        h.record(t.elapsed().as_micros() as u64)?;
        found += page.annotations.len();
    }
    ensure!(found > 0, "searches found nothing");
    println!(
        "search media+type+time at {total} annotations: {} queries, p50 {:.2} ms, p99 {:.2} ms ({:.1} hits/query)",
        args.searches,
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        found as f64 / args.searches as f64
    );
    // 2b. Catalogue-wide queries over everything loaded (issue 5): a label, a fuzzy
    // text query, a label in confidence order, and one media item's timeline.
    let media = |rng: &mut u64| format!("video-{:05}", next(rng) as usize % media_count);
    let queries: [(&str, &MakeQuery<'_>); 5] = [
        ("label, catalogue-wide", &|rng| {
            Query::Search(SearchRequest {
                filter: SearchFilter {
                    label: Some(LABELS[next(rng) as usize % LABELS.len()].into()),
                    ..Default::default()
                },
                limit: Some(100),
                ..Default::default()
            })
        }),
        ("label in a 60 s window, catalogue-wide", &|rng| {
            let from = (next(rng) % (PER_MEDIA as u64 * 1_000)) as i64;
            Query::Search(SearchRequest {
                filter: SearchFilter {
                    label: Some(LABELS[next(rng) as usize % LABELS.len()].into()),
                    time_range: Some(TimeRange::new(from, from + 60_000)),
                    ..Default::default()
                },
                limit: Some(100),
                ..Default::default()
            })
        }),
        ("fuzzy text (one typo), catalogue-wide", &|rng| {
            let label = LABELS[next(rng) as usize % LABELS.len()];
            Query::Search(SearchRequest {
                filter: SearchFilter {
                    text: Some(TextQuery {
                        query: typo(label),
                        fuzzy: true,
                        fields: vec![],
                    }),
                    ..Default::default()
                },
                limit: Some(100),
                ..Default::default()
            })
        }),
        ("label by confidence, catalogue-wide", &|rng| {
            Query::Search(SearchRequest {
                filter: SearchFilter {
                    label: Some(LABELS[next(rng) as usize % LABELS.len()].into()),
                    ..Default::default()
                },
                sort: Some(SortOrder::Confidence),
                limit: Some(100),
                ..Default::default()
            })
        }),
        (
            "timeline of one media item (labels + 10 s histogram by label)",
            &|rng| {
                Query::Aggregate(AggregateRequest {
                    filter: SearchFilter {
                        media_id: Some(media(rng)),
                        ..Default::default()
                    },
                    aggregations: AggregateSpec {
                        labels: Some(20),
                        types: false,
                        histogram: Some(HistogramSpec {
                            interval_ms: 10_000,
                            by_label: true,
                        }),
                    },
                })
            },
        ),
    ];
    for (name, make) in queries {
        let mut h = Histogram::<u64>::new(3)?;
        let mut hits = 0usize;
        let n = (args.searches / 10).max(100);
        for _ in 0..n {
            let q = make(&mut rng);
            let t = Instant::now();
            hits += match &q {
                Query::Search(req) => service.search(req).await?.annotations.len(),
                Query::Aggregate(req) => service.aggregate(req).await?.total as usize,
            };
            h.record(t.elapsed().as_micros() as u64)?;
        }
        ensure!(hits > 0, "{name}: found nothing");
        println!(
            "{name} at {total} annotations: {n} queries, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.9) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3,
        );
    }

    // 3. Finish latency for small and large runs. Per run: the time its last batches
    // take to be indexed after they are acknowledged (what a finish waits for first),
    // then the finish itself (what it costs: store write and visibility flip).
    for (size, runs) in [(500, args.finish_runs), (50_000, args.large_runs)] {
        let mut cost = Histogram::<u64>::new(3)?;
        let mut visible = Histogram::<u64>::new(3)?;
        for r in 0..runs {
            let op = service
                .start(start_req(&format!("finish-{size}-{r}")))
                .await?;
            let media = if size == 500 { 1_000_000 } else { 2_000_000 } + r;
            for chunk in (0..size).collect::<Vec<_>>().chunks(args.batch) {
                let items: Vec<Value> = chunk.iter().map(|i| item(media, *i)).collect();
                service.upsert(op.id, &items).await?;
            }
            let acknowledged = Instant::now();
            service.settle().await;
            let t = Instant::now();
            let done = service.finish(op.id).await?;
            cost.record(t.elapsed().as_micros() as u64)?;
            visible.record(acknowledged.elapsed().as_micros() as u64)?;
            ensure!(done.active, "finished run is not active");
        }
        println!(
            "finish, runs of {size}: {runs} runs, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            cost.value_at_quantile(0.5) as f64 / 1e3,
            cost.value_at_quantile(0.99) as f64 / 1e3,
            cost.max() as f64 / 1e3
        );
        println!(
            "  from last batch acknowledged to visible: p50 {:.2} ms, p99 {:.2} ms",
            visible.value_at_quantile(0.5) as f64 / 1e3,
            visible.value_at_quantile(0.99) as f64 / 1e3,
        );
    }

    drop(service);
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// 1. Upsert throughput, then every run finished (what the search phases read).
async fn load(args: &Args, service: &Arc<Service>, media_count: usize) -> anyhow::Result<()> {
    let total = media_count * PER_MEDIA;
    // 1. Upsert throughput. The producers' batches are built before the clock starts:
    // what is measured is the service (validation, store, index), not the client.
    let mut work: Vec<Vec<(usize, Vec<Vec<Value>>)>> = vec![Vec::new(); args.producers];
    for m in 0..media_count {
        let batches = (0..PER_MEDIA)
            .collect::<Vec<_>>()
            .chunks(args.batch)
            .map(|chunk| chunk.iter().map(|i| item(m, *i)).collect())
            .collect();
        work[m % args.producers].push((m, batches));
    }
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut tasks = Vec::new();
    for runs in work {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let mut ops = Vec::new();
            for (m, batches) in runs {
                let op = service.start(start_req(&format!("video-{m:05}"))).await?;
                for items in batches {
                    service.upsert(op.id, &items).await?;
                }
                ops.push(op.id);
            }
            anyhow::Ok(ops)
        }));
    }
    let mut ops = Vec::new();
    for t in tasks {
        ops.extend(t.await??);
    }
    let acknowledged = started.elapsed();
    // Throughput counts indexing: the clock stops once every batch is searchable.
    service.settle().await;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "upsert: {total} annotations acknowledged in {:.1} s and indexed in {:.1} s from {} producers, \
         batches of {}: {:.0} annotations/s ({:.1} us of CPU per annotation, {:.0}% of one core)",
        acknowledged.as_secs_f64(),
        elapsed.as_secs_f64(),
        args.producers,
        args.batch,
        total as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / total as f64,
        cpu * 100.0 / elapsed.as_secs_f64()
    );
    for id in &ops {
        service.finish(*id).await?;
    }
    Ok(())
}

enum Query {
    Search(SearchRequest),
    Aggregate(AggregateRequest),
}

/// Makes the next query of a kind from the bench's random sequence.
type MakeQuery<'a> = dyn Fn(&mut u64) -> Query + 'a;

/// The word with two neighbouring letters swapped: one edit for fuzzy search.
fn typo(word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() >= 3 {
        chars.swap(1, 2);
    }
    chars.into_iter().collect()
}

fn start_req(pivot: &str) -> StartOperation {
    StartOperation {
        producer: None,
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: pivot.into(),
        lease_seconds: None,
        metadata: None,
    }
}

const LABELS: &[&str] = &[
    "person", "car", "dog", "cat", "bicycle", "chair", "tree", "cup",
];

/// Annotation `i` of media `m`: one per second, with a box and a label.
fn item(m: usize, i: usize) -> Value {
    let x = (i % 10) as f64 / 20.0;
    json!({
        "id": Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{m}/{i}").as_bytes()),
        "media_id": format!("video-{m:05}"),
        "start_ms": i * 1_000,
        "end_ms": i * 1_000 + 1_000,
        "label": LABELS[(i + m) % LABELS.len()],
        "confidence": 0.5 + (i % 50) as f64 / 100.0,
        "bbox": {"x": x, "y": 0.25, "w": 0.3, "h": 0.5},
        "data": {"track": i % 17}
    })
}

/// CPU time (user + system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// xorshift64: a fixed, dependency-free sequence so runs are comparable.
fn fastrand_seed(seed: u64) -> u64 {
    seed.max(1)
}

fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}
