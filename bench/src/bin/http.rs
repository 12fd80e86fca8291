//! `annostore-http-bench`: what producers and readers meet over HTTP, against a spawned
//! release `annostore serve` on the embedded engines, the scenario of issue 19:
//!
//! 1. **Load**: `--producers` (4) upsert `--annotations` (400,000) in batches of
//!    `--batch` (1,000) into `--runs` runs (4; one media item each), then finish them.
//! 2. **Finish**: runs of 500 and of 50,000 annotations, each finished right after its
//!    last acknowledged upsert; the finish is timed, and so is the time from that last
//!    acknowledgement to a search that does not name the run showing it (time to
//!    visible). Every finished run is then checked whole (an aggregate count).
//! 3. **Scoped search**: media + type + a 10 s window, limit 100, one after the other.
//!
//! Phases 2 and 3 run twice: with no other writes, and with background producers
//! writing a steady `--background-rate` (20,000) annotations/s into runs of their own.
//!
//! cargo build --release -p annostore-api --bin annostore -p annostore-bench --bin annostore-http-bench
//! target/release/annostore-http-bench [--annotations 10000000 --runs 400]
//!
//! The client keeps connections open, builds each body before its timer starts and
//! writes JSON by hand (no `Value` trees), so it is not what is measured.

use annostore_bench::serve::start_server;
use anyhow::{Context, bail, ensure};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Annotations to load before measuring (the store's size for the later phases).
    #[arg(long, default_value_t = 400_000)]
    annotations: usize,
    /// Runs the load is split into (one media item each).
    #[arg(long, default_value_t = 4)]
    runs: usize,
    /// Concurrent producers of the load.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Annotations per upsert.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Runs of 500 annotations to finish, per condition (quiet, under writes).
    #[arg(long, default_value_t = 200)]
    small_runs: usize,
    /// Runs of 50,000 annotations to finish, per condition.
    #[arg(long, default_value_t = 20)]
    large_runs: usize,
    /// Scoped searches to time, per condition.
    #[arg(long, default_value_t = 1_000)]
    searches: usize,
    /// Annotations/s the background producers write in the "under writes" condition.
    #[arg(long, default_value_t = 20_000)]
    background_rate: u64,
    /// Only the load and the quiet condition.
    #[arg(long)]
    quiet_only: bool,
    /// Server settings as `ANNOSTORE_*` variables (repeat).
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

const TYPE: &str = "bench";
const LABELS: [&str; 8] = [
    "person", "car", "dog", "cat", "bicycle", "truck", "bird", "horse",
];
/// Each annotation covers one 40 ms frame (25 fps).
const FRAME_MS: u64 = 40;

/// The API, over one pooled client.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: Arc<str>,
}

impl Api {
    async fn post(&self, path: &str, body: String) -> anyhow::Result<Vec<u8>> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            bail!(
                "POST {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(400)])
            );
        }
        Ok(body.to_vec())
    }

    async fn start(&self, pivot: &str) -> anyhow::Result<Uuid> {
        let body = format!(
            r#"{{"annotation_type":"{TYPE}","annotation_type_version":1,"pivot_id":"{pivot}","lease_seconds":3600}}"#
        );
        let op: Value = serde_json::from_slice(&self.post("/v1/operations", body).await?)?;
        Ok(op["id"].as_str().context("operation id")?.parse()?)
    }

    async fn upsert(&self, op: Uuid, body: String) -> anyhow::Result<()> {
        self.post(&format!("/v1/operations/{op}/annotations"), body)
            .await
            .map(drop)
    }

    async fn finish(&self, op: Uuid) -> anyhow::Result<()> {
        self.post(&format!("/v1/operations/{op}/finish"), String::new())
            .await
            .map(drop)
    }

    /// How many visible annotations of a media item in `[from, to]` the first page of
    /// `limit` holds (the page is read, not kept: the client stays out of the figures).
    async fn scoped(&self, media: &str, from: u64, to: u64, limit: u32) -> anyhow::Result<usize> {
        #[derive(serde::Deserialize)]
        struct Page {
            annotations: Vec<serde::de::IgnoredAny>,
        }
        let body = format!(
            r#"{{"media_id":"{media}","annotation_type":"{TYPE}","time_range":{{"start_ms":{from},"end_ms":{to}}},"limit":{limit}}}"#
        );
        let page: Page = serde_json::from_slice(&self.post("/v1/annotations/search", body).await?)?;
        Ok(page.annotations.len())
    }

    /// The server's cheapest answer (`GET /healthz`): what HTTP alone costs here.
    async fn health(&self) -> anyhow::Result<()> {
        self.http
            .get(format!("{}/healthz", self.base))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok(())
    }

    /// How many visible annotations a media item has.
    async fn count(&self, media: &str) -> anyhow::Result<u64> {
        let body = format!(r#"{{"media_id":"{media}","aggregations":{{}}}}"#);
        let v: Value =
            serde_json::from_slice(&self.post("/v1/annotations/aggregate", body).await?)?;
        v["total"].as_u64().context("aggregate total")
    }
}

/// An upsert body of `n` annotations of `media`, frames `first..first + n`.
fn batch_body(media: &str, first: u64, n: usize) -> String {
    let mut s = String::with_capacity(n * 190 + 32);
    s.push_str(r#"{"annotations":["#);
    for i in 0..n as u64 {
        let frame = first + i;
        let t = frame * FRAME_MS;
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"id":"{}","media_id":"{media}","start_ms":{t},"end_ms":{},"label":"{}","confidence":{:.3},"bbox":{{"x":0.1,"y":0.2,"w":0.3,"h":0.4}}}}"#,
            Uuid::new_v4(),
            t + FRAME_MS,
            LABELS[(frame % LABELS.len() as u64) as usize],
            0.5 + (frame % 50) as f64 / 100.0,
        );
    }
    s.push_str("]}");
    s
}

/// Writes a run of `total` annotations of `media` in batches, `lanes` batches in flight.
/// Returns when every batch is acknowledged, and when the last acknowledgement came.
async fn write_run(
    api: &Api,
    op: Uuid,
    media: &str,
    total: usize,
    batch: usize,
    lanes: usize,
) -> anyhow::Result<Instant> {
    let batches: Vec<(u64, usize)> = (0..total.div_ceil(batch))
        .map(|b| ((b * batch) as u64, batch.min(total - b * batch)))
        .collect();
    let next = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(batches);
    let mut tasks = Vec::new();
    for _ in 0..lanes.max(1) {
        let (api, next, batches, media) =
            (api.clone(), next.clone(), batches.clone(), media.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&(first, n)) = batches.get(i) else {
                    return anyhow::Ok(last);
                };
                let body = batch_body(&media, first, n);
                api.upsert(op, body).await?;
                last = Some(Instant::now());
            }
        }));
    }
    let mut last = None;
    for t in tasks {
        last = last.max(t.await??);
    }
    last.context("a run of no batches")
}

/// Producers writing a steady rate into runs of their own until stopped; every
/// `run_size` annotations a producer finishes its run and starts the next.
struct Background {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
}

impl Background {
    async fn start(api: &Api, rate: u64, batch: usize) -> anyhow::Result<Background> {
        let stop = Arc::new(AtomicBool::new(false));
        let producers = 2u64;
        let per_producer = rate / producers;
        let mut tasks = Vec::new();
        for p in 0..producers {
            let (api, stop) = (api.clone(), stop.clone());
            let pause = Duration::from_secs_f64(batch as f64 / per_producer.max(1) as f64);
            tasks.push(tokio::spawn(async move {
                let mut written = 0u64;
                let mut run = 0u64;
                let mut ticker = tokio::time::interval(pause);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    let media = format!("background-{p}-{run}");
                    let op = api.start(&media).await?;
                    let mut frame = 0u64;
                    while frame < 200_000 && !stop.load(Ordering::Relaxed) {
                        ticker.tick().await;
                        api.upsert(op, batch_body(&media, frame, batch)).await?;
                        frame += batch as u64;
                        written += batch as u64;
                    }
                    api.finish(op).await?;
                    run += 1;
                }
                anyhow::Ok(written)
            }));
        }
        Ok(Background { stop, tasks })
    }

    async fn stop(self, since: Instant) -> anyhow::Result<f64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut written = 0;
        for t in self.tasks {
            written += t.await??;
        }
        Ok(written as f64 / since.elapsed().as_secs_f64())
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn row(what: &str, h: &Histogram<u64>) {
    println!(
        "| {what} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        h.len(),
        ms(h, 0.5),
        ms(h, 0.99),
        h.max() as f64 / 1000.0
    );
}

/// Runs of `size` annotations, each finished right after its last acknowledged upsert.
/// Returns (finish, time to visible) in microseconds.
async fn finishes(
    api: &Api,
    args: &Args,
    size: usize,
    runs: usize,
    tag: &str,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let (mut finish, mut visible) = (histogram()?, histogram()?);
    for r in 0..runs {
        // A new key per run, on a media item of its own: the first search that shows
        // annotations of it shows this run.
        let media = format!("finish-{tag}-{size}-{r}");
        let op = api.start(&media).await?;
        let lanes = if size > args.batch { 2 } else { 1 };
        let last_ack = write_run(api, op, &media, size, args.batch, lanes).await?;
        let t = Instant::now();
        api.finish(op).await?;
        let finished = Instant::now();
        finish.record((finished - t).as_micros().max(1) as u64)?;
        let seen = api.scoped(&media, 0, 10_000, 10).await?;
        ensure!(
            seen == size.min(10),
            "run {op} ({size}) finished but a search right after shows {seen} of its annotations"
        );
        visible.record(last_ack.elapsed().as_micros().max(1) as u64)?;
        let whole = api.count(&media).await?;
        ensure!(
            whole == size as u64,
            "run {op} finished with {whole} of {size} annotations visible"
        );
    }
    Ok((finish, visible))
}

/// Scoped searches over the loaded runs: media + type + 10 s window, limit 100.
async fn searches(api: &Api, args: &Args, per_run: usize) -> anyhow::Result<Histogram<u64>> {
    let mut h = histogram()?;
    let mut rng = fastrand::Rng::with_seed(19);
    let span = per_run as u64 * FRAME_MS;
    let mut found = 0usize;
    for _ in 0..args.searches {
        let media = format!("load-{}", rng.usize(..args.runs));
        let from = rng.u64(..span.saturating_sub(10_000).max(1));
        let t = Instant::now();
        found += api.scoped(&media, from, from + 10_000, 100).await?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    ensure!(
        found >= args.searches * 100 * 9 / 10,
        "scoped searches found {found} annotations in {} pages of 100",
        args.searches
    );
    Ok(h)
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.runs > 0 && args.batch > 0 && args.producers > 0,
        "nothing to do"
    );
    let dir = tempfile::Builder::new()
        .prefix("annostore-http-bench-")
        .tempdir_in(std::env::var_os("ANNOSTORE_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))?;
    let (serve, base) = start_server(dir.path(), &args.env)?;
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?,
        base: base.into(),
    };
    api.http
        .put(format!("{}/v1/types/{TYPE}/versions/1", api.base))
        .header("content-type", "application/json")
        .body(r#"{"schema":{"type":"object"}}"#)
        .send()
        .await?
        .error_for_status()?;
    println!(
        "machine: {} cores; annostore-http-bench {}; server {} (pid {}), settings {:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION"),
        api.base,
        serve.pid(),
        args.env
    );

    // 1. Load.
    let per_run = args.annotations / args.runs;
    let mut ops = Vec::new();
    for r in 0..args.runs {
        ops.push(api.start(&format!("load-{r}")).await?);
    }
    let started = Instant::now();
    let ops = Arc::new(ops);
    let next = Arc::new(AtomicU64::new(0));
    let batches_per_run = per_run.div_ceil(args.batch);
    let total_batches = (batches_per_run * args.runs) as u64;
    let mut tasks = Vec::new();
    for _ in 0..args.producers {
        let (api, ops, next, batch) = (api.clone(), ops.clone(), next.clone(), args.batch);
        tasks.push(tokio::spawn(async move {
            loop {
                // Batches go round the runs, so every run grows at once.
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total_batches {
                    return anyhow::Ok(());
                }
                let (r, b) = ((i as usize) % ops.len(), (i as usize) / ops.len());
                let first = (b * batch) as u64;
                let n = batch.min(per_run - b * batch);
                api.upsert(ops[r], batch_body(&format!("load-{r}"), first, n))
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    for op in ops.iter() {
        api.finish(*op).await?;
    }
    let loaded = per_run * args.runs;
    println!(
        "load: {loaded} annotations in {:.1} s = {:.0} annotations/s ({} producers, batches of {})",
        load_secs,
        loaded as f64 / load_secs,
        args.producers,
        args.batch
    );

    println!("| what | n | p50 | p99 | max |\n|---|---|---|---|---|");
    let mut floor = histogram()?;
    for _ in 0..args.searches {
        let t = Instant::now();
        api.health().await?;
        floor.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    row("HTTP alone (GET /healthz), quiet", &floor);
    let conditions: &[bool] = if args.quiet_only {
        &[false]
    } else {
        &[false, true]
    };
    for &busy in conditions {
        let tag = if busy { "writes" } else { "quiet" };
        let since = Instant::now();
        let background = if busy {
            Some(Background::start(&api, args.background_rate, args.batch).await?)
        } else {
            None
        };
        let search = searches(&api, &args, per_run).await?;
        row(&format!("scoped search, {tag}"), &search);
        for (size, runs) in [(500, args.small_runs), (50_000, args.large_runs)] {
            if runs == 0 {
                continue;
            }
            let (finish, visible) = finishes(&api, &args, size, runs, tag).await?;
            row(&format!("finish, run of {size}, {tag}"), &finish);
            row(&format!("time to visible, run of {size}, {tag}"), &visible);
        }
        if let Some(b) = background {
            let rate = b.stop(since).await?;
            println!("(background writes during this condition: {rate:.0} annotations/s)");
        }
    }
    drop(serve);
    Ok(())
}
