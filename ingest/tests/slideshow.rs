//! The pipeline on the shared slideshow with the shared models.
use annostore_ingest::detect::DetectorConfig;
use annostore_ingest::embed::EmbedderConfig;
use annostore_ingest::segment::{self, ModelConfig, SegmentJob};
use std::path::PathBuf;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

#[test]
fn slideshow_objects() {
    let models = ModelConfig {
        detector: DetectorConfig {
            path: shared().join("models/centernet.onnx"),
            ..Default::default()
        },
        embedder: Some(EmbedderConfig {
            path: shared().join("models/mobilenetv2_imagenet.onnx"),
            ..Default::default()
        }),
        runtime: None,
        threads: 1,
    };
    let mut m = models.load().unwrap();
    let source = shared()
        .join("media/slideshow_720p.mp4")
        .display()
        .to_string();
    let info = annostore_ingest::media::probe(&source).unwrap();
    println!("{info:?}");
    let t = std::time::Instant::now();
    for seg in segment::plan(info.duration_ms, 10_000) {
        let job = SegmentJob {
            source: source.clone(),
            media_id: "s".into(),
            fps: 1.0,
            segment: seg,
            operation_id: uuid::Uuid::nil(),
        };
        let items = segment::process(&mut m, &job, 1, |_| {}).unwrap();
        for i in &items {
            println!(
                "{} {} {:.2} {:?} emb {}",
                i.start_ms,
                i.label,
                i.confidence,
                i.bbox,
                i.embedding.as_ref().map_or(0, |e| e.len())
            );
        }
    }
    println!("{:?}", t.elapsed());
}
