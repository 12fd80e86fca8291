//! `annostore-viewer-bench`: what the web viewer's requests cost on one long media item,
//! through the HTTP API of a real `annostore serve` (embedded engines, fresh directory).
//!
//! Run: `cargo build --release -p annostore-api --bin annostore`, then `cargo run
//! --release -p annostore-bench --no-default-features --bin annostore-viewer-bench --
//! [--hours 2] [--fps 1] [--boxes 10] [--other-operations 10000] [--samples 50]`
//!
//! Writes `--other-operations` one-annotation runs on other media items (`POST
//! /v1/runs`, so that the media listing and the runs scan have a catalogue to read),
//! then one run for a media item of `--hours` at `--fps` samples per second with
//! `--boxes` annotations per sample (one of 20 labels, a box, a confidence and a
//! `--embedding-dim` embedding), in upserts of `--batch`. Then, `--samples` times each,
//! one request after the other as one viewer would send them:
//! 1. a 60 s window of boxes (all its pages of 1,000) with `omit_embeddings`, as the
//!    viewer loads it around the playhead (a random window each time);
//! 2. the same window with the embeddings;
//! 3. the timeline: the top labels and a histogram by label over the whole item, the
//!    bucket width picked as the viewer does (at most about 200 buckets);
//! 4. `GET /v1/media/{id}/runs`: the first call (scans the operations for the item's
//!    keys), then the calls answered from the cached keys (the viewer's poll); and first
//!    calls on other media items, for a p50/p99 of the uncached call;
//! 5. `GET /v1/media?limit=50`, the media list.
//!
//! A latency runs from sending the request to the last byte of the answer (all pages
//! for a window); reading the JSON is the client's and is not timed. The measuring
//! starts once the server is quiet (its index work done). The data directory goes under
//! `ANNOSTORE_BENCH_DIR` (default /var/tmp). At the default size, writing takes most of
//! the time (about 9 minutes on 2 cores: the index adds each embedding to its graph).

#[path = "viewer/catalogue.rs"]
mod catalogue;

use annostore_bench::serve::start_server;
use anyhow::{Context, bail, ensure};
use catalogue::{other_media, total_annotations, write_long, write_others};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Length of the media item.
    #[arg(long, default_value_t = 2.0)]
    hours: f64,
    /// Samples per second (each sample's annotations last one sample interval).
    #[arg(long, default_value_t = 1.0)]
    fps: f64,
    /// Annotations per sample.
    #[arg(long, default_value_t = 10)]
    boxes: usize,
    /// Length of each annotation's embedding (the type's embedding_dim).
    #[arg(long, default_value_t = 1280)]
    embedding_dim: usize,
    /// Annotations per upsert of the long item's run.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// One-annotation runs written on other media items first.
    #[arg(long, default_value_t = 10_000)]
    other_operations: usize,
    /// Concurrent writers (upserts of the long run, other runs).
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Repetitions of each measured request.
    #[arg(long, default_value_t = 50)]
    samples: usize,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The viewer's window of boxes (`ui/src/annotations.ts`).
const WINDOW_MS: u64 = 60_000;
/// The viewer's bucket widths, the first at least duration / 200 (`ui/src/timeline.ts`).
const INTERVALS: [u64; 14] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    1_800_000, 3_600_000,
];
const MEDIA: &str = "feature-film-2h.mp4";
const LABELS: [&str; 20] = [
    "person",
    "car",
    "bicycle",
    "motorcycle",
    "bus",
    "truck",
    "dog",
    "cat",
    "horse",
    "bird",
    "chair",
    "couch",
    "table",
    "bottle",
    "cup",
    "phone",
    "laptop",
    "tv",
    "book",
    "clock",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

fn interval_for(duration_ms: u64) -> u64 {
    let want = duration_ms.div_ceil(200);
    INTERVALS
        .into_iter()
        .find(|&i| i >= want)
        .unwrap_or(INTERVALS[INTERVALS.len() - 1])
}

/// Sends a request that must answer 2xx; returns the JSON answer and its body's bytes.
async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<(Value, usize)> {
    let (value, len, _) = measure(req).await?;
    Ok((value, len))
}

/// Sends a request that must answer 2xx; returns its body and the microseconds from
/// sending to the last byte (reading the JSON is the client's, not timed).
async fn timed(req: reqwest::RequestBuilder) -> anyhow::Result<(impl AsRef<[u8]>, u64)> {
    let t = Instant::now();
    let r = req.send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    let took = us(t);
    if !status.is_success() {
        bail!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
    }
    Ok((body, took))
}

/// Times `req`; returns the JSON answer, its bytes and the microseconds.
async fn measure(req: reqwest::RequestBuilder) -> anyhow::Result<(Value, usize, u64)> {
    let (body, took) = timed(req).await?;
    let body = body.as_ref();
    Ok((serde_json::from_slice(body)?, body.len(), took))
}

/// The CPU seconds `pid` has used (user + system).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Waits (at most `limit`) until the server uses less than a tenth of a core over a
/// second: its background work (index merges) done. Returns the time waited.
async fn quiet(pid: u32, limit: Duration) -> Duration {
    let t = Instant::now();
    while t.elapsed() < limit {
        let Some(before) = cpu_seconds(pid) else {
            break;
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(after) = cpu_seconds(pid) else { break };
        if after - before < 0.1 {
            break;
        }
    }
    t.elapsed()
}

/// One window's load as the viewer does it: every page. Returns (annotations, bytes,
/// pages, microseconds in requests).
async fn load_window(
    http: &reqwest::Client,
    base: &str,
    w: u64,
    omit_embeddings: bool,
) -> anyhow::Result<(usize, usize, usize, u64)> {
    let (mut n, mut bytes, mut pages, mut took) = (0, 0, 0, 0);
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({
            "media_id": MEDIA,
            "time_range": {"start_ms": w * WINDOW_MS, "end_ms": (w + 1) * WINDOW_MS - 1},
            "limit": 1000,
            "omit_embeddings": omit_embeddings,
        });
        if let Some(t) = token.take() {
            body["page_token"] = t.into();
        }
        let (page, len, us) = measure(
            http.post(format!("{base}/v1/annotations/search"))
                .json(&body),
        )
        .await?;
        n += page["annotations"].as_array().context("annotations")?.len();
        bytes += len;
        pages += 1;
        took += us;
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok((n, bytes, pages, took)),
        }
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

/// Microseconds since `t`, at least 1.
fn us(t: Instant) -> u64 {
    (t.elapsed().as_micros() as u64).max(1)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

struct Row {
    what: String,
    p50: String,
    p99: String,
    bytes: String,
}

impl Row {
    fn of(what: String, h: &Histogram<u64>, bytes: String) -> Row {
        Row {
            what,
            p50: format!("{:.2} ms", ms(h.value_at_quantile(0.5))),
            p99: format!("{:.2} ms", ms(h.value_at_quantile(0.99))),
            bytes,
        }
    }
}

fn kib(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let args = Arc::new(args);
    ensure!(args.fps > 0.0 && args.hours > 0.0 && args.boxes > 0 && args.batch > 0);
    ensure!(args.samples > 0 && args.writers > 0);
    let began = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("annostore-viewer-")
        .tempdir_in(std::env::var_os("ANNOSTORE_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))?;
    let (serve, base) = start_server(dir.path(), &[])?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    for (name, def) in [
        (
            "viewer",
            json!({"schema": {}, "embedding_dim": args.embedding_dim}),
        ),
        ("other", json!({"schema": {}})),
    ] {
        send(
            http.put(format!("{base}/v1/types/{name}/versions/1"))
                .json(&def),
        )
        .await?;
    }

    let t = Instant::now();
    write_others(&http, &base, &args).await?;
    println!(
        "{} one-annotation runs on other media items (POST /v1/runs, {} at a time) in {:.1} s",
        args.other_operations,
        args.writers,
        t.elapsed().as_secs_f64()
    );
    let total = total_annotations(&args);
    let duration_ms = (args.hours * 3_600_000.0).round() as u64;
    let t = Instant::now();
    write_long(&http, &base, &args).await?;
    println!(
        "{MEDIA}: {:.2} h at {} fps x {} boxes = {total} annotations with {}-d embeddings, \
         upserts of {} ({} at a time) and finish in {:.1} s",
        args.hours,
        args.fps,
        args.boxes,
        args.embedding_dim,
        args.batch,
        args.writers,
        t.elapsed().as_secs_f64()
    );
    let written_for = began.elapsed();
    let waited = quiet(serve.pid(), Duration::from_secs(300)).await;
    println!(
        "server quiet (under a tenth of a core over 1 s) after {:.1} s",
        waited.as_secs_f64()
    );

    // The connection is open before the first timed request.
    send(http.get(format!("{base}/v1/types"))).await?;
    let mut rows = Vec::new();
    let windows = duration_ms.div_ceil(WINDOW_MS);
    for omit in [true, false] {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut h = histogram()?;
        let (mut n, mut bytes, mut pages) = (0, 0, 0);
        for _ in 0..args.samples {
            let w = rng.u64(..windows);
            let (wn, wbytes, wpages, took) = load_window(&http, &base, w, omit).await?;
            h.record(took)?;
            ensure!(wn > 0, "window {w} came back empty");
            (n, bytes, pages) = (n + wn, bytes + wbytes, pages + wpages);
        }
        let k = args.samples;
        rows.push(Row::of(
            format!(
                "60 s window, {} embeddings ({} annotations, {:.1} pages)",
                if omit { "without" } else { "with" },
                n / k,
                pages as f64 / k as f64
            ),
            &h,
            format!("{} ({} B each)", kib(bytes / k), bytes / n.max(1)),
        ));
    }

    let interval = interval_for(duration_ms);
    let body = json!({"media_id": MEDIA, "aggregations": {"labels": 1000,
                      "histogram": {"interval_ms": interval, "by_label": true}}});
    let mut h = histogram()?;
    let (mut agg, mut agg_bytes) = (Value::Null, 0);
    for _ in 0..args.samples {
        let took;
        (agg, agg_bytes, took) = measure(
            http.post(format!("{base}/v1/annotations/aggregate"))
                .json(&body),
        )
        .await?;
        h.record(took)?;
    }
    let counted = agg["total"].as_u64().context("total")?;
    ensure!(
        counted == total as u64,
        "the aggregate counts {counted} annotations, not {total}"
    );
    rows.push(Row::of(
        format!(
            "timeline: {} labels + histogram by label, {interval} ms ({} buckets)",
            agg["labels"].as_array().map_or(0, Vec::len),
            agg["histogram"].as_array().map_or(0, Vec::len)
        ),
        &h,
        kib(agg_bytes),
    ));

    let runs_url = format!("{base}/v1/media/{MEDIA}/runs");
    let (first, first_bytes, first_us) = measure(http.get(&runs_url)).await?;
    ensure!(
        first["keys"].as_array().map_or(0, Vec::len) == 1,
        "expected one key: {first}"
    );
    rows.push(Row {
        what: "media runs, first call (keys scanned)".into(),
        p50: format!("{:.2} ms", ms(first_us)),
        p99: "(one call)".into(),
        bytes: kib(first_bytes),
    });
    let mut h = histogram()?;
    for _ in 0..args.samples {
        h.record(measure(http.get(&runs_url)).await?.2)?;
    }
    rows.push(Row::of(
        "media runs, keys cached (the poll)".into(),
        &h,
        kib(first_bytes),
    ));
    if args.other_operations > 0 {
        let mut h = histogram()?;
        let mut bytes = 0;
        // Distinct media items, so that each call is a first one (nothing cached).
        let n = args.samples.min(args.other_operations);
        for k in 0..n {
            let media = other_media(k * (args.other_operations / n));
            let (_, len, took) = measure(http.get(format!("{base}/v1/media/{media}/runs"))).await?;
            h.record(took)?;
            bytes = len;
        }
        rows.push(Row::of(
            "media runs, first calls on other media items".into(),
            &h,
            kib(bytes),
        ));
    }

    let mut h = histogram()?;
    let mut bytes = 0;
    let mut listed = 0;
    for _ in 0..args.samples {
        let (list, len, took) = measure(http.get(format!("{base}/v1/media?limit=50"))).await?;
        h.record(took)?;
        bytes = len;
        listed = list["media"].as_array().map_or(0, Vec::len);
    }
    rows.push(Row::of(
        format!("media list, limit 50 ({listed} listed)"),
        &h,
        kib(bytes),
    ));

    println!(
        "machine: {} cores; {} samples per row, one request at a time",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.samples
    );
    let widths = [
        rows.iter().map(|r| r.what.len()).max().unwrap_or(0),
        rows.iter().map(|r| r.p50.len()).max().unwrap_or(0).max(3),
        rows.iter().map(|r| r.p99.len()).max().unwrap_or(0).max(3),
    ];
    println!(
        "{:w0$}  {:>w1$}  {:>w2$}  response",
        "what",
        "p50",
        "p99",
        w0 = widths[0],
        w1 = widths[1],
        w2 = widths[2]
    );
    for r in &rows {
        println!(
            "{:w0$}  {:>w1$}  {:>w2$}  {}",
            r.what,
            r.p50,
            r.p99,
            r.bytes,
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    println!(
        "took {:.1} s ({:.1} s writing)",
        began.elapsed().as_secs_f64(),
        written_for.as_secs_f64()
    );
    drop(serve);
    Ok(())
}
