//! The producer commands: `ingest` (this machine), `submit` and `worker` (Kafka).
//! They turn flags into `annostore-ingest` configurations and report the outcome.

use crate::cli::{IngestArgs, KafkaArgs, ModelArgs, RunArgs, SubmitArgs, WorkerArgs};
use annostore_ingest::api::ApiClient;
use annostore_ingest::detect::DetectorConfig;
use annostore_ingest::embed::EmbedderConfig;
use annostore_ingest::kafka::{self, KafkaSettings, TaskPublisher, WorkerSettings};
use annostore_ingest::run::{self, Pool, RunOptions, VideoSpec};
use annostore_ingest::segment::ModelConfig;
use annostore_ingest::text::TextEncoderConfig;
use annostore_ingest::textspace::TextSpaceConfig;
use annostore_kafka::KafkaConfig;
use anyhow::{Context, bail};
use serde_json::json;

pub fn model_config(args: &ModelArgs, threads: usize) -> anyhow::Result<ModelConfig> {
    let channels = |name: &str, v: &[f32]| -> anyhow::Result<[f32; 3]> {
        match v {
            [r, g, b] if v.iter().all(|x| x.is_finite()) => Ok([*r, *g, *b]),
            _ => bail!("--{name} takes three finite numbers (R,G,B), not {v:?}"),
        }
    };
    let mean = channels("embedder-mean", &args.embedder_mean)?;
    let std = channels("embedder-std", &args.embedder_std)?;
    if std.iter().any(|s| *s <= 0.0) {
        bail!("--embedder-std must be above 0 in every channel, not {std:?}");
    }
    if !(1..=4096).contains(&args.embedder_size) || !(1..=8192).contains(&args.detector_size) {
        bail!("--embedder-size must be 1 to 4096 and --detector-size 1 to 8192");
    }
    if !(1..=100).contains(&args.text_top_classes) {
        bail!(
            "--text-top-classes must be 1 to 100, not {}",
            args.text_top_classes
        );
    }
    if !(args.text_label_weight.is_finite() && args.text_label_weight >= 0.0) {
        bail!(
            "--text-label-weight must be a finite number of at least 0, not {}",
            args.text_label_weight
        );
    }
    Ok(ModelConfig {
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
            input_size: args.embedder_size,
            mean,
            std,
            ..EmbedderConfig::default()
        }),
        text_space: args.text_encoder.as_ref().map(|path| TextSpaceConfig {
            encoder: TextEncoderConfig {
                path: path.clone(),
                tokenizer: args.tokenizer.clone(),
                ..TextEncoderConfig::default()
            },
            classes: args.embedder_classes.clone(),
            logits: args.embedder_logits.clone(),
            top: args.text_top_classes,
            label_weight: args.text_label_weight,
        }),
        runtime: args.onnxruntime.clone(),
        threads,
    })
}

/// The type a run writes when `--type` is not given: text-space vectors (`text`) have
/// another length than visual ones, and a type version's length is immutable.
pub fn default_type(text: bool) -> &'static str {
    if text { "objects-text" } else { "objects" }
}

pub fn run_options(args: &RunArgs, text: bool) -> anyhow::Result<RunOptions> {
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
        annotation_type: args
            .annotation_type
            .clone()
            .unwrap_or_else(|| default_type(text).to_owned()),
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
    let mut options = run_options(&args.run, args.models.text_encoder.is_some())?;
    let specs = video_specs(&args.videos, args.media_id.as_ref())?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    options.workers = jobs;
    let api = ApiClient::with_key(&args.client.server, args.client.api_key.as_deref());
    let models = model_config(&args.models, 1)?;
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

/// The Kafka side of `submit` and `worker`.
fn kafka_settings(args: &KafkaArgs, client_id: &str) -> KafkaSettings {
    KafkaSettings {
        connection: KafkaConfig {
            brokers: args.kafka.clone(),
            client_id: client_id.to_owned(),
            ..KafkaConfig::default()
        },
        tasks_topic: args.tasks_topic.clone(),
        progress_topic: args.progress_topic.clone(),
    }
}

/// `annostore submit`: probes every video (nothing starts if one is not a video),
/// starts their runs, publishes one task per segment. Prints one JSON line per run;
/// with `--wait`, once the runs are settled, and fails unless all FINISHED.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    // Workers with --text-encoder need `--type objects-text --embedding-dim 384` here.
    let options = run_options(&args.run, false)?;
    let specs = video_specs(&args.videos, args.media_id.as_ref())?;
    if args.partitions < 1 || args.replication < 1 {
        bail!("--partitions and --replication must be at least 1");
    }
    // Every video is probed and hashed before any run starts, once.
    let mut inspected = Vec::with_capacity(specs.len());
    for spec in &specs {
        inspected.push(
            run::inspect(spec)
                .await
                .with_context(|| format!("submitting {}: no run started", spec.source))?,
        );
    }
    let api = ApiClient::with_key(&args.client.server, args.client.api_key.as_deref());
    let embedding_dim = (args.embedding_dim > 0).then_some(args.embedding_dim);
    run::register_type(&api, &options, embedding_dim)
        .await
        .context("registering the annotation type")?;
    let settings = kafka_settings(&args.kafka, "annostore-submit");
    kafka::ensure_topics(&settings, args.partitions, args.replication).await?;
    let publisher = TaskPublisher::new(&settings)?;
    let mut started = Vec::new();
    for video in inspected {
        let source = video.source.clone();
        let published = match run::start(&api, video, &options, "annostore submit").await {
            Ok(video) => match publisher.publish(&video, &options).await {
                Ok(()) => Ok(video),
                Err(e) => {
                    let _ = api.cancel(video.operation.id).await;
                    Err(e)
                }
            },
            Err(e) => Err(e.into()),
        };
        match published {
            Ok(video) => started.push(video),
            Err(e) => {
                // All or nothing: the runs already published are cancelled too.
                for video in &started {
                    let _ = api.cancel(video.operation.id).await;
                }
                return Err(e.context(format!(
                    "submitting {} ({} earlier runs of this submit cancelled)",
                    source,
                    started.len()
                )));
            }
        }
    }
    if !args.wait {
        for video in &started {
            println!(
                "{}",
                json!({
                    "operation_id": video.operation.id,
                    "media_id": video.media_id,
                    "source": video.source,
                    "pivot_id": video.pivot_id,
                    "segments": video.segments.len(),
                    "status": video.operation.status,
                })
            );
        }
        return Ok(());
    }
    let mut failed = 0;
    for video in &started {
        let op = loop {
            let op = api.operation(video.operation.id).await?;
            if op.status != "STARTED" {
                break op;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        if op.status != "FINISHED" {
            failed += 1;
        }
        println!(
            "{}",
            json!({
                "operation_id": op.id,
                "media_id": video.media_id,
                "status": op.status,
                "annotation_count": op.annotation_count,
            })
        );
    }
    if failed > 0 {
        bail!("{failed} of {} runs did not finish", started.len());
    }
    Ok(())
}

/// `annostore worker`: computes segment tasks until Ctrl-C or SIGTERM (then finishes
/// the current task and exits 0); fails on a model error, leaving the task to others.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    if args.jobs < 1 {
        bail!("--jobs must be at least 1");
    }
    let settings = WorkerSettings {
        kafka: kafka_settings(&args.kafka, "annostore-worker"),
        group: args.group.clone(),
        session_timeout_ms: args.session_timeout_ms,
        max_poll_interval_ms: args.max_poll_interval_ms,
    };
    let api = ApiClient::with_key(&args.client.server, args.client.api_key.as_deref());
    let models = model_config(&args.models, 1)?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping: finishing the current task");
        let _ = stop_tx.send(true);
    });
    kafka::run_worker(api, settings, models, args.jobs, stop).await
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
