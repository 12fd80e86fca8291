//! `annostore-ops-bench`: what operating a store costs on the embedded engines, through
//! the service: rollback and roll forward latency (with readers searching the key all
//! along), and a garbage collection pass's throughput.
//!
//! Run: `cargo run --release -p annostore-bench --no-default-features --bin
//! annostore-ops-bench -- [--annotations 200000] [--moves 50] [--readers 2]`
//! Writes two runs of `--annotations` each for one key (batches of 5,000), finishes
//! both, then times `--moves` alternating rollbacks and roll forwards while `--readers`
//! tasks search the key; then a pass with no retention collects the inactive run
//! (store and index), timed, in batches of `--gc-batch`.

use annostore_core::clock::SystemClock;
use annostore_core::model::{SearchFilter, SearchRequest, StartOperation, TypeDefinition};
use annostore_core::service::{GcOptions, Retention, Service};
use annostore_core::validate::Limits;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Annotations per run.
    #[arg(long, default_value_t = 200_000)]
    annotations: usize,
    /// Rollbacks and roll forwards timed.
    #[arg(long, default_value_t = 50)]
    moves: usize,
    /// Tasks searching the key during the moves.
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Annotations deleted per store call by the GC pass.
    #[arg(long, default_value_t = 1_000)]
    gc_batch: usize,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 5_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

fn batch(run: usize, from: usize) -> Vec<Value> {
    (from..from + BATCH)
        .map(|i| {
            let label = ["person", "car"][(i + run) % 2];
            json!({"media_id": format!("movie-{}", i % 100), "start_ms": i * 40,
                   "end_ms": i * 40 + 40, "label": label, "confidence": 0.5})
        })
        .collect()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let engines = annostore_embedded::open(dir.path())?;
    let service = Arc::new(Service::new(
        engines,
        Limits::default(),
        Arc::new(SystemClock),
    ));
    let def = TypeDefinition {
        schema: json!({}),
        embedding_dim: None,
    };
    service.put_type("objects", 1, def).await?;
    let start = StartOperation {
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: "catalogue".into(),
        lease_seconds: None,
        metadata: None,
        producer: None,
    };
    let mut runs = Vec::new();
    let loading = Instant::now();
    for run in 0..2 {
        let op = service.start(start.clone()).await?;
        for from in (0..args.annotations).step_by(BATCH) {
            service.upsert(op.id, &batch(run, from)).await?;
        }
        runs.push(service.finish(op.id).await?);
    }
    println!(
        "loaded 2 runs of {} annotations in {:.1} s",
        args.annotations,
        loading.elapsed().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..args.readers {
        let (service, stop, searches) = (service.clone(), stop.clone(), searches.clone());
        readers.push(tokio::spawn(async move {
            let req = SearchRequest {
                filter: SearchFilter {
                    pivot_id: Some("catalogue".into()),
                    media_id: Some("movie-7".into()),
                    ..Default::default()
                },
                limit: Some(100),
                ..Default::default()
            };
            while !stop.load(Ordering::Relaxed) {
                if service.search(&req).await.is_ok() {
                    searches.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let key = runs[0].key();
    let mut latency = Histogram::<u64>::new(3)?;
    let moving = Instant::now();
    for i in 0..args.moves {
        let t = Instant::now();
        if i % 2 == 0 {
            service.rollback(&key, None, None).await?;
        } else {
            service.roll_forward(&key, None, None).await?;
        }
        latency.record(t.elapsed().as_micros() as u64)?;
    }
    let moved_for = moving.elapsed();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await?;
    }
    let ms = |us: u64| us as f64 / 1_000.0;
    println!(
        "{} moves (rollback/roll forward) with {} readers: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} searches/s meanwhile",
        args.moves,
        args.readers,
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max()),
        searches.load(Ordering::Relaxed) as f64 / moved_for.as_secs_f64()
    );

    // Make sure the run to collect is the inactive one, then collect it.
    if args.moves % 2 == 1 {
        service.roll_forward(&key, None, None).await?;
    }
    let options = GcOptions {
        retention: Retention {
            superseded: Duration::ZERO,
            ended: Duration::ZERO,
        },
        max_annotations: usize::MAX,
        batch: args.gc_batch,
        dry_run: false,
    };
    let t = Instant::now();
    let report = service.collect_garbage(&options).await?;
    let took = t.elapsed().as_secs_f64();
    println!(
        "gc pass: {} run collected, {} annotations freed from the store and {} documents from the index in {:.2} s ({:.0} annotations/s)",
        report.collected,
        report.annotations_freed,
        report.index_documents_removed,
        took,
        report.annotations_freed as f64 / took
    );
    Ok(())
}
