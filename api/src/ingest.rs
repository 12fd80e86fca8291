//! The producer commands: `ingest` (this machine), `submit` and `worker` (Kafka).
//! They turn flags into `annostore-ingest` configurations and report the outcome.

use crate::cli::{IngestArgs, ModelArgs, RunArgs, SubmitArgs, WorkerArgs};
use annostore_ingest::api::ApiClient;
use annostore_ingest::detect::DetectorConfig;
use annostore_ingest::embed::EmbedderConfig;
use annostore_ingest::run::{self, Pool, RunOptions, VideoSpec};
use annostore_ingest::segment::ModelConfig;
use anyhow::{Context, bail};

pub fn model_config(args: &ModelArgs, threads: usize) -> ModelConfig {
    ModelConfig {
        detector: DetectorConfig {
            path: args.detector.clone(),
            classes: args.classes.clone(),
            score_threshold: args.score_threshold,
            input_size: args.detector_size,
            ..DetectorConfig::default()
        },
        embedder: args.embedder.as_ref().map(|path| EmbedderConfig {
            path: path.clone(),
            output: args.embedder_output.clone(),
            ..EmbedderConfig::default()
        }),
        runtime: args.onnxruntime.clone(),
        threads,
    }
}

pub fn run_options(args: &RunArgs) -> anyhow::Result<RunOptions> {
    if !(args.fps > 0.0 && args.fps <= 1000.0) {
        bail!("--fps must be above 0 and at most 1000, not {}", args.fps);
    }
    if !(args.segment_seconds >= 1.0 && args.segment_seconds <= 86_400.0) {
        bail!(
            "--segment-seconds must be between 1 and 86400, not {}",
            args.segment_seconds
        );
    }
    Ok(RunOptions {
        fps: args.fps,
        segment_ms: (args.segment_seconds * 1000.0).round() as u64,
        annotation_type: args.annotation_type.clone(),
        type_version: args.type_version,
        ..RunOptions::default()
    })
}

pub fn video_specs(videos: &[String], media_id: Option<&String>) -> anyhow::Result<Vec<VideoSpec>> {
    if media_id.is_some() && videos.len() > 1 {
        bail!("--media-id names one video; {} were given", videos.len());
    }
    Ok(videos
        .iter()
        .map(|v| VideoSpec {
            source: v.clone(),
            media_id: media_id.cloned(),
        })
        .collect())
}

/// `annostore ingest`: every video in turn, its segments in parallel. Prints one JSON
/// report per finished run; fails on the first video that fails (its run cancelled).
pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let options = run_options(&args.run)?;
    let specs = video_specs(&args.videos, args.media_id.as_ref())?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let api = ApiClient::new(&args.client.server);
    let models = model_config(&args.models, 1);
    let pool = tokio::task::spawn_blocking(move || Pool::start(&models, jobs))
        .await
        .context("loading the models")?
        .context("loading the models")?;
    run::register_type(&api, &options, pool.embedding_dim)
        .await
        .context("registering the annotation type")?;
    let bars = run::progress();
    for spec in &specs {
        let video = run::prepare(&api, spec, &options, "annostore ingest")
            .await
            .with_context(|| format!("ingesting {}", spec.source))?;
        let report = run::run_video(&api, &pool, &video, &options, &bars)
            .await
            .with_context(|| {
                format!(
                    "ingesting {} (run {} cancelled)",
                    spec.source, video.operation.id
                )
            })?;
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let _ = args;
    bail!("annostore submit is not built yet")
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let _ = args;
    bail!("annostore worker is not built yet")
}
