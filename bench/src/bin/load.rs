//! Load benchmark: many concurrent connections mixing upserts and searches against a
//! real `annostore serve`. Reports throughput, latency percentiles per kind, every
//! status seen (anything but 200 and the admission layer's 503 is an error), and the
//! server's peak memory.
//!
//! cargo build --release -p annostore-api --bin annostore -p annostore-bench --bin annostore-load-bench
//! target/release/annostore-load-bench --connections 1000 --seconds 30

use annostore_bench::serve::start_server;
use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Concurrent connections, each sending one request after the other.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Share of requests that are upserts (the rest are searches).
    #[arg(long, default_value_t = 0.3)]
    upsert_share: f64,
    /// Annotations per upsert.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// STARTED runs the upserts spread over (one media item each).
    #[arg(long, default_value_t = 64)]
    runs: usize,
    /// Server settings as `ANNOSTORE_*` variables (repeat), e.g.
    /// `ANNOSTORE_HTTP__MAX_IN_FLIGHT=64`.
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
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// What one connection saw.
struct Tally {
    upsert: Histogram<u64>,
    search: Histogram<u64>,
    statuses: BTreeMap<(&'static str, u16), u64>,
    failures: Vec<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            upsert: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            search: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            statuses: BTreeMap::new(),
            failures: Vec::new(),
        })
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.upsert.add(&other.upsert)?;
        self.search.add(&other.search)?;
        for (k, n) in other.statuses {
            *self.statuses.entry(k).or_default() += n;
        }
        self.failures.extend(other.failures);
        Ok(())
    }
}

const LABELS: [&str; 4] = ["person", "car", "dog", "cat"];

fn item(media: &str, t: u64) -> Value {
    json!({
        "id": Uuid::new_v4(),
        "media_id": media,
        "start_ms": t * 40,
        "end_ms": t * 40 + 40,
        "label": LABELS[(t % 4) as usize],
        "confidence": 0.5,
        "bbox": {"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2},
    })
}

/// Starts a run of the `load` type for video `i`.
async fn start(http: &reqwest::Client, base: &str, i: usize) -> anyhow::Result<Uuid> {
    let op: Value = http
        .post(format!("{base}/v1/operations"))
        .json(&json!({
            "annotation_type": "load", "annotation_type_version": 1,
            "pivot_id": format!("video-{i}"), "lease_seconds": 3600,
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(op["id"].as_str().context("operation id")?.parse()?)
}

async fn setup(http: &reqwest::Client, base: &str, args: &Args) -> anyhow::Result<Vec<Uuid>> {
    let r = http
        .put(format!("{base}/v1/types/load/versions/1"))
        .json(&json!({"schema": {}}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("registering the type: {}", r.status());
    }
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let id = start(http, base, i).await?;
        // A finished run per media item, for the searches to find.
        let items: Vec<_> = (0..200).map(|t| item(&format!("media-{i}"), t)).collect();
        http.post(format!("{base}/v1/operations/{id}/annotations"))
            .json(&json!({"annotations": items}))
            .send()
            .await?
            .error_for_status()?;
        http.post(format!("{base}/v1/operations/{id}/finish"))
            .send()
            .await?
            .error_for_status()?;
        // And a STARTED one for the upserts.
        runs.push(start(http, base, i).await?);
    }
    Ok(runs)
}

async fn connection(
    http: reqwest::Client,
    base: Arc<str>,
    runs: Arc<Vec<Uuid>>,
    batch: usize,
    upsert_share: f64,
    until: Instant,
    seed: u64,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = seed * 1_000_000;
    while Instant::now() < until {
        let k = rng.usize(..runs.len());
        let media = format!("media-{k}");
        let (kind, req) = if rng.f64() < upsert_share {
            let items: Vec<_> = (0..batch)
                .map(|_| {
                    t += 1;
                    item(&media, t)
                })
                .collect();
            let req = http
                .post(format!("{base}/v1/operations/{}/annotations", runs[k]))
                .json(&json!({"annotations": items}));
            ("upsert", req)
        } else {
            let from = rng.u64(0..7_000);
            let req = http
                .post(format!("{base}/v1/annotations/search"))
                .json(&json!({"media_id": media, "time_range": {"start_ms": from, "end_ms": from + 1_000}, "limit": 20}));
            ("search", req)
        };
        let started = Instant::now();
        let status = match req.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let body = r.bytes().await.unwrap_or_default();
                if s != 200 && s != 503 && tally.failures.len() < 5 {
                    tally.failures.push(format!(
                        "{kind} {s}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ));
                }
                s
            }
            Err(e) => {
                if tally.failures.len() < 5 {
                    tally.failures.push(format!("{kind}: {e}"));
                }
                0
            }
        };
        let us = started.elapsed().as_micros() as u64;
        if status == 200 {
            let h = if kind == "upsert" {
                &mut tally.upsert
            } else {
                &mut tally.search
            };
            h.saturating_record(us.max(1));
        }
        *tally.statuses.entry((kind, status)).or_default() += 1;
    }
    Ok(tally)
}

/// A `/proc/<pid>/status` field, in KiB.
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("annostore-load-")
        .tempdir_in(std::env::var_os("ANNOSTORE_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))?;
    let (serve, base) = start_server(dir.path(), &args.env)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let runs = Arc::new(setup(&http, &base, &args).await?);
    let rss_before = proc_kib(serve.pid(), "VmRSS:").unwrap_or(0);
    println!(
        "machine: {} cores; {} connections for {} s, {:.0}% upserts of {} annotations into {} runs; server settings {:?}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.connections,
        args.seconds,
        args.upsert_share * 100.0,
        args.batch,
        args.runs,
        args.env
    );
    let base: Arc<str> = base.into();
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        tasks.push(tokio::spawn(connection(
            http.clone(),
            base.clone(),
            runs.clone(),
            args.batch,
            args.upsert_share,
            until,
            c as u64 + 1,
        )));
    }
    let mut total = Tally::new()?;
    for t in tasks {
        total.merge(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let peak = proc_kib(serve.pid(), "VmHWM:").unwrap_or(0);
    let answered: u64 = total.statuses.values().sum();
    let ok: u64 = total
        .statuses
        .iter()
        .filter(|((_, s), _)| *s == 200)
        .map(|(_, n)| n)
        .sum();
    println!(
        "requests: {answered} in {secs:.1} s = {:.0}/s; 200: {ok} = {:.0}/s",
        answered as f64 / secs,
        ok as f64 / secs
    );
    for (name, h) in [("upsert", &total.upsert), ("search", &total.search)] {
        println!(
            "{name} (200s): n {} p50 {:.1} ms p90 {:.1} p99 {:.1} max {:.1}",
            h.len(),
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    println!("statuses (0: no answer): {:?}", total.statuses);
    println!(
        "server memory: {:.0} MiB after setup, peak {:.0} MiB",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    for f in &total.failures {
        println!("error: {f}");
    }
    let bad = total
        .statuses
        .iter()
        .filter(|((_, s), _)| *s != 200 && *s != 503)
        .count();
    if bad > 0 {
        bail!("answers other than 200 and 503: see above");
    }
    drop(serve);
    Ok(())
}
