//! The pipeline with real models: the shared CenterNet and MobileNetV2 on the shared
//! slideshow, and a real YOLOv8 (nudenet's 320n.onnx, fetched by scripts/setup-models)
//! on a clip made from a still. Also what a model that does not fit is told.

use annostore_ingest::detect::DetectorConfig;
use annostore_ingest::embed::EmbedderConfig;
use annostore_ingest::model::ModelError;
use annostore_ingest::segment::{self, ModelConfig, SegmentError, SegmentJob};
use annostore_ingest::testkit::{fetched_model, shared};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn config(detector: &Path, classes: Option<PathBuf>, embedder: Option<&Path>) -> ModelConfig {
    ModelConfig {
        detector: DetectorConfig {
            path: detector.to_owned(),
            classes,
            ..DetectorConfig::default()
        },
        embedder: embedder.map(|p| EmbedderConfig {
            path: p.to_owned(),
            ..EmbedderConfig::default()
        }),
        text_space: None,
        runtime: None,
        threads: 1,
    }
}

fn whole(source: &Path, fps: f64) -> SegmentJob {
    let source = source.display().to_string();
    let info = annostore_ingest::media::probe(&source).expect("probe");
    SegmentJob {
        source,
        media_id: "m".into(),
        fps,
        segment: segment::plan(info.duration_ms, info.duration_ms)[0],
        operation_id: uuid::Uuid::new_v4(),
    }
}

/// Labels seen in each 4-second still of the slideshow.
#[test]
fn centernet_finds_each_still_of_the_slideshow_in_its_time_range() {
    let mut models = config(
        &shared("models/centernet.onnx"),
        None,
        Some(&shared("models/mobilenetv2_imagenet.onnx")),
    )
    .load()
    .expect("load models");
    let job = whole(&shared("media/slideshow_720p.mp4"), 1.0);
    let items = segment::process(&mut models, &job, 2, |_| {}).expect("process");
    let labels_in = |from: u64, to: u64| -> BTreeSet<String> {
        items
            .iter()
            .filter(|i| i.start_ms >= from && i.start_ms < to)
            .map(|i| i.label.clone())
            .collect()
    };
    assert!(
        labels_in(8_000, 12_000).contains("cup"),
        "{:?}",
        labels_in(8_000, 12_000)
    );
    assert_eq!(
        labels_in(12_000, 16_000),
        BTreeSet::from(["motorcycle".to_owned()])
    );
    assert_eq!(
        labels_in(16_000, 20_000),
        BTreeSet::from(["person".to_owned()])
    );
    assert!(!labels_in(0, 12_000).contains("motorcycle"));
    for i in &items {
        assert_eq!(i.end_ms, i.start_ms + 1000);
        let e = i.embedding.as_ref().expect("embedding");
        assert_eq!(e.len(), 1280);
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "unit vector, got {norm}");
        assert!(i.bbox.x + i.bbox.w <= 1.0 && i.bbox.y + i.bbox.h <= 1.0);
    }
    // Near-duplicate boxes of one object are suppressed: one person per frame.
    let persons_at_16s = items
        .iter()
        .filter(|i| i.start_ms == 16_000 && i.label == "person")
        .count();
    assert_eq!(persons_at_16s, 1);
    // The same segment computed again gives the same ids and content.
    let again = segment::process(&mut models, &job, 1, |_| {}).expect("process again");
    assert_eq!(again, items);
}

/// A 2-second clip of a still, made with the ffmpeg CLI.
fn clip_of(image: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("clip.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-loop", "1", "-t", "2", "-i"])
        .arg(image)
        .args([
            "-vf",
            "scale=640:640,format=yuv420p",
            "-r",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .arg(&out)
        .status()
        .expect("the ffmpeg CLI (scripts/setup-system installs it)");
    assert!(status.success());
    out
}

#[test]
fn a_real_yolov8_model_finds_the_astronauts_face() {
    let model = fetched_model("nudenet_320n.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let clip = clip_of(&shared("media/astronaut.png"), tmp.path());
    // The model's input size is dynamic; nudenet runs it at 320.
    let mut cfg = config(&model, Some(fetched_model("nudenet_classes.txt")), None);
    cfg.detector.input_size = 320;
    let mut models = cfg.load().expect("load nudenet");
    assert_eq!(models.detector.input_size(), (320, 320));
    let items = segment::process(&mut models, &whole(&clip, 1.0), 1, |_| {}).expect("process");
    let faces: Vec<_> = items.iter().filter(|i| i.label == "FACE_FEMALE").collect();
    let seconds: BTreeSet<u64> = items.iter().map(|i| i.start_ms).collect();
    assert!(seconds.len() >= 2, "{items:#?}");
    assert_eq!(
        faces.len(),
        seconds.len(),
        "one face per sampled second: {items:#?}"
    );
    for f in faces {
        // Eileen Collins' face is in the upper middle of the portrait.
        let (cx, cy) = (f.bbox.x + f.bbox.w / 2.0, f.bbox.y + f.bbox.h / 2.0);
        assert!(
            (0.35..0.65).contains(&cx) && (0.1..0.45).contains(&cy),
            "{:?}",
            f.bbox
        );
        assert!(f.embedding.is_none());
    }
}

fn load_error(config: ModelConfig) -> ModelError {
    match config.load() {
        Ok(_) => panic!("the model should have been refused"),
        Err(e) => e,
    }
}

#[test]
fn models_that_do_not_fit_are_refused_with_their_tensors_named() {
    let mobilenet = shared("models/mobilenetv2_imagenet.onnx");
    let centernet = shared("models/centernet.onnx");
    // An image classifier is not a detector.
    let e = load_error(config(
        &mobilenet,
        Some(shared("models/coco_classes.txt")),
        None,
    ));
    assert!(matches!(e, ModelError::Tensors { .. }), "{e}");
    assert!(e.to_string().contains("detector layout"), "{e}");
    // A detector is not an embedder (NHWC input).
    let e = load_error(config(&centernet, None, Some(&centernet)));
    assert!(e.to_string().contains("[N, 3, H, W]"), "{e}");
    // A YOLOv8 with 18 classes and a file of 80 names.
    let nudenet = fetched_model("nudenet_320n.onnx");
    let e = load_error(config(
        &nudenet,
        Some(shared("models/coco_classes.txt")),
        None,
    ));
    assert!(e.to_string().contains("scores 18 classes"), "{e}");
    // Not a model at all.
    let e = load_error(config(&shared("models/coco_classes.txt"), None, None));
    assert!(
        matches!(e, ModelError::Classes { .. } | ModelError::Load { .. }),
        "{e}"
    );
    let e = load_error(config(
        Path::new("/nonexistent/model.onnx"),
        Some(shared("models/coco_classes.txt")),
        None,
    ));
    assert!(e.to_string().contains("no such model file"), "{e}");
}

#[test]
fn a_file_that_is_not_a_video_and_a_corrupt_stream_are_media_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "this is not a video\n".repeat(100)).unwrap();
    let e = annostore_ingest::media::probe(&text.display().to_string()).unwrap_err();
    assert!(e.to_string().contains("cannot open"), "{e}");

    // Garbage over the middle of the H.264 data: decoding must fail, not conceal.
    let mut bytes = std::fs::read(shared("media/slideshow_720p.mp4")).unwrap();
    let mid = bytes.len() / 2;
    let mut x: u32 = 12345;
    for b in &mut bytes[mid..mid + 200_000] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let corrupt = tmp.path().join("corrupt.mp4");
    std::fs::write(&corrupt, bytes).unwrap();
    let mut models = config(&shared("models/centernet.onnx"), None, None)
        .load()
        .unwrap();
    let job = whole(&corrupt, 1.0);
    match segment::process(&mut models, &job, 1, |_| {}) {
        Err(SegmentError::Media(e)) => assert!(e.to_string().contains("corrupt"), "{e}"),
        other => panic!("expected a media error, got {:?}", other.map(|v| v.len())),
    }
}

/// Skipping frames that no other frame refers to, far from the wanted times, hands out
/// exactly the same pictures, and decodes fewer frames.
#[test]
fn skipping_unneeded_frames_changes_no_sample() {
    use annostore_ingest::media::Sampler;
    let source = shared("media/slideshow_720p.mp4").display().to_string();
    let whole = segment::plan(24_000, 24_000)[0];
    let times = segment::sample_times(&whole, 1.0);
    let samples = |skip: bool| {
        let mut sampler = Sampler::open(&source, 320, 180, 1).unwrap();
        sampler.skip_unneeded = skip;
        let mut pictures = Vec::new();
        sampler
            .sample(&times, |t, frames| {
                pictures.push((t, frames.model.data.clone()));
                Ok::<(), std::convert::Infallible>(())
            })
            .unwrap();
        (pictures, sampler.frames_decoded)
    };
    let (all, decoded_all) = samples(false);
    let (skipped, decoded_skipped) = samples(true);
    assert_eq!(all.len(), 24);
    assert!(all == skipped, "the same pictures at the same times");
    assert!(
        decoded_skipped < decoded_all,
        "{decoded_skipped} frames decoded with skipping, {decoded_all} without"
    );
}
