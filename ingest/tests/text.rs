//! Text encoders and the class-text bridge with real models: the shared MiniLM (int8)
//! as the text encoder, the shared CenterNet and MobileNetV2 on the shared slideshow,
//! queried by text. Also what a model that is not a text encoder is told.

use annostore_core::encode::{EncodeError, TextEncoder};
use annostore_ingest::detect::DetectorConfig;
use annostore_ingest::embed::EmbedderConfig;
use annostore_ingest::model::ModelError;
use annostore_ingest::segment::{self, ModelConfig, SegmentJob};
use annostore_ingest::testkit::shared;
use annostore_ingest::text::{OnnxTextEncoder, TextEncoderConfig};
use annostore_ingest::textspace::{DEFAULT_LABEL_WEIGHT, TextSpaceConfig};
use std::path::PathBuf;
use std::time::Instant;

fn minilm() -> (PathBuf, PathBuf) {
    (
        shared("models/minilm_l6_v2_int8.onnx"),
        shared("models/minilm_tokenizer.json"),
    )
}

fn encoder() -> OnnxTextEncoder {
    let (model, tokenizer) = minilm();
    OnnxTextEncoder::open(&model, Some(&tokenizer), None).expect("open MiniLM")
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn minilm_gives_unit_vectors_that_are_near_in_meaning() {
    let enc = encoder();
    assert_eq!(enc.dim(), 384);
    assert_eq!(enc.max_tokens(), 128, "the tokenizer file's truncation");
    // (anchor, nearer, farther)
    let triples = [
        ("a photo of a motorcycle", "motorbike", "a cup of coffee"),
        ("a photo of a coffee mug", "a cup of coffee", "a motorcycle"),
        ("a photo of a person", "a man in a suit", "a coffee mug"),
        ("a photo of a tabby cat", "kitten", "a rocket launch"),
        (
            "a space rocket",
            "a spacecraft taking off",
            "a domestic cat",
        ),
    ];
    for (anchor, near, far) in triples {
        let [a, n, f] = [anchor, near, far].map(|t| enc.encode(t).expect("encode"));
        for v in [&a, &n, &f] {
            assert_eq!(v.len(), 384);
            let norm = dot(v, v).sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
        }
        let (sn, sf) = (dot(&a, &n), dot(&a, &f));
        println!("{anchor:?}: {near:?} {sn:.3}, {far:?} {sf:.3}");
        // The model is deterministic; the margins seen were 0.05 to 0.5.
        assert!(sn > sf + 0.03, "{anchor:?}: {near:?} {sn} vs {far:?} {sf}");
    }

    // Batches (padded to their longest text) agree with single encodes, up to the
    // int8 model's dynamic quantisation, whose scale is taken over the whole batch
    // (cos 0.986 to 0.993 seen).
    let texts = [
        "motorcycle",
        "a photo of a coffee mug on a saucer",
        "a person",
        "an astronaut in a white suit holding a flag",
    ];
    let batch = enc.encode_batch(&texts).expect("batch");
    for (t, b) in texts.iter().zip(&batch) {
        let single = enc.encode(t).expect("single");
        let cos = dot(&single, b);
        println!("batch vs single {t:?}: cos {cos:.5}");
        assert!(cos > 0.98, "{t:?}: cos {cos}");
    }

    // Too long is cut, not refused; nothing to encode is the caller's fault.
    let long = "motorcycle ".repeat(2_000);
    assert_eq!(enc.encode(&long).expect("long text").len(), 384);
    assert!(matches!(enc.encode("  "), Err(EncodeError::Input(_))));

    // Speed, for the record (the prompts the bridge encodes).
    let prompts: Vec<String> = (0..64).map(|i| format!("a photo of a thing {i}")).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let t = Instant::now();
    for p in &refs {
        enc.encode(p).expect("encode");
    }
    let single = refs.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    enc.encode_batch(&refs).expect("batch");
    let batched = refs.len() as f64 / t.elapsed().as_secs_f64();
    println!("MiniLM: {single:.0} encodes/s one at a time, {batched:.0}/s in batches of 32");
}

#[test]
fn models_that_are_not_text_encoders_are_refused() {
    let (_, tokenizer) = minilm();
    let open = |model: PathBuf, tokenizer: Option<&PathBuf>| match OnnxTextEncoder::open(
        &model,
        tokenizer.map(|t| t.as_path()),
        None,
    ) {
        Ok(_) => panic!("{} should have been refused", model.display()),
        Err(e) => e,
    };
    // An image detector: its input is an image, not token ids.
    let e = open(shared("models/centernet.onnx"), Some(&tokenizer));
    assert!(matches!(e, ModelError::Tensors { .. }), "{e}");
    assert!(e.to_string().contains("input_ids"), "{e}");
    let e = open(shared("models/mobilenetv2_imagenet.onnx"), Some(&tokenizer));
    assert!(e.to_string().contains("input_ids"), "{e}");
    // The right model without its tokenizer (no tokenizer.json beside it).
    let e = open(shared("models/minilm_l6_v2_int8.onnx"), None);
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    // A tokenizer that is not one.
    let e = open(
        shared("models/minilm_l6_v2_int8.onnx"),
        Some(&shared("models/coco_classes.txt")),
    );
    assert!(e.to_string().contains("cannot read the tokenizer"), "{e}");
}

fn bridge(label_weight: f32) -> ModelConfig {
    let (model, tokenizer) = minilm();
    ModelConfig {
        detector: DetectorConfig {
            path: shared("models/centernet.onnx"),
            ..DetectorConfig::default()
        },
        embedder: Some(EmbedderConfig {
            path: shared("models/mobilenetv2_imagenet.onnx"),
            ..EmbedderConfig::default()
        }),
        text_space: Some(TextSpaceConfig {
            encoder: TextEncoderConfig {
                path: model,
                tokenizer: Some(tokenizer),
                ..TextEncoderConfig::default()
            },
            label_weight,
            ..TextSpaceConfig::default()
        }),
        runtime: None,
        threads: 1,
    }
}

fn load_error(config: ModelConfig) -> ModelError {
    match config.load() {
        Ok(_) => panic!("the configuration should have been refused"),
        Err(e) => e,
    }
}

#[test]
fn the_bridge_needs_an_embedder_with_class_logits() {
    let mut no_embedder = bridge(DEFAULT_LABEL_WEIGHT);
    no_embedder.embedder = None;
    let e = load_error(no_embedder);
    assert!(e.to_string().contains("--embedder"), "{e}");

    let mut no_logits = bridge(DEFAULT_LABEL_WEIGHT);
    if let Some(t) = no_logits.text_space.as_mut() {
        t.logits = "scores".into();
    }
    let e = load_error(no_logits);
    assert!(e.to_string().contains("no output `scores`"), "{e}");
    assert!(e.to_string().contains("class logits"), "{e}");

    let mut coco_names = bridge(DEFAULT_LABEL_WEIGHT);
    if let Some(t) = coco_names.text_space.as_mut() {
        t.classes = Some(shared("models/coco_classes.txt"));
    }
    let e = load_error(coco_names);
    assert!(e.to_string().contains("names 80 classes"), "{e}");
    assert!(e.to_string().contains("scores 1000"), "{e}");
}

/// Text queries find the right still of the slideshow (cup 8-12 s, motorcycle 12-16 s,
/// person 16-20 s) among the crops' text-space vectors. `ANNOSTORE_TEXT_LABEL_WEIGHT`
/// tries another label weight (to measure it).
#[test]
fn text_queries_find_the_right_still_through_the_bridge() {
    let weight = std::env::var("ANNOSTORE_TEXT_LABEL_WEIGHT")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(DEFAULT_LABEL_WEIGHT);
    let started = Instant::now();
    let mut models = bridge(weight).load().expect("load the bridge");
    let loaded = started.elapsed();
    let embedder = models.embedder.as_ref().expect("embedder");
    assert_eq!(embedder.dim(), 384, "crops live in MiniLM's space");
    assert!(embedder.text_space().is_some());
    // A second load in the process reuses the class texts.
    let t = Instant::now();
    let again = bridge(weight).load().expect("load again");
    let reloaded = t.elapsed();
    assert!(std::sync::Arc::ptr_eq(
        again
            .embedder
            .as_ref()
            .and_then(|e| e.text_space())
            .expect("space"),
        embedder.text_space().expect("space"),
    ));
    println!(
        "label weight {weight}: loaded in {loaded:?} (1080 class encodes), again in {reloaded:?}"
    );

    let source = shared("media/slideshow_720p.mp4").display().to_string();
    let info = annostore_ingest::media::probe(&source).expect("probe");
    let job = SegmentJob {
        source,
        media_id: "slideshow".into(),
        fps: 1.0,
        segment: segment::plan(info.duration_ms, info.duration_ms)[0],
        operation_id: uuid::Uuid::new_v4(),
    };
    let items = segment::process(&mut models, &job, 2, |_| {}).expect("process");
    assert!(!items.is_empty());
    for i in &items {
        let e = i.embedding.as_ref().expect("embedding");
        assert_eq!(e.len(), 384);
        assert!((dot(e, e).sqrt() - 1.0).abs() < 1e-3);
    }
    let enc = encoder();
    // (query, the still's time range)
    let queries = [
        ("motorcycle", 12_000..16_000),
        ("motorbike", 12_000..16_000),
        ("coffee cup", 8_000..12_000),
        ("mug", 8_000..12_000),
        ("a cup of espresso", 8_000..12_000),
        ("a person", 16_000..20_000),
        ("a man in a suit", 16_000..20_000),
    ];
    let mut wrong = Vec::new();
    for (query, still) in queries {
        let q = enc.encode(query).expect("encode query");
        let mut scored: Vec<(f32, u64, &str)> = items
            .iter()
            .filter_map(|i| {
                let e = i.embedding.as_ref()?;
                Some((dot(&q, e), i.start_ms, i.label.as_str()))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let best_in = scored
            .iter()
            .find(|s| still.contains(&s.1))
            .map_or(f32::NAN, |s| s.0);
        let best_out = scored
            .iter()
            .find(|s| !still.contains(&s.1))
            .map(|s| format!("{:.3} ({} at {} ms)", s.0, s.2, s.1))
            .unwrap_or_default();
        println!(
            "{query:?}: best in its still {best_in:.3}, best elsewhere {best_out}; top 3 {:?}",
            &scored[..scored.len().min(3)]
        );
        if !still.contains(&scored[0].1) {
            wrong.push(query);
        }
    }
    assert!(wrong.is_empty(), "ranked another still first for {wrong:?}");
}
