//! `annostore ingest`: runs of whole videos on this machine. For each video: probe it,
//! start its operation, compute its segments on a pool of threads (each with its own
//! models), upsert each segment as it completes, and finish; on any failure, cancel.

use crate::api::{ApiClient, ApiError, Operation, StartOperation};
use crate::media::{self, MediaError, MediaInfo};
use crate::model::ModelError;
use crate::segment::{self, FrameDone, ModelConfig, Models, Segment, SegmentError, SegmentJob};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use uuid::Uuid;

/// A failed ingest, with the video it was about.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{source_name}: {reason}")]
    Input { source_name: String, reason: String },
    #[error("interrupted")]
    Interrupted,
}

impl From<SegmentError> for IngestError {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::Media(m) => IngestError::Media(m),
            SegmentError::Model(m) => IngestError::Model(m),
        }
    }
}

/// How runs are made; shared by `ingest`, `submit` and `worker`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    /// Sampled frames per second of video.
    pub fps: f64,
    /// Longest segment a video is cut into (the unit of parallel work).
    pub segment_ms: u64,
    /// Workers computing the segments at once: segments are evened out so that their
    /// number is a multiple of it (1 when unknown, as for Kafka workers).
    pub workers: usize,
    pub annotation_type: String,
    pub type_version: u32,
    /// The operation's lease: it expires when no upsert renews it for this long.
    pub lease_seconds: u64,
    /// Annotations per upsert call.
    pub upsert_batch: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            fps: 1.0,
            segment_ms: 10_000,
            workers: 1,
            annotation_type: "objects".into(),
            type_version: 1,
            lease_seconds: 3600,
            // 1280-d embeddings are ~14 KB of JSON each: 256 stay far below 16 MiB.
            upsert_batch: 256,
        }
    }
}

/// A video named on the command line.
#[derive(Debug, Clone)]
pub struct VideoSpec {
    /// A local path or an http(s) URL.
    pub source: String,
    /// [default: the file name]
    pub media_id: Option<String>,
}

/// A video whose run has started.
#[derive(Debug, Clone)]
pub struct PreparedVideo {
    pub source: String,
    pub media_id: String,
    pub pivot_id: String,
    pub info: MediaInfo,
    pub operation: Operation,
    pub segments: Vec<Segment>,
}

impl PreparedVideo {
    pub fn job(&self, segment: Segment, options: &RunOptions) -> SegmentJob {
        SegmentJob {
            source: self.source.clone(),
            media_id: self.media_id.clone(),
            fps: options.fps,
            segment,
            operation_id: self.operation.id,
        }
    }

    /// How many frames the whole run samples.
    pub fn samples(&self, options: &RunOptions) -> u64 {
        self.segments
            .iter()
            .map(|s| segment::sample_times(s, options.fps).len() as u64)
            .sum()
    }
}

pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// The media id a video gets by default: its file name (for a URL, the last path
/// segment without the query).
pub fn default_media_id(source: &str) -> String {
    let path = source.split(['?', '#']).next().unwrap_or(source);
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or(source)
        .to_owned()
}

/// The pivot id of a run: what identifies the media file it was computed from. For a
/// local file, the SHA-256 of its bytes (the same file anywhere gives the same key, a
/// re-encoded one a new key); for a URL, the URL itself.
pub fn pivot_id(source: &str) -> Result<String, IngestError> {
    if is_url(source) {
        return Ok(source.to_owned());
    }
    let input = |reason: String| IngestError::Input {
        source_name: source.to_owned(),
        reason,
    };
    let mut file = std::fs::File::open(source).map_err(|e| input(format!("cannot open: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| input(format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// Registers the run's type if missing: `data` holds the class id, and embeddings have
/// the embedder's length.
pub async fn register_type(
    api: &ApiClient,
    options: &RunOptions,
    embedding_dim: Option<usize>,
) -> Result<(), IngestError> {
    api.ensure_type(
        &options.annotation_type,
        options.type_version,
        &segment::objects_schema(),
        embedding_dim,
    )
    .await?;
    Ok(())
}

/// A video probed and fingerprinted, its run not started yet.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub source: String,
    pub media_id: String,
    pub pivot_id: String,
    pub info: MediaInfo,
}

/// Probes `spec` and hashes it into its pivot id (blocking work, on a blocking thread).
pub async fn inspect(spec: &VideoSpec) -> Result<Inspected, IngestError> {
    if !is_url(&spec.source) && !std::path::Path::new(&spec.source).is_file() {
        return Err(IngestError::Input {
            source_name: spec.source.clone(),
            reason: "no such file".into(),
        });
    }
    let source = spec.source.clone();
    let (info, pivot_id) = tokio::task::spawn_blocking(move || -> Result<_, IngestError> {
        Ok((media::probe(&source)?, pivot_id(&source)?))
    })
    .await
    .map_err(|e| IngestError::Input {
        source_name: spec.source.clone(),
        reason: format!("probe task failed: {e}"),
    })??;
    Ok(Inspected {
        source: spec.source.clone(),
        media_id: spec
            .media_id
            .clone()
            .unwrap_or_else(|| default_media_id(&spec.source)),
        pivot_id,
        info,
    })
}

/// Starts the run of an inspected video and plans its segments.
pub async fn start(
    api: &ApiClient,
    video: Inspected,
    options: &RunOptions,
    producer: &str,
) -> Result<PreparedVideo, IngestError> {
    let operation = api
        .start(&StartOperation {
            annotation_type: options.annotation_type.clone(),
            annotation_type_version: options.type_version,
            pivot_id: video.pivot_id.clone(),
            lease_seconds: options.lease_seconds,
            metadata: json!({
                "producer": producer,
                "media_id": video.media_id,
                "source": video.source,
                "fps": options.fps,
                "duration_ms": video.info.duration_ms,
            }),
        })
        .await?;
    Ok(PreparedVideo {
        segments: segment::plan_balanced(
            video.info.duration_ms,
            options.segment_ms,
            options.workers,
        ),
        source: video.source,
        media_id: video.media_id,
        pivot_id: video.pivot_id,
        info: video.info,
        operation,
    })
}

/// Probes `spec` and starts its operation.
pub async fn prepare(
    api: &ApiClient,
    spec: &VideoSpec,
    options: &RunOptions,
    producer: &str,
) -> Result<PreparedVideo, IngestError> {
    start(api, inspect(spec).await?, options, producer).await
}

/// One segment to compute, and where its outcome goes.
struct Task {
    job: SegmentJob,
    progress: VideoProgress,
    reply: tokio::sync::mpsc::UnboundedSender<(
        Segment,
        Result<Vec<crate::api::AnnotationItem>, SegmentError>,
    )>,
}

/// A video's progress bar and its running count of detections, shared by the threads
/// computing its segments.
#[derive(Clone)]
struct VideoProgress {
    bar: ProgressBar,
    detections: Arc<AtomicU64>,
}

impl VideoProgress {
    fn frame_done(&self, done: FrameDone) {
        let total = self
            .detections
            .fetch_add(done.detections as u64, Ordering::Relaxed)
            + done.detections as u64;
        self.bar.set_message(format!("{total} detections"));
        self.bar.inc(1);
    }
}

/// Threads that each own a copy of the models and compute segments.
pub struct Pool {
    tasks: Option<mpsc::Sender<Task>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Length of the embedder's vectors, when there is one.
    pub embedding_dim: Option<usize>,
}

impl Pool {
    /// Loads the models once per thread (the first load reports model errors).
    pub fn start(models: &ModelConfig, threads: usize) -> Result<Pool, ModelError> {
        let threads = threads.max(1);
        let first = models.load()?;
        let embedding_dim = first.embedder.as_ref().map(|e| e.dim());
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let decoder_threads = segment::decoder_threads(threads);
        let mut handles = Vec::new();
        let mut first = Some(first);
        for i in 0..threads {
            let loaded = match first.take() {
                Some(m) => m,
                None => models.load()?,
            };
            let rx = rx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("ingest-{i}"))
                    .spawn(move || worker_loop(loaded, rx, decoder_threads))
                    .map_err(|e| ModelError::Run {
                        path: Default::default(),
                        reason: format!("cannot start a worker thread: {e}"),
                    })?,
            );
        }
        Ok(Pool {
            tasks: Some(tx),
            threads: handles,
            embedding_dim,
        })
    }

    fn submit(&self, task: Task) {
        if let Some(tx) = &self.tasks {
            // Fails only when every thread has exited, which the reply channel reports.
            let _ = tx.send(task);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tasks = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker_loop(mut models: Models, rx: Arc<Mutex<mpsc::Receiver<Task>>>, decoder_threads: usize) {
    loop {
        let task = match rx.lock() {
            Ok(guard) => match guard.recv() {
                Ok(t) => t,
                Err(_) => return,
            },
            Err(_) => return,
        };
        // The run this task belongs to has failed or been interrupted: skip it.
        if task.reply.is_closed() {
            continue;
        }
        let progress = task.progress.clone();
        let result = segment::process(&mut models, &task.job, decoder_threads, |done| {
            progress.frame_done(done)
        });
        let _ = task.reply.send((task.job.segment, result));
    }
}

/// What a finished run amounted to.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub source: String,
    pub media_id: String,
    pub pivot_id: String,
    pub operation_id: Uuid,
    pub status: String,
    pub segments: usize,
    pub frames: u64,
    pub annotations: u64,
    pub seconds: f64,
}

/// Progress bars on stderr (hidden when it is not a terminal).
pub fn progress() -> MultiProgress {
    MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
}

/// Computes every segment of `video` on `pool`, upserts them, and finishes the run; on
/// any failure, or Ctrl-C, cancels it and returns the first error.
pub async fn run_video(
    api: &ApiClient,
    pool: &Pool,
    video: &PreparedVideo,
    options: &RunOptions,
    bars: &MultiProgress,
) -> Result<RunReport, IngestError> {
    let started = Instant::now();
    let frames = video.samples(options);
    let bar = bars.add(ProgressBar::new(frames));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} frames, {fps}, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "fps",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1} frames/s", state.per_sec());
                },
            )
            .progress_chars("=> "),
    );
    bar.set_prefix(video.media_id.clone());
    let outcome = tokio::select! {
        r = compute_and_upsert(api, pool, video, options, &bar) => r,
        _ = tokio::signal::ctrl_c() => Err(IngestError::Interrupted),
    };
    let annotations = match outcome {
        Ok(n) => n,
        Err(e) => {
            bar.abandon_with_message(format!("failed: {e}"));
            if let Err(c) = api.cancel(video.operation.id).await {
                tracing::error!(operation = %video.operation.id, error = %c, "cancelling the failed run");
            }
            return Err(e);
        }
    };
    let finished = api.finish(video.operation.id).await;
    let op = match finished {
        Ok(op) => op,
        Err(e) => {
            bar.abandon_with_message(format!("finish failed: {e}"));
            let _ = api.cancel(video.operation.id).await;
            return Err(e.into());
        }
    };
    bar.finish_with_message(format!("{annotations} annotations, {}", op.status));
    Ok(RunReport {
        source: video.source.clone(),
        media_id: video.media_id.clone(),
        pivot_id: video.pivot_id.clone(),
        operation_id: op.id,
        status: op.status,
        segments: video.segments.len(),
        frames,
        annotations,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn compute_and_upsert(
    api: &ApiClient,
    pool: &Pool,
    video: &PreparedVideo,
    options: &RunOptions,
    bar: &ProgressBar,
) -> Result<u64, IngestError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let progress = VideoProgress {
        bar: bar.clone(),
        detections: Arc::new(AtomicU64::new(0)),
    };
    for s in &video.segments {
        pool.submit(Task {
            job: video.job(*s, options),
            progress: progress.clone(),
            reply: tx.clone(),
        });
    }
    drop(tx);
    let mut annotations = 0u64;
    let mut done = 0usize;
    while let Some((segment, result)) = rx.recv().await {
        let items = result?;
        api.upsert(video.operation.id, &items, options.upsert_batch)
            .await?;
        annotations += items.len() as u64;
        done += 1;
        tracing::debug!(
            segment = segment.index,
            items = items.len(),
            "segment upserted"
        );
    }
    if done != video.segments.len() {
        return Err(IngestError::Input {
            source_name: video.source.clone(),
            reason: format!("only {done} of {} segments came back", video.segments.len()),
        });
    }
    Ok(annotations)
}
