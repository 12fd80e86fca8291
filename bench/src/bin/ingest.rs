//! Ingest benchmark: sampled frames per second end to end (decode, detect, crop, embed,
//! upsert to a real `annostore serve`, finish), and decode-only speed.
//!
//! cargo build --release -p annostore-api --bin annostore -p annostore-bench
//! target/release/annostore-ingest-bench --detector ../shared/models/centernet.onnx \
//!     --embedder ../shared/models/mobilenetv2_imagenet.onnx ../shared/media/slideshow_720p.mp4

use annostore_bench::serve::start_server;
use annostore_ingest::api::ApiClient;
use annostore_ingest::detect::DetectorConfig;
use annostore_ingest::embed::EmbedderConfig;
use annostore_ingest::media::Sampler;
use annostore_ingest::run::{self, Pool, RunOptions, VideoSpec};
use annostore_ingest::segment::{self, ModelConfig};
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    video: String,
    #[arg(long)]
    detector: PathBuf,
    #[arg(long)]
    embedder: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    fps: f64,
    #[arg(long, default_value_t = 10.0)]
    segment_seconds: f64,
    /// Segments computed at once [default: the number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// End-to-end runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// A running server; else `annostore serve` next to this binary on a temp dir.
    #[arg(long)]
    server: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "machine: {} cores; video {}; fps {}; jobs {jobs}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.video,
        args.fps
    );
    let models = ModelConfig {
        detector: DetectorConfig {
            path: args.detector.clone(),
            ..DetectorConfig::default()
        },
        embedder: args.embedder.as_ref().map(|p| EmbedderConfig {
            path: p.clone(),
            ..EmbedderConfig::default()
        }),
        text_space: None,
        runtime: None,
        threads: 1,
    };

    // Decode only: every frame decoded, and the samples scaled to the detector's size.
    let info = annostore_ingest::media::probe(&args.video)?;
    let (w, h) = {
        let m = models.load()?;
        m.detector.input_size()
    };
    for (label, fps, threads, crops) in [
        (
            "decode, every frame, 1 thread",
            info.frame_rate.max(1.0),
            1,
            false,
        ),
        ("decode, 1 fps samples, 1 thread", args.fps, 1, false),
        (
            "decode, 1 fps samples and full-size crop frames, 1 thread",
            args.fps,
            1,
            true,
        ),
        ("decode, 1 fps samples, 2 threads", args.fps, 2, false),
    ] {
        let whole = segment::plan(info.duration_ms, info.duration_ms)[0];
        let times = segment::sample_times(&whole, fps);
        let mut sampler = Sampler::open(&args.video, w, h, threads)?;
        if crops {
            sampler = sampler.with_crop_frames(1280)?;
        }
        let t = Instant::now();
        let n = sampler
            .sample(&times, |_, frames| frames.crops().map(drop))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "{label}: {} frames decoded, {n} sampled at {w}x{h} in {s:.2} s: {:.0} decoded frames/s, {:.1} x real time",
            sampler.frames_decoded,
            sampler.frames_decoded as f64 / s,
            info.duration_ms as f64 / 1000.0 / s
        );
    }

    // End to end against a real server.
    let tmp = tempfile::tempdir()?;
    let (_serve, base) = match &args.server {
        Some(url) => (None, url.clone()),
        None => {
            let (s, url) = start_server(tmp.path(), &[])?;
            (Some(s), url)
        }
    };
    let api = ApiClient::new(&base);
    let options = RunOptions {
        fps: args.fps,
        segment_ms: (args.segment_seconds * 1000.0) as u64,
        workers: jobs,
        ..RunOptions::default()
    };
    let load = Instant::now();
    let pool = Pool::start(&models, jobs)?;
    println!(
        "models loaded for {jobs} workers in {:.2} s",
        load.elapsed().as_secs_f64()
    );
    run::register_type(&api, &options, pool.embedding_dim).await?;
    let bars = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    let mut rates = Vec::new();
    for i in 0..args.runs {
        let spec = VideoSpec {
            source: args.video.clone(),
            media_id: None,
        };
        let t = Instant::now();
        let video = run::prepare(&api, &spec, &options, "annostore-bench").await?;
        let report = run::run_video(&api, &pool, &video, &options, &bars).await?;
        let s = t.elapsed().as_secs_f64();
        let rate = report.frames as f64 / s;
        println!(
            "run {i}: {} sampled frames, {} annotations, {s:.2} s (probe, hash, start, compute, upsert, finish): {rate:.1} sampled frames/s",
            report.frames, report.annotations
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "end to end: median {:.1} sampled frames/s over {} runs (min {:.1}, max {:.1})",
        rates[rates.len() / 2],
        rates.len(),
        rates[0],
        rates[rates.len() - 1]
    );
    Ok(())
}
