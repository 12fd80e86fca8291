//! One segment of one video, end to end: sample its frames, detect, embed the crops,
//! and turn the detections into annotations with deterministic ids. This is the unit
//! of work both `annostore ingest` (threads) and `annostore worker` (Kafka) run.

use crate::api::{AnnotationItem, BBox};
use crate::detect::{Detector, DetectorConfig};
use crate::embed::{Embedder, EmbedderConfig};
use crate::media::{MediaError, SampleError, Sampler};
use crate::model::ModelError;
use crate::textspace::{self, TextSpaceConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use uuid::Uuid;

/// Crops are cut from the frame at the video's own size, up to this width: detail the
/// detector's stretched input lost, at a cost of one more swscale per sample with
/// detections.
const CROP_FRAME_MAX_WIDTH: u32 = 1280;

/// A time range of a video: `[start_ms, end_ms)`, the `index`-th of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub index: u32,
    pub count: u32,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Cuts `[0, duration_ms)` into segments of `segment_ms` (the last one shorter).
pub fn plan(duration_ms: u64, segment_ms: u64) -> Vec<Segment> {
    let segment_ms = segment_ms.max(1);
    let count = duration_ms.div_ceil(segment_ms).max(1) as u32;
    (0..count)
        .map(|i| Segment {
            index: i,
            count,
            start_ms: u64::from(i) * segment_ms,
            end_ms: (u64::from(i + 1) * segment_ms).min(duration_ms.max(1)),
        })
        .collect()
}

/// Cuts `[0, duration_ms)` into segments of at most `max_segment_ms`, as many as a
/// multiple of `workers` and of equal length, so that `workers` threads finish together
/// (a 24 s video with 10 s segments on 2 workers: 4 of 6 s, not 10 + 10 + 4).
pub fn plan_balanced(duration_ms: u64, max_segment_ms: u64, workers: usize) -> Vec<Segment> {
    let workers = workers.max(1) as u64;
    let count = duration_ms.div_ceil(max_segment_ms.max(1)).max(1);
    let count = count.div_ceil(workers) * workers;
    plan(duration_ms, duration_ms.div_ceil(count).max(1))
}

/// The sample times of `segment` at `fps`: every `k * 1000 / fps` ms (rounded) that
/// falls in it. The times depend only on `fps`, never on how the video was cut.
pub fn sample_times(segment: &Segment, fps: f64) -> Vec<u64> {
    let step = 1000.0 / fps;
    let first = (segment.start_ms as f64 / step).ceil() as u64;
    (first..)
        .map(|k| (k as f64 * step).round() as u64)
        .skip_while(|t| *t < segment.start_ms)
        .take_while(|t| *t < segment.end_ms)
        .collect()
}

/// Which models a worker runs, and how ONNX Runtime is found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    pub detector: DetectorConfig,
    pub embedder: Option<EmbedderConfig>,
    /// Carry crop embeddings into a text encoder's space (needs an embedder with class
    /// logits); none keeps the embedder's own vectors.
    #[serde(default)]
    pub text_space: Option<TextSpaceConfig>,
    /// libonnxruntime.so [default: ORT_DYLIB_PATH, then the test venv].
    pub runtime: Option<PathBuf>,
    /// Intra-op threads per model.
    pub threads: usize,
}

/// A worker thread's own models.
pub struct Models {
    pub detector: Detector,
    pub embedder: Option<Embedder>,
}

impl ModelConfig {
    pub fn load(&self) -> Result<Models, ModelError> {
        let runtime = self.runtime.as_deref();
        let detector = Detector::load(&self.detector, runtime, self.threads)?;
        let mut embedder = self
            .embedder
            .as_ref()
            .map(|e| Embedder::load(e, runtime, self.threads))
            .transpose()?;
        if let Some(text) = &self.text_space {
            let Some(visual) = embedder.take() else {
                return Err(ModelError::Tensors {
                    path: text.encoder.path.clone(),
                    reason: "a text encoder reaches crops through an embedder's class \
                             logits: configure an embedder (--embedder) too"
                        .into(),
                });
            };
            embedder = Some(textspace::attach(
                visual,
                &detector,
                text,
                runtime,
                self.threads,
            )?);
        }
        Ok(Models { detector, embedder })
    }
}

/// FFmpeg decoder threads for each of `workers` segments computed at once: one each
/// when several share the CPU, two for a lone worker (the models use one thread).
pub fn decoder_threads(workers: usize) -> usize {
    if workers <= 1 { 2 } else { 1 }
}

/// Everything needed to compute one segment's annotations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentJob {
    /// A local path or an http(s) URL.
    pub source: String,
    pub media_id: String,
    pub fps: f64,
    pub segment: Segment,
    /// The `objects` run these annotations go to (their ids derive from it).
    pub operation_id: Uuid,
}

/// Why a segment could not be computed: the media (the run cannot succeed) or the
/// models (this worker is misconfigured).
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Counts for progress bars, reported after each sampled frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameDone {
    pub detections: usize,
}

/// Computes `job`'s annotations: for each sample time, the frame shown then, its
/// detections (with crop embeddings when an embedder is loaded), each an annotation
/// lasting one sample interval. Ids are UUIDv5 in the operation's namespace over
/// (segment, time, rank of the detection), so a segment computed twice gives the same
/// ids.
pub fn process(
    models: &mut Models,
    job: &SegmentJob,
    threads: usize,
    mut on_frame: impl FnMut(FrameDone),
) -> Result<Vec<AnnotationItem>, SegmentError> {
    let times = sample_times(&job.segment, job.fps);
    let (w, h) = models.detector.input_size();
    let mut sampler = Sampler::open(&job.source, w, h, threads)?;
    if models.embedder.is_some() {
        sampler = sampler.with_crop_frames(CROP_FRAME_MAX_WIDTH)?;
    }
    let interval = (1000.0 / job.fps).round().max(1.0) as u64;
    let mut items = Vec::new();
    let result = sampler.sample(&times, |t, frames| -> Result<(), SegmentError> {
        let detections = models.detector.detect(frames.model)?;
        let embeddings = match models.embedder.as_mut() {
            Some(e) if !detections.is_empty() => Some(e.embed(frames.crops()?, &detections)?),
            _ => None,
        };
        for (rank, d) in detections.iter().enumerate() {
            let name = format!("{}/{t}/{rank}", job.segment.index);
            items.push(AnnotationItem {
                id: Uuid::new_v5(&job.operation_id, name.as_bytes()),
                media_id: job.media_id.clone(),
                start_ms: t,
                end_ms: t + interval,
                label: d.label.clone(),
                confidence: d.score,
                bbox: BBox {
                    x: d.x,
                    y: d.y,
                    w: d.w,
                    h: d.h,
                },
                embedding: embeddings.as_ref().map(|e| e[rank].clone()),
                data: json!({ "class_id": d.class_id }),
            });
        }
        on_frame(FrameDone {
            detections: detections.len(),
        });
        Ok(())
    });
    match result {
        Ok(_) => Ok(items),
        Err(SampleError::Media(e)) => Err(e.into()),
        Err(SampleError::Sink(e)) => Err(e),
    }
}

/// The JSON Schema of the `objects` type's `data`.
pub fn objects_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": { "class_id": { "type": "integer", "minimum": 0 } },
        "required": ["class_id"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_video_without_overlap() {
        let s = plan(24_000, 10_000);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].start_ms, s[0].end_ms), (0, 10_000));
        assert_eq!((s[2].start_ms, s[2].end_ms), (20_000, 24_000));
        assert!(s.iter().all(|x| x.count == 3));
        assert_eq!(plan(0, 10_000).len(), 1);
    }

    #[test]
    fn balanced_plans_give_each_worker_the_same_share() {
        let s = plan_balanced(24_000, 10_000, 2);
        assert_eq!(
            s.iter().map(|x| x.end_ms - x.start_ms).collect::<Vec<_>>(),
            vec![6_000; 4]
        );
        assert_eq!(plan_balanced(24_000, 10_000, 1).len(), 3);
        // Long videos: already a multiple of the workers, segments stay at the maximum.
        let long = plan_balanced(3_600_000, 10_000, 2);
        assert_eq!(long.len(), 360);
        assert!(long.iter().all(|x| x.end_ms - x.start_ms == 10_000));
        // Never longer than the maximum, and the video covered without gaps.
        for (d, m, w) in [(1, 10_000, 4), (9_999, 10_000, 3), (100_001, 7_000, 2)] {
            let p = plan_balanced(d, m, w);
            assert!(p.iter().all(|x| x.end_ms - x.start_ms <= m), "{d} {m} {w}");
            assert_eq!(p.last().map(|x| x.end_ms), Some(d));
            assert!(p.windows(2).all(|x| x[0].end_ms == x[1].start_ms));
        }
    }

    #[test]
    fn sample_times_do_not_depend_on_the_cut() {
        for fps in [1.0, 2.5, 0.3, 29.97] {
            let whole: Vec<u64> = sample_times(&plan(24_000, 24_000)[0], fps);
            let cut: Vec<u64> = plan(24_000, 7_000)
                .iter()
                .flat_map(|s| sample_times(s, fps))
                .collect();
            assert_eq!(whole, cut, "fps {fps}");
        }
        assert_eq!(
            sample_times(&plan(3_000, 3_000)[0], 1.0),
            vec![0, 1000, 2000]
        );
    }
}
