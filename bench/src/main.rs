//! `annostore-bench`: throughput and latency of the service on the embedded engines,
//! in process (no HTTP), on a fresh data directory.
//!
//! Run: `cargo run --release -p annostore-bench -- [--annotations 1000000]`
//! Measures: upsert throughput (1,000-annotation batches from 4 concurrent producers,
//! indexing included), finish latency for runs of 500 and of 50,000 annotations, and
//! search latency for media + type + time range over everything loaded.

use annostore_core::clock::SystemClock;
use annostore_core::model::{
    SearchFilter, SearchRequest, StartOperation, TimeRange, TypeDefinition,
};
use annostore_core::service::Service;
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
    /// Runs of 500 annotations to finish (runs of 50,000 are a tenth as many, at least 5).
    #[arg(long, default_value_t = 100)]
    finish_runs: usize,
    /// Data directory (default: a temporary one).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

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
    let service = Arc::new(Service::new(
        engines,
        Limits::default(),
        Arc::new(SystemClock),
    ));
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

    // 1. Upsert throughput. The producers' batches are built before the clock starts:
    // what is measured is the service (validation, store, index), not the client.
    let media_count = args.annotations.div_ceil(PER_MEDIA);
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
    let elapsed = started.elapsed();
    let total = media_count * PER_MEDIA;
    println!(
        "upsert: {total} annotations in {:.1} s from {} producers, batches of {}: {:.0} annotations/s",
        elapsed.as_secs_f64(),
        args.producers,
        args.batch,
        total as f64 / elapsed.as_secs_f64()
    );
    for id in &ops {
        service.finish(*id).await?;
    }

    // 2. Finish latency for small and large runs.
    for (size, runs) in [
        (500, args.finish_runs),
        (50_000, (args.finish_runs / 10).max(5)),
    ] {
        let mut h = Histogram::<u64>::new(3)?;
        for r in 0..runs {
            let op = service
                .start(start_req(&format!("finish-{size}-{r}")))
                .await?;
            for chunk in (0..size).collect::<Vec<_>>().chunks(args.batch) {
                let items: Vec<Value> = chunk
                    .iter()
                    .map(|i| item(if size == 500 { 1_000_000 } else { 2_000_000 } + r, *i))
                    .collect();
                service.upsert(op.id, &items).await?;
            }
            let t = Instant::now();
            let done = service.finish(op.id).await?;
            h.record(t.elapsed().as_micros() as u64)?;
            ensure!(done.active, "finished run is not active");
        }
        println!(
            "finish, runs of {size}: {runs} runs, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3
        );
    }

    // 3. Scoped search: media + type + 10 s window.
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
                time_range: Some(TimeRange {
                    start_ms: from,
                    end_ms: from + 10_000,
                }),
                ..Default::default()
            },
            limit: Some(100),
            page_token: None,
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
    drop(service);
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

fn start_req(pivot: &str) -> StartOperation {
    StartOperation {
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
